"""The ranks' histograms of one tag and step merged into one, for the job run (:mod:`.job_view`).

Exact where the ranks' bucket limits agree: each rank's limits must be consecutive limits of all the
ranks' together. tensorboardX's and ``torch.utils.tensorboard``'s default buckets (``bins="tensorflow"``)
are one fixed grid and each histogram a run of it, so a bucket is the same range in every histogram that
has it, and its counts add up to what the histogram of every rank's values at once holds. Buckets
chosen per histogram (``bins="auto"`` or a count: each rank's own edges) do not agree, and are not merged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from ..events.decoding import Histogram
from .job_stats import exact_sum


class Merged(NamedTuple):
    """A ``HistogramProto``'s fields: ``(min, max, num, sum, sum_squares)``, the limits and the counts."""

    stats: tuple[float, float, float, float, float]
    limits: list[float]
    counts: list[float]


def merge(histograms: Iterable[Histogram]) -> Merged | None:
    """One histogram of every value of ``histograms`` (one per rank), or ``None`` where their limits do
    not agree (see the module) or none has a bucket."""
    ranks = [h for h in histograms if h.limits]
    if not ranks or not all(_increasing(h.limits) for h in ranks):
        return None
    limits = sorted({limit for h in ranks for limit in h.limits})
    index = {limit: i for i, limit in enumerate(limits)}
    counts = [0.0] * len(limits)
    for h in ranks:
        first = index[h.limits[0]]
        if index[h.limits[-1]] - first + 1 != len(h.limits):
            return None  # another rank's limit falls inside one of this rank's buckets
        if h.counts[0] and first and not limits[first - 1] <= h.min:
            return None  # its first bucket (its left edge unsaid) would start at another rank's limit
        for i, count in enumerate(h.counts):
            counts[first + i] += count
    lows, highs = [h.min for h in ranks], [h.max for h in ranks]
    low = math.nan if any(map(math.isnan, lows)) else min(lows)
    high = math.nan if any(map(math.isnan, highs)) else max(highs)
    stats = (low, high, math.fsum(h.num for h in ranks), exact_sum([h.sum for h in ranks]),
             exact_sum([h.sum_squares for h in ranks]))
    return Merged(stats, limits, counts)


def _increasing(limits: tuple[float, ...]) -> bool:
    return all(a < b for a, b in zip(limits, limits[1:]))
