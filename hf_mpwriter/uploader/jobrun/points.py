"""A point of the job run, of either kind: a scalar tag's :class:`~.stats.Stats` or a histogram tag's
:class:`~.histogram.HistogramStats`, told apart by the tag it is kept under.

The job view, the nodes' values and the leader key points by ``(tag, step)`` and treat both kinds alike
(when a point is due, the late-data rule, k, what the leader holds); a histogram tag is kept under
:func:`histogram_key` (a NUL first: no tag of a scalar, which TensorBoard's writers never give one).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Union, cast

from .histogram import Buckets, HistogramStats
from .stats import Stats

Point = Union[Stats, HistogramStats]


class Walls(NamedTuple):
    """When a point's values were logged, by their ranks' clocks: the first, the last, and the rank of the last."""

    first: float
    last: float
    last_rank: int
Value = Union[float, Buckets]  # one rank's value of a point
_HISTOGRAM = "\x00histogram\x00"


def histogram_key(tag: str) -> str:
    """The key a histogram tag's points are kept under."""
    return _HISTOGRAM + tag


def histogram_tag(key: str) -> str | None:
    """The histogram tag a key stands for, ``None`` for a scalar's."""
    return key[len(_HISTOGRAM):] if key.startswith(_HISTOGRAM) else None


def point_of(key: str, by_rank: Mapping[int, Value], missing: tuple[int, ...], walls: Walls) -> Point:
    """The ranks' values of one point (``key``'s kind) as its statistics; ``walls``: when they logged them."""
    if histogram_tag(key) is None:
        return Stats.of(cast(Mapping[int, float], by_rank), missing, walls.last, walls.first, walls.last_rank)
    return HistogramStats.of(cast(Mapping[int, Buckets], by_rank), missing, walls.last)


def point_from_list(key: str, item: list) -> Point:
    """A point sent as ``to_list()``; raises ``ValueError``/``TypeError`` if it does not parse."""
    return Stats.from_list(item) if histogram_tag(key) is None else HistogramStats.from_list(item)


def value_from_json(key: str, value: object) -> Value:
    """One rank's value of a point as a state file keeps it (a float, or a histogram's fields)."""
    if histogram_tag(key) is None:
        return float(cast(float, value))
    return Buckets.from_list(cast(list, value))


def merge_all(points: Sequence[Point]) -> Point:
    """Points of one tag and step, of disjoint ranks, as one (a scalar's at once: :meth:`Stats.merged`)."""
    if all(isinstance(p, Stats) for p in points):
        return Stats.merged(cast(Sequence[Stats], points))
    if all(isinstance(p, HistogramStats) for p in points):
        return functools.reduce(lambda a, b: a.merge(b), cast(Sequence[HistogramStats], points))
    raise TypeError("a scalar's point and a histogram's of one key")
