"""The job run: one TensorBoard run, ``<logdir>/job/``, with each scalar's statistics across the ranks.

Before each commit the uploader reads what the ranks' event files gained and, for every scalar tag and
step the ranks logged, writes to the job run

    <tag>/mean  <tag>/min  <tag>/max  <tag>/std    (population std)
    <tag>/min_rank  <tag>/max_rank                 (the lowest rank among ties)
    <tag>/ranks  <tag>/missing                     (how many reported, and how many of the world did not)

from every rank's value for that step, a ``<tag>/missing_ranks`` text naming the ranks that logged the
tag before but not this step, ``<tag>/most_often_min_rank`` and ``<tag>/most_often_max_rank`` (the
ranks most often its min and max so far, written when they change: the straggler a step time names),
``job/steps_behind`` and ``job/slowest_rank`` (the slowest rank's newest step against the newest), and
a Custom Scalars layout with a margin chart per tag (the mean in its min-max band). Each histogram
tag's histograms of a step are merged into one, ``<tag>``, where the ranks' bucket limits agree, as
tensorboardX's default ones do (:mod:`.histogram`; where they do not, none is written, and
``status`` counts it), with its ``<tag>/missing_ranks``. The run rides along with the logdir's
commits; nothing runs in the training processes.

The rule for late data: a point is written once every rank of the world reported its step, or
``wait`` seconds after the first rank did, or when the job ends, with whoever reported by then; a
tag's steps are written in order. A value for a step the run already holds (a late rank, or a rank
that restarted from a checkpoint) is not written: it is counted (``late``) and stays in its rank's run.

Values are finite or not as the ranks logged them: a NaN makes the step's mean and std NaN, is left
out of its min and max, and its ranks are named (``<tag>/nan_ranks``); infinities give an infinite or
NaN mean, as a sum of them would.

Written where one uploader sees every rank of the job: one node, or a logdir every node shares (in a
multi-node job without a store nothing is written before every rank of the world was seen:
node-local logdirs get none). In a multi-node job with a store, each node reduces its own ranks into
points (:mod:`.points`) and the job's leader merges them into one job run (:mod:`.exchange`).
The world size is what the writers detected, or the highest rank seen plus one.

Its cost stays bounded: each update reads at most :data:`READ_BYTES` of each rank file (a backlog is
read over the next updates, before the job's last points are written), calls ``beat`` while it
works (the uploader's heartbeat), and a restarted uploader takes up where the last one stopped
(:data:`STATE_FILE`: the offsets read, the points waiting, what the run holds), not from the start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ...config import UploadConfig, matches, pattern_list
from ...events.decoding import summaries
from ...events.encoding import histogram_event, margin_layout_event, scalars_event, text_event
from ...events.event_file import EventFileWriter
from ...events.records import iter_records
from ...state.piece import open_nofollow
from ...state.statedir import read_json, state_dir, write_json_atomic
from ...timing import JOB_VIEW_WAIT_S
from .histogram import Buckets, HistogramStats
from .points import Point, Value, histogram_key, histogram_tag, point_from_list, point_of, value_from_json
from .stats import NO_RANK, Stats

logger = logging.getLogger(__name__)

RUN_DIR = "job"
#: The job run's picture for ``status`` (:meth:`JobView.summary`), in the logdir's state directory.
STATUS_FILE = "job_view.json"
#: Where a restarted uploader's job view takes up (offsets read, points waiting), in the state directory.
STATE_FILE = "job_view_state.json"
#: The most read from one rank file in one update: a long backlog (a restart without the state file,
#: ``sync`` of a logdir logged offline) is read over several updates, in bounded memory and time.
READ_BYTES = 4 * 1024 * 1024
#: How often (records decoded) a long read calls ``beat``.
BEAT_EVERY = 2000
#: The statistics written for each tag, in this order.
STATS = ("mean", "min", "max", "std", "min_rank", "max_rank", "ranks", "missing")
#: A node's points kept for the leader at most (more: no leader takes them, the oldest go).
OUTBOX_POINTS = 20_000
#: How many ranks ``status`` names per tag as most often the min or the max.
TOP_RANKS = 5
_RANK_DIR = re.compile(r"rank-(\d+)")
_BLOCK_DIR = re.compile(r"ranks-\d+-\d+")
_Key = tuple[str, int]  # (tag, step)


class JobView:
    """Reduces the ranks' scalars of one logdir into its job run (see the module)."""

    def __init__(self, logdir: Path, world_size: int, wait: float, sent: Callable[[str], bool] = lambda rel: True,
                 whole_world: bool = False, beat: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, node_ranks: int | None = None) -> None:
        self.logdir, self.world, self.wait, self.clock = Path(logdir), world_size, wait, clock
        #: Write nothing until every rank of the world was seen in this logdir (a multi-node job without a
        #: store: only a logdir every node shares has them all; a node-local one never does, and keeps nothing).
        self.whole_world = whole_world
        #: A node of a job with a store (its ranks, as many as its launcher says): its points go to the job's
        #: leader as points (:attr:`outbox`, :mod:`.exchange`), not into a job run of its own.
        self.node_ranks = node_ranks
        self.outbox: dict[_Key, Point] = {}  # a node's points the leader has not written yet
        self.every = 1  # a node passes on only the steps divisible by this (the leader's k, :mod:`.exchange`)
        self.made = 0  # a node's points made since its last value was sent (the leader's k is set by it)
        self.dropped = 0  # a node's points dropped from a full outbox
        self._sent = sent  # whether a rank file (its path in the logdir) goes to the target: only those are reduced
        self._beat = beat
        self.run = JobRun(self.logdir)
        self._read_to: dict[str, int] = {}  # each rank file (path in the logdir): the bytes reduced so far
        self.backlog = False  # a rank file has more than the last update read
        self._values: dict[_Key, dict[int, Value]] = {}  # points not written yet: rank -> value
        # (a histogram tag's points are kept under its :func:`~.points.histogram_key`)
        self._first: dict[_Key, float] = {}  # when the first rank's value of a point was read (clock)
        self._wall: dict[_Key, float] = {}  # the newest wall time among a point's values
        self._held: dict[str, int] = {}  # tag -> the last step written (a node: passed on to the leader)
        self.newest: dict[int, int] = {}  # rank -> its newest step (any tag)
        self._reporters: dict[str, set[int]] = {}  # tag -> the ranks that ever logged it
        self.late = 0
        #: What the job run held at this start when there was no state to take up: re-read values up to
        #: there are not late, only read again.
        self._held_at_start: dict[str, int] = {}
        if not self._load() and node_ranks is None:
            self._held = self.run.resume(self._beat)
            self._held_at_start = dict(self._held)

    @property
    def points(self) -> int:
        """Points written to the job run (a node: passed on to the leader)."""
        return self.run.points

    # -- reading the ranks ---------------------------------------------------------------------------------
    def _rank_files(self) -> Iterator[tuple[int, str]]:
        """``(rank, path in the logdir)`` of every rank's event file, directly in the logdir or in a block folder."""
        for top in _dirs(self.logdir):
            if _BLOCK_DIR.fullmatch(top.name):
                runs = list(_dirs(top))
            elif _RANK_DIR.fullmatch(top.name):
                runs = [top]
            else:
                continue
            for run in runs:
                match = _RANK_DIR.fullmatch(run.name)
                if match is None:
                    continue
                for entry in _entries(run):
                    rel = Path(entry.path).relative_to(self.logdir).as_posix()
                    if "tfevents" in entry.name and entry.is_file(follow_symlinks=False) and self._sent(rel):
                        yield int(match[1]), rel

    def _read(self) -> int:
        """Reduce what the rank files gained (at most :data:`READ_BYTES` of each); returns the records read."""
        self.backlog = False
        files = list(self._rank_files())
        if len({rank for rank, _ in files}) < 2 and self.node_ranks is None:
            return 0  # one process logs: nothing to reduce, nothing read (read from the start once a second rank logs)
        now, decoded = self.clock(), 0
        for rank, rel in files:
            start = self._read_to.get(rel, 0)
            path = self.logdir / rel
            try:
                size = path.stat().st_size
                if size < start:  # replaced by a shorter file: what it holds now is new
                    start = 0
                if size <= start:
                    continue
                with open_nofollow(path) as handle:
                    for end, record in iter_records(handle, start):
                        self._read_to[rel] = end
                        found, histograms = summaries(record)
                        for scalar in found:
                            self._take(rank, scalar.tag, scalar.step, scalar.value, scalar.wall_time, now)
                        for histogram in histograms:
                            self._take(rank, histogram_key(histogram.tag), histogram.step, Buckets.read(histogram),
                                       histogram.wall_time, now)
                        decoded += 1
                        if decoded % BEAT_EVERY == 0:
                            self._beat()
                        if end - start >= READ_BYTES and end < size:
                            self.backlog = True  # the rest at the next read
                            break
            except FileNotFoundError:
                self._read_to.pop(rel, None)
        return decoded

    def _take(self, rank: int, tag: str, step: int, value: Value, wall_time: float, now: float) -> None:
        self.world = max(self.world, rank + 1)  # ranks given explicitly: the world is what they show
        self.newest[rank] = max(step, self.newest.get(rank, step))
        self._reporters.setdefault(tag, set()).add(rank)
        key = (tag, step)
        values = self._values.get(key)
        if values is None:
            held = self._held.get(tag)
            if held is not None and step <= held:
                self.late += tag not in self._held_at_start or step > self._held_at_start[tag]
                return
            values = self._values[key] = {}
            self._first[key] = now
        values[rank] = value  # a rank that logs a step twice: its last value
        self._wall[key] = max(wall_time, self._wall.get(key, wall_time))

    @property
    def waiting(self) -> int:
        """Points read but not written yet (their step waits for ranks)."""
        return len(self._values)

    @property
    def pending(self) -> bool:
        """Points waiting, or rank files not read to their end: the job run is not complete yet."""
        return bool(self._values) or self.backlog

    # -- writing the job run ---------------------------------------------------------------------------------
    def update(self, final: bool = False, budget: float = math.inf) -> int:
        """Read what the ranks wrote since the last call and write every point that is due (all of them
        when ``final``, the job ended, once every rank file is read to its end). A backlog is read in
        :data:`READ_BYTES` steps for up to ``budget`` seconds. Returns the points written."""
        deadline = time.monotonic() + budget
        read = written = 0
        while True:
            read += self._read()
            written += self._write_due(final and not self.backlog)
            if not self.backlog or time.monotonic() >= deadline:
                break
        if read or written:  # (called at every cycle and at exit: cheap when nothing changed)
            self.save()
        return written

    def _write_due(self, final: bool) -> int:
        if self.node_ranks is None and (len(self.newest) < 2 or (self.whole_world and len(self.newest) < self.world)):
            # Nothing to reduce (one rank logs scalars so far), or not this logdir's to write: kept for
            # their wait (another rank may still come: its values complete them), then dropped.
            now = self.clock()
            for key in [key for key, first in self._first.items() if now - first >= self.wait]:
                del self._values[key], self._first[key], self._wall[key]
            return 0
        due = self._due(final)
        if not due:
            return 0
        points = []
        for tag, step in due:
            key = (tag, step)
            by_rank = self._values.pop(key)
            del self._first[key]
            missing = tuple(sorted(self._reporters[tag] - set(by_rank)))  # late or dead: they logged this tag before
            wall = self._wall.pop(key)
            self._held[tag] = max(step, self._held.get(tag, step))  # (a tag's steps are passed on in order)
            if step % self.every == 0:
                points.append((tag, step, point_of(tag, by_rank, missing, wall)))
        if self.node_ranks is not None:
            self.outbox.update({(tag, step): stats for tag, step, stats in points})
            self.run.points += len(points)
            self.made += len(points)
            for key in sorted(self.outbox, key=lambda key: (key[1], key[0]))[:max(0, len(self.outbox) - OUTBOX_POINTS)]:
                del self.outbox[key]  # (no leader takes them: the store gone, say) the oldest go
                if not self.dropped:
                    logger.warning("job run: no leader takes this node's points (%d kept at most); the oldest go",
                                   OUTBOX_POINTS)
                self.dropped += 1
        else:
            self.run.write(points, self.newest, self.world)
            self._publish()
        return len(due)

    def _due(self, final: bool) -> list[_Key]:
        """The points to write now. With a point, every earlier step of its tag still waiting goes too:
        a tag's steps are written in order (TensorBoard drops a tag's later points when one comes back
        in time)."""
        now = self.clock()
        complete = self.world if self.node_ranks is None else max(self.node_ranks, len(self.newest))
        last: dict[str, int] = {}
        for (tag, step), values in self._values.items():
            if final or len(values) >= complete or now - self._first[(tag, step)] >= self.wait:
                last[tag] = max(step, last.get(tag, step))
        return [(tag, step) for tag, step in self._values if tag in last and step <= last[tag]]

    # -- a node's points, for the job's leader -----------------------------------------------------------------
    def message(self, limit: int, final: bool) -> bytes:
        """This node's points the leader has not written yet (the oldest steps first, within ``limit`` bytes),
        its ranks' newest steps, the tags they log (a point waits for every node that logs its tag), the
        points it made since its last value and the k it made them at (the leader's k follows them), and whether the node is done
        (``final``: every point it will have is in it)."""
        head = {"ranks": {str(r): s for r, s in sorted(self.newest.items())}, "tags": sorted(self._reporters),
                "final": False, "late": self.late, "made": self.made, "every": self.every}
        room = limit - len(json.dumps({**head, "points": []}))
        if room < 0:  # its tags alone are too many: the leader learns them from the points
            head["tags"] = None
            room = limit - len(json.dumps({**head, "points": []}))
        points = []
        for (tag, step), stats in sorted(self.outbox.items(), key=lambda item: (item[0][1], item[0][0])):
            item = [tag, step, stats.to_list()]
            room -= len(json.dumps(item)) + 2  # (json's ", " between items)
            if room < 0:
                break
            points.append(item)
        head["final"] = final and not self.pending and len(points) == len(self.outbox)
        return json.dumps({**head, "points": points}).encode()

    def acknowledged(self, held: dict[str, int], every: int = 1) -> bool:
        """The leader wrote these steps (per tag, every step up to there): they leave the outbox, and a
        value for one of them from now on is late. ``every``: the leader takes only the steps divisible by
        it from now on (the others leave the outbox too). Whether anything changed."""
        if every > self.every:
            self.every, self.made = every, 0  # (what was made at the old k does not tell the leader the new rate)
        gone = [key for key in self.outbox if key[1] <= held.get(key[0], -math.inf) or key[1] % self.every]
        for key in gone:
            del self.outbox[key]
        for tag, step in held.items():
            if step > self._held.get(tag, -math.inf):
                self._held[tag] = step
                for key in [key for key in self._values if key[0] == tag and key[1] <= step]:
                    del self._values[key], self._first[key], self._wall[key]
                    self.late += 1
        return bool(gone)

    def close(self) -> None:
        """Close the job run's file (it is complete: made read-only, sent once more as it is)."""
        self.run.close()

    # -- restart and status ---------------------------------------------------------------------------------
    def save(self) -> None:
        """What a restarted uploader takes up from: written after the points it covers (a crash between
        the two writes a batch again: TensorBoard shows it once)."""
        state = {
            "read_to": self._read_to, "held": self._held, "run": self.run.state(),
            "newest": {str(r): s for r, s in self.newest.items()},
            "reporters": {tag: sorted(ranks) for tag, ranks in self._reporters.items()},
            "waiting": [[tag, step, {str(r): v for r, v in values.items()}, self._wall[(tag, step)]]
                        for (tag, step), values in self._values.items()],
            "outbox": [[tag, step, stats.to_list()] for (tag, step), stats in self.outbox.items()],
            "late": self.late,
        }
        try:
            write_json_atomic(state_dir(self.logdir) / STATE_FILE, state)
        except OSError as exc:
            logger.debug("job view: state not saved (%s)", exc)

    def _load(self) -> bool:
        """Take up from the last uploader's state; ``False`` if there is none (or it does not parse)."""
        state = read_json(state_dir(self.logdir, create=False) / STATE_FILE)
        if not state:
            return False
        try:
            now = self.clock()
            self._read_to = {str(k): int(v) for k, v in state["read_to"].items()}
            self._held = {str(k): int(v) for k, v in state["held"].items()}
            self.run.load(state["run"])
            self.newest = {int(r): int(s) for r, s in state["newest"].items()}
            self._reporters = {tag: {int(r) for r in ranks} for tag, ranks in state["reporters"].items()}
            for tag, step, values, wall in state["waiting"]:
                key = (str(tag), int(step))
                self._values[key] = {int(r): value_from_json(key[0], v) for r, v in values.items()}
                self._first[key], self._wall[key] = now, float(wall)
            self.outbox = {(str(tag), int(step)): point_from_list(str(tag), item) for tag, step, item in state["outbox"]}
            self.late = int(state["late"])
            self.world = max([self.world, *(r + 1 for r in self.newest)])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("job view: %s does not parse (%s); reading the ranks' files from their start", STATE_FILE, exc)
            self._forget_state()
            return False
        return True

    def _forget_state(self) -> None:
        self._read_to, self._held, self.newest, self.outbox = {}, {}, {}, {}
        self._reporters, self._values, self._first, self._wall = {}, {}, {}, {}
        self.run = JobRun(self.logdir)
        self.late = 0

    def summary(self) -> dict:
        """For ``status``: the ranks' newest steps, how far behind each is, and per tag the ranks most often
        the min and the max."""
        return self.run.summary(self.newest, self.world, late=self.late, waiting=self.waiting, backlog=self.backlog)

    def _publish(self) -> None:
        self.run.publish(self.summary())


