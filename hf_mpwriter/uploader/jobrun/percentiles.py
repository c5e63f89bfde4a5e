"""A scalar's percentiles across ranks at one step, in a form that merges through the job's tree
(:class:`Spread`, carried by :class:`~.stats.Stats`).

Two parts, both mergeable in any order and grouping with the same result:

- the :data:`TOP` highest values with their ranks, exact: the ranks in the tail are named from them, and a
  percentile whose position falls among them is exact (every percentile of at most :data:`TOP` ranks; p99
  up to some 800 ranks);
- past :data:`TOP` values, the finite ones in a DDSketch (``ddsketch``, DataDog's: the counts of
  logarithmic bins, which add exactly when sketches merge), whose percentile is within
  :data:`RELATIVE_ACCURACY` of the exact one, relative to its value. Infinities are counted beside it.

A percentile here is the nearest-rank one: of ``m`` values sorted ascending, the one at 0-based index
``ceil(p * m / 100) - 1``. NaN is left out (as from the min and max); -inf and +inf count as the lowest and
the highest values. A sketch keeps :data:`BIN_LIMIT` bins a sign: past that (one sign's values spanning
more than a factor of ~1e17) its lowest positive and most negative values collapse into one bin.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from ddsketch import CollapsingHighestDenseStore, CollapsingLowestDenseStore, LogarithmicMapping
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore

from ..coordination.protocol import MAX_WHOLE, Malformed, parse_count

#: A sketched percentile is within this fraction of the exact one (relative to its value).
RELATIVE_ACCURACY = 0.01
#: The highest values carried exactly, with their ranks.
TOP = 8
#: The bins a sketch keeps for each sign (a value from the store holding more is refused).
BIN_LIMIT = 2048
#: The percentiles the job run writes, by name.
PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
#: The keys a finite value maps to (a key from the store outside them is refused).
_KEYS = (_MAPPING.key(_MAPPING.min_possible) - 1, _MAPPING.key(1.7976931348623157e308) + 1)
_Ranked = tuple[tuple[float, int], ...]


def _new_sketch() -> BaseDDSketch:
    """An empty sketch; the negative side collapses its most negative bins, the positive its lowest, so that
    the upper percentiles keep their accuracy."""
    return BaseDDSketch(_MAPPING, CollapsingLowestDenseStore(BIN_LIMIT), CollapsingHighestDenseStore(BIN_LIMIT), 0.0)


def _sketch_of(values: Iterable[float]) -> BaseDDSketch:
    sketch = _new_sketch()
    for value in values:
        sketch.add(value)
    return sketch


def _order(pair: tuple[float, int]) -> tuple[float, int]:
    """The tail's order: the highest value first, the lowest rank first among ties."""
    return -pair[0], pair[1]


