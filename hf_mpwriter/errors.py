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

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
