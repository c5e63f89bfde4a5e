"""How the uploader's run ends: the termination signals it takes, a newer uploader's hand-over request, the job
run's last points before the exit, and what the exit says.

Why apart: the loop (:mod:`.loop`) asks these at each turn, but each is about the end of this uploader's run (a
signal's deadline, a successor, the backlog left), not about the turn's commit.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from ..config import UploadConfig
from ..errors import with_sync_advice
from ..state import mailbox
from ..state.election import note_stopped_for_user
from ..state.liveness import is_alive
from ..targets import Target
from ..timing import SIGNAL_REPEAT_S
from .commit_cycle import Committer
from .coordination import member
from .jobrun.driver import JobRunDriver
from .published import Published
from .schedule import Action, Decision, Schedule

logger = logging.getLogger("hf_mpwriter.uploader")


def take_signals(signals: list[float], schedule: Schedule, config: UploadConfig, target: Target,
                 published: Published) -> None:
    """The termination signals noted since the last look (taken out of ``signals``), told to the schedule: the first
    asks for the last commit now (a job's node stops waiting for its leader in time), a second ends the loop."""
    while signals:
        at = signals.pop(0)
        first = schedule.term_at is None
        if not schedule.terminate(at):
            logger.info("termination signal again within %.0f s of the first: the same event", SIGNAL_REPEAT_S)
        elif first:
            logger.warning(
                "termination signal: committing everything written so far now (deadline %.0f s)",
                config.preemption_deadline,
            )
            if isinstance(target, member.JobTarget):  # its wait for the leader ends in time
                target.hurry(schedule.deadline())
            published.note(signalled=time.time())  # (``status``: the last commit is under way)
        else:
            logger.warning("second termination signal: exiting now")


def handover_requested(logdir: Path) -> bool:
    """A live process asks the logdir's uploader to give way (see :func:`hf_mpwriter.state.mailbox.request_handover`).

    A request whose requester is gone (a ``sync`` that gave up or was killed, a writer that
    exited) is dropped, not honoured: honouring it would leave the writers' data with nobody to send it.
    """
    requester = mailbox.handover_requester(logdir)
    if requester is None:
        return False
    if requester.get("pid") == os.getpid():  # our own request (sync taking over): not for us
        return False
    if not is_alive(requester):
        logger.info("dropping a handover request of pid %s, which is gone", requester.get("pid"))
        mailbox.withdraw_handover(logdir, requester)
        return False
    return True


def job_run_last_points(job_run: JobRunDriver, published: Published, decision: Decision,
                        schedule: Schedule) -> Decision | None:
    """Before the uploader exits with everything committed and every writer gone (the job ended, or all
    its ranks are down at once): the job run's last points, with the ranks that reported them, and one
    more commit for them (a CYCLE). ``None``: nothing left, exit now."""
    if job_run.view is None or decision.code != 0 or schedule.term_at is not None:
        return None  # (after SIGTERM: no time for them; they stay in the view's state for a next uploader)
    written = job_run.update(final=True)
    if job_run.exchange is not None and not published.fields.get("job_run_final"):
        # This node's last points went to a leader (or their wait ran out): its closing writers, which keep
        # its launcher (and maybe the job's store, in torchrun's agent) alive until now, may end.
        published.note(job_run_final=True)
    return Decision(Action.CYCLE, "the job run's last points", urgent=True) if written else None


def say_exit(decision: Decision, schedule: Schedule, committer: Committer, logdir: Path, published: Published) -> int:
    """Say why the loop ends, and what is left (with the command that sends it) if anything; the exit code."""
    if decision.code == 0:
        if schedule.term_at is not None:
            logger.info("%s (%.1f s after the signal); uploader exits", decision.reason,
                        time.monotonic() - schedule.term_at)
        else:
            logger.info("%s; uploader exits", decision.reason)
        return 0
    try:
        left = f"{committer.backlog_bytes()} bytes are"
    except (OSError, sqlite3.Error):
        left = "what is not committed is"
    if schedule.needs_user:  # writers closing after this exit still say the error, not "keeps trying"
        note_stopped_for_user(logdir, published.fields)
    error = committer.last_error() or "no error recorded"
    logger.error("%s", with_sync_advice(f"{decision.reason}; {left} not committed ({error}). They are kept queued",
                                        logdir, "this sends them"))
    return decision.code
