"""The job's leader: the rounds of the node whose uploader holds the lease (:mod:`.lease`).

Contracts:

- **One committer per offer.** The leader claims an offer (``compare_set`` to taken) before committing it; its node
  takes it back the same way: one of the two wins.
- **Leading means progress.** The lease is renewed only while the rounds make progress (:mod:`.lease`); a node whose
  claimed offer's leader no longer holds the lease offers it again.
- **No round under a released lease.** The lease is let go only between rounds.
- **Only this host's monotonic clock.** Offers expire by when this leader first saw them; answers say seconds.
- **Oldest data first.** Offers are taken, and put off, in the order of how long their data has waited, those put off
  together one write of the plan apart."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Callable, Protocol, Union

from ...errors import TargetError
from ...targets.base import UploadedFile
from ...targets.bucket import BucketTarget
from ...targets.hub import HubTarget
from ...targets.xet_content import Connection
from ...timing import (
    HUB_COMMIT_EVERY_S,
    OFFER_WAIT_S,
    JobTiming,
)
from ..schedule import doubling, until_turn
from .plan import MIN_FILES_PER_COMMIT, Books, Budget, Plan, make_budget, make_plan
from .protocol import Answer, Offer, taken_value
from .seen_offers import SeenOffers, fitting, oldest_first
from .store import CoordinationStore, StoreError
from .successor import published
from .xet_share import XetPublisher

logger = logging.getLogger("hf_mpwriter.uploader")

#: A node's own target in a job: a repository (one commit, by sha256) or a Storage Bucket (one batch, by Xet hash).
SharedTarget = Union[HubTarget, BucketTarget]  # (Python 3.9: no ``|`` between classes at run time)


class LeaderTarget(Protocol):
    """What a job's leader writes the nodes' uploaded files through (:class:`HubTarget`, :class:`BucketTarget`, and
    ``tests/commitsim.py``'s Hub: mypy checks each against this)."""

    kind: str  # "hub" or "bucket": which of the budget's rules (:mod:`.plan`) its writes follow
    repo_id: str

    def parent(self) -> str | None:
        """The head the next commit names (``None``: no history to fence against, a bucket)."""

    def commit_uploaded(self, files: Sequence[UploadedFile], message: str, parent: str | None = None) -> str | None:
        """One commit (a bucket: one batch) of files whose content is uploaded; its id."""

    def verify_uploaded(self, files: Sequence[UploadedFile]) -> dict[str, str]:
        """``path -> what is wrong`` for each file the head does not hold as given."""

    def behind(self, files: Sequence[UploadedFile], revision: str | None) -> dict[str, str]:
        """``path -> why`` for each event file that ``revision`` (a bucket: the bucket now) holds longer (newer) than
        given."""

    def xet_write_token(self, fresh_for: float) -> Connection | None:
        """This process's Xet write token, good ``fresh_for`` seconds more, to share (``None``: none)."""

    def trusts_cas(self, cas_url: str) -> bool:
        """Whether a shared token for ``cas_url`` may be used here."""


class Leader(SeenOffers):
    """The thread that holds (or watches) the job's lease and, while it holds it, commits the offers."""

    def __init__(self, target: LeaderTarget, store: CoordinationStore, node: int, nodes: int, spacing: float,
                 budget: Budget | None = None, commit_every: float = HUB_COMMIT_EVERY_S,
                 call_bound: float = 3 * OFFER_WAIT_S, timing: JobTiming = JobTiming(),
                 wall: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic) -> None:
        """``wall``: this host's wall clock (the plan's slots, never compared with another's); ``clock``: its
        monotonic one."""
        self.target, self.spacing, self.wall = target, spacing, wall
        self.budget = budget or make_budget()
        self.kind = target.kind
        self.commit_every, self.call_bound = commit_every, call_bound
        super().__init__(store, node, nodes, timing, commit_every, clock)
        self.books = Books(self.budget, self.kind)
        #: Files in one commit at most: the Hub advises tens to hundreds a commit (a 60 s server timeout).
        self.max_files = self.budget.files_per_commit
        self._files_of: dict[int, int] = {}  # node -> files in its latest offer (the plan's files per node)
        self.commits = 0  # commits (a bucket: batches) this node made as the job's leader (``status``)
        self._offered: int | None = None  # the ``offered`` counter when the offers were last read
        self._candidates: dict[int, Offer] = {}  # what that read found
        self._last_commit = -math.inf
        self._head_failures = 0  # the head could not be read, in a row: the next try waits longer
        self._head_rests_until = 0.0  # monotonic
        self._own_head: str | None = None  # this leader's last commit: a head that is not it moved since
        self._others_head: str | None = None  # the last head another process made, counted in the books
        #: node -> the offer told the target held newer versions of its files, and those (path, size)
        self._told_older: dict[int, tuple[int, set[tuple[str, int]]]] = {}
        #: The job's Xet write token, shared while this node leads: by default its target's (a member sets its node's
        #: own).
        self.xet = XetPublisher(store, lambda fresh: self.target.xet_write_token(fresh), timing.store_retry, self.malformed,
                                lambda cas: self.target.trusts_cas(cas))
        self._thread: threading.Thread | None = None
        self._lease_thread: threading.Thread | None = None
        self._successors: tuple[tuple[str, int], ...] = ()  # each successor store's, for the answers
        self._successors_read = -math.inf  # monotonic

    def start(self) -> None:
        """Two threads: the lease is kept on its own schedule, so a round of any length (thousands of files, a slow Hub)
        never lets it go stale by itself; it is let go only for want of progress (:meth:`_stalled`)."""
        self._lease_thread = threading.Thread(target=self._keep_lease, name="hf_mpwriter-job-lease", daemon=True)
        self._thread = threading.Thread(target=self._run, name="hf_mpwriter-job-leader", daemon=True)
        self._lease_thread.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop, by the uploader's preemption deadline once signalled, else within ``timing.stop_wait``; a leader lets
        its lease go at once (the next node need not wait it out), unless a round still runs: then the lease goes
        stale."""
        self._stop.set()
        until = min(time.monotonic() + self.timing.stop_wait, self.store.preemption)
        for thread in (self._thread, self._lease_thread):
            if thread is not None:
                thread.join(max(0.0, until - time.monotonic()))
        if self.leading:
            self.let_go("this uploader stops")

    # -- the rounds --------------------------------------------------------------------------------
    def _run(self) -> None:
        """The rounds, while this node holds the lease."""
        failures = 0  # the store's, in a row
        while not self._stop.is_set():
            try:
                if self.leading:
                    with self._round_lock:
                        if self.leading:
                            self._round()
                failures = 0
            except StoreError as exc:
                logger.warning("job leader: %s; the nodes commit their files themselves meanwhile", exc)
                failures += 1
                self.store_gap = True
            except TargetError as exc:  # the head could not be read: asked again after a pause that doubles
                self._head_failures += 1
                pause = doubling(self._head_failures, self.timing.poll, self.timing.store_retry)
                self._head_rests_until = self.clock() + pause
                logger.warning("job leader: %s; the head is read again in %.1f s", exc, pause)
            except Exception:  # never die (the nodes would fall back for good), but never lead without progress
                logger.exception("job leader round failed")
                self.round_ended(failed=True)
            else:
                self.round_ended(failed=False)
            self._stop.wait(doubling(failures, self.timing.poll, self.timing.lease_stale / 2))

    def plan(self) -> Plan:
        """The job's plan as this leader sees it now (the nodes' latest file counts, a 429's slowdown)."""
        files = max(self._files_of.values(), default=1)
        return make_plan(self.budget, self.kind, self.nodes, files, self.commit_every, self.spacing,
                         self.max_files, self.books.slowdown)

    def _hub_call(self, limit: float, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A call to the Hub, timed for :meth:`_stalled` (stuck past ``limit``); a failure starts or continues a
        failing span."""
        started, failed = self.call_began(limit), False
        try:
            return call(*args, **kwargs)
        except TargetError:
            failed = True
            raise
        finally:
            self.call_ended(started, failed)

    def _round(self) -> None:
        """Commit the offers once the round's first one is ``timing.gather`` old (or every node offered) and
        the books have room; offers that will not have room soon are told when to offer again."""
        self._handover_after = max(self.timing.lease_stale, self.plan().interval)
        if self.store.moves != self.term_moves:  # this term's store is gone: a term there comes first
            return
        self.xet.share()
        self._read_successors()
        ready = self._ready(self.clock())
        self._offer_again()  # (those its read found)
        if not ready:
            return
        # The parent, fixed before the offers it commits are read (member); a small call: one that hangs
        # for a hand-over time is a Hub out of reach, while a commit may take as long as any call may.
        parent = self._hub_call(self.handover_after(), self.target.parent)
        self._head_failures = 0
        self._count_others(parent)
        offers = self._offers()
        self._offered, self._candidates = None, {}  # read them all again next round
        self._offer_again()
        if not offers or not self.leading:  # (the lease went meanwhile: the store failed, or a hand-over)
            return
        self._files_of.update((node, len(offer.files)) for node, offer in offers.items())
        if not self.holds():  # (paused past its lease, say: another node leads, and claims these)
            return
        looked = offers if parent is None else self._not_behind(offers, parent)  # (every offer read: see there)
        offers, rest = fitting(looked, self._first_seen, self.max_files)
        if parent is None:  # a bucket: the offers this write takes are asked of the bucket itself
            offers = self._not_behind(offers, parent)
        offers = self._claim(offers)
        if offers and self._write(offers, parent):
            rest = {node: offer for node, offer in rest.items() if not offer.last}  # those: the next round
            if rest:
                at = max(self.books.next_free(self.clock(), self.max_files), self.clock() + self.spacing)
                self._put_off(rest, at, "this commit's files were full")

    def _read_successors(self) -> None:
        """The successor stores' addresses (:mod:`.successor`), read every ``timing.successor_copy``: each answer
        carries them, so that a node knows where to go on once the store in use is gone."""
        now = self.clock()
        if now - self._successors_read < self.timing.successor_copy:
            return
        self._successors_read = now
        self._successors = tuple(published(self.store, self.malformed))

    def _ready(self, now: float) -> bool:
        """Whether this round writes: offers read (again only when the ``offered`` counter moved), the commit spacing
        and the gathering past (unless a node's last records wait), and room in the books; offers without room soon
        are put off."""
        if now < self._head_rests_until:
            return False
        offered = self.store.add("offered", 0)  # one round trip while nothing new was offered (two on a successor)
        if offered != self._offered:
            self._offered, self._candidates = offered, self._offers()
        if not self._candidates:
            return False
        last = any(o.last for o in self._candidates.values())  # a node's last records: its disk goes
        if now - self._last_commit < self.spacing and not last:
            return False
        first = min(self._first_seen[(node, o.seq)] for node, o in self._candidates.items())
        if len(self._candidates) < self.nodes and now - first < self.timing.gather and not self._full():
            return False
        if self._rides_later(now, last):
            return False
        wanted = min(self.max_files, sum(len(o.files) for o in self._candidates.values()))
        free_at = self.books.next_free(now, wanted)
        if free_at > now and not last:  # the budget (or a 429) has no room now
            if free_at - now > self.timing.defer_after:
                self._put_off(self._candidates, free_at, "the job's budget of Hub commits and requests")
                self._offered, self._candidates = None, {}
            return False
        return True

    def _rides_later(self, now: float, last: bool) -> bool:
        """Whether this node's own offer, alone after the gathering, is put off to the next group's slot: where
        it rides with the groups' writes (:meth:`Plan.leader_pacing`) it makes no write of its own."""
        plan = self.plan()
        if set(self._candidates) != {self.node} or last or plan.leader_pacing(0.0) is None:
            return False
        at = now + until_turn(plan.gap, 0.0, self.wall(), plan.gap / 2)
        self._put_off(self._candidates, at, "it rides with the next group's write")
        self._offered, self._candidates = None, {}
        return True

    def _write(self, offers: dict[int, Offer], parent: str | None) -> bool:
        """One commit (a bucket: one batch) of the claimed offers, verified, and its answers; whether it landed."""
        files = [f for o in offers.values() for f in o.files]
        message = f"Upload TensorBoard logs: {len(files)} file(s) from {len(offers)} node(s) (hf_mpwriter)"
        self._last_commit = self.clock()
        moves = self.store.moves
        self.books.wrote(self.clock(), len(files))  # (withdrawn if it certainly did not apply)
        try:
            limit = min(self.call_bound, max(self.handover_after(), self.timing.commit_grace))
            commit = self._hub_call(limit, self.target.commit_uploaded, files, message, parent=parent)
        except TargetError as exc:
            if not exc.timed_out:  # refused or failed, not applied: out of the budget again
                self.books.withdrawn()
            self._failed(exc, offers)
            return False
        self.wrote()
        self.commits += 1
        self._own_head = commit
        self.max_files = min(self.budget.files_per_commit, self.max_files * 3 // 2)  # back up after a halving
        try:
            wrong = self.target.verify_uploaded(files)
        except TargetError as exc:
            logger.warning("job leader: commit %s not verified (%s); each node checks it itself", commit, exc)
            wrong = {f.path: "not verified" for f in files}
        if self.store.moves != moves:  # its offers were in a store now gone: answers here would be another leader's keys
            logger.warning("job leader: committed %d file(s) as %s while the job's store moved; the nodes offer them "
                           "again to the leader there", len(files), commit)
            return False  # (nor any put-off answers: the round's offers were that store's)
        self._answer(offers, Answer(0, commit=commit), self.plan(),
                     {node: not any(f.path in wrong for f in offer.files) for node, offer in offers.items()})
        self._forget(offers)
        logger.info("job leader: committed %d file(s) of %d node(s) as %s", len(files), len(offers), commit)
        return True

    def _count_others(self, parent: str | None) -> None:
        """Count a head another process made since this leader's last commit as one write in the books: two
        leaders for a while (each on its own store) then slow each other to about the plan, within the margin."""
        if self._own_head is not None and parent not in (None, self._own_head, self._others_head):
            self._others_head = parent
            self.books.wrote(self.clock(), 0)

    def _not_behind(self, offers: dict[int, Offer], parent: str | None) -> dict[int, Offer]:
        """The offers, less those older than the head ``parent``: where another process committed since this leader's
        last commit (a node cut off from the store commits its newest files itself while its offer stays there), an
        offer whose event file the head holds longer would take it back. Those are answered "offer again", as offers
        of unknown age are. Every offer read is looked at, not only this commit's: one left for a later round (a
        node's last records) would be committed under a head that is this leader's own again.

        A bucket has no head to fence with (``parent`` is ``None``): the offers a write takes are asked of the bucket as
        it is, before every write (one request per 1,000 files, in the books: :data:`~.plan.REQUESTS_PER_WRITE`).

        A node told so that offers the same versions again has none newer: its own disk's are the truth (a restored
        backup, which its audit would send again too), and they are written."""
        if parent is not None and parent == self._own_head:
            return offers
        files = [f for o in offers.values() for f in o.files]
        behind = self._hub_call(self.handover_after(), self.target.behind, files, parent)
        older = {node: {(f.path, f.size) for f in o.files if f.path in behind} for node, o in offers.items()}
        stale = {node: o for node, o in offers.items() if older[node] and not self._offered_again(node, o, older[node])}
        self._told_older = {**{node: was for node, was in self._told_older.items() if node not in offers},
                            **{node: (o.seq, older[node]) for node, o in stale.items()}}
        if stale:
            logger.warning("job leader: %d node(s)' offers are older than the target (%s): not committed", len(stale),
                           next(iter(behind.values())))
            self._put_off(stale, self.clock(), "the target holds newer versions of its files")
        return {node: o for node, o in offers.items() if node not in stale}

    def _offered_again(self, node: int, offer: Offer, older: set[tuple[str, int]]) -> bool:
        """Whether ``offer`` is a later one of ``node``'s than the offer it was told of, and holds no versions older than
        the target's but those (the same offer read again, its answer lost, is no offer again)."""
        told = self._told_older.get(node)
        return told is not None and offer.seq > told[0] and older <= told[1]

    def _claim(self, offers: dict[int, Offer]) -> dict[int, Offer]:
        """The offers this leader now owns: each taken from the store unless its node took it back first."""
        claimed = {}
        for node, offer in offers.items():
            if self.store.compare_set(f"offer/{node}", offer.raw, taken_value(offer.seq, self.node, self.term)):
                claimed[node] = offer
        return claimed

    def _full(self) -> bool:
        """Whether the offers read fill a commit (a group of the plan, or a commit's files): waiting for more falls
        behind."""
        files = sum(len(o.files) for o in self._candidates.values())
        return files >= self.max_files or len(self._candidates) >= self.plan().per_commit

    def _failed(self, exc: TargetError, offers: dict[int, Offer]) -> None:
        """A commit of claimed offers failed: a 429 slows the plan and puts the offers off until the Hub's time; a
        timeout (it may have applied: it stays in the books) halves the next commits (the Hub's 60 s server timeout);
        other transient errors put them off to the next round; an error only the user can fix is the nodes' to
        report."""
        if exc.retry_after is not None:
            self.books.refused(self.clock(), exc.retry_after)
            logger.warning("job leader: the Hub asks to slow down (%s): writes resume in %.0f s, at %g times the "
                           "plan's spacing for an hour", exc, exc.retry_after, self.books.slowdown)
            self._put_off(offers, self.books.paused_until, "the Hub asked to slow down (429)")
            return
        if exc.timed_out and self.max_files > MIN_FILES_PER_COMMIT:
            self.max_files = max(MIN_FILES_PER_COMMIT, self.max_files // 2)
            logger.warning("job leader: %s; commits of at most %d files from now on", exc, self.max_files)
        else:  # (a race with another committer resolves itself next round: not a warning)
            (logger.info if exc.raced else logger.warning)("job leader: %s", exc)
        if exc.transient:  # the branch moved, the network: offered again next round (a hand-over if it lasts)
            self._put_off(offers, self.clock() + self.spacing, f"the leader's commit failed ({exc})")
        else:  # only the user can fix it: the nodes report it
            self._answer(offers, Answer(0, error=str(exc)))
            self._forget(offers)

    def _put_off(self, offers: dict[int, Offer], at: float, why: str) -> None:
        """Tell the nodes of ``offers`` to offer again, the oldest data first: the first commit's worth at ``at``
        (monotonic), the next one gap of the plan later, and so on (their files wait on their disks meanwhile)."""
        plan = self.plan()
        chunk: dict[int, Offer] = {}
        count = 0
        for node, offer in oldest_first(offers, self._first_seen):
            if chunk and count + len(offer.files) > self.max_files:
                self._defer(chunk, at, why, plan)
                chunk, count, at = {}, 0, at + plan.gap
            chunk[node] = offer
            count += len(offer.files)
        if chunk:
            self._defer(chunk, at, why, plan)

    def _defer(self, offers: dict[int, Offer], at: float, why: str, plan: Plan) -> None:
        retry_in = max(0.0, at - self.clock())
        self._answer(offers, Answer(0, retry_in=retry_in, why=why), plan)
        self._forget(offers)
        logger.info("job leader: %d node(s) put off for %.0f s (%s)", len(offers), retry_in, why)

    def _offer_again(self) -> None:
        """Answer the offers of unknown age (:meth:`after_store_gap`): never committed, "offer again" at once."""
        if self._unknown_age:
            self._put_off(self._unknown_age, self.clock(), "offered before this leader could see how long it waited")
            self._unknown_age = {}

    def _answer(self, offers: dict[int, Offer], answer: Answer, plan: Plan | None = None,
                verified: dict[int, bool] | None = None) -> None:
        """Answer each of ``offers`` with ``answer``, its ``seq`` the offer's, with the plan and the node's slots in it
        where ``plan`` is given, whether the commit held its files as offered (``verified``), and the successors."""
        wall, values = self.wall(), {}
        for node, offer in offers.items():
            slots: dict[str, Any] = {} if plan is None else {"plan": plan.to_json(), **plan.slots_in(node, wall)}
            values[f"answer/{node}"] = replace(answer, seq=offer.seq, successors=self._successors,
                                               verified=bool(verified and verified[node]), **slots).encode()
        self.store.multi_set(values)
        self.store.add("answered", 1)  # the nodes poll this counter, not their answers
