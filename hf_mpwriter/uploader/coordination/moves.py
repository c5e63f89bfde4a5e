"""A node's moves between the job's store and its successor stores (:mod:`.successor`).

Forward: the store in use, which answered once, is lost (nothing listens there, or nothing answered for
``timing.store_lost``): the node goes on through the first successor the leader listed that answers.
Back: the job's store (or a successor before the one in use) answers again, a hang that healed, a cut that
mended: the node goes back to it, since the nodes that never left it lead on there, and a job split over two
stores has two leaders, each spending the whole budget. Both move every view of the node's connection
(:meth:`~.store.JobStore.move_to`); the node then announces itself where it arrives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import NamedTuple

from ...timing import JobTiming
from .kept_stores import KeptStores
from .protocol import (
    Malformed,
    Skipped,
    lease_holder,
    led_from_value,
    parse_counter,
    parse_led_from,
    parse_members,
)
from .store import CoordinationStore, StoreAddress, StoreError, raise_counter
from .successor import LED_FROM, SuccessorHost, next_store, published, served_by

logger = logging.getLogger("hf_mpwriter.uploader")


class SeenMark(NamedTuple):
    """A successor's ``led_from`` as this node last read it (:meth:`Moves.not_led_here`)."""

    raw: bytes
    since: float  # monotonic: when this node first read this value
    moves: int  # the node's moves when it read it: a mark of an earlier stay there tells nothing
    announced: bool  # this node announced itself there before it read it
    anew: bool  # it replaced a value also read after this node announced itself: written after the leader read it there


