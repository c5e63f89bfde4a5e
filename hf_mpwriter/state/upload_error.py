"""The uploader's current error, as the queue records it: what kind of help it needs, and its parser.

Apart from :mod:`hf_mpwriter.state.jobqueue`, which stores it
(:meth:`~hf_mpwriter.state.jobqueue.JobQueue.record_error`): writers read it through
:mod:`hf_mpwriter.state.queue_readers` and say it (``close()``, the heartbeat).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum


class ErrorKind(str, Enum):
    """What an error needs: time (retrying fixes it), the user (a token, a repository), or space."""

    TRANSIENT = "transient"  # network, 5xx, 429, 409/412: retried with backoff
    NEEDS_USER = "needs_user"  # 401/403, repository or revision not found: retrying alone won't help
    LOCAL = "local"  # full disk, locked database, a vanished local file: retried every few seconds


@dataclass
class UploadError:
    """The uploader's current error, as recorded in the queue (one record, one reader)."""

    kind: ErrorKind
    text: str  # already redacted
    pid: int  # the uploader that recorded it: a writer ignores the error of an uploader that is gone
    time: float  # when it was last met
    since: float  # when errors of this kind began (without a success or another kind in between)

    @classmethod
    def parse(cls, raw: str | None) -> UploadError | None:
        try:
            data = json.loads(raw) if raw else None
            if not data:
                return None
            at = float(data["time"])
            return cls(ErrorKind(data["kind"]), str(data["text"]), int(data["pid"]), at, float(data.get("since", at)))
        except (ValueError, KeyError, TypeError):
            return None
