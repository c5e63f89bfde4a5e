"""The job's lease: which node's uploader leads the job's commits, kept only while its rounds make progress (the rounds
are :class:`~.leader.Leader`'s).

One value in the job's store, ``lease``, renewed with ``compare_set`` every ``timing.poll`` by its holder and watched by
every other node; one not renewed for ``timing.lease_stale`` (on the observer's clock) is taken over. A holder whose
writes or head reads fail for a hand-over time, whose rounds keep raising, or whose call to the Hub hangs, lets it go
and does not take it again for a while, longer each time in a row.

A holder is ``(node, term)``, the term drawn from the store's ``terms`` counter at each take: an uploader that
replaced itself (an ``exec``: the same node, the same pid) is a new holder, and the offers its predecessor claimed are
no longer led.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Callable

from ...timing import ABSTAIN_FACTOR, JobTiming
from ..schedule import doubling
from .protocol import LeaseValue, lease_holder
from .store import CoordinationStore, StoreError

logger = logging.getLogger("hf_mpwriter.uploader")



class Lease:
    """The lease's side of a node's :class:`~.leader.Leader`: a thread that holds (or watches) it."""

    def __init__(self, store: CoordinationStore, node: int, nodes: int, timing: JobTiming, commit_every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: this host's monotonic clock (a simulation hands in a virtual one: ``tests/leasesim.py``)."""
        self.store, self.node, self.nodes, self.timing, self.clock = store, node, nodes, timing, clock
        self._handover_after = max(timing.lease_stale, commit_every)  # (the plan's interval, set at each round)
        self.leading = False
        self._lease: bytes | None = None  # the value we last wrote (leading) or saw (watching)
        self._lease_seen_at = clock()
        self._renewals = 0
        self.leases = 0  # times this node took the job's lease (``status``: a new leader each time)
        self.term = 0  # the store's number for this node's current (or last) hold of the lease
        self.term_moves = 0  # the store's moves when that term began (:attr:`JobStore.moves`): its store
        #: Progress, on this host's monotonic clock: since when the writes (or head reads) fail, and since
        #: when the current round is in a call to the Hub (``None``: not failing, not in a call).
        self._failing_since: float | None = None
        self._round_failing_since: float | None = None  # rounds that raise an error nobody expected, in a row
        self._in_call_since: float | None = None
        self._call_limit = math.inf  # how long the call under way may take before the leader counts as stuck
        self._abstain_until = -math.inf  # monotonic: handed over; the lease is not taken again before then
        self.handed_over: str | None = None  # why this node last let the lease go (``status``)
        self._handovers = 0  # hand-overs since this node's last successful write
        self._store_failures = 0  # the store's, in a row (the lease's ticks pause longer)
        #: Ticks that raised an error nobody expected: logged and counted, the lease kept on (a simulation fails on any).
        self.tick_errors = 0
        #: A call to the store failed, or a term began, since the offers were last read: what a node offered before
        #: may be older than its wait (:meth:`~.seen_offers.SeenOffers.after_store_gap`).
        self.store_gap = False
        self._round_lock = threading.Lock()  # held while a round runs
        self._stop = threading.Event()

    def _keep_lease(self) -> None:
        """The lease's thread: :meth:`tick`, then its pause, until stopped."""
        while not self._stop.is_set():
            self._stop.wait(self.tick())

    def tick(self) -> float:
        """Renew the lease while leading and making progress, or hand it over; otherwise watch it, less often the more
        nodes watch (each look is a round trip to the job's store), well within its staleness. The seconds until the
        next tick: after store failures in a row, longer each time (capped at half the lease's staleness: the offers
        outlive it)."""
        try:
            stalled = self._stalled(self.clock()) if self.leading else None
            if stalled is not None:
                self._hand_over(stalled)
            else:
                self._hold_lease()
            if self.store_gap:
                self.after_store_gap()
            self._store_failures = 0
        except StoreError as exc:
            if self.leading:
                logger.warning("job leader: %s; the nodes commit their files themselves meanwhile", exc)
            self.leading = False
            self._store_failures += 1
            self.store_gap = True
        except Exception:  # never die: the nodes would fall back for good
            self.tick_errors += 1
            logger.exception("job leader: the lease could not be kept")
        if self._store_failures:
            return doubling(self._store_failures, self.timing.poll, self.timing.lease_stale / 2)
        watch_every = max(self.timing.poll, min(self.timing.lease_stale / 4, self.nodes * self.timing.poll / 100))
        return self.timing.poll if self.leading else watch_every

    # -- what the rounds report: the progress the lease is kept for --------------------------------
    def call_began(self, limit: float) -> float:
        """A call to the Hub starts; it counts as stuck past ``limit`` seconds. When it started."""
        self._call_limit = limit
        started = self._in_call_since = self.clock()
        return started

    def call_ended(self, started: float, failed: bool) -> None:
        """The call begun at ``started`` ended; a failure starts (or continues) the failing span."""
        self._in_call_since = None
        if failed and self._failing_since is None:
            self._failing_since = started

    def wrote(self) -> None:
        """A write to the Hub went through: progress (a later hand-over starts its abstention afresh)."""
        self._failing_since, self._handovers = None, 0

    def round_ended(self, failed: bool) -> None:
        """A round ended; one that raised what nobody expected starts (or continues) that failing span."""
        if not failed:
            self._round_failing_since = None
        elif self._round_failing_since is None:
            self._round_failing_since = self.clock()

    def handover_after(self) -> float:
        """How long a leader may fail to write before it hands the lease over: one interval of the plan (at least a
        lease's staleness), so that the job has a working leader again within two. Set by the rounds: the lease thread
        never reads the plan's inputs while a round changes them."""
        return self._handover_after

    def _stalled(self, now: float) -> str | None:
        """Why this leader makes no progress (its writes fail, or a call hangs), or ``None``."""
        if self._failing_since is not None and now - self._failing_since >= self.handover_after():
            return f"its writes to the Hub have failed for {now - self._failing_since:.0f} s"
        if self._round_failing_since is not None and now - self._round_failing_since >= self.handover_after():
            return f"its rounds have failed for {now - self._round_failing_since:.0f} s"
        if self._in_call_since is not None and now - self._in_call_since >= self._call_limit:
            return f"a call to the Hub has not ended in {now - self._in_call_since:.0f} s"
        return None

    def after_store_gap(self) -> None:
        """Called after a store gap or at a new term (:attr:`store_gap`); :meth:`.SeenOffers.after_store_gap`
        overrides it."""
        self.store_gap = False

    def _hand_over(self, why: str) -> None:
        """Let another node lead: this one does not take the lease again for a while."""
        self.handed_over = why
        self._handovers += 1  # in a row: a node that keeps failing waits longer before it leads again
        first = ABSTAIN_FACTOR * self.handover_after()
        self._abstain_until = self.clock() + doubling(self._handovers - 1, first, 16 * first)
        self._failing_since = None
        logger.warning("job leader: node %d hands the job's commits over to another node: %s", self.node, why)
        self.let_go(why)

    def let_go(self, why: str) -> None:
        """Stop leading; release the lease now if no round runs (else it goes stale unrenewed)."""
        self.leading = False
        if self._lease is None or not self._round_lock.acquire(timeout=self.timing.poll):
            logger.info("job leader: a round still runs (%s): the lease goes stale instead of being released", why)
            return
        try:
            self.store.compare_set("lease", self._lease, b"")
        except StoreError:
            pass
        finally:
            self._round_lock.release()

    def _hold_lease(self) -> bool:
        """Renew our lease, or take one that is free or was not renewed for ``timing.lease_stale``."""
        now = self.clock()
        if self.leading:
            assert self._lease is not None
            mine = self._lease_value(self.term)
            if self.store.compare_set("lease", self._lease, mine):
                self._lease = mine
                return True
            logger.warning("job leader: node %d lost the lease (another node took over)", self.node)
            self.leading = False
        current = self.store.get("lease") or b""
        if now < self._abstain_until:  # handed over: another node first
            return False
        ours = bool(self.term) and lease_holder(current) == (self.node, self.term)
        # Ours, unrenewed since a store error (a new term would make the nodes offer what this one claimed again).
        if ours and self.term_moves == self.store.moves:
            return self._renew_own(current)
        if current != self._lease:
            self._lease, self._lease_seen_at = current, now
        if current and not ours and now - self._lease_seen_at < self.timing.lease_stale:
            return False  # (ours from before the store moved, back here: a new term at once, whose rounds run here)
        moves = self.store.moves  # (the store this term is taken on: one the connection moved from is not it)
        term = self.store.add("terms", 1)  # (drawn even if the take fails: the counter only grows)
        mine = self._lease_value(term)
        if not self.store.compare_set("lease", current, mine):
            return False
        self.term, self._lease, self.term_moves = term, mine, moves
        self.leases += 1
        self._failing_since = None
        self.store_gap = True  # (the offers there now: how long they have waited, this term cannot know)
        self.leading = True  # (last: a round that sees it sees this term)
        logger.info("job leader: node %d leads the job's commits", self.node)
        return True

    def holds(self) -> bool:
        """Whether the store's lease names this node's term now, asked of the store (a leader paused past its lease
        wakes in its round before its lease thread sees another took it). :class:`StoreError` if the store fails."""
        return lease_holder(self.store.get("lease")) == (self.node, self.term)

    def _renew_own(self, current: bytes) -> bool:
        mine = self._lease_value(self.term)
        if not self.store.compare_set("lease", current, mine):
            return False
        self._lease, self.leading = mine, True
        logger.info("job leader: node %d leads the job's commits again (its lease outlived a store error)", self.node)
        return True

    def _lease_value(self, term: int) -> bytes:
        self._renewals += 1
        return LeaseValue(self.node, term, os.getpid(), self._renewals).encode()
