"""The queue as the processes that are not the uploader read it: a writer's ``close()`` and heartbeat.

Read-only, one short connection per read, never in the uploader's way. A queue that does not exist
yet, or is being rebuilt, reads as empty: that passes. A read that keeps failing with
``sqlite3.OperationalError`` (a lock that is never released, an I/O error, a file SQLite cannot open)
is said once it has lasted :data:`~hf_mpwriter.timing.READ_FAILING_S`, with what to check: otherwise
a closing writer would wait out its ``close_timeout`` in silence, then claim that its files were not
committed, whatever the uploader did.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from ..timing import READ_FAILING_S
from .filesystem import queue_advice
from .jobqueue import JobQueue
from .lost import LOST_META, Lost, decode
from .upload_error import UploadError

logger = logging.getLogger(__name__)


def read_error(db: Path) -> UploadError | None:
    """The uploader's current error (read-only): what ``status``, ``close()`` and the CLI show."""
    return _read_only(db, lambda queue: queue.error(), None)


def read_committed(db: Path, target: str) -> dict[str, int]:
    """``path -> committed size`` for a training process waiting in ``close()``: read-only, never
    blocks the uploader, and ``{}`` while the queue does not exist yet or is being rebuilt."""
    return _read_only(db, lambda queue: queue.known_sizes(target), {})


def read_lost(db: Path) -> list[Lost]:
    """The steps of resumed runs the uploader found lost with an earlier attempt's disk."""
    return _read_only(db, lambda queue: decode(queue.get_meta(LOST_META)), [])


def read_failure(db: Path) -> str | None:
    """The error every read of ``db`` by this process has met for at least ``READ_FAILING_S``, if any."""
    return _failures.lasting(db)


class _Failures:
    """Since when this process's reads of each queue fail (until one succeeds), and what was said."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.error: dict[str, str] = {}
        self.said: set[tuple[str, str]] = set()  # (queue, error): each said once per process

    def failed(self, db: Path, exc: sqlite3.OperationalError) -> None:
        key, text = str(db), str(exc)
        lasted = time.monotonic() - self.since.setdefault(key, time.monotonic())
        self.error[key] = text
        if lasted >= READ_FAILING_S and (key, text) not in self.said:
            self.said.add((key, text))
            logger.warning(
                "this process cannot read the upload queue %s (%s, for %.0f s), so it cannot see what is "
                "committed; nothing is lost (the logs stay on disk). %s", db, text, lasted, queue_advice(db))

    def succeeded(self, db: Path) -> None:
        self.since.pop(str(db), None)

    def lasting(self, db: Path) -> str | None:
        since = self.since.get(str(db))
        return self.error.get(str(db)) if since is not None and time.monotonic() - since >= READ_FAILING_S else None


_failures = _Failures()


def _read_only(db: Path, read: Callable[[JobQueue], Any], default: Any) -> Any:
    try:
        queue = JobQueue(db, readonly=True)
        try:
            value = read(queue)
        finally:
            queue.close()
    except sqlite3.OperationalError as exc:  # locked, an I/O error, cannot open: said if it lasts
        _failures.failed(db, exc)
        return default
    except Exception:  # not created yet, or being rebuilt by the uploader
        return default
    _failures.succeeded(db)
    return value
