"""Histogram summaries of torch tensors computed where the tensor lives, byte-identical to tensorboardX's.

tensorboardX's ``add_histogram`` copies a torch tensor to host memory, converts it to float64 and
bins it with ``np.histogram``, which sorts it. For a tensor on an accelerator that is a full
device-to-host copy per call; on CPU the sort is most of the cost. Here:

- on an accelerator, buckets, min, max, sum and sum of squares are computed on the device
  (``torch.bucketize`` + ``torch.bincount``) and only those numbers reach the host;
- on CPU, each value's bucket comes from a lookup table indexed by the top 16 bits of its float
  representation plus one comparison (at most one bucket edge falls in each table cell), in
  cache-sized chunks, instead of a sort; min, max, sum and sum of squares are numpy's own on the
  float64 copy tensorboardX makes, so every byte of the result is tensorboardX's.

Bucket membership is exactly ``np.histogram``'s: ``x`` is in bucket ``i`` iff
``edge[i] <= x < edge[i + 1]`` (the last bucket also holds its right edge); NaN and values outside
the edges are in no bucket. float32 values are compared with the smallest float32 at or above
each float64 edge, which decides every comparison as float64 would. On an accelerator the sum and
sum of squares are float64 reductions in the device's order: equal to numpy's to rounding, not
always to the last bit.

:func:`histogram_summary` returns ``None`` for what it does not cover (numpy inputs, complex
tensors, ``bins`` strings other than ``'tensorflow'``, edges denser than the lookup table
resolves, non-finite ranges with integer ``bins``, empty tensors): the caller then uses
tensorboardX's own code, which also raises its own errors.
"""

from __future__ import annotations

import logging
import math
import operator
from functools import lru_cache
from typing import Any

import numpy as np
from tensorboardX.proto.summary_pb2 import HistogramProto, Summary
from tensorboardX.summary import _clean_tag

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

    Slots ``0..nb`` are the positions of :func:`_thresholds`; NaN goes to ``nb + 1``, +inf to
    ``nb + 2`` and -inf to ``nb + 4`` (moved to their positions afterwards). ``None`` if some cell
    holds two thresholds (edges closer than the cell width: ~0.8 % for float32, ~6 % for float64).
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
    base[special] = nb + 1  # NaN (x >= threshold is False)
    threshold[special & ~negative] = np.inf  # +inf -> nb + 2
    base[special & negative] = nb + 3  # NaN -> nb + 3 (dropped), -inf -> nb + 4
    threshold[special & negative] = -np.inf
    return base, threshold


_TABLES: dict[bytes, tuple[np.ndarray, np.ndarray] | None] = {}