@dataclass(frozen=True, eq=False)
class Spread:
    """The non-NaN values of some ranks: how many, the :data:`TOP` highest with their ranks, the infinities,
    and (past :data:`TOP` values) the finite ones sketched."""

    count: int
    top: _Ranked
    neg_inf: int = 0
    pos_inf: int = 0
    sketch: BaseDDSketch | None = None  # ``None`` where ``top`` holds every value, or until :attr:`bins` is built
    #: ``(positive, negative, zeros)`` as read from the store (:meth:`from_list`), checked and not built into a
    #: sketch yet: a merge adds them into its own (:meth:`merged`), building none per point.
    bins: tuple[list[tuple[int, float]], list[tuple[int, float]], int] | None = None

    @classmethod
    def of(cls, by_rank: Mapping[int, float]) -> Spread:
        ranked = sorted(((v, r) for r, v in by_rank.items() if not math.isnan(v)), key=_order)
        sketch = None if len(ranked) <= TOP else _sketch_of(v for v, _ in ranked if math.isfinite(v))
        return cls(len(ranked), tuple(ranked[:TOP]), sum(v == -math.inf for v, _ in ranked),
                   sum(v == math.inf for v, _ in ranked), sketch)

    def merge(self, other: Spread) -> Spread:
        """Both sets of ranks' (disjoint) as one; neither is changed."""
        return Spread.merged((self, other))

    @classmethod
    def merged(cls, spreads: Sequence[Spread]) -> Spread:
        """Spreads of disjoint ranks as one, at once: one new sketch that every other's bins are added into (a
        fold of :meth:`merge` copies the growing sketch at each step); none is changed."""
        count = sum(s.count for s in spreads)
        top = tuple(islice(heapq.merge(*(s.top for s in spreads), key=_order), TOP))
        sketch = None
        if count > TOP:
            sketch = _new_sketch()
            for spread in spreads:
                if spread.sketch is not None:
                    sketch.merge(spread.sketch)
                elif spread.bins is not None:
                    _add_bins(sketch, spread.bins)
                else:
                    for value, _ in spread.top:
                        if math.isfinite(value):
                            sketch.add(value)
        return cls(count, top, sum(s.neg_inf for s in spreads), sum(s.pos_inf for s in spreads), sketch)

    def _built(self) -> BaseDDSketch | None:
        """The sketch (built from :attr:`bins` the first time it is asked for), ``None`` where ``top`` holds all."""
        if self.sketch is None and self.bins is not None:
            sketch = _new_sketch()
            _add_bins(sketch, self.bins)
            object.__setattr__(self, "sketch", sketch)  # (a cache: the values it stands for do not change)
        return self.sketch

    def _own_sketch(self) -> BaseDDSketch:
        """A new sketch of the finite values, to change (a copy of this one's)."""
        built = self._built()
        if built is None:
            return _sketch_of(v for v, _ in self.top if math.isfinite(v))
        sketch = _new_sketch()
        sketch.merge(built)
        return sketch

    def _filled(self) -> BaseDDSketch:
        """The sketch of the finite values (made from ``top`` where that holds them all)."""
        built = self._built()
        return self._own_sketch() if built is None else built

    def percentile(self, percent: int) -> float:
        """The nearest-rank ``percent``-th percentile (see the module): exact where its position is among
        ``top`` or the infinities, else the sketch's, within :data:`RELATIVE_ACCURACY`. NaN with no value."""
        if not self.count:
            return math.nan
        index = _index(percent, self.count)
        from_top = self.count - 1 - index
        if from_top < len(self.top):
            return self.top[from_top][0]
        if index < self.neg_inf:
            return -math.inf
        if index >= self.count - self.pos_inf:
            return math.inf
        finite = self.count - self.neg_inf - self.pos_inf
        at = index - self.neg_inf  # (+0.5: the sketch's rank q * (n - 1), rounded, stays inside the value's bin)
        value = self._filled().get_quantile_value(min(1.0, (at + 0.5) / (finite - 1)) if finite > 1 else 0.0)
        return math.nan if value is None else float(value)

    def tail(self, percent: int, value: float) -> tuple[list[tuple[float, int]], int]:
        """The ranks whose values are above ``value``, the ``percent``-th percentile, highest first, as far as
        ``top`` holds them, and how many more ranks come after the percentile's position (where ``top`` is all
        above it)."""
        if not self.count:
            return [], 0
        named = [pair for pair in self.top if pair[0] > value]
        past = self.count - 1 - _index(percent, self.count)
        return named, max(0, past - len(named)) if len(named) == len(self.top) else 0

    def to_list(self) -> list:
        """``[[value, rank, ...]]`` where ``top`` holds every value, else ``[[value, rank, ...], -inf count,
        +inf count, zeros, positive bins, negative bins]`` (bins: :func:`_bins`)."""
        flat = [x for pair in self.top for x in pair]
        sketch = self._built()
        if sketch is None:
            return [flat]
        return [flat, self.neg_inf, self.pos_inf, int(sketch._zero_count), _bins(sketch._store),
                _bins(sketch._negative_store)]

    @classmethod
    def from_list(cls, item: Any) -> Spread:
        """A spread as :meth:`to_list` sends it, within its bounds; raises :class:`Malformed` if it is not one."""
        if not isinstance(item, list) or len(item) not in (1, 6):
            raise Malformed("a spread is not [top] or [top, -inf, +inf, zeros, bins, bins]")
        top = _top(item[0])
        if len(item) == 1:
            return cls(len(top), top, sum(v == -math.inf for v, _ in top), sum(v == math.inf for v, _ in top))
        neg_inf, pos_inf, zeros = (parse_count(x, "a spread's count") for x in item[1:4])
        positive, negative = _pairs(item[4]), _pairs(item[5])
        count = neg_inf + pos_inf + zeros + int(sum(c for _, c in positive) + sum(c for _, c in negative))
        if count <= TOP or len(top) != TOP:
            raise Malformed(f"a spread of {count} values sketched with {len(top)} on top")
        return cls(count, top, neg_inf, pos_inf, None, (positive, negative, zeros))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spread) and self.to_list() == other.to_list()

    def __hash__(self) -> int:
        return hash((self.count, self.top))


