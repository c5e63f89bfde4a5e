"""Histogram summaries computed where the values live, byte-identical to tensorboardX's.

tensorboardX's ``add_histogram`` converts the values to a float64 numpy array (for a torch tensor,
a full copy to host memory first) and bins it with ``np.histogram``, which sorts it; then it builds
``HistogramProto`` from Python lists. Logging the weights of many small layers is that call many
times per step, so here:

- on CPU (numpy arrays, lists, CPU tensors), each value's bucket is found in one vectorised pass
  instead of a sort: a lookup table indexed by the top 16 bits of each float plus one comparison
  (at most one bucket edge falls in each table cell), in cache-sized chunks, then ``np.bincount``.
  For the default edges, their thresholds and table are computed once per process; edges too
  dense for the table use ``np.searchsorted``. min, max, sum and sum of squares are numpy's own on
  the float64 copy tensorboardX makes, so every byte of the result is tensorboardX's;
- on an accelerator, buckets, min, max, sum and sum of squares are computed on the device
  (``torch.bucketize`` + ``scatter_add_``) and copied to the host together, once: one host
  synchronisation per call (two for an integer ``bins``, whose edges need min and max first);
- the summary is encoded by hand (:func:`histogram_summary_bytes`): the protobuf library's
  conversion of hundreds of Python numbers would cost more than the binning.

Bucket membership is exactly ``np.histogram``'s: ``x`` is in bucket ``i`` iff
``edge[i] <= x < edge[i + 1]`` (the last bucket also holds its right edge); NaN and values outside
the edges are in no bucket. float32 values are compared with the smallest float32 at or above
each float64 edge, which decides every comparison as float64 would. On an accelerator the sum and
sum of squares are float64 reductions in the device's order: equal to numpy's to rounding, not
always to the last bit.

:func:`histogram_summary` returns ``None`` for what it does not cover (complex, object or
long-double values, inputs other than arrays, lists and tensors, ``bins`` strings other than
``'tensorflow'``, infinite edges, non-finite ranges with integer ``bins``, empty inputs): the
caller then uses tensorboardX's own code, which also raises its own errors.
"""

from __future__ import annotations

import logging
import math
import operator
import struct
from functools import lru_cache
from typing import Any

import numpy as np
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import _clean_tag

from ..events.encoding import field
from ..events.records import varint

logger = logging.getLogger(__name__)

#: Values per chunk of the CPU path: the chunk, its keys and indices stay in L2 cache.
CHUNK = 1 << 16
_KEY_BITS = 16

try:  # torch is optional: without it there is nothing for this module to do
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

#: Float types numpy reads exactly as float32 (tensorboardX's float64 of them is exact too).
_AS_FLOAT32 = () if torch is None else (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
                                        torch.int16, torch.bool)


@lru_cache(maxsize=1)
def default_bins() -> list[float]:
    """tensorboardX's ``'tensorflow'`` bucket edges (computed as ``SummaryWriter.__init__`` does)."""
    v = 1e-12
    buckets: list[float] = []
    neg_buckets: list[float] = []
    while v < 1e20:
        buckets.append(v)
        neg_buckets.append(-v)
        v *= 1.1
    return neg_buckets[::-1] + [0] + buckets


@lru_cache(maxsize=1)
def _default_edges() -> np.ndarray:
    return np.asarray(default_bins())


def _explicit_edges(bins: Any) -> np.ndarray | int | None:
    """float64 edges, a number of equal bins, or ``None`` (not handled here) for ``bins``."""
    if isinstance(bins, str):
        return _default_edges() if bins == "tensorflow" else None
    if isinstance(bins, bool):
        return None
    try:
        count = operator.index(bins)
    except TypeError:
        pass
    else:
        return count if count >= 1 else None
    if torch is not None and isinstance(bins, torch.Tensor):
        bins = bins.detach().cpu().numpy()
    edges = np.asarray(bins)
    if edges.ndim != 1 or edges.size < 2 or edges.dtype.kind not in "fiu":
        return None
    if edges.dtype.kind in "iu" and np.abs(edges).max() > 2**53:
        return None
    edges = edges.astype(np.float64, copy=False)
    if np.isnan(edges).any() or np.any(edges[:-1] > edges[1:]):
        return None  # np.histogram's own error, from tensorboardX's path
    if np.isinf(edges).any():
        return None  # an infinite value is in an infinite edge's bucket: no finite threshold says so
    return edges


