"""A deterministic simulation of a job's commits: the real code of every node's
:class:`~hf_mpwriter.uploader.coordination.member.JobTarget` (its offers, the answers it waits for, its own
commits when no leader answers) and :class:`~hf_mpwriter.uploader.coordination.leader.Leader` (its lease's
thread and its rounds: books, claims, commits, answers), one virtual clock, an in-memory store with the real
store's calls, and a Hub that fences commits by their parent. A seed chooses the job (2-4 nodes, one
repository) and the faults:

- ``kill``: a node's uploader killed (SIGKILL) and, mostly, started again a while later (its queue survives);
- ``preempt``: a node's uploader signalled (SIGTERM: its last records go within its deadline, 20 s), then killed
  at the end of its grace (30 s), its disk gone with it;
- ``pause``: a node stopped for a while (SIGSTOP), then continued;
- ``clock-step``: a node's wall clock steps 1-60 minutes ahead or back (its monotonic clock runs on);
- ``store-hang``: every store call hangs until its deadline, for a while;
- ``store-gone``: nothing listens at the job's store's address any more, for good: each node goes on alone, or
  (``successors``) through the successor store node 1 serves (the real copying and moving; a successor
  dies with its node's uploader);
- ``store-cut`` (asked for by name, not among :data:`KINDS`: the seeds found before keep their faults): one node's
  calls to the job's store hang until their deadline, for a while, as behind a partition; the others' go on;
- ``lost-answer``: a node's store call applies, its answer lost;
- ``hub-hang``: the Hub holds a node's calls for a while (its route to the Hub; those under way too), and applies
  what it held after;
- ``hub-hold``: the Hub holds the next commit a node sends for a while (up to 5 minutes), then applies it;
- ``hub-timeout``: the Hub applies a node's next commit, and its answer times out (the caller sees a failure);
- ``hub-fail``: the Hub fails every call for a while;
- ``hub-429``: the Hub answers 429 with ``Retry-After`` for a while.

Each node's uploader makes a new version of its file every ``COMMIT_EVERY`` s of its work and commits the
newest it has, as the uploader's loop does (put off: again when told; failed: again after a backoff); at its
end it commits its last version and stops. Invariants:

- **nothing lost**: at the end, the Hub holds every node's last version (a node killed for good: none it never
  made; a node preempted: its last records at the signal, unless the Hub failed, limited or held its calls, or
  the node was stopped, for all but 5 s of its deadline, or the Hub held its own commit carrying them past it, or
  a ``kill`` came before its deadline: no grace, outside the preemption guarantee);
- **never backwards**: no commit the Hub applies takes a node's file to an older version than it held;
- **one leader's term at a time on each store**: the commits the Hub applies from the leaders of one store never go
  back to an older term (two stores may each have a leader: the job's and the successor, within the budget's margin);
- **progress**: no node holds the lease for long with its rounds skipped (its term on a store it left);
- **the budget, with its margin**: in every window of the job's commit window, the Hub applies at most twice the
  job's explicit commits an hour (the rule: docs/guarantees.md), the job's end (every node's last records, which go
  whatever the budget says) aside.

How: every node's threads (its lease, its rounds, its uploader) run the real code as greenlets, one at a time,
handed the turn by the simulation, and each gives it back where it waits (the clock, ``sleep``, the lease's
``Event`` and round lock handed in). So a seed replays exactly (greenlets, not OS threads: the same schedules,
each hand-over about a microsecond, 5 times the seeds a second), and a failing one prints itself
(:func:`run` with that seed replays it). Simulated: the stores (a dict each), the Hub (a head and each file's
version), the clocks (one rate; the wall clocks stepped apart by ``clock-step``). Not in it: the job run, the Xet
token (each node's own), a bucket; a store call takes no virtual time.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import greenlet
from simstore import undecodable

from hf_mpwriter.config import UploadConfig
from hf_mpwriter.errors import Deferred, TargetError
from hf_mpwriter.state.piece import Piece
from hf_mpwriter.targets.base import UploadedFile
from hf_mpwriter.timing import OFFER_WAIT_S, STORE_CALL_S, JobTiming
from hf_mpwriter.uploader.coordination import successor
from hf_mpwriter.uploader.coordination.leader import Leader, LeaderTarget
from hf_mpwriter.uploader.coordination.member import JobTarget
from hf_mpwriter.uploader.coordination.pacing import pacing
from hf_mpwriter.uploader.coordination.plan import make_budget
from hf_mpwriter.uploader.coordination.store import StoreAddress, StoreError
from hf_mpwriter.uploader.schedule import until_turn

KINDS = ("kill", "preempt", "pause", "clock-step", "store-hang", "store-gone", "lost-answer", "hub-hang", "hub-hold",
         "hub-timeout", "hub-fail", "hub-429")
#: The kinds under which the budget holds: at the store's death, without a successor store, each node commits what it
#: holds at once, whatever the window; with successor stores, nodes may end up on different ones (issue 52's note).
HELD = tuple(kind for kind in KINDS if kind != "store-gone")
#: Kinds a sweep asks for by name (``--kinds``): :data:`KINDS` stays as it was, so that a seed found before replays.
EXTRA_KINDS = ("store-cut",)
TIMING = JobTiming()  # production's waits
COMMIT_EVERY = 10.0  # the user's commit_every (s)
COMMITS_PER_HOUR = 12.0  # the user's explicit HF_MPWRITER_COMMITS_PER_HOUR
#: The rule's margin on the budget (docs/guarantees.md): through any fault, at most this many times the plan's commits.
MARGIN = 2.0
WINDOWS = 6.0  # the budget's windows, 6 times shorter (an hour in 10 minutes: the rates per window stay)
#: The target's commit spacing (s); the leader's writes go SPACING / WINDOWS apart at least (production's: 5 s for
#: these settings; closer here, so that more writes contend for the budget).
SPACING = 14.0
CALL_BOUND = 3 * OFFER_WAIT_S
WORK = 600.0  # each node's work before its end (s)
HUB_LATENCY = 0.5
MAIN = StoreAddress("sim", 1, "job")  # the job's store (the successor stores: the next ports)
PREEMPTION_DEADLINE = 20.0  # the uploader's, after SIGTERM (production's default)
GRACE = 30.0  # the scheduler's, before SIGKILL


class Killed(BaseException):
    """Raised where a killed node's thread waits: it unwinds (the simulation's end), running nothing more."""


class Actor:
    """One of a node's threads, a greenlet; it runs only while the simulation hands it the turn."""

    def __init__(self, sim: Sim, node: Node, name: str, body: Callable[[], None]) -> None:
        self.sim, self.node, self.name, self.body = sim, node, name, body
        self.killed = self.done = False
        self.naps = 0  # its sleeps so far: a wake-up queued for an earlier one is stale
        self.glet = greenlet.greenlet(self._main, parent=sim.main)

    def _main(self) -> None:
        try:
            if not self.killed:
                self.body()
        except Killed:
            pass
        except BaseException:
            self.sim.crashes.append(f"{self.name}: {traceback.format_exc(limit=6)}")
        finally:
            self.done = True  # (and the turn goes back to the simulation, the greenlet's parent)


