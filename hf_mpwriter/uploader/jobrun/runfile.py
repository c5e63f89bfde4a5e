"""The job run's file, ``<logdir>/job/``: the points written by step in TensorBoard's terms (the tags of
:func:`stat_tag`, the texts that name ranks, two charts per tag, a restart of its own), what it held
at a restart without state, and the picture ``status`` shows. What goes in it, and when, is
:mod:`.view`'s (one node) or :mod:`.exchange`'s (a job's leader)."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ...events.decoding import summaries
from ...events.encoding import histogram_event, layout_event, scalars_event, session_start_event, text_event
from ...events.event_file import EventFileWriter
from ...events.records import iter_records
from ...state.lost import Lost
from ...state.piece import open_nofollow
from ...state.statedir import state_dir, write_json_atomic
from .histogram import HistogramStats
from .percentiles import PERCENTILES
from .points import Point, histogram_key, histogram_tag
from .stats import NO_RANK, Stats

logger = logging.getLogger(__name__)

RUN_DIR = "job"
#: The job run's picture for ``status`` (:meth:`JobView.summary`), in the logdir's state directory.
STATUS_FILE = "job_view.json"
#: The statistics written for each tag, in this order (then its percentiles, where its point has them).
STATS = ("mean", "min", "max", "std", "ranks", "missing")
#: The percentile whose tail ``~job/extreme_ranks`` names (the ranks above it, at most :data:`~.percentiles.TOP`).
TAIL = 99
#: How many ranks ``status`` names per tag as most often the min or the max.
TOP_RANKS = 5
#: A step whose last rank logged it this long after the first names that rank (``~job/slowest_rank``).
STRAGGLER_S = 1.0
#: The group of the job run's tags other than each tag's mean: TensorBoard orders groups by name, and a ``~``
#: comes after every letter, so the group is the last, collapsed, below the user's own tags.
GROUP = "~job"
#: The version of the run's charts (:func:`stat_tag`'s names, the layout's charts): a run taken up from an older one
#: writes its charts again.
LAYOUT = 5


def stat_tag(tag: str, name: str) -> str:
    """The job run's tag of statistic ``name`` (of :data:`STATS`) of the ranks' ``tag``: the mean under the
    tag itself (drawn with the ranks' lines), the others under ``~job/<tag>/``."""
    return tag if name == "mean" else f"{GROUP}/{tag}/{name}"


def _exactly(*tags: str) -> str:
    """A multiline chart's regex for these tags alone (Custom Scalars takes regexes: a tag's ``.`` is not any)."""
    return "^(?:" + "|".join(re.escape(tag) for tag in tags) + ")$"


class JobRun:
    """The job run's file (:data:`RUN_DIR`): points written by step, two charts per tag, and how
    often each rank was a tag's min or max (for ``status``)."""

    def __init__(self, logdir: Path, after: int | None = None) -> None:
        """``after``: the last step the run's job-wide series hold (a new leader: what the last one wrote)."""
        self.logdir = Path(logdir)
        self.run_dir = self.logdir / RUN_DIR
        self.extremes: dict[str, tuple[Counter, Counter]] = {}  # tag -> (times each rank was min, was max)
        self.points = 0
        self.unmerged = 0  # histogram points not written: their ranks' bucket limits disagree
        self._stragglers_at = after  # the step ~job/lag_s was last written at
        self.slowest: tuple[int, float] | None = None  # (rank, seconds) of the last step written (``status``)
        self._charted: set[str] = set()
        self._writer: EventFileWriter | None = None
        #: The run's files and their sizes when the state :meth:`load` took up was saved (:meth:`written_after_state`).
        self._saved_sizes: dict[str, int] | None = None
        #: The events holding no point found there (:meth:`written_after_state`): an unmergeable histogram's missing
        #: ranks are its point's only trace, and one made again is not written again, below the lowest restart since.
        self._found: set[bytes] = set()
        self._found_below: float = math.inf
        self.lost_said: set[tuple[str, int, int]] = set()  # (run, after, restart) of each loss said (:meth:`say_lost`)

    def write(self, points: Sequence[tuple[str, int, Point]], world: int, every: int = 1) -> None:
        """Write ``points`` (each tag's steps in order, after those it holds; ``every``: the run holds only the
        steps divisible by it, where more than 1)."""
        by_step: dict[int, list[tuple[str, Stats]]] = {}
        writer = self._open()
        written = len(points)
        for key, step, point in sorted(points, key=lambda p: (p[1], p[0])):
            if isinstance(point, HistogramStats):
                written -= not self._histogram(writer, key, step, point)
            else:
                by_step.setdefault(step, []).append((key, point))
        self._chart(writer, sorted({tag for tagged in by_step.values() for tag, _ in tagged} - self._charted))
        for step, tagged in by_step.items():
            values: list[tuple[str, float]] = []
            wall = max(stats.wall for _, stats in tagged)
            for tag, stats in tagged:
                values.extend(self._point(tag, stats, world))
                if stats.missing:
                    writer.add_serialized(text_event(stat_tag(tag, "missing_ranks"), _ranks_text("missing", stats.missing),
                                                     step, wall))
                if stats.nan:
                    writer.add_serialized(text_event(stat_tag(tag, "nan_ranks"), _ranks_text("NaN", stats.nan), step, wall))
            extremes = [f"{tag}: min rank {stats.low_rank}, max rank {stats.high_rank}{_tail_text(stats)}"
                        for tag, stats in tagged if stats.low_rank != NO_RANK]
            if extremes:
                writer.add_serialized(text_event(f"{GROUP}/extreme_ranks", "  \n".join(extremes), step, wall))
            if self._stragglers_at is None or step > self._stragglers_at:  # its steps in order too
                values += self._lag(writer, step, [stats for _, stats in tagged], wall)
                if every > 1:
                    values.append((f"{GROUP}/every_kth_step", float(every)))
                self._stragglers_at = step
            writer.add_serialized(scalars_event(values, step, wall))
        writer.flush()
        self.points += written

    def _lag(self, writer: EventFileWriter, step: int, points: list[Stats], wall: float) -> list[tuple[str, float]]:
        """``~job/lag_s`` of a step: the longest lag among its points, by the ranks' clocks; its rank named
        where the lag is :data:`STRAGGLER_S` or more."""
        timed = [stats for stats in points if stats.last_rank != NO_RANK and math.isfinite(stats.lag)]
        if not timed:
            return []
        worst = max(timed, key=lambda stats: (stats.lag, -stats.last_rank))
        self.slowest = (worst.last_rank, worst.lag)
        if worst.lag >= STRAGGLER_S:
            writer.add_serialized(text_event(f"{GROUP}/slowest_rank", f"rank {worst.last_rank}, {worst.lag:.1f} s after the "
                                             "first rank", step, wall))
        return [(f"{GROUP}/lag_s", float(worst.lag))]

    def say_lost(self, found: Sequence[Lost]) -> None:
        """``~job/lost_steps/<run>``: each rank run's steps lost with an earlier attempt's disk, a text at its restart
        step, said once (:mod:`hf_mpwriter.uploader.lost_steps` finds them). A tag per run: TensorBoard's default
        reader keeps one value of a tag per step, and a job's ranks restart at the same step, from several nodes'
        files."""
        new = [lost for lost in found if (lost.run, lost.after, lost.restart) not in self.lost_said]
        if not new:
            return
        writer = self._open()
        for lost in new:
            tag = f"{GROUP}/lost_steps" + ("" if lost.run == "." else f"/{lost.run}")
            writer.add_serialized(text_event(tag, lost.text(), lost.restart, time.time()))
            self.lost_said.add((lost.run, lost.after, lost.restart))
        writer.flush()

    def restart(self, step: int) -> None:
        """Drop the run's points at and after ``step`` as TensorBoard drops a restarted writer's: a
        ``SessionLog.START`` at ``step`` (the points made anew come after it). ``status``'s counts of the
        ranks most often a tag's min or max start again (they cannot tell the dropped steps' from the others)."""
        self.extremes.clear()
        writer = self._open()
        for _ in range(2):  # TensorBoard's Python reader takes a run's first START for no restart (see the writer's)
            writer.add_serialized(session_start_event(step, time.time()))
        writer.flush()
        if self._stragglers_at is not None:
            self._stragglers_at = min(self._stragglers_at, step - 1)
        self._found_below = min(self._found_below, step)  # (what was found from here on is dropped: made anew, written)
        if step <= 0:
            self._charted.clear()  # the layout (step 0) goes too: written again

    def _histogram(self, writer: EventFileWriter, key: str, step: int, point: HistogramStats) -> bool:
        """Write one merged histogram (and its missing ranks); ``False`` where it could not be merged."""
        tag = histogram_tag(key) or key
        buckets = point.buckets
        if buckets is not None:
            stats = (buckets.min, buckets.max, buckets.num, buckets.sum, buckets.sum_squares)
            writer.add_serialized(histogram_event(tag, stats, list(buckets.limits), list(buckets.counts), step, point.wall))
        else:
            if not self.unmerged:
                logger.warning("job run: histogram %r: the ranks' bucket limits differ (buckets other than tensorboardX's "
                               "default ones?); such histograms are left out of it", tag)
            self.unmerged += 1
        if point.missing:
            text = text_event(stat_tag(tag, "missing_ranks"), _ranks_text("missing", point.missing), step, point.wall)
            if text in self._found and step < self._found_below:
                self._found.discard(text)  # (written before the state that covers it was saved)
            else:
                writer.add_serialized(text)
        return buckets is not None

    def _point(self, tag: str, stats: Stats, world: int) -> list[tuple[str, float]]:
        row = (stats.mean, stats.low, stats.high, stats.std, stats.n, max(0, world - stats.n))
        if stats.low_rank != NO_RANK:  # (``status``: the ranks most often the tag's min and max)
            mins, maxes = self.extremes.setdefault(tag, (Counter(), Counter()))
            mins[stats.low_rank] += 1
            maxes[stats.high_rank] += 1
        percentiles = [] if stats.spread is None else [(name, stats.percentile(p)) for name, p in PERCENTILES]
        return [(stat_tag(tag, name), float(value)) for name, value in [*zip(STATS, row), *percentiles]]

    def _chart(self, writer: EventFileWriter, tags: list[str]) -> None:
        """The Custom Scalars layout, written again whenever a tag is new (TensorBoard takes the run's last)."""
        if not tags:
            return
        self._charted.update(tags)
        charts: list = [chart for tag in sorted(self._charted) for chart in (
            (tag, tag, stat_tag(tag, "min"), stat_tag(tag, "max")),
            (f"{tag}: mean, p50, p90, p99", [_exactly(tag, *(stat_tag(tag, name) for name, _ in PERCENTILES))]))]
        writer.add_serialized(layout_event("job: mean in min-max; mean and p50, p90, p99, across ranks", charts, time.time()))

    def _open(self) -> EventFileWriter:
        if self._writer is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(self.run_dir, max_queue=1_000_000, flush_secs=3600.0)
        return self._writer

    def close(self) -> None:
        """Close the run's file (it is complete: made read-only, sent once more as it is)."""
        if self._writer is not None:
            self._writer.close(retry_secs=0)
            self._writer = None

    def resume(self, beat: Callable[[], None], beat_every: int) -> dict[str, int]:
        """The last step per tag the run's files hold, a histogram tag's under its key (a start without
        state: what is there is not written again); ``beat`` is called every ``beat_every`` records read."""
        held: dict[str, int] = {}
        for points, restart, _ in self._records(beat, beat_every, {}):
            if restart is not None:  # what came before at and after it is dropped, as TensorBoard does
                held = {tag: min(step, restart - 1) for tag, step in held.items()}
            for key, step in points:
                held[key] = max(step, held.get(key, step))
        return held

    def written_after_state(self, beat: Callable[[], None], beat_every: int) -> dict[str, int]:
        """The last step per tag of the points written after the state :meth:`load` took up was saved (an uploader
        killed between writing points and saving the state that covers them): they are in the run, and are not
        written again (TensorBoard's Python reader would show them twice); nor are the events found there that hold
        none. A restart written there is left out: the rank's restart is read again, and drops what it must once more."""
        held: dict[str, int] = {}
        if self._saved_sizes is None:  # (a state of before sizes)
            return held
        for points, restart, record in self._records(beat, beat_every, self._saved_sizes):
            if not points and restart is None:
                self._found.add(record)
            for key, step in points:
                held[key] = max(step, held.get(key, step))
                self.points += 1
                if histogram_tag(key) is None and (self._stragglers_at is None or step > self._stragglers_at):
                    self._stragglers_at = step  # (``~job/lag_s`` went with them: not written again either)
        return held

    def _records(self, beat: Callable[[], None], beat_every: int,
                 since: dict[str, int]) -> Iterator[tuple[list[tuple[str, int]], int | None, bytes]]:
        """Each record of the run's files, each file read from its offset in ``since`` (else its start): the points
        it holds, ``(tag or histogram key, step)``, its restart, and the record."""
        decoded = 0
        for entry in self._files():
            with open_nofollow(Path(entry.path)) as handle:
                for _, record in iter_records(handle, since.get(entry.name, 0)):
                    decoded += 1
                    if decoded % beat_every == 0:
                        beat()
                    found, histograms, restart = summaries(record)
                    points = [(histogram_key(histogram.tag), histogram.step) for histogram in histograms]
                    for scalar in found:  # (every point has its ``~job/<tag>/ranks``)
                        if scalar.tag.startswith(GROUP + "/") and scalar.tag.endswith("/ranks"):
                            points.append((scalar.tag[len(GROUP) + 1:-len("/ranks")], scalar.step))
                            self._charted.add(points[-1][0])
                    yield points, restart, record

    def _files(self) -> list[os.DirEntry]:
        """The run's event files, by name."""
        return [entry for entry in entries(self.run_dir) if "tfevents" in entry.name and entry.is_file(follow_symlinks=False)]

    def _sizes(self) -> dict[str, int]:
        """Each of the run's files and its size, as the state saved with them covers them."""
        sizes = {}
        for entry in self._files():
            try:
                sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        return sizes

    def state(self) -> dict:
        return {"layout": LAYOUT, "charted": sorted(self._charted), "points": self.points, "stragglers_at": self._stragglers_at,
                "unmerged": self.unmerged, "sizes": self._sizes(), "lost_said": sorted(self.lost_said),
                "extremes": {tag: [dict(mins), dict(maxes)] for tag, (mins, maxes) in self.extremes.items()}}

    def load(self, state: dict) -> None:
        self._charted = set(state["charted"]) if state.get("layout") == LAYOUT else set()  # (older tags: charted anew)
        self.points = int(state["points"])
        self.unmerged = int(state.get("unmerged", 0))  # (a state file of before histograms: none)
        self.lost_said = {(str(run), int(after), int(restart)) for run, after, restart in state.get("lost_said", [])}
        sizes = state.get("sizes")
        self._saved_sizes = None if sizes is None else {str(name): int(size) for name, size in sizes.items()}
        self._stragglers_at = None if state["stragglers_at"] is None else int(state["stragglers_at"])
        self.extremes = {tag: (Counter({int(r): c for r, c in mins.items()}), Counter({int(r): c for r, c in maxes.items()}))
                         for tag, (mins, maxes) in state["extremes"].items()}

    def summary(self, newest: dict[int, int], world: int, **more: object) -> dict:
        """For ``status``: the ranks' newest steps, how far behind each is, and per tag the ranks most often
        the min and the max."""
        top = max(newest.values(), default=0)
        return {
            "run": RUN_DIR, "world_size": world, "points": self.points, "histograms_not_merged": self.unmerged, **more,
            "newest_step": {str(r): s for r, s in sorted(newest.items())},
            "behind": {str(r): top - s for r, s in sorted(newest.items()) if s < top},
            "missing_ranks": sorted(set(range(world)) - set(newest)),
            "extremes": {tag: {"min": _top(mins), "max": _top(maxes)} for tag, (mins, maxes) in sorted(self.extremes.items())},
            "slowest": None if self.slowest is None else {"rank": self.slowest[0], "lag_s": round(self.slowest[1], 3)},
        }

    def publish(self, summary: dict) -> None:
        """The picture ``status`` shows (:data:`STATUS_FILE`)."""
        try:
            write_json_atomic(state_dir(self.logdir) / STATUS_FILE, summary)
        except OSError as exc:
            logger.debug("job view: status not written (%s)", exc)


def entries(path: Path) -> list[os.DirEntry]:
    """A directory's entries by name (none if it cannot be listed: gone, or not a directory)."""
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []


def _top(counts: Counter) -> list[list[int]]:
    return [[rank, times] for rank, times in counts.most_common(TOP_RANKS)]


def _tail_text(stats: Stats) -> str:
    """The ranks above the :data:`TAIL` percentile, with their values, where the point has any."""
    named, more = ([], 0) if stats.spread is None else stats.spread.tail(TAIL, stats.percentile(TAIL))
    if not named:
        return ""
    ranks = ", ".join(f"{rank} ({value:.6g})" for value, rank in named)
    return f", above p{TAIL}: rank{'s' * (len(named) > 1)} {ranks}" + (f" and {more} more" if more else "")


def _ranks_text(what: str, ranks: tuple[int, ...]) -> str:
    return f"{what}: rank " + ", ".join(str(r) for r in ranks)
