"""The persistent commit queue: what is pending, in flight and acknowledged, in SQLite.

Why SQLite: it is in the standard library, its journal makes every transaction atomic and durable
against a SIGKILL at any instant, and several processes can read it while the uploader writes
(writers wait on it in ``close()``, the CLI shows it in ``status``; :mod:`.queue_readers`). The
journal is WAL, or a rollback journal on a network file system (:mod:`.filesystem`).

A job is an exact, replayable snapshot: a list of :class:`~hf_mpwriter.state.piece.Piece` (a file cut
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

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .filesystem import set_journal
from .jobs import TRANSITIONS, Job, JobState
from .piece import Piece
from .statedir import make_private
from .upload_error import ErrorKind, UploadError

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
#: The database and SQLite's files beside it (a hot ``-journal`` belongs to its database: moved with it).
_FILES = ("", "-wal", "-shm", "-journal")
#: ``meta`` key of the audit record: what the uploader last found at the target (see
#: :func:`audit_record`).
AUDIT_META = "audit"
#: ``meta`` key of the uploader's current error, the one record of it (see :meth:`JobQueue.record_error`).
ERROR_META = "error"
#: ``meta`` key of the uploader generation: each uploader that takes over increments it, and one
#: that finds a newer generation when it moves a job (before its send or after) knows it was replaced and stops.
GENERATION_META = "generation"
#: ``meta`` keys of what the uploaders of this logdir did about calls that never answered (``status``): calls
#: abandoned past their bound, and uploader processes replaced for them (:mod:`hf_mpwriter.uploader.replacement`).
HANG_COUNTS = ("abandoned_calls", "process_replacements")


class QueueCorrupted(Exception):
    pass


class Superseded(Exception):
    """A newer uploader took the queue over (or moved the job): this handle's job move is refused."""


