"""A node's commits in a job with a store: at its slot of the plan, it uploads its content (Xet, or LFS for a
repository), offers the files to the leader and waits for the answer; none in time, it takes the offer back and
commits them itself at its own slot, offering again meanwhile.

Who commits: a leader that answers; else the node at its own slot (no leader yet, a hand-over, a silent store); once
the store is lost, the node moves to the successor, and where none answers commits itself at once, then at its own
slots, paced by the Hub's 429s too. Safety never rests on the leader: every commit names its parent, fixed before the
offers are read, so a late leader's commit is refused (412) or extended; a bucket has no parent, and a late write that
makes a file older is found by the node's audit and sent again. No wall clock is compared across hosts: waits are
relative, on each host's monotonic clock."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ...errors import Deferred
from ...state.piece import Piece
from .job_node import JOB_AUDITORS, OWN_COMMITS, JobNode, store_prefix
from .leader import Leader, SharedTarget
from .plan import Plan, plausible
from .protocol import Answer
from .store import MAX_VALUE_BYTES, StoreError

logger = logging.getLogger("hf_mpwriter.uploader")

__all__ = ["JOB_AUDITORS", "OWN_COMMITS", "JobTarget", "Leader", "SharedTarget", "store_prefix"]


class JobTarget(JobNode):
    """A node's target in a job with a store: its commits go through the job's leader, or are its own (see the
    module)."""

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """What the leader verified right after committing these very pieces needs no second look, nor do pieces put
        off for the budget (nobody committed them: at a thousand nodes, a look each would spend the job's API budget);
        anything else is asked of the Hub."""
        identity = _identity(pieces)
        if self._verified is not None and self._verified == identity:
            self._verified = None
            return {}
        if self._deferred is not None and self._deferred == identity:
            self._deferred = None
            return {p.path: "not committed: put off for the job's budget" for p in pieces}
        return self.inner.differences(pieces)

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """Upload the content, offer it to the leader, and return its commit id; commit it ourselves
        when the leader does not answer in time or cannot take it."""
        self._before_signal = not self._hurried()
        if self._alone is not None:
            return self._commit_ourselves(pieces, message, self._alone)
        if self.offers.pending_since is not None:  # an earlier offer may still be in a store we cannot reach
            return self._commit_ourselves(pieces, message, "an earlier offer is still unresolved")
        if (silent := self.store.silent_for()) >= self.timing.store_lost:  # no offer into a store that answers nothing
            return self._commit_ourselves(pieces, message, f"the job's store answered nothing for {silent:.0f} s")
        if self.clock() < self._store_rests_until or not self._announce():
            return self._commit_ourselves(pieces, message, self.why or "the job's store failed")
        uploaded = self.inner.preupload(pieces)
        if uploaded is None:  # a regular (non-LFS) file travels in the commit itself; a bucket without Xet hashes
            return self._commit_ourselves(pieces, message, "its content cannot be committed by another node")
        now = self.clock()
        if self._waiting_since is None:
            self._waiting_since = now
        offer = self.offers.make(self.incarnation, list(uploaded), now - self._waiting_since,
                                 self._hurried() or self.closing)
        if len(offer) > MAX_VALUE_BYTES:  # not a store failure: this round has too many files for one value
            return self._commit_ourselves(pieces, message, f"{len(uploaded)} files are too many for one offer")
        try:
            if not self._hurried():  # (signalled: its last records go now)
                self.moving.learn()
            answer = self.offers.exchange(offer)
        except StoreError as exc:
            self.store_failed(exc)
            if self.store.gone():  # and our offer with it: no leader can take it any more
                self.offers.pending_since = None
            return self._commit_ourselves(pieces, message, str(exc))
        except Deferred:  # the leader that took them stopped leading: nobody put them off
            self._deferred = None
            raise
        if answer is None:
            return self._commit_ourselves(pieces, message, "the leader did not answer in time")
        return self._answered(answer, offer, pieces, message)

    def _answered(self, answer: Answer, offer: bytes, pieces: Sequence[Piece], message: str) -> str | None:
        """What the leader's answer means for these pieces: committed, put off (:class:`Deferred`), or ours."""
        self.offers.pending_since = None  # answered: no leader takes this offer again
        self.heard(answer, self.wall())
        if answer.retry_in is not None:
            try:  # (a put-off offer is offered anew, or committed here: never left for a late answer to revive)
                self.offers.withdraw(offer)
            except StoreError as exc:  # (it may be there still: not committed here before a leader would let it go)
                self.offers.pending_since = self.clock()
                self.store_failed(exc)
            if self._hurried():  # the node's disk goes before then
                return self._commit_ourselves(pieces, message, "the job's budget has no room before this node's deadline")
            self.mode, self.why = "job", None
            self._deferred = _identity(pieces)
            # Relative, and never past the budget's window: another host's idea of time does not hold this one up.
            raise Deferred(f"the job's leader puts this node's {len(pieces)} file(s) off to a later write "
                           f"({answer.why or 'the budget'})", min(answer.retry_in, self.budget.commit_window_s))
        if answer.commit is None:
            return self._commit_ourselves(pieces, message, f"the leader could not commit it: {answer.error}")
        self.mode, self.why = "job", None
        self.through_leader += 1
        self._landed()
        if answer.verified:
            self._verified = _identity(pieces)
        return answer.commit

    def heard(self, answer: Answer, wall: float) -> None:
        """The leader's plan and this node's slots in it, from an answer read at ``wall`` (this host's wall clock),
        where the job's settings can give that plan (:func:`~.plan.plausible`); else the node keeps its own pacing."""
        plan = None if answer.plan is None else Plan(**answer.plan)
        if plan is not None and plausible(plan, self.own_plan(1)):
            self.plan, self._phases = plan, plan.phases(answer.next_in, answer.own_in, wall)
        if answer.successors:
            self.moving.told(answer.successors)

    def _landed(self) -> None:
        """These pieces are committed: nothing of this node waits, nothing is put off."""
        self._waiting_since = self._deferred = None
        self.own.landed()

    def _commit_ourselves(self, pieces: Sequence[Piece], message: str, why: str) -> str | None:
        """Commit as a node without a store would, unless an offer of ours that could not be taken back may still be
        taken by a leader: then not before no leader takes it (the queue retries meanwhile). Unless the preemption
        deadline comes first (a silent store counts as gone then): the node's disk goes with it, and a late leader
        commits the same files."""
        if self.offers.pending_since is not None:
            now = self.clock()
            left = self.offers.pending_since + self.wait + self.timing.claim_margin - now
            if left > 0 and self.store.until(now, left) >= now + left:  # no deadline, or one that leaves the time
                raise Deferred(f"the job's leader did not commit this node's files ({why}), and the offer could not be "
                               f"taken back: this node commits them itself in {left:.0f} s", left)
            if left > 0:
                logger.warning("this node's offer could not be taken back (%s), and the preemption deadline comes first: "
                               "this node commits its files itself now", why)
            self.offers.pending_since = None
        # Forward, once: from a store seen once (one not there yet is not gone) to a successor that answers. Not once
        # signalled: finding the store lost may take a probe of it, a third of what is left before the deadline each.
        if not self._hurried() and (self.store_seen or self.successors) and self.moving.forward():
            self._moved()
            where = self.store.address
            raise Deferred(f"job-wide commit not made ({why}); this node offers its files again through store "
                           f"{where.host}:{where.port}", 0.0)
        if self._hurried():
            self._last_alone(why)
        wait = self._own_turn(len(pieces))
        self.mode, self.why = "node", why
        if wait > 0:
            self._deferred = _identity(pieces)
            raise Deferred(f"job-wide commit not made ({why}); this node commits its files itself at its turn in the "
                           f"job's budget", wait)
        logger.warning("job-wide commit not made (%s); this node commits its files itself", why)
        self.own.going()
        commit = self.inner.commit(pieces, message)
        self.own.made += 1
        self._landed()
        return commit

    def _last_alone(self, why: str) -> None:
        """Signalled, this node commits itself (``why``) from now on. Where the pieces in hand were taken before the
        signal, :class:`Deferred` at once: the uploader takes its newest files and commits them as its last, in one
        commit, not two. Also where its offer could not be taken back: a leader that claimed it fixed its parent
        before, so its commit lands before this node's or is refused (a bucket has no parent: a late write of that
        leader's takes the files back)."""
        self._alone = why
        if self._before_signal:
            self._before_signal = False
            raise Deferred(f"job-wide commit not made ({why}); signalled, this node commits its newest files itself "
                           "as its last", 0.0)

    def _own_turn(self, files: int) -> float:
        """Seconds until this node may commit its files itself (0: now). With the store alive: at its own slot,
        closing included (:meth:`.own_commits.OwnCommits.turn`; a thousand nodes without a leader would otherwise
        commit at once), the leader asked again at least every ``timing.store_retry`` meanwhile (one may be back). At
        once when the uploader was signalled (the node's disk goes with it) or the store it once reached is gone (then
        its own slots, :func:`.pacing.pacing`, and the Hub's 429s pace the commits)."""
        if self._hurried():
            return 0.0
        gone = self.store.gone()
        self.store_seen = self.store_seen or not gone  # something listens there: the store exists, if slow
        if gone and self.store_seen:
            if not self.store_gone:
                logger.warning("the job's store at %s:%d is gone (its host stopped): this node commits its files "
                               "itself from now on, at its own slots of the job's budget", self.store.address.host,
                               self.store.address.port)
            self.store_gone = True
            return 0.0
        phase = None if self._phases is None else self._phases[1]
        turn = self.own.turn(self.plan_now(files), self.node, self.wall(), phase, self.closing)
        return min(turn, self.timing.store_retry)


def _identity(pieces: Sequence[Piece]) -> tuple:
    return tuple(sorted((p.path, p.size, p.sha256) for p in pieces))
