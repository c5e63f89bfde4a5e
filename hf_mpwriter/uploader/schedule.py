"""When the uploader does what: every timing rule of its loop, as one pure object.

The loop asks :meth:`Schedule.decide` what to do now, does it, and reports back (:meth:`cycled`,
:meth:`failed`); the signals it sees (a writer asking for a commit, the last writer gone, SIGTERM)
go in through :meth:`trigger`, :meth:`writers` and :meth:`terminate`. Nothing here sleeps, reads a
file or a clock: the times come in as arguments, so every rule is tested with a fake clock.

The rules, in order of precedence:

1. **SIGTERM (preemption)**: a last commit *now*, whatever the interval, the target's spacing or a
   backoff: after :data:`SETTLE_S` (the ranks, signalled at the same moment, flush their last
   records), then again every :data:`TERM_GAP_S` while something new is on disk (at once where the
   target put the last send off by 0 s: its newest files, as its last commit), until everything is
   committed and no writer is left, or the deadline (``preemption_deadline``) ends it.
2. **The last writer gone**: commit at once (the job is over; its grace period may be short), then
   retry every ``final_gap`` until everything is committed (exit 0) or ``drain_timeout`` (exit 1:
   ``hf-mpwriter sync`` finishes it), but never before the time the target asked it to wait for
   (a put-off of the job's leader, the Hub's ``Retry-After``: :meth:`Schedule.drain_until`). An
   error only the user can fix (no token, a refused one, no such repository:
   :attr:`Schedule.needs_user`) ends it after that first commit (exit 1): nobody is left to fix it,
   and retrying alone never will.
3. **A writer asks** (``close()``, ``scheduler.trigger()``): commit after :data:`SETTLE_S` (ranks
   closing together share the commit), but not sooner than ``trigger_gap`` after the last cycle: ranks
   closing one after the other make one commit per target spacing, not one per rank.
4. **The interval**: a single node every ``interval`` (a backlog from an earlier run goes at once);
   the nodes of a job each at their own slot of the wall clock they share (``phase``).
5. **Retries**: a failed job when its backoff (kept in the queue, so it survives restarts) runs out;
   after a local error (disk full, database locked) every :data:`LOCAL_RETRY_S` (:data:`TERM_GAP_S` after
   SIGTERM), and nothing sooner, whatever else is due (:meth:`Schedule.local_wait`); after an unexpected
   error, a pause of :data:`UNEXPECTED_ERROR_PAUSE_S`.

Times: ``now`` is the monotonic clock (what the rules measure); ``wall`` is ``time.time()``, used only
for the node slots, which the nodes of a job must agree on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum

from ..timing import (
    CALL_BOUND_TIMEOUTS,
    CALL_MIN_RATE_BPS,
    DEFAULT_PREEMPTION_DEADLINE_S,
    FINAL_GAP_S,
    LOCAL_RETRY_S,
    MAX_BACKOFF_S,
    NEEDS_USER_BACKOFF_S,
    POLL_S,
    SETTLE_S,
    SIGNAL_REPEAT_S,
    TERM_GAP_S,
    UNEXPECTED_ERROR_PAUSE_S,
)

__all__ = [  # the policy's numbers this module turns into decisions (hf_mpwriter.timing), and the decisions
    "CALL_BOUND_TIMEOUTS", "CALL_MIN_RATE_BPS", "DEFAULT_PREEMPTION_DEADLINE_S", "FINAL_GAP_S", "LOCAL_RETRY_S",
    "MAX_BACKOFF_S", "NEEDS_USER_BACKOFF_S", "POLL_S", "SETTLE_S", "SIGNAL_REPEAT_S", "TERM_GAP_S", "UNEXPECTED_ERROR_PAUSE_S",
    "Action", "Decision", "Pacing", "Schedule", "backoff", "call_bound",
]


def call_bound(read_timeout: float, nbytes: int = 0) -> float:
    """Seconds after which a call to the target is abandoned (:mod:`.target_calls`).

    Why a bound of our own: HTTP timeouts bound each request of the client, but not a call made of
    several (a commit is a token request, Xet transfers, the commit itself), and hf_xet's transfers to
    the CAS get no timeout at all (a half-open connection holds them for ever). Three read timeouts
    leave room for the client's own retry of a timed-out request; the bytes term keeps a large upload
    on a slow link from being abandoned while it progresses.
    """
    return CALL_BOUND_TIMEOUTS * read_timeout + max(0, nbytes) / CALL_MIN_RATE_BPS


class Action(str, Enum):
    CYCLE = "cycle"  # reconcile, snapshot, commit
    WAIT = "wait"  # nothing due: look again after ``Decision.wait`` seconds
    EXIT = "exit"  # the uploader's work is over (``Decision.code``)


#: The reason of a cycle a writer asked for (``close()``, ``scheduler.trigger()``).
ASKED = "a writer asked for a commit"

@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    wait: float = 0.0  # WAIT: seconds until the next rule is due (the loop looks again sooner: POLL_S)
    code: int = 0  # EXIT: 0 everything committed, 1 a backlog is left (``hf-mpwriter sync`` finishes it)
    urgent: bool = False  # CYCLE: skip a job's backoff (a writer or a signal asked for it now)


@dataclass(frozen=True)
class Pacing:
    """The settings the rules read: where they come from is :meth:`~.node_pacing.NodePacing.settings`."""

    interval: float  # seconds between this node's regular commits
    phase: float | None  # this node's slot in the wall-clock cycle; None for a single node
    trigger_gap: float  # commits asked for by writers come at most this often
    final_gap: float  # drain attempts once every writer is gone
    drain_timeout: float  # give up this long after the last writer went (the backlog stays queued)
    preemption_deadline: float  # after SIGTERM, exit by then whatever is left
    watch: bool = False  # `sync --watch`: keeps running with no writer


def backoff(attempts: int, transient: bool, retry_after: float | None, rand: float | None = None) -> float:
    """Seconds before retrying a failed job: exponential with jitter, at least what the server asked.

    ``rand`` in [0, 1) replaces the random jitter (tests)."""
    jitter = 0.5 + (random.random() if rand is None else rand)
    delay = min(MAX_BACKOFF_S, 2.0 ** max(0, attempts - 1)) * jitter
    if not transient:
        delay = max(delay, NEEDS_USER_BACKOFF_S)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def doubling(failures: int, first: float, cap: float) -> float:
    """The pause after ``failures`` in a row (a bounded retry without jitter): ``first``, doubling, up to ``cap``."""
    return min(cap, first * 2 ** min(failures, 16))


def until_turn(interval: float, phase: float, wall: float, after: float = 0.0) -> float:
    """Seconds from ``wall`` until this node's next turn (wall-clock times ``phase`` modulo
    ``interval``), at least ``after``. An error in the wall clock only shifts a node's turns; it never
    makes a node commit more often than once per ``interval``."""
    if interval <= 0:
        return max(0.0, after)
    wait = (phase - wall) % interval
    if wait < after:
        wait += math.ceil((after - wait) / interval) * interval
    return wait


class Schedule:
    """The uploader's clock: what is due now, given what happened (see the module docstring)."""

    def __init__(self, pacing: Pacing, now: float, wall: float) -> None:
        self.pacing = pacing
        p = pacing
        # A single node sends a backlog from an earlier run at once; the nodes of a job wait for their turn.
        self.next_cycle = now if p.phase is None else now + until_turn(p.interval, p.phase, wall)
        self.last_cycle = -math.inf
        self.triggered_at: float | None = None
        self.writers_alive = True  # until the loop has looked
        self.gone_at: float | None = None  # when the last writer was seen gone
        self.gone_cycled = False  # the commit for "writers gone" was made
        #: Monotonic: the target asked to wait until then (a put-off, a ``Retry-After``): see :meth:`drain_until`.
        self.held_until = -math.inf
        self.term_at: float | None = None  # first SIGTERM/SIGINT/SIGHUP
        self.abandon = False  # second signal: exit at once
        self.retry_at = math.inf  # a local error asked for a retry then
        self.again = False  # the last cycle's send was put off by 0 s (its newest files go at once)
        self.pause_until = -math.inf  # after an unexpected error
        self.needs_user = False  # the last cycle met an error only the user can fix (set by the loop)

    # -- what the loop sees ----------------------------------------------------------------------
    def trigger(self, now: float) -> None:
        """A writer (``close()``, ``trigger()``, its SIGTERM handler) or ``sync`` wants a commit now."""
        if self.triggered_at is None:
            self.triggered_at = now

    def writers(self, now: float, alive: bool) -> None:
        """Whether any writer of the logdir is alive (checked every poll)."""
        if alive:
            self.gone_at, self.gone_cycled = None, False
        elif self.gone_at is None:
            self.gone_at = now
        self.writers_alive = alive

    def terminate(self, now: float) -> bool:
        """A termination signal: the first starts the last commit, a second ends the uploader now,
        unless it came within :data:`SIGNAL_REPEAT_S` of the first (the same event, delivered twice).
        Whether this signal counted."""
        if self.term_at is None:
            self.term_at = now
        elif now - self.term_at >= SIGNAL_REPEAT_S:
            self.abandon = True
        else:
            return False
        return True

    def deadline(self) -> float:
        """Monotonic time by which the uploader must be gone (``inf`` unless terminating)."""
        if self.abandon:
            return -math.inf
        return math.inf if self.term_at is None else self.term_at + self.pacing.preemption_deadline

    @property
    def ending(self) -> bool:
        """Terminating, or every writer gone (not watching): only then does :meth:`decide` read ``drained``."""
        return self.term_at is not None or (not self.writers_alive and not self.pacing.watch)

    # -- what to do ----------------------------------------------------------------------------------
    def decide(self, now: float, *, drained: bool, retry_due: bool) -> Decision:
        """What to do at ``now``. ``drained``: nothing queued or on disk beyond what the target holds;
        ``retry_due``: a failed job's backoff has run out."""
        held = self.local_wait(now)
        if held is not None:
            return held
        if self.term_at is not None:
            return self._terminating(now, drained)
        p = self.pacing
        gone = not self.writers_alive and not p.watch
        if gone:
            assert self.gone_at is not None
            if drained:
                return Decision(Action.EXIT, "every writer is gone and everything is committed")
            if self.gone_cycled and self.needs_user:
                return Decision(Action.EXIT, "every writer is gone and the error needs the user", code=1)
            if now > self.drain_until():
                return Decision(Action.EXIT, "every writer is gone; gave up after drain_timeout", code=1)
        if now < self.pause_until:
            return Decision(Action.WAIT, "pause after an unexpected error", wait=self.pause_until - now)
        if gone and not self.gone_cycled:
            return Decision(Action.CYCLE, "the last writer is gone", urgent=True)
        triggered = (math.inf if self.triggered_at is None or p.trigger_gap == math.inf  # (asks ride the next slot)
                     else max(self.triggered_at + SETTLE_S, self.last_cycle + p.trigger_gap))
        final = self.last_cycle + p.final_gap if gone else math.inf
        if now >= triggered:
            return Decision(Action.CYCLE, ASKED, urgent=True)
        if now >= final:
            return Decision(Action.CYCLE, "draining: every writer is gone")
        if now >= self.next_cycle:
            return Decision(Action.CYCLE, "interval")
        if retry_due:
            return Decision(Action.CYCLE, "a failed job's backoff ran out")
        if now >= self.retry_at:
            return Decision(Action.CYCLE, "retry after a local error")
        due = min(triggered, final, self.next_cycle, self.retry_at)
        if gone:
            due = min(due, self.drain_until() + 1e-6)
        return Decision(Action.WAIT, "nothing due", wait=due - now)

    def drain_until(self) -> float:
        """When an uploader whose writers are gone gives up: ``drain_timeout`` after they went, and never
        before the target's last "wait until" (:attr:`held_until`) and one more try after it."""
        assert self.gone_at is not None
        return max(self.gone_at + self.pacing.drain_timeout, self.held_until + self.pacing.final_gap)

    def local_wait(self, now: float) -> Decision | None:
        """WAIT while a local error's retry is not due, else ``None``. The loop asks this before it reads
        the queue for :meth:`decide`: reading it may be what fails (a queue that cannot be opened on a
        full disk), and a failure every poll would be a retry every poll."""
        if self.retry_at == math.inf:  # no local error
            return None
        until = min(self.retry_at, self.deadline())
        if self.term_at is not None:  # the deadline is near: as often as a last commit is tried
            until = min(until, self.last_cycle + TERM_GAP_S)
        return Decision(Action.WAIT, "waiting to retry after a local error", wait=until - now) if now < until else None

    def _terminating(self, now: float, drained: bool) -> Decision:
        assert self.term_at is not None
        if self.abandon:
            return Decision(Action.EXIT, "a second signal", code=0 if drained else 1)
        if drained and not self.writers_alive:
            return Decision(Action.EXIT, "terminated: everything is committed")
        if now >= self.deadline():
            return Decision(Action.EXIT, "terminated: the preemption deadline passed", code=0 if drained else 1)
        due = max(self.term_at + SETTLE_S, self.last_cycle + (0.0 if self.again else TERM_GAP_S))
        if not drained and now >= due:
            return Decision(Action.CYCLE, "terminating: last commit", urgent=True)
        # Drained while writers live on (still handling the signal): wait for them, or for more data.
        return Decision(Action.WAIT, "terminating", wait=(due if due > now else self.deadline()) - now)

    # -- what happened -------------------------------------------------------------------------------
    def repace(self, pacing: Pacing, now: float, wall: float) -> None:
        """New pacing, from now on (the only way it changes): the next cycle at its next turn, never sooner
        than half an interval after the last (a leader's plan, the store gone, a logdir found shared by the
        job's nodes). A node's slots are the job's: a turn of the old pacing is not kept."""
        if (pacing.interval, pacing.phase) == (self.pacing.interval, self.pacing.phase):
            self.pacing = pacing
            return
        self.pacing = pacing
        if pacing.phase is not None:
            after = max(0.0, self.last_cycle + pacing.interval / 2 - now)
            self.next_cycle = now + until_turn(pacing.interval, pacing.phase, wall, after)

    def cycled(self, now: float, wall: float, reason: str, again: bool = False) -> None:
        """A cycle ran (whatever its outcome: a failed job carries its own backoff in the queue). ``again``: its send
        was put off by 0 s (a signalled node's newest files, as its last commit): after a signal, no gap before it."""
        p = self.pacing
        self.last_cycle, self.again = now, again
        self.retry_at = math.inf
        if self.triggered_at is not None and self.triggered_at <= now:
            self.triggered_at = None
        if not self.writers_alive:
            self.gone_cycled = True
        after = max(p.interval / 2, p.trigger_gap)
        if (reason == ASKED and p.phase is not None and now < self.next_cycle < now + after
                and math.isfinite(after)):  # a writer's ask just before a slot takes its place
            self.next_cycle = now + until_turn(p.interval, p.phase, wall, after)
        elif now >= self.next_cycle:
            if p.phase is not None:
                self.next_cycle = now + until_turn(p.interval, p.phase, wall, p.interval / 2)
            else:  # on the interval's own beat (no drift by how late the loop looked), never in a burst
                self.next_cycle = max(self.next_cycle + p.interval, now + p.interval / 2)

    def failed(self, now: float, local: bool) -> None:
        """The cycle failed locally (disk full, locked database: retry soon) or unexpectedly (pause)."""
        self.last_cycle = now
        if local:
            self.retry_at = now + LOCAL_RETRY_S
        else:
            self.pause_until = now + UNEXPECTED_ERROR_PAUSE_S
