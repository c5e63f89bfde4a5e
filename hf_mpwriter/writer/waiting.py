"""What a writer waiting for its files to be committed waits for, in words (``close()``, ``status``).
(And ``close()``'s wait for a job run's last points to be sent.)

Read only from state the uploader publishes for everyone: ``uploader.json`` (its liveness, its next
cycle's wall time ``next_cycle_at``, and in a multi-node job its ``job`` dict) and the queue's error
record. Never from the uploader's objects: the writer side does not import the uploader side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..state.election import uploader_info, uploader_state
from ..state.queue_readers import read_error
from ..state.statedir import state_dir
from ..state.upload_error import ErrorKind, UploadError
from ..timing import duration_text

#: A next cycle due less than this far ahead (or past) reads as "working on one" (s): the loop polls.
DUE_NOW_S = 0.5


def job_run_sent(logdir: Path) -> bool:
    """Whether the node's uploader has sent its job run's last points to the job's leader (a job with a
    store), or is gone: until then a closing writer keeps its process, and so its launcher, up (torchrun's
    agent may host the job's store, which every node's last exchange needs)."""
    info = uploader_info(logdir)
    return info is None or bool(info.get("job_run_final"))


def wait_job_run_sent(logdir: Path, until: float) -> None:
    """A node of a job with a store: wait (until ``until``, monotonic) for its uploader to have sent the job
    run's last points, so that this process (and its launcher, which may host the job's store) outlives
    the exchange: the job run's last steps land whichever node hosts the store."""
    while time.monotonic() < until and not job_run_sent(logdir):
        time.sleep(0.1)


def waiting_for(logdir: Path, target: str, now: float | None = None) -> str:
    """What the files of ``logdir`` wait for before they are committed to ``target``, as a phrase."""
    state = uploader_state(logdir)
    error = read_error(state_dir(logdir, create=False) / "queue.db")
    return describe(state, uploader_info(logdir), error, target, time.time() if now is None else now)


def describe(state: str, info: dict[str, Any] | None, error: UploadError | None, target: str, now: float) -> str:
    """:func:`waiting_for` on state already read (pure): ``state`` as ``uploader_state`` says it."""
    if state == "none":
        return "an uploader to start (the writers start one; `.hf_mpwriter/uploader.log` says why one stopped)"
    if state == "hung":
        return "the uploader, which has made no progress for a while (the writers replace it)"
    if error is not None and error.kind is ErrorKind.NEEDS_USER:
        return f"the user: {error.text}"
    if error is not None and error.kind is ErrorKind.TRANSIENT:
        return f"{target} to answer: the last try failed ({error.text})"
    if error is not None and error.kind is ErrorKind.LOCAL:
        return f"the local disk: {error.text}"
    due = _due_text((info or {}).get("next_cycle_at"), now)
    job = (info or {}).get("job")
    return _job_text(job, due) if job else f"the uploader's {due}"


def _due_text(next_cycle_at: Any, now: float) -> str:
    """``commit in progress`` or ``next commit, due in 12 s``."""
    if not isinstance(next_cycle_at, (int, float)):
        return "next commit"
    ahead = next_cycle_at - now
    return "commit in progress" if ahead <= DUE_NOW_S else f"next commit, due in {ahead:.0f} s"


def _job_text(job: dict[str, Any], due: str) -> str:
    """A multi-node job: this node's turn, or the job's leader (``job_info`` of the uploader's job target)."""
    where = f"job {job.get('job_id')}, node {job.get('node')} of {job.get('nodes')}"
    if job.get("store_gone") or job.get("mode") == "node":
        why = f": {job['why']}" if job.get("why") else ""
        return f"this node's turn to commit its own files ({where}{why}); this node's {due}"
    if job.get("leading"):
        return f"the job's commit, which this node leads ({where}); this node's {due}"
    bound = job.get("age_bound")
    behind = f"; each rank's newest record is at most {duration_text(bound)} behind" if isinstance(bound, (int, float)) else ""
    return f"the job's leader, on another node, to commit this node's files ({where}{behind}); this node's {due}"
