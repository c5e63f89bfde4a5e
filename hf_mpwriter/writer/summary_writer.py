"""``SummaryWriter``: a drop-in for tensorboardX's and ``torch.utils.tensorboard``'s writer.

Every ``add_*`` method is tensorboardX's own (its summary functions and protobufs); what changes
is underneath:

- events go to this library's :class:`~hf_mpwriter.events.event_file.EventFileWriter` (whole records, one
  ``write`` per batch, unique names, flush every 2 s by default, rotation);
- ``add_scalar`` has a fast path that encodes the event directly (byte-identical output);
- each process gets a run directory of its own: ``<logdir>`` for a single process (the plain layout
  of today's writers), ``<logdir>/rank-NNN`` for rank NNN of a distributed job (past rank 8999 in a
  folder of 9,000: ``<logdir>/ranks-9000-17999/rank-12345``, within the Hub's 10,000 entries a folder);
- ``add_scalars`` and ``add_hparams`` keep tensorboardX's directory layout but use this writer, and
  ``add_scalars`` does not keep every value in memory (``export_scalars_to_json`` reads the files back);
- torch tensors of any dtype ``torch.utils.tensorboard`` accepts work (bfloat16 included,
  :mod:`hf_mpwriter.writer.values`), and histograms are binned in one pass where the values live,
  numpy arrays and CPU tensors on the host, other tensors on their device (:mod:`hf_mpwriter.writer.histogram`);
- ``add_tensor`` and ``add_hparams`` accept ``torch.utils.tensorboard``'s signatures too (what
  tensorboardX lacks for them is built in :mod:`hf_mpwriter.writer.summaries`);
- URL logdirs (``s3://``, ``gs://``...) are refused: this writer writes a local directory
  (:mod:`hf_mpwriter.writer.args`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import tensorboardX
from tensorboardX import writer as tbx_writer
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import hparams, scalar

from .. import environment
from ..events.encoding import scalar_event, summary_event
from ..events.event_file import DEFAULT_FLUSH_SECS, DEFAULT_ROTATE_BYTES, EventFileWriter
from ..state import registry
from . import histogram as _histogram
from . import termination
from .args import check_logdir, check_writer_args, default_logdir
from .summaries import domain_discrete, hparams_call, scalars_json, tensor_scalar
from .values import NUMBER_TYPES, TENSOR_TYPE, as_float, checked_float, checked_step, on_host, tensor_args

try:  # torch is optional
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


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

    def add_event(self, event: Any, step: Any = None, walltime: float | None = None) -> None:
        if self.first_step is not None and step is not None:
            self.first_step(int(step))
        super().add_event(event, step, walltime)

    def reopen(self) -> None:
        """tensorboardX's ``reopen()`` after ``close()`` is broken (a closed queue); this one says what works."""
        raise RuntimeError(self.event_writer.closed_message() if self.event_writer.closed else
                           "this event writer is open: there is nothing to reopen")