class SimEvent:
    """The lease's ``_stop`` event, on the virtual clock."""

    def __init__(self, sim: Sim) -> None:
        self.sim, self.flag = sim, False

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True

    def wait(self, timeout: float) -> bool:
        self.sim.sleep(timeout)
        return self.flag


class SimLock:
    """The lease's round lock: a thread that finds it held waits on the virtual clock."""

    def __init__(self, sim: Sim) -> None:
        self.sim, self.held = sim, False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        end = self.sim.now + (timeout if timeout >= 0 else math.inf)
        while self.held:
            if self.sim.now >= end or not blocking:
                return False
            self.sim.sleep(min(0.1, end - self.sim.now))
        self.held = True
        return True

    def release(self) -> None:
        self.held = False

    def __enter__(self) -> SimLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Place:
    """One store's values, and its state: ``None`` (answers), ``"hang"`` (every call waits out its deadline and
    fails), ``"gone"`` (nothing listens: its host is dead)."""

    values: dict[str, bytes] = field(default_factory=dict)
    state: str | None = None


class Store:
    """One node's connection to a store of the job (its values are the simulation's; it moves to a successor
    store as the real one does): ``lose`` loses the next call's answer."""

    def __init__(self, sim: Sim, address: StoreAddress = None, node: int | None = None) -> None:  # type: ignore[assignment]
        self.sim, self.node = sim, node
        self.address = address or MAIN
        self.prefix, self.moves, self.preemption, self.deadline, self.round_trips = "", 0, math.inf, STORE_CALL_S, 0
        self.failing_since: float | None = None
        self.lose = False

    @property
    def values(self) -> dict[str, bytes]:
        return self.sim.places[self.address].values

    def get(self, key: str) -> bytes | None:
        return self._call(lambda: self.values.get(key))

    def set(self, key: str, value: bytes, largest: int = 0) -> None:
        self._call(lambda: self.values.__setitem__(key, bytes(value)), key)

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        """As the real store's: every key must exist (a TCPStore waits for a missing one, past the call's deadline)."""
        if self.sim.places[self.address].state is None and any(key not in self.values for key in keys):
            self._failed()
            self.sim.sleep(self.deadline)
            raise StoreError("the simulated store waited for a key never set (multi_get)")
        return self._call(lambda: [self.values[key] for key in keys])

    def multi_set(self, values: Mapping[str, bytes]) -> None:
        self._call(lambda: self.values.update({k: bytes(v) for k, v in values.items()}), *values)

    def append(self, key: str, value: bytes) -> None:
        self._call(lambda: self.values.__setitem__(key, self.values.get(key, b"") + value), key)

    def add(self, key: str, amount: int) -> int:
        def apply() -> int:
            value = int(self.values.get(key, b"0")) + amount
            self.values[key] = str(value).encode()
            return value
        return self._call(apply)  # (a count the store itself writes: no node's encoder)

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bool:
        def apply() -> bool:
            if self.values.get(key, b"") != expected:
                return False
            self.values[key] = bytes(desired)
            return True
        return self._call(apply, key)

    def answers(self) -> bool:
        try:
            self.get("lease")
        except StoreError:
            return False
        return True

    def silent_for(self) -> float:
        return 0.0 if self.failing_since is None else self.sim.now - self.failing_since

    def gone(self) -> bool:
        return self.sim.places[self.address].state == "gone"

    def until(self, started: float, longest: float) -> float:
        return started + min(longest, max(0.0, (self.preemption - started) / 3))

    def hurry(self, deadline: float) -> None:
        self.preemption = deadline

    def scoped(self, prefix: str) -> Store:
        return self

    def elsewhere(self, address: StoreAddress) -> Store:
        return Store(self.sim, address, self.node)

    def move_to(self, address: StoreAddress, server: object = None) -> None:
        self.address, self.failing_since = address, None
        self.moves += 1

    def _call(self, apply: Callable, *written: str):
        self.round_trips += 1
        state = self.sim.places[self.address].state
        if state is None and self.address == MAIN and self.sim.now < self.sim.cut_until.get(self.node, -math.inf):
            state = "hang"  # (this node's route to the job's store: ``store-cut``)
        if state == "gone":
            self._failed()
            raise StoreError("the simulated store refuses the connection")
        if state == "hang":
            self._failed()
            self.sim.sleep(self.deadline)
            raise StoreError("the simulated store did not answer in time")
        value = apply()
        for key in written:  # (every value written decodes as its key's kind says)
            if (why := undecodable(key, self.values.get(key))) is not None:
                self.sim.problem(f"node {self.node} wrote a value no node can read: {why}")
        if self.lose:
            self.lose = False
            self._failed()
            raise StoreError("the simulated store's answer was lost")
        self.failing_since = None
        return value

    def _failed(self) -> None:
        if self.failing_since is None:
            self.failing_since = self.sim.now


