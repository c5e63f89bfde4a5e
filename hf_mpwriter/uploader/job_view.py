"""The job run: one TensorBoard run, ``<logdir>/job/``, with each scalar's statistics across the ranks.

Before each commit the uploader reads what the ranks' event files gained and, for every scalar tag and
step the ranks logged, writes to the job run

    <tag>/mean  <tag>/min  <tag>/max  <tag>/std    (population std)
    <tag>/min_rank  <tag>/max_rank                 (the lowest rank among ties)
    <tag>/ranks  <tag>/missing                     (how many reported, and how many of the world did not)

from every rank's value for that step, a ``<tag>/missing_ranks`` text naming the ranks that logged the
tag before but not this step, ``job/steps_behind`` and ``job/slowest_rank`` (the slowest rank's newest
step against the newest), and a Custom Scalars layout with a margin chart per tag (the mean in its
min-max band). The run rides along with the logdir's commits; nothing runs in the training processes.

The rule for late data: a point is written once every rank of the world reported its step, or
``wait`` seconds after the first rank did, or when the job ends, with whoever reported by then; a
tag's steps are written in order. A value for a step the run already holds (a late rank, or a rank
that restarted from a checkpoint) is not written: it is counted (``late``) and stays in its rank's run.

Built where one uploader sees every rank of the job: one node, or a logdir every node shares (in a
multi-node job nothing is written before every rank of the world was seen: node-local logdirs get
none). The world size is what the writers detected, or the highest rank seen plus one. A restarted
uploader reads what the job run holds, then the ranks' files from their start.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from ..config import UploadConfig, matches, pattern_list
from ..events.decoding import scalars
from ..events.encoding import margin_layout_event, scalars_event, text_event
from ..events.event_file import EventFileWriter
from ..events.records import iter_records
from ..state.piece import open_nofollow
from ..state.statedir import state_dir, write_json_atomic
from ..timing import JOB_VIEW_WAIT_S

logger = logging.getLogger(__name__)

RUN_DIR = "job"
#: The job run's picture for ``status`` (:meth:`JobView.summary`), in the logdir's state directory.
STATUS_FILE = "job_view.json"
#: The statistics written for each tag, in this order.
STATS = ("mean", "min", "max", "std", "min_rank", "max_rank", "ranks", "missing")
#: How many ranks ``status`` names per tag as most often the min or the max.
TOP_RANKS = 5
_RANK_DIR = re.compile(r"rank-(\d+)")
_BLOCK_DIR = re.compile(r"ranks-\d+-\d+")
_Key = tuple[str, int]  # (tag, step)


class JobView:
    """Reduces the ranks' scalars of one logdir into its job run (see the module)."""

    def __init__(self, logdir: Path, world_size: int, wait: float, sent: Callable[[str], bool] = lambda rel: True,
                 whole_world: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.logdir, self.world, self.wait, self.clock = Path(logdir), world_size, wait, clock
        #: Write nothing until every rank of the world was seen in this logdir (a multi-node job: only a
        #: logdir every node shares has them all; a node-local one never does, and keeps nothing).
        self.whole_world = whole_world
        self._sent = sent  # whether a rank file (its path in the logdir) goes to the target: only those are reduced
        self.run_dir = self.logdir / RUN_DIR
        self._read_to: dict[Path, int] = {}  # each rank file: the bytes reduced so far (whole records)
        self._values: dict[_Key, dict[int, float]] = {}  # points not written yet: rank -> value
        self._first: dict[_Key, float] = {}  # when the first rank's value of a point was read (clock)
        self._wall: dict[_Key, float] = {}  # the newest wall time among a point's values
        self._held: dict[str, int] = {}  # tag -> the highest step the job run holds
        self.newest: dict[int, int] = {}  # rank -> its newest step (any tag)
        self._reporters: dict[str, set[int]] = {}  # tag -> the ranks that ever logged it
        self.extremes: dict[str, tuple[Counter, Counter]] = {}  # tag -> (times each rank was min, was max)
        self.points = 0
        self.late = 0
        self._writer: EventFileWriter | None = None
        self._charted: set[str] = set()
        self._resume()
        self._resumed = dict(self._held)  # what the job run held when this uploader started

    # -- reading the ranks ---------------------------------------------------------------------------------
    def _rank_files(self) -> Iterator[tuple[int, Path]]:
        """``(rank, event file)`` of every rank run directly in the logdir or in a block folder."""
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
                for entry in sorted(os.scandir(run), key=lambda e: e.name):
                    path = Path(entry.path)
                    if ("tfevents" in entry.name and entry.is_file(follow_symlinks=False)
                            and self._sent(path.relative_to(self.logdir).as_posix())):
                        yield int(match[1]), path

    def _read(self) -> None:
        files = list(self._rank_files())
        if len({rank for rank, _ in files}) < 2:
            return  # one process logs: nothing to reduce, nothing read (read from the start once a second rank logs)
        now = self.clock()
        for rank, path in files:
            start = self._read_to.get(path, 0)
            try:
                if path.stat().st_size <= start:
                    continue
                with open_nofollow(path) as handle:
                    for end, record in iter_records(handle, start):
                        self._read_to[path] = end
                        for scalar in scalars(record):
                            self._take(rank, scalar.tag, scalar.step, scalar.value, scalar.wall_time, now)
            except FileNotFoundError:
                self._read_to.pop(path, None)

    def _take(self, rank: int, tag: str, step: int, value: float, wall_time: float, now: float) -> None:
        self.world = max(self.world, rank + 1)  # ranks given explicitly: the world is what they show
        self.newest[rank] = max(step, self.newest.get(rank, step))
        self._reporters.setdefault(tag, set()).add(rank)
        key = (tag, step)
        values = self._values.get(key)
        if values is None:
            if step <= self._held.get(tag, -1):
                self.late += step > self._resumed.get(tag, -1)  # (at a restart: what the run holds already)
                return
            values = self._values[key] = {}
            self._first[key] = now
        values[rank] = value  # a rank that logs a step twice: its last value
        self._wall[key] = max(wall_time, self._wall.get(key, wall_time))

    @property
    def waiting(self) -> int:
        """Points read but not written yet (their step waits for ranks)."""
        return len(self._values)

    # -- writing the job run ---------------------------------------------------------------------------------
    def update(self, final: bool = False) -> int:
        """Read what the ranks wrote since the last call and write every point that is due (all of them
        when ``final``: the job ended). Returns the points written."""
        self._read()
        if len(self.newest) < 2:  # one rank logs (a job that logs from its main process only): nothing to reduce
            return 0
        if self.whole_world and len(self.newest) < self.world:
            for key in self._due(final):  # not this node's to write: dropped once due
                del self._values[key], self._first[key], self._wall[key]
            return 0
        due = self._due(final)
        if not due:
            return 0
        by_step: dict[int, list[str]] = {}
        for tag, step in sorted(due, key=lambda key: (key[1], key[0])):
            by_step.setdefault(step, []).append(tag)
        writer = self._open()
        self._chart(writer, sorted({tag for tag, _ in due} - self._charted))
        for step, tags in by_step.items():
            values: list[tuple[str, float]] = []
            wall = 0.0
            for tag in tags:
                key = (tag, step)
                wall = max(wall, self._wall.pop(key))
                self._first.pop(key)
                by_rank = self._values.pop(key)
                values.extend(self._point(tag, by_rank))
                self._held[tag] = max(step, self._held.get(tag, step))
                missing = sorted(self._reporters[tag] - set(by_rank))  # late or dead: they logged this tag before
                if missing:
                    writer.add_serialized(text_event(f"{tag}/missing_ranks", _ranks_text(missing), step, wall))
            if step == max(by_step):
                values.extend(self._stragglers())
            writer.add_serialized(scalars_event(values, step, wall))
        writer.flush()
        self.points += len(due)
        self._publish()
        return len(due)

    def _due(self, final: bool) -> list[_Key]:
        """The points to write now. With a point, every earlier step of its tag still waiting goes too:
        a tag's steps are written in order (TensorBoard drops a tag's later points when one comes back
        in time)."""
        now = self.clock()
        last: dict[str, int] = {}
        for (tag, step), values in self._values.items():
            if final or len(values) >= self.world or now - self._first[(tag, step)] >= self.wait:
                last[tag] = max(step, last.get(tag, step))
        return [(tag, step) for tag, step in self._values if step <= last.get(tag, -1)]

    def _point(self, tag: str, by_rank: dict[int, float]) -> list[tuple[str, float]]:
        ranks = sorted(by_rank)
        values = [by_rank[r] for r in ranks]
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
        low = min(ranks, key=lambda r: (by_rank[r], r))
        high = min(ranks, key=lambda r: (-by_rank[r], r))
        mins, maxes = self.extremes.setdefault(tag, (Counter(), Counter()))
        mins[low] += 1
        maxes[high] += 1
        stats = (mean, by_rank[low], by_rank[high], std, low, high, n, self.world - n)
        return [(f"{tag}/{name}", float(value)) for name, value in zip(STATS, stats)]

    def _stragglers(self) -> list[tuple[str, float]]:
        if not self.newest:
            return []
        slowest = min(self.newest, key=lambda r: (self.newest[r], r))
        return [("job/steps_behind", float(max(self.newest.values()) - self.newest[slowest])),
                ("job/slowest_rank", float(slowest))]

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
        """Close the job run's file (it is complete: made read-only, sent once more as it is)."""
        if self._writer is not None:
            self._writer.close(retry_secs=0)
            self._writer = None

    # -- restart and status ---------------------------------------------------------------------------------
    def _resume(self) -> None:
        """What the job run already holds (a restarted uploader): its newest step per tag."""
        for path in sorted(self.run_dir.glob("*tfevents*")) if self.run_dir.is_dir() else []:
            with open_nofollow(path) as handle:
                for _, record in iter_records(handle):
                    for scalar in scalars(record):
                        if scalar.tag.endswith("/mean"):
                            tag = scalar.tag[:-len("/mean")]
                            self._held[tag] = max(scalar.step, self._held.get(tag, scalar.step))
                            self._charted.add(tag)

    def summary(self) -> dict:
        """For ``status``: the ranks' newest steps, how far behind each is, and per tag the ranks most often
        the min and the max."""
        top = max(self.newest.values(), default=0)
        return {
            "run": RUN_DIR, "world_size": self.world, "points": self.points, "late": self.late,
            "waiting": self.waiting, "newest_step": {str(r): s for r, s in sorted(self.newest.items())},
            "behind": {str(r): top - s for r, s in sorted(self.newest.items()) if s < top},
            "missing_ranks": sorted(set(range(self.world)) - set(self.newest)),
            "extremes": {tag: {"min": _top(mins), "max": _top(maxes)}
                         for tag, (mins, maxes) in sorted(self.extremes.items())},
        }

    def _publish(self) -> None:
        try:
            write_json_atomic(state_dir(self.logdir) / STATUS_FILE, self.summary())
        except OSError as exc:
            logger.debug("job view: status not written (%s)", exc)


def _dirs(path: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def _top(counts: Counter) -> list[list[int]]:
    return [[rank, times] for rank, times in counts.most_common(TOP_RANKS)]


def _ranks_text(ranks: list[int]) -> str:
    return "missing: rank " + ", ".join(str(r) for r in ranks)


def start_for(logdir: Path, config: UploadConfig) -> JobView | None:
    """The logdir's job view (in a multi-node job, one that writes once it has seen every rank of the
    world size its writers detected), or ``None`` where the logdir's upload patterns leave the job run
    out, or in a multi-node job whose world size is unknown. Only the rank files those
    patterns send are reduced: what a user keeps off the target stays off it, statistics included."""
    allow, ignore = pattern_list(config.allow_patterns), pattern_list(config.ignore_patterns)
    if not matches(f"{RUN_DIR}/events.out.tfevents.0.host", allow, ignore):
        return None
    if config.nodes > 1 and config.world_size <= 1:
        return None  # ranks given explicitly, no world size: nothing tells a node's ranks from the job's
    return JobView(logdir, config.world_size, max(JOB_VIEW_WAIT_S, config.commit_every),
                   sent=lambda rel: matches(rel, allow, ignore), whole_world=config.nodes > 1)
