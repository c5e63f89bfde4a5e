"""A node's own commits not told to the job's store yet, kept on the node's disk.

Why: a node that commits its files itself while the store hangs cannot add them to the store's ``own_writes``
(the counter the leaders' books count) until the store answers again. Killed meanwhile, its uploader would take
that count with it, and the next leader would spend the window's budget again. Kept in the logdir's state, the
count outlives the uploader: the next one, on the same disk, tells it with its first offer.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ...state.statedir import write_json_atomic

logger = logging.getLogger("hf_mpwriter.uploader")

#: The file, in the logdir's state folder.
FILE = "own_commits_untold.json"
#: Beyond this, a count read back is a bad value, not commits (a node makes a few an hour).
MOST = 1_000_000


class Untold:
    """The count (a negative one: a commit told that did not apply) and where it is kept (``None``: in memory), for
    the job ``job`` (another job's, a relaunch into the same logdir, is not this job's to tell)."""

    def __init__(self, path: Path | None = None, job: str | None = None) -> None:
        self.path, self.job = path, job
        self.count = self._read()
        self._lock = threading.Lock()  # (a commit call the loop abandoned may still tell, beside the next one)

    def _read(self) -> int:
        if self.path is None:
            return 0
        try:
            kept = json.loads(self.path.read_text())
            value, job = kept["untold"], kept.get("job")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0
        return value if isinstance(value, int) and abs(value) < MOST and job == self.job else 0

    def add(self, commits: int) -> None:
        """``commits`` more (fewer, negative), kept at once (a disk that fails keeps them in memory)."""
        with self._lock:
            self.count += commits
            self._keep(commits)

    def take(self) -> int:
        """All of them, to tell (none left: one caller tells them); :meth:`add` them back if the telling failed."""
        with self._lock:
            taken, self.count = self.count, 0
            self._keep(taken)
            return taken

    def _keep(self, changed: int) -> None:
        if self.path is not None and changed:
            try:
                write_json_atomic(self.path, {"untold": self.count, "job": self.job})
            except OSError as exc:
                logger.debug("job: this node's untold own commits not kept on disk: %s", exc)