class SuccessorHost(successor.SuccessorHost):
    """The real successor host's copying (:meth:`copy`), on a simulated store its node serves, in a thread of its
    node's; it dies with the node's uploader."""

    def __init__(self, sim: Sim, node: Node, store: Store, slot: int) -> None:
        self.sim, self.node, self.store, self.slot, self.every = sim, node, store, slot, TIMING.successor_copy
        self.poll, self._seen, self._copied = TIMING.poll, -1, -math.inf
        self.address = StoreAddress("sim", next(sim.ports), MAIN.job_id)
        sim.places[self.address] = Place()
        self.server, self.own, self.stopped = object(), Store(sim, self.address), False

    def start(self) -> None:
        self.sim.spawn(self.node, f"successor {self.slot}", self._run)

    def stop(self, within: float) -> None:
        self.stopped = True

    def linger(self, *args: object) -> None:
        pass

    def _run(self) -> None:
        while not self.stopped:
            try:
                self.tick(self.sim.now)
            except StoreError:
                pass
            self.sim.sleep(self.poll)


@dataclass
class Applied:
    at: float
    node: int
    term: tuple[int, int] | None  # the leader's (store's port, term); None: a node's own commit
    versions: dict[str, int]
    last: bool  # it carries a node's last version


class Hub:
    """One repository: its head and each file's version; a commit lands only on its parent, and the Hub applies
    what it was sent even when the sender is gone. Faults: ``hang_until`` (a node's calls held until then, applied
    after), ``fail_until`` and ``limited_until`` (429)."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.head = 0
        self.files: dict[str, int] = {}
        self.applied: list[Applied] = []
        self.hang_until: dict[int, float] = {}
        #: Spells in which a node's calls got no answer (its faults, or the node stopped): (from, to, node; None: all).
        self.outages: list[tuple[float, float, int | None]] = []
        self.hold_next: dict[int, float] = {}  # node -> how long its next commit is held
        #: ``(caller, until when, the versions it carried)`` of each commit held
        self.held: list[tuple[int, float, dict[str, int]]] = []
        self.time_out_next: set[int] = set()  # nodes whose next commit applies, its answer lost
        self.fail_until = self.limited_until = -math.inf

    def answered(self, node: int, start: float, end: float) -> float:
        """Seconds of ``[start, end]`` in which the Hub answered ``node``'s calls (no outage of its, or everyone's)."""
        points = sorted({start, end, *(t for a, b, _ in self.outages for t in (a, b) if start < t < end)})
        return sum(b - a for a, b in zip(points, points[1:])
                   if not any(f <= a and b <= t and n in (None, node) for f, t, n in self.outages))

    def held_past(self, node: int, path: str, version: int, deadline: float) -> bool:
        """Whether ``node``'s own commit carrying ``path`` at ``version`` (or newer) was held past ``deadline``: its last
        records were in the Hub's hands (applied later, if at all: its parent fences it)."""
        return any(caller == node and until > deadline and versions.get(path, -1) >= version
                   for caller, until, versions in self.held)

    def answer_in(self, node: int) -> float:
        """Seconds until a call ``node`` makes now answers; :class:`TargetError` if it fails."""
        now = self.sim.now
        if now < self.fail_until:
            raise TargetError("the simulated Hub fails (503)", transient=True)
        if now < self.limited_until:
            raise TargetError("the simulated Hub says 429", transient=True, retry_after=self.limited_until - now)
        return max(HUB_LATENCY, self.hang_until.get(node, -math.inf) - now + HUB_LATENCY)

    def commit(self, files: list[tuple[str, str]], parent: str | None, node: int, term: tuple[int, int] | None) -> str:
        """Commit ``files`` (path, sha256: the version, in 64 digits) on ``parent``; what the caller sees."""
        hold = self.hold_next.pop(node, 0.0)
        latency = self.answer_in(node) + hold
        if hold:  # (for the node, the Hub does not answer meanwhile: what the invariants excuse, as they do a hang)
            self.outages.append((self.sim.now, self.sim.now + latency, node))
            self.held.append((node, self.sim.now + latency, {path: int(sha) for path, sha in files}))
        outcome: list = []

        def apply() -> None:
            held = self.hang_until.get(node, -math.inf)
            if held > self.sim.now:  # (a hang that began while it was under way)
                self.sim.later(held - self.sim.now, apply)
            else:
                outcome.append(self._apply(files, parent, node, term))
        self.sim.later(latency, apply)
        self.sim.sleep(latency)
        while not outcome:
            self.sim.sleep(max(self.hang_until.get(node, -math.inf) - self.sim.now, 0.01))
        if isinstance(outcome[0], TargetError):
            raise outcome[0]
        if node in self.time_out_next:
            self.time_out_next.discard(node)
            raise TargetError("the simulated Hub: read timed out", transient=True, timed_out=True)
        return outcome[0]

    def _apply(self, files: list[tuple[str, str]], parent: str | None, node: int, term: tuple[int, int] | None):
        if parent is not None and parent != str(self.head):
            return TargetError("the simulated Hub: 412, the parent is not the head", transient=True)
        versions = {path: int(sha) for path, sha in files}
        for path, version in versions.items():
            if version < self.files.get(path, 0):
                self.sim.problem(f"a commit took {path} back from version {self.files[path]} to {version}")
        terms = [a.term for a in self.applied if a.term is not None and term is not None and a.term[0] == term[0]]
        if term is not None and terms and term < terms[-1]:
            self.sim.problem(f"a commit of term {term[1]} applied after one of term {terms[-1][1]} (store {term[0]})")
        self.head += 1
        self.files.update(versions)
        last = any(version == self.sim.nodes[int(path[1:].split("/")[0])].last for path, version in versions.items())
        self.applied.append(Applied(self.sim.now, node, term, versions, last))
        return str(self.head)


