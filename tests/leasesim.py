"""A deterministic simulation of the job's lease: the real decision code of every node's
:class:`~hf_mpwriter.uploader.coordination.lease.Lease` (its :meth:`~.Lease.tick`, and the progress its
rounds report: :meth:`~.Lease.call_began`, :meth:`~.Lease.call_ended`, :meth:`~.Lease.wrote`,
:meth:`~.Lease.round_ended`), one virtual clock, and an in-memory store with the real store's calls. A seed
chooses the job (2-6 nodes) and the faults:

- ``kill``: a node's uploader killed (SIGKILL: its lease is not released);
- ``pause``: a node stopped for a while (SIGSTOP), then continued;
- ``stop``: a node's uploader stops as it does at its end (its lease released if no round runs);
- ``restart``: a node's uploader replaced by a new one (an ``exec``: the same node, the same pid);
- ``store-gone``: every store call refused, or hung until its deadline, for a while;
- ``lost-answer``: a call applied whose answer is lost (the caller sees a failure);
- ``late``: a call that misses its deadline and applies after it;
- ``hub-hang``: the leader's call to the Hub hangs;
- ``hub-fail``: the leader's writes to the Hub fail for a while;
- ``round-fail``: the leader's rounds raise what nobody expected, for a while.

A tick's store calls are atomic (the schedule interleaves whole ticks), except a late call's, which applies
later, between other ticks. Invariants, after every event:

- every term is drawn once, and a lease that changes holder names a term above every one held before;
- a held lease passes to another node only once it went unwritten for ``lease_stale`` (on the observer's
  clock; the clocks run at one rate here), or after its holder released it;
- two running nodes believe they lead at once for at most one tick and a store call's deadline;
- once the faults are over, one running node leads and the store's lease names it, within the longest
  abstention and a lease's staleness; it keeps it.

A failing seed prints itself; :func:`run` with that seed replays it exactly. Simulated: the store (a dict), the
clock, the threads (a round holds the lease's round lock as a flag), the Hub (the rounds' reports), the plan
(its interval, which sets the hand-over time, stays at :data:`COMMIT_EVERY`). Real: every decision of the lease.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from simstore import OneStore, undecodable

from hf_mpwriter.timing import ABSTAIN_FACTOR, STORE_CALL_S, JobTiming
from hf_mpwriter.uploader.coordination.lease import Lease
from hf_mpwriter.uploader.coordination.protocol import lease_holder
from hf_mpwriter.uploader.coordination.store import MAX_VALUE_BYTES, StoreAddress, StoreError

KINDS = ("kill", "pause", "stop", "restart", "store-gone", "lost-answer", "late", "hub-hang", "hub-fail", "round-fail")
TIMING = JobTiming()  # production's waits
COMMIT_EVERY = 10.0
T = TypeVar("T")
HUB_CALL_LIMIT = 30.0  # how long a leader's call to the Hub may take before the lease counts it stuck


class RoundLock:
    """The lease's round lock as the simulation's threads use it: a round holds it while its call runs."""

    def __init__(self) -> None:
        self.held = False

    def acquire(self, timeout: float = -1) -> bool:
        if self.held:
            return False
        self.held = True
        return True

    def release(self) -> None:
        self.held = False


class Store(OneStore):
    """The job's store as the lease uses it (:class:`~hf_mpwriter.uploader.coordination.store.CoordinationStore`:
    mypy checks this class against it), in memory, with the faults the simulation arms: ``down`` (``"refuse"``
    or ``"hang"``), and one-shot ``lose`` (the next call applies, its answer lost) and ``late`` (the next call
    misses its deadline and applies later). A call's cost (seconds) delays its caller. What the lease never asks
    of a store (other prefixes, other stores, how long it was silent) raises :class:`NotImplementedError`: a
    lease that starts asking fails its seeds (:meth:`Sim._ticked`) instead of reading a made-up answer."""

    what = "the lease simulation's store"

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.values: dict[str, bytes] = {}
        self.written_at: dict[str, float] = {}
        self.down: str | None = None
        self.lose = self.late = False
        self.cost = 0.0
        self.address, self.prefix = StoreAddress("leasesim", 1, "job"), ""
        self.deadline, self.preemption = STORE_CALL_S, math.inf
        self.moves = 0  # (it never moves to a successor store)

    def get(self, key: str) -> bytes | None:
        return self._call(lambda: self.values.get(key))

    def set(self, key: str, value: bytes, largest: int = MAX_VALUE_BYTES) -> None:
        self._call(lambda: self._write(key, value))

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        return self._call(lambda: [self.values[key] for key in keys])

    def multi_set(self, values: Mapping[str, bytes]) -> None:
        def apply() -> None:
            for key, value in values.items():
                self._write(key, value)
        self._call(apply)

    def append(self, key: str, value: bytes) -> None:
        self._call(lambda: self._write(key, self.values.get(key, b"") + value))

    def add(self, key: str, amount: int) -> int:
        def apply() -> int:
            value = int(self.values.get(key, b"0")) + amount
            self.values[key] = str(value).encode()
            self.sim.terms_drawn.append(value)
            return value
        return self._call(apply)

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bool:
        def apply() -> bool:
            current = self.values.get(key, b"")
            if current != expected:
                return False
            if key == "lease":
                self.sim.lease_changed(current, desired)
            self._write(key, desired)
            return True
        return self._call(apply)

    def until(self, started: float, longest: float) -> float:
        return started + min(longest, max(0.0, (self.preemption - started) / 3))

    def hurry(self, deadline: float) -> None:
        self.preemption = deadline

    def gone(self) -> bool:
        return self.down == "refuse"

    def answers(self) -> bool:
        try:
            self._call(lambda: None)
        except StoreError:
            return False
        return True

    def _write(self, key: str, value: bytes) -> None:
        self.values[key], self.written_at[key] = bytes(value), self.sim.now
        if (why := undecodable(key, value)) is not None:
            self.sim.problem(f"a value no node can read was written: {why}")

    def _call(self, apply: Callable[[], T]) -> T:
        if self.down == "refuse":
            raise StoreError("the simulated store refuses the connection")
        if self.down == "hang":
            self.cost += STORE_CALL_S
            raise StoreError("the simulated store did not answer in time")
        if self.lose or self.late:  # (the job is disturbed when the call is made, not when the fault was armed)
            self.sim.disturbed_at = self.sim.now
        if self.lose:
            self.lose = False
            apply()
            self.cost += STORE_CALL_S
            raise StoreError("the simulated store's answer was lost")
        if self.late:
            self.late = False
            self.cost += STORE_CALL_S
            self.sim.at(STORE_CALL_S + self.sim.rng.uniform(0.0, 3.0), "apply", -1, apply)
            raise StoreError("the simulated store did not answer in time (the call applies later)")
        return apply()


@dataclass
class Node:
    number: int
    lease: Lease
    alive: bool = True
    paused_until: float = -1.0
    ticked: bool = False  # a tick is scheduled
    hub: str | None = None  # "hang" or "fail": what the Hub does to this node's calls now
    round_fails: bool = False
    faulted_since: float | None = None  # its Hub or its rounds fail since (``None``: they work)
    clean: bool = True  # neither its Hub nor its rounds ever failed
    spell_since: float | None = None  # it leads, its Hub or rounds failing, since
    spell_ended: float | None = None  # its last such spell of leading ended then
    call_started: float | None = None  # a round's call to the Hub under way since

    def running(self, now: float) -> bool:
        return self.alive and now >= self.paused_until


@dataclass
class Result:
    seed: int
    nodes: int
    faults: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    leases: int = 0  # leases taken (new terms held)

    def __str__(self) -> str:
        return f"seed {self.seed}: {self.nodes} nodes, {self.leases} leases taken; faults: {'; '.join(self.faults)}"


class Sim:
    def __init__(self, seed: int, kinds: tuple[str, ...], timing: JobTiming, nodes: int | None,
                 lease: type[Lease] = Lease) -> None:
        self.timing, self.lease = timing, lease
        self.rng = random.Random(seed)
        self.now = 0.0
        self.queue: list = []
        self.order = itertools.count()
        self.store = Store(self)
        self.terms_drawn: list[int] = []
        self.highest_held = 0  # the highest term a lease named so far
        self.result = Result(seed, nodes or self.rng.randint(2, 6))
        self.nodes = [self._new_node(k) for k in range(self.result.nodes)]
        self.overlap_since: float | None = None
        self.disturbed_at = -1.0  # the last time a fault other than a node's Hub or rounds began or ended
        self.kinds = kinds

    def _new_node(self, number: int) -> Node:
        lease = self.lease(self.store, number, self.result.nodes, self.timing, COMMIT_EVERY,
                           clock=lambda: self.now + self.store.cost)
        lease._round_lock = RoundLock()  # type: ignore[assignment]  # (the simulation's threads: one flag)
        return Node(number, lease)

    def at(self, delay: float, kind: str, node: int, payload=None) -> None:
        heapq.heappush(self.queue, (self.now + delay, next(self.order), kind, node, payload))

    def fault(self, text: str) -> None:
        self.result.faults.append(f"{self.now:.1f} s: {text}")

    # -- what the store sees ----------------------------------------------------------------------
    def lease_changed(self, old: bytes, new: bytes) -> None:
        before, after = lease_holder(old), lease_holder(new)
        if after is not None and after != before:
            self.result.leases += 1
            if after[1] <= self.highest_held or self.terms_drawn.count(after[1]) != 1:
                self.problem(f"node {after[0]} took the lease with term {after[1]}: drawn {self.terms_drawn.count(after[1])} "
                             f"time(s), the highest held so far {self.highest_held}")
            self.highest_held = max(self.highest_held, after[1])
        if before is None or after is None or before == after:
            return
        unwritten = self.now - self.store.written_at.get("lease", -1e9)
        if unwritten < TIMING.lease_stale - 1e-9:
            self.problem(f"node {after[0]} took node {before[0]}'s lease {unwritten:.2f} s after its last write")

    def problem(self, text: str) -> None:
        self.result.problems.append(f"{self.now:.1f} s: {text}")

    # -- the events -------------------------------------------------------------------------------
    def tick(self, node: Node) -> None:
        node.ticked = False
        if not node.alive:
            return
        if self.now < node.paused_until:  # (stopped: its timer fires the moment it continues)
            self._schedule_tick(node, node.paused_until - self.now)
            return
        self.store.cost = 0.0
        pause = self._ticked(node)
        self._schedule_tick(node, self.store.cost + pause)
        self.store.cost = 0.0

    def _ticked(self, node: Node) -> float:
        """The node's lease ticks; one that raised what nobody expected (logged, and swallowed so that the lease
        lives on) is a problem: a programming error, in the lease or in this simulation's store."""
        before = node.lease.tick_errors
        pause = node.lease.tick()
        if node.lease.tick_errors > before:
            self.problem(f"node {node.number}'s lease tick raised an error nobody expected (the log has it)")
        return pause

    def _schedule_tick(self, node: Node, delay: float) -> None:
        node.ticked = True
        self.at(delay, "tick", node.number, node)

    def round(self, node: Node) -> None:
        """The leader's round, every poll while it leads: a write to the Hub every interval, as the Hub
        answers now; the round lock held while a call runs."""
        if node.alive and node.running(self.now):
            lease = node.lease
            if node.call_started is not None and node.hub != "hang":  # a hung call ends once the Hub answers: a write
                lease.call_ended(node.call_started, failed=False)
                lease.wrote()
                lease.round_ended(failed=False)
                node.call_started, lease._round_lock.held = None, False  # type: ignore[attr-defined]
                node.spell_since = node.spell_ended = None  # (progress: a fault that goes on counts from here)
                node.faulted_since = self.now if node.hub is not None or node.round_fails else None
            if lease.leading and node.call_started is None:
                if node.round_fails:
                    lease.round_ended(failed=True)
                elif self.rng.random() < TIMING.poll / COMMIT_EVERY or node.hub is not None:
                    started = lease.call_began(HUB_CALL_LIMIT)
                    if node.hub == "hang":
                        node.call_started, lease._round_lock.held = started, True  # type: ignore[attr-defined]
                    elif node.hub == "fail":
                        lease.call_ended(started, failed=True)
                        lease.round_ended(failed=False)
                    else:
                        lease.call_ended(started, failed=False)
                        lease.wrote()
                        lease.round_ended(failed=False)
                else:
                    lease.round_ended(failed=False)
        if node.alive:
            self.at(TIMING.poll, "round", node.number, node)

    def check(self) -> None:
        for node in self.nodes:
            self._check_progress(node)
        leading = [n.number for n in self.nodes if n.lease.leading and n.running(self.now)]
        if len(leading) < 2:
            self.overlap_since = None
            return
        if self.overlap_since is None:
            self.overlap_since = self.now
        if self.now - self.overlap_since > TIMING.poll + STORE_CALL_S + 1e-9:
            self.problem(f"nodes {leading} all believe they lead, since {self.overlap_since:.1f} s")
            self.overlap_since = self.now  # (said once per span)

    def _check_progress(self, node: Node) -> None:
        """A leader whose Hub calls hang or fail, or whose rounds raise, lets the lease go within a stuck call (or
        its hand-over time) and a few ticks, and takes it back no sooner than its abstention, while a node that
        works could lead (nothing else disturbed since the fault began)."""
        if node.faulted_since is None:
            return
        if not (node.lease.leading and node.running(self.now)):
            if node.spell_since is not None:
                node.spell_ended, node.spell_since = self.now, None
            return
        if node.spell_since is None:
            node.spell_since, back = self.now, node.spell_ended
            abstention = ABSTAIN_FACTOR * node.lease.handover_after()
            if back is not None and self.now - back < abstention and self._another_could_lead(node):
                self.problem(f"node {node.number} took the lease back {self.now - back:.1f} s after letting it go, making "
                             f"no progress since {node.faulted_since:.1f} s")
        longest = max(HUB_CALL_LIMIT, node.lease.handover_after()) + 3 * TIMING.poll + STORE_CALL_S
        if self.now - node.spell_since > longest and self._another_could_lead(node):
            self.problem(f"node {node.number} leads, making no progress since {node.faulted_since:.1f} s")
            node.spell_since = self.now  # (said once per span)

    def _another_could_lead(self, node: Node) -> bool:
        """Whether a node that never failed runs, and nothing but ``node``'s own fault disturbed the job since."""
        assert node.faulted_since is not None
        return self.disturbed_at < node.faulted_since and any(
            other.clean and other.running(self.now) for other in self.nodes if other is not node)