class JobQueue:
    """Access to ``queue.db``. Use one instance per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: Path, readonly: bool = False, generation: int | None = None) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.generation = generation  # the uploader generation this handle moves jobs as (fenced: see move)
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
            for suffix in _FILES:  # it names every file of the logs: private
                make_private(Path(str(self.path) + suffix))
        try:
            if self.readonly:
                db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            else:
                set_journal(db, self.path)
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
        for suffix in _FILES:
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        logger.warning(
            "the upload queue %s was unreadable (%s); it was moved to %s and is rebuilt by rescanning the logs: nothing "
            "is lost, but every file is sent again once, whole (the target ends with the same content)", self.path, reason, aside)

    def close(self) -> None:
        self._db.close()

    # -- reads ------------------------------------------------------------------------------
    def committed(self, target: str) -> dict[str, tuple[int, str, bool]]:
        """``path -> (committed size, sha256, complete)`` of what the target acknowledged."""
        rows = self._db.execute(
            "SELECT path, committed_size, sha256, complete FROM files WHERE target = ?", (target,)
        )
        return {path: (size, sha, bool(done)) for path, size, sha, done in rows}

    def count_committed(self, target: str) -> int:
        """How many files the target acknowledged: what this logdir adds to a repository's file count."""
        return self._db.execute("SELECT COUNT(*) FROM files WHERE target = ?", (target,)).fetchone()[0]

    def known_sizes(self, target: str, job: Job | None = None) -> dict[str, int]:
        """``path -> size`` the target holds, or will once ``job`` (the unfinished one) is sent:
        where the next snapshot of each file starts."""
        sizes = {path: size for path, (size, _, _) in self.committed(target).items()}
        if job is not None:
            sizes.update({p.path: p.size for p in job.pieces})
        return sizes

    def unfinished(self, target: str) -> Job | None:
        """The pending or in-flight job of ``target`` (at most one exists)."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE target = ? AND state != 'done' ORDER BY id LIMIT 1", (target,)
        ).fetchone()
        return self._job(row) if row else None

    def last_done(self, target: str) -> Job | None:
        row = self._db.execute(
            "SELECT * FROM jobs WHERE target = ? AND state = 'done' ORDER BY id DESC LIMIT 1", (target,)
        ).fetchone()
        return self._job(row) if row else None

    def count_done(self, target: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE target = ? AND state = 'done'", (target,)
        ).fetchone()[0]

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def hang_counts(self) -> dict[str, int]:
        """:data:`HANG_COUNTS`, 0 where none was counted."""
        return {key: int(self.get_meta(key) or 0) for key in HANG_COUNTS}

    # -- writes (each one transaction) ------------------------------------------------------
    def count_hang(self, key: str) -> None:
        """One more of :data:`HANG_COUNTS`' ``key``."""
        assert key in HANG_COUNTS, key
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, '1') "
                         "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1", (key,))

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add(self, target: str, pieces: list[Piece]) -> Job:
        """Queue ``pieces``: merged into the pending job if there is one (newer pieces win)."""
        now = time.time()
        with self._transaction():
            job = self.unfinished(target)
            if job is not None and job.state is JobState.PENDING:
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
            return Job(int(cur.lastrowid or 0), target, JobState.PENDING, list(pieces), created=now, updated=now)

    def move(
        self, job: Job, to: JobState, *, commit_id: str | None = None, error: str | None = None,
        next_try: float = 0.0, count_attempt: bool = False,
    ) -> None:
        """Move ``job`` to state ``to`` (the moves :data:`TRANSITIONS` allows), each move one transaction.

        The job's *state* changes only here; its content changes in :meth:`add` (new pieces merged into
        the pending job), :meth:`set_pieces` / :meth:`drop` (pieces whose source vanished) and
        :meth:`reset_backoff` (a trigger or a new uploader makes it due now).

        - to ``INFLIGHT``: it is about to be sent (counts an attempt); after a crash its outcome is
          unknown and it must be reconciled before anything is sent again;
        - to ``DONE``: the target holds it (``commit_id``); the committed offsets advance with it;
        - to ``PENDING``: an attempt failed (``error``, retry at ``next_try``; ``count_attempt`` for a
          failure that was not a send, e.g. the target could not even be asked, so backoff grows),
          or it was found not to have landed (``next_try=0``: send again now).

        Fenced, in the move's transaction: :class:`Superseded` if a newer uploader took the queue over
        since this handle's :attr:`generation`, or the job is no longer in ``job.state``. An uploader
        replaced while its call ran must not move its successor's job, before the send or after it.
        """
        if to not in TRANSITIONS[job.state]:
            raise ValueError(f"job {job.id} cannot move from {job.state.value} to {to.value}")
        now = time.time()
        with self._transaction():
            current = int(self.get_meta(GENERATION_META) or 0)
            stored = self._db.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if self.generation not in (None, current) or stored != (job.state.value,):
                raise Superseded(f"uploader generation {self.generation} was replaced by generation {current}"
                                 if self.generation not in (None, current) else
                                 f"job {job.id} was moved by another uploader (it is {stored[0] if stored else 'gone'})")
            if to is JobState.INFLIGHT:
                self._db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, updated = ? WHERE id = ?",
                                 (to.value, now, job.id))
                job.attempts += 1
            elif to is JobState.DONE:
                self._db.execute("UPDATE jobs SET state = ?, commit_id = ?, last_error = NULL, updated = ? WHERE id = ?",
                                 (to.value, commit_id, now, job.id))
                self._db.executemany(
                    "INSERT OR REPLACE INTO files (target, path, committed_size, sha256, complete) VALUES (?, ?, ?, ?, ?)",
                    [(job.target, p.path, p.size, p.sha256, int(p.complete)) for p in job.pieces])
                self._db.execute("DELETE FROM jobs WHERE target = ? AND state = 'done' AND id <= ?",
                                 (job.target, job.id - _KEEP_DONE_JOBS))
                job.commit_id, job.last_error = commit_id, None
            else:
                bump = 1 if count_attempt else 0
                self._db.execute("UPDATE jobs SET state = ?, last_error = COALESCE(?, last_error), next_try = ?, "
                                 "updated = ?, attempts = attempts + ? WHERE id = ?",
                                 (to.value, error, next_try, now, bump, job.id))
                job.last_error = error or job.last_error
                job.next_try = next_try
                job.attempts += bump
        job.state = to

    def set_pieces(self, job: Job, pieces: list[Piece]) -> None:
        """Replace a job's pieces (some could no longer be uploaded)."""
        self._db.execute("UPDATE jobs SET pieces = ?, updated = ? WHERE id = ?", (_dump(pieces), time.time(), job.id))
        job.pieces = list(pieces)

    def new_generation(self) -> int:
        """Take over: the generation after the current one (see :data:`GENERATION_META`)."""
        with self._transaction():
            self.generation = int(self.get_meta(GENERATION_META) or 0) + 1
            self.set_meta(GENERATION_META, str(self.generation))
        return self.generation

    def forget(self, target: str, paths: list[str]) -> None:
        """Forget that ``paths`` were committed (the audit found the target does not hold them):
        the next snapshot sends each of them again, whole."""
        self._db.executemany("DELETE FROM files WHERE target = ? AND path = ?", [(target, p) for p in paths])

    def drop(self, job: Job) -> None:
        """Forget a job none of whose pieces can be uploaded any more."""
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    def record_error(self, kind: ErrorKind | None, text: str | None = None) -> None:
        """Record the uploader's current error (``kind=None``: there is none any more).

        The one place errors are recorded: every reader (``status``, a writer's ``close()``, the
        CLI) reads this record through :func:`read_error` / :meth:`error`. ``text`` must be redacted.
        """
        previous = self.error()
        now = time.time()
        # ``since``: when this kind of trouble began (kept while the same kind recurs), so that readers
        # can tell a blip from an outage (writers warn about a transient error only once it lasts).
        since = previous.since if previous is not None and kind is not None and previous.kind is kind else now
        value = None if kind is None else json.dumps(
            {"kind": kind.value, "text": text or "", "pid": os.getpid(), "time": now, "since": since})
        if value is not None or previous is not None:
            self.set_meta(ERROR_META, value)

    def error(self) -> UploadError | None:
        """The uploader's current error, if any."""
        return UploadError.parse(self.get_meta(ERROR_META))

    def reset_backoff(self, target: str) -> None:
        """Make the unfinished job due now (a new uploader or an explicit sync should not wait), and
        start its backoff over: a series of restarts must not make the next failure wait minutes.
        (``attempts`` stays at least 1 if it was: a job that was tried is reconciled before resending.)"""
        self._db.execute(
            "UPDATE jobs SET next_try = 0, attempts = MIN(attempts, 1) WHERE target = ? AND state != 'done'",
            (target,),
        )

    # -- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: one writer at a time, all or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @staticmethod
    def _job(row: tuple) -> Job:
        (id_, target, state, created, updated, attempts, next_try, last_error, commit_id, pieces) = row
        return Job(
            id=id_, target=target, state=JobState(state), pieces=[Piece(**p) for p in json.loads(pieces)],
            attempts=attempts, next_try=next_try, last_error=last_error, commit_id=commit_id,
            created=created, updated=updated,
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


def _dump(pieces: list[Piece]) -> str:
    return json.dumps([p.to_dict() for p in pieces], sort_keys=True)