class JobRun:
    """The job run's file (:data:`RUN_DIR`): points written by step, a margin chart per tag, and how
    often each rank was a tag's min or max (for ``status``)."""

    def __init__(self, logdir: Path, after: int | None = None) -> None:
        """``after``: the last step the run's job-wide series hold (a new leader: what the last one wrote)."""
        self.logdir = Path(logdir)
        self.run_dir = self.logdir / RUN_DIR
        self.extremes: dict[str, tuple[Counter, Counter]] = {}  # tag -> (times each rank was min, was max)
        self.points = 0
        self.unmerged = 0  # histogram points not written: their ranks' bucket limits disagree
        self._stragglers_at = after  # the step job/steps_behind was last written at
        self._charted: set[str] = set()
        self._often: dict[str, tuple[int, int]] = {}  # tag -> the ranks most often its min and max, as last written
        self._writer: EventFileWriter | None = None

    def write(self, points: Sequence[tuple[str, int, Point]], newest: dict[int, int], world: int, every: int = 1) -> None:
        """Write ``points`` (each tag's steps in order, after those it holds), with the ranks' newest steps
        (and ``every``: the run holds only the steps divisible by it, where more than 1)."""
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
                    writer.add_serialized(text_event(f"{tag}/missing_ranks", _ranks_text("missing", stats.missing), step, wall))
                if stats.nan:
                    writer.add_serialized(text_event(f"{tag}/nan_ranks", _ranks_text("NaN", stats.nan), step, wall))
            if newest and (self._stragglers_at is None or step > self._stragglers_at):  # its steps in order too
                slowest = min(newest, key=lambda r: (newest[r], r))
                values += [("job/steps_behind", float(max(newest.values()) - newest[slowest])),
                           ("job/slowest_rank", float(slowest))]
                if every > 1:
                    values.append(("job/every_kth_step", float(every)))
                self._stragglers_at = step
            writer.add_serialized(scalars_event(values, step, wall))
        writer.flush()
        self.points += written

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
            writer.add_serialized(text_event(f"{tag}/missing_ranks", _ranks_text("missing", point.missing), step, point.wall))
        return buckets is not None

    def _point(self, tag: str, stats: Stats, world: int) -> list[tuple[str, float]]:
        row = (stats.mean, stats.low, stats.high, stats.std, stats.low_rank, stats.high_rank, stats.n,
               max(0, world - stats.n))
        values = [(f"{tag}/{name}", float(value)) for name, value in zip(STATS, row)]
        if stats.low_rank != NO_RANK:
            mins, maxes = self.extremes.setdefault(tag, (Counter(), Counter()))
            mins[stats.low_rank] += 1
            maxes[stats.high_rank] += 1
            often = (_most_often(mins), _most_often(maxes))
            if often != self._often.get(tag):  # (written when it changes: a step chart of who it is)
                self._often[tag] = often
                values += [(f"{tag}/most_often_min_rank", float(often[0])), (f"{tag}/most_often_max_rank", float(often[1]))]
        return values

    def _chart(self, writer: EventFileWriter, tags: list[str]) -> None:
        """The Custom Scalars layout, written again whenever a tag is new (TensorBoard takes the run's last)."""
        if not tags:
            return
        self._charted.update(tags)
        charts = [(tag, f"{tag}/mean", f"{tag}/min", f"{tag}/max") for tag in sorted(self._charted)]
        writer.add_serialized(margin_layout_event("job: mean, min-max across ranks", charts, time.time()))

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

    def resume(self, beat: Callable[[], None]) -> dict[str, int]:
        """The last step per tag the run's files hold, a histogram tag's under its key (a start without
        state: what is there is not written again); ``beat`` is called while reading."""
        held: dict[str, int] = {}
        decoded = 0
        for entry in _entries(self.run_dir):
            if "tfevents" not in entry.name or not entry.is_file(follow_symlinks=False):
                continue
            with open_nofollow(Path(entry.path)) as handle:
                for _, record in iter_records(handle):
                    decoded += 1
                    if decoded % BEAT_EVERY == 0:
                        beat()
                    found, histograms = summaries(record)
                    for scalar in found:
                        if scalar.tag.endswith("/mean"):
                            tag = scalar.tag[:-len("/mean")]
                            held[tag] = max(scalar.step, held.get(tag, scalar.step))
                            self._charted.add(tag)
                    for histogram in histograms:
                        key = histogram_key(histogram.tag)
                        held[key] = max(histogram.step, held.get(key, histogram.step))
        return held

    def state(self) -> dict:
        return {"charted": sorted(self._charted), "points": self.points, "stragglers_at": self._stragglers_at,
                "unmerged": self.unmerged,
                "extremes": {tag: [dict(mins), dict(maxes)] for tag, (mins, maxes) in self.extremes.items()}}

    def load(self, state: dict) -> None:
        self._charted = set(state["charted"])
        self.points = int(state["points"])
        self.unmerged = int(state.get("unmerged", 0))  # (a state file of before histograms: none)
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
        }

    def publish(self, summary: dict) -> None:
        """The picture ``status`` shows (:data:`STATUS_FILE`)."""
        try:
            write_json_atomic(state_dir(self.logdir) / STATUS_FILE, summary)
        except OSError as exc:
            logger.debug("job view: status not written (%s)", exc)