def _thresholds(edges: np.ndarray, dtype: type) -> np.ndarray:
    """``t`` such that ``#{j: t[j] <= x}`` is 0 below the edges, ``i + 1`` in bucket ``i``, ``len(edges)`` above.

    In ``dtype`` (float32 or float64): ``x >= edge`` iff ``x >= ceil(edge)`` where ``ceil`` is the
    smallest ``dtype`` value at or above the edge, and ``x > last`` iff ``x >= next(floor(last))``.
    """
    low: Any
    last: Any
    with np.errstate(over="ignore"):
        low = edges[:-1].astype(dtype)
        up = low.astype(np.float64) < edges[:-1]
        low[up] = np.nextafter(low[up], dtype(np.inf))
        last = np.asarray(edges[-1]).astype(dtype)
    if float(last) > edges[-1]:
        last = np.nextafter(last, dtype(-np.inf))
    past = np.nextafter(last, dtype(np.inf))
    return np.concatenate([low, np.asarray([past], dtype)])


@lru_cache(maxsize=2)
def _default_thresholds(char: str) -> np.ndarray:
    """:func:`_thresholds` of the default edges for float32 (``'f'``) or float64 (``'d'``), once per process."""
    return _thresholds(_default_edges(), np.dtype(char).type)


def _edge_thresholds(edges: np.ndarray, dtype: type) -> np.ndarray:
    """:func:`_thresholds`, cached for the default edges (the common call)."""
    if edges is _default_edges():
        return _default_thresholds(np.dtype(dtype).char)
    return _thresholds(edges, dtype)


