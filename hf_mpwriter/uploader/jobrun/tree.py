"""A merge tree for the job run of a large job: the nodes' values reach the leader through their group.

In a job of more than :data:`GROUP_FROM` nodes, the nodes form groups of ``ceil(sqrt(nodes))``
consecutive nodes, and one node of each group hosts a store of its own (:func:`..coordination.store.serve`).
Each round (:class:`~.exchange.ViewExchange`)::

    member:  get view/g<g>/host         (job's store)    where its group's store is
             set view/<node>            (group's store)  its value
    host:    multi_get view/<member>    (its own store)  its members' values, and its own
             set view/g<g>              (job's store)    them merged into one (:func:`.values.group_value`)
    leader:  multi_get view/g<each group> and view/<each node>

So the job's store, which serves the training job too, carries one value per group instead of one per
node, and each group's store one per member: each value may be ``sqrt(nodes)`` times larger than in a
flat merge for the same bytes a round (up to :data:`GROUP_VALUE_BYTES`), and the leader merges as many
values as there are groups. A point takes a round more to reach the leader (node, host, leader).

A member that cannot reach its host (there is none yet, it died, or its store does not answer) sets
its value in the job's store instead, within a flat merge's share (``ROUND_BYTES / nodes``), and
empties it once it reaches a host again: a node's points always have a way to the leader. The leader
takes a node's point of a step once, whichever way it came (it never changes).

Hosting is claimed by compare-and-set on ``view/g<g>/host``, when it is free or its host's beat (the
value, set again each round) has not changed for ``stale`` seconds; a host that finds another node's
claim there stops serving. Its store holds only the members' latest values (at most a group's share
of the budget), and goes with the host's process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from ..coordination.protocol import GroupHost, Malformed, Seat
from ..coordination.store import CoordinationStore, JobStore, StoreAddress, StoreError, serve
from .values import Held, group_value

logger = logging.getLogger(__name__)

#: Jobs of more nodes than this merge in a tree.
GROUP_FROM = 64
#: A host whose claim did not change for this many times the view's wait is taken as gone.
HOST_STALE_FACTOR = 3.0
#: The most a group's value holds, and a member's in its group's store (within the round's budget: each
#: carries about two rounds of points, what its nodes made since the leader's last word reached them).
GROUP_VALUE_BYTES = 1024 * 1024


def group_size(nodes: int) -> int | None:
    """The nodes a group holds in a job of ``nodes`` (``None``: no tree, every node sets its own value)."""
    return math.isqrt(nodes - 1) + 1 if nodes > GROUP_FROM else None


class Group:
    """This node's group: where its value goes each round, and while it hosts, its members' values merged."""

    def __init__(self, job: Seat, nodes: int, size: int, limit: int, direct_limit: int, stale: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job, self.limit, self.direct_limit, self.stale, self.clock = job, limit, direct_limit, stale, clock
        self.index = job.node // size
        self.nodes = range(self.index * size, min(nodes, (self.index + 1) * size))
        self.key = f"view/g{self.index}/host"
        self.hosting = False
        self.direct = False  # this node's value is in the job's store (it reached no host)
        self.can_host = True  # (False once serving failed: it leaves hosting to the others)
        self._server: Any = None
        self._hosted = b""  # the group's host value as this node last set it, while it hosts
        self._own: JobStore | None = None  # the store it serves, through the server's own client
        self._client: JobStore | None = None  # to the store of the host it last reached
        self._seen = (b"", clock())  # the host's value, and when it last changed

    def send(self, value_for: Callable[[int], bytes], final: bool = False, held: Held | None = None) -> None:
        """This round's value (``value_for(limit)``: the node's value within ``limit`` bytes) to its host, or
        merged with its members' into the group's value if it hosts (without what the leader's word, ``held``,
        leaves out: :func:`.values.group_value`; a member learns it a round later), or into the job's
        store if no host answers. ``final`` (the node is done, and may be gone before its host relays it):
        into the job's store as well. Raises :class:`StoreError` only if the job's store fails."""
        main = self.job.store
        host = self._host(main)
        if self.hosting:  # (a claim that lost its race stopped hosting above)
            assert self._own is not None
            members = [node for node in self.nodes if node != self.job.node]
            try:
                values = dict(zip(members, self._own.multi_get([f"view/{node}" for node in members])))
            except StoreError as exc:  # (its own store, not the job's: this node's value goes there instead)
                logger.warning("job run: group %d's store does not answer this node that serves it (%s)", self.index, exc)
                self._release(main, self._hosted)
            else:
                values[self.job.node] = value_for(self.limit)
                main.set(f"view/g{self.index}", group_value(values, self.limit, held or Held(), self.job.malformed), self.limit)
                self._leave_direct(main)
                return
        elif host is not None:
            try:
                self._client_for(host).set(f"view/{self.job.node}", value_for(self.limit), self.limit)
                if not final:
                    self._leave_direct(main)
                    return
            except StoreError as exc:
                logger.info("job run: group %d's host at %s:%d did not take this node's points (%s); they go to "
                            "the job's store", self.index, host.host, host.port, exc)
        main.set(f"view/{self.job.node}", value_for(self.direct_limit))
        self.direct = True

    def _host(self, main: CoordinationStore) -> StoreAddress | None:
        """The group's host to send to: ``None`` if this node hosts (it beats, or claims a claim that is free,
        stale or its own old one) or there is none to reach this round."""
        raw = main.get(self.key) or b""
        now = self.clock()
        if raw != self._seen[0]:
            self._seen = (raw, now)
        try:
            claim = _parse(raw) if raw else None
        except Malformed as exc:  # (taken as none: this node claims it)
            self.job.malformed.count(self.key, exc)
            claim = None
        if self.hosting and raw != self._hosted:
            logger.info("job run: another node hosts group %d now", self.index)
            self._stop_hosting()
        if self.hosting or (self.can_host and (claim is None or claim[0] == self.job.node
                                               or now - self._seen[1] > self.stale)):
            self._claim(main, raw)
            return None
        return None if claim is None else claim[1]

    def _claim(self, main: CoordinationStore, raw: bytes) -> None:
        """Beat (while hosting), or claim hosting and start serving: compare-and-set on ``raw``, the claim
        first (a group's nodes may all try at once: only the one that wins starts a store)."""
        if not self.hosting:
            claim = GroupHost(self.job.node, None, time.time_ns()).encode()
            if not main.compare_set(self.key, raw, claim):
                return
            raw = self._hosted = claim
            self.hosting = True
            try:
                self._server, address = serve(main.address)
            except (OSError, RuntimeError) as exc:  # (torch raises RuntimeError subclasses)
                logger.warning("job run: this node cannot serve its group's store (%s); it leaves hosting to the "
                               "others", exc)
                self.can_host = False
                self._release(main, claim)
                return
            self._own = JobStore(address, main.prefix, main.deadline, server=self._server)
            try:
                self._own.multi_set({f"view/{node}": b"{}" for node in self.nodes})
            except StoreError as exc:
                logger.warning("job run: group %d's store does not answer this node that serves it (%s)", self.index, exc)
                self._release(main, claim)
                return
            logger.info("job run: this node hosts group %d (nodes %d-%d) at %s:%d", self.index, self.nodes[0],
                        self.nodes[-1], address.host, address.port)
        assert self._own is not None
        beat = GroupHost(self.job.node, (self._own.address.host, self._own.address.port), time.time_ns()).encode()
        if main.compare_set(self.key, raw, beat):
            self._hosted = beat
            self._seen = (beat, self.clock())
        else:
            self._stop_hosting()

    def _release(self, main: CoordinationStore, claim: bytes) -> None:
        """Give up a claim this node cannot serve (the others claim it at once)."""
        self._stop_hosting()
        main.compare_set(self.key, claim, b"")

    def _client_for(self, host: StoreAddress) -> JobStore:
        if self._client is None or self._client.address != host:
            self._client = JobStore(host, self.job.store.prefix, self.job.store.deadline)
        return self._client

    def _leave_direct(self, main: CoordinationStore) -> None:
        if self.direct:
            main.set(f"view/{self.job.node}", b"{}")
            self.direct = False

    def _stop_hosting(self) -> None:
        self.hosting, self._hosted = False, b""
        self._own = self._server = None  # (the server stops when dropped)

    def close(self) -> None:
        self._stop_hosting()


def _parse(raw: bytes) -> tuple[int, StoreAddress | None]:
    """The node that hosts, and its store (``None``: claimed, not serving yet). :class:`Malformed` unless it is a
    :class:`GroupHost`."""
    host = GroupHost.decode(raw)
    return host.node, None if host.at is None else StoreAddress(*host.at, "")
