"""Say, before a Hub repository is full, that it is filling: a repository holds fewer than 100,000 files.

The queue knows every file this logdir committed (:meth:`~hf_mpwriter.state.jobqueue.JobQueue.count_committed`).
Past each share of the limit in :data:`THRESHOLDS` the uploader warns once (once per logdir: the
shares already said are kept in the queue, so a restarted uploader does not say them again), with
what to do. It refuses nothing: commits go on until the Hub refuses them, and that error is the
uploader's usual one (retried, the logs stay queued). A Storage Bucket or a local directory has no
such limit. Kept apart from the commit cycle: counting is not committing.
"""

from __future__ import annotations

import logging
import sqlite3

from .. import config as config_mod
from ..config import UploadConfig
from ..state.jobqueue import JobQueue

logger = logging.getLogger("hf_mpwriter.uploader")

#: Shares of the limit at which the uploader warns, once each.
THRESHOLDS = (0.8, 0.95)
_SAID_META = "file_limit_said:"


class FileLimitWatch:
    """Warns as the files this logdir committed to a repository near the Hub's limit."""

    def __init__(self, config: UploadConfig, limit: int = config_mod.HUB_MAX_FILES) -> None:
        self.config, self.limit = config, limit

    def check(self, queue: JobQueue, target_key: str) -> float | None:
        """After a commit: the share newly passed and warned about, or ``None``. Never raises for the
        queue (a warning must not stop uploads): a queue it cannot read is checked again next time."""
        if self.config.kind != "hub":
            return None
        try:
            count = queue.count_committed(target_key)
            passed = [share for share in THRESHOLDS if count >= share * self.limit]
            said = float(queue.get_meta(_SAID_META + target_key) or 0)
            if not passed or max(passed) <= said:
                return None
            queue.set_meta(_SAID_META + target_key, repr(max(passed)))
        except (OSError, sqlite3.Error) as exc:
            logger.debug("cannot count the files committed to %s yet (%s)", self.config.description, exc)
            return None
        self._warn(count, self.limit, max(passed))
        return max(passed)

    def _warn(self, count: int, limit: int, share: float) -> None:
        nodes = ""
        if self.config.nodes > 1:
            nodes = (f" This counts this logdir's files only: where each of the job's {self.config.nodes} nodes "
                     f"commits a logdir of its own, the repository holds about {self.config.nodes} times as many.")
        logger.warning(
            "%d files of this logdir are committed to %s: %.0f%% of the %d files a Hub repository can hold; past "
            "it, commits fail (the logs stay on disk and queued). Before then, start new runs (or restart this "
            "one, in a new logdir) with a Storage Bucket, which has no file limit (repo_id=\"hf://buckets/ns/name\"), "
            "or with a larger rotate_bytes (fewer, larger event files), or move old runs out of the repository.%s",
            count, self.config.description, share * 100, limit, nodes,
        )
