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
the heartbeat, handover requests, termination signals, the loop that asks
:class:`~hf_mpwriter.uploader.schedule.Schedule` what is due, and ``python -m hf_mpwriter.uploader``. What a
cycle does, and the guarantees (the fence, the audit, an exactly-once effect), are
:mod:`hf_mpwriter.uploader.commit_cycle`'s: kept apart so that they read, and hold, whatever calls the cycle
(this loop, ``sync``, a test). One thing is done here for the cycle, because it is about time: each
call to the target runs while the loop keeps beating and watching the preemption deadline
(:meth:`Uploader._call`).

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
from typing import Any, Callable, TypeVar

from .. import config as config_mod
from ..config import UploadConfig
from ..errors import ConfigurationError, TargetError, with_sync_advice
from ..redaction import token_id
from ..state import attempts, mailbox
from ..state.election import LAST_FILE, AlreadyRunning, UploaderLock, note_stopped_for_user, uploader_state
from ..state.jobqueue import JobQueue, Superseded
from ..state.liveness import is_alive, process_identity
from ..state.registry import live_writers, prune_stale_registrations, writer_ranks
from ..state.spawn import start_uploader_process
from ..state.statedir import secure_state_dir, state_dir, write_json_atomic
from ..targets import Target, target_for
from ..timing import PRUNE_EVERY_S, REGISTRATION_STALE_S, SIGNAL_REPEAT_S
from . import system_metrics
from .commit_cycle import Committer, Progress
from .coordination import factory, member
from .coordination.pacing import pacing
from .file_limit import FileLimitWatch
from .jobrun.driver import JobRunDriver
from .replacement import replace_process
from .schedule import (
    FINAL_GAP_S,
    LOCAL_RETRY_S,
    POLL_S,
    UNEXPECTED_ERROR_PAUSE_S,
    Action,
    Decision,
    Pacing,
    Schedule,
    call_bound,
)
from .throwaway import Abandoned, Unfinished, call_in_thread

logger = logging.getLogger("hf_mpwriter.uploader")  # not __name__: this module also runs as __main__

#: Exit code of an uploader that could not replace itself after an abandoned call (``exec`` failed).
REPLACE_ME = 4
#: ``next_cycle_at`` in ``uploader.json`` is rewritten only when the next cycle moves by more than this (s).
NEXT_CYCLE_SLACK_S = 1.0
#: How many of its last local errors' times the uploader publishes (``local_error_times``).
LOCAL_ERROR_TIMES = 10
T = TypeVar("T")
__all__ = ["REPLACE_ME", "Abandoned", "Progress", "Superseded", "Uploader"]