LEADER = -1  # a fault's node: whichever leads when it starts

#: The longest abstention (a node that handed over 5 times in a row, with the plan's interval as its hand-over time).
LONGEST_ABSTENTION = ABSTAIN_FACTOR * max(TIMING.lease_stale, COMMIT_EVERY) * 2 ** 4


def run(seed: int, kinds: tuple[str, ...] = KINDS, faults: int | None = None, timing: JobTiming = TIMING,
        nodes: int | None = None, lease: type[Lease] = Lease) -> Result:
    """One job of ``nodes`` nodes (by default 2-6) under seed ``seed``'s faults (of ``kinds``, drawn in that order;
    ``faults`` of them, by default 1-6), then quiescence; what broke, if anything. ``timing``: the nodes' (the
    invariants hold them to production's); ``lease``: the nodes' lease (a test hands in one broken on purpose)."""
    sim = Sim(seed, kinds, timing, nodes, lease)
    rng, result = sim.rng, sim.result
    for node in sim.nodes:
        sim._schedule_tick(node, rng.uniform(0, 1))
        sim.at(rng.uniform(0, TIMING.poll), "round", node.number, node)
    horizon = 0.0
    for _ in range(rng.randint(1, 6) if faults is None else faults):
        start, kind = rng.uniform(5, 200), rng.choice(kinds)
        sim.at(start, "fault", LEADER if rng.random() < 0.5 else rng.randrange(result.nodes), kind)
        horizon = max(horizon, start + 120)
    _events(sim, until=horizon)
    deadline = horizon + LONGEST_ABSTENTION + 3 * TIMING.lease_stale  # (every abstention served, a lease gone stale)
    while sim.now < deadline and _leader(sim) is None and any(n.alive for n in sim.nodes):
        _events(sim, until=sim.now + TIMING.poll)
    held = _quiescent(sim)
    _events(sim, until=sim.now + 3 * TIMING.lease_stale)
    if held is not None and lease_holder(sim.store.values.get("lease")) != held:
        sim.problem(f"the lease moved at quiescence, from {held} to {lease_holder(sim.store.values.get('lease'))}")
    return result


