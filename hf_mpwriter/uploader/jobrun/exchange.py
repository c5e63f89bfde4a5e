"""The job run of a multi-node job with a store: every node's points, merged by the job's leader.

Each node's uploader reduces its own ranks (:class:`~.view.JobView` as a node: a point per tag and
step, :mod:`.points`), and at each of its rounds (:meth:`ViewExchange.next_in`), through the job's store
(:mod:`..coordination.store`)::

    node:    get view/held                drop the points the leader wrote (and take up its k); after a
                                          restart of the job run, make its points from there anew
             set view/<node>              its points not written yet, oldest first, within its share of
                                          :data:`ROUND_BYTES`; its ranks' newest steps and their tags;
                                          its restarts; whether it is done
    leader:  multi_get view/<each node>   merge each tag and step's points from the nodes
             compare_set view/held        per tag, the last step it is about to write; k; the job run's
                                          restarts (:class:`~.values.Held`)
             write those points into its logdir's job run (it rides along with its commits)

A point is due once every node of the job has said something of its ranks (a node whose ranks logged
nothing yet cannot say which tags they log) and every node that logs its tag (as its value says) sent
it, or :data:`LEADER_WAIT_FACTOR` × the view's wait after the leader first saw it (a node's own wait,
then its next round; one round more in a tree), or when every node said it is done. A node that logs
the tag but did not send the step is named, with its ranks, as missing. Late points (a step the job
run holds) are not written. A node's rank that restarts at a step its node passed on restarts the job
run from there (:mod:`.values`).

The intake is bounded: each node's value holds at most ``ROUND_BYTES / nodes`` (and the store's
:data:`~..coordination.store.MAX_VALUE_BYTES`). A job of more than :data:`~.tree.GROUP_FROM` nodes merges
in a tree (:mod:`.tree`): the job's store carries one value per group, each within
``ROUND_BYTES / groups``. Where a node's value is full and its points need more, the
leader raises k (a power of two, to what the nodes make a round), and every node sends only the steps
divisible by k from then on (k the same on every node, written into the run as
``~job/every_kth_step``); each point written stays exact.

A hand-over (:mod:`..coordination.leader`): the new leader takes up at ``view/held`` and writes a file of its own
into the same run folder at the target (TensorBoard reads a run's files in order). ``view/held`` is
set before the points are written, by compare-and-set on what the round read: two leaders never
write one step unless the second one restarts the job run there first. A word whose points its leader had not
written yet says so (``unwritten``, until the leader's next word): a new leader that takes it up restarts the
job run from there (:mod:`.values`), so a leader that dies between publishing and writing, or whose
publication's answer was lost before the lease moved, loses no point. What a leader wrote but its node
has not committed yet is as safe as that node's own records. The min/max counts of ``status`` start
again at a new leader.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from ...timing import JOB_VIEW_WAIT_S
from ..coordination.protocol import Seat
from ..coordination.store import MAX_VALUE_BYTES, JobStore, StoreError
from .points import Point, merge, point_from_list
from .runfile import JobRun
from .tree import GROUP_VALUE_BYTES, HOST_STALE_FACTOR, Group, group_size
from .values import UNPARSED, Head, Held, parse_value, stale
from .view import JobView

logger = logging.getLogger(__name__)

#: What the nodes' points may take in the store per round of :data:`~..timing.JOB_VIEW_WAIT_S`, all nodes
#: together (a shorter round, as much less: :meth:`ViewExchange.__init__`).
ROUND_BYTES = 16 * 1024 * 1024
#: A point waits this many times the view's wait at the leader (the node's own wait, then its next round).
LEADER_WAIT_FACTOR = 2.0
#: Within a round, the groups' hosts come this share of it after the nodes, and the leader as much after
#: them (:meth:`ViewExchange.next_in`): a node's point reaches the leader in the round it was sent.
ROUND_STAGGER = 1 / 6
_Key = tuple[str, int]


@dataclasses.dataclass
class Heard:
    """The whole job as one node's merges heard it, for ``status``: kept across them (a leader that moves alone
    to a successor store as the job ends, the other nodes done, still shows every node and rank)."""

    nodes: set[int] = dataclasses.field(default_factory=set)
    newest: dict[int, int] = dataclasses.field(default_factory=dict)  # rank -> its newest step, as last heard


class JobMerge:
    """The leader's side: the nodes' points, merged into the job run of this node's logdir."""

    def __init__(self, logdir: Path, nodes: int, world: int, wait: float, held: Held,
                 clock: Callable[[], float] = time.monotonic, hops: int = 1, heard: Heard | None = None) -> None:
        """``held``: where the last leader left the job run (``view/held``); ``hops``: the rounds a node's
        value takes to reach the leader (2 in a tree: :mod:`.tree`); ``heard``: what this node's earlier
        merges heard (the picture ``status`` shows goes on from there)."""
        self.nodes, self.world, self.clock, self.hops = nodes, world, clock, hops
        self.heard = Heard() if heard is None else heard
        self.wait = (LEADER_WAIT_FACTOR + hops - 1) * wait  # how long a point waits here for its nodes
        self.run = JobRun(logdir, after=max(held.steps.values(), default=None))
        self.word = Held(dict(held.steps), held.every, list(held.restarts), dict(held.seen))  # published next
        self.every = held.every
        # The nodes' restarts taken in this round: the lowest step; from the start, where the last leader may not
        # have written the points of its last word (the nodes dropped them: they make them anew from there).
        self._restart_from: float = math.inf if held.unwritten is None else held.unwritten
        #: The job run drops its points from here before the next ones: the last epoch's step again where no
        #: point was written since (its leader may have died before it wrote its ``START``).
        last = held.restarts[-1][1] if held.restarts else None
        self._start_at = last if last is not None and max(held.steps.values(), default=-1) < last else None
        self._said = (dict(held.seen), list(held.restarts))  # the nodes' restarts and the epochs, as last published
        self._shown: dict | None = None  # the picture ``status`` shows, as this merge last wrote it
        self._values: dict[_Key, dict[frozenset[int], Point]] = {}  # (tag, step) -> nodes -> their point, not written
        self._first: dict[_Key, float] = {}
        self._heard: set[int] = set()  # the nodes that sent something
        self._done: set[int] = set()  # the nodes that said every point they will have is in their value
        self._tag_nodes: dict[str, set[int]] = {}  # tag -> the nodes that sent it
        self._ranks_of: dict[int, dict[int, int]] = {}  # node -> its ranks' newest steps
        self._late: dict[int, int] = {}  # node -> its values that came after the leader wrote their step
        self._made: dict[int, int] = {}  # node -> the points it made in its last round (at this k)
        self.points_read = 0  # in the last round
        self.bytes_read = 0  # in the last round
        self.largest = 0  # the largest node value in the last round

    def start_round(self) -> None:
        """What the last round read is forgotten (the nodes' values are read again, whole, each round)."""
        self.bytes_read = self.points_read = self.largest = 0

    def take(self, node: int | None, raw: bytes) -> None:
        """One value: a node's (:meth:`JobView.message`; ``node``: whose) or a group's (:func:`group_value`;
        ``node`` unused), taken whole or not at all: raises :class:`Malformed` or another of ``UNPARSED`` if it
        does not parse (the caller leaves it out, counted). A point that covers nodes another value's point of
        that step covers too (a node that moved between its group and the store) is taken once: a node's point
        of a step never changes."""
        self.bytes_read += len(raw)
        self.largest = max(self.largest, len(raw))
        value = parse_value(node, raw)
        if value is None:
            return
        staged = [(tag, step, point_from_list(tag, item), covered) for tag, step, item, covered in value.points
                  if not (step <= self.held.get(tag, -math.inf) or step % self.every)
                  and not stale(value, step, covered, self.word)]  # (made before its node took in the last restart)
        for one, head in value.heads.items():
            self._restarted(one, head)
            if head.ranks or head.final:  # (a node that read none of its ranks yet does not know its tags)
                self._heard.add(one)
            self._ranks_of[one] = head.ranks
            self._late[one] = head.late
            self._made[one] = head.made if head.every >= self.every else 0  # (made at an older k: no rate for this one)
            if head.final:
                self._done.add(one)
            else:  # (a node's uploader that started again: not done any more)
                self._done.discard(one)
        for tag, nodes in value.tags.items():
            self._tag_nodes.setdefault(tag, set()).update(nodes)
        now = self.clock()
        self.points_read += len(value.points)
        for tag, step, point, covered in staged:
            key = (tag, step)
            self._tag_nodes.setdefault(tag, set()).update(covered)  # (its tags said so too, unless cut short)
            by = self._values.setdefault(key, {})
            if any(covered <= had for had in by):
                continue
            for had in [had for had in by if had & covered]:
                del by[had]
            by[covered] = point
            self._first.setdefault(key, now)

    @property
    def held(self) -> dict[str, int]:
        """Tag -> the last step the job run holds (every leader's), as this merge publishes it next."""
        return self.word.steps

    def _restarted(self, node: int, head: Head) -> None:
        """``node``'s restarts not taken in yet: the job run restarts from the lowest step (:meth:`due`)."""
        new = [step for number, step in head.restarts if number > self.word.seen.get(node, 0)]
        if new:
            self.word.seen[node] = max(number for number, _ in head.restarts)
            self._restart_from = min(self._restart_from, *new)

    @property
    def word_moved(self) -> bool:
        """Whether ``view/held`` must be published even with no point due: a node's restart taken in, an epoch
        started, or the last word's points written since it said them unwritten."""
        return (self.word.seen, self.word.restarts) != self._said or self.word.unwritten is not None

    def publication(self, by: int, points: list[tuple[str, int, Point]]) -> bytes:
        """``view/held`` as this round leaves it (``by``: this node), ``points`` (from :meth:`due`) not written yet."""
        self.word.every = self.every
        self.word.unwritten = min((step for _, step, _ in points), default=None)
        return self.word.to_json(by)

    def due(self, final: bool = False) -> list[tuple[str, int, Point]]:
        """The points to write now (all of them when ``final`` or every node is done), merged; from here on
        :attr:`held` counts them written (the caller publishes that, then writes them: :meth:`write`). A
        node's restart taken in this round restarts the job run first: its points from there, and those
        waiting here, are dropped, and every node makes its own anew (:mod:`.values`)."""
        if self._restart_from < math.inf:
            step, self._restart_from = int(self._restart_from), math.inf
            self.word.restart(step)
            self._start_at = step if self._start_at is None else min(self._start_at, step)
            for key in [key for key in self._values if key[1] >= step]:
                del self._values[key], self._first[key]
            logger.info("job run: restarted at step %d (a node's rank restarted there, or the last leader may not have "
                        "written its points from there); the job run's steps from there are made anew", step)
        final = final or len(self._done) >= self.nodes
        everyone = len(self._heard) >= self.nodes
        now = self.clock()
        last: dict[str, int] = {}
        for (tag, step), by_nodes in self._values.items():
            complete = everyone and frozenset().union(*by_nodes) >= self._tag_nodes[tag]
            if final or complete or now - self._first[(tag, step)] >= self.wait:
                last[tag] = max(step, last.get(tag, step))
        due = sorted((key for key in self._values if key[0] in last and key[1] <= last[key[0]]), key=lambda k: (k[1], k[0]))
        points = []
        for tag, step in due:
            by_nodes = self._values.pop((tag, step))
            del self._first[(tag, step)]
            stats = _merged(by_nodes)
            covered = frozenset().union(*by_nodes)
            absent = [r for node in sorted(self._tag_nodes[tag] - covered) for r in self._ranks_of.get(node, {})]
            if absent:
                stats = dataclasses.replace(stats, missing=tuple(sorted(stats.missing + tuple(absent))))
            points.append((tag, step, stats))
            self.held[tag] = step
        return points

    def write(self, points: list[tuple[str, int, Point]]) -> None:
        """Write ``points`` (from :meth:`due`) into the job run, and the picture ``status`` shows."""
        self._said = (dict(self.word.seen), list(self.word.restarts))
        if self._start_at is not None:
            self.run.restart(self._start_at)
            self._start_at = None
        if points:
            self.run.write(points, self.world, self.every)
        self.show()

    def show(self) -> None:
        """The whole job's picture for ``status``, where it changed: written by the merge whether or not a
        point is due (a leader that takes up after its predecessor wrote every point shows the job too), as
        this node's merges heard it (:class:`Heard`: a rank this merge did not hear keeps its last step)."""
        self.heard.nodes |= self._heard
        for ranks in self._ranks_of.values():
            self.heard.newest.update(ranks)
        picture = self.run.summary(dict(self.heard.newest), self.world, waiting=len(self._values), late=sum(self._late.values()),
                                   backlog=False, every=self.every, nodes=len(self.heard.nodes), restarts=self.word.epoch)
        if picture != self._shown:
            self.run.publish(picture)
            self._shown = picture

    @property
    def nodes_heard(self) -> int:
        """The nodes this merge heard from."""
        return len(self._heard)

    @property
    def waiting(self) -> int:
        """Points some node sent that are not written yet."""
        return len(self._values)

    def thin(self, limit: int) -> None:
        """A node's value near ``limit`` (full), and a node making more points a round than a value holds:
        every node sends only the steps divisible by a larger k from now on (a power of two: the steps kept
        are among those kept before). A backlog alone (a node making fewer points than its value holds)
        drains by itself. The points waiting here that no node sends any more are dropped."""
        if self.largest <= limit * 0.9 or not self.points_read:
            return
        per_point = self.bytes_read / self.points_read
        factor = max(self._made.values(), default=0) * per_point * self.hops / (0.8 * limit)  # (a value carries
        # what its nodes made since the leader's word reached them: a round a hop)
        if factor <= 1:
            return
        self.every *= 2 ** math.ceil(math.log2(factor))
        logger.warning("job run: the nodes make more points than their values in the store may carry (%d bytes each); "
                       "from now on it holds the steps divisible by %d", limit, self.every)
        for key in [key for key in self._values if key[1] % self.every]:
            del self._values[key], self._first[key]

    def close(self) -> None:
        self.run.close()


