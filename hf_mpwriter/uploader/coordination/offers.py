"""A node's offers to its job's leader, and the leader's answers, in the job's store.

Apart from :mod:`.member` (what the node then does): this is the one exchange that must never leave an offer both taken
back and committed."""

from __future__ import annotations

import time
from collections.abc import Callable

from ...errors import Deferred, TargetError
from ...targets.base import UploadedFile
from ...timing import JobTiming
from .protocol import WITHDRAWN, Answer, Malformed, Offer, Skipped, claimer, lease_holder
from .store import CoordinationStore


class Offers:
    """This node's offers in the store: their numbers, the one that may still be in a leader's hands, the exchange."""

    def __init__(self, store: CoordinationStore, node: int, wait: float, taken_wait: float, timing: JobTiming,
                 malformed: Skipped, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """``wait``: how long an offer waits for the leader's answer; ``taken_wait``: how long for one a leader
        claimed (its commit under way); ``clock``, ``sleep``: this host's."""
        self.clock, self.sleep = clock, sleep
        self.store, self.node, self.wait, self.taken_wait = store, node, wait, taken_wait
        self.timing, self.malformed = timing, malformed
        self.seq = 0
        self.pending_since: float | None = None  # monotonic: our last offer, while a leader may still take it
        self.taken_back = 0  # offers taken back, the leader silent past its wait (``status``)

    def make(self, incarnation: int, files: list[UploadedFile], waiting: float, last: bool) -> bytes:
        """The next offer's value, numbered above every earlier uploader's of this node (the incarnation is the high
        part)."""
        self.seq = max(self.seq, incarnation << 32) + 1
        return Offer(self.seq, incarnation, self.wait, waiting, last, tuple(files)).encode()

    def exchange(self, offer: bytes) -> Answer | None:
        """Offer, wait for the answer; take the offer back (compare_set) when none comes in time (``None``). One that a
        leader claimed first is under way: its answer is waited for ``taken_wait``. :class:`Deferred` where that leader
        stopped leading (the next one takes the files), a transient :class:`TargetError` where it hangs;
        :class:`~.store.StoreError` where the store fails."""
        key = f"offer/{self.node}"
        self.pending_since = self.clock()  # from now on, an offer of ours may be in the store
        self.store.set(key, offer)
        self.store.add("offered", 1)  # the leader polls this counter, not every node's offer
        answer = self._await_answer(self.seq, self.wait)
        if answer is not None:
            return answer
        if self.store.compare_set(key, offer, WITHDRAWN):
            self.pending_since = None  # taken back: no leader can commit it any more
            self.taken_back += 1
            return None
        taker = claimer(self.store.get(key), self.seq)  # claimed: that leader's commit is under way
        if taker is None:
            return self.answer(self.seq)
        answer = self._await_answer(self.seq, self.taken_wait, lambda: self.leads(taker))
        if answer is not None:
            return answer
        self.pending_since = None  # a late commit of that leader is fenced by its parent (:mod:`.member`)
        if not self.leads(taker):  # it handed over (or died): the next leader takes them
            raise Deferred(f"the job's leader (node {taker[0]}) took this node's files, then stopped leading; they are "
                           "offered to the next one", 0.0)
        raise TargetError(f"the job's leader took this node's files and said nothing for {self.taken_wait:.0f} s "
                          "(it hangs); they are offered again", transient=True)

    def withdraw(self, offer: bytes) -> None:
        """Take back ``offer`` (answered, put off) if still in the store: a deposed leader's late answer to another
        offer must not revive it once this node committed newer files itself. :class:`~.store.StoreError` if the store
        fails."""
        self.store.compare_set(f"offer/{self.node}", offer, WITHDRAWN)

    def leads(self, taker: tuple[int, int]) -> bool:
        """Whether the leader ``(node, term)`` still holds the job's lease."""
        return lease_holder(self.store.get("lease")) == taker

    def _await_answer(self, seq: int, longest: float, worth_it: Callable[[], bool] | None = None) -> Answer | None:
        """Our answer, read each time the leader's ``answered`` counter moves (one round trip per poll);
        ``None`` after ``longest``, or once ``worth_it`` (asked every half lease) says no."""
        started = looked = self.clock()
        seen = None
        while self.clock() < self.store.until(started, longest):  # read again: a signal shortens it
            answered = self.store.add("answered", 0)
            if answered != seen:
                seen = answered
                answer = self.answer(seq)
                if answer is not None:
                    return answer
            if worth_it is not None and self.clock() - looked >= self.timing.lease_stale / 2:
                looked = self.clock()
                if not worth_it():
                    return self.answer(seq)  # (answered just before it stopped, maybe)
            self.sleep(self.timing.poll / 2)
        return None

    def answer(self, seq: int) -> Answer | None:
        """The leader's answer to offer ``seq``, if there is one; a malformed answer is none (counted)."""
        try:
            answer = Answer.decode(self.store.get(f"answer/{self.node}") or b"{}")
        except Malformed as exc:
            self.malformed.count(f"answer/{self.node}", exc)
            return None
        return answer if answer.seq == seq else None
