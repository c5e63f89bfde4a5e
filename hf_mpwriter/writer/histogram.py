"""Histogram summaries computed where the values live, byte-identical to tensorboardX's.

tensorboardX's ``add_histogram`` converts the values to a float64 numpy array (for a torch tensor,
a full copy to host memory first) and bins it with ``np.histogram``, which sorts it; then it builds
``HistogramProto`` from Python lists. Logging the weights of many small layers is that call many
times per step, so here:

- on CPU (numpy arrays, lists, CPU tensors), each value's bucket is found in one vectorised pass
  instead of a sort (:mod:`hf_mpwriter.writer.histogram_buckets`: the edges, their thresholds and
  the lookup table). min, max, sum and sum of squares are numpy's own on the float64 copy
  tensorboardX makes, so every byte of the result is tensorboardX's;
- on an accelerator, buckets, min, max, sum and sum of squares are computed on the device
  (``torch.bucketize`` + ``scatter_add_``) and copied to the host together, once: one host
  synchronisation per call (two for an integer ``bins``, whose edges need min and max first);
- the summary is encoded by hand (:func:`histogram_summary_bytes`): the protobuf library's
  conversion of hundreds of Python numbers would cost more than the binning.

Bucket membership is exactly ``np.histogram``'s (see :mod:`~hf_mpwriter.writer.histogram_buckets`).
On an accelerator the sum and sum of squares are float64 reductions in the device's order: equal to
numpy's to rounding, not always to the last bit.

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
from typing import Any

import numpy as np
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import _clean_tag

from ..events.encoding import field
from ..events.records import varint
from .histogram_buckets import bucket_thresholds, cpu_positions, default_edges, edge_thresholds, uniform_edges

logger = logging.getLogger(__name__)

try:  # torch is optional: without it there is nothing for this module to do
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

#: Float types numpy reads exactly as float32 (tensorboardX's float64 of them is exact too).
_AS_FLOAT32 = () if torch is None else (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
                                        torch.int16, torch.bool)


def _explicit_edges(bins: Any) -> np.ndarray | int | None:
    """float64 edges, a number of equal bins, or ``None`` (not handled here) for ``bins``."""
    if isinstance(bins, str):
        return default_edges() if bins == "tensorflow" else None
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


# -- accelerators: torch.bucketize on the device, one copy back --------------------------------
_DEVICE_THRESHOLDS: dict[tuple[str, str], Any] = {}


def _device_thresholds(edges: np.ndarray, dtype: type, device: Any) -> Any:
    """:func:`bucket_thresholds` as a tensor on ``device``; for the default edges copied there once.

    A host-to-device copy from pageable memory waits for the device: done per call it would be a
    second synchronisation.
    """
    if edges is not default_edges():
        return torch.from_numpy(bucket_thresholds(edges, dtype)).to(device)
    key = (np.dtype(dtype).char, str(device))
    bounds = _DEVICE_THRESHOLDS.get(key)
    if bounds is None:
        bounds = _DEVICE_THRESHOLDS[key] = torch.from_numpy(edge_thresholds(edges, dtype)).to(device)
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
        edges = uniform_edges(low, high, spec)
        if edges is None:
            return None
    else:
        edges = spec
    counts = _device_positions(values, _device_thresholds(edges, dtype, values.device))
    host = torch.cat([stats, counts.double()]).cpu().numpy()  # the one synchronisation
    mn, mx, total, squares = host[:4]
    return host[4:].astype(np.intp), edges, (mn, mx, total, squares)


# -- the summary ---------------------------------------------------------------------------------
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
    edges = uniform_edges(mn, mx, spec) if isinstance(spec, int) else spec
    if edges is None:
        return None
    counts = cpu_positions(values, edge_thresholds(edges, values.dtype.type))
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