class SummaryWriter(tensorboardX.SummaryWriter):
    """Writes TensorBoard event files for this process, fast and crash-safe.

    Args are those of ``tensorboardX.SummaryWriter`` / ``torch.utils.tensorboard.SummaryWriter``
    (``flush_secs`` defaults to 2 s instead of 120 s: that is what a crash can lose), plus:

    Args:
        rank: this process's global rank, overriding the launcher's environment (``RANK``,
            ``SLURM_PROCID``, Open MPI / PMI). Rank ``r`` of a distributed job writes into
            ``<logdir>/rank-<r:03d>`` (past rank 8999: ``<logdir>/ranks-9000-17999/rank-12345``, see
            :mod:`hf_mpwriter.state.run_dirs`); a single process writes into ``<logdir>`` itself.
        rotate_bytes: continue in a new event file past this size (bounds the cost of uploads).
        resume: this process continues a run that an earlier attempt (killed, preempted) logged into
            the same directory: the first step it logs becomes the restart point, as if it had been
            given as ``purge_step``, where another process wrote event files before (a new run, or
            one a writer of this process began, is not restarted). TensorBoard's two readers then show
            every step once, with this attempt's values from there (the default reader replaces a tag
            logged again; the other one, ``--load_fast=false``, hides every tag from ``purge_step``:
            only a restart point at the first step logged makes them agree). Records logged without a
            step (``global_step=None``) do not count. The integrations set it.

    Example:
        >>> from hf_mpwriter import SummaryWriter
        >>> with SummaryWriter("runs/exp1") as writer:  # doctest: +SKIP
        ...     for step in range(100):
        ...         writer.add_scalar("loss/train", 1 / (step + 1), step)
    """

    def __init__(
        self,
        logdir: str | os.PathLike | None = None,
        comment: str | None = "",
        purge_step: int | None = None,
        max_queue: int | None = 10,
        flush_secs: float | None = DEFAULT_FLUSH_SECS,
        filename_suffix: str | None = "",
        write_to_disk: bool | None = True,
        log_dir: str | os.PathLike | None = None,
        comet_config: dict | None = None,
        *,
        rank: int | None = None,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        resume: bool = False,
    ) -> None:
        # HF_MPWRITER_* checked before anything is created (HFSummaryWriter has read them already).
        self._env = getattr(self, "_env", None) or environment.read()
        if log_dir is not None and logdir is None:
            logdir = log_dir
        if not logdir:
            logdir = default_logdir(comment or "")
        # Every check first: a rejected call must not leave an empty logdir behind.
        self.rank_info = check_writer_args(
            logdir, purge_step=purge_step, max_queue=max_queue, flush_secs=flush_secs,
            filename_suffix=filename_suffix, rotate_bytes=rotate_bytes, rank=rank,
        )
        self._root = check_logdir(logdir) if write_to_disk else Path(logdir)
        self._owner_pid = os.getpid()  # a forked child must not close what its parent owns
        self._rotate_bytes = rotate_bytes
        self._claim: registry.Claim | None = None
        self._purge_pending = purge_step is not None
        #: ``resume=True`` without ``purge_step``: the restart point is the first step logged, not known yet.
        self._restart_on_first_step = bool(resume) and purge_step is None
        self._scalars_file_writers: dict[str, list[FileWriter]] = {}  # add_scalars' sub-runs, for export
        self._exported_up_to: dict[Path, int] = {}  # what export_scalars_to_json has read, per file
        comet_config = comet_config or {"disabled": True}
        self._comet_enabled = not comet_config.get("disabled", True)
        super().__init__(
            logdir=str(logdir),
            comment=comment,
            purge_step=purge_step,
            max_queue=max_queue,
            flush_secs=flush_secs,
            filename_suffix=filename_suffix,
            write_to_disk=write_to_disk,
            comet_config=comet_config,
        )

    # -- where events go ---------------------------------------------------------------------
    @property
    def log_dir(self) -> str:
        """The logdir given to the constructor (``torch.utils.tensorboard`` spelling)."""
        return self.logdir

    @property
    def run_dir(self) -> Path:
        """The directory this process's events go to: ``logdir`` or ``logdir/rank-NNN`` (in its block
        folder past rank 8999)."""
        if self._claim is None:
            return self._root / (self.rank_info.run_name() or "")
        return self._claim.path

    def get_logdir(self) -> str:
        """Directory of this process's event files (its run directory)."""
        return str(self.run_dir)

    def _new_file_writer(self, directory: str | os.PathLike) -> FileWriter:
        return FileWriter(directory, self._max_queue or 10, self._flush_secs, self._filename_suffix or "", self._rotate_bytes,
                          handle_sigterm=self._env.handle_sigterm)

    def _get_file_writer(self) -> Any:
        """The writer of this process's run directory (claimed on first use, again after close)."""
        if not self._write_to_disk:
            return super()._get_file_writer()
        if self.all_writers is None or self.file_writer is None:  # type: ignore[has-type]
            if self._claim is None:
                self._claim = registry.claim_run_dir(self._root, self.rank_info.run_name())
                # resume=True restarts a run an earlier attempt wrote into, not one this process began
                # (a Trainer's evaluate() after train(), Lightning's fit() after validate()) nor a new one.
                self._restart_on_first_step = self._restart_on_first_step and self._claim.earlier_attempt
            self.file_writer = self._new_file_writer(self._claim.path)
            if self._purge_pending:  # once per writer: repeated after a close it would hide our own events
                self._purge_pending = False
                _write_restart(self.file_writer, self.purge_step)
            if self._restart_on_first_step:
                self.file_writer.first_step = self._restart_at
            self.file_writer.event_writer.flush()  # never raises: a full disk must not stop construction
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
        return self.file_writer

    def _restart_at(self, step: int) -> None:
        """``resume=True``: the first step logged is the restart point, written before that record into
        this run and every ``add_scalars`` sub-run made so far (later ones get it when they are made)."""
        self._restart_on_first_step = False
        self.purge_step = step
        for writer in self.all_writers.values():  # (the open ones: a sub-run reopened later gets it when made)
            writer.first_step = None
            _write_restart(writer, step)

    # -- the hot path ------------------------------------------------------------------------
    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """Add a scalar (tensorboardX and ``torch.utils.tensorboard`` signatures)."""
        writer = self.file_writer
        if (
            writer is None
            or not self._write_to_disk
            or writer._default_metadata
            or display_name
            or summary_description
            or new_style
            or double_precision
            or self._comet_enabled
            or self._restart_on_first_step
        ):
            return self._add_scalar_slow(
                tag, scalar_value, global_step, walltime, display_name, summary_description, new_style, double_precision
            )
        try:  # checks cost only on failure; exact types first: numpy scalars and 0-d tensors are the hot path too
            kind = type(scalar_value)
            if kind is float:
                value = scalar_value
            elif kind in NUMBER_TYPES:
                value = float(scalar_value)
            elif kind is TENSOR_TYPE:
                value = float(scalar_value.item())
            else:
                value = as_float(scalar_value)
            if global_step is not None:
                global_step = int(global_step)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            value = checked_float("add_scalar", tag, scalar_value)
            global_step = checked_step("add_scalar", tag, global_step)
        if global_step is not None:
            if global_step < 0:
                return self._add_scalar_slow(tag, value, global_step, walltime, "", "", False, False)
        writer.event_writer.add_serialized(
            scalar_event(tag, value, global_step, time.time() if walltime is None else walltime)
        )

    def _add_scalar_slow(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None,
        walltime: float | None,
        display_name: str | None,
        summary_description: str | None,
        new_style: bool,
        double_precision: bool,
    ) -> None:
        value = checked_float("add_scalar", tag, scalar_value)
        global_step = checked_step("add_scalar", tag, global_step)
        if new_style or double_precision:
            summary = tensor_scalar(tag, value, new_style, double_precision)
            self._get_file_writer().add_summary(summary, global_step, walltime)
            return
        super().add_scalar(tag, value, global_step, walltime, display_name, summary_description)

    # -- methods whose tensorboardX versions create tensorboardX writers -----------------------
    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several scalars on one chart: each tag in ``<run>/<main_tag>/<tag>``, as tensorboardX does.

        The one place where tensorboardX and ``torch.utils.tensorboard`` disagree: torch writes
        ``tag`` to the run ``<run>/<main_tag with '/' replaced by '_'>_<tag>`` (one directory level),
        tensorboardX to ``<run>/<main_tag>/<tag>`` (nested directories). This writer follows
        tensorboardX, so code moving from torch sees the same charts (same scalar tag ``main_tag``)
        under different run names in TensorBoard's run list.

        Unlike tensorboardX, values are not also kept in memory (which grows without bound):
        ``export_scalars_to_json`` reads them back from the event files.
        """
        if not self._write_to_disk:
            return
        values = {tag: checked_float("add_scalars", f"{main_tag}/{tag}", v) for tag, v in tag_scalar_dict.items()}
        walltime = time.time() if walltime is None else walltime
        run = self._get_file_writer().get_logdir()
        for tag, value in values.items():
            key = os.path.join(run, main_tag, tag)
            writer = self.all_writers.get(key)
            if writer is None:
                writer = self.all_writers[key] = self._new_file_writer(key)
                if key not in self._scalars_file_writers and self.purge_step is not None:
                    _write_restart(writer, self.purge_step)  # a sub-run restarts with its run (once)
                writer.first_step = self._restart_at if self._restart_on_first_step else None
                self._scalars_file_writers.setdefault(key, []).append(writer)
            writer.add_summary(scalar(main_tag, value), global_step, walltime)

    def export_scalars_to_json(self, path: str | os.PathLike) -> None:
        """Write ``{key: [[wall_time, step, value], ...]}`` of the ``add_scalars`` values, as tensorboardX does.

        Keys are tensorboardX's (``<run>/<main_tag>/<tag>``) and, as there, only ``add_scalars``
        values are exported, and each export holds what was logged since the previous one. The
        values are read back from this writer's own event files (flushed first) instead of being
        kept in memory, so they are what TensorBoard shows: float32 values, and step 0 where no
        ``global_step`` was given (tensorboardX's JSON has the float64 value and ``null``).
        """
        self.flush()
        files = {key: [f for w in writers for f in w.event_writer.files] for key, writers in self._scalars_file_writers.items()}
        data = scalars_json(files, self._exported_up_to)
        with open(path, "w") as stream:
            json.dump(data, stream)

    def add_hparams(  # type: ignore[override]
        self,
        hparam_dict: dict,
        metric_dict: dict,
        *args: Any,
        name: str | None = None,
        global_step: int | None = None,
        hparam_domain_discrete: dict | None = None,
        run_name: str | None = None,
    ) -> None:
        """Hyperparameters and their metrics, in a sub-run ``<run>/<name>`` (tensorboardX layout).

        Both signatures work: tensorboardX's ``(hparam_dict, metric_dict, name=None,
        global_step=None)`` and torch's ``(hparam_dict, metric_dict, hparam_domain_discrete=None,
        run_name=None, global_step=None)``; a dict in third place is torch's
        ``hparam_domain_discrete``, a str tensorboardX's ``name``. ``hparam_domain_discrete``
        is written as torch writes it; the summaries carry ``global_step`` as torch 2.x's do.
        """
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionaries")
        domain, name, global_step = hparams_call(
            args, {"name": name, "global_step": global_step, "hparam_domain_discrete": hparam_domain_discrete,
                   "run_name": run_name},
        )
        exp, ssi, sei = hparams(hparam_dict, metric_dict)
        exp = domain_discrete(exp, hparam_dict, domain)
        values = {k: checked_float("add_hparams", k, v) for k, v in metric_dict.items()}
        if not self._write_to_disk:
            return
        step = checked_step("add_hparams", "global_step", global_step)
        writer = self._new_file_writer(os.path.join(self._get_file_writer().get_logdir(), name or str(time.time())))
        try:
            for summary in (exp, ssi, sei):
                writer.add_summary(summary, step)
            for key, value in values.items():
                writer.add_summary(scalar(key, value), step)
        finally:
            writer.close()

    def add_tensor(self, tag: str, tensor: Any, global_step: int | None = None, walltime: float | None = None) -> None:
        """A whole tensor (``torch.utils.tensorboard``'s ``add_tensor``: its own ``tensor_proto``, same bytes)."""
        if torch is None:
            raise ImportError("add_tensor needs torch (pip install torch)")
        from torch.utils.tensorboard.summary import tensor_proto

        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor)
        summary = Summary.FromString(tensor_proto(tag, tensor.detach().cpu()).SerializeToString())
        self._get_file_writer().add_summary(summary, global_step, walltime)

    # -- tensors of every dtype; histograms where the tensor lives -------------------------------
    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """tensorboardX's ``add_histogram``, same bytes, binned in one pass where the values live.

        A tensor on an accelerator is binned there: only the bucket counts, min, max, sum and sum
        of squares are copied to the host (see :mod:`hf_mpwriter.writer.histogram`); inputs it does
        not cover and ``bins`` strings other than ``'tensorflow'`` take tensorboardX's path.
        """
        summary = None if self._comet_enabled else _histogram.histogram_summary_bytes(tag, values, bins, max_bins)
        if summary is None:
            super().add_histogram(tag, on_host(values), global_step, bins, walltime, max_bins)
            return
        self._add_summary_bytes(summary, global_step, walltime)

    def _add_summary_bytes(self, summary: bytes, global_step: Any, walltime: float | None) -> None:
        """Append a serialized ``Summary`` as tensorboardX's ``add_summary`` would, without protobuf messages."""
        writer = self._get_file_writer()
        step = None if global_step is None else int(global_step)
        if (not self._write_to_disk or writer._default_metadata or (step is not None and step < 0)
                or self._restart_on_first_step):
            writer.add_summary(Summary.FromString(summary), global_step, walltime)
            return
        writer.event_writer.add_serialized(summary_event(summary, step, time.time() if walltime is None else walltime))

    add_image = tensor_args("img_tensor")(tensorboardX.SummaryWriter.add_image)
    add_images = tensor_args("img_tensor")(tensorboardX.SummaryWriter.add_images)
    add_image_with_boxes = tensor_args("img_tensor", "box_tensor")(tensorboardX.SummaryWriter.add_image_with_boxes)
    add_video = tensor_args("vid_tensor")(tensorboardX.SummaryWriter.add_video)
    add_audio = tensor_args("snd_tensor")(tensorboardX.SummaryWriter.add_audio)
    add_embedding = tensor_args("mat", "label_img")(tensorboardX.SummaryWriter.add_embedding)
    add_pr_curve = tensor_args("labels", "predictions", "weights")(tensorboardX.SummaryWriter.add_pr_curve)
    add_mesh = tensor_args("vertices", "colors", "faces")(tensorboardX.SummaryWriter.add_mesh)

    # -- lifecycle ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Hand everything logged so far to the OS (no network, never blocks on upload).

        Never raises: on a full disk the records stay in memory (retried every ``flush_secs``, the
        error logged once, with what to do). Frameworks call ``flush()`` after every log (the
        transformers Trainer does): a full disk must not crash training. :attr:`unwritten_bytes`
        says how much is waiting.
        """
        super().flush()

    @property
    def unwritten_bytes(self) -> int:
        """Bytes of records logged but not on disk yet (the disk refused them); 0 normally."""
        writers = (self.all_writers or {}).values()
        return sum(w.event_writer.unwritten_bytes for w in writers if isinstance(w, FileWriter))

    def close(self) -> None:
        """Flush and close this writer's files (they become read-only: complete)."""
        if os.getpid() != self._owner_pid:
            logger.debug("close() in a forked child of the writer's process: the parent owns its files")
            return
        if self.all_writers is not None:
            # Not tensorboardX's close(): it calls flush() first, which raises on a full disk; each
            # file writer's close() flushes, waits a little for space, and says what it could not write.
            for file_writer in self.all_writers.values():
                file_writer.close()
        super().close()
        if self._claim is not None:
            self._claim.release()
            self._claim = None


def _write_restart(writer: FileWriter, step: int) -> None:
    """What tensorboardX's ``purge_step`` writes first in a run's new file, with its ``START`` twice:
    TensorBoard's Python reader drops the run's earlier events from ``step`` on at a ``START``, but takes
    the first ``START`` of a run for the start of a session, not a restart (an earlier attempt without a
    restart point wrote none). The second one is a restart whatever came before (the first then dropped
    nothing of this attempt: it had logged nothing yet)."""
    writer.add_event(Event(step=step, file_version="brain.Event:2"))
    for _ in range(2):
        writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
