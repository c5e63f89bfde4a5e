"""What the elected uploader says of itself in ``.hf_mpwriter/uploader.json``: who it is, how its job's commits go,
when its next cycle is due, whether it was signalled, its local errors.

Why apart: the writers (a closing writer says what it waits for), ``status`` and ``view`` read this file on every
node, while the loop (:mod:`.loop`) only decides what to do; writing it must never stop the uploader (a full disk
leaves the writers seeing it alive by its lock), and it is written only when something in it changed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from ..redaction import token_id
from ..state.election import LAST_FILE
from ..state.liveness import process_identity
from ..state.statedir import write_json_atomic
from .schedule import Action, Decision

logger = logging.getLogger("hf_mpwriter.uploader")

#: ``next_cycle_at`` is rewritten only when the next cycle moves by more than this (s).
NEXT_CYCLE_SLACK_S = 1.0
#: How many of its last local errors' times the uploader publishes (``local_error_times``).
LOCAL_ERROR_TIMES = 10


class Published:
    """The uploader's ``uploader.json`` (``fields``), rewritten as it changes, and ``uploader.last.json`` at exit."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.fields: dict[str, Any] = {}  # empty until :meth:`start`

    def start(self, target: str, token: str | None, job: dict | None) -> None:
        """Elected: this process, its target, the token's id (never the token), how its job's commits go."""
        self.fields = {**process_identity(), "target": target, "started": time.time(),
                       "thread": threading.current_thread().name, "token_id": token_id(token), "job": job,
                       "next_cycle_at": None, "signalled": None, "local_errors": 0, "local_error_times": []}
        self.write()

    def job(self, job: dict | None) -> None:
        """How the job's commits go (``status``), written when it changed (once started)."""
        if self.fields and job != self.fields["job"]:
            self.fields["job"] = job
            self.write()

    def next_cycle(self, decision: Decision) -> None:
        """``next_cycle_at``: the wall time of the next cycle (now while one runs), so that a closing writer and
        ``status`` can say what they wait for. Written only when it moves by more than :data:`NEXT_CYCLE_SLACK_S`:
        the loop decides every poll, the due time seldom changes."""
        if decision.action is Action.CYCLE:
            due = time.time()
        elif decision.action is Action.WAIT and math.isfinite(decision.wait):
            due = time.time() + decision.wait
        else:
            return
        published = self.fields.get("next_cycle_at")
        if published is not None and abs(due - published) <= NEXT_CYCLE_SLACK_S:
            return
        self.fields["next_cycle_at"] = due
        self.write()

    def note(self, **fields: Any) -> None:
        """Fields that changed once (``signalled``, ``job_run_final``), written now."""
        self.fields.update(fields)
        self.write()

    def local_error(self) -> None:
        """A try failed on a local error: counted, and when (the last :data:`LOCAL_ERROR_TIMES`)."""
        times = [*self.fields.get("local_error_times", [])[1 - LOCAL_ERROR_TIMES:], time.time()]
        self.note(local_errors=self.fields.get("local_errors", 0) + 1, local_error_times=times)

    def write(self) -> None:
        try:
            write_json_atomic(self.state / "uploader.json", self.fields)
        except OSError as exc:
            logger.warning("cannot write %s (%s); writers see this uploader by its lock", self.state / "uploader.json", exc)

    def close(self, job: dict | None) -> None:
        """At exit: what it published, kept (how it ended: signalled, its local errors, its job's counts), and
        ``uploader.json`` gone."""
        try:
            if self.fields:
                write_json_atomic(self.state / LAST_FILE, {**self.fields, "job": job, "exited": time.time()})
        except OSError:
            pass
        try:
            (self.state / "uploader.json").unlink()
        except OSError:
            pass
