"""The uploader: one commit loop per node and logdir.

Like ``huggingface_hub.CommitScheduler`` it commits the logdir every ``commit_every``; unlike it, it
runs once per node whatever the number of training processes, records every commit in a
persistent queue before sending it, and survives any crash::

    every commit_every (or when a writer closes, or on SIGTERM):
        one commit cycle  (hf_mpwriter.uploader.commit_cycle: reconcile, snapshot, fenced commit, audit)
    exit when every registered writer is gone and the queue is drained

This module is *when*, and the process around the cycle: the election (it holds
``.hf_mpwriter/uploader.lock`` while it runs; the OS drops the lock when it dies, and the writers,
which check for a live uploader every second, start a new one, which resumes the queue),
the heartbeat, handover requests, termination signals (how they end the run: :mod:`.ending`), the loop that asks
:class:`~hf_mpwriter.uploader.schedule.Schedule` what is due (paced by :mod:`.node_pacing`), and
``python -m hf_mpwriter.uploader``. What a cycle does, and the guarantees (the fence, the audit, an exactly-once
effect), are :mod:`hf_mpwriter.uploader.commit_cycle`'s: kept apart so that they read, and hold, whatever calls the cycle
(this loop, ``sync``, a test). One thing is done here for the cycle, because it is about time: each
call to the target runs while the loop keeps beating and watching the preemption deadline
(:mod:`.target_calls`).

Example:
    >>> from hf_mpwriter.uploader.loop import Uploader
    >>> Uploader("runs/exp1").drain(timeout=60)  # what `hf-mpwriter sync runs/exp1` does  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from .. import config as config_mod
from ..config import UploadConfig
from ..errors import ConfigurationError
from ..state import mailbox
from ..state.election import AlreadyRunning, UploaderLock
from ..state.jobqueue import JobQueue, Superseded
from ..state.registry import live_writers, prune_stale_registrations, writer_ranks
from ..state.statedir import secure_state_dir, state_dir
from ..targets import Target, target_for
from ..timing import PRUNE_EVERY_S, REGISTRATION_STALE_S
from . import system_metrics
from .commit_cycle import Committer
from .coordination import factory, member
from .cycle_terms import Progress
from .earlier_attempts import finish_earlier_attempts, forget_if_done
from .ending import handover_requested, job_run_last_points, say_exit, take_signals
from .file_limit import FileLimitWatch
from .jobrun.driver import JobRunDriver
from .node_pacing import NodePacing
from .published import Published
from .replacement import replace_process
from .schedule import (
    LOCAL_RETRY_S,
    POLL_S,
    UNEXPECTED_ERROR_PAUSE_S,
    Action,
    Decision,
    Schedule,
    call_bound,
)
from .target_calls import TargetCalls
from .throwaway import Abandoned

logger = logging.getLogger("hf_mpwriter.uploader")  # not __name__: this module also runs as __main__

#: Exit code of an uploader that could not replace itself after an abandoned call (``exec`` failed).
REPLACE_ME = 4
__all__ = ["REPLACE_ME", "Abandoned", "Progress", "Superseded", "Uploader"]


class Uploader:
    """The logdir's elected uploader: runs :class:`~hf_mpwriter.uploader.commit_cycle.Committer` cycles when
    the schedule says so (:meth:`run`), or until everything is committed (:meth:`drain`)."""

    def __init__(
        self,
        logdir: str | os.PathLike,
        config: UploadConfig | None = None,
        *,
        token: str | None = None,
        target: Target | None = None,
        owns_process: bool = False,
    ) -> None:
        self.logdir = Path(logdir)
        #: This process is the uploader's own (``python -m hf_mpwriter.uploader``), not the user's
        #: training process nor ``sync``: after an abandoned call, :meth:`run` replaces it (:mod:`.target_calls`).
        self.owns_process = owns_process
        self.state = state_dir(self.logdir, create=False)
        if not self.state.is_dir():
            raise ConfigurationError(f"{str(self.logdir)!r} has no {self.state.name}/: no hf_mpwriter writer used it")
        loaded = config or config_mod.load(self.logdir)
        if loaded is None:
            raise ConfigurationError(
                f"{str(self.logdir)!r} has no upload target configured; pass --repo-id or --target"
            )
        self.config = loaded
        self._token = token or os.environ.get("HF_TOKEN")
        self.target = target or target_for(loaded, self._token)
        if target is None and owns_process:  # a multi-node job with a store: one leader commits for all
            self.target = factory.for_job(loaded, self.target, self._token, call_bound(loaded.http_timeout))
        self.calls = TargetCalls(self.target, loaded.http_timeout, self._meanwhile, self._publish, self._count_hang)
        self.committer = Committer(self.logdir, loaded, self.target, self._token, call=self.calls)
        self.committer.signalled = self._signalled  # (its last commit before any look for lost steps)
        self.file_limit = FileLimitWatch(loaded)  # a repository holds fewer than 100,000 files: say it in time
        self._next_prune = 0.0
        self._signals: list[float] = []  # monotonic times of termination signals (see :meth:`terminate`)
        self.published = Published(self.state)  # ``uploader.json`` (:meth:`acquire`)
        self._schedule: Schedule | None = None
        self._pacing = NodePacing(loaded, self.target)  # the schedule's settings, and what changes them
        self.job_run = JobRunDriver(self.logdir, loaded, self._beat, signalled=self._signalled,  # (off till started)
                                    in_worker=lambda what, fn, *args: self.calls.in_worker(what, fn, *args, bound=None))
        self._lock = UploaderLock(self.logdir)

    @property
    def queue(self) -> JobQueue:
        """The logdir's persistent queue (the committer's)."""
        return self.committer.queue

    def cycle(self) -> Progress:
        """One commit cycle now, whatever the schedule (see :meth:`Committer.cycle`)."""
        return self.committer.cycle()

    def last_error(self) -> str | None:
        """The current error's text, if any (see :meth:`Committer.last_error`)."""
        return self.committer.last_error()

    # -- election ------------------------------------------------------------------------------
    def acquire(self, wait: float = 3.0) -> None:
        """Become the logdir's uploader (:class:`~hf_mpwriter.state.election.UploaderLock`), or raise
        :class:`~hf_mpwriter.state.election.AlreadyRunning`."""
        self._lock.acquire(wait)
        self.committer.audit_due = True  # a takeover trusts nothing it did not check itself
        mailbox.withdraw_handover(self.logdir, {})  # any request was for the uploader this one replaces
        # Nothing written here may stop the uploader: on a full disk it starts anyway, holds the lock
        # (writers see it alive), and resumes as soon as space returns.
        try:
            secure_state_dir(self.logdir)
            self.committer.take_over()
        except (OSError, sqlite3.Error) as exc:
            logger.warning("cannot update the queue yet (%s); retrying in the loop", exc)
        self.published.start(self.target.description, self._token, self._job_info())

    @property
    def local_error_times(self) -> list[float]:
        """Wall times of the last tries that failed on a local error (a full disk, a queue that cannot be used)."""
        return self.published.fields.get("local_error_times", [])

    def _job_info(self) -> dict | None:
        """How the job's commits go (``status``), if this logdir is a node of one."""
        return self.target.job_info() if isinstance(self.target, member.JobTarget) else None

    def _publish(self) -> None:
        self.published.job(self._job_info())

    def release(self) -> None:
        self.published.close(self._job_info())
        self.committer.close()
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
        finish_earlier_attempts(self.logdir, self.config, self._token)
        sampler = system_metrics.start_for(self.logdir, self.config)  # None unless system_metrics is on
        job = self.target if isinstance(self.target, member.JobTarget) else None
        self.job_run.start(job, math.inf if job is None else job.timing.job_run_wait)
        if job is not None:
            job.start()
        try:
            code = self._loop(stop or threading.Event(), watch)
        finally:
            if job is not None:
                job.stop()
            if sampler is not None:
                sampler.stop()
            self.job_run.close()
            if code == 0:
                forget_if_done(self.logdir, self.committer.drained)
            self.release()
            if job is not None and code == 0:  # a successor store in use is served on a while
                job.linger(lambda: bool(self._signals))
        if code == REPLACE_ME:  # (:mod:`.target_calls`)
            replace_process(self.logdir, self.target.description)  # returns only if it failed
        return code

    def terminate(self, at: float | None = None) -> None:
        """Ask for the last commit now (SIGTERM, SIGINT, SIGHUP); a second call ends the loop at once.
        ``at``: when the signal came (``time.monotonic()``; default now), for one kept while starting.

        Called from a signal handler (the main thread, between two bytecodes): it only notes the time.
        """
        self._signals.append(time.monotonic() if at is None else at)

    def _loop(self, stop: threading.Event, watch: bool) -> int:
        """Ask the schedule what is due, do it, tell it how it went (see :mod:`hf_mpwriter.uploader.schedule`)."""
        schedule = self._schedule = Schedule(self._pacing.settings(watch), time.monotonic(), time.time())
        while not stop.is_set():
            now = time.monotonic()
            self._beat()
            take_signals(self._signals, schedule, self.config, self.target, self.published)
            if schedule.term_at is None and handover_requested(self.logdir):
                logger.info("handing over to a newer uploader (new settings or token); exiting")
                return 0
            live = live_writers(self.logdir)
            schedule.writers(now, bool(live))
            self.job_run.live(writer_ranks(live))
            if self.config.nodes > 1 and not isinstance(self.target, member.JobTarget):
                self._pacing.repace_if_shared(schedule, live, watch, now)
            schedule.held_until = now + self.committer.held_until - time.time()  # (relative: one host's clocks)
            if isinstance(self.target, member.JobTarget):  # the writers gone: its last records, not put off
                self.target.closing = not schedule.writers_alive
                self._pacing.repace_if_leading(self.target, schedule, watch, now)
            try:
                if self.job_run.round_due(now):
                    self.job_run.round()
                self._prune_registrations()
                if mailbox.take(self.logdir, "trigger"):
                    schedule.trigger(now)
                decision = schedule.local_wait(now) or schedule.decide(  # no queue read while a local error waits
                    now, drained=schedule.ending and self.committer.drained(), retry_due=self.committer.retry_due())
                if decision.action is Action.EXIT:
                    last_points = job_run_last_points(self.job_run, self.published, decision, schedule)
                    if last_points is None:
                        return say_exit(decision, schedule, self.committer, self.logdir, self.published)
                    decision = last_points
                self.published.next_cycle(decision)
                if decision.action is Action.CYCLE:
                    if self._cycle(decision, schedule, watch):
                        return REPLACE_ME
                    continue
            except Superseded as exc:
                logger.warning("%s; exiting, the newer uploader carries on", exc)
                return 2
            except Abandoned:
                decision = Decision(Action.EXIT, "the preemption deadline passed during a call", code=1)
                return say_exit(decision, schedule, self.committer, self.logdir, self.published)
            except (OSError, sqlite3.Error) as exc:  # full disk, locked database: wait, then resume
                self.committer.say_local_error(f"local error in {self.state} ({exc}); retrying in {LOCAL_RETRY_S:.0f} s", exc)
                self._failed_locally(schedule)
                decision = Decision(Action.WAIT, "local error", wait=POLL_S)
            except Exception:  # never die on a surprise: writers would respawn us in a loop
                logger.exception("uploader cycle failed; retrying in %.0f s", UNEXPECTED_ERROR_PAUSE_S)
                schedule.failed(time.monotonic(), local=False)
                decision = Decision(Action.WAIT, "unexpected error", wait=POLL_S)
            stop.wait(min(decision.wait, POLL_S))
        return 0

    def _cycle(self, decision: Decision, schedule: Schedule, watch: bool) -> bool:
        """One commit cycle the schedule asked for, and the schedule told how it went; whether this process must be
        replaced (an abandoned call still runs: :meth:`_stuck_transfer`)."""
        if decision.urgent:  # a writer or a signal wants it now: skip the backoff
            self.committer.skip_backoff()
        self.job_run.rides_along(decision.urgent, schedule.writers_alive)
        progress = self.committer.cycle()
        self.job_run.say_lost(self.committer.lost.found or [])
        self._count_files(progress)
        schedule.needs_user = progress.fatal
        if self._stuck_transfer(schedule):
            self._count_hang("process_replacements")
            return True
        if progress.local_error:
            self._failed_locally(schedule)
        else:
            schedule.cycled(time.monotonic(), time.time(), decision.reason, again=progress.again)
            if isinstance(self.target, member.JobTarget):  # a plan, the store gone: from its next turn
                schedule.repace(self._pacing.settings(watch), time.monotonic(), time.time())
                self._publish()
        return False

    def _failed_locally(self, schedule: Schedule) -> None:
        """A try failed on a local error: the next one in ``LOCAL_RETRY_S``; counted, and when, in ``uploader.json``."""
        schedule.failed(time.monotonic(), local=True)
        self.published.local_error()

    def _signalled(self) -> bool:
        """A termination signal came: the commit comes first (no job run rounds from then on)."""
        return self._schedule is not None and self._schedule.term_at is not None

    def _beat(self) -> None:
        """The progress heartbeat: refresh ``uploader.json``'s mtime.

        Written by the loop's own thread, at least every second. While a call to the target runs (in a
        worker thread, :mod:`.target_calls`) the loop keeps beating: every call is bounded (the call is
        abandoned past :func:`~hf_mpwriter.uploader.schedule.call_bound`), so a beat then means "waiting on the
        network, for a bounded time", never "stopped". Writers replace an uploader whose heartbeat
        stops; other hosts sharing the logdir see it alive by it.
        """
        try:
            os.utime(self.state / "uploader.json")
        except OSError:
            pass

    def _meanwhile(self) -> float:
        """While a call to the target runs (:mod:`.target_calls`): beat, say how the job's commits go (a hand-over
        may come during a long call), take signals; the preemption deadline."""
        self._beat()
        self._publish()
        if self._schedule is None:
            return math.inf
        take_signals(self._signals, self._schedule, self.config, self.target, self.published)
        return self._schedule.deadline()

    def _count_hang(self, key: str) -> None:
        """In the queue, for ``status``: a call abandoned, or this process replaced for one (never the loop's end)."""
        try:
            self.queue.count_hang(key)
        except (OSError, sqlite3.Error) as exc:
            logger.debug("not counted in the queue (%s): %s", key, exc)

    def _count_files(self, progress: Progress) -> None:
        """After a cycle that committed: warn if the repository's files near the Hub's limit."""
        if progress.commits:
            self.file_limit.check(self.queue, self.target.key)

    def _stuck_transfer(self, schedule: Schedule) -> bool:
        """An abandoned call still runs and this process is the uploader's own: replace the process
        (:mod:`.target_calls`). Not while terminating: the signal's deadline ends the process anyway."""
        return self.calls.stuck and self.owns_process and schedule.term_at is None

    def _prune_registrations(self) -> None:
        """Delete registrations of writers dead for long (their heartbeat stale for an hour).

        A writer judged dead by mistake (PID namespaces, a clock step) keeps refreshing its file, so
        it is never deleted; a writer whose file vanished registers again.
        """
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        prune_stale_registrations(self.logdir, REGISTRATION_STALE_S)

    def drain(
        self, timeout: float | None = None, on_progress: Callable[[Progress], None] | None = None,
        wait: float = 10.0,
    ) -> bool:
        """Commit everything now (elected for the duration); ``True`` once all is committed.

        Backoff still applies between attempts, bounded by ``timeout``. Used by ``hf-mpwriter sync``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.acquire(wait=wait)
        self.job_run.start()
        try:
            while True:
                self._beat()
                self.job_run.update(final=not live_writers(self.logdir))
                progress = self.committer.cycle()
                self._count_files(progress)
                if on_progress is not None:
                    on_progress(progress)
                if self.committer.drained():
                    forget_if_done(self.logdir, self.committer.drained)
                    return True
                if progress.fatal:
                    return False
                job = self.committer.pending_job()
                wait = max(0.2, (job.next_try - time.time()) if job else 0.2)
                if deadline is not None and time.monotonic() + min(wait, 1.0) > deadline:
                    return False
                time.sleep(min(wait, 1.0))
        finally:
            self.job_run.close()
            self.release()