def _events(sim: Sim, until: float) -> None:
    """Every event up to ``until``, the invariants checked after each; the clock then reads ``until``."""
    while sim.queue and sim.queue[0][0] <= until:
        sim.now, _, kind, number, payload = heapq.heappop(sim.queue)
        if kind == "tick":
            sim.tick(payload)
        elif kind == "round":
            sim.round(payload)
        elif kind == "apply":
            payload()
            sim.disturbed_at = sim.now
        else:
            _act(sim, kind, number, payload)
        sim.check()
    sim.now = max(sim.now, until)


def _act(sim: Sim, kind: str, number: int, payload) -> None:
    """A fault starts (``fault``) or ends (``end``); at :data:`LEADER`, the node that leads then (if any)."""
    if number == LEADER:
        leading = [n.number for n in sim.nodes if n.alive and n.lease.leading]
        number = leading[0] if leading else sim.rng.randrange(len(sim.nodes))
    rng, node, store = sim.rng, sim.nodes[number], sim.store
    if kind == "end":
        what = payload
        if what == "store":
            store.down = None
        elif what in ("hub", "round-fail"):
            node.hub, node.round_fails, node.faulted_since, node.spell_since, node.spell_ended = None, False, None, None, None
        if what in ("store", "pause"):
            sim.disturbed_at = sim.now
        sim.fault(f"{what} over" + ("" if what == "store" else f" on node {number}"))
        return
    if not node.alive and payload not in ("store-gone", "lost-answer", "late"):
        return
    span = rng.uniform(1, 60)
    if payload in ("hub-hang", "hub-fail", "round-fail"):
        node.clean, node.faulted_since = False, sim.now if node.faulted_since is None else node.faulted_since
    else:
        sim.disturbed_at = sim.now
    if payload == "kill":
        node.alive = False
        sim.fault(f"node {number} killed")
    elif payload == "pause":
        node.paused_until = max(node.paused_until, sim.now + rng.uniform(1, 3 * TIMING.lease_stale))  # (one stopped stays so)
        sim.at(node.paused_until - sim.now, "end", number, "pause")
        sim.fault(f"node {number} stopped until {node.paused_until:.1f} s")
    elif payload == "stop":
        node.alive = False
        if node.lease.leading:
            node.lease.let_go("this uploader stops")
        sim.fault(f"node {number} stops")
    elif payload == "restart":
        node.alive = False
        sim.nodes[number] = fresh = sim._new_node(number)
        sim._schedule_tick(fresh, rng.uniform(0, 2))
        sim.at(TIMING.poll, "round", number, fresh)
        sim.fault(f"node {number}'s uploader replaced")
    elif payload == "store-gone":
        store.down = rng.choice(["refuse", "hang"])
        sim.at(span, "end", number, "store")
        sim.fault(f"store gone ({store.down}) for {span:.0f} s")
    elif payload == "lost-answer":
        store.lose = True
        sim.fault("the next store call's answer lost")
    elif payload == "late":
        store.late = True
        sim.fault("the next store call applies late")
    elif payload in ("hub-hang", "hub-fail"):
        node.hub = payload[4:]
        sim.at(rng.uniform(1, 3 * HUB_CALL_LIMIT), "end", number, "hub")
        sim.fault(f"the Hub's calls {node.hub} for node {number}")
    elif payload == "round-fail":
        node.round_fails = True
        sim.at(span, "end", number, "round-fail")
        sim.fault(f"node {number}'s rounds raise")


