"""A node's place in a multi-node job: its connection to the job's store, its leader's thread, its moves between stores,
and its life there (announced, started, stopped, gone, lingering for a successor store's users).

Apart from :mod:`.member` (how a node's commits go): that path reads this state at every step, while what is here
changes at a node's start, its stop, a signal and a store's failure.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from ...config import UploadConfig, commit_interval
from ...state.piece import Piece
from ...targets import Target
from ...timing import (
    HUB_COMMIT_EVERY_S,
    PREPARED_WAIT_S,
    STORE_RETRY_S,
    JobTiming,
)
from .joining import announce, count_up, other_folders, prepared_by_node_0
from .leader import Leader, LeaderTarget, SharedTarget
from .moves import Moves
from .offers import Offers
from .own_commits import OwnCommits
from .pacing import Situation, Store
from .plan import Budget, Plan, make_budget, make_plan
from .protocol import Skipped, counter_value, prepared_value
from .store import CoordinationStore, StoreAddress, StoreError
from .successor import SuccessorHost, successor_slot
from .xet_share import SharedXetToken

logger = logging.getLogger("hf_mpwriter.uploader")

#: While the leader commits (and verifies) for a job, its nodes' audits together come as often as this many nodes'
#: would (:meth:`JobNode.audit_every`): a thousand nodes auditing every interval would spend the job's API budget.
JOB_AUDITORS = 8
OWN_COMMITS = ("this node commits its files itself (it offers them to the job's leader again at its first commit "
               f"{STORE_RETRY_S:.0f} s or more after this)")


def store_prefix(address: StoreAddress, target_key: str | None = None) -> str:
    """The keys of one job and one target (a job may log to several repositories); the job's own without one."""
    job = f"hf_mpwriter/{address.job_id}"
    return job if target_key is None else f"{job}/{_key_hash(target_key)}"


def _key_hash(target_key: str) -> str:
    return hashlib.sha1(target_key.encode()).hexdigest()[:16]


