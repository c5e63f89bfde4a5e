"""The persistent commit queue: what is pending, in flight and acknowledged, in SQLite (WAL).

Why SQLite: it is in the standard library, its WAL journal makes every transaction atomic and
durable against a SIGKILL at any instant, and several processes can read it while the uploader
writes (writers wait on it in ``close()``, the CLI shows it in ``status``).

A job is an exact, replayable snapshot: a list of :class:`~hf_mpwriter.snapshot.Piece` (a file cut
at a whole-record offset, with its sha256 and a path to bytes that cannot change). Per target
there is at most one unfinished job: a new snapshot taken while a job waits merges into it
(coalescing), so a backlog is always sent as one commit. A job is ``inflight`` from just before it
is sent until the target acknowledges it; a job found ``inflight`` after a crash has an unknown
outcome and is reconciled with the target before anything is sent again.

A corrupt or truncated database (SQLite's own ``quick_check`` says so, or it is not a database) is
set aside under a name of its own (``queue.db.corrupt-<time>-<pid>-<n>``) and rebuilt empty: the
next snapshot then finds every file "new" and re-sends it whole; the target ends with the same
content, so nothing is lost and nothing is duplicated. A transient error (disk full, database
locked, too many open files) is not corruption: it is raised, and the uploader retries later.
"""

from __future__ import annotations

