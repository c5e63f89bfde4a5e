"""The job run: one TensorBoard run, ``<logdir>/job/``, with each scalar's statistics across the ranks.

Before each commit the uploader reads what the ranks' event files gained and, for every scalar tag and
step the ranks logged, writes to the job run

    <tag>                                          the mean: in TensorBoard, one more line in the
                                                   ranks' own chart of the tag
    ~job/<tag>/min  ~job/<tag>/max  ~job/<tag>/std    (population std)
    ~job/<tag>/ranks  ~job/<tag>/missing             (how many reported, and how many of the world did not)
    ~job/<tag>/p50  ~job/<tag>/p90  ~job/<tag>/p99   (across the ranks: :mod:`.percentiles`)

(:func:`stat_tag`: the statistics other than the mean in one ``~job`` group, the last, where they do not bury the
user's tags), from every rank's value for that step, a ``~job/<tag>/missing_ranks`` text naming the
ranks that logged the tag before but not this step, one ``~job/extreme_ranks`` text a step naming each
tag's min and max rank and the ranks above its p99 (rank ids as text: a chart would smooth them into fractions),
``~job/lag_s`` (how long after the first rank the last one logged the step, by the ranks' own clocks: the
event's wall time; ranks in lockstep show none) and ``~job/slowest_rank`` (a text naming that rank and its
delay, where it is :data:`STRAGGLER_S` or more), and a Custom Scalars layout with two charts per tag (the mean in its
min-max band; the mean, p50, p90 and p99 as lines). Each histogram
tag's histograms of a step are merged into one, ``<tag>``, where the ranks' bucket limits agree, as
tensorboardX's default ones do (:mod:`.histogram`; where they do not, none is written, and
``status`` counts it), with its ``~job/<tag>/missing_ranks``. The run rides along with the logdir's
commits; nothing runs in the training processes.

The rule for late data (:meth:`JobView.waits_for`): a point is written once every rank of the world
reported its step; else, at least ``wait`` seconds after the first rank did, once no rank it waits for
is left: it waits for a rank that logged the tag before and has not reached the step yet, while that
rank's writer is alive (or not known dead) and the rank logged something within
:data:`~...timing.JOB_VIEW_SILENT_S` (a slow rank is late, not missing), as long as no more than
:attr:`~.bounds.ViewBounds.waiting_points` wait; and when the job ends, with whoever reported. A tag's steps are written in
order. A value for a step the run already holds (a rank silent past that bound, or one that came back)
is not written: it is counted (``late``) and stays in its rank's run.

A restart is read as TensorBoard reads it: a rank whose writer restarted with ``purge_step`` (a
``SessionLog.START`` at that step) loses its values from that step on, as its run does in TensorBoard;
a rank that logs a tag in a new file (a new attempt's writer) at a step below one it logged in another
(a script resumed without ``purge_step``) restarts there the same way, as TensorBoard's default reader drops that
tag's values from there (its other reader, ``--load_fast=false``, shows both attempts then: ``status``
says so, with what to pass); a tag going back within one file (steps that start again each epoch) is
no restart;
a job run that holds points from there drops them the same way (a ``SessionLog.START`` of its own), and
every rank's values from there are read again, so that those steps are made anew from what the rank
runs show. In a job with a store, the node does the same with the points it passed on, and the
leader's run drops its steps from there, and every node makes its own anew (:mod:`.values`).

Values are finite or not as the ranks logged them: a NaN makes the step's mean and std NaN, is left
out of its min and max, and its ranks are named (``~job/<tag>/nan_ranks``); infinities give an infinite or
NaN mean, as a sum of them would.

Written where one uploader sees every rank of the job: one node, or a logdir every node shares (in a
multi-node job without a store nothing is written before every rank of the world was seen:
node-local logdirs get none). In a multi-node job with a store, each node reduces its own ranks into
points (:mod:`.points`) and the job's leader merges them into one job run (:mod:`.exchange`).
The world size is what the writers detected, or the highest rank seen plus one.

Its cost stays bounded: each update reads at most :attr:`~.bounds.ViewBounds.read_bytes` of each rank file, a rank's files in
order (a backlog is read over the next updates, its complete points written as they come; after a
restart, while the other ranks' files are read again, from the last :class:`Marks` below its step, none
is), calls ``beat`` while it
works (the uploader's heartbeat), and a restarted uploader takes up where the last one stopped
(:data:`STATE_FILE`: the offsets read, the points waiting, what the run holds), not from the start.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ...config import UploadConfig
from ...state.lost import Lost
from ...state.statedir import read_json, state_dir, write_json_atomic
from ...timing import JOB_VIEW_SILENT_S, JOB_VIEW_WAIT_S
from ...upload_args import matches, pattern_list
from .bounds import ViewBounds
from .marks import Marks
from .outbox import Outbox
from .points import Walls, point_of, value_from_json
from .reading import Key, RankReader
from .runfile import RUN_DIR, JobRun
from .values import Held

logger = logging.getLogger(__name__)

#: Where a restarted uploader's job view takes up (offsets read, points waiting), in the state directory.
STATE_FILE = "job_view_state.json"


class JobView(RankReader):
    """Reduces the ranks' scalars of one logdir into its job run (see the module)."""

    def __init__(self, logdir: Path, world_size: int, wait: float, sent: Callable[[str], bool] = lambda rel: True,
                 whole_world: bool = False, beat: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, node_ranks: int | None = None,
                 bounds: ViewBounds = ViewBounds()) -> None:
        super().__init__(logdir, world_size, wait, sent, whole_world, beat, clock, node_ranks, bounds)
        loaded = self._load()
        if not loaded and node_ranks is None:
            self._held = self.run.resume(self._beat, bounds.beat_every)
            self._held_at_start = dict(self._held)
        #: What the job run holds is known (this view's state, its own run, or a node's leader's word): a node
        #: started without state reads its ranks' restarts before it hears the word, and reports every one.
        self._knows_held = loaded or node_ranks is None

    # -- writing the job run ---------------------------------------------------------------------------------
    def update(self, final: bool = False, budget: float = math.inf) -> int:
        """Read what the ranks wrote since the last call and write every point that is due (all of them
        when ``final``, the job ended, once every rank file is read to its end). A backlog is read in
        :attr:`~.bounds.ViewBounds.read_bytes` steps for up to ``budget`` seconds. Returns the points written."""
        deadline = time.monotonic() + budget
        read = written = 0
        while True:
            read += self._read()
            if not (self.backlog and self._replaying):  # (a restart's re-read mixes attempts until it is done)
                written += self._write_due(final and not self.backlog)
            self._replaying = self._replaying and self.backlog
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
            walls = Walls(*self._wall.pop(key))
            self._held[tag] = max(step, self._held.get(tag, step))  # (a tag's steps are passed on in order)
            if step % self.outbox.every == 0:
                points.append((tag, step, point_of(tag, by_rank, missing, walls)))
        if self.node_ranks is not None:
            self.outbox.add(points)
            self.run.points += len(points)
        else:
            self.run.write(points, self.world)
            self.publish()
        return len(due)

    def _due(self, final: bool) -> list[Key]:
        """The points to write now. With a point, every earlier step of its tag still waiting goes too:
        a tag's steps are written in order (TensorBoard drops a tag's later points when one comes back
        in time)."""
        now = self.clock()
        complete = self.world if self.node_ranks is None else max(self.node_ranks, len(self.newest))
        unwaited = self._unwaited(now)
        last: dict[str, int] = {}
        for (tag, step), values in self._values.items():
            if final or len(values) >= complete or (now - self._first[(tag, step)] >= self.wait and (
                    (tag, step) in unwaited or not self._waiting((tag, step), now))):
                last[tag] = max(step, last.get(tag, step))
        return [(tag, step) for tag, step in self._values if tag in last and step <= last[tag]]

    def _unwaited(self, now: float) -> set[Key]:
        """The oldest points past :attr:`~.bounds.ViewBounds.waiting_points`, written without the ranks they wait for once their
        wait is over (memory stays bounded; the ranks named missing, their values counted late)."""
        over = len(self._values) - self.bounds.waiting_points
        if over <= 0:
            return set()
        oldest = sorted((key for key, first in self._first.items() if now - first >= self.wait and self._waiting(key, now)),
                        key=self._first.__getitem__)[:over]
        if oldest and not self.unwaited:
            logger.warning("job run: more than %d points wait for ranks far behind; the oldest are written without "
                           "them (named missing; their values counted late)", self.bounds.waiting_points)
        self.unwaited += len(oldest)
        return set(oldest)

    def _waiting(self, key: Key, now: float) -> bool:
        """Whether a point waits for a rank (:meth:`waits_for`)."""
        values = self._values[key]
        return any(self.waits_for(rank, key[1], now) for rank in self._reporters[key[0]] if rank not in values)

    def waits_for(self, rank: int, step: int, now: float) -> bool:
        """Whether a point of ``step`` of a tag ``rank`` logged before still waits for it (the rule of late data,
        see the module): it has not reached the step, its writer is not known dead, and it logged within
        :data:`JOB_VIEW_SILENT_S`."""
        if self.newest.get(rank, -1) >= step or (self.live is not None and rank not in self.live):
            return False
        return now - self._heard.get(rank, self._started) < JOB_VIEW_SILENT_S

    # -- a node's points, for the job's leader -----------------------------------------------------------------
    def message(self, limit: int, final: bool) -> bytes:
        """This node's value for the leader (:meth:`.outbox.Outbox.message`): its ranks' newest steps, the tags
        they log (a point waits for every node that logs its tag), its late values and its points; ``final``:
        the node is done, and its value says so once every point it will have is in it."""
        head = {"ranks": {str(r): s for r, s in sorted(self.newest.items())}, "tags": sorted(self._reporters),
                "late": self.late}
        return self.outbox.message(head, limit, final and not self.pending)

    def acknowledged(self, held: Held, seen: int = 0) -> bool:
        """The leader's word (:meth:`.outbox.Outbox.take_word`): the steps the job run holds leave the outbox,
        and a value for one of them from now on is late (but from a restart of this node the leader has not
        taken in yet); after a restart of the job run this node did not make its points anew for, it does.
        Whether anything changed."""
        floor, steps, gone = self.outbox.take_word(held, seen)
        self._knows_held = True
        if floor < math.inf:
            self._read_again(int(floor))
            logger.info("job run: the job run dropped its steps from %d (a rank's restart); this node makes them anew",
                        floor)
        for tag, step in steps.items():
            if step > self._held.get(tag, -math.inf):
                self._held[tag] = int(step)
                self.late += self._drop_through(tag, step)
        return gone or floor < math.inf

    def _drop_through(self, tag: str, step: float) -> int:
        """Drop the points of ``tag`` waiting here up to ``step`` (the job run holds them); how many."""
        keys = [key for key in self._values if key[0] == tag and key[1] <= step]
        for key in keys:
            del self._values[key], self._first[key], self._wall[key]
        return len(keys)

    def close(self) -> None:
        """Close the job run's file (it is complete: made read-only, sent once more as it is)."""
        self.run.close()

    def say_lost(self, found: Sequence[Lost]) -> None:
        """The steps resumed runs lost with an earlier attempt's disk, in the job run (once; kept in its state)."""
        if any((lost.run, lost.after, lost.restart) not in self.run.lost_said for lost in found):
            self.run.say_lost(found)
            self.save()

    # -- restart and status ---------------------------------------------------------------------------------
    def save(self) -> None:
        """What a restarted uploader takes up from: written after the points it covers, with the run's sizes (an
        uploader killed between the two: the next one reads what the run gained since, and holds it)."""
        state = {
            "read_to": self._read_to, "held": self._held, "run": self.run.state(), "replaying": self._replaying,
            "floor": {rel: [step, upto] for rel, (step, upto) in self._floor.items()}, "dropped": self._dropped,
            "marks": {rel: [marks.to, marks.most, marks.at] for rel, marks in self._marks.items()},

            "restarts": sorted(self._restarts),
            "newest": {str(r): s for r, s in self.newest.items()},
            "tag_newest": {str(r): tags for r, tags in self._tag_newest.items()},
            "without_restart_point": {str(r): s for r, s in self.without_restart_point.items()},
            "tag_file": {str(r): files for r, files in self._tag_file.items()},
            "reporters": {tag: sorted(ranks) for tag, ranks in self._reporters.items()},
            "waiting": [[tag, step, {str(r): v for r, v in values.items()}, list(self._wall[(tag, step)])]
                        for (tag, step), values in self._values.items()],
            "late": self.late, "unwaited": self.unwaited, **self.outbox.state(),
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
            self._floor = {str(k): (int(v), math.inf) if isinstance(v, int) else (int(v[0]), float(v[1]))
                           for k, v in state.get("floor", {}).items()}  # (a state of before restarts: none; before offsets: int)
            self._dropped = {str(k): int(v) for k, v in state.get("dropped", {}).items()}
            self._replaying = bool(state.get("replaying", False))
            self._marks = {str(rel): Marks(int(to), int(most), at) for rel, (to, most, at) in state.get("marks", {}).items()}
            self._restarts = {str(mark) for mark in state.get("restarts", [])}
            self.run.load(state["run"])
            self.newest = {int(r): int(s) for r, s in state["newest"].items()}
            self._tag_newest = {int(r): {str(t): int(s) for t, s in tags.items()}  # (a state of before: none)
                                for r, tags in state.get("tag_newest", {}).items()}
            self.without_restart_point = {int(r): int(s) for r, s in state.get("without_restart_point", {}).items()}
            self._tag_file = {int(r): {str(t): str(rel) for t, rel in files.items()}
                              for r, files in state.get("tag_file", {}).items()}
            self._reporters = {tag: {int(r) for r in ranks} for tag, ranks in state["reporters"].items()}
            for tag, step, values, wall in state["waiting"]:
                key = (str(tag), int(step))
                self._values[key] = {int(r): value_from_json(key[0], v) for r, v in values.items()}
                walls = [float(wall), float(wall), -1] if isinstance(wall, (int, float)) else wall  # (a state of before)
                self._first[key], self._wall[key] = now, [float(walls[0]), float(walls[1]), int(walls[2])]
            self.outbox.load(state)
            self.late = int(state["late"])
            self.unwaited = int(state.get("unwaited", 0))
            self.world = max([self.world, *(r + 1 for r in self.newest)])
            if self.node_ranks is None:  # (a node writes no job run; its leader may write one in this logdir)
                self._written_after_state()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("job view: %s does not parse (%s); reading the ranks' files from their start", STATE_FILE, exc)
            self._forget_state()
            return False
        return True

    def _written_after_state(self) -> None:
        """The points the last uploader wrote after it saved this state (killed between the two): held, not written
        again, and their values read again not counted late."""
        try:
            written = self.run.written_after_state(self._beat, self.bounds.beat_every)
        except OSError as exc:  # (a file gone or unreadable: the view still starts; what it finds there it writes again)
            logger.warning("job view: the job run's files could not be read past its state (%s)", exc)
            return
        for tag, step in written.items():
            if step > self._held.get(tag, -1):
                self._held[tag] = self._held_at_start[tag] = step
                self._drop_through(tag, step)

    def _forget_state(self) -> None:
        self._read_to, self._held, self.newest, self.outbox, self._floor, self._marks = {}, {}, {}, Outbox(), {}, {}
        self._tag_newest, self.without_restart_point, self._tag_file = {}, {}, {}
        self._restarts, self._dropped = set(), {}
        self._reporters, self._values, self._first, self._wall = {}, {}, {}, {}
        self.run = JobRun(self.logdir)
        self.late = self.unwaited = 0

    def summary(self) -> dict:
        """For ``status``: the ranks' newest steps, how far behind each is, and per tag the ranks most often
        the min and the max."""
        more = {} if self.node_ranks is None else {"node": True, "outbox": len(self.outbox)}  # (a node: its leader writes)
        return self.run.summary(self.newest, self.world, late=self.late, waiting=self.waiting, backlog=self.backlog,
                                restarts=len(self._restarts), unwaited=self.unwaited,
                                without_restart_point={str(r): s for r, s in sorted(self.without_restart_point.items())},
                                **more)

    def publish(self) -> None:
        """What ``status`` shows of the job run (a node of a job with a store: while its node does not lead,
        :mod:`.exchange` says when)."""
        self.run.publish(self.summary())


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