def _repository(config: UploadConfig) -> str:
    """The repository, bucket or directory a logdir's settings send to, whatever the folder in it (each
    logdir has its own), and the endpoint: how the index of logdirs matches an earlier attempt's."""
    return f"{config.kind}:{config.repo_type}:{config.repo_id or config.directory}@{config.revision} {config.endpoint}"


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
        #: training process nor ``sync``: after an abandoned call, :meth:`run` replaces it (see :meth:`_call`).
        self.owns_process = owns_process
        self._abandoned: list[threading.Thread] = []  # calls given up on that may still be running
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
            self.target = factory.for_job(loaded, self.target, self._token, call_bound(loaded.http_timeout),
                                          state=self.state)
        self.committer = Committer(self.logdir, loaded, self.target, self._token, call=self._call)
        self.file_limit = FileLimitWatch(loaded)  # a repository holds fewer than 100,000 files: say it in time
        self._next_prune = 0.0
        self._signals: list[float] = []  # monotonic times of termination signals (see :meth:`terminate`)
        self._identity: dict[str, Any] = {}  # what ``uploader.json`` says (:meth:`acquire`)
        self.local_errors = 0  # tries that failed on a local error (a full disk, a queue that cannot be used)
        self.local_error_times: list[float] = []  # wall times of the last :data:`LOCAL_ERROR_TIMES` of them
        self._schedule: Schedule | None = None
        #: The logdir's live writers run on several hosts (a logdir every node shares): this one uploader
        #: commits every node's files, so it paces as a single node would (:meth:`_pacing`).
        self._shared = False
        self._leading = False  # this node's uploader led the job when it was last paced
        self._case: str | None = None  # the pacing's branch last said (:meth:`_pacing`)
        self.job_run = JobRunDriver(self.logdir, loaded, self._beat, signalled=self._signalled,  # (off till started)
                                    in_worker=lambda what, fn, *args: self._in_worker(what, fn, *args, bound=None))
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
        self._identity = {**process_identity(), "target": self.target.description, "started": time.time(),
                          "thread": threading.current_thread().name, "token_id": token_id(self._token), "job": None,
                          "next_cycle_at": None, "signalled": None, "local_errors": 0, "local_error_times": []}
        self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        """``uploader.json``: who this uploader is, and how its commits go (``status``) when that changes."""
        job = self.target.job_info() if isinstance(self.target, member.JobTarget) else None
        if job == self._identity["job"] and not force:
            return
        self._identity["job"] = job
        self._write_identity()

    def _publish_next_cycle(self, decision: Decision) -> None:
        """``uploader.json``'s ``next_cycle_at``: the wall time of the next cycle (now while one runs), so
        that a closing writer and ``status`` can say what they wait for. Written only when it moves by more
        than :data:`NEXT_CYCLE_SLACK_S`: the loop decides every poll, the due time seldom changes."""
        if decision.action is Action.CYCLE:
            due = time.time()
        elif decision.action is Action.WAIT and math.isfinite(decision.wait):
            due = time.time() + decision.wait
        else:
            return
        published = self._identity.get("next_cycle_at")
        if published is not None and abs(due - published) <= NEXT_CYCLE_SLACK_S:
            return
        self._identity["next_cycle_at"] = due
        self._write_identity()

    def _write_identity(self) -> None:
        try:
            write_json_atomic(self.state / "uploader.json", self._identity)
        except OSError as exc:
            logger.warning("cannot write %s (%s); writers see this uploader by its lock", self.state / "uploader.json", exc)

    def release(self) -> None:
        try:  # what it published, kept after it exits (how it ended: signalled, its local errors, its job's counts)
            if self._identity:
                if isinstance(self.target, member.JobTarget):
                    self._identity["job"] = self.target.job_info()
                write_json_atomic(self.state / LAST_FILE, {**self._identity, "exited": time.time()})
        except OSError:
            pass
        try:
            (self.state / "uploader.json").unlink()
        except OSError:
            pass
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
        self._finish_earlier_attempts()
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
                self._forget_if_done()
            self.release()
            if job is not None and code == 0:  # a successor store in use is served on a while
                job.linger(lambda: bool(self._signals))
        if code == REPLACE_ME:  # (see :meth:`_call`)
            replace_process(self.logdir, self.target.description)  # returns only if it failed
        return code

    def _finish_earlier_attempts(self) -> None:
        """Record this logdir for its target (:mod:`~hf_mpwriter.state.attempts`), and start the uploader of
        each logdir that an earlier attempt to the same target left on this host without one: a relaunch
        into a new folder must not leave the killed attempt's last records on disk."""
        target = _repository(self.config)
        attempts.record(self.logdir, target)
        for logdir in attempts.left_behind(self.logdir, target):
            try:
                theirs = config_mod.load(logdir)
                if theirs is None or _repository(theirs) != target or uploader_state(logdir) != "none":
                    continue  # (its settings name another target: never started with this token)
                pid = start_uploader_process(logdir, self._token).pid
            except (OSError, ConfigurationError) as exc:
                logger.warning("%s, an earlier attempt's logdir for the same target, has no uploader, and none "
                               "could be started (%s): `hf-mpwriter sync %s` sends what it holds", logdir, exc, logdir)
                continue
            logger.warning("%s, an earlier attempt's logdir for the same target, had no uploader: started one "
                           "(pid %d) to commit what it holds", logdir, pid)

    def _forget_if_done(self) -> None:
        """Everything committed and no writer left: no later uploader needs to look at this logdir."""
        try:
            if self.committer.drained() and not live_writers(self.logdir):
                attempts.forget(self.logdir)
        except (OSError, sqlite3.Error) as exc:
            logger.debug("kept %s in the index of logdirs (%s)", self.logdir, exc)

    def _pacing(self, watch: bool) -> Pacing:
        """The schedule's settings: this node's commit times (:func:`~.coordination.pacing.pacing`, from the
        target's situation), the target's spacing, the logdir's config. A new case is said once."""
        if isinstance(self.target, member.JobTarget):
            situation = self.target.situation(self.config)
        else:
            situation = factory.situation(self.config, self.target, shared=self._shared)
        interval, phase, case = pacing(situation)
        if case != self._case:  # said once a case: its interval, and what changes it where it is not commit_every
            self._case = case
            if interval <= self.config.commit_every:
                logger.info("commits every %.0f s (%s)", interval, case)
            else:
                logger.warning("commit_every=%.0f s: this node's files are committed every %.0f s instead (%s): the logs' "
                               "budget on the Hub; HF_MPWRITER_COMMITS_PER_HOUR (and HF_MPWRITER_API_REQUESTS) raise it",
                               self.config.commit_every, interval, case)
        spacing = factory.target_spacing(self.config, self.target)
        # Closing writers ask for a commit now, but not more often than the target allows: on the
        # Hub, ranks closing one after the other make one commit per ~30 s, not one per rank; and not more
        # often than an explicit HF_MPWRITER_COMMITS_PER_HOUR on a single node's repository (the last writer gone
        # and SIGTERM still commit at once: nothing else sends those records; a job's nodes follow its plan).
        trigger_gap = min(self.config.commit_every, spacing)
        if self.config.kind == "hub" and self.config.commits_per_hour is not None and self.config.nodes <= 1:
            trigger_gap = max(trigger_gap, 3600 / self.config.commits_per_hour)
        return Pacing(
            interval=interval, phase=phase, trigger_gap=trigger_gap,
            final_gap=max(trigger_gap, FINAL_GAP_S), drain_timeout=self.config.drain_timeout,
            preemption_deadline=self.config.preemption_deadline, watch=watch,
        )

    def _repace_if_shared(self, schedule: Schedule, live: list[dict], watch: bool, now: float) -> None:
        """Pace anew when the logdir's live writers come to run on several hosts (a logdir every node shares),
        or no longer do."""
        shared = len({w.get("host") for w in live}) > 1
        if shared != self._shared:
            self._shared = shared
            schedule.repace(self._pacing(watch), now, time.time())

    def terminate(self, at: float | None = None) -> None:
        """Ask for the last commit now (SIGTERM, SIGINT, SIGHUP); a second call ends the loop at once.
        ``at``: when the signal came (``time.monotonic()``; default now), for one kept while starting.

        Called from a signal handler (the main thread, between two bytecodes): it only notes the time.
        """
        self._signals.append(time.monotonic() if at is None else at)

    def _take_signals(self, schedule: Schedule) -> None:
        while self._signals:
            at = self._signals.pop(0)
            first = schedule.term_at is None
            if not schedule.terminate(at):
                logger.info("termination signal again within %.0f s of the first: the same event", SIGNAL_REPEAT_S)
            elif first:
                logger.warning(
                    "termination signal: committing everything written so far now (deadline %.0f s)",
                    self.config.preemption_deadline,
                )
                if isinstance(self.target, member.JobTarget):  # its wait for the leader ends in time
                    self.target.hurry(schedule.deadline())
                self._identity["signalled"] = time.time()  # (``status``: the last commit is under way)
                self._write_identity()
            else:
                logger.warning("second termination signal: exiting now")

    def _loop(self, stop: threading.Event, watch: bool) -> int:
        """Ask the schedule what is due, do it, tell it how it went (see :mod:`hf_mpwriter.uploader.schedule`)."""
        schedule = self._schedule = Schedule(self._pacing(watch), time.monotonic(), time.time())
        while not stop.is_set():
            now = time.monotonic()
            self._beat()
            self._take_signals(schedule)
            if schedule.term_at is None and self._handover_requested():
                logger.info("handing over to a newer uploader (new settings or token); exiting")
                return 0
            live = live_writers(self.logdir)
            schedule.writers(now, bool(live))
            self.job_run.live(writer_ranks(live))
            if self.config.nodes > 1 and not isinstance(self.target, member.JobTarget):
                self._repace_if_shared(schedule, live, watch, now)
            schedule.held_until = now + self.committer.held_until - time.time()  # (relative: one host's clocks)
            if isinstance(self.target, member.JobTarget):  # the writers gone: its last records, not put off
                self.target.closing = not schedule.writers_alive
                leading = self.target.leading
                if leading != self._leading:  # a leader's node offers at the groups' writes (its job run rides along)
                    self._leading = leading
                    schedule.repace(self._pacing(watch), now, time.time())
            try:
                if self.job_run.round_due(now):
                    self.job_run.round()
                self._prune_registrations()
                if mailbox.take(self.logdir, "trigger"):
                    schedule.trigger(now)
                decision = schedule.local_wait(now) or schedule.decide(  # no queue read while a local error waits
                    now, drained=schedule.ending and self.committer.drained(), retry_due=self.committer.retry_due())
                if decision.action is Action.EXIT:
                    last_points = self._job_run_last_points(decision, schedule)
                    if last_points is None:
                        return self._exit(decision, schedule)
                    decision = last_points
                self._publish_next_cycle(decision)
                if decision.action is Action.CYCLE:
                    if decision.urgent:  # a writer or a signal wants it now: skip the backoff
                        self.committer.skip_backoff()
                    self.job_run.rides_along(decision.urgent, schedule.writers_alive)
                    progress = self.committer.cycle()
                    self._count_files(progress)
                    schedule.needs_user = progress.fatal
                    if self._stuck_transfer(schedule):
                        self._count_hang("process_replacements")
                        return REPLACE_ME
                    if progress.local_error:
                        self._failed_locally(schedule)
                    else:
                        schedule.cycled(time.monotonic(), time.time(), decision.reason)
                        if isinstance(self.target, member.JobTarget):  # a plan, the store gone: from its next turn
                            schedule.repace(self._pacing(watch), time.monotonic(), time.time())
                            self._publish()
                    continue
            except Superseded as exc:
                logger.warning("%s; exiting, the newer uploader carries on", exc)
                return 2
            except Abandoned:
                return self._exit(Decision(Action.EXIT, "the preemption deadline passed during a call", code=1), schedule)
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

    def _failed_locally(self, schedule: Schedule) -> None:
        """A try failed on a local error: the next one in ``LOCAL_RETRY_S``; counted, and when, in ``uploader.json``."""
        schedule.failed(time.monotonic(), local=True)
        self.local_errors += 1
        self.local_error_times = [*self.local_error_times[1 - LOCAL_ERROR_TIMES:], time.time()]
        self._identity.update(local_errors=self.local_errors, local_error_times=self.local_error_times)
        self._write_identity()

    def _job_run_last_points(self, decision: Decision, schedule: Schedule) -> Decision | None:
        """Before the uploader exits with everything committed and every writer gone (the job ended, or all
        its ranks are down at once): the job run's last points, with the ranks that reported them, and one
        more commit for them (a CYCLE). ``None``: nothing left, exit now."""
        if self.job_run.view is None or decision.code != 0 or schedule.term_at is not None:
            return None  # (after SIGTERM: no time for them; they stay in the view's state for a next uploader)
        written = self.job_run.update(final=True)
        if self.job_run.exchange is not None and not self._identity.get("job_run_final"):
            # This node's last points went to a leader (or their wait ran out): its closing writers, which keep
            # its launcher (and maybe the job's store, in torchrun's agent) alive until now, may end.
            self._identity["job_run_final"] = True
            self._write_identity()
        return Decision(Action.CYCLE, "the job run's last points", urgent=True) if written else None

    def _signalled(self) -> bool:
        """A termination signal came: the commit comes first (no job run rounds from then on)."""
        return self._schedule is not None and self._schedule.term_at is not None

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
            left = f"{self.committer.backlog_bytes()} bytes are"
        except (OSError, sqlite3.Error):
            left = "what is not committed is"
        if schedule.needs_user:  # writers closing after this exit still say the error, not "keeps trying"
            note_stopped_for_user(self.logdir, self._identity)
        error = self.committer.last_error() or "no error recorded"
        logger.error("%s", with_sync_advice(f"{decision.reason}; {left} not committed ({error}). They are kept queued",
                                            self.logdir, "this sends them"))
        return decision.code

    def _beat(self) -> None:
        """The progress heartbeat: refresh ``uploader.json``'s mtime.

        Written by the loop's own thread, at least every second. While a call to the target runs (in a
        worker thread, see :meth:`_call`) the loop keeps beating: every call is bounded (the call is
        abandoned past :func:`~hf_mpwriter.uploader.schedule.call_bound`), so a beat then means "waiting on the
        network, for a bounded time", never "stopped". Writers replace an uploader whose heartbeat
        stops; other hosts sharing the logdir see it alive by it.
        """
        try:
            os.utime(self.state / "uploader.json")
        except OSError:
            pass

    def _call(self, what: str, fn: Callable[..., T], *args: Any, nbytes: int = 0) -> T:
        """``fn(*args)``, a call to the target (the committer makes every one through this), run in a
        worker thread while this thread goes on being the loop.

        Meanwhile the loop beats (writers see it waiting on the network, not stopped) and, in
        :meth:`run`, takes termination signals. Two bounds end the wait without waiting for the call,
        which is left to end on its own or to die with the process:

        - its own bound (:func:`hf_mpwriter.uploader.schedule.call_bound`: read timeouts and ``nbytes``): a
          call that never answers (an hf_xet transfer to a CAS on a half-open connection gets no
          timeout at all) raises a transient :class:`~hf_mpwriter.errors.TargetError`; the target
          drops its client, so the next call starts on a fresh one, and the committer backs off
          and reconciles (asks the target whether the abandoned commit landed) before sending again;
        - the preemption deadline, or a second signal: :class:`Abandoned` ends the loop.

        An abandoned hf_xet transfer keeps holding hf_xet's process-wide upload slots (why, and what
        was measured: ``docs/design-notes.md``, "Abandoned Xet transfers"). So where the uploader owns
        its process, the loop then replaces the process (:meth:`_stuck_transfer`,
        :func:`.replacement.replace_process`): nothing of the stuck calls survives an ``exec``. Where it cannot (a
        thread of the training process, ``sync``), it carries on with a fresh client; a CAS silent for
        long can then hold its Xet uploads until hf_xet gives up.

        A commit abandoned either way is treated as one whose answer was lost: a late landing of it
        is fenced by ``parent_commit`` (412) once anything newer was committed. The worker never
        touches the queue (its connection is this thread's).
        """
        return self._in_worker(what, fn, *args, bound=call_bound(self.config.http_timeout, nbytes))

    def _in_worker(self, what: str, fn: Callable[..., T], *args: Any, bound: float | None) -> T:
        """``fn(*args)`` in a worker thread while this thread beats and takes signals (:meth:`_call`); past
        ``bound`` seconds it is abandoned. ``None``: work that bounds itself (the job's store calls)."""
        started = time.monotonic()

        def wait() -> float:
            self._beat()
            if isinstance(self.target, member.JobTarget):  # the job may change during a long call (a hand-over)
                self._publish()
            schedule = self._schedule
            if schedule is not None:
                self._take_signals(schedule)
                if time.monotonic() >= schedule.deadline():  # the process is about to be killed anyway
                    raise Abandoned(f"{what} still running at the preemption deadline")
            return 0.25 if bound is None or time.monotonic() - started < bound else 0.0

        try:
            result = call_in_thread(f"hf_mpwriter-{what}", lambda: fn(*args), wait)
            if isinstance(self.target, member.JobTarget):  # (what the call changed of the job, said at once)
                self._publish()
            return result
        except Unfinished as stuck:
            self.target.reset_client()  # the stuck call keeps its client; the next one gets a fresh one
            self._abandoned.append(stuck.thread)
            self._count_hang("abandoned_calls")
        raise TargetError(
            f"cannot {what} on {self.target.description}: the call did not finish within {bound:.0f} s "
            f"(HF_MPWRITER_HTTP_TIMEOUT and the bytes in flight); abandoned, will retry with a fresh client",
            transient=True,
        )

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
        (see :meth:`_call`). Not while terminating: the signal's deadline ends the process anyway."""
        self._abandoned = [worker for worker in self._abandoned if worker.is_alive()]
        return bool(self._abandoned) and self.owns_process and schedule.term_at is None

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

    def _handover_requested(self) -> bool:
        """A live process asks this uploader to give way (see :func:`hf_mpwriter.state.mailbox.request_handover`).

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
                    self._forget_if_done()
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
