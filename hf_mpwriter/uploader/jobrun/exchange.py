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
it, or :data:`~.merge.LEADER_WAIT_FACTOR` × the view's wait after the leader first saw it (a node's own wait,
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

import logging
import math
import time
from collections.abc import Callable

from ...timing import JOB_VIEW_WAIT_S
from ..coordination.protocol import Seat
from ..coordination.store import MAX_VALUE_BYTES, CoordinationStore, StoreError
from .merge import Heard, JobMerge
from .points import Point
from .tree import GROUP_VALUE_BYTES, HOST_STALE_FACTOR, Group, group_size
from .values import UNPARSED, Held
from .view import JobView

logger = logging.getLogger(__name__)

#: What the nodes' points may take in the store per round of :data:`~..timing.JOB_VIEW_WAIT_S`, all nodes
#: together (a shorter round, as much less: :meth:`ViewExchange.__init__`).
ROUND_BYTES = 16 * 1024 * 1024
#: Within a round, the groups' hosts come this share of it after the nodes, and the leader as much after
#: them (:meth:`ViewExchange.next_in`): a node's point reaches the leader in the round it was sent.
ROUND_STAGGER = 1 / 6


def node_limit(nodes: int, budget: int = ROUND_BYTES) -> int:
    """The most one node's value holds: its share of a round's ``budget``, within what the store takes."""
    return min(MAX_VALUE_BYTES, budget // max(1, nodes))


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
            self.heard.showing = False
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

    def _merge(self, store: CoordinationStore, raw: bytes) -> int:
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

    def _say_written(self, store: CoordinationStore, published: bytes) -> None:
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
