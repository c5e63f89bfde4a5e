"""A job of the commit queue as Python holds it: its states, the moves between them, its next step.

Apart from :mod:`hf_mpwriter.state.jobqueue` (the SQLite queue that stores jobs and moves them):
what a job is, and what the uploader does with it next, without a database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

from .piece import Piece


class JobState(str, Enum):
    """Where a job stands, as stored in the queue."""

    PENDING = "pending"  # queued (new snapshots merge into it); after a failure, with a retry time
    INFLIGHT = "inflight"  # handed to the target: found so after a crash, its outcome is unknown
    DONE = "done"  # the target holds it (acknowledged, or found there when reconciled)


class Step(str, Enum):
    """What the uploader does with the unfinished job now; decided in one place, :meth:`Job.step`."""

    RECONCILE = "reconcile"  # the last attempt's outcome is unknown: ask the target, then send if needed
    BACK_OFF = "back_off"  # it failed: wait until ``next_try`` (new data waits on disk meanwhile)
    SEND = "send"  # due: commit it


#: The only moves a job can make (:meth:`~hf_mpwriter.state.jobqueue.JobQueue.move` refuses any other).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.INFLIGHT, JobState.PENDING, JobState.DONE}),
    JobState.INFLIGHT: frozenset({JobState.PENDING, JobState.DONE}),
    JobState.DONE: frozenset(),
}


@dataclass
class Job:
    """One commit: the pieces it carries and where it stands."""

    id: int
    target: str
    state: JobState
    pieces: list[Piece]
    attempts: int = 0
    next_try: float = 0.0
    last_error: str | None = None
    commit_id: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def bytes(self) -> int:
        return sum(p.size for p in self.pieces)

    def step(self, now: float) -> Step:
        """The job's next step at time ``now`` (a sync or a closing writer skips the backoff by
        resetting ``next_try``: :meth:`~hf_mpwriter.state.jobqueue.JobQueue.reset_backoff`)."""
        if self.state is JobState.INFLIGHT:
            return Step.RECONCILE  # a crash or a lost answer: it may have landed
        if self.attempts and self.next_try > now:
            return Step.BACK_OFF
        if self.attempts:
            return Step.RECONCILE  # it failed, but may have landed anyway (a lost response)
        return Step.SEND
