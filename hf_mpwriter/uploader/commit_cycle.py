"""What the uploader does at each turn: one fenced, audited commit from the persistent queue.

:class:`Committer` owns the logdir's target, queue and scanner, but not when a cycle runs: the
uploader's loop (:mod:`hf_mpwriter.uploader.loop`) decides *when* to call :meth:`Committer.cycle`, this
module decides *what* a cycle does (within one: whether the audit, or a failed job's backoff, is
due). Kept apart because this is where the guarantees live, and each rule below must hold whatever
the loop, a ``sync`` or a test does around it::

    cycle:
        reconcile a job left in flight by a crash  (ask the target what it holds)
        snapshot: new whole records of every file -> merged into the one pending job
        commit the pending job (fenced) -> acknowledge it in the queue, or back off and retry
        verify what was acknowledged; audit everything at start and every ``audit_every``
        (an audit the target refused waits its own backoff: it never holds the commit back)

Delivery is at least once and its effect exactly once: a job's bytes are fixed when it is queued, a
retry sends the same bytes to the same paths, and a job whose outcome is unknown (``inflight`` after
a crash, a SIGKILL or an abandoned call) is checked against the target before it is sent again. The
fence: every uploader takes a new generation of the queue when it starts, and one that finds a newer
generation when it moves a job, before the send or after it (it was stopped, then woke up after its
successor took over), gets :class:`~hf_mpwriter.state.jobqueue.Superseded`: it sends nothing more and
leaves its successor's job as it is. The audit: the queue's belief is checked against the target
(after every commit for what was sent, in full at every start and every ``audit_every``), and what
the target does not hold exactly is sent again (:mod:`.audit`).

Every call to the target goes through the ``call`` function the uploader hands in
(:mod:`hf_mpwriter.uploader.target_calls`): it keeps the loop alive while a call runs, and may
abandon the call at the preemption deadline by raising; the queue then stays as a SIGKILL would
leave it, which is always safe.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..config import UploadConfig, token_found
from ..errors import Deferred, TargetError, in_logdir
from ..redaction import redact
from ..state import lost as lost_mod
from ..state.filesystem import queue_advice
from ..state.jobqueue import JobQueue, audit_record
from ..state.jobs import Job, JobState, Step
from ..state.statedir import state_dir, write_json_atomic
from ..state.upload_error import ErrorKind
from ..targets import Target
from .audit import Audit
from .cycle_terms import Clock, Progress, TargetCall, backoff
from .lost_steps import LostSteps, look_turn
from .schedule import LOCAL_RETRY_S, doubling
from .snapshot import Scanner

#: Tries of one job lost to other committers' commits (the branch moved: 412) before that is news. Two uploaders
#: of one job on one repository race now and then, and the retry reconciles: not a warning, nor a ``status`` error.
RACES_SAID_AFTER = 3

logger = logging.getLogger("hf_mpwriter.uploader")  # the uploader's log, whichever module speaks


class Committer(Audit):
    """Commits a logdir's new whole records to its target, from a persistent queue."""

    def __init__(self, logdir: Path, config: UploadConfig, target: Target, token: str | None, call: TargetCall) -> None:
        self.logdir = Path(logdir)
        self.state = state_dir(self.logdir, create=False)
        self.config = config
        self.target = target
        self.scanner = Scanner(self.logdir, config.allow_patterns, config.ignore_patterns)
        self._token = token
        self._call = call
        self.clock: Clock = time  # wall and monotonic (a test hands in one it moves by hand)
        self._queue: JobQueue | None = None
        self._prepared = False
        self._prepare_fatal = False
        self._prepare_retry_at = 0.0
        self._prepare_failures = 0
        super().__init__()  # the audit's state: one owed at start
        self._generation: int | None = None
        self._queue_errors_said: set[str] = set()  # (see :meth:`say_local_error`)
        #: Wall time until which the target asked this node to wait (the job's leader put its files off, the
        #: Hub's ``Retry-After``): an uploader draining its last records keeps trying until then at least.
        self.held_until = 0.0
        self.lost = LostSteps(self.logdir)
        self._lost_failures = 0
        self._lost_retry_at: float | None = None  # (:meth:`_look_for_lost`; ``None``: this node's turn not drawn yet)
        self._lost_saved = (0, 0)  # (finds, looks) the queue's meta holds
        #: Whether the uploader was signalled (the loop hands in its own): no look for lost steps then.
        self.signalled: Callable[[], bool] = lambda: False

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:  # opened in the thread that uses it
            self._queue = JobQueue(self.state / "queue.db", generation=self._generation)  # its moves are fenced
        return self._queue

    def close(self) -> None:
        """Close the queue (the next use opens it again, as a new process would)."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def take_over(self) -> None:
        """This process is now the logdir's uploader: take the queue's next generation (the fence),
        and try the unfinished job at once. Raises ``OSError`` / ``sqlite3.Error`` if the queue
        cannot be written yet (a full disk): the generation is then taken at the next cycle."""
        self._generation = self.queue.new_generation()
        self.queue.reset_backoff(self.target.key)  # a new uploader (or a sync) tries at once
        error = self.queue.error()
        if error is None or error.kind is not ErrorKind.TRANSIENT:
            self.queue.record_error(None)  # whatever stopped the last one needs checking again: try
        # A transient error is kept (it clears at the next success): how long it has lasted goes on
        # counting across a new uploader (a replaced process, a restart), so that writers still say
        # an outage that outlives any one uploader (hf_mpwriter.writer.reporting).

    def say_local_error(self, text: str, exc: BaseException) -> None:
        """Log a local error; one of the queue itself the first time with what to check. Retrying (every
        ``LOCAL_RETRY_S``) fixes a full disk or a lock held for a while, not a file system SQLite cannot
        use: without this, the uploader would retry that forever, in a log that nobody reads as a problem."""
        logger.error("%s", text)
        if isinstance(exc, sqlite3.Error) and str(exc) not in self._queue_errors_said:
            self._queue_errors_said.add(str(exc))
            db = self.state / "queue.db"
            logger.error("the upload queue %s cannot be used (%s), so nothing new is committed; the uploader retries "
                         "every %.0f s, but if this lasts, retrying does not fix it: %s", db, exc, LOCAL_RETRY_S,
                         queue_advice(db))

    def skip_backoff(self) -> None:
        """A writer or a signal wants a commit now: the next cycle ignores every backoff."""
        self.queue.reset_backoff(self.target.key)
        self._prepare_retry_at = 0.0

    def pending_job(self) -> Job | None:
        """The target's unfinished job (at most one), if any."""
        return self.queue.unfinished(self.target.key)

    def retry_due(self) -> bool:
        """A failed job's backoff has run out (retries need not wait for the next interval), and the target
        may be tried: while preparing it backs off, a cycle would end at once, and the loop would spin."""
        if not self._prepared and self.clock.monotonic() < self._prepare_retry_at:
            return False
        job = self.pending_job()
        return job is not None and job.attempts > 0 and job.step(self.clock.time()) is Step.RECONCILE

    # -- one cycle -----------------------------------------------------------------------------
    def cycle(self) -> Progress:
        """Reconcile, snapshot, and commit if the pending job is due.

        Target errors and local I/O errors met while snapshotting or sending (a full disk, a vanished
        file) are recorded as the last error (``status`` shows it) and retried later, not raised.
        A queue that cannot be read at all (a locked or full database) raises ``sqlite3.Error`` /
        ``OSError``: the loop retries every few seconds. :class:`~hf_mpwriter.state.jobqueue.Superseded`
        (a newer uploader took over), and whatever ``call`` raises to abandon a call, are raised too.
        """
        progress = Progress()
        if not self.prepare():
            progress.error, progress.fatal = self.last_error(), self._prepare_fatal
            return progress
        if self._generation is None:  # the queue could not be written at start (disk full): take it over now
            self._generation = self.queue.new_generation()
        look_first = self._lost_failures == 0  # (a look that failed holds up no send again: it comes after)
        if look_first:
            self._look_for_lost()  # (before the send: a closing writer's report, which waits for that send, says it)
        key = self.target.key
        job = self.queue.unfinished(key)
        try:
            if self._audit_due():
                self._audit_or_defer(progress)  # a refusal is said, and the send goes on
            step = job.step(self.clock.time()) if job is not None else Step.SEND
            if job is not None and step is Step.RECONCILE:
                job = self._reconcile(job)  # the last attempt may have landed although it failed
            if step is not Step.BACK_OFF:  # while backing off, new data waits on disk: no staged copy per retry
                pieces = self.scanner.snapshot(self.queue.known_sizes(key, job))
                if pieces:
                    job = self.queue.add(key, pieces)
                    self.scanner.clean_staging(job.pieces)  # copies the merge superseded
                if job is not None:
                    self._send(job, progress)
        except TargetError as exc:  # from reconciling: the target could not be asked whether the job landed
            text = redact(str(exc), self._token)
            if job is not None and job.state is not JobState.DONE:
                self.queue.move(job, JobState.PENDING, error=text, next_try=self.clock.time() + backoff(job.attempts + 1, exc),
                                count_attempt=True)
            logger.warning("%s", in_logdir(text, self.logdir))
            self._record_error(exc, text)
            progress.error, progress.fatal = text, not exc.transient
        except (OSError, sqlite3.Error) as exc:  # local trouble: keep everything, say it, retry soon
            text = f"local error while snapshotting {self.logdir}: {exc}; retrying every {LOCAL_RETRY_S:.0f} s"
            self.say_local_error(text, exc)
            self.queue.record_error(ErrorKind.LOCAL, text)
            progress.error, progress.local_error = text, True
        if not progress.local_error:
            self._queue_errors_said.clear()  # the queue works: an error of it is news again
        if not look_first:
            self._look_for_lost()
        job = self.queue.unfinished(key)
        progress.pending_bytes = job.bytes if job else 0
        return progress

    def _look_for_lost(self) -> None:
        """A resumed run whose earlier attempt's disk is gone: the steps it lost, found at the target and kept in the
        queue's meta (``status``, a closing writer). In a job of several nodes each node looks at its turn
        (:func:`~.lost_steps.look_turn`), so that the job's looks keep within its share of the Hub's requests. A look
        that fails is made again after a backoff that doubles (a Hub that never answers costs one bounded call per
        backoff, not one per cycle)."""
        now = self.clock.monotonic()
        if self.signalled():  # (its last records go first: the deadline leaves no time for a look)
            return
        if self._lost_retry_at is None:
            self._lost_retry_at = now + look_turn(self.config.node_rank, self.config.nodes, self.config.api_requests)
        if now >= self._lost_retry_at:
            if self.lost.found is None:  # (an earlier uploader's finds are not said again, nor its looks made again)
                self.lost.found = lost_mod.decode(self.queue.get_meta(lost_mod.LOST_META))
                self.lost.looked |= lost_mod.decode_looked(self.queue.get_meta(lost_mod.LOOKED_META))
                self._lost_saved = (len(self.lost.found), len(self.lost.looked))
            files = [rel for rel, _ in self.scanner.files()]
            try:
                self.lost.look(files, lambda run: self._call("list", self.target.listing, run),
                               lambda path: self._call("read", self.target.read, path))
                self._lost_failures = 0
            except (TargetError, NotImplementedError, OSError) as exc:
                self._lost_failures += 1
                self._lost_retry_at = now + doubling(self._lost_failures, 30.0, 3600.0)
                logger.info("a resumed run's earlier files at the target not read yet: %s", redact(str(exc), self._token))
        self._save_lost()

    def _save_lost(self) -> None:
        """What the queue's meta lacks of the finds and looks (a write that failed is made at the next cycle); the
        finds first: a crash between the two looks again, and never forgets a find."""
        if self.lost.found is None:
            return
        found, looked = self._lost_saved
        if len(self.lost.found) != found:
            self.queue.set_meta(lost_mod.LOST_META, lost_mod.encode(self.lost.found))
            found = len(self.lost.found)
            self._lost_saved = (found, looked)
        if len(self.lost.looked) != looked:
            self.queue.set_meta(lost_mod.LOOKED_META, lost_mod.encode_looked(self.lost.looked))
            self._lost_saved = (found, len(self.lost.looked))

    def prepare(self) -> bool:
        """Prepare the target once (create the repository...); ``False`` while it fails (backing off)."""
        if self._prepared:
            return True
        if self.clock.monotonic() < self._prepare_retry_at:
            return False
        try:
            self._call("prepare", self.target.prepare)
        except TargetError as met:
            exc = self._no_token_error(met)
            text = redact(str(exc), self._token)
            self._prepare_fatal = not exc.transient
            self._prepare_failures += 1
            self._prepare_retry_at = self.clock.monotonic() + backoff(self._prepare_failures, exc)
            logger.error("%s", in_logdir(text, self.logdir))
            self._record_error(exc, text)
            return False
        self.queue.record_error(None)
        self._prepared = True
        try:  # what the target really is (a repo id without namespace, completed): for writer.repo_id
            write_json_atomic(self.state / "target.json", {"repo_id": getattr(self.target, "repo_id", None),
                                                           "description": self.target.description})
        except OSError as exc:
            logger.warning("cannot record the target's full name (%s)", exc)
        return True

    def _usable(self, job: Job) -> Job | None:
        """Re-stage what needs it; drop pieces whose source is gone (deleted by someone), keep the rest."""
        usable = []
        for piece in job.pieces:
            try:
                piece = self.scanner.restage(piece)
                if os.path.getsize(piece.local_path) < piece.size:
                    raise OSError(f"{piece.local_path} is shorter than the {piece.size} bytes queued")
            except OSError as exc:
                text = f"{piece.path} can no longer be uploaded ({exc}); it is left out"
                logger.error("%s", text)
                self.queue.record_error(ErrorKind.LOCAL, text)
                continue
            usable.append(piece)
        if len(usable) != len(job.pieces):
            if not usable:
                self.queue.drop(job)
                return None
            self.queue.set_pieces(job, usable)
        return job

    def _reconcile(self, job: Job) -> Job | None:
        """A job left in flight (crash, lost response): done if the target holds it, else resend."""
        usable = self._usable(job)
        if usable is None:
            return None
        if self._call("check", self.target.holds, usable.pieces, nbytes=self.target.local_reads(usable.pieces)):
            logger.info("job %d had been committed before the interruption; acknowledged", job.id)
            self.queue.move(usable, JobState.DONE, commit_id=job.commit_id or "reconciled")
            self.scanner.clean_staging(())
            return None
        logger.info("job %d did not reach the target before the interruption; sending it again", job.id)
        self.queue.move(usable, JobState.PENDING, next_try=0.0)
        return usable

    def _send(self, job: Job, progress: Progress) -> None:
        usable = self._usable(job)
        if usable is None:
            return
        job = usable
        message = f"Upload TensorBoard logs: {len(job.pieces)} file(s), {job.bytes} bytes (hf_mpwriter)"
        self.queue.move(job, JobState.INFLIGHT)  # fenced (Superseded), as every move of the job after the send
        try:
            commit_id = self._call("commit", self.target.commit, job.pieces, message, nbytes=job.bytes)
        except Deferred as exc:  # the job's budget: no error, no backoff, the files wait for their turn
            self.queue.move(job, JobState.PENDING, next_try=self.clock.time() + (exc.retry_after or 0.0))
            self.held_until = max(self.held_until, self.clock.time() + (exc.retry_after or 0.0))
            progress.again = not exc.retry_after
            logger.info("%s (next try in %.0f s)", exc, exc.retry_after)
            return
        except TargetError as exc:
            delay = backoff(job.attempts, exc)
            text = redact(str(exc), self._token)
            self.queue.move(job, JobState.PENDING, error=text, next_try=self.clock.time() + delay)
            if exc.retry_after is not None:
                self.held_until = max(self.held_until, self.clock.time() + delay)
            if exc.raced and job.attempts < RACES_SAID_AFTER:
                logger.info("%s (next try in %.1f s)", in_logdir(text, self.logdir), delay)
                return
            (logger.warning if exc.transient else logger.error)("%s (next try in %.0f s)", in_logdir(text, self.logdir), delay)
            self._record_error(exc, text)
            progress.error, progress.fatal = text, not exc.transient
            return
        self.queue.move(job, JobState.DONE, commit_id=commit_id)
        self.queue.record_error(None)
        progress.commits += 1
        progress.committed_bytes += job.bytes
        logger.info("committed %d file(s), %d bytes as %s", len(job.pieces), job.bytes, commit_id)
        try:  # trust, but verify: the acknowledgement is not the proof
            if self._audit_waiting():  # the target asked for a pause; the owed audit covers these files
                logger.info("the check of commit %s waits for the audit the target refused", commit_id)
            else:
                self._verify(job.pieces, full=False)
        except TargetError as exc:
            self._audit_refused(exc, progress)
        finally:  # only now: a target that compares content hashes an open file's staged copy (a bucket)
            self.scanner.clean_staging(())

    def _no_token_error(self, exc: TargetError) -> TargetError:
        """A Hub target that cannot be reached while no token is found anywhere: the missing token is what
        needs fixing (no commit can land without it, network or not), so it is said as an error that needs
        the user, not hidden behind a network error retried for ever. A token that comes later (``hf auth
        login``) is read at the next try."""
        if not exc.transient or self.config.kind not in ("hub", "bucket") or token_found(self._token):
            return exc
        unreachable = str(exc).removesuffix("; will retry")
        return TargetError(
            f"no token was found for {self.target.description} (no token=..., no HF_TOKEN, no `hf auth login`), "
            f"and it cannot be reached either ({unreachable}): set HF_TOKEN, run `hf auth login`, or pass token=... (a "
            f"token with write access), then run `hf-mpwriter sync LOGDIR`", transient=False,
        )

    def _record_error(self, exc: TargetError, text: str) -> None:
        """Record a target error: one that needs the user makes writers waiting in ``close()`` stop
        waiting at once and say it, with the command that finishes the job once it is fixed."""
        self.queue.record_error(ErrorKind.TRANSIENT if exc.transient else ErrorKind.NEEDS_USER, text)

    # -- state ---------------------------------------------------------------------------------
    def drained(self) -> bool:
        """Nothing queued, nothing being repaired, and no file has whole records beyond what the
        target holds."""
        key = self.target.key
        if self.queue.unfinished(key) is not None or audit_record(self.queue).get("repairing"):
            return False
        known = self.queue.known_sizes(key)
        for rel, st in self.scanner.files():
            if st.st_size > known.get(rel, 0) and self.scanner.whole_size(rel, st, known.get(rel, 0)) > known.get(rel, 0):
                return False
        return True

    def backlog_bytes(self) -> int:
        """Bytes not on the target yet: the unfinished job and whole records newer than it."""
        key = self.target.key
        job = self.queue.unfinished(key)
        known = self.queue.known_sizes(key, job)
        new = sum(
            max(0, self.scanner.whole_size(rel, st, known.get(rel, 0)) - known.get(rel, 0))
            for rel, st in self.scanner.files() if st.st_size > known.get(rel, 0)
        )
        return (job.bytes if job else 0) + new

    def last_error(self) -> str | None:
        """The current error's text (the queue's one record of it), if any."""
        error = self.queue.error()
        return error.text if error else None
