"""One run directory's writer as tensorboardX's ``FileWriter`` API has it, and the restart records.

Apart from :mod:`hf_mpwriter.writer.summary_writer`: a ``SummaryWriter`` holds one of these for its
run and one per sub-run (:mod:`hf_mpwriter.writer.sub_runs`), each over this library's
:class:`~hf_mpwriter.events.event_file.EventFileWriter`; both write the restart point with
:func:`write_restart`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tensorboardX import writer as tbx_writer
from tensorboardX.proto.event_pb2 import Event, SessionLog

from .. import environment
from ..events.event_file import DEFAULT_FLUSH_SECS, DEFAULT_ROTATE_BYTES, EventFileWriter
from . import termination
from .repeats import Repeats


class FileWriter(tbx_writer.FileWriter):
    """tensorboardX's ``FileWriter`` API over this library's event-file writer."""

    def __init__(
        self,
        logdir: str | os.PathLike,
        max_queue: int = 10,
        flush_secs: float = DEFAULT_FLUSH_SECS,
        filename_suffix: str = "",
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        handle_sigterm: bool | None = None,
    ) -> None:  # no super().__init__: it would open a tensorboardX event file
        if handle_sigterm is None:  # a FileWriter made by the user: the environment says (HF_MPWRITER_HANDLE_SIGTERM)
            handle_sigterm = environment.read().handle_sigterm
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.event_writer = EventFileWriter(logdir, max_queue, flush_secs, filename_suffix, rotate_bytes)
        # On SIGTERM, its records reach the OS before the process ends.
        termination.watch(self.event_writer, install=handle_sigterm)
        self._default_metadata: dict = {}
        #: Called with the step of the first event that has one, then cleared (a writer with ``resume=True``).
        self.first_step: Callable[[int], None] | None = None
        #: A resumed run's records an earlier attempt wrote at its start, left out until the restart point passes.
        self.repeats: Repeats | None = None

    def add_event(self, event: Any, step: Any = None, walltime: float | None = None) -> None:
        if self.first_step is not None and step is not None:
            self.first_step(int(step))
        if self.repeats is not None:
            if self.repeats.passed(step):
                self.repeats = None
            elif self.repeats.leaves_out(event, step, walltime, [value.tag for value in event.summary.value]):
                return
        super().add_event(event, step, walltime)

    def reopen(self) -> None:
        """tensorboardX's ``reopen()`` after ``close()`` is broken (a closed queue); this one says what works."""
        raise RuntimeError(self.event_writer.closed_message() if self.event_writer.closed else
                           "this event writer is open: there is nothing to reopen")


def write_restart(writer: FileWriter, step: int) -> None:
    """What tensorboardX's ``purge_step`` writes first in a run's new file, with its ``START`` twice:
    TensorBoard's Python reader drops the run's earlier events from ``step`` on at a ``START``, but takes
    the first ``START`` of a run for the start of a session, not a restart (an earlier attempt without a
    restart point wrote none). The second one is a restart whatever came before (the first then dropped
    nothing of this attempt: it had logged nothing yet)."""
    writer.add_event(Event(step=step, file_version="brain.Event:2"))
    for _ in range(2):
        writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
