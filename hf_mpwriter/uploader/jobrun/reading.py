"""Reading the ranks' event files for the job run (:mod:`.view`): what each rank file gained, a rank's files in
order and each read bounded, into the points waiting to be written; and a rank's restart, read as TensorBoard reads it
(:mod:`.view` says how).

Why apart: the view's other half decides when a point is written, and keeps the run and its state; this half only
reads, and is where each file's offset and marks and a restart's floors live.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ...events.decoding import summaries
from ...events.records import iter_records
from ...state.piece import open_nofollow
from .bounds import ViewBounds
from .histogram import Buckets
from .marks import Marks
from .outbox import Outbox
from .points import Value, histogram_key
from .runfile import JobRun, entries
from .stats import NO_RANK

logger = logging.getLogger(__name__)

_RANK_DIR = re.compile(r"rank-(\d+)")
_BLOCK_DIR = re.compile(r"ranks-\d+-\d+")
Key = tuple[str, int]  # (tag, step)


class RankReader:
    """The reading half of a :class:`~.view.JobView`: the view's state, and what the rank files gained."""

    def __init__(self, logdir: Path, world_size: int, wait: float, sent: Callable[[str], bool] = lambda rel: True,
                 whole_world: bool = False, beat: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, node_ranks: int | None = None,
                 bounds: ViewBounds = ViewBounds()) -> None:
        self.logdir, self.world, self.wait, self.clock = Path(logdir), world_size, wait, clock
        self.bounds = bounds
        #: Write nothing until every rank of the world was seen in this logdir (a multi-node job without a
        #: store: only a logdir every node shares has them all; a node-local one never does, and keeps nothing).
        self.whole_world = whole_world
        #: A node of a job with a store (its ranks, as many as its launcher says): its points go to the job's
        #: leader as points (:attr:`outbox`, :mod:`.exchange`), not into a job run of its own.
        self.node_ranks = node_ranks
        self.outbox = Outbox()  # (a node's)
        self._sent = sent  # whether a rank file (its path in the logdir) goes to the target: only those are reduced
        self._beat = beat
        self.run = JobRun(self.logdir)
        self._read_to: dict[str, int] = {}  # each rank file (path in the logdir): the bytes reduced so far
        self._marks: dict[str, Marks] = {}  # each rank file: where its steps are
        #: A rank file read again after a restart: ``(step, offset)``, its values below that step in the records
        #: it had been read to (that offset) are in the run already; those after are new.
        self._floor: dict[str, tuple[int, float]] = {}
        #: A rank file whose rank restarted in a later file: the step from which that restart dropped its values
        #: (a re-read takes them no more; a restart without a START is not read as one again).
        self._dropped: dict[str, int] = {}
        self._restarts: set[str] = set()  # the restarts (``file:offset``) the job run was made anew after
        #: The other ranks' files are read again after a restart: until they are read to their end, what is
        #: read mixes attempts (a rank's values from before its own restart), and no point is written.
        self._replaying = False
        self.backlog = False  # a rank file has more than the last update read
        self._values: dict[Key, dict[int, Value]] = {}  # points not written yet: rank -> value
        # (a histogram tag's points are kept under its :func:`~.points.histogram_key`)
        self._first: dict[Key, float] = {}  # when the first rank's value of a point was read (clock)
        #: When a point's values were logged (the ranks' clocks): ``[first, last, the last's rank]``, kept in place
        #: (made for every value read: a list costs least).
        self._wall: dict[Key, list] = {}
        self._held: dict[str, int] = {}  # tag -> the last step written (a node: passed on to the leader)
        self.newest: dict[int, int] = {}  # rank -> its newest step (any tag)
        #: rank -> tag -> its newest step of the tag: a tag logged again below it is a restart without a START.
        self._tag_newest: dict[int, dict[str, int]] = {}
        #: rank -> the step it last went back to without a restart point (TensorBoard's two readers differ there).
        self.without_restart_point: dict[int, int] = {}
        #: rank -> tag -> the file its newest step came from: a tag going back is a restart only in another file
        #: (a new attempt's writer), never within one (a tag whose steps start again each epoch, a batch index,
        #: is no restart: TensorBoard's default reader drops that tag's values alone).
        self._tag_file: dict[int, dict[str, str]] = {}
        self._reporters: dict[str, set[int]] = {}  # tag -> the ranks that ever logged it
        self.late = 0
        self.unwaited = 0  # points written without the ranks they waited for (:attr:`~.bounds.ViewBounds.waiting_points`)
        #: The ranks whose writer is alive, as the uploader last saw them (``None``: not known): a dead rank's
        #: steps are not waited for.
        self.live: set[int] | None = None
        self._started = clock()
        self._heard: dict[int, float] = {}  # rank -> when a value of it was last read (clock)
        #: What the job run held at this start when there was no state to take up: re-read values up to
        #: there are not late, only read again.
        self._held_at_start: dict[str, int] = {}
        #: What the job run holds is known (:class:`~.view.JobView` says once it took up its state).
        self._knows_held = True

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
                for entry in entries(run):
                    rel = Path(entry.path).relative_to(self.logdir).as_posix()
                    if "tfevents" in entry.name and entry.is_file(follow_symlinks=False) and self._sent(rel):
                        yield int(match[1]), rel

    def _read(self) -> int:
        """Reduce what the rank files gained (at most ``bounds.read_bytes`` of each); returns the records read."""
        self.backlog = False
        files = list(self._rank_files())
        if len({rank for rank, _ in files}) < 2 and self.node_ranks is None:
            return 0  # one process logs: nothing to reduce, nothing read (read from the start once a second rank logs)
        now, decoded = self.clock(), 0
        unfinished: set[int] = set()  # ranks with a file not read to its end: their later files wait (read in order)
        for rank, rel in files:
            if rank in unfinished:
                continue
            start = self._read_to.get(rel, 0)
            path = self.logdir / rel
            try:
                size = path.stat().st_size
                if size < start:  # replaced by a shorter file: what it holds now is new
                    start = 0
                    self._marks.pop(rel, None)
                    self._dropped.pop(rel, None)
                if size <= start:
                    continue
                floor, upto = self._floor.get(rel, (-math.inf, 0))  # (a restart changes other files' floors only)
                dropped = self._dropped.get(rel, math.inf)
                marks = self._marks.setdefault(rel, Marks())
                with open_nofollow(path) as handle:
                    for end, record in iter_records(handle, start):
                        self._read_to[rel] = end
                        if end > upto:
                            floor = -math.inf
                        found, histograms, restart = summaries(record)
                        if restart is None and end > upto:  # (a re-read goes back on purpose; what follows it, not)
                            restart = self._stepped_back(rank, rel, found, histograms)
                        if restart is not None:  # (read again: it drops what the re-read takes again, not the values below)
                            self._restart(rank, rel, end, int(max(restart, floor)))
                        for scalar in found:
                            if floor <= scalar.step < dropped:
                                self._take(rank, scalar.tag, scalar.step, scalar.value, scalar.wall_time, now, rel)
                        for histogram in histograms:
                            if floor <= histogram.step < dropped:
                                self._take(rank, histogram_key(histogram.tag), histogram.step, Buckets.read(histogram),
                                           histogram.wall_time, now, rel)
                        decoded += 1
                        if decoded % self.bounds.beat_every == 0:
                            self._beat()
                        if end - start >= self.bounds.read_bytes and end < size:
                            self.backlog = True  # the rest at the next read
                            unfinished.add(rank)
                            break
                marks.saw(self._read_to.get(rel, 0), self.newest.get(rank, -1), self.bounds.mark_bytes)  # (files in order)
                if self._read_to.get(rel, 0) >= upto:
                    self._floor.pop(rel, None)
            except FileNotFoundError:
                self._read_to.pop(rel, None)
                self._marks.pop(rel, None)
                self._dropped.pop(rel, None)
        return decoded

    def _stepped_back(self, rank: int, rel: str, found: list, histograms: list) -> int | None:
        """The step ``rank`` went back to, if this record of its file ``rel`` logs a tag below a step it logged
        in another file: a script resumed without a restart point (said in ``status``,
        :attr:`without_restart_point`)."""
        tags, files = self._tag_newest.get(rank), self._tag_file.get(rank, {})
        if not tags:
            return None
        back = [v.step for v in found if v.step < tags.get(v.tag, -1) and files.get(v.tag, rel) != rel]
        back += [h.step for h in histograms
                 if h.step < tags.get(histogram_key(h.tag), -1) and files.get(histogram_key(h.tag), rel) != rel]
        if not back:
            return None
        self.without_restart_point[rank] = min(back)
        logger.info("job run: rank %d logged steps again from %d without a restart point (purge_step)", rank, min(back))
        return min(back)

    def _restart(self, rank: int, rel: str, offset: int, step: int) -> None:
        """``rank`` restarted at ``step`` in its file ``rel`` (see the module): its values from there, read from
        its earlier files (a rank's files are read in order), are gone, as in its run; the first time this
        restart is read, the points from there already written (a node: passed on) are made anew: the job
        run drops them (a node: tells its leader, :mod:`.values`), and every other rank's values from there
        are read again."""
        for key in [key for key in self._values if key[1] >= step and rank in self._values[key]]:
            del self._values[key][rank]
            if not self._values[key]:
                del self._values[key], self._first[key], self._wall[key]
            else:  # (when the others logged it is still known; who was last, no longer)
                self._wall[key][2] = NO_RANK
        self.newest[rank] = min(self.newest.get(rank, step - 1), step - 1)
        tags = self._tag_newest.get(rank, {})
        for tag in tags:
            tags[tag] = min(tags[tag], step - 1)
        mark = f"{rel}:{offset}"
        if mark in self._restarts:
            return
        self._restarts.add(mark)
        for other_rank, other in self._rank_files():  # (in the order TensorBoard reads them)
            if other == rel:
                break
            if other_rank == rank:
                self._dropped[other] = min(step, self._dropped.get(other, step))
        if self._knows_held and not any(held >= step for held in self._held.values()):
            return
        self._read_again(step, rank)
        if self.node_ranks is None:
            self.run.restart(step)
        else:
            self.outbox.report(step)
        logger.info("job run: rank %d restarted at step %d; the job run's steps from there are made anew", rank, step)

    def _read_again(self, step: int, restarted: int | None = None) -> None:
        """Make the points from ``step`` anew: every rank's values from there (but ``restarted``'s, read
        from its restart on) are read again, and none is written until they are."""
        self._held = {tag: min(held, step - 1) for tag, held in self._held.items()}
        self._held_at_start = {tag: min(held, step - 1) for tag, held in self._held_at_start.items()}
        self.outbox.drop_from(step)
        for rank, rel in self._rank_files():
            if rank != restarted:
                before = self._floor.get(rel)  # (a re-read not done yet: from the lower step, to the farther offset)
                floor = (step, self._read_to.get(rel, 0)) if before is None else (min(step, before[0]),
                                                                                 max(before[1], self._read_to.get(rel, 0)))
                marks = self._marks.get(rel)
                self._read_to[rel], self._floor[rel] = 0 if marks is None else marks.below(step), floor
        self.backlog = self._replaying = True

    def _take(self, rank: int, tag: str, step: int, value: Value, wall_time: float, now: float, rel: str = "") -> None:
        self.world = max(self.world, rank + 1)  # ranks given explicitly: the world is what they show
        self._heard[rank] = now
        self.newest[rank] = max(step, self.newest.get(rank, step))
        tags = self._tag_newest.setdefault(rank, {})
        if step > tags.get(tag, -1):
            tags[tag] = step
            self._tag_file.setdefault(rank, {})[tag] = rel
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
        walls = self._wall.get(key)
        if walls is None:
            self._wall[key] = [wall_time, wall_time, rank]
        else:
            if wall_time < walls[0]:
                walls[0] = wall_time
            if wall_time > walls[1] or (wall_time == walls[1] and rank < walls[2]):
                walls[1], walls[2] = wall_time, rank

    @property
    def waiting(self) -> int:
        """Points read but not written yet (their step waits for ranks)."""
        return len(self._values)

    @property
    def pending(self) -> bool:
        """Points waiting, or rank files not read to their end: the job run is not complete yet."""
        return bool(self._values) or self.backlog


def _dirs(path: Path) -> Iterator[Path]:
    for entry in entries(path):
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)
