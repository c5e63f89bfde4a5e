"""Exceptions with messages a person can act on: what is wrong, and what to change."""

from __future__ import annotations


class HFMPWriterError(Exception):
    """Base class of this library's errors."""


class ConfigurationError(HFMPWriterError, ValueError):
    """Bad constructor input (logdir, rank, repo id, repo type, interval...): raised before any data
    is written, so nothing is lost by fixing it and starting again."""


class TargetError(HFMPWriterError):
    """A commit to the target failed. ``transient`` errors are retried with backoff; the others
    (bad token, missing repo or revision) need the user, and are reported in ``status`` and at
    ``close()`` while the data stays queued."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None,
                 timed_out: bool = False, raced: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.timed_out = timed_out  # the call took too long (a read timeout, a 408 or 504): maybe too big
        self.raced = raced  # another commit landed first (412): the retry reconciles, usually no one's fault


class Deferred(TargetError):
    """Not an error: the job's budget has no room for this commit now (the leader said so, or this node's
    own turn has not come). The files wait on disk and are sent again in ``retry_after`` seconds, with
    no backoff and nothing for ``status`` or the writers to report."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, transient=True, retry_after=max(0.0, retry_after))


#: What error texts say where the logdir goes: they are made where its path is not known (a target).
LOGDIR_PLACEHOLDER = "LOGDIR"


def in_logdir(text: str, logdir: object) -> str:
    """``text`` with the logdir's real path where it says ``LOGDIR``: advice to paste, not to edit."""
    return text.replace(LOGDIR_PLACEHOLDER, str(logdir))


def with_sync_advice(text: str, logdir: object, lead: str = "once that is fixed, this finishes the job") -> str:
    """``text`` (see :func:`in_logdir`) ending with the command that finishes the job, unless it names it
    already: one command per message, the real path in it."""
    text = in_logdir(text, logdir)
    if "hf-mpwriter sync" in text:
        return text
    return f"{text}; {lead}: `hf-mpwriter sync {logdir}`"
