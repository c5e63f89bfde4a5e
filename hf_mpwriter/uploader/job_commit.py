"""One commit per interval for a whole multi-node job: every node uploads, one leader commits.

Without this, each node's uploader commits its own files, so a job's commits and Hub API requests
grow with its node count (the nodes take turns: :meth:`hf_mpwriter.config.UploadConfig.pacing`).
With the job's store (:mod:`hf_mpwriter.uploader.job_store`), only the last step of a node's cycle
changes (:class:`JobTarget`, the node's target). Its queue, snapshots, fence and audit are as before::

    node, at each cycle (the nodes cycle at the same wall-clock moments):
        send the content to the Hub's storage          (preupload: Xet, or LFS for a repository)
        offer the files in the store: path, sha256, size, Xet hash (metadata only, under its node rank)
        wait for the leader's answer: the commit id, or a refusal
        no answer within OFFER_WAIT_S: take the offer back, commit the files itself at its own slot
        of the job's budget (one node at a time), offering to the leader again meanwhile

    leader (a thread of every node's uploader; the one holding the store's lease acts):
        renew the lease; a lease nobody renewed for LEASE_STALE_S is taken over (compare_set)
        fix the parent (the head its last commit returned, or read it), then read the offers
        JOB_GATHER_S after a round's first offer: one commit (a bucket: one batch) of the oldest offers
        that fit in one (at most the budget's files), then one paths_info per 500 files to verify it,
        and answer every node with the commit and the job's plan (:mod:`.job_plan`: when each node
        offers, so that the job stays within its budget of commits and API requests at any size)
        offers the budget has no room for soon: answered with the time to offer again (``Deferred``)

Nothing depends on the leader for safety, only for cost. Every commit names its parent, fixed
*before* the offers are read: a node that takes its offer back (or finds it expired) commits only
after that, so a leader still holding the old offer is refused (412) or landed first with content
the node's own commit then extends. Offers carry their node's uploader incarnation: one from an
uploader that was replaced (stopped, then woken up) is ignored. The store failing at any step
leaves the node committing itself, and asking the store again :data:`STORE_RETRY_S` later: a store
that is not there yet when the uploader starts (an ``env://`` store rank 0 creates later) or that
comes back is joined then.

A Storage Bucket works the same way: the nodes send their files' content to the bucket's Xet
storage, offer them with their Xet hashes, and the leader writes them in one batch. A bucket has no
parent to fence with; a late write of a leader still holding an old offer makes a file older
(shorter), which the node's audit finds and sends again, as for any late bucket write
(:mod:`hf_mpwriter.targets.bucket`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Union

from ..config import UploadConfig
from ..errors import Deferred, TargetError
from ..state.piece import Piece
from ..targets import Target, target_for
from ..targets.base import UploadedFile
from ..targets.bucket import BucketTarget, batch_takes_xet_hashes
from ..targets.hub import HubTarget
from ..targets.xet_content import xet_usable
from ..timing import (
    HUB_COMMIT_EVERY_S,
    JOB_GATHER_S,
    LEADER_POLL_S,
    LEASE_STALE_S,
    OFFER_WAIT_S,
    PREPARED_WAIT_S,
    STORE_RETRY_S,
)
from .job_plan import (
    MAX_FILES_PER_COMMIT,  # noqa: F401 - named here by the tests and benchmarks
    MIN_FILES_PER_COMMIT,
    Books,
    Budget,
    Plan,
    make_budget,
    make_plan,
)
from .job_store import MAX_VALUE_BYTES, JobStore, StoreAddress, StoreError, store_address

logger = logging.getLogger("hf_mpwriter.uploader")

#: The leader answers an offer it cannot write within this long (the budget, a 429) with the time to offer
#: again, so that its node does not wait, give up and commit itself.
DEFER_AFTER_S = OFFER_WAIT_S / 3
#: While the leader commits for a job, its nodes' periodic audits together come about as often as this many
#: nodes' would (each node audits ``nodes / JOB_AUDITORS`` times less often): the leader verifies every
#: commit it makes, and a thousand nodes auditing every interval would spend the job's Hub API budget.
JOB_AUDITORS = 8
#: Clocks of the nodes may differ this much: a node commits an expired offer itself only this long
#: after the leader stops taking it.
CLOCK_MARGIN_S = 5.0
WITHDRAWN = b"-"
OWN_COMMITS = ("this node commits its files itself (it offers them to the job's leader again at its first commit "
               f"{STORE_RETRY_S:.0f} s or more after this)")

#: The targets a job's leader can write for its nodes: a repository (one commit, by sha256) or a
#: Storage Bucket (one batch, by Xet hash).
SharedTarget = Union[HubTarget, BucketTarget]  # (Python 3.9: no ``|`` between classes at run time)


def store_prefix(address: StoreAddress, target_key: str) -> str:
    """The keys of one job and one target (a job may log to several repositories)."""
    return f"hf_mpwriter/{address.job_id}/{hashlib.sha1(target_key.encode()).hexdigest()[:16]}"


class JobTarget(Target):
    """A node's target (repository or bucket) in a job with a store: its commits go through the job's
    leader. Everything else (preparing, reading, auditing) is the node's own target's (``inner``)."""

    def __init__(self, inner: SharedTarget, leader_target: SharedTarget, store: JobStore, node: int, nodes: int,
                 wait: float, spacing: float, prepared_wait: float = PREPARED_WAIT_S, budget: Budget | None = None,
                 commit_every: float = HUB_COMMIT_EVERY_S) -> None:
        self.inner, self.prefix = inner, inner.prefix
        self.key, self.min_interval = inner.key, inner.min_interval
        self.store, self.node, self.wait, self.prepared_wait = store, node, wait, prepared_wait
        self.incarnation = time.time_ns()
        self._seq = 0
        self._offered_at: float | None = None  # wall time of our last offer a leader may still take
        self._verified: tuple | None = None  # the pieces the leader verified at its last commit of ours
        self._deferred: tuple | None = None  # the pieces last put off for the budget: known not committed
        self.budget = budget or make_budget()
        self.kind = "bucket" if isinstance(inner, BucketTarget) else "hub"
        self.commit_every, self.spacing = commit_every, spacing
        self.plan: Plan | None = None  # the leader's, from its last answer
        self._own_last: float | None = None  # wall time of this node's last commit of its own
        self._drain_said = False
        #: Every writer of the node is gone (set by the uploader's loop): its offers are its last records,
        #: which the leader commits at its next round whatever the budget (the job is ending).
        self.closing = False
        self.leader = Leader(leader_target, store, node, nodes, spacing, self.budget, commit_every)
        self.mode = "job"  # "job": through the leader; "node": the store failed, this node commits itself
        self.why: str | None = None  # why this node last committed its files itself (for ``status``)
        self._store_rests_until = 0.0  # monotonic: the store failed; this node does not ask it before then
        self._announced = False  # our incarnation is in the store

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
                "nodes": self.leader.nodes, "mode": self.mode, "why": self.why,
                "planned": self.plan is not None, "interval": plan.interval, "own_every": plan.own_every(),
                "commits_per_hour": self.budget.commits_per_hour if self.kind == "hub" else None,
                "api_requests": self.budget.requests_per_5min}

    def store_failed(self, exc: StoreError) -> None:
        """The store failed: this node's next commits are its own, and the store is asked again in
        :data:`STORE_RETRY_S` (one not there yet, or gone, is not asked at every interval; one that
        comes back is joined)."""
        self.why = str(exc)
        self._store_rests_until = time.monotonic() + STORE_RETRY_S
        self._announced = False  # a store that comes back may have come back empty (a new host process)

    def pacing(self, config: UploadConfig) -> tuple[float, float]:
        """``(interval, phase)``: this node's slot in the leader's plan (:mod:`.job_plan`), which keeps the
        job within its budget at any size; before the leader has said one, every node at the same
        wall-clock moments (the leader then plans). Also while this node commits itself: it offers to the
        leader again at its next slot, and its own commits have a gate of their own (:meth:`_own_turn`)."""
        if self.plan is not None:
            return self.plan.pacing(self.node)
        return config.commit_every, 0.0

    def hurry(self, deadline: float) -> None:
        """The uploader was signalled and must be gone by ``deadline`` (monotonic): from now on a wait for
        the leader or the store, also one already running, leaves this node the rest to take its offer back
        and commit its files itself (:meth:`JobStore.until`). The leader's own uploader may be going too:
        its lease is let go at exit, and another node's takes it."""
        self.store.hurry(deadline)

    def start(self) -> None:
        """This uploader was elected: say so in the store (older incarnations' offers are ignored), lead if due."""
        if time.monotonic() >= self._store_rests_until:  # (not when for_job just found no store)
            self._announce()
        self.leader.start()

    def _announce(self) -> bool:
        """Our incarnation in the store (offers of the uploader this one replaced are then ignored):
        at the start, and again before the first offer after a store failure (the store may be a new
        one, empty). Never over a newer uploader's: an uploader that was stopped and woke up again
        must not make its successor's offers look stale."""
        if not self._announced:
            key = f"incarnation/{self.node}"
            try:
                current = self.store.get(key) or b""
                if int(current or 0) < self.incarnation:
                    self.store.compare_set(key, current, str(self.incarnation).encode())
                # The node's keys exist from now on (created if missing, else left as they are): the leader
                # reads every member's keys in one batch, and a batch waits for a missing key.
                self.store.compare_set(f"offer/{self.node}", b"", WITHDRAWN)
                self.store.compare_set(f"answer/{self.node}", b"", b"{}")
                self.store.append("members", f"{self.node},".encode())
                self._announced = True
            except StoreError as exc:  # said once, not at every retry of a store that never comes
                logger.log(logging.WARNING if self.why is None else logging.DEBUG, "%s; %s", exc, OWN_COMMITS)
                self.store_failed(exc)
        return self._announced

    def stop(self) -> None:
        self.leader.stop()

    def reset_client(self) -> None:
        self.inner.reset_client()

    def prepare(self) -> None:
        """Node 0 creates the repository (or bucket) and tags its card, then says the id the Hub resolved
        in the store; the other nodes take it from there instead of asking the Hub themselves (at a
        thousand nodes, thousands of requests before the first commit). A node that hears nothing within
        ``prepared_wait`` (:data:`PREPARED_WAIT_S`; node 0's uploader not started, the store gone) prepares its
        target itself."""
        resolved = None if self.node == 0 else self._prepared_by_node_0()
        if resolved is None:
            self.inner.prepare()
            if self.node == 0:
                try:
                    self.store.set("prepared", self.inner.repo_id.encode())
                except StoreError as exc:
                    logger.info("job's store: %s (the other nodes prepare the target themselves)", exc)
        else:
            self.inner.prepared_elsewhere(resolved)
        self.leader.target.repo_id = self.inner.repo_id  # 'name' alone: the Hub completed it

    def _prepared_by_node_0(self) -> str | None:
        """The id node 0 resolved, once it says it (a few round trips a second at most), or ``None``."""
        started = time.monotonic()
        while time.monotonic() < self.store.until(started, self.prepared_wait):
            try:
                resolved = self.store.get("prepared")
            except StoreError:
                return None
            if resolved:
                return resolved.decode()
            time.sleep(LEADER_POLL_S)
        return None

    def read(self, path: str) -> bytes:
        return self.inner.read(path)

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """What the leader verified right after committing these very pieces needs no second look, nor
        do pieces put off for the budget (nobody committed them: at a thousand nodes, a look each would
        spend the job's API budget); anything else (the audit, a reconciliation) is asked of the Hub."""
        identity = _identity(pieces)
        if self._verified is not None and self._verified == identity:
            self._verified = None
            return {}
        if self._deferred is not None and self._deferred == identity:
            self._deferred = None
            return {p.path: "not committed: put off for the job's budget" for p in pieces}
        return self.inner.differences(pieces)

    def local_reads(self, pieces: Sequence[Piece]) -> int:
        return self.inner.local_reads(pieces)

    def audit_every(self, seconds: float) -> float:
        """While the leader commits (and verifies) for the job, this node audits ``nodes / JOB_AUDITORS``
        times less often, at 0.5 to 1.5 times that by node rank (the nodes start together: their audits
        would come together too)."""
        if self.mode != "job" or self.leader.nodes <= JOB_AUDITORS:
            return seconds
        return seconds * self.leader.nodes / JOB_AUDITORS * (0.5 + (self.node + 0.5) / self.leader.nodes)

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """Upload the content, offer it to the leader, and return its commit id; commit it ourselves
        when the leader does not answer in time or cannot take it."""
        if self._offered_at is not None:  # an earlier offer may still be in a store we cannot reach
            return self._commit_ourselves(pieces, message, "an earlier offer is still unresolved")
        if time.monotonic() < self._store_rests_until or not self._announce():
            return self._commit_ourselves(pieces, message, self.why or "the job's store failed")
        uploaded = self.inner.preupload(pieces)
        if uploaded is None:  # a regular (non-LFS) file travels in the commit itself; a bucket without Xet hashes
            return self._commit_ourselves(pieces, message, "its content cannot be committed by another node")
        self._seq = max(self._seq + 1, time.time_ns())
        at = time.time()
        last = self._hurried() or self.closing
        offer = json.dumps({"seq": self._seq, "incarnation": self.incarnation, "at": at, "last": last,
                            "files": [[f.path, f.sha256, f.size, f.xet_hash] for f in uploaded]}).encode()
        if len(offer) > MAX_VALUE_BYTES:  # not a store failure: this round has too many files for one value
            return self._commit_ourselves(pieces, message, f"{len(uploaded)} files are too many for one offer")
        self._offered_at = at  # from now on, an offer of ours may be in the store
        answer: dict | None = None
        why = "the leader did not answer in time"
        try:
            self.store.set(f"offer/{self.node}", offer)
            self.store.add("offered", 1)  # the leader polls this counter, not every node's offer
            answer = self._await_answer(self._seq)
            if answer is None and self.store.compare_set(f"offer/{self.node}", offer, WITHDRAWN):
                answer = self._answer(self._seq)  # the leader may have answered just before
                if answer is None:
                    self._offered_at = None  # taken back: no leader can commit it any more
        except StoreError as exc:
            why = str(exc)
            self.store_failed(exc)
            if self.store.gone():  # and our offer with it: no leader can take it any more
                self._offered_at = None
        if answer is not None:
            self._offered_at = None  # answered: no leader takes this offer again
            self.plan = Plan.from_json(answer.get("plan")) or self.plan
            if answer.get("retry_at") is not None and self._hurried():  # the node's disk goes before then
                return self._commit_ourselves(pieces, message, "the job's budget has no room before this node's deadline")
            if answer.get("retry_at") is not None:  # the budget has no room now: offered again then
                self.mode, self.why = "job", None
                self._deferred = _identity(pieces)
                raise Deferred(f"the job's leader puts this node's {len(pieces)} file(s) off to a later write "
                               f"({answer.get('why', 'the budget')})", float(answer["retry_at"]) - time.time())
            if answer.get("commit") is None:
                return self._commit_ourselves(pieces, message, f"the leader could not commit it: {answer.get('error')}")
            self.mode, self.why = "job", None
            if answer.get("verified"):
                self._verified = _identity(pieces)
            return str(answer["commit"])
        return self._commit_ourselves(pieces, message, why)

    def _await_answer(self, seq: int) -> dict | None:
        """Our answer, read each time the leader's ``answered`` counter moves (one round trip per poll)."""
        started, seen = time.monotonic(), None
        while time.monotonic() < self.store.until(started, self.wait):  # read again: a signal shortens it
            answered = self.store.add("answered", 0)
            if answered != seen:
                seen = answered
                answer = self._answer(seq)
                if answer is not None:
                    return answer
            time.sleep(LEADER_POLL_S / 2)
        return None

    def _answer(self, seq: int) -> dict | None:
        raw = self.store.get(f"answer/{self.node}")
        answer = json.loads(raw) if raw else None
        return answer if answer and answer.get("seq") == seq else None

    def _commit_ourselves(self, pieces: Sequence[Piece], message: str, why: str) -> str | None:
        """Commit as a node taking turns would, unless an offer of ours may still be taken by a leader
        (it could not be taken back): then not before no leader takes it any more (see the module's
        docstring), and the queue retries meanwhile. Unless the preemption deadline comes first (a silent
        store counts as gone then): the node's disk goes with it, and a late leader commits the same files."""
        if self._offered_at is not None:
            now, left = time.monotonic(), self._offered_at + OFFER_WAIT_S + CLOCK_MARGIN_S - time.time()
            if left > 0 and self.store.until(now, left) >= now + left:  # no deadline, or one that leaves the time
                raise TargetError(f"the job's leader did not commit this node's files ({why}), and the offer could "
                                  f"not be taken back: this node commits them itself in {left:.0f} s", transient=True)
            if left > 0:
                logger.warning("this node's offer could not be taken back (%s), and the preemption deadline comes first: "
                               "this node commits its files itself now", why)
            self._offered_at = None
        wait = self._own_turn(len(pieces))
        self.mode, self.why = "node", why
        if wait > 0:
            self._deferred = _identity(pieces)
            raise Deferred(f"job-wide commit not made ({why}); this node commits its files itself at its turn in the "
                           f"job's budget", wait)
        logger.warning("job-wide commit not made (%s); this node commits its files itself", why)
        self._own_last = time.time()
        return self.inner.commit(pieces, message)

    def _hurried(self) -> bool:
        """Whether the uploader was signalled (:meth:`hurry`): its last records go now or never."""
        return self.store.preemption != float("inf")

    def plan_now(self, files: int) -> Plan:
        """The leader's last plan, or, before it said one, this node's own for ``files`` files a node."""
        return self.plan or make_plan(self.budget, self.kind, self.leader.nodes, files, self.commit_every, self.spacing)

    def _own_turn(self, files: int) -> float:
        """Seconds until this node may commit its files itself: at its slot of the job's budget
        (:meth:`Plan.own_turn`; a thousand nodes left without a leader would otherwise make a thousand
        commits at once), asked again at least every :data:`STORE_RETRY_S` while the store lives (a
        leader may be back). At once when the uploader was signalled: the node's disk goes with it."""
        if self._hurried():
            return 0.0
        plan = self.plan_now(files)
        wait = plan.own_turn(self.node, time.time(), self._own_last)
        if wait <= 0:
            return 0.0
        if not self.store.gone():
            return min(wait, STORE_RETRY_S)
        if not self._drain_said:  # the job is over, or its store host died: said once, with how long it takes
            logger.warning("the job's store is gone: %s; this node's files wait on its disk until its turn (next in "
                           "%.0f s)", plan.drain_note(), wait)
            self._drain_said = True
        return wait


