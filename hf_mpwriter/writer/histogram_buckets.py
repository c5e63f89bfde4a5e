"""Which bucket each value of a histogram is in, on the host: bucket edges, thresholds, counts.

Apart from :mod:`hf_mpwriter.writer.histogram` (the summary, the torch and device paths): this is
numpy only. Each value's bucket is found in one vectorised pass instead of a sort: a lookup table
indexed by the top 16 bits of each float plus one comparison (at most one bucket edge falls in each
table cell), in cache-sized chunks, then ``np.bincount``. For the default edges, their thresholds
and table are computed once per process; edges too dense for the table use ``np.searchsorted``.

Bucket membership is exactly ``np.histogram``'s: ``x`` is in bucket ``i`` iff
``edge[i] <= x < edge[i + 1]`` (the last bucket also holds its right edge); NaN and values outside
the edges are in no bucket. float32 values are compared with the smallest float32 at or above
each float64 edge, which decides every comparison as float64 would.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

#: Values per chunk of the CPU path: the chunk, its keys and indices stay in L2 cache.
CHUNK = 1 << 16
_KEY_BITS = 16


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
def default_edges() -> np.ndarray:
    """:func:`default_bins` as float64, one array per process (callers test for it by identity)."""
    return np.asarray(default_bins())


def bucket_thresholds(edges: np.ndarray, dtype: type) -> np.ndarray:
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
    """:func:`bucket_thresholds` of the default edges for float32 (``'f'``) or float64 (``'d'``), once per process."""
    return bucket_thresholds(default_edges(), np.dtype(char).type)


def edge_thresholds(edges: np.ndarray, dtype: type) -> np.ndarray:
    """:func:`bucket_thresholds`, cached for the default edges (the common call)."""
    if edges is default_edges():
        return _default_thresholds(np.dtype(dtype).char)
    return bucket_thresholds(edges, dtype)


def uniform_edges(low: float, high: float, count: int) -> np.ndarray | None:
    """``np.histogram``'s edges for ``bins=count`` (``None`` where it raises: non-finite range)."""
    first, last = np.float64(low), np.float64(high)
    if not (np.isfinite(first) and np.isfinite(last)):
        return None
    if first == last:
        first, last = first - 0.5, last + 0.5
    return np.linspace(first, last, count + 1, endpoint=True, dtype=np.float64)


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

    Slots ``0..nb`` are the positions of :func:`bucket_thresholds`; NaN and +inf go to ``nb`` (past the
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


def cpu_positions(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``bincount`` of every value's position (0 .. nb): ``#{j: thresholds[j] <= x}``, NaN at nb.

    The lookup table costs a few vectorised operations per value; edges too dense for it fall
    back to a binary search per value.
    """
    counts = _table_positions(values, thresholds)
    if counts is None:
        counts = np.bincount(np.searchsorted(thresholds, values, side="right"), minlength=len(thresholds) + 1)
    return counts