import json
import os
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .snapshot import Piece
from .state import make_private

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    target TEXT NOT NULL,
    path TEXT NOT NULL,
    committed_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, path)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    commit_id TEXT,
    pieces TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (target, state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_KEEP_DONE_JOBS = 200
#: ``meta`` key of the audit record: what the uploader last found at the target (see
#: :func:`audit_record`).
AUDIT_META = "audit"


@dataclass
class Job:
    """One commit: the pieces it carries and where it stands."""

    id: int
    target: str
    state: str  # "pending" | "inflight" | "done"
    pieces: list[Piece]
    attempts: int = 0
    next_try: float = 0.0
    last_error: Optional[str] = None
    commit_id: Optional[str] = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def bytes(self) -> int:
        return sum(p.size for p in self.pieces)


class QueueCorrupted(Exception):
    pass


class JobQueue:
    """Access to ``queue.db``. Use one instance per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            self._db = self._connect()
        except sqlite3.OperationalError:
            # Disk full, locked, too many open files: the queue is fine, this moment is not. The
            # caller retries later; setting a healthy queue aside would send everything again.
            raise
        except (sqlite3.DatabaseError, QueueCorrupted) as exc:
            if readonly:
                raise QueueCorrupted(f"queue {self.path} is unreadable ({exc})") from None
            self._quarantine(exc)
            self._db = self._connect()

    # -- opening ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            if not self.path.exists():
                raise QueueCorrupted(f"no queue at {self.path}")
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        else:
            db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            for suffix in ("", "-wal", "-shm"):  # it names every file of the logs: private
                make_private(Path(str(self.path) + suffix))
        try:
            if not self.readonly:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            if self.readonly:
                db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            else:
                check = db.execute("PRAGMA quick_check").fetchone()
                if not check or check[0] != "ok":
                    raise QueueCorrupted(f"integrity check says {check!r}")
                db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self, reason: BaseException) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}-{time.time_ns() % 10**9}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        logger.warning(
            "the upload queue %s was unreadable (%s); it was moved to %s and is rebuilt by rescanning the "
            "logs: nothing is lost, but every file is sent again once, whole (the target ends with the same content)",
            self.path,
            reason,
            aside,
        )

    def close(self) -> None:
        self._db.close()

    # -- reads ------------------------------------------------------------------------------
    def committed(self, target: str) -> dict[str, tuple[int, str, bool]]:
        """``path -> (committed size, sha256, complete)`` of what the target acknowledged."""
        rows = self._db.execute(
            "SELECT path, committed_size, sha256, complete FROM files WHERE target = ?", (target,)
        )
        return {path: (size, sha, bool(done)) for path, size, sha, done in rows}

    def unfinished(self, target: str) -> Optional[Job]:
        """The pending or in-flight job of ``target`` (at most one exists)."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE target = ? AND state != 'done' ORDER BY id LIMIT 1", (target,)
        ).fetchone()
        return self._job(row) if row else None

    def last_done(self, target: str) -> Optional[Job]:
        row = self._db.execute(
            "SELECT * FROM jobs WHERE target = ? AND state = 'done' ORDER BY id DESC LIMIT 1", (target,)
        ).fetchone()
        return self._job(row) if row else None

    def count_done(self, target: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE target = ? AND state = 'done'", (target,)
        ).fetchone()[0]

    def get_meta(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- writes (each one transaction) ------------------------------------------------------
    def set_meta(self, key: str, value: Optional[str]) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add(self, target: str, pieces: list[Piece]) -> Job:
        """Queue ``pieces``: merged into the pending job if there is one (newer pieces win)."""
        now = time.time()
        with self._transaction():
            job = self.unfinished(target)
            if job is not None and job.state == "pending":
                merged = {p.path: p for p in job.pieces}
                merged.update({p.path: p for p in pieces})
                job.pieces = sorted(merged.values(), key=lambda p: p.path)
                self._db.execute(
                    "UPDATE jobs SET pieces = ?, updated = ? WHERE id = ?", (_dump(job.pieces), now, job.id)
                )
                return job
            if job is not None:
                raise RuntimeError("a job is in flight; reconcile it before queueing more")
            cur = self._db.execute(
                "INSERT INTO jobs (target, state, created, updated, pieces) VALUES (?, 'pending', ?, ?, ?)",
                (target, now, now, _dump(pieces)),
            )
            return Job(int(cur.lastrowid), target, "pending", list(pieces), created=now, updated=now)

    def mark_inflight(self, job: Job) -> None:
        """Record that ``job`` is about to be sent: after a crash its outcome is unknown."""
        self._db.execute(
            "UPDATE jobs SET state = 'inflight', attempts = attempts + 1, updated = ? WHERE id = ?",
            (time.time(), job.id),
        )
        job.state = "inflight"
        job.attempts += 1

    def mark_done(self, job: Job, commit_id: Optional[str]) -> None:
        """The target holds ``job``: acknowledge it and advance the committed offsets, atomically."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET state = 'done', commit_id = ?, last_error = NULL, updated = ? WHERE id = ?",
                (commit_id, now, job.id),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO files (target, path, committed_size, sha256, complete) VALUES (?, ?, ?, ?, ?)",
                [(job.target, p.path, p.size, p.sha256, int(p.complete)) for p in job.pieces],
            )
            self._db.execute(
                "DELETE FROM jobs WHERE target = ? AND state = 'done' AND id <= ?",
                (job.target, job.id - _KEEP_DONE_JOBS),
            )
        job.state, job.commit_id, job.last_error = "done", commit_id, None

    def mark_failed(self, job: Job, error: str, next_try: float, count_attempt: bool = False) -> None:
        """The attempt failed (or its outcome is known not to have landed): pending again.

        ``count_attempt``: count a failure that was not a send (the target could not even be asked
        whether it holds the job), so that the backoff grows while the target stays unreachable.
        """
        bump = 1 if count_attempt else 0
        self._db.execute(
            "UPDATE jobs SET state = 'pending', last_error = ?, next_try = ?, updated = ?, attempts = attempts + ? "
            "WHERE id = ?",
            (error, next_try, time.time(), bump, job.id),
        )
        job.state, job.last_error, job.next_try = "pending", error, next_try
        job.attempts += bump

    def set_pieces(self, job: Job, pieces: list[Piece]) -> None:
        """Replace a job's pieces (some could no longer be uploaded)."""
        self._db.execute("UPDATE jobs SET pieces = ?, updated = ? WHERE id = ?", (_dump(pieces), time.time(), job.id))
        job.pieces = list(pieces)

    def forget(self, target: str, paths: list[str]) -> None:
        """Forget that ``paths`` were committed (the audit found the target does not hold them):
        the next snapshot sends each of them again, whole."""
        self._db.executemany("DELETE FROM files WHERE target = ? AND path = ?", [(target, p) for p in paths])

    def drop(self, job: Job) -> None:
        """Forget a job none of whose pieces can be uploaded any more."""
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    def reset_backoff(self, target: str) -> None:
        """Make the unfinished job due now (a new uploader or an explicit sync should not wait)."""
        self._db.execute("UPDATE jobs SET next_try = 0 WHERE target = ? AND state != 'done'", (target,))

    def mark_pending(self, job: Job) -> None:
        """An in-flight job found not to have landed: send it again now."""
        self._db.execute("UPDATE jobs SET state = 'pending', next_try = 0 WHERE id = ?", (job.id,))
        job.state, job.next_try = "pending", 0.0

    # -- helpers ----------------------------------------------------------------------------
    def _transaction(self) -> "_Tx":
        return _Tx(self._db)

    @staticmethod
    def _job(row: tuple) -> Job:
        (id_, target, state, created, updated, attempts, next_try, last_error, commit_id, pieces) = row
        return Job(
            id=id_,
            target=target,
            state=state,
            pieces=[Piece(**p) for p in json.loads(pieces)],
            attempts=attempts,
            next_try=next_try,
            last_error=last_error,
            commit_id=commit_id,
            created=created,
            updated=updated,
        )


def audit_record(queue: JobQueue) -> dict:
    """What the last checks of the target found: ``{"time", "files", "found", "verified_at",
    "repairing", "repaired_total"}`` (empty before the first audit).

    ``time``/``files``/``found``: the last full audit; ``verified_at``: the last check of any kind
    (each commit's files are checked right after it); ``repairing``: files found wrong and not yet
    found right again; ``repaired_total``: how many were ever found wrong and re-sent.
    """
    raw = queue.get_meta(AUDIT_META)
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: one writer at a time, all or nothing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _dump(pieces: list[Piece]) -> str:
    return json.dumps([p.to_dict() for p in pieces], sort_keys=True)