def _dirs(path: Path) -> Iterator[Path]:
    for entry in _entries(path):
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def _entries(path: Path) -> list[os.DirEntry]:
    """A directory's entries by name (none if it cannot be listed: gone, or not a directory)."""
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []


def _most_often(counts: Counter) -> int:
    """The rank counted most often (the lowest among ties)."""
    return min(counts, key=lambda rank: (-counts[rank], rank))


def _top(counts: Counter) -> list[list[int]]:
    return [[rank, times] for rank, times in counts.most_common(TOP_RANKS)]


def _ranks_text(what: str, ranks: tuple[int, ...]) -> str:
    return f"{what}: rank " + ", ".join(str(r) for r in ranks)


def start_for(logdir: Path, config: UploadConfig, beat: Callable[[], None] = lambda: None,
              node: bool = False) -> JobView | None:
    """The logdir's job view, or ``None`` where the logdir's upload patterns leave the job run out.
    ``node``: a node of a job with a store, whose points go to the job's leader (:mod:`.exchange`).
    Without a store, a multi-node job's view writes once it has seen every rank of the world size its
    writers detected (a logdir every node shares), and none starts if that world size is unknown.
    Only the rank files those patterns send are reduced: what a user keeps off the target stays off it,
    statistics included."""
    allow, ignore = pattern_list(config.allow_patterns), pattern_list(config.ignore_patterns)
    if not matches(f"{RUN_DIR}/events.out.tfevents.0.host", allow, ignore):
        return None
    if config.nodes > 1 and config.world_size <= 1:
        return None  # ranks given explicitly, no world size: nothing tells a node's ranks from the job's
    wait = max(JOB_VIEW_WAIT_S, config.commit_every)
    return JobView(logdir, config.world_size, wait, sent=lambda rel: matches(rel, allow, ignore),
                   whole_world=config.nodes > 1 and not node, beat=beat,
                   node_ranks=max(1, config.world_size // config.nodes) if node else None)

