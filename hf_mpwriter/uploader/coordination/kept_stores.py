"""What a node knew of its job's stores beyond the one in use, kept on the node's disk: the successor stores
(:mod:`.successor`) and the highest term the job had on any of them.

Why: a node learns the successors from its leader's answers, or reads them in the job's store. An uploader that
restarts (killed, replaced) after the job's store died can do neither, and would commit alone, outside the one
leader the other nodes follow on a successor. And a term it draws on a store whose counter is behind (the job's
store, gone back to after its leader there led term 4 on a successor that then died) must still be above every
term the job had: commits are ordered by term. Kept in the logdir's state, both outlive the uploader: the next one,
on the same disk and in the same job, knows where the job goes on and which term to draw above.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ...state.statedir import write_json_atomic

logger = logging.getLogger("hf_mpwriter.uploader")

#: The file, in the logdir's state folder.
FILE = "job_stores.json"
#: Beyond this, a list read back is a bad value (a job has a few successor stores).
MOST = 64
#: Beyond this, a term read back is a bad value (a store's counter is a signed 64-bit integer).
MOST_TERM = 2 ** 62


class KeptStores:
    """The ``[host, port]`` of each successor store and the highest term, for the job ``job`` (another job's, a
    relaunch into the same logdir, lists stores that are not this job's), and where they are kept (``None``: in
    memory)."""

    def __init__(self, path: Path | None = None, job: str | None = None) -> None:
        self.path, self.job = path, job
        self.listed: list[tuple[str, int]] = []
        self.term = 0
        self._lock = threading.Lock()  # (the uploader's thread keeps the list, the lease's the term: one file)
        self._read()

    def _read(self) -> None:
        if self.path is None:
            return
        try:
            kept = json.loads(self.path.read_text())
            listed, term, job = kept["successors"], kept.get("term", 0), kept.get("job")
            found = [(str(host), int(port)) for host, port in listed]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
            return
        if job != self.job:
            return
        if len(found) <= MOST and all(0 < port < 65536 for _, port in found):
            self.listed = found
        if type(term) is int and 0 <= term <= MOST_TERM:  # (a bad term costs the term alone)
            self.term = term

    def keep(self, listed: list[tuple[str, int]]) -> None:
        """The successors as the node knows them now, written where they changed."""
        with self._lock:
            if listed != self.listed:
                self.listed = listed
                self._write()

    def keep_term(self, term: int) -> None:
        """A term the job had on one of its stores (this node's, or one it saw led elsewhere), written where it is
        the highest yet."""
        with self._lock:
            if term > self.term:
                self.term = term
                self._write()

    def _write(self) -> None:
        """(Under the lock; a disk that fails keeps them in memory.)"""
        if self.path is not None:
            try:
                write_json_atomic(self.path, {"successors": [list(entry) for entry in self.listed], "term": self.term,
                                              "job": self.job})
            except OSError as exc:
                logger.debug("job: the successor stores and the highest term not kept on disk: %s", exc)
