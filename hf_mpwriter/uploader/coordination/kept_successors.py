"""The successor stores a node last knew of (:mod:`.successor`), kept on the node's disk.

Why: a node learns them from its leader's answers, or reads them in the job's store. An uploader that restarts
(killed, replaced) after the job's store died can do neither, and would commit alone, outside the one leader the
other nodes follow on a successor. Kept in the logdir's state, the list outlives the uploader: the next one, on the
same disk and in the same job, knows where the job goes on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ...state.statedir import write_json_atomic

logger = logging.getLogger("hf_mpwriter.uploader")

#: The file, in the logdir's state folder.
FILE = "job_successors.json"
#: Beyond this, a list read back is a bad value (a job has a few successor stores).
MOST = 64


class KeptSuccessors:
    """The ``[host, port]`` of each successor store, for the job ``job`` (another job's, a relaunch into the same
    logdir, lists stores that are not this job's), and where they are kept (``None``: in memory)."""

    def __init__(self, path: Path | None = None, job: str | None = None) -> None:
        self.path, self.job = path, job
        self.listed = self._read()

    def _read(self) -> list[tuple[str, int]]:
        if self.path is None:
            return []
        try:
            kept = json.loads(self.path.read_text())
            listed, job = kept["successors"], kept.get("job")
            found = [(str(host), int(port)) for host, port in listed]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
            return []
        return found if job == self.job and len(found) <= MOST and all(0 < port < 65536 for _, port in found) else []

    def keep(self, listed: list[tuple[str, int]]) -> None:
        """The list as the node knows it now, written where it changed (a disk that fails keeps it in memory)."""
        if listed == self.listed:
            return
        self.listed = listed
        if self.path is not None:
            try:
                write_json_atomic(self.path, {"successors": [list(entry) for entry in listed], "job": self.job})
            except OSError as exc:
                logger.debug("job: the successor stores not kept on disk: %s", exc)