def node_limit(nodes: int, budget: int = ROUND_BYTES) -> int:
    """The most one node's value holds: its share of a round's ``budget``, within what the store takes."""
    return min(MAX_VALUE_BYTES, budget // max(1, nodes))


def _merged(by_nodes: dict[frozenset[int], Point]) -> Point:
    merged = None
    for point in by_nodes.values():
        merged = point if merged is None else merge(merged, point)
    assert merged is not None
    return merged


class ViewExchange:
    """One node's part in the job run of a job with a store: it sends its points, and merges every node's
    while it leads."""

    def __init__(self, view: JobView, job: Seat, nodes: int, size: int | None = None,
                 period: float = JOB_VIEW_WAIT_S) -> None:
        """``size``: the nodes of a group in a merge tree (:mod:`.tree`; by default as many as the job's
        size calls for, none below :data:`~.tree.GROUP_FROM` nodes). ``period``: seconds between two
        rounds (:meth:`next_in`; at most :data:`~..timing.JOB_VIEW_WAIT_S`, whose round has the whole
        :data:`ROUND_BYTES`: a shorter one has as much less, the same bytes a second)."""
        self.view, self.job, self.nodes = view, job, nodes
        self.period = min(period, JOB_VIEW_WAIT_S)
        budget = int(ROUND_BYTES * self.period / JOB_VIEW_WAIT_S)
        size = group_size(nodes) if size is None else size
        self.groups = 0 if size is None else math.ceil(nodes / size)
        # the most a value holds: a node's in the job's store, or a group's (and a member's in its group's store)
        self.limit = node_limit(nodes, budget) if size is None else min(GROUP_VALUE_BYTES, budget // max(size, self.groups))
        self.group = None if size is None else Group(job, nodes, size, self.limit, node_limit(nodes, budget),
                                                     stale=HOST_STALE_FACTOR * view.wait, clock=view.clock)
        self.merge: JobMerge | None = None
        self.heard = Heard()  # the whole job as this node's merges heard it (``status``)
        self.every = 1
        self._published = b""  # view/held as this node's merge last set it
        self._attempt: tuple[bytes, list[tuple[str, int, Point]]] | None = None  # a publication whose answer was lost
        self.off = False  # the job's tags are more than view/held holds: no merging

    def next_in(self, wall: float) -> float:
        """Seconds from ``wall`` (``time.time()``) to this node's next round. Rounds come every :attr:`period`
        seconds on the wall clock, whatever the commits' pace (a large job's commit interval is many
        minutes; its points would not fit its store's budget for one round): the nodes at its start, the
        groups' hosts :data:`ROUND_STAGGER` of it later, the leader as much after them. Clocks that
        disagree by more than that only cost a point a round more, never the point."""
        period = self.period
        role = 2 if self.job.leading else 1 if self.group is not None and self.group.hosting else 0
        return (role * ROUND_STAGGER * period - wall) % period

    def last_round(self, wait: float, stop: Callable[[], bool] = lambda: False, pause: float | None = None) -> int:
        """This node's last round (its writers are gone): its points sent as final, and merged if it leads.
        Points no leader took yet (the leader's node may be ending too: the lease moves once it is gone)
        are sent again every ``pause`` seconds (a round's :attr:`period`: the store's budget holds) for up
        to ``wait`` seconds, until a leader wrote them (this node's, once it leads), the store is gone or
        ``stop()`` (a termination signal: the commit comes first). A restart of the job run meanwhile has
        this node make its points anew first. The points this node's merge wrote."""
        pause = self.period if pause is None else pause
        deadline = time.monotonic() + wait
        while True:
            self.view.update(final=True)  # (cheap when nothing changed; after a restart of the job run, its points)
            written = self.round(final=True)
            done = not self.view.outbox and not self.view.pending
            if written or done or time.monotonic() >= deadline or not self.job.store_usable():
                return written
            until = min(deadline, time.monotonic() + pause)
            while time.monotonic() < until:
                if stop():
                    return 0
                time.sleep(min(0.25, pause))

    def round(self, final: bool) -> int:
        """Send, and merge if leading; the points the merge wrote. The store failing leaves the points for
        the next round, and anything else unexpected stops this round's merge: never the uploader's end."""
        if not self.job.store_usable():
            return 0
        try:
            return self._round(final)
        except StoreError as exc:
            logger.debug("job run: the store did not take this round (%s); the points wait for the next", exc)
            self.job.store_failed(exc)
        except Exception:  # (a value that parses but is not what a node sends, say): the next round starts afresh
            logger.exception("job run: this round failed; the next one starts again from the store")
            self._stop_merging()
        return 0

    def _round(self, final: bool) -> int:
        store = self.job.store
        raw = store.get("view/held") or b""
        held = Held.parse(raw, self.job.malformed)
        self.every = held.every = max(self.every, held.every)
        if self.view.acknowledged(held, held.seen.get(self.job.node, 0)):
            self.view.save()
        if self.group is not None:
            self.group.send(lambda limit: self._value(limit, final), final, held)
            self.view.outbox.made = 0
        elif len(value := self._value(self.limit, final)) > 2:
            store.set(f"view/{self.job.node}", value)
            self.view.outbox.made = 0
        written = self._finish_attempt(raw)
        if not self.job.leading:  # ``status`` here: this node's part (the leader's node shows the whole job)
            self.view.publish()
        if not self.job.leading or (self.merge is not None and raw != self._published):
            self._stop_merging()  # another node leads, or led meanwhile: a new merge takes up at its view/held
        if not self.job.leading or self.off:
            return written
        if self.merge is None:
            for index in range(self.groups):  # (read with the nodes' values, which the store waits for if unset)
                store.compare_set(f"view/g{index}", b"", b"{}")
            self.merge = JobMerge(self.view.logdir, self.nodes, self.view.world, self.view.wait, held,
                                  clock=self.view.clock, hops=1 if self.group is None else 2, heard=self.heard)
            self._published = raw
        return written + self._merge(store, raw)

    def _value(self, limit: int, final: bool) -> bytes:
        """This node's value within ``limit``; empty if its tags alone are more than a value holds."""
        value = self.view.message(limit, final)
        return value if len(value) <= max(limit, MAX_VALUE_BYTES) else b"{}"

    def _finish_attempt(self, raw: bytes) -> int:
        """The last round's publication raised (its answer lost): if it applied, write its points now; if not,
        drop this merge (a new one takes them up from the nodes, who still hold them)."""
        if self._attempt is None:
            return 0
        (published, points), self._attempt = self._attempt, None
        if raw != published or self.merge is None:
            self._stop_merging()
            return 0
        self._published = published
        self.merge.write(points)
        return len(points)

    def _merge(self, store: JobStore, raw: bytes) -> int:
        """Every node's points, merged; the due ones published as held (and unwritten), written, then said
        written. Published first and fenced (compare-and-set on what this round read, with this node's name and a
        nonce in the value: two leaders never publish the same bytes): no two leaders write one step unless the
        second restarted the job run there first (a leader that dies between publishing and writing: the next
        one restarts at its unwritten points)."""
        assert self.merge is not None
        # the groups' values, then the nodes' own (a node that reached no host: what it says of itself counts)
        sources: list[int | None] = [None] * self.groups + list(self.job.members())
        keys = [f"view/g{index}" for index in range(self.groups)] + [f"view/{node}" for node in sources[self.groups:]]
        self.merge.start_round()
        for node, key, value in zip(sources, keys, store.multi_get(keys)):
            try:
                self.merge.take(node, value)
            except UNPARSED as exc:  # (its points too: a value is taken or left out whole)
                self.job.malformed.count(key, exc)
        every = self.merge.every
        points = self.merge.due()
        self.merge.thin(self.limit)
        if not points and self.merge.every == every and not self.merge.word_moved:
            self.merge.show()
            return 0
        published = self.merge.publication(self.job.node, points)
        if len(published) > MAX_VALUE_BYTES:
            logger.error("job run: the job's %d tags are more than the store's value for them holds (%d bytes); "
                         "no job run from here on (the ranks' runs are committed as before)", len(self.merge.held),
                         MAX_VALUE_BYTES)
            self.off = True
            self._stop_merging()
            return 0
        self._attempt = (published, points)  # (kept if the call raises: :meth:`_finish_attempt`)
        if not store.compare_set("view/held", raw, published):
            self._attempt = None
            logger.info("job run: another node published the job run meanwhile; it takes up from there")
            self._stop_merging()
            return 0
        self._attempt = None
        self._published = published
        self.merge.write(points)
        if points:
            self._say_written(store, published)
        return len(points)

    def _say_written(self, store: JobStore, published: bytes) -> None:
        """The word's points are written: say so at once (a new leader that takes up a word whose points may
        be unwritten restarts the job run there, rewriting what was written). Left for the next round's word
        where the store does not take it."""
        assert self.merge is not None
        unwritten = self.merge.word.unwritten
        said = self.merge.publication(self.job.node, [])
        try:
            applied = store.compare_set("view/held", published, said)
        except StoreError:
            self.merge.word.unwritten = unwritten  # (said again next round)
            raise
        if applied:
            self._published = said
        else:
            self._stop_merging()  # another node published meanwhile: it took up at the word, unwritten points and all

    def _stop_merging(self) -> None:
        if self.merge is not None:  # another node leads: it takes up at view/held, in a file of its own
            self.merge.close()
            self.merge = None

    def close(self) -> None:
        self._stop_merging()
        if self.group is not None:
            self.group.close()