class JobNode(Target):
    """A node's target in a job with a store, all but its commits (:class:`~.member.JobTarget` adds them): preparing,
    reading and auditing are its own target's (``inner``)."""

    def __init__(self, inner: SharedTarget, leader_target: LeaderTarget, store: CoordinationStore, node: int, nodes: int,
                 wait: float, spacing: float, prepared_wait: float = PREPARED_WAIT_S, budget: Budget | None = None,
                 commit_every: float = HUB_COMMIT_EVERY_S, call_bound: float | None = None,
                 files_hint: int = 1, timing: JobTiming = JobTiming(), clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        """``clock``, ``wall``, ``sleep``: this host's (a simulation hands in virtual ones: ``tests/commitsim.py``)."""
        self.inner, self.prefix = inner, inner.prefix
        self.clock, self.wall = clock, wall
        self.timing = timing
        self.key, self.min_interval = inner.key, inner.min_interval
        self.store, self.node, self.wait, self.prepared_wait = store, node, wait, prepared_wait
        self.key_hash = _key_hash(inner.key)
        self.split_from: str | None = None  # another folder of this job's, that other nodes log to
        #: This uploader's number among its node's, from the store (:meth:`_announce`); 0 until it said it.
        self.incarnation = 0
        call_bound = call_bound if call_bound is not None else 6 * wait
        self._waiting_since: float | None = None  # monotonic: the first offer of data not landed yet
        self._verified: tuple | None = None  # the pieces the leader verified at its last commit of ours
        self._deferred: tuple | None = None  # the pieces last put off for the budget: known not committed
        self.budget = budget or make_budget()
        self.kind = inner.kind
        self.commit_every, self.spacing = commit_every, spacing
        #: This node's files, as far as its launcher says (a file per rank), for its own plan before the leader's.
        self.files_hint = max(1, files_hint)
        self.plan: Plan | None = None  # the leader's, from its last answer
        #: ``(phase, own phase)`` of this node's slots on its own clock, from the leader's last answer.
        self._phases: tuple[float, float] | None = None
        #: Nothing listens at the store's address any more: nothing coordinates the nodes (see the module).
        self.store_gone = False
        #: The store answered this node once, or something listened at its address: from then on, nothing listening
        #: means gone, not "not there yet" (an ``env://`` store rank 0 creates later, which every node of a big job
        #: meets).
        self.store_seen = False
        #: Closing (glossary), set by the uploader's loop: the leader commits its offers at its next round whatever
        #: the budget.
        self.closing = False
        self.leader = self._make_leader(leader_target, nodes, call_bound)
        #: A claimed offer's answer is waited for half the bound of a call to the Hub: the node's whole commit stays
        #: within it.
        self.offers = Offers(store, node, wait, call_bound / 2, timing, self.leader.malformed, clock, sleep)
        self.mode = "job"  # "job": through the leader; "node": the store failed, this node commits itself
        self.why: str | None = None  # why this node last committed its files itself (for ``status``)
        self.through_leader = 0  # commits of this node's files the job's leader made (``status``)
        self.own = OwnCommits(self.budget, self.kind, clock)
        self._store_rests_until = 0.0  # monotonic: the store failed; this node does not ask it before then
        #: Signalled, this node commits itself from now on (why): its newest files, once, as its last (:meth:`_last_alone`).
        self._alone: str | None = None
        self._before_signal = False  # the pieces being committed were taken before the signal came
        self._announced = False  # our incarnation is in the store
        self._announced_in: set[StoreAddress] = set()  # the stores this uploader announced itself in (:meth:`_announce`)
        self.moving = Moves(self.store, self.node, nodes, self.timing, self.clock, self.leader.malformed)
        #: The leader's shared Xet token, set before prepare: the target's Xet content takes it then.
        inner.job_xet_token = self.xet = SharedXetToken(store, self.store_usable, timing.xet_wait, timing.poll,
                                                         self.leader.malformed, lambda cas: inner.trusts_cas(cas))

    def _make_leader(self, leader_target: LeaderTarget, nodes: int, call_bound: float) -> Leader:
        """This node's leader (not started)."""
        leader = Leader(leader_target, self.store, self.node, nodes, self.spacing, self.budget, self.commit_every,
                        call_bound, self.timing, wall=self.wall, clock=self.clock)
        leader.xet.source = self.inner.xet_write_token  # this node's own token is the one it shares, leading
        leader.xet.trusts = lambda cas: self.inner.trusts_cas(cas)  # (the CAS its own Hub names: the one it checks)
        return leader

    @property
    def malformed(self) -> Skipped:
        """The store's values this node skipped (one count for the node: its leader's and its own reads)."""
        return self.leader.malformed

    @property
    def successors(self) -> list[StoreAddress]:
        return self.moving.successors

    @property
    def moves(self) -> int:
        return self.moving.count

    @property
    def successor(self) -> SuccessorHost | None:
        """The successor store this node hosts, if it does."""
        return self.moving.host

    @successor.setter
    def successor(self, host: SuccessorHost | None) -> None:
        self.moving.host = host

    @property
    def leading(self) -> bool:
        """Whether this node's uploader holds the job's lease (:class:`~.protocol.Seat`)."""
        return self.leader.leading

    def members(self) -> list[int]:
        """The nodes that announced themselves in the store."""
        return self.leader.members()

    @property
    def repo_id(self) -> str | None:
        """The repository or bucket as the Hub named it (``name`` alone: with the namespace), for the logdir's
        ``target.json``: what ``view`` and ``status`` read on every node."""
        return self.inner.repo_id

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.inner.description

    @property
    def reader_url(self) -> str:  # type: ignore[override]
        return self.inner.reader_url

    def job_info(self) -> dict:
        """For ``status``: how this node's commits are made."""
        address = self.store.address
        plan = self.plan_now(1)
        return {"job_id": address.job_id, "store": f"{address.host}:{address.port}", "node": self.node,
                "nodes": self.leader.nodes, "mode": self.mode, "why": self.why, "store_gone": self.store_gone,
                "leading": self.leader.leading, "handed_over": self.leader.handed_over, "split_from": self.split_from,
                "planned": self.plan is not None, "interval": plan.interval, "own_every": plan.own_every(),
                "age_bound": plan.age_bound(),
                "commits_per_hour": self.budget.commits_per_hour if self.kind == "hub" else None,
                "api_requests": self.budget.requests_per_5min, "malformed": self.leader.malformed.total,
                "malformed_kinds": dict(self.leader.malformed.kinds),
                "through_leader": self.through_leader, "own_commits": self.own.made, "taken_back": self.offers.taken_back,
                "successors": len(self.successors), "moves": self.moves,
                "on_successor": self.store.address != self.moving.home,
                "hosts_successor": None if self.successor is None else self.successor.slot,
                "leases": self.leader.leases, "leader_commits": self.leader.commits,
                # (the Xet write tokens this node fetched: the leader's is the one the job shares)
                "xet_tokens": self.inner.xet_tokens}

    def store_failed(self, exc: StoreError) -> None:
        """The store failed: this node's next commits are its own, and the store is asked again in
        ``timing.store_retry`` (not at every interval; one that comes back is joined)."""
        self.why = str(exc)
        self._store_rests_until = self.clock() + self.timing.store_retry
        self._announced = False  # a store that comes back may have come back empty (a new host process)

    def _moved(self) -> None:
        """Its connection moved to another store (:mod:`.moves`): asked at once, announced there anew."""
        self._store_rests_until, self._announced, self.store_gone = 0.0, False, False

    def store_usable(self) -> bool:
        """Whether to ask the store now (not gone, not resting after a failure: :meth:`store_failed`)."""
        return not self.store_gone and self.clock() >= self._store_rests_until

    def situation(self, config: UploadConfig) -> Situation:
        """What decides this node's commit times (:func:`.pacing.pacing`): the leader's plan once it said one (also
        while this node commits itself: :meth:`_own_turn` gates those), the job's start before, its own slots once the
        store is gone."""
        store = Store.GONE if self.store_gone else Store.PLANNED if self.plan is not None else Store.STARTING
        return Situation(commit_every=self.commit_every, rate_interval=commit_interval(config), nodes=self.leader.nodes,
                         node=self.node, kind=self.kind, budget=self.budget, files=self.files_hint, spacing=self.spacing,
                         store=store, plan=self.plan, phase=None if self._phases is None else self._phases[0],
                         leading=self.leading, job_run_every=min(self.commit_every, self.timing.job_run_wait))

    def hurry(self, deadline: float) -> None:
        """The uploader was signalled and must be gone by ``deadline`` (monotonic): every wait on the job ends sooner
        (:meth:`JobStore.until`). A leader's lease is let go at exit, and another node's takes it."""
        self.store.hurry(deadline)

    def start(self) -> None:
        """This uploader was elected: say so in the store (older incarnations' offers are ignored), lead if due."""
        if self.clock() >= self._store_rests_until and self._announce():  # (not when for_job found no store)
            self._check_folders()
        self.leader.start()
        slot = successor_slot(self.node, self.leader.nodes)
        if slot is not None and self.successor is None:
            try:
                self.successor = SuccessorHost(self.store, slot, self.timing.successor_copy, self.timing.poll)
            except (OSError, RuntimeError) as exc:  # (no free port, no route to the job's store's host)
                logger.warning("job: this node could not host successor store %d: %s", slot, exc)
            else:
                self.successor.start()

    def _check_folders(self) -> None:
        """Say it at start when this job's nodes log to different folders (:func:`.joining.other_folders`)."""
        try:
            self.split_from = other_folders(self.store.scoped(store_prefix(self.store.address)), self.node,
                                            self.key_hash, self._folder())
        except (StoreError, ValueError) as exc:
            logger.debug("the job's folders could not be compared: %s", exc)
            return
        if self.split_from:
            logger.error("this job's nodes log to different folders: node %d to %s, %s; each folder gets a leader "
                         "and a run of its own. Give every node's logdir the same name (node-local logdirs: the same "
                         "path on every node)", self.node, self._folder(), self.split_from)

    def _folder(self) -> str:
        return f"{self.inner.prefix or '/'} of {self.inner.description}"

    def _announce(self) -> bool:
        """Our incarnation in the store (:func:`.joining.announce`), at the start and after a store failure (it may be
        new)."""
        if not self._announced:
            try:
                counted = self.incarnation == 0 or self._drawn_elsewhere()
                if counted:  # kept from now on, also if a later call fails: one more than any uploader of this node before
                    self.incarnation = count_up(self.store, f"incarnation/{self.node}")
                announce(self.store, self.node, self.incarnation, counted)
                self._announced_in.add(self.store.address)
                self._announced, self.store_gone, self.store_seen = True, False, True
            except StoreError as exc:  # said once, not at every retry of a store that never comes
                logger.log(logging.WARNING if self.why is None else logging.DEBUG, "%s; %s", exc, OWN_COMMITS)
                self.store_failed(exc)
        return self._announced

    def _drawn_elsewhere(self) -> bool:
        """Whether this uploader's number, drawn in another store (a successor, while the job's store did not answer),
        is this store's count already where it never announced itself: another uploader of this node drew the same
        number here, and the answers to that one's offers carry this one's offer numbers (the incarnation is their
        high part): read as this one's, its files would never land. A higher count here is a newer uploader's, or one
        this node cannot tell: its offers are then ignored here, and it commits itself."""
        return (self.store.address not in self._announced_in
                and self.store.add(f"incarnation/{self.node}", 0) == self.incarnation)

    def stop(self) -> None:
        until = min(self.clock() + self.timing.stop_wait, self.store.preemption)
        self._leave()
        if self.successor is not None:
            self.successor.stop(0.0)  # (its thread ends at its next pause; joined below within the same deadline)
        self.leader.stop()
        if self.successor is not None:
            self.successor.stop(max(0.0, until - self.clock()))

    def _leave(self) -> None:
        """Say in the store in use that this node's uploader exits (a successor store's host need not :meth:`linger`
        for it)."""
        if self.incarnation > 0 and not self.store_gone:  # (bounded calls, also while resting after a failure)
            try:
                self.store.set(f"left/{self.node}", counter_value(self.incarnation))
            except StoreError as exc:
                logger.debug("job: this node's exit not said in the store: %s", exc)

    def linger(self, stopped: Callable[[], bool]) -> None:
        """Once this node's uploader has exited: serve on the successor store it hosts while other nodes use it
        (:meth:`SuccessorHost.linger`), for ``timing.successor_linger`` at most, or until ``stopped()`` (a signal)."""
        if self.successor is not None and not self._hurried():
            self.successor.linger(self.node, self.leader.nodes, time.monotonic() + self.timing.successor_linger,
                                  self.timing.lease_stale / 2, stopped)

    def reset_client(self) -> None:
        self.inner.reset_client()

    def prepare(self) -> None:
        """Node 0 creates the repository (or bucket) and tags its card, then says the id the Hub resolved in the
        store; the other nodes take it from there instead of asking the Hub (at a thousand nodes, thousands of
        requests before the first commit), only where it is the one their own configuration names
        (:func:`~.joining.same_target`). A node that hears nothing within ``prepared_wait``, or another id, prepares
        its target itself."""
        resolved = None if self.node == 0 else self._prepared_by_node_0()
        if resolved is None:
            self.inner.prepare()
            if self.node == 0:
                try:
                    self.store.set("prepared", prepared_value(self.inner.repo_id))
                except StoreError as exc:
                    logger.info("job's store: %s (the other nodes prepare the target themselves)", exc)
        else:
            self.inner.prepared_elsewhere(resolved)
        self.leader.target.repo_id = self.inner.repo_id  # 'name' alone: the Hub completed it

    def _prepared_by_node_0(self) -> str | None:
        return prepared_by_node_0(self.store, self.prepared_wait, self.timing.poll, self.malformed,
                                  self.inner.repo_id, self._own_namespace)

    def _own_namespace(self) -> str | None:
        """The namespace a bare name is created in: this node's token's user (``whoami``); ``None`` where the Hub does
        not say."""
        try:
            name = self.inner.api.whoami().get("name")
        except Exception as exc:  # (never the answer or the token in a message: the type alone)
            logger.info("whoami failed (%s): this node prepares its target itself", type(exc).__name__)
            return None
        return name if isinstance(name, str) else None

    def read(self, path: str) -> bytes:
        return self.inner.read(path)

    def listing(self, folder: str) -> list[str]:
        return self.inner.listing(folder)

    def local_reads(self, pieces: Sequence[Piece]) -> int:
        return self.inner.local_reads(pieces)

    def audit_every(self, seconds: float) -> float:
        """While the leader commits for the job, ``nodes / JOB_AUDITORS`` times ``seconds``, at 0.5 to 1.5 times that
        by node rank (the nodes start together: their audits would come together too)."""
        if self.mode != "job" or self.leader.nodes <= JOB_AUDITORS:
            return seconds
        return seconds * self.leader.nodes / JOB_AUDITORS * (0.5 + (self.node + 0.5) / self.leader.nodes)

    def _hurried(self) -> bool:
        """Whether the uploader was signalled (:meth:`hurry`): its last records go now or never."""
        return self.store.preemption != float("inf")

    def plan_now(self, files: int) -> Plan:
        """The leader's last plan, or, before it said one, this node's own for ``files`` files a node."""
        return self.plan or self.own_plan(files)

    def own_plan(self, files: int) -> Plan:
        """The plan this node makes of the job's settings for ``files`` files a node (no leader's slowdown)."""
        return make_plan(self.budget, self.kind, self.leader.nodes, files, self.commit_every, self.spacing)
