"""One scalar's statistics over some ranks at one step, in a form that merges exactly.

A node reduces its own ranks' values of a ``(tag, step)`` into :class:`Stats`; the job's leader merges
the nodes' (:meth:`Stats.merge`) into the same statistics the values of every rank would give at once:
the sum is carried exactly (as ``math.fsum`` keeps it: non-overlapping partial sums, so the merged mean
is every value's correctly rounded sum over n, as at once), the sum of squared deviations merges by Chan, Golub and
LeVeque's pairwise update (the population std to a float's rounding), the min and max with the rank
holding them (the lowest rank among ties) merge exactly, and so do the ranks that logged NaN or did
not report. The percentiles across ranks and the ranks in their tail merge as :mod:`.percentiles` says.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from .percentiles import Spread

NO_RANK = -1  # the min or max rank of a point whose values are all NaN


@dataclass(frozen=True)
class Stats:
    """``n`` values: their sum and squared deviations, the lowest and highest with their ranks (NaN is
    neither), the ranks that logged NaN, the ranks that logged the tag before but not this step, the
    newest wall time among the values and the rank that logged it (the lowest among ties), and the
    earliest: how far the slowest rank logged this step after the first, on the ranks' own clocks; and the
    values' spread, for their percentiles (``None`` in a point of before them: it has none)."""

    n: int
    sums: tuple[float, ...]  # the exact sum, as non-overlapping partial sums (:func:`_partials`)
    m2: float
    low: float
    low_rank: int
    high: float
    high_rank: int
    nan: tuple[int, ...]
    missing: tuple[int, ...]
    wall: float
    first_wall: float = math.nan
    last_rank: int = NO_RANK
    spread: Spread | None = None

    @classmethod
    def of(cls, by_rank: Mapping[int, float], missing: tuple[int, ...] = (), wall: float = 0.0,
           first_wall: float = math.nan, last_rank: int = NO_RANK) -> Stats:
        values = list(by_rank.values())
        sums = _partials(values)
        mean = exact_sum(sums) / len(values)
        m2 = _squares(values, mean) if math.isfinite(mean) else math.nan
        ranks = [r for r, v in by_rank.items() if not math.isnan(v)]
        low = min(ranks, key=lambda r: (by_rank[r], r), default=NO_RANK)
        high = min(ranks, key=lambda r: (-by_rank[r], r), default=NO_RANK)
        nan = tuple(sorted(r for r, v in by_rank.items() if math.isnan(v)))
        return cls(len(values), sums, m2, by_rank.get(low, math.nan), low, by_rank.get(high, math.nan), high, nan,
                   tuple(sorted(missing)), wall, first_wall, last_rank, Spread.of(by_rank))

    def merge(self, other: Stats) -> Stats:
        """The statistics of both sets of ranks (disjoint) as one."""
        return Stats.merged((self, other))

    @classmethod
    def merged(cls, points: Sequence[Stats]) -> Stats:
        """The statistics of several sets of ranks (disjoint) as one; their spreads at once
        (:meth:`~.percentiles.Spread.merged`)."""
        out = functools.reduce(Stats._joined, points)
        spreads = [p.spread for p in points]
        return out if None in spreads else dataclasses.replace(out, spread=Spread.merged(cast(list, spreads)))

    def _joined(self, other: Stats) -> Stats:
        """Both sets of ranks as one, but for the spread (:meth:`merged` merges the spreads of all at once)."""
        n = self.n + other.n
        sums = _partials([*self.sums, *other.sums])
        try:
            delta = other.mean - self.mean
            m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        except OverflowError:
            m2 = math.inf
        low, low_rank = _pick((self.low, self.low_rank), (other.low, other.low_rank), 1)
        high, high_rank = _pick((self.high, self.high_rank), (other.high, other.high_rank), -1)
        wall = max(self.wall, other.wall)
        last_rank = _pick((self.wall, self.last_rank), (other.wall, other.last_rank), -1)[1]
        return Stats(n, sums, m2, low, low_rank, high, high_rank,
                     tuple(sorted(self.nan + other.nan)), tuple(sorted(self.missing + other.missing)),
                     wall, min(self.first_wall, other.first_wall, key=lambda w: (math.isnan(w), w)), last_rank)

    @property
    def lag(self) -> float:
        """Seconds between the first rank's and the last rank's value of this step, by their own clocks."""
        return self.wall - self.first_wall

    @property
    def mean(self) -> float:
        return exact_sum(self.sums) / self.n

    @property
    def std(self) -> float:
        """Population std: NaN where the mean is not finite, inf where the squares overflowed."""
        if not math.isfinite(self.mean):
            return math.nan
        return math.sqrt(max(self.m2, 0.0) / self.n)  # (max keeps a NaN)

    def percentile(self, percent: int) -> float:
        """The values' ``percent``-th percentile (:mod:`.percentiles`), within their exact min and max; NaN where
        every value is NaN or the point has no spread."""
        value = math.nan if self.spread is None else self.spread.percentile(percent)
        return value if math.isnan(value) else min(max(value, self.low), self.high)

    def to_list(self) -> list:
        spread = [] if self.spread is None else [self.spread.to_list()]
        return [self.n, list(self.sums), self.m2, self.low, self.low_rank, self.high, self.high_rank,
                list(self.nan), list(self.missing), self.wall, self.first_wall, self.last_rank, *spread]

    @classmethod
    def from_list(cls, item: list) -> Stats:
        """A point as :meth:`to_list` sends it; raises ``ValueError`` (:class:`~..coordination.protocol.Malformed`
        among them) or ``TypeError`` if it is not one."""
        n, sums, m2, low, low_rank, high, high_rank, nan, missing, wall, *more = item
        if int(n) < 1 or len(more) not in (0, 2, 3):
            raise ValueError(f"a point of {n} values, {len(item)} fields")
        first_wall, last_rank = more[:2] or (math.nan, NO_RANK)  # (a point of before the ranks' clocks: none)
        stats = cls(int(n), tuple(float(v) for v in sums), float(m2), float(low), int(low_rank), float(high), int(high_rank),
                    tuple(int(r) for r in nan), tuple(int(r) for r in missing), float(wall), float(first_wall),
                    int(last_rank), Spread.from_list(more[2]) if len(more) == 3 else None)
        if stats.spread is not None and stats.spread.count != stats.n - len(stats.nan):
            raise ValueError(f"a point of {stats.n} values, {len(stats.nan)} NaN, whose spread has {stats.spread.count}")
        return stats