# -- CPU: lookup table on the top bits of each float ---------------------------------------------
def _cell_values(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest and largest value of each table cell (all floats sharing their top 16 bits)."""
    uint = np.uint32 if width == 32 else np.uint64
    flt = np.float32 if width == 32 else np.float64
    shift = width - _KEY_BITS
    keys: Any = np.arange(1 << _KEY_BITS, dtype=uint)
    first = (keys << uint(shift)).view(flt)
    final = ((keys << uint(shift)) | uint((1 << shift) - 1)).view(flt)
    negative = keys >= (1 << (_KEY_BITS - 1))
    low = np.where(negative, final, first)
    high = np.where(negative, first, final)
    return keys, low, high


def _lookup_table(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per cell ``(base, threshold)``: a value's slot is ``base + (x >= threshold)``.

    Slots ``0..nb`` are the positions of :func:`_thresholds`; NaN and +inf go to ``nb`` (past the
    last bucket), a negative NaN to ``nb + 1`` (dropped) and -inf to ``nb + 2`` (moved to 0: the
    thresholds are finite or +inf, so none is at or below -inf). ``None`` if some cell holds two
    thresholds (edges closer than the cell width: ~0.8 % for float32, ~6 % for float64).
    """
    width = thresholds.dtype.itemsize * 8
    flt = thresholds.dtype.type
    nb = len(thresholds)
    keys, low, high = _cell_values(width)
    special = np.isnan(low) | np.isnan(high) | np.isinf(low) | np.isinf(high)  # exponent all ones
    with np.errstate(invalid="ignore"):
        plo = np.searchsorted(thresholds, np.where(special, 0, low), side="right")
        phi = np.searchsorted(thresholds, np.where(special, 0, high), side="right")
    if np.any((phi - plo)[~special] > 1):
        return None
    base = plo.astype(np.intp)
    threshold = np.full(len(keys), np.inf, dtype=flt)
    split = (phi > plo) & ~special
    threshold[split] = thresholds[plo[split]]
    negative = keys >= (1 << (_KEY_BITS - 1))
    base[special & ~negative] = nb  # NaN and +inf
    threshold[special & ~negative] = np.nan  # x >= NaN is False: both stay at nb
    base[special & negative] = nb + 1  # negative NaN -> nb + 1, -inf -> nb + 2
    threshold[special & negative] = -np.inf
    return base, threshold


_TABLES: dict[bytes, tuple[np.ndarray, np.ndarray] | None] = {}


@lru_cache(maxsize=2)
def _default_table(char: str) -> tuple[np.ndarray, np.ndarray] | None:
    return _lookup_table(_default_thresholds(char))


def _cached_table(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The lookup table of ``thresholds``: of the default edges without hashing them, others by content."""
    char = thresholds.dtype.char
    if thresholds is _default_thresholds(char):
        return _default_table(char)
    key = char.encode() + thresholds.tobytes()
    if key not in _TABLES:
        if len(_TABLES) >= 8:
            _TABLES.clear()
        _TABLES[key] = _lookup_table(thresholds)
    return _TABLES[key]


def _table_positions(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray | None:
    """``bincount`` of every value's position (0 .. nb) via the lookup table, or ``None``.

    In chunks of ``CHUNK`` values, so that the temporaries stay in cache.
    """
    table = _cached_table(thresholds)
    if table is None:
        return None
    base, threshold = table
    nb = len(thresholds)
    bits = values.view(np.uint32 if values.dtype.itemsize == 4 else np.uint64)
    shift = values.dtype.itemsize * 8 - _KEY_BITS

    def chunk_counts(start: int) -> np.ndarray:
        keys = (bits[start:start + CHUNK] >> shift).astype(np.intp)
        slots = base.take(keys)
        slots += values[start:start + CHUNK] >= threshold.take(keys)
        return np.bincount(slots, minlength=nb + 3)

    counts = chunk_counts(0)
    for start in range(CHUNK, len(values), CHUNK):
        counts += chunk_counts(start)
    counts[0] += counts[nb + 2]
    return counts[: nb + 1]


def _cpu_positions(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``bincount`` of every value's position (0 .. nb): ``#{j: thresholds[j] <= x}``, NaN at nb.

    The lookup table costs a few vectorised operations per value; edges too dense for it fall
    back to a binary search per value.
    """
    counts = _table_positions(values, thresholds)
    if counts is None:
        counts = np.bincount(np.searchsorted(thresholds, values, side="right"), minlength=len(thresholds) + 1)
    return counts


# -- accelerators: torch.bucketize on the device, one copy back --------------------------------
_DEVICE_THRESHOLDS: dict[tuple[str, str], Any] = {}


def _device_thresholds(edges: np.ndarray, dtype: type, device: Any) -> Any:
    """:func:`_thresholds` as a tensor on ``device``; for the default edges copied there once.

    A host-to-device copy from pageable memory waits for the device: done per call it would be a
    second synchronisation.
    """
    if edges is not _default_edges():
        return torch.from_numpy(_thresholds(edges, dtype)).to(device)
    key = (np.dtype(dtype).char, str(device))
    bounds = _DEVICE_THRESHOLDS.get(key)
    if bounds is None:
        bounds = _DEVICE_THRESHOLDS[key] = torch.from_numpy(_edge_thresholds(edges, dtype)).to(device)
    return bounds


def _device_positions(values: Any, bounds: Any) -> Any:
    """Count of every position (0 .. nb) on the device; NaN lands at nb.

    ``scatter_add_`` rather than ``torch.bincount``: bincount reads the largest slot back to the
    host to size its output, a synchronisation.
    """
    slots = torch.bucketize(values, bounds, right=True)
    counts = torch.zeros(len(bounds) + 1, dtype=torch.int64, device=values.device)
    return counts.scatter_add_(0, slots, torch.ones((), dtype=torch.int64, device=values.device).expand_as(slots))


def _device_stats(values: Any) -> Any:
    """min, max, sum and sum of squares as a float64 tensor on the device (nothing waits for it)."""
    low, high = torch.aminmax(values)
    wide = values.double()
    return torch.stack([low.double(), high.double(), wide.sum(), torch.dot(wide, wide)])


def _device_histogram(flat: Any, spec: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """Counts, edges and stats computed on the tensor's device, copied to the host in one piece."""
    narrow = flat.dtype in _AS_FLOAT32
    values = flat.to(torch.float32 if narrow else torch.float64)
    dtype = np.float32 if narrow else np.float64
    stats = _device_stats(values)
    if isinstance(spec, int):  # equal bins: their edges come from min and max, read first
        low, high = stats[:2].cpu().numpy()
        edges = _uniform_edges(low, high, spec)
        if edges is None:
            return None
    else:
        edges = spec
    counts = _device_positions(values, _device_thresholds(edges, dtype, values.device))
    host = torch.cat([stats, counts.double()]).cpu().numpy()  # the one synchronisation
    mn, mx, total, squares = host[:4]
    return host[4:].astype(np.intp), edges, (mn, mx, total, squares)


# -- the summary ---------------------------------------------------------------------------------
def _uniform_edges(low: float, high: float, count: int) -> np.ndarray | None:
    """``np.histogram``'s edges for ``bins=count`` (``None`` where it raises: non-finite range)."""
    first, last = np.float64(low), np.float64(high)
    if not (np.isfinite(first) and np.isfinite(last)):
        return None
    if first == last:
        first, last = first - 0.5, last + 0.5
    return np.linspace(first, last, count + 1, endpoint=True, dtype=np.float64)


def _subsample(counts: np.ndarray, limits: np.ndarray, max_bins: int | None) -> tuple[np.ndarray, np.ndarray]:
    """tensorboardX's ``make_histogram`` merging of buckets down to ``max_bins``, line for line."""
    num_bins = len(counts)
    if max_bins is None or num_bins <= max_bins:
        return counts, limits
    subsampling = num_bins // max_bins
    subsampling_remainder = num_bins % subsampling
    if subsampling_remainder != 0:
        counts = np.pad(counts, pad_width=[[0, subsampling - subsampling_remainder]],
                        mode="constant", constant_values=0)
    counts = counts.reshape(-1, subsampling).sum(axis=-1)
    new_limits = np.empty((counts.size + 1,), limits.dtype)
    new_limits[:-1] = limits[:-1:subsampling]
    new_limits[-1] = limits[-1]
    return counts, new_limits


def _support(counts: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The buckets tensorboardX stores: first to last non-empty one, plus one empty bucket on the left.

    Its ``cumsum`` / ``searchsorted`` finds the same indices: first and last non-zero count, or
    ``(len, 0)`` when every count is zero.
    """
    nonzero = counts.nonzero()[0]
    start, end = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (len(counts), 1)
    counts = counts[start - 1:end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start:end + 1]
    if counts.size == 0 or limits.size == 0:
        raise ValueError("The histogram is empty, please file a bug report.")
    return counts, limits


_DOUBLE = struct.Struct("<d")
_ZERO = bytes(8)


def _double_field(key: int, value: float) -> bytes:
    """A double field; proto3 omits one whose bits are all zero (0.0, not -0.0)."""
    packed = _DOUBLE.pack(value)
    return b"" if packed == _ZERO else bytes((key,)) + packed


def _packed_doubles(key: int, values: np.ndarray) -> list[bytes]:
    """A packed repeated double field, in pieces (none when empty, as protobuf omits it)."""
    data = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return [bytes((key,)) + varint(len(data)), data] if data else []


def _histogram_proto_parts(counts: np.ndarray, limits: np.ndarray, stats: tuple, num: int) -> list[bytes]:
    """``HistogramProto(min, max, num, sum, sum_squares, bucket_limit, bucket)``'s bytes, in pieces.

    Pieces, so that the buckets (most of the bytes) are copied once, when the whole summary is joined.
    """
    mn, mx, total, squares = stats
    return [_double_field(0x09, mn), _double_field(0x11, mx), _double_field(0x19, num),
            _double_field(0x21, total), _double_field(0x29, squares),
            *_packed_doubles(0x32, limits), *_packed_doubles(0x3A, counts)]


def _flat(values: Any) -> Any | None:
    """The tensor as a contiguous 1-D tensor without autograd, or ``None`` if not handled here."""
    if torch is None or not isinstance(values, torch.Tensor):
        return None
    if values.is_complex() or values.device.type == "meta" or values.numel() == 0 or values.is_quantized:
        return None
    return values.detach().reshape(-1).contiguous()


def _numpy_values(array: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(values to bin, tensorboardX's float64 copy of them), both flat, or ``None`` if not handled here.

    Types float32 holds exactly are binned as float32 (the table is finer there); the others as
    the float64 values tensorboardX bins (int64 rounded as its ``astype(float)`` rounds them).
    """
    kind, size = array.dtype.kind, array.dtype.itemsize
    if array.size == 0 or kind not in "biuf" or (kind == "f" and size > 8):
        return None
    if kind == "b" or size <= 2 or (kind == "f" and size == 4):
        values = array.astype(np.float32, copy=False).reshape(-1)
        return values, values.astype(np.float64)
    wide = array.astype(np.float64, copy=False).reshape(-1)
    return wide, wide


def _host_values(values: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_numpy_values` of a numpy array, a list or a CPU tensor (tensorboardX's ``make_np``)."""
    if isinstance(values, np.ndarray):
        return _numpy_values(values)
    if isinstance(values, list):
        array = np.array(values)
        return _numpy_values(array) if array.dtype.kind in "biuf" else None
    if torch is None or not isinstance(values, torch.Tensor) or values.device.type != "cpu":
        return None
    tensor = values.detach()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        tensor = tensor.float()
    try:
        array = tensor.numpy()  # a view: _numpy_values flattens it in tensorboardX's order
    except TypeError:  # another dtype numpy lacks
        return None
    except RuntimeError:  # a lazily negated view (its neg bit set): numpy needs it materialised
        array = tensor.resolve_neg().numpy()
    return _numpy_values(array)


def _cpu_histogram(values: np.ndarray, wide: np.ndarray, spec: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """Counts, edges and stats on the host; stats are numpy's on tensorboardX's float64 copy."""
    mn, mx = wide.min(), wide.max()
    edges = _uniform_edges(mn, mx, spec) if isinstance(spec, int) else spec
    if edges is None:
        return None
    counts = _cpu_positions(values, _edge_thresholds(edges, values.dtype.type))
    return counts, edges, (mn, mx, wide.sum(), wide.dot(wide))


def _histogram(values: Any, spec: np.ndarray | int, on_device: bool | None) -> tuple[np.ndarray, np.ndarray, tuple, int] | None:
    """Positions, edges, stats and count of ``values`` on the host or on its device, or ``None``."""
    if on_device is None:
        on_device = torch is not None and isinstance(values, torch.Tensor) and values.device.type != "cpu"
    if on_device:
        flat = _flat(values)
        if flat is None:
            return None
        result = _device_histogram(flat, spec)
        return None if result is None else (*result, int(flat.numel()))
    host = _host_values(values)
    if host is None:
        return None
    result = _cpu_histogram(*host, spec)
    return None if result is None else (*result, len(host[1]))


def histogram_summary_bytes(tag: str, values: Any, bins: Any = "tensorflow", max_bins: int | None = None,
                            *, on_device: bool | None = None) -> bytes | None:
    """Serialized ``tensorboardX.summary.histogram(tag, values, bins, max_bins)``, or ``None``.

    ``values``: a numpy array, a list or a torch tensor. ``on_device`` forces the accelerator path
    (``True``, torch tensors only) or the host path (``False``); by default it follows the tensor's
    device.
    """
    spec = _explicit_edges(bins)
    if spec is None:
        return None
    try:
        result = _histogram(values, spec, on_device)
    except (RuntimeError, TypeError) as exc:  # a dtype or op the device lacks: tensorboardX's path
        logger.debug("histogram of %s not computed here (%s)", type(values).__name__, exc)
        return None
    if result is None:
        return None
    positions, edges, stats, num = result
    if not math.isfinite(stats[2]):
        logger.warning("NaN or Inf found in input tensor.")
    counts, limits = _support(*_subsample(positions[1:len(edges)], edges, max_bins))
    histo = _histogram_proto_parts(counts, limits, stats, num)
    histo_size = sum(map(len, histo))
    raw_tag = (_clean_tag(tag) or "").encode("utf-8")
    head = (field(1, raw_tag) if raw_tag else b"") + b"\x2a" + varint(histo_size)  # Summary.Value: tag, histo
    return b"".join((b"\x0a", varint(len(head) + histo_size), head, *histo))  # Summary.value


def histogram_summary(tag: str, values: Any, bins: Any = "tensorflow", max_bins: int | None = None,
                      *, on_device: bool | None = None) -> Summary | None:
    """:func:`histogram_summary_bytes` as a ``Summary`` message, or ``None``."""
    data = histogram_summary_bytes(tag, values, bins, max_bins, on_device=on_device)
    return None if data is None else Summary.FromString(data)
