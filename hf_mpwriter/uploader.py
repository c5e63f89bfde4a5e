"""The uploader: one commit loop per node and logdir.

Like ``huggingface_hub.CommitScheduler`` it commits the logdir every ``commit_every``; unlike it, it
runs once per node whatever the number of training processes, records every commit in a
persistent queue before sending it, and survives any crash::

    every commit_every (or when a writer closes, or on SIGTERM):
        one commit cycle  (hf_mpwriter.commit_cycle: reconcile, snapshot, fenced commit, audit)
    exit when every registered writer is gone and the queue is drained

This module is *when*, and the process around the cycle: the election (it holds
``.hf_mpwriter/uploader.lock`` while it runs; the OS drops the lock when it dies, and the writers,
which check for a live uploader every couple of seconds, start a new one, which resumes the queue),
the heartbeat, handover requests, termination signals, the loop that asks
:class:`~hf_mpwriter.schedule.Schedule` what is due, and ``python -m hf_mpwriter.uploader``. What a
cycle does, and the guarantees (the fence, the audit, an exactly-once effect), are
:mod:`hf_mpwriter.commit_cycle`'s: kept apart so that they read, and hold, whatever calls the cycle
(this loop, ``sync``, a test). One thing is done here for the cycle, because it is about time: each
call to the target runs while the loop keeps beating and watching the preemption deadline
(:meth:`Uploader._call`).

Example:
    >>> from hf_mpwriter.uploader import Uploader
    >>> Uploader("runs/exp1").drain(timeout=60)  # what `hf-mpwriter sync runs/exp1` does  # doctest: +SKIP
    True
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import config as config_mod
from . import mailbox, system_metrics
from .commit_cycle import Committer, Progress, Superseded
from .config import UploadConfig
from .election import AlreadyRunning, UploaderLock
from .errors import ConfigurationError
from .jobqueue import JobQueue, Step
from .liveness import is_alive, process_identity
from .redaction import RedactingFilter, token_id
from .registry import live_writers, prune_stale_registrations
from .schedule import FINAL_GAP_S, LOCAL_RETRY_S, POLL_S, UNEXPECTED_ERROR_PAUSE_S, Action, Decision, Pacing, Schedule
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
__all__ = ["Abandoned", "Progress", "Superseded", "Uploader", "main", "on_termination"]


class Abandoned(Exception):
    """The preemption deadline passed (or a second signal came) while a call to the target ran."""


class Uploader:
    """The logdir's elected uploader: runs :class:`~hf_mpwriter.commit_cycle.Committer` cycles when
    the schedule says so (:meth:`run`), or until everything is committed (:meth:`drain`)."""

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
        self._token = token or os.environ.get("HF_TOKEN")
        self.target = target or loaded.make_target(self._token)
        self.committer = Committer(self.logdir, loaded, self.target, self._token, call=self._call)
        self._next_prune = 0.0
        self._signals: list[float] = []  # monotonic times of termination signals (see :meth:`terminate`)
        self._schedule: Schedule | None = None
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
        """Become the logdir's uploader (:class:`~hf_mpwriter.election.UploaderLock`), or raise
        :class:`~hf_mpwriter.election.AlreadyRunning`."""
        self._lock.acquire(wait)
        self.committer.audit_due = True  # a takeover trusts nothing it did not check itself
        mailbox.withdraw_handover(self.logdir, {})  # any request was for the uploader this one replaces
        # Nothing written here may stop the uploader: on a full disk it starts anyway, holds the
        # lock (which is how writers see it alive), and resumes as soon as space returns.
        try:
            secure_state_dir(self.logdir)
            self.committer.take_over()
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
                decision = schedule.decide(now, drained=ending and self.committer.drained(), retry_due=self._retry_due())
                if decision.action is Action.EXIT:
                    return self._exit(decision, schedule)
                if decision.action is Action.CYCLE:
                    if decision.urgent:  # a writer or a signal wants it now: skip the backoff
                        self.committer.skip_backoff()
                    progress = self.committer.cycle()
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
            left = f"{self.committer.backlog_bytes()} bytes are"
        except (OSError, sqlite3.Error):
            left = "what is not committed is"
        logger.error(
            "%s; %s not committed (%s). They are kept queued: run `hf-mpwriter sync %s` to send them",
            decision.reason, left, self.committer.last_error() or "no error recorded", self.logdir,
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
        """``fn(*args)``, a call to the target (the committer makes every one through this), run in a
        worker thread while this thread goes on being the loop.

        Meanwhile the loop beats (writers see it waiting on the network, not stopped: network calls
        have timeouts, see :class:`hf_mpwriter.targets.hub_client.ScopedApi`, so the wait ends) and,
        in :meth:`run`, takes termination signals: at the preemption deadline, or on a second signal,
        it raises :class:`Abandoned` without waiting for the call, which is left to end or to die with
        the process. That is how a hung call is bounded: a commit abandoned so stays ``inflight`` in
        the queue, as after a SIGKILL, and the next uploader asks the target whether it landed before
        sending it again. The worker never touches the queue (its connection is this thread's).
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
        job = self.committer.pending_job()
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
                progress = self.committer.cycle()
                if on_progress is not None:
                    on_progress(progress)
                if self.committer.drained():
                    return True
                if progress.fatal:
                    return False
                job = self.committer.pending_job()
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