def _leader(sim: Sim) -> tuple[int, int] | None:
    """The one running node that leads, as the store's lease names it too; ``None`` if not exactly that."""
    leaders = [n for n in sim.nodes if n.alive and n.lease.leading]
    if len(leaders) != 1 or lease_holder(sim.store.values.get("lease")) != (leaders[0].number, leaders[0].lease.term):
        return None
    return leaders[0].number, leaders[0].lease.term


def _quiescent(sim: Sim) -> tuple[int, int] | None:
    """Exactly one running node leads and the store's lease names it: its ``(node, term)``."""
    running = [n for n in sim.nodes if n.alive]
    if not running:
        return None
    leaders = [n for n in running if n.lease.leading]
    holder = lease_holder(sim.store.values.get("lease"))
    if len(leaders) != 1:
        sim.problem(f"at quiescence {len(leaders)} nodes lead: {[n.number for n in leaders]}")
        return None
    leader = leaders[0]
    if holder != (leader.number, leader.lease.term):
        sim.problem(f"node {leader.number} (term {leader.lease.term}) leads, but the store's lease names {holder}")
    return holder


def sweep(seeds: range, kinds: tuple[str, ...] = KINDS, timing: JobTiming = TIMING, lease: type[Lease] = Lease) -> list[Result]:
    """The seeds' runs that broke an invariant."""
    return [result for result in (run(seed, kinds, timing=timing, lease=lease) for seed in seeds) if result.problems]