class Target:
    """What a node's targets do at the simulated Hub (its own, and its leader's)."""

    prefix, key, min_interval, kind, repo_id = "", "sim", SPACING, "hub", "sim/repo"
    job_xet_token = None

    def __init__(self, hub: Hub, node: Node) -> None:
        self.hub, self.node = hub, node

    def parent(self) -> str:
        self.hub.sim.sleep(self.hub.answer_in(self.node.number))
        return str(self.hub.head)

    def preupload(self, pieces) -> list[UploadedFile]:
        return [UploadedFile(p.path, p.sha256, p.size) for p in pieces]

    def commit_uploaded(self, files: Sequence[UploadedFile], message: str, parent: str | None = None) -> str:
        job = self.node.job
        assert job is not None
        return self.hub.commit([(f.path, f.sha256) for f in files], parent, self.node.number,
                               (job.leader.store.address.port, job.leader.term))

    def behind(self, files: Sequence[UploadedFile], revision: str | None) -> dict[str, str]:
        self.hub.sim.sleep(self.hub.answer_in(self.node.number))  # (its files now: newer than at ``revision``, if any)
        return {f.path: "newer at the head" for f in files if self.hub.files.get(f.path, -1) > int(f.sha256)}

    def verify_uploaded(self, files: Sequence[UploadedFile]) -> dict[str, str]:
        return {f.path: "not at the head" for f in files if self.hub.files.get(f.path) != int(f.sha256)}

    def commit(self, pieces, message: str) -> str:
        parent = self.parent()
        return self.hub.commit([(p.path, p.sha256) for p in pieces], parent, self.node.number, None)

    def xet_write_token(self, fresh_for: float) -> None:
        return None

    def trusts_cas(self, cas_url: str) -> bool:
        return False