def _doubling(failures: int, cap: float) -> float:
    """The leader's pause after ``failures`` in a row: :data:`LEADER_POLL_S`, doubling, up to ``cap``."""
    return min(cap, LEADER_POLL_S * 2 ** min(failures, 16))


def _identity(pieces: Sequence[Piece]) -> tuple:
    return tuple(sorted((p.path, p.size, p.sha256) for p in pieces))


class Leader:
    """The thread that holds (or watches) the job's lease and, while it holds it, commits the offers."""

    def __init__(self, target: SharedTarget, store: JobStore, node: int, nodes: int, spacing: float,
                 budget: Budget | None = None, commit_every: float = HUB_COMMIT_EVERY_S) -> None:
        self.target, self.store, self.node, self.nodes, self.spacing = target, store, node, nodes, spacing
        self.budget = budget or make_budget()
        self.kind = "bucket" if isinstance(target, BucketTarget) else "hub"
        self.commit_every = commit_every
        self.books = Books(self.budget, self.kind)
        #: Files in one commit at most: the Hub advises tens to hundreds a commit (a 60 s server timeout).
        self.max_files = self.budget.files_per_commit
        self._files_of: dict[int, int] = {}  # node -> files in its latest offer (the plan's files per node)
        self.leading = False
        self._lease: bytes | None = None  # the value we last wrote (leading) or saw (watching)
        self._lease_seen_at = time.monotonic()
        self._renewals = 0
        self._first_seen: dict[tuple[int, int], float] = {}  # (node, seq) -> when this leader first saw it
        self._offered: int | None = None  # the ``offered`` counter when the offers were last read
        self._candidates: dict[int, dict] = {}  # what that read found
        self._last_commit = -float("inf")
        self._head_failures = 0  # the head could not be read, in a row: the next try waits longer
        self._head_rests_until = 0.0  # monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease_thread: threading.Thread | None = None

    def start(self) -> None:
        """Two threads: the lease is kept on its own schedule, so a round of any length (a commit of
        thousands of files, a slow Hub) never lets it go stale and another node take over mid-round."""
        self._lease_thread = threading.Thread(target=self._keep_lease, name="hf_mpwriter-job-lease", daemon=True)
        self._thread = threading.Thread(target=self._run, name="hf_mpwriter-job-leader", daemon=True)
        self._lease_thread.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop; a leader lets its lease go at once (the next node takes over without waiting it out)."""
        self._stop.set()
        for thread in (self._thread, self._lease_thread):
            if thread is not None:
                thread.join(10)
        if self.leading and self._lease is not None:
            try:
                self.store.compare_set("lease", self._lease, b"")
            except StoreError:
                pass

    def _keep_lease(self) -> None:
        """Renew the lease while leading (every :data:`LEADER_POLL_S`); otherwise watch it, less often the
        more nodes watch (each look is a round trip to the job's store), still well within its staleness."""
        failures = 0  # the store's, in a row (capped at half the lease's staleness: the offers outlive it)
        watch_every = max(LEADER_POLL_S, min(LEASE_STALE_S / 4, self.nodes * LEADER_POLL_S / 100))
        while not self._stop.is_set():
            try:
                self._hold_lease()
                failures = 0
            except StoreError as exc:
                if self.leading:
                    logger.warning("job leader: %s; the nodes commit their files themselves meanwhile", exc)
                self.leading = False
                failures += 1
            except Exception:  # never die: the nodes would fall back for good
                logger.exception("job leader: the lease could not be kept")
            pause = LEADER_POLL_S if self.leading else watch_every
            self._stop.wait(_doubling(failures, LEASE_STALE_S / 2) if failures else pause)

    def _run(self) -> None:
        """The rounds, while this node holds the lease."""
        failures = 0  # the store's, in a row
        while not self._stop.is_set():
            try:
                if self.leading:
                    self._round()
                failures = 0
            except StoreError as exc:
                logger.warning("job leader: %s; the nodes commit their files themselves meanwhile", exc)
                failures += 1
            except TargetError as exc:  # the head could not be read: asked again after a pause that doubles
                self._head_failures += 1
                self._head_rests_until = time.monotonic() + (pause := _doubling(self._head_failures, STORE_RETRY_S))
                logger.warning("job leader: %s; the head is read again in %.1f s", exc, pause)
            except Exception:  # never die: the nodes would fall back for good
                logger.exception("job leader round failed")
            self._stop.wait(_doubling(failures, LEASE_STALE_S / 2))

    # -- the lease -------------------------------------------------------------------------------
    def _hold_lease(self) -> bool:
        """Renew our lease, or take one that is free or was not renewed for :data:`LEASE_STALE_S`."""
        now = time.monotonic()
        if self.leading:
            assert self._lease is not None
            mine = self._lease_value()
            if self.store.compare_set("lease", self._lease, mine):
                self._lease = mine
                return True
            logger.warning("job leader: node %d lost the lease (another node took over)", self.node)
            self.leading = False
        current = self.store.get("lease") or b""
        if current != self._lease:
            self._lease, self._lease_seen_at = current, now
        if current and now - self._lease_seen_at < LEASE_STALE_S:
            return False
        mine = self._lease_value()
        if not self.store.compare_set("lease", current, mine):
            return False
        self.leading, self._lease = True, mine
        logger.info("job leader: node %d leads the job's commits", self.node)
        return True

    def _lease_value(self) -> bytes:
        self._renewals += 1
        return json.dumps({"node": self.node, "pid": os.getpid(), "n": self._renewals}).encode()

    # -- a round ----------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The job's plan as this leader sees it now (the nodes' latest file counts, a 429's slowdown)."""
        files = max(self._files_of.values(), default=1)
        return make_plan(self.budget, self.kind, self.nodes, files, self.commit_every, self.spacing,
                         self.max_files, self.books.slowdown)

    def _round(self) -> None:
        """Commit the offers once the round's first one is :data:`JOB_GATHER_S` old (or every node offered)
        and the books have room; offers that will not have room soon are told when to offer again."""
        now = time.monotonic()
        if now < self._head_rests_until:
            return
        offered = self.store.add("offered", 0)  # one round trip while nothing new was offered
        if offered != self._offered:
            self._offered, self._candidates = offered, self._offers()
        if not self._candidates:
            return
        last = any(o.get("last") for o in self._candidates.values())  # a node's last records: its disk goes
        if now - self._last_commit < self.spacing and not last:
            return
        first = min(self._first_seen.setdefault((node, o["seq"]), now) for node, o in self._candidates.items())
        if len(self._candidates) < self.nodes and now - first < JOB_GATHER_S and not self._full():
            return
        wanted = min(self.max_files, sum(len(o["files"]) for o in self._candidates.values()))
        free_at = self.books.next_free(now, wanted)
        if free_at > now and not last:  # the budget (or a 429) has no room now
            if free_at - now > DEFER_AFTER_S:
                self._defer(self._candidates, free_at, "the job's budget of Hub commits and requests")
                self._offered, self._candidates = None, {}
            return
        parent = self.target.parent()  # fixed before the offers it commits are read: see the module's docstring
        self._head_failures = 0
        offers = self._offers()
        self._offered, self._candidates = None, {}  # read them all again next round
        if not offers or not self.leading:  # (the lease went meanwhile: the store failed, or a long freeze)
            return
        self._files_of.update((node, len(offer["files"])) for node, offer in offers.items())
        offers, rest = self._fitting(offers)
        files = [UploadedFile(*entry) for o in offers.values() for entry in o["files"]]
        message = f"Upload TensorBoard logs: {len(files)} file(s) from {len(offers)} node(s) (hf_mpwriter)"
        self._last_commit = time.monotonic()
        try:
            commit = self.target.commit_uploaded(files, message, parent=parent)
        except TargetError as exc:
            self._failed(exc, offers)
            return
        self.books.wrote(time.monotonic(), len(files))
        self.max_files = min(self.budget.files_per_commit, self.max_files * 3 // 2)  # back up after a halving
        try:
            wrong = self.target.verify_uploaded(files)
        except TargetError as exc:
            logger.warning("job leader: commit %s not verified (%s); each node checks it itself", commit, exc)
            wrong = {f.path: "not verified" for f in files}
        plan = self.plan().to_json()
        self.store.multi_set({
            f"answer/{node}": json.dumps({"commit": commit, "seq": offer["seq"], "plan": plan,
                                          "verified": not any(entry[0] in wrong for entry in offer["files"])}).encode()
            for node, offer in offers.items()
        })
        self.store.add("answered", 1)
        for node, offer in offers.items():
            self._first_seen.pop((node, offer["seq"]), None)
        logger.info("job leader: committed %d file(s) of %d node(s) as %s", len(files), len(offers), commit)
        rest = {node: offer for node, offer in rest.items() if not offer.get("last")}  # those: the next round
        if rest:
            self._defer_rest(rest)

    def _full(self) -> bool:
        """Whether the offers read fill a commit already (a group of the plan, or the files a commit holds):
        then there is nothing to gather for, and a leader that waited each time would fall behind its plan."""
        files = sum(len(o["files"]) for o in self._candidates.values())
        return files >= self.max_files or len(self._candidates) >= self.plan().per_commit

    def _failed(self, exc: TargetError, offers: dict[int, dict]) -> None:
        """A commit failed: a 429 slows the plan and puts the offers off until the Hub's time; a timeout halves
        the commits (the Hub's 60 s server timeout); other transient errors are retried next round (the
        head is read again); an error only the user can fix is the nodes' to report."""
        if exc.retry_after is not None:
            self.books.refused(time.monotonic(), exc.retry_after)
            logger.warning("job leader: the Hub asks to slow down (%s): writes resume in %.0f s, at %g times the "
                           "plan's spacing for an hour", exc, exc.retry_after, self.books.slowdown)
            self._defer(offers, self.books.paused_until, "the Hub asked to slow down (429)")
        elif exc.timed_out and self.max_files > MIN_FILES_PER_COMMIT:
            self.max_files = max(MIN_FILES_PER_COMMIT, self.max_files // 2)
            logger.warning("job leader: %s; commits of at most %d files from now on", exc, self.max_files)
        elif exc.transient:  # the branch moved, the network: the head is read again next round
            logger.warning("job leader: %s", exc)
        else:
            self._answer(offers, {"commit": None, "error": str(exc)})

    def _defer(self, offers: dict[int, dict], at: float, why: str) -> None:
        """Tell the nodes of ``offers`` to offer again at ``at`` (monotonic, sent as wall time) with the plan:
        their files wait on their disks meanwhile, instead of their nodes giving up on the leader."""
        plan = self.plan().to_json()
        retry_at = time.time() + max(0.0, at - time.monotonic())
        self._answer(offers, {"commit": None, "retry_at": retry_at, "why": why, "plan": plan})
        for node, offer in offers.items():
            self._first_seen.pop((node, offer["seq"]), None)
        logger.info("job leader: %d node(s) put off for %.0f s (%s)", len(offers), at - time.monotonic(), why)

    def _defer_rest(self, rest: dict[int, dict]) -> None:
        """Offers that did not fit in this commit: the oldest at the next write the books allow, then one
        commit's worth per gap of the plan."""
        gap = self.plan().gap
        at = max(self.books.next_free(time.monotonic(), self.max_files), time.monotonic() + self.spacing)
        chunk: dict[int, dict] = {}
        count = 0
        for node, offer in sorted(rest.items(), key=lambda item: item[1]["at"]):
            if chunk and count + len(offer["files"]) > self.max_files:
                self._defer(chunk, at, "this commit's files were full")
                chunk, count, at = {}, 0, at + gap
            chunk[node] = offer
            count += len(offer["files"])
        self._defer(chunk, at, "this commit's files were full")

    def _fitting(self, offers: dict[int, dict]) -> tuple[dict[int, dict], dict[int, dict]]:
        """The oldest offers whose files fit in one commit of at most :attr:`max_files` (at least one
        offer), and the rest."""
        chosen: dict[int, dict] = {}
        count = 0
        for node, offer in sorted(offers.items(), key=lambda item: item[1]["at"]):
            if chosen and count + len(offer["files"]) > self.max_files:
                break
            chosen[node] = offer
            count += len(offer["files"])
        rest = {node: offer for node, offer in offers.items() if node not in chosen}
        if rest:
            logger.info("job leader: %d of %d offers fit in this commit (at most %d files); the rest later",
                        len(chosen), len(offers), self.max_files)
        return chosen, rest

    def _offers(self) -> dict[int, dict]:
        """The nodes' current offers this leader may commit: not answered yet, not taken back, not
        expired, from the node's current uploader. Read in one batch: a few round trips at any job size."""
        members = self._members()
        kinds = ("offer", "answer", "incarnation")
        values = self.store.multi_get([f"{kind}/{node}" for node in members for kind in kinds])
        offers = {}
        for k, node in enumerate(members):
            raw, answered_raw, incarnation_raw = values[3 * k:3 * k + 3]
            if not raw or raw == WITHDRAWN:
                continue
            offer = json.loads(raw)
            answered = json.loads(answered_raw or b"{}")
            if offer["seq"] <= answered.get("seq", 0) or offer["incarnation"] < int(incarnation_raw or 0):
                continue
            if time.time() - offer["at"] > OFFER_WAIT_S:  # the node may be committing it itself
                continue
            offers[node] = offer
        return offers

    def _members(self) -> list[int]:
        """The nodes that announced themselves in this store (their keys exist)."""
        raw = self.store.get("members") or b""
        listed = {int(part) for part in raw.decode().split(",") if part.strip().isdigit()}
        return sorted(node for node in listed if 0 <= node < self.nodes)

    def _answer(self, offers: dict[int, Any], answer: dict) -> None:
        self.store.multi_set({f"answer/{node}": json.dumps({**answer, "seq": offer["seq"]}).encode()
                              for node, offer in offers.items()})
        self.store.add("answered", 1)  # the nodes poll this counter, not their answers


def for_job(config: UploadConfig, target: Target, token: str | None, call_bound: float) -> Target:
    """``target`` itself, or a :class:`JobTarget` around it where the job has a reachable store.

    Only a repository or a bucket on the Hub (a bucket: with hf_xet and huggingface_hub 1.10+, see
    :func:`~hf_mpwriter.targets.bucket.batch_takes_xet_hashes`), only in a multi-node job
    (``config.nodes > 1``), only with a store in the environment
    (:func:`~hf_mpwriter.uploader.job_store.store_address`); otherwise each node commits itself
    (a repository's nodes take turns). A store that does not answer yet gives a :class:`JobTarget`
    that commits itself until it does (offering to the leader again :data:`STORE_RETRY_S` after a failure).
    """
    address = store_address() if config.job_store else None  # HF_MPWRITER_JOB_STORE=0: node turns
    if config.nodes <= 1 or address is None or not isinstance(target, (HubTarget, BucketTarget)):
        return target
    if importlib.util.find_spec("torch") is None:  # the store's client is torch's
        logger.info("job %s: no torch in the uploader's environment, so no job store: each node commits its own "
                    "files", address.job_id)
        return target
    if isinstance(target, BucketTarget) and not (xet_usable() and batch_takes_xet_hashes()):
        logger.info("job %s: each node writes its own files to the bucket (one leader needs hf_xet and "
                    "huggingface_hub 1.10 or later)", address.job_id)
        return target
    store = JobStore(address, store_prefix(address, target.key))
    leader_target = target_for(dataclasses.replace(config, nodes=1, node_rank=0), token)
    assert isinstance(leader_target, (HubTarget, BucketTarget))
    hub_spacing = config.min_interval if config.min_interval is not None else leader_target.min_interval
    spacing = min(config.commit_every, hub_spacing) / 2  # at most one commit per round
    budget = make_budget(config.commits_per_hour, config.api_requests, config.files_per_commit, hub_spacing)
    job = JobTarget(target, leader_target, store, config.node_rank, config.nodes,
                    wait=min(OFFER_WAIT_S, call_bound / 3), spacing=spacing, budget=budget,
                    commit_every=config.commit_every)
    try:
        store.get("lease")
        logger.info("job %s: commits through one leader, coordinated in the job's store at %s:%d",
                    address.job_id, address.host, address.port)
    except StoreError as exc:  # not there yet (an env:// store rank 0 creates later), or gone
        logger.warning("%s; %s", exc, OWN_COMMITS)
        job.store_failed(exc)
        job.mode = "node"
    return job