def _index(percent: int, count: int) -> int:
    """The nearest-rank percentile's 0-based index among ``count`` sorted values: ``ceil(p * m / 100) - 1``."""
    return -(-percent * count // 100) - 1


def _bins(store: DenseStore) -> list[int]:
    """A store's bins, compact: ``[first key, count, ..., -gap, count, ...]``: a positive number is the next
    key's count, a negative one skips that many empty keys; ``[]`` where it is empty."""
    out: list[int] = []
    gap = 0
    for i, count in enumerate(store.bins):
        if not count:
            gap += bool(out)
            continue
        if not out:
            out.append(i + store.offset)
        elif gap:
            out.append(-gap)
        out.append(int(count))
        gap = 0
    return out


def _pairs(item: Any) -> list[tuple[int, float]]:
    """``(key, count)`` of :func:`_bins`'s form, the highest key first, then the others up from the lowest (a store
    they are added into grows once): keys within a finite value's and :data:`BIN_LIMIT` apart at most."""
    if not isinstance(item, list) or len(item) > 2 * BIN_LIMIT + 1:
        raise Malformed("a sketch's bins are not a list within its bounds")
    if not item:
        return []
    key = first = _key(item[0])
    pairs = []
    for x in item[1:]:
        if isinstance(x, bool) or not isinstance(x, int) or not -BIN_LIMIT <= x <= MAX_WHOLE or x == 0:
            raise Malformed(f"a sketch's bin {x!r} is not a count or a gap")
        if x < 0:
            key -= x
            continue
        pairs.append((key, float(x)))
        key += 1
    if not pairs or key - first > BIN_LIMIT or key - 1 > _KEYS[1]:
        raise Malformed(f"a sketch's bins are not within {BIN_LIMIT} keys of a finite value's")
    return [pairs[-1], *pairs[:-1]]


def _add_bins(sketch: BaseDDSketch, bins: tuple[list[tuple[int, float]], list[tuple[int, float]], int]) -> None:
    """Add a spread's bins as read (:func:`_pairs`) into ``sketch``, as merging a sketch of them would."""
    positive, negative, zeros = bins
    for store, pairs in ((sketch._store, positive), (sketch._negative_store, negative)):
        for key, count in pairs:
            store.add(key, count)
    sketch._zero_count += zeros
    sketch._count = sketch._negative_store.count + sketch._zero_count + sketch._store.count


def _key(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not _KEYS[0] <= x <= _KEYS[1]:
        raise Malformed(f"a sketch's key {x!r} is not a finite value's")
    return x


def _top(flat: Any) -> _Ranked:
    """``[value, rank, ...]``: at most :data:`TOP` pairs, no NaN, highest first."""
    if not isinstance(flat, list) or len(flat) % 2 or len(flat) > 2 * TOP:
        raise Malformed("a spread's top is not [value, rank, ...] within its bound")
    ranks = flat[1::2]
    if not all(type(r) is int and 0 <= r <= MAX_WHOLE for r in ranks):
        raise Malformed("a spread's top ranks are not whole numbers within their bound")
    pairs = tuple(zip(map(float, flat[0::2]), ranks))
    if any(math.isnan(v) for v, _ in pairs) or not all(_before(a, b) for a, b in zip(pairs, pairs[1:])):
        raise Malformed("a spread's top is not in order")
    return pairs


def _before(a: tuple[float, int], b: tuple[float, int]) -> bool:
    """Whether ``a`` comes before ``b`` in the tail's order (:func:`_order`), as they are (no key made)."""
    return a[0] > b[0] or (a[0] == b[0] and a[1] <= b[1])