def _pick(a: tuple[float, int], b: tuple[float, int], sign: int) -> tuple[float, int]:
    """Of two ``(value, rank)``, the lower (``sign`` 1) or the higher (-1), ties to the lower rank;
    :data:`NO_RANK` (all NaN) is no candidate."""
    if a[1] == NO_RANK:
        return b
    if b[1] == NO_RANK:
        return a
    return min(a, b, key=lambda c: (sign * c[0], c[1]))


def _partials(values: list[float]) -> tuple[float, ...]:
    """The exact sum of ``values`` as non-overlapping partial sums (Shewchuk's algorithm, as ``math.fsum``
    runs it inside; Python's ``msum`` recipe), which sum again exactly with others'. Values that are not
    all finite: their plain sum (inf, or NaN for +inf with -inf, as the sum of the values gives)."""
    if not all(math.isfinite(v) for v in values):
        return (sum(values),)
    partials: list[float] = []
    for x in values:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        if math.isinf(x):  # the partial sums overflowed: past a double
            return (x,)
        partials[i:] = [x]
    return tuple(partials) or (0.0,)


def exact_sum(values: list[float] | tuple[float, ...]) -> float:
    """Exact where finite (``math.fsum``); inf or NaN as the values make it (fsum refuses +inf with -inf)."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return sum(values)


def _squares(values: list[float], mean: float) -> float:
    try:
        return math.fsum((v - mean) ** 2 for v in values)
    except OverflowError:
        return math.inf
