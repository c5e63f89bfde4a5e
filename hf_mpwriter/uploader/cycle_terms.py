"""The terms a commit cycle works in: what it is handed (the target's ``call``, the clocks), what it reports
(:class:`Progress`), and how long it waits after a target's error (:func:`backoff`).

Why apart: the cycle (:mod:`.commit_cycle`) and the audit (:mod:`.audit`, its base) both speak them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

from ..errors import TargetError
from . import schedule as schedule_mod

T = TypeVar("T")


@dataclass
class Progress:
    """What a cycle did, for progress bars and logs."""

    committed_bytes: int = 0
    pending_bytes: int = 0
    commits: int = 0
    error: str | None = None
    fatal: bool = False  # the error needs the user (token, repo, revision): retrying alone won't help
    local_error: bool = False  # the disk or the queue refused (full disk, locked database): retry soon
    again: bool = False  # the target put the send off by 0 s: a new snapshot is to be sent at once


class TargetCall(Protocol):
    """How the committer calls the target: ``call(what, fn, *args)`` returns ``fn(*args)``; ``nbytes``
    (the bytes the call sends) lengthens its bound (see :func:`hf_mpwriter.uploader.schedule.call_bound`)."""

    def __call__(self, what: str, fn: Callable[..., T], *args: Any, nbytes: int = 0) -> T: ...


class Clock(Protocol):
    """The committer's clocks: ``time.time`` for the queue's wall times, ``time.monotonic`` for its own waits."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


def backoff(attempts: int, error: TargetError) -> float:
    """Seconds before retrying after ``error`` (see :func:`hf_mpwriter.uploader.schedule.backoff`)."""
    return schedule_mod.backoff(attempts, error.transient, error.retry_after)
