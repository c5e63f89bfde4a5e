"""Some ranks' histograms of one tag and step merged into one, in a form that merges again: the job
run's histograms (:mod:`.view`; a node's share of them, merged by the job's leader: :mod:`.exchange`).

Exact where the ranks' bucket limits agree: no limit of one histogram may fall inside a bucket of
another that holds values. tensorboardX's and ``torch.utils.tensorboard``'s default buckets
(``bins="tensorflow"``) are one fixed grid and each histogram a run of it, so a bucket is the same range
in every histogram that has it, and the counts add up to what the histogram of every rank's values at
once holds. Buckets chosen per histogram (``bins="auto"`` or a count: each rank's own edges) do not
agree: such a point merges to "not mergeable" (:attr:`HistogramStats.buckets` ``None``), and the job
run writes no histogram for it.

On the default grid (:data:`GRID`) a histogram's limits are sent as the grid's index of the first
(``{"grid": i}``), its counts as integers: a histogram of values around 0 spans hundreds of the
grid's fine buckets, and the store's budget is shared with every node's scalars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ...events.decoding import Histogram
from .stats import exact_sum


def _default_grid() -> tuple[float, ...]:
    """tensorboardX's and ``torch.utils.tensorboard``'s default bucket limits (``bins="tensorflow"``),
    computed as they compute them (so equal to the bit)."""
    v, buckets = 1e-12, []
    while v < 1e20:
        buckets.append(v)
        v *= 1.1
    return tuple([-b for b in reversed(buckets)] + [0.0] + buckets)


#: The default grid, and each limit's index in it.
GRID = _default_grid()
_GRID_INDEX = {limit: i for i, limit in enumerate(GRID)}


class Buckets(NamedTuple):
    """A ``HistogramProto``'s fields: ``counts[i]`` values in the bucket whose right edge is ``limits[i]``
    (its left edge the limit before; the first's is not said)."""

    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    limits: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def read(cls, histogram: Histogram) -> Buckets:
        return cls(histogram.min, histogram.max, histogram.num, histogram.sum, histogram.sum_squares,
                   histogram.limits, histogram.counts)

    def to_list(self) -> list:
        first = _grid_start(self.limits) if self.limits else None
        limits = {"grid": first} if first is not None else list(self.limits)
        return [*self[:5], limits, [int(c) if c.is_integer() else c for c in self.counts]]

    @classmethod
    def from_list(cls, item: list) -> Buckets:
        mn, mx, num, total, squares, limits, counts = item
        if isinstance(limits, dict):
            first = int(limits["grid"])
            if not 0 <= first <= len(GRID) - len(counts):
                raise ValueError(f"limits {first}+{len(counts)} past the default grid")
            limits = GRID[first:first + len(counts)]
        if len(limits) != len(counts):
            raise ValueError("a histogram's limits and counts differ in length")
        return cls(float(mn), float(mx), float(num), float(total), float(squares),
                   tuple(float(v) for v in limits), tuple(float(v) for v in counts))


def merge_buckets(parts: Iterable[Buckets]) -> Buckets | None:
    """One histogram of every value of ``parts``, or ``None`` where their limits do not agree (see the
    module) or none has a bucket."""
    parts = [p for p in parts if p.limits]
    if not parts:
        return None
    starts = [_grid_start(p.limits) for p in parts]
    if None not in starts:  # (the usual case, and in one pass: runs of one grid always agree)
        first = min(s for s in starts if s is not None)
        total = np.zeros(max(s + len(p.limits) for s, p in zip(starts, parts) if s is not None) - first)
        for start, p in zip(starts, parts):
            total[start - first:start - first + len(p.counts)] += p.counts  # type: ignore[operator]
        return _with_stats(parts, GRID[first:first + len(total)], tuple(total.tolist()))
    if not all(_increasing(p.limits) for p in parts):
        return None
    limits = sorted({limit for p in parts for limit in p.limits})
    if all(limit in _GRID_INDEX for limit in limits):
        limits = list(GRID[_GRID_INDEX[limits[0]]:_GRID_INDEX[limits[-1]] + 1])  # (the grid's empty buckets between)
    index = {limit: i for i, limit in enumerate(limits)}
    counts = [0.0] * len(limits)
    for p in parts:
        at = [index[limit] for limit in p.limits]
        for i, count in enumerate(p.counts):
            if not count:
                continue
            if i and at[i] - at[i - 1] != 1:
                return None  # another histogram's limit falls inside this bucket
            if not i and at[0] and not limits[at[0] - 1] <= p.min:
                return None  # its first bucket (its left edge not said) would start at another's limit
            counts[at[i]] += count
    return _with_stats(parts, tuple(limits), tuple(counts))


def _with_stats(parts: list[Buckets], limits: tuple[float, ...], counts: tuple[float, ...]) -> Buckets:
    """The merged buckets with the min, max, count and sums of every part."""
    lows, highs = [p.min for p in parts], [p.max for p in parts]
    low = math.nan if any(map(math.isnan, lows)) else min(lows)
    high = math.nan if any(map(math.isnan, highs)) else max(highs)
    return Buckets(low, high, math.fsum(p.num for p in parts), exact_sum([p.sum for p in parts]),
                   exact_sum([p.sum_squares for p in parts]), limits, counts)


def _grid_start(limits: tuple[float, ...]) -> int | None:
    """The index in :data:`GRID` of the first of ``limits`` where they are a run of it, else ``None``."""
    first = _GRID_INDEX.get(limits[0])
    return first if first is not None and GRID[first:first + len(limits)] == limits else None


@dataclass(frozen=True)
class HistogramStats:
    """``n`` ranks' histograms of one tag and step, merged (``buckets``; ``None`` where their limits do not
    agree), the ranks that logged the tag before but not this step, and the newest wall time."""

    n: int
    buckets: Buckets | None
    missing: tuple[int, ...]
    wall: float

    @classmethod
    def of(cls, by_rank: Mapping[int, Buckets], missing: tuple[int, ...] = (), wall: float = 0.0) -> HistogramStats:
        return cls(len(by_rank), merge_buckets(by_rank.values()), tuple(sorted(missing)), wall)

    def merge(self, other: HistogramStats) -> HistogramStats:
        """Both sets of ranks' (disjoint) as one."""
        both = None if self.buckets is None or other.buckets is None else merge_buckets([self.buckets, other.buckets])
        return HistogramStats(self.n + other.n, both, tuple(sorted(self.missing + other.missing)),
                              max(self.wall, other.wall))

    def to_list(self) -> list:
        return [self.n, None if self.buckets is None else self.buckets.to_list(), list(self.missing), self.wall]

    @classmethod
    def from_list(cls, item: list) -> HistogramStats:
        n, buckets, missing, wall = item
        if int(n) < 1:
            raise ValueError(f"a point of {n} histograms")
        return cls(int(n), None if buckets is None else Buckets.from_list(buckets),
                   tuple(int(r) for r in missing), float(wall))


def _increasing(limits: tuple[float, ...]) -> bool:
    return all(a < b for a, b in zip(limits, limits[1:]))