def _cached_table(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    key = thresholds.dtype.char.encode() + thresholds.tobytes()
    if key not in _TABLES:
        if len(_TABLES) >= 8:
            _TABLES.clear()
        _TABLES[key] = _lookup_table(thresholds)
    return _TABLES[key]


def _cpu_positions(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray | None:
    """``bincount`` of every value's position (0 .. nb) via the lookup table, or ``None``."""
    table = _cached_table(thresholds)
    if table is None:
        return None
    base, threshold = table
    nb = len(thresholds)
    bits = values.view(np.uint32 if values.dtype.itemsize == 4 else np.uint64)
    shift = values.dtype.itemsize * 8 - _KEY_BITS
    size = min(CHUNK, len(values))
    keys, slots = np.empty(size, np.intp), np.empty(size, np.intp)
    limit, above = np.empty(size, values.dtype), np.empty(size, np.bool_)
    counts = np.zeros(nb + 5, dtype=np.intp)
    for start in range(0, len(values), size):
        chunk = values[start:start + size]
        m = len(chunk)
        k, s, lim, up = keys[:m], slots[:m], limit[:m], above[:m]
        np.right_shift(bits[start:start + m], shift, out=k)  # intp keys: take() need not convert them
        base.take(k, out=s, mode="clip")  # keys are in range; "clip" makes take() unbuffered
        threshold.take(k, out=lim, mode="clip")
        np.greater_equal(chunk, lim, out=up)
        s += up
        counts += np.bincount(s, minlength=nb + 5)
    counts[_position(thresholds, np.inf)] += counts[nb + 2]
    counts[_position(thresholds, -np.inf)] += counts[nb + 4]
    return counts[: nb + 1]


def _position(thresholds: np.ndarray, value: float) -> int:
    return int(np.searchsorted(thresholds, thresholds.dtype.type(value), side="right"))


# -- accelerators: torch.bucketize on the device --------------------------------------------------
def _device_positions(values: Any, thresholds: np.ndarray) -> Any:
    """``bincount`` of positions on the tensor's device (NaN lands past the end: excluded)."""
    bounds = torch.from_numpy(thresholds).to(values.device)
    slots = torch.bucketize(values, bounds, right=True)
    return torch.bincount(slots, minlength=len(thresholds) + 1)


def _device_stats(values: Any) -> tuple[float, float, float, float]:
    """min, max, sum, sum of squares computed on the device; four numbers copied back."""
    low, high = torch.aminmax(values)
    wide = values.double()
    stats = torch.stack([low.double(), high.double(), wide.sum(), torch.dot(wide, wide)])
    mn, mx, total, squares = stats.cpu().tolist()
    return mn, mx, total, squares


# -- the summary ---------------------------------------------------------------------------------
def _uniform_edges(low: float, high: float, count: int) -> np.ndarray | None:
    """``np.histogram``'s edges for ``bins=count`` (``None`` where it raises: non-finite range)."""
    first, last = np.float64(low), np.float64(high)
    if not (np.isfinite(first) and np.isfinite(last)):
        return None
    if first == last:
        first, last = first - 0.5, last + 0.5
    return np.linspace(first, last, count + 1, endpoint=True, dtype=np.float64)


def _histogram_proto(counts: np.ndarray, limits: np.ndarray, stats: tuple, num: int, max_bins: int | None) -> HistogramProto:
    """tensorboardX's ``make_histogram`` after ``np.histogram``, line for line (same bytes)."""
    num_bins = len(counts)
    if max_bins is not None and num_bins > max_bins:
        subsampling = num_bins // max_bins
        subsampling_remainder = num_bins % subsampling
        if subsampling_remainder != 0:
            counts = np.pad(counts, pad_width=[[0, subsampling - subsampling_remainder]],
                            mode="constant", constant_values=0)
        counts = counts.reshape(-1, subsampling).sum(axis=-1)
        new_limits = np.empty((counts.size + 1,), limits.dtype)
        new_limits[:-1] = limits[:-1:subsampling]
        new_limits[-1] = limits[-1]
        limits = new_limits
    cum_counts = np.cumsum(np.greater(counts, 0))
    start, end = np.searchsorted(cum_counts, [0, cum_counts[-1] - 1], side="right")
    start = int(start)
    end = int(end) + 1
    counts = counts[start - 1:end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start:end + 1]
    if counts.size == 0 or limits.size == 0:
        raise ValueError("The histogram is empty, please file a bug report.")
    mn, mx, total, squares = stats
    return HistogramProto(min=mn, max=mx, num=num, sum=total, sum_squares=squares,
                          bucket_limit=limits.tolist(), bucket=counts.tolist())


def _flat(values: Any) -> Any | None:
    """The tensor as a contiguous 1-D tensor without autograd, or ``None`` if not handled here."""
    if torch is None or not isinstance(values, torch.Tensor):
        return None
    if values.is_complex() or values.device.type == "meta" or values.numel() == 0 or values.is_quantized:
        return None
    return values.detach().reshape(-1).contiguous()


def _cpu_histogram(flat: Any, spec: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """Counts, edges and stats of a CPU tensor; stats are numpy's on tensorboardX's float64 copy."""
    narrow = flat.dtype in _AS_FLOAT32
    if narrow:
        values = flat.to(torch.float32).numpy()
        wide = values.astype(float)
    else:
        try:
            host = flat.numpy()
        except TypeError:
            return None
        wide = host if host.dtype == np.float64 else host.astype(float)
        values = wide
    mn, mx = wide.min(), wide.max()
    edges = _uniform_edges(mn, mx, spec) if isinstance(spec, int) else spec
    if edges is None:
        return None
    counts = _cpu_positions(values, _thresholds(edges, values.dtype.type))
    if counts is None:
        return None
    return counts, edges, (mn, mx, wide.sum(), wide.dot(wide))


def _device_histogram(flat: Any, spec: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """Counts, edges and stats computed on the tensor's device; only they are copied to the host."""
    narrow = flat.dtype in _AS_FLOAT32
    values = flat.to(torch.float32 if narrow else torch.float64)
    stats = _device_stats(values)
    edges = _uniform_edges(stats[0], stats[1], spec) if isinstance(spec, int) else spec
    if edges is None:
        return None
    thresholds = _thresholds(edges, np.float32 if narrow else np.float64)
    counts = _device_positions(values, thresholds).cpu().numpy().astype(np.intp)
    return counts, edges, stats


def histogram_summary(tag: str, values: Any, bins: Any = "tensorflow", max_bins: int | None = None,
                      *, on_device: bool | None = None) -> Summary | None:
    """tensorboardX's ``summary.histogram(tag, values, bins, max_bins)`` for a torch tensor, or ``None``.

    ``on_device`` forces the accelerator path (``True``) or the CPU path (``False``); by default
    it follows the tensor's device.
    """
    flat = _flat(values)
    spec = _explicit_edges(bins) if flat is not None else None
    if flat is None or spec is None:
        return None
    device = on_device if on_device is not None else flat.device.type != "cpu"
    try:
        result = _device_histogram(flat, spec) if device else _cpu_histogram(flat, spec)
    except (RuntimeError, TypeError) as exc:  # a dtype or op the device lacks: tensorboardX's path
        logger.debug("histogram of %s tensor on %s not computed in place (%s)", flat.dtype, flat.device, exc)
        return None
    if result is None:
        return None
    positions, edges, stats = result
    if not math.isfinite(stats[2]):
        logger.warning("NaN or Inf found in input tensor.")
    counts = positions[1:len(edges)]
    hist = _histogram_proto(counts, edges, stats, int(flat.numel()), max_bins)
    return Summary(value=[Summary.Value(tag=_clean_tag(tag), histo=hist)])