class NoXet:
    """The leader's Xet token sharing, off (its thread is not the simulation's)."""

    def share(self) -> None:
        pass


@dataclass
class Node:
    number: int
    made: int = 0  # the newest version of its file its ranks wrote
    landed: int = 0  # the newest its uploader knows committed
    last: int = -1  # its last version (set at its end)
    alive: bool = True
    preempted: float | None = None  # when it was signalled
    cut_short: bool = False  # SIGKILLed before its preemption deadline: no grace, its last records go with its disk
    paused_until: float = -math.inf
    skew: float = 0.0  # its wall clock's error (s)
    done: bool = False
    job: JobTarget | None = None
    actors: list[Actor] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"n{self.number}/events"


class Sim:
    def __init__(self, seed: int, nodes: int | None, leader: type[Leader], member: type[JobTarget],
                 successors: bool = False) -> None:
        self.rng, self.leader, self.member, self.successors = random.Random(seed), leader, member, successors
        self.now = 0.0
        self.queue: list = []
        self._order = itertools.count()
        self.cut_until: dict[int | None, float] = {}  # node -> until when its calls to the job's store hang (``store-cut``)
        self.places = {MAIN: Place()}  # the job's store, and the successor stores the nodes serve
        self.ports = itertools.count(2)
        self.budget = make_budget(COMMITS_PER_HOUR).scaled(WINDOWS)
        self.hub = Hub(self)
        self.nodes = [Node(n) for n in range(nodes or self.rng.randint(2, 4))]
        self.current: Actor | None = None
        self.main = greenlet.getcurrent()  # the simulation's own: every node's threads switch back to it
        self.crashes: list[str] = []
        self.problems: list[str] = []
        self.faults: list[str] = []
        self.struck: list[tuple[str, int]] = []  # (kind, node) of each fault drawn, as the faults say them
        self.stuck_since: dict[int, float] = {}  # node -> since when it leads with its rounds skipped (its term elsewhere)
        self.leaders: list[Leader] = []  # every uploader's leader (its lease), restarted ones' included

    # -- the turn --------------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """The running thread waits ``seconds`` of virtual time: the turn goes back to the simulation."""
        actor = self.current
        assert actor is not None and greenlet.getcurrent() is actor.glet, "sleep outside the simulation's turn"
        actor.naps += 1
        self._push(self.now + max(seconds, 1e-3), "actor", (actor, actor.naps))
        self.current = None
        self.main.switch()
        if actor.killed:
            raise Killed

    def later(self, delay: float, call: Callable[[], None]) -> None:
        self._push(self.now + delay, "call", call)

    def _push(self, at: float, kind: str, payload) -> None:
        heapq.heappush(self.queue, (at, next(self._order), kind, payload))

    def _resume(self, actor: Actor) -> None:
        self.current = actor
        began = time.monotonic()
        actor.glet.switch()
        if time.monotonic() - began > 60:  # (a wait on something real: it holds every thread up, not only its own)
            raise RuntimeError(f"{actor.name} kept the turn for 60 s: it waits on something not simulated")

    def step(self) -> None:
        self.now, _, kind, payload = heapq.heappop(self.queue)
        if kind == "call":
            payload()
            return
        actor, nap = payload
        if actor.killed or actor.done or nap != actor.naps:
            return
        if actor.node.paused_until > self.now:
            self._push(actor.node.paused_until, "actor", payload)
            return
        self._resume(actor)

    def wake(self, actor: Actor) -> None:
        """End ``actor``'s sleep now (a signal: the uploader's loop takes it at once)."""
        self._push(self.now, "actor", (actor, actor.naps))

    def spawn(self, node: Node, name: str, body: Callable[[], None], delay: float = 0.0) -> None:
        actor = Actor(self, node, f"node {node.number} {name}", body)
        node.actors.append(actor)
        self._push(self.now + delay, "actor", (actor, 0))

    def problem(self, text: str) -> None:
        self.problems.append(f"t={self.now:.1f} {text}")

    # -- the nodes -------------------------------------------------------------------------------
    def start(self, node: Node, delay: float) -> None:
        """A node's uploader starts: its job target (real), its lease's and its rounds' threads, its loop."""
        store = Store(self, node=node.number)
        target = Target(self.hub, node)
        leader_target: LeaderTarget = target  # (checked here: the ignore below is for the node's own target)
        job = self.member(target, leader_target,  # type: ignore[arg-type]  # (the simulated Hub: neither a repository nor a bucket)
                        store, node.number, len(self.nodes), wait=min(TIMING.offer_wait, CALL_BOUND / 3),
                        spacing=SPACING / WINDOWS, budget=self.budget, commit_every=COMMIT_EVERY, call_bound=CALL_BOUND,
                        timing=TIMING, clock=lambda: self.now, wall=lambda: 1.7e9 + self.now + node.skew, sleep=self.sleep)
        job.store_seen = True
        leader = job.leader
        leader.__class__ = self.leader  # (a test hands in one broken on purpose)
        self.leaders.append(leader)
        leader._stop, leader._round_lock, leader.xet = SimEvent(self), SimLock(self), NoXet()  # type: ignore[assignment]
        node.job, node.alive = job, True
        slot = successor.successor_slot(node.number, len(self.nodes))
        if slot is not None and self.successors:  # (as JobTarget.start has it)
            job.successor = SuccessorHost(self, node, store, slot)
            job.successor.start()
        self.spawn(node, "lease", leader._keep_lease, delay)
        self.spawn(node, "rounds", leader._run, delay + self.rng.uniform(0, TIMING.poll))
        self.spawn(node, "uploader", lambda: self._upload(node), delay + self.rng.uniform(0, COMMIT_EVERY))

    def _upload(self, node: Node) -> None:
        """The uploader's loop, as far as the job sees it: commit the newest version, until the last landed."""
        job = node.job
        assert job is not None
        failures = 0
        while True:
            if node.last < 0 and self.now >= WORK:
                node.last = node.made = node.made + 1
            elif node.last < 0:
                node.made += 1
            job.closing = node.last >= 0  # (a node started again after its end began: its last records)
            version = node.made
            piece = Piece(path=node.path, size=version * 100, sha256=f"{version:064d}", source="")
            try:
                job.commit([piece], "sim")
            except Deferred as exc:
                self.sleep(max(exc.retry_after or 0.0, 0.01))
                continue
            except TargetError:
                failures += 1
                self.sleep(1.0 if node.preempted is not None else min(2.0 ** failures, 60.0))  # (signalled: until its deadline)
                continue
            failures = 0
            node.landed = max(node.landed, version)
            if node.landed == node.last:
                node.done = True
                job.stop()  # (as the uploader's loop does at its end)
                return
            if node.preempted is None:  # (signalled: its last records go at once, as the loop's schedule has it)
                self.sleep(self._next_turn(job))

    def _next_turn(self, job: JobTarget) -> float:
        """Seconds to this node's next regular commit, as its uploader's schedule has them (:func:`pacing`)."""
        config = UploadConfig(kind="hub", prefix="", commit_every=COMMIT_EVERY, nodes=len(self.nodes),
                              node_rank=job.node, commits_per_hour=COMMITS_PER_HOUR)
        interval, phase, _ = pacing(job.situation(config))
        return interval if phase is None else until_turn(interval, phase, job.wall(), min(interval, COMMIT_EVERY))

    def kill(self, node: Node) -> None:
        node.alive = False
        if node.job is not None and node.job.successor is not None:  # (its process served it)
            self.places[node.job.successor.address].state = "gone"
        for actor in node.actors:
            actor.killed = True

    # -- the faults ------------------------------------------------------------------------------
    def fault(self, kind: str, number: int) -> None:
        rng, node = self.rng, self.nodes[number]
        # (a hang up to 5 minutes: long enough for another leader to commit meanwhile)
        length = rng.uniform(5, 300 if kind in ("hub-hang", "hub-hold") else 120)
        self.faults.append(f"t={self.now:.1f} {kind} node {number} for {length:.0f} s")
        self.struck.append((kind, number))
        if kind == "kill" and node.alive and not node.done:
            if node.preempted is not None and self.now < node.preempted + PREEMPTION_DEADLINE:
                node.cut_short = True  # (outside the preemption guarantee: a grace at least the deadline)
            self.kill(node)
            if rng.random() < 0.8:
                self.later(rng.uniform(1, 60), lambda: self.start(node, 0.0))
        elif kind == "preempt" and node.alive and not node.done and node.job is not None and node.preempted is None:
            node.preempted = self.now
            if node.last < 0:  # its ranks' last records: those written up to the signal
                node.last = node.made = node.made + 1
            node.job.hurry(self.now + PREEMPTION_DEADLINE)
            self.wake(node.actors[-1])  # (its uploader's loop takes the signal at once)
            self.later(GRACE, lambda: self.kill(node))
        elif kind == "clock-step":
            node.skew += rng.choice((-1, 1)) * rng.uniform(60, 3600)
        elif kind == "pause":
            node.paused_until = max(node.paused_until, self.now + length)
            self.hub.outages.append((self.now, self.now + length, number))
        elif kind == "store-hang" and self.places[MAIN].state is None:
            main = self.places[MAIN]
            main.state = "hang"
            self.later(length, lambda: setattr(main, "state", None) if main.state == "hang" else None)
        elif kind == "store-cut":
            self.cut_until[number] = max(self.cut_until.get(number, -math.inf), self.now + length)
        elif kind == "store-gone":
            self.places[MAIN].state = "gone"
        elif kind == "lost-answer" and node.job is not None:
            store = node.job.store
            assert isinstance(store, Store)
            store.lose = True
        elif kind == "hub-hang":
            self.hub.hang_until[number] = max(self.hub.hang_until.get(number, -math.inf), self.now + length)
            self.hub.outages.append((self.now, self.now + length, number))
        elif kind == "hub-timeout":
            self.hub.time_out_next.add(number)
        elif kind == "hub-hold":
            self.hub.hold_next[number] = length
        elif kind == "hub-fail":
            self.hub.fail_until = max(self.hub.fail_until, self.now + length)
            self.hub.outages.append((self.now, self.now + length, None))
        elif kind == "hub-429":
            self.hub.limited_until = max(self.hub.limited_until, self.now + length)
            self.hub.outages.append((self.now, self.now + length, None))

    def watch_leaders(self) -> None:
        """Progress: a node that holds the lease while its rounds return at once (its term was taken on a store its
        connection has since left) leads nobody; past two lease staleness times, the job has a stuck leader."""
        for node in self.nodes:
            leader = node.job.leader if node.job is not None and node.alive else None
            if leader is None or not leader.leading or leader.store.moves == leader.term_moves:
                self.stuck_since.pop(node.number, None)
                continue
            since = self.stuck_since.setdefault(node.number, self.now)
            if self.now - since > 2 * TIMING.lease_stale:
                self.problem(f"node {node.number} leads with its rounds skipped since t={since:.1f} (its term is on "
                             "a store it left)")
                self.stuck_since[node.number] = math.inf  # (said once)

    def leading_node(self) -> int:
        leading = [n.number for n in self.nodes if n.alive and n.job is not None and n.job.leader.leading]
        return leading[0] if leading else self.rng.randrange(len(self.nodes))

    # -- the end ---------------------------------------------------------------------------------
    def check_end(self) -> None:
        for leader in self.leaders:  # (a tick swallows what nobody expected, so that the lease lives on: logged)
            if leader.tick_errors:
                self.problem(f"node {leader.node}'s lease tick raised an error nobody expected {leader.tick_errors} time(s) "
                             "(the log has it)")
        for node in self.nodes:
            if (node.preempted is not None and not node.cut_short and self.hub.files.get(node.path, 0) < node.last
                    and self.hub.answered(node.number, node.preempted, node.preempted + PREEMPTION_DEADLINE) >= 5.0
                    and not self.hub.held_past(node.number, node.path, node.last, node.preempted + PREEMPTION_DEADLINE)):
                self.problem(f"node {node.number}'s last records at its preemption (version {node.last}) are not at the "
                             f"Hub (it holds {self.hub.files.get(node.path, 0)})")
            if node.alive and not node.done:
                self.problem(f"node {node.number} never landed its last version ({node.last}; landed {node.landed})")
            held = self.hub.files.get(node.path, 0)
            if node.alive and node.done and held != node.last:
                self.problem(f"node {node.number}'s last version {node.last} is not at the Hub (it holds {held})")
        window, most = self.budget.commit_window_s, MARGIN * self.budget.commits_per_hour
        times = [a.at for a in self.hub.applied if not a.last]
        for i, start in enumerate(times):
            inside = sum(1 for t in times[i:] if t < start + window)
            if inside > most:
                self.problem(f"{inside} commits in the {window:.0f} s from t={start:.1f} (twice the budget: {most:.0f})")
                break

    def close(self) -> None:
        """Every thread ends: those still waiting are told they were killed."""
        for node in self.nodes:
            for actor in node.actors:
                if not actor.done:
                    actor.killed = True
                    self.current = actor
                    actor.glet.switch()