class Moves:
    """Which successor stores a node knows, the one it hosts, and its moves among them and the job's store."""

    def __init__(self, store: CoordinationStore, node: int, nodes: int, timing: JobTiming, clock: Callable[[], float],
                 malformed: Skipped, kept: KeptStores | None = None) -> None:
        """``nodes``: the job's; ``kept``: the successors as this node's last uploader knew them (:mod:`.kept_stores`)."""
        self.store, self.node, self.nodes, self.timing, self.clock = store, node, nodes, timing, clock
        self.malformed = malformed
        self.home = store.address  # the job's store: the first choice, gone back to once it answers again
        #: The successor stores, as the leader's last answer listed them (before any answer: as the store held them,
        #: :meth:`learn`, or as this node's last uploader knew them); those found gone.
        self.kept = kept or KeptStores()
        self.successors = [StoreAddress(host, port, store.address.job_id) for host, port in self.kept.listed]
        self._gone: set[StoreAddress] = set()
        self._refused: set[StoreAddress] = set()  # those left because nothing listened there (dead, not cut off)
        #: Monotonic: when this node last read them itself (:meth:`learn`); ``math.inf`` once an answer told it.
        self._read = -math.inf
        self.count = 0  # moves to a successor store, or back (``status``)
        self.back = 0  # of those, back to an earlier store that answered again (``status``)
        self.host: SuccessorHost | None = None  # the one this node hosts, if it does
        #: An earlier store than the one in use that answered at the last check (:meth:`go_back`), and when that was.
        self._earlier: StoreAddress | None = None
        self._checked, self._misses = -math.inf, 0
        self._back_since: float | None = None  # when this node first waited for an earlier store (:meth:`back_in`)
        #: Each later store's lease as this node last read it, and since when it has read that value (:meth:`led_elsewhere`).
        self._leases: dict[StoreAddress, tuple[bytes, float]] = {}
        self._probes: dict[StoreAddress, CoordinationStore] = {}  # (the connections of the checks: :meth:`_probe`)
        self._marks = 0  # the marks this node made, leading (:meth:`mark_later`)
        self._mark_seen: SeenMark | None = None  # the store in use's ``led_from`` as this node last read it
        self._announced_at = -1  # :attr:`count` when this node last announced itself (:meth:`announced`)

    def told(self, listed: list) -> None:
        """The successors as an answer listed them (``[host, port]`` each): the leader's word from now on (it reads
        them every ``timing.successor_copy``)."""
        self._known([(host, port) for host, port in listed])
        self._read = math.inf

    def learn(self) -> None:
        """A node that no answer told of the successor stores yet (no leader, or none that answered it) reads them
        in the store itself, every ``timing.successor_copy`` at most: should the store die before its first answer,
        it must still know where the job goes on. :class:`StoreError` if the store fails."""
        now = self.clock()
        if now - self._read < self.timing.successor_copy:
            return
        self._read = now
        self._known(published(self.store, self.malformed))

    def _known(self, listed: list[tuple[str, int]]) -> None:
        """The successors as this node knows them from now on, kept on its disk too."""
        job = self.store.address.job_id
        self.successors = [StoreAddress(host, port, job) for host, port in listed]
        self.kept.keep(listed)

    def lost(self) -> bool:
        """Whether the store in use is lost to this node: nothing listens there any more, or nothing answered
        its calls for ``timing.store_lost`` (a machine down, frozen or cut off looks the same from here)."""
        return self.store.silent_for() >= self.timing.store_lost or self.store.gone()

    def forward(self) -> bool:
        """Move on from the store in use, lost, to the first successor listed that answers; whether it moved. A host
        that knows no list (the store died before it read one) knows its own store at least: it goes on there once
        other nodes did (:meth:`_own_joined`)."""
        listed = self.successors or self._own_joined()
        if not (listed and self.lost()):
            return False
        self._gone.add(self.store.address)
        if self.store.gone():
            self._refused.add(self.store.address)
        if not next_store(self.store, listed, self._gone, self.host):
            return False
        self.count += 1
        self._list_there()
        return True

    def _list_there(self) -> None:
        """The successors as the store moved to lists them, where it lists as many as this node knew: a host writes its
        address into the store its node uses (:meth:`~.successor.SuccessorHost.copy`), so one restarted since this
        node last heard, at a new address where the others went, is listed there (else: two leaders, a term going
        back)."""
        try:
            listed = published(self.store, self.malformed)
        except StoreError:
            return
        if len(listed) >= len(self.successors):
            self._known(listed)

    def _own_joined(self) -> list[StoreAddress]:
        """The store this node hosts, where other nodes announced themselves (they knew the list: the job's leader is
        there: else this host commits alone beside it); none where it alone would be there (it would lead for
        itself at the whole budget's pace beside the nodes that commit alone too)."""
        if self.host is None:
            return []
        try:
            joined = [node for node in parse_members(self.host.own.get("members"), self.nodes) if node != self.node]
        except StoreError:
            return []
        return [self.host.address] if joined else []

    def go_back(self, incarnation: int) -> bool:
        """On a successor store: go back to the job's store (or an earlier successor) that answers again; whether
        it moved. Asked every ``timing.successor_copy`` (twice as long after each check that found none, up to
        ``timing.store_lost``: a dead machine's store takes a call's deadline to find silent); gone back to once
        it answered two checks in a row (one that flickers is not)."""
        now = self.clock()
        wait = min(self.timing.successor_copy * 2 ** self._misses, self.timing.store_lost)
        if self.count == 0 or self.store.address == self.home or now - self._checked < wait:
            return False
        self._checked = now
        order = [self.home, *self.successors]  # (a store the list no longer has: only the job's is earlier)
        here = order.index(self.store.address) if self.store.address in order else 1
        answering = next((address for address in order[:here] if self._answers(address)), None)
        self._misses = 0 if answering is not None else min(self._misses + 1, 8)
        if answering is None or answering != self._earlier:
            self._earlier = answering
            return False
        self._earlier = None
        self._move_back(answering, incarnation)
        return True

    def back_in(self) -> float | None:
        """Seconds until the next :meth:`go_back` check where an earlier store answered the last one (``None`` where
        none did): a node on a successor waits for it before it commits itself (its leader there may count no own
        commit made here, where the second check comes after the node's own slot); ``timing.store_lost`` in
        all, so that earlier stores that answer by turns never keep it from committing."""
        now = self.clock()
        if self._earlier is None or self.store.address == self.home:
            self._back_since = None
            return None
        self._back_since = now if self._back_since is None else self._back_since
        if now - self._back_since >= self.timing.store_lost:  # (earlier stores that answer by turns: not for ever)
            return None
        return max(0.0, self._checked + self.timing.successor_copy - now)  # (``_misses`` is 0 after an answer)

    def mark_later(self, term: int) -> set[int]:
        """The job's leader (its ``term``), every ``timing.successor_copy`` while it leads (its lease's thread): marks each
        store after the one in use that answers (``led_from``, a new value each time), so that the nodes there, cut off
        from this store (a partition, not its death: it answers its leader), lead nowhere there (:meth:`not_led_here`;
        alone, one led for itself under a term above this one's: two terms at the Hub). Returns the nodes that use them
        (``status``: ``cut_off``)."""
        order, here = [self.home, *self.successors], self.store.address  # (read once: the uploader's thread moves it)
        if here not in order:
            return set()
        self._marks += 1
        mark, away = led_from_value(here.host, here.port, term, self._marks), set[int]()
        for address in order[order.index(here) + 1:]:
            try:
                probe = self._probe(address)
                probe.set(LED_FROM, mark)
                away.update(node for node in parse_members(probe.get("members"), self.nodes) if node != self.node)
            except StoreError:  # (gone or silent: nobody there to mark)
                continue
        return away

    def not_led_here(self) -> tuple[str, float] | None:
        """On a successor store, why no node leads the job here (``None``: one may), and in how many seconds this node
        commits itself here, at its own slots: the leader of an earlier store marks it (:meth:`mark_later`). A mark
        read anew since this node announced itself here (its leader leads now, and has read that this node is here):
        at once. A mark first read (it counts as new, however old): once it changes, or once this node has read it
        unchanged for twice ``timing.successor_copy`` (that leader no longer leads: the store hung, or its host is down,
        and a node here leads), asked again meanwhile; a read that fails meanwhile changes nothing. None of a store
        this node left because nothing listened there (its host process died: no partition answers so), nor where
        most of the job's nodes are here (they lead here, and the job's leader lets go: :meth:`led_elsewhere`)."""
        order, here = [self.home, *self.successors], self.store.address  # (read once: the uploader's thread moves it)
        if here == self.home or here not in order:
            return None
        seen = self._mark_seen if self._mark_seen is not None and self._mark_seen.moves == self.count else None
        try:
            raw = self._probe(here).get(LED_FROM) or b""
        except StoreError:  # (one read past its deadline must not let this node lead beside a leader that marks)
            raw = seen.raw if seen is not None else b""
        marker = self._marker(raw, order[:order.index(here)])
        if marker is None or self._most_nodes_at(here):
            return None
        now = self.clock()
        if seen is None or seen.raw != raw:
            self._mark_seen = seen = SeenMark(raw, now, self.count, self._announced_at == self.count,
                                              seen is not None and seen.announced)
        left = seen.since + 2 * self.timing.successor_copy - now
        if left <= 0:
            return None
        why = (f"cut off from store {marker.host}:{marker.port}, whose leader goes on leading the job and counts this "
               f"node's own commits (it marks successor store {here.host}:{here.port})")
        return why, 0.0 if seen.anew else min(left, self.timing.successor_copy / 2)

    def announced(self) -> None:
        """This node announced itself in the store in use: a mark read from now on that changes tells that its leader
        has read it is here (one read before, in the lease's thread, told nothing: one commit without room kept for
        it)."""
        self._announced_at = self.count

    def _marker(self, raw: bytes, earlier: list[StoreAddress]) -> StoreAddress | None:
        """The store a mark names, where it is one of ``earlier`` this node did not leave for want of a listener."""
        if not raw:
            return None
        try:
            host, port = parse_led_from(raw)
        except Malformed as exc:
            self.malformed.count(LED_FROM, exc)
            return None
        marker = StoreAddress(host, port, self.home.job_id)
        return marker if marker in earlier and marker not in self._refused else None

    def led_elsewhere(self) -> tuple[str | None, int] | None:
        """``(why, term)`` where this node does not lead here: a store later than the one in use (a successor the other
        nodes moved on to, while this node stayed, a hang it did not notice) whose lease another node renewed within
        ``timing.lease_stale`` (a value first read counts as renewed now), and which lists more than half the job's
        nodes: the job has a leader there (its term). Asked by the lease's thread before this node leads here
        (:class:`~.lease.Lease`); the nodes there come back once this store answers them (:meth:`go_back`), and their
        lease there then goes stale. A few nodes cut off from this store lead nowhere there (:meth:`not_led_here`): the
        many here are not left without. On a successor, also a store before it that answers (term 0): the job's leader
        is there, or will be, and this node goes back to it at its next commits; or a mark of an earlier store's leader
        (:meth:`not_led_here`, term 0). Else ``(None, term)``: the highest term drawn in a later store
        (its ``terms``; a leader there may have led fewer nodes, and let go since): a term of this node's below it is not
        renewed here (the job's commits may go on there under it)."""
        order, here = [self.home, *self.successors], self.store.address  # (read once: the uploader's thread moves it)
        if here not in order:
            return None
        for address in order[:order.index(here)]:  # (the job's store first: this node goes back there at its commits)
            if self._answers(address):
                return f"the job leads through store {address.host}:{address.port}, an earlier store this node goes " \
                       "back to", 0
        if (not_led := self.not_led_here()) is not None:
            return not_led[0], 0
        now, highest = self.clock(), 0
        for address in order[order.index(here) + 1:]:
            try:
                probe = self._probe(address)  # (two gets: a multi_get would wait for a key never set)
                value, terms = probe.get("lease") or b"", probe.get("terms")
            except StoreError:  # (gone or silent: nobody leads the job through it)
                continue
            highest = max(highest, self._counter(terms, "terms") or 0)
            holder = lease_holder(value)
            if holder is None or holder[0] == self.node:  # (free, or this node's own from before it came back)
                continue
            seen = self._leases.get(address)
            if seen is None or seen[0] != value:
                self._leases[address] = seen = (value, now)
            if now - seen[1] < self.timing.lease_stale and self._most_nodes_at(address):
                return f"the job leads through store {address.host}:{address.port}", holder[1]
        return (None, highest) if highest else None

    def _counter(self, raw: bytes | None, key: str) -> int | None:
        """A store's counter ``key`` as read (``None`` where unset, or malformed: counted)."""
        try:
            return parse_counter(raw, key) if raw else None
        except Malformed as exc:
            self.malformed.count(key, exc)
            return None

    def _most_nodes_at(self, address: StoreAddress) -> bool:
        """Whether the store at ``address`` lists more than half the job's nodes (those that went back from it are
        listed until its host frees it: their lease there goes stale first)."""
        try:
            return 2 * len(parse_members(self._probe(address).get("members"), self.nodes)) > self.nodes
        except StoreError:
            return False

    def _probe(self, address: StoreAddress) -> CoordinationStore:
        """A connection of this node's own to the store at ``address`` (its host's view where this process serves
        it), kept for the checks, whose calls take a leader's poll at most (a silent store holds up a few at most)."""
        if self.host is not None and served_by(self.host, address) is not None:
            return self.host.own
        if address not in self._probes:
            probe = self._probes[address] = self.store.elsewhere(address)
            probe.deadline = min(probe.deadline, self.timing.poll)
        return self._probes[address]

    def _answers(self, address: StoreAddress) -> bool:
        """Whether the store at ``address`` answers a check within a leader's poll (it holds this node's commit up:
        one that takes longer is not gone back to yet)."""
        return served_by(self.host, address) is not None or self._probe(address).answers()  # (or served by this process)

    def _move_back(self, address: StoreAddress, incarnation: int) -> None:
        """Move to ``address``, an earlier store that answers again: its terms counter is raised to the one left; the
        store left is told this node left it, so that its host copies the job's books into it again once every node
        did (:meth:`~.successor.SuccessorHost.copy`)."""
        was, terms = self.store.address, 0
        try:
            terms = self.store.add("terms", 0)
            self.store.set(f"left/{self.node}", str(incarnation).encode())
        except StoreError as exc:
            logger.debug("job: this node's move not said in the store it leaves: %s", exc)
        self.store.move_to(address, served_by(self.host, address))
        self.kept.keep_term(terms)
        try:  # (the terms drawn there count here too: a term here is never below one the job had there)
            raise_counter(self.store, "terms", terms)
        except StoreError as exc:
            logger.debug("job: the terms not raised in the store gone back to: %s", exc)
        self._gone.discard(address)
        self._refused.discard(address)
        self.count += 1
        self.back += 1
        logger.warning("the job's store at %s:%d answers again: this node goes back to it from successor store %s:%d",
                       address.host, address.port, was.host, was.port)
