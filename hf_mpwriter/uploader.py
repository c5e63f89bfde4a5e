"""The uploader: one commit loop per node and logdir.

Like ``huggingface_hub.CommitScheduler`` it commits the logdir every ``commit_every``; unlike it, it
runs once per node whatever the number of training processes, records every commit in a
persistent queue before sending it, and survives any crash::

    every commit_every (or when a writer closes):
        reconcile a job left in flight by a crash  (ask the target what it holds)
        snapshot: new whole records of every file -> merged into the one pending job
        commit the pending job -> acknowledge it in the queue, or back off and retry
    exit when every registered writer is gone and the queue is drained

Election: the uploader holds ``.hf_mpwriter/uploader.lock`` (``filelock``) while it runs; the OS
drops the lock when it dies, and the writers, which check for a live uploader every couple of
seconds, start a new one, which resumes the queue. Delivery is at least once and its effect
exactly once: a job's bytes are fixed when it is queued, a retry sends the same bytes to the same
paths, and a job whose outcome is unknown is checked against the target before it is sent again.

Example:
    >>> from hf_mpwriter.uploader import Uploader
    >>> Uploader("runs/exp1").drain(timeout=60)  # what `hf-mpwriter sync runs/exp1` does  # doctest: +SKIP
    True
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import config as config_mod
from . import mailbox, system_metrics
from . import schedule as schedule_mod
from .config import UploadConfig
from .election import AlreadyRunning, UploaderLock
from .errors import ConfigurationError, TargetError
from .jobqueue import AUDIT_META, GENERATION_META, ErrorKind, Job, JobQueue, JobState, Step, audit_record
from .liveness import is_alive, process_identity
from .piece import Piece
from .redaction import RedactingFilter, redact, token_id
from .registry import live_writers, prune_stale_registrations
from .schedule import FINAL_GAP_S, LOCAL_RETRY_S, POLL_S, UNEXPECTED_ERROR_PAUSE_S, Action, Decision, Pacing, Schedule
from .snapshot import Scanner
from .statedir import private_open, secure_state_dir, state_dir, write_json_atomic
from .targets import Target

logger = logging.getLogger("hf_mpwriter.uploader")  # not __name__: this module also runs as __main__

#: Registrations of dead writers are deleted only once their heartbeat is this old.
REGISTRATION_STALE_S = 3600.0
#: ``uploader.log`` rotates past this size (two old copies are kept).
LOG_BYTES = 1 << 20
#: Signals that end the uploader: each starts a last commit (see :mod:`hf_mpwriter.schedule`).
TERMINATION_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")
T = TypeVar("T")


class Superseded(Exception):
    """A newer uploader took over the queue (this one was stopped, then woke up): send nothing."""


class Abandoned(Exception):
    """The preemption deadline passed (or a second signal came) while a call to the target ran."""


@dataclass
class Progress:
    """What a cycle did, for progress bars and logs."""

    committed_bytes: int = 0
    pending_bytes: int = 0
    commits: int = 0
    error: str | None = None
    fatal: bool = False  # the error needs the user (token, repo, revision): retrying alone won't help
    local_error: bool = False  # the disk or the queue refused (full disk, locked database): retry soon


def backoff(attempts: int, error: TargetError) -> float:
    """Seconds before retrying after ``error`` (see :func:`hf_mpwriter.schedule.backoff`)."""
    return schedule_mod.backoff(attempts, error.transient, error.retry_after)


class Uploader:
    """Commits a logdir's new whole records to its target, from a persistent queue."""

    def __init__(
        self,
        logdir: str | os.PathLike,
        config: UploadConfig | None = None,
        *,
        token: str | None = None,
        target: Target | None = None,
    ) -> None:
        self.logdir = Path(logdir)
        self.state = state_dir(self.logdir, create=False)
        if not self.state.is_dir():
            raise ConfigurationError(f"{str(self.logdir)!r} has no {self.state.name}/: no hf_mpwriter writer used it")
        loaded = config or config_mod.load(self.logdir)
        if loaded is None:
            raise ConfigurationError(
                f"{str(self.logdir)!r} has no upload target configured; pass --repo-id or --target"
            )
        self.config = loaded
        self.target = target or loaded.make_target(token or os.environ.get("HF_TOKEN"))
        self._token = token or os.environ.get("HF_TOKEN")
        self.scanner = Scanner(self.logdir, loaded.allow_patterns, loaded.ignore_patterns)
        self._queue: JobQueue | None = None
        self._prepared = False
        self._prepare_fatal = False
        self._prepare_retry_at = 0.0
        self._prepare_failures = 0
        self._audit_due = True
        self._next_audit = 0.0
        self._next_prune = 0.0
        self._signals: list[float] = []  # monotonic times of termination signals (see :meth:`terminate`)
        self._schedule: Schedule | None = None
        self._generation: int | None = None
        self._lock = UploaderLock(self.logdir)

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:  # opened in the thread that uses it
            self._queue = JobQueue(self.state / "queue.db")
        return self._queue

    # -- election ------------------------------------------------------------------------------
    def acquire(self, wait: float = 3.0) -> None:
        """Become the logdir's uploader (:class:`~hf_mpwriter.election.UploaderLock`), or raise
        :class:`~hf_mpwriter.election.AlreadyRunning`."""
        self._lock.acquire(wait)
        self._audit_due = True  # a takeover trusts nothing it did not check itself
        mailbox.withdraw_handover(self.logdir, {})  # any request was for the uploader this one replaces
        # Nothing written here may stop the uploader: on a full disk it starts anyway, holds the
        # lock (which is how writers see it alive), and resumes as soon as space returns.
        try:
            secure_state_dir(self.logdir)
            self._generation = self.queue.new_generation()
            self.queue.reset_backoff(self.target.key)  # a new uploader (or a sync) tries at once
            self.queue.record_error(None)  # whatever stopped the last one: try again
        except (OSError, sqlite3.Error) as exc:
            logger.warning("cannot update the queue yet (%s); retrying in the loop", exc)
        try:
            write_json_atomic(
                self.state / "uploader.json",
                {**process_identity(), "target": self.target.description, "started": time.time(),
                 "thread": threading.current_thread().name, "token_id": token_id(self._token)},
            )
        except OSError as exc:
            logger.warning("cannot write %s (%s); writers see this uploader by its lock", self.state / "uploader.json", exc)

    def release(self) -> None:
        try:
            (self.state / "uploader.json").unlink()
        except OSError:
            pass
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        self._lock.release()

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, watch: bool = False) -> int:
        """Elected loop: commit every ``commit_every`` until the writers are gone and all is sent.

        Returns 0 when everything is committed, 1 when it gave up after ``drain_timeout`` with a
        backlog left (``hf-mpwriter sync`` finishes it), 2 if another uploader is running.
        """
        try:
            self.acquire()
        except AlreadyRunning as exc:
            logger.info("%s; exiting", exc)
            return 2
        logger.info("uploader %d started for %s -> %s", os.getpid(), self.logdir, self.target.description)
        sampler = system_metrics.start_for(self.logdir, self.config)  # None unless system_metrics is on
        try:
            return self._loop(stop or threading.Event(), watch)
        finally:
            if sampler is not None:
                sampler.stop()
            self.release()

    def _pacing(self, watch: bool) -> Pacing:
        """The schedule's settings, from the logdir's config and the target's own spacing."""
        interval, phase = self.config.pacing(self.target.min_interval)
        spacing = self.config.min_interval if self.config.min_interval is not None else self.target.min_interval
        # Closing writers ask for a commit now, but not more often than the target allows: on the
        # Hub, ranks closing one after the other make one commit per ~30 s, not one per rank.
        trigger_gap = min(self.config.commit_every, spacing)
        return Pacing(
            interval=interval, phase=phase if self.config.nodes > 1 else None, trigger_gap=trigger_gap,
            final_gap=max(trigger_gap, FINAL_GAP_S), drain_timeout=self.config.drain_timeout,
            preemption_deadline=self.config.preemption_deadline, watch=watch,
        )

    def terminate(self) -> None:
        """Ask for the last commit now (SIGTERM, SIGINT, SIGHUP); a second call ends the loop at once.

        Called from a signal handler (the main thread, between two bytecodes): it only notes the time.
        """
        self._signals.append(time.monotonic())

    def _take_signals(self, schedule: Schedule) -> None:
        while self._signals:
            at = self._signals.pop(0)
            first = schedule.term_at is None
            schedule.terminate(at)
            if first:
                logger.warning(
                    "termination signal: committing everything written so far now (deadline %.0f s)",
                    self.config.preemption_deadline,
                )
            else:
                logger.warning("second termination signal: exiting now")

    def _loop(self, stop: threading.Event, watch: bool) -> int:
        """Ask the schedule what is due, do it, tell it how it went (see :mod:`hf_mpwriter.schedule`)."""
        schedule = self._schedule = Schedule(self._pacing(watch), time.monotonic(), time.time())
        while not stop.is_set():
            now = time.monotonic()
            self._beat()
            self._take_signals(schedule)
            if schedule.term_at is None and self._handover_requested():
                logger.info("handing over to a newer uploader (new settings or token); exiting")
                return 0
            schedule.writers(now, bool(live_writers(self.logdir)))
            try:
                self._prune_registrations()
                if mailbox.take(self.logdir, "trigger"):
                    schedule.trigger(now)
                ending = schedule.term_at is not None or (not schedule.writers_alive and not watch)
                decision = schedule.decide(now, drained=ending and self.drained(), retry_due=self._retry_due())
                if decision.action is Action.EXIT:
                    return self._exit(decision, schedule)
                if decision.action is Action.CYCLE:
                    if decision.urgent:  # a writer or a signal wants it now: skip the backoff
                        self.queue.reset_backoff(self.target.key)
                        self._prepare_retry_at = 0.0
                    progress = self.cycle()
                    if progress.local_error:
                        schedule.failed(time.monotonic(), local=True)
                    else:
                        schedule.cycled(time.monotonic(), time.time(), decision.reason)
                    continue
            except Superseded as exc:
                logger.warning("%s; exiting without sending anything", exc)
                return 2
            except Abandoned:
                return self._exit(Decision(Action.EXIT, "the preemption deadline passed during a call", code=1), schedule)
            except (OSError, sqlite3.Error) as exc:  # full disk, locked database: wait, then resume
                logger.error("local error in %s (%s); retrying in %.0f s", self.state, exc, LOCAL_RETRY_S)
                schedule.failed(time.monotonic(), local=True)
                decision = Decision(Action.WAIT, "local error", wait=POLL_S)
            except Exception:  # never die on a surprise: writers would respawn us in a loop
                logger.exception("uploader cycle failed; retrying in %.0f s", UNEXPECTED_ERROR_PAUSE_S)
                schedule.failed(time.monotonic(), local=False)
                decision = Decision(Action.WAIT, "unexpected error", wait=POLL_S)
            stop.wait(min(decision.wait, POLL_S))
        return 0

    def _exit(self, decision: Decision, schedule: Schedule) -> int:
        """Say why the loop ends, and what is left (with the command that sends it) if anything."""
        if decision.code == 0:
            if schedule.term_at is not None:
                logger.info("%s (%.1f s after the signal); uploader exits", decision.reason,
                            time.monotonic() - schedule.term_at)
            else:
                logger.info("%s; uploader exits", decision.reason)
            return 0
        try:
            left = f"{self.backlog_bytes()} bytes are"
        except (OSError, sqlite3.Error):
            left = "what is not committed is"
        logger.error(
            "%s; %s not committed (%s). They are kept queued: run `hf-mpwriter sync %s` to send them",
            decision.reason, left, self.last_error() or "no error recorded", self.logdir,
        )
        return decision.code

    def _beat(self) -> None:
        """The progress heartbeat: refresh ``uploader.json``'s mtime.

        Written by the loop's own thread, at least every second. While a call to the target runs (in a
        worker thread, see :meth:`_call`) the loop keeps beating: calls have timeouts, so a beat then
        means "waiting on the network", never "stopped". Writers replace an uploader whose heartbeat
        stops; other hosts sharing the logdir see it alive by it.
        """
        try:
            os.utime(self.state / "uploader.json")
        except OSError:
            pass

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (a call to the target), beating while it runs.

        Network calls have timeouts (see :class:`hf_mpwriter.targets.hub_client.ScopedApi`), so the
        wait ends; meanwhile the loop shows it is alive and waiting, not stopped.
        """
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["value"] = fn(*args)
            except BaseException as exc:  # handed to the loop's thread, raised there
                result["error"] = exc

        worker = threading.Thread(target=run, name=f"hf_mpwriter-{what}", daemon=True)
        worker.start()
        while worker.is_alive():
            self._beat()
            worker.join(0.25)
            schedule = self._schedule
            if schedule is not None and worker.is_alive():
                self._take_signals(schedule)
                if time.monotonic() >= schedule.deadline():  # the process is about to be killed anyway
                    raise Abandoned(f"{what} still running at the preemption deadline")
        if "error" in result:
            raise result["error"]
        return result["value"]

    def _prune_registrations(self) -> None:
        """Delete registrations of writers dead for long (their heartbeat stale for an hour).

        A writer judged dead by mistake (PID namespaces, a clock step) keeps refreshing its file, so
        it is never deleted; a writer whose file vanished registers again.
        """
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + 60.0
        prune_stale_registrations(self.logdir, REGISTRATION_STALE_S)

    def _retry_due(self) -> bool:
        """A failed job's backoff has run out (retries need not wait for the next interval)."""
        job = self.queue.unfinished(self.target.key)
        return job is not None and job.attempts > 0 and job.step(time.time()) is Step.RECONCILE

    def _handover_requested(self) -> bool:
        """A live process asks this uploader to give way (see :func:`hf_mpwriter.mailbox.request_handover`).

        A request whose requester is gone (a ``sync`` that gave up or was killed, a writer that
        exited) is dropped, not honoured: honouring it would leave the writers' data with nobody to send it.
        """
        requester = mailbox.handover_requester(self.logdir)
        if requester is None:
            return False
        if requester.get("pid") == os.getpid():  # our own request (sync taking over): not for us
            return False
        if not is_alive(requester):
            logger.info("dropping a handover request of pid %s, which is gone", requester.get("pid"))
            mailbox.withdraw_handover(self.logdir, requester)
            return False
        return True

    # -- one cycle -----------------------------------------------------------------------------
    def cycle(self) -> Progress:
        """Reconcile, snapshot, and commit if the pending job is due.

        Target errors and local I/O errors met while snapshotting or sending (a full disk, a vanished
        file) are recorded as the last error (``status`` shows it) and retried later, not raised.
        A queue that cannot be read at all (a locked or full database) raises ``sqlite3.Error`` /
        ``OSError``: the loop retries every few seconds.
        """
        progress = Progress()
        if not self._prepare():
            progress.error, progress.fatal = self.last_error(), self._prepare_fatal
            return progress
        key = self.target.key
        job = self.queue.unfinished(key)
        try:
            if self._audit_due or time.monotonic() >= self._next_audit:
                self.audit()
            step = job.step(time.time()) if job is not None else Step.SEND
            if job is not None and step is Step.RECONCILE:
                job = self._reconcile(job)  # the last attempt may have landed although it failed
            if step is not Step.BACK_OFF:  # while backing off, new data waits on disk: no staged copy per retry
                known = {path: size for path, (size, _, _) in self.queue.committed(key).items()}
                if job is not None:
                    known.update({p.path: p.size for p in job.pieces})
                pieces = self.scanner.snapshot(known)
                if pieces:
                    job = self.queue.add(key, pieces)
                    self.scanner.clean_staging(job.pieces)  # copies the merge superseded
                if job is not None:
                    self._send(job, progress)
        except TargetError as exc:  # from reconciling or auditing: the target could not be asked
            text = redact(str(exc), self._token)
            if job is not None and job.state is not JobState.DONE:
                self.queue.move(job, JobState.PENDING, error=text, next_try=time.time() + backoff(job.attempts + 1, exc),
                                count_attempt=True)
            logger.warning("%s", text)
            self._record_error(exc, text)
            progress.error, progress.fatal = text, not exc.transient
        except (OSError, sqlite3.Error) as exc:  # local trouble: keep everything, say it, retry soon
            text = f"local error while snapshotting {self.logdir}: {exc}; retrying every {LOCAL_RETRY_S:.0f} s"
            logger.error("%s", text)
            self.queue.record_error(ErrorKind.LOCAL, text)
            progress.error, progress.local_error = text, True
        job = self.queue.unfinished(key)
        progress.pending_bytes = job.bytes if job else 0
        return progress

    def _prepare(self) -> bool:
        if self._prepared:
            return True
        if time.monotonic() < self._prepare_retry_at:
            return False
        try:
            self._call("prepare", self.target.prepare)
        except TargetError as exc:
            text = redact(str(exc), self._token)
            self._prepare_fatal = not exc.transient
            self._prepare_failures += 1
            self._prepare_retry_at = time.monotonic() + backoff(self._prepare_failures, exc)
            logger.error("%s", text)
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
        if self._call("check", self.target.holds, usable.pieces):
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
        self._check_generation()
        self.queue.move(job, JobState.INFLIGHT)
        try:
            commit_id = self._call("commit", self.target.commit, job.pieces, message)
        except TargetError as exc:
            delay = backoff(job.attempts, exc)
            text = redact(str(exc), self._token)
            self.queue.move(job, JobState.PENDING, error=text, next_try=time.time() + delay)
            (logger.warning if exc.transient else logger.error)("%s (next try in %.0f s)", text, delay)
            self._record_error(exc, text)
            progress.error, progress.fatal = text, not exc.transient
            return
        self.queue.move(job, JobState.DONE, commit_id=commit_id)
        self.queue.record_error(None)
        self.scanner.clean_staging(())
        progress.commits += 1
        progress.committed_bytes += job.bytes
        logger.info("committed %d file(s), %d bytes as %s", len(job.pieces), job.bytes, commit_id)
        self._verify(job.pieces, full=False)  # trust, but verify: the acknowledgement is not the proof

    def _record_error(self, exc: TargetError, text: str) -> None:
        """Record a target error: one that needs the user makes writers waiting in ``close()`` stop
        waiting at once and say it, with the command that finishes the job once it is fixed."""
        self.queue.record_error(ErrorKind.TRANSIENT if exc.transient else ErrorKind.NEEDS_USER, text)

    def _check_generation(self) -> None:
        """Raise :class:`Superseded` if a newer uploader took the queue over since this one started."""
        if self._generation is None:  # the queue could not be written at start (disk full): now
            self._generation = self.queue.new_generation()
            return
        current = int(self.queue.get_meta(GENERATION_META) or 0)
        if current != self._generation:
            raise Superseded(f"uploader generation {self._generation} was replaced by generation {current}")

    # -- audit ---------------------------------------------------------------------------------
    def audit(self) -> dict[str, str]:
        """Check every file the queue believes committed against what the target really holds.

        Runs at every start (a takeover trusts nothing) and every ``audit_every`` seconds. Costs a
        ``get_paths_info`` call per 100 files on the Hub, a ``stat`` per unchanged file locally.
        """
        committed = self.queue.committed(self.target.key)
        pieces = [
            Piece(path, size, sha, str(self.logdir / path), None, complete)
            for path, (size, sha, complete) in sorted(committed.items())
        ]
        found = self._verify(pieces, full=True)
        self._audit_due = False
        self._next_audit = time.monotonic() + self.config.audit_every
        return found

    def _verify(self, pieces: list[Piece], full: bool) -> dict[str, str]:
        """Compare ``pieces`` with the target; forget (so re-send) any it does not hold exactly.

        A file the target holds shorter or different from what was acknowledged (a late commit of a
        dead uploader, a hand edit, a target restored from an old backup) is sent again, whole, by
        the next snapshot, and counted in ``repaired_total``. ``status`` shows what was found.
        """
        try:
            found = self._call("audit", self.target.differences, pieces) if pieces else {}
        except TargetError:
            self._audit_due = True  # could not ask: the next cycle asks again
            raise
        record = audit_record(self.queue)
        repairing = dict(record.get("repairing", {}))
        for piece in pieces:
            if piece.path not in found:
                repairing.pop(piece.path, None)  # found right again: repaired
        if found:
            logger.error(
                "the target does not hold %d file(s) as acknowledged (%s); sending them again",
                len(found), "; ".join(f"{p}: {why}" for p, why in sorted(found.items())[:5]),
            )
            lost = [p for p in found if not os.path.lexists(self.logdir / p)]
            for path in lost:  # nothing to send it from: say so, do not wait for it forever
                logger.error("%s cannot be repaired: its local file is gone from %s", path, self.logdir)
            self.queue.forget(self.target.key, sorted(set(found) - set(lost)))
            repairing.update({p: why for p, why in found.items() if p not in lost})
            record["repaired_total"] = record.get("repaired_total", 0) + len(found) - len(lost)
        now = time.time()
        record.update({"verified_at": now, "repairing": repairing})
        if full:
            record.update({"time": now, "files": len(pieces), "found": found})
        self.queue.set_meta(AUDIT_META, json.dumps(record, sort_keys=True))
        return found

    # -- state ---------------------------------------------------------------------------------
    def drained(self) -> bool:
        """Nothing queued, nothing being repaired, and no file has whole records beyond what the
        target holds."""
        key = self.target.key
        if self.queue.unfinished(key) is not None or audit_record(self.queue).get("repairing"):
            return False
        known = {path: size for path, (size, _, _) in self.queue.committed(key).items()}
        for rel, st in self.scanner.files():
            if st.st_size > known.get(rel, 0) and self.scanner.whole_size(rel, st, known.get(rel, 0)) > known.get(rel, 0):
                return False
        return True

    def backlog_bytes(self) -> int:
        """Bytes not on the target yet: the unfinished job and whole records newer than it."""
        key = self.target.key
        job = self.queue.unfinished(key)
        known = {path: size for path, (size, _, _) in self.queue.committed(key).items()}
        if job is not None:
            known.update({p.path: p.size for p in job.pieces})
        new = sum(
            max(0, self.scanner.whole_size(rel, st, known.get(rel, 0)) - known.get(rel, 0))
            for rel, st in self.scanner.files() if st.st_size > known.get(rel, 0)
        )
        return (job.bytes if job else 0) + new

    def last_error(self) -> str | None:
        """The current error's text (the queue's one record of it), if any."""
        error = self.queue.error()
        return error.text if error else None

    def drain(
        self, timeout: float | None = None, on_progress: Callable[[Progress], None] | None = None,
        wait: float = 10.0,
    ) -> bool:
        """Commit everything now (elected for the duration); ``True`` once all is committed.

        Backoff still applies between attempts, bounded by ``timeout``. Used by ``hf-mpwriter sync``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.acquire(wait=wait)
        try:
            while True:
                self._beat()
                progress = self.cycle()
                if on_progress is not None:
                    on_progress(progress)
                if self.drained():
                    return True
                if progress.fatal:
                    return False
                job = self.queue.unfinished(self.target.key)
                wait = max(0.2, (job.next_try - time.time()) if job else 0.2)
                if deadline is not None and time.monotonic() + min(wait, 1.0) > deadline:
                    return False
                time.sleep(min(wait, 1.0))
        finally:
            self.release()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the uploader process: ``python -m hf_mpwriter.uploader LOGDIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    args = parser.parse_args(argv)
    logdir = Path(args.logdir)
    secure_state_dir(logdir)
    os.close(private_open(state_dir(logdir) / "uploader.log"))  # private before the handler opens it
    handler = logging.handlers.RotatingFileHandler(
        state_dir(logdir) / "uploader.log", maxBytes=LOG_BYTES, backupCount=2, delay=True
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    for name in ("hf_mpwriter", "huggingface_hub"):  # the client's own warnings too, redacted
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("hf_mpwriter").setLevel(logging.INFO)
    try:
        uploader = Uploader(logdir)
        on_termination(uploader.terminate)
        return uploader.run()
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 3
    except Exception:  # logged through the redacting handler, not printed raw to uploader.out
        logger.exception("the uploader failed")
        return 1


def on_termination(handler: Callable[[], None]) -> None:
    """SIGTERM, SIGINT, SIGHUP: the last commit now (preemption), not death with the backlog on a
    disk that may not survive it. The uploader runs in its own session, but SLURM, systemd and
    Kubernetes signal every process of the job (its cgroup), so it gets them too."""
    for name in TERMINATION_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, lambda _signum, _frame: handler())


if __name__ == "__main__":
    sys.exit(main())