@dataclass
class Result:
    seed: int
    nodes: int
    faults: list[str]
    problems: list[str]
    commits: int
    moves: int = 0  # the nodes' moves to a successor store
    terms: int = 0  # the highest leader's term any node took
    struck: list[tuple[str, int]] = field(default_factory=list)  # (kind, node) of each fault

    def had(self, kind: str, node: int | None = None) -> bool:
        """Whether a fault of ``kind`` (on ``node``) was drawn: a test proves its scenario with it."""
        return any(k == kind and node in (None, n) for k, n in self.struck)

    def __str__(self) -> str:
        return (f"seed {self.seed} ({self.nodes} nodes, {self.commits} commits; faults: {'; '.join(self.faults) or 'none'}): "
                + " | ".join(self.problems))


def run(seed: int, kinds: tuple[str, ...] = KINDS, faults: int | None = None, nodes: int | None = None,
        leader: type[Leader] = Leader, member: type[JobTarget] = JobTarget, successors: bool = False) -> Result:
    """One job under seed ``seed``'s faults (of ``kinds``; ``faults`` of them, by default 0-4), to its end; ``leader``,
    ``member``: the nodes' (a test hands in one broken on purpose); ``successors``: node 1 serves a successor
    store (without: a node that never heard of one, or none answers); ``scripted``: faults ``(at, kind, node)`` too."""
    sim = Sim(seed, nodes, leader, member, successors)
    rng = sim.rng
    try:
        for node in sim.nodes:
            sim.start(node, rng.uniform(0, 2))
        for _ in range(rng.randint(0, 4) if faults is None else faults):
            kind = rng.choice(kinds)
            by_leader = rng.random() < 0.5
            sim.later(rng.uniform(5, WORK), functools.partial(_strike, sim, kind, by_leader))
        horizon = WORK + 4 * sim.budget.commit_window_s
        while sim.queue and sim.now < horizon and not sim.crashes:
            if all(n.done or not n.alive for n in sim.nodes) and sim.now > WORK:
                break
            sim.step()
            sim.watch_leaders()
        sim.check_end()
    finally:
        sim.close()
    moves = sum(node.job.moves for node in sim.nodes if node.job is not None)
    terms = max((node.job.leader.term for node in sim.nodes if node.job is not None), default=0)
    return Result(seed, len(sim.nodes), sim.faults, sim.crashes + sim.problems, len(sim.hub.applied), moves,
                  terms, sim.struck)


def _strike(sim: Sim, kind: str, by_leader: bool) -> None:
    """A fault of ``kind`` starts: on the node that leads then (``by_leader``), else on any node."""
    sim.fault(kind, sim.leading_node() if by_leader else sim.rng.randrange(len(sim.nodes)))


def sweep(seeds: range, kinds: tuple[str, ...] = KINDS, faults: int | None = None, leader: type[Leader] = Leader,
          member: type[JobTarget] = JobTarget, successors: bool = False) -> list[Result]:
    """The seeds' results that broke an invariant."""
    return [result for result in (run(seed, kinds, faults, leader=leader, member=member, successors=successors)
                                  for seed in seeds) if result.problems]
