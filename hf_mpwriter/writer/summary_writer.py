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
  ``add_scalars`` does not keep every value in memory (``export_scalars_to_json`` reads the files back;
  :mod:`hf_mpwriter.writer.sub_runs`);
- torch tensors of any dtype ``torch.utils.tensorboard`` accepts work (bfloat16 included,
  :mod:`hf_mpwriter.writer.values`), and histograms are binned in one pass where the values live,
  numpy arrays and CPU tensors on the host, other tensors on their device (:mod:`hf_mpwriter.writer.histogram`);
- ``add_tensor`` and ``add_hparams`` accept ``torch.utils.tensorboard``'s signatures too (what
  tensorboardX lacks for them is built in :mod:`hf_mpwriter.writer.summaries`);
- URL logdirs (``s3://``, ``gs://``...) are refused: this writer writes a local directory
  (:mod:`hf_mpwriter.writer.args`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import tensorboardX
from tensorboardX.proto.summary_pb2 import Summary

from .. import environment
from ..events.encoding import scalar_event, summary_event
from ..events.event_file import DEFAULT_FLUSH_SECS, DEFAULT_ROTATE_BYTES
from ..state import lost, registry
from . import histogram as _histogram
from .args import check_logdir, check_writer_args, default_logdir
from .file_writer import FileWriter, write_restart
from .repeats import Repeats, written_at_start
from .sub_runs import SubRuns
from .summaries import tensor_scalar
from .values import NUMBER_TYPES, TENSOR_TYPE, as_float, checked_float, checked_step, on_host, tensor_args

try:  # torch is optional
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class SummaryWriter(SubRuns):
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
        self._resumed_fresh = False  # (set once the run directory is claimed)
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
                self._resumed_fresh = self._restart_on_first_step and self._claim.fresh
                self._restart_on_first_step = self._restart_on_first_step and self._claim.earlier_attempt
            self.file_writer = self._new_file_writer(self._claim.path)
            if self._claim.earlier_attempt and (self._restart_on_first_step or self._purge_pending):
                self.file_writer.repeats = Repeats(written_at_start(self._claim.path),
                                                   None if self._restart_on_first_step else self.purge_step)
            if self._purge_pending:  # once per writer: repeated after a close it would hide our own events
                self._purge_pending = False
                write_restart(self.file_writer, self.purge_step)
            if self._restart_on_first_step:
                self.file_writer.first_step = self._restart_at
            elif self._resumed_fresh:
                self.file_writer.first_step = self._resumed_at
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
            write_restart(writer, step)
            for held in writer.repeats.restarted(step) if writer.repeats is not None else ():
                writer.add_event(*held)

    def _resumed_at(self, step: int) -> None:
        """``resume=True`` in a run this disk holds nothing of: its first step, kept for the uploader, which asks the
        target whether an earlier attempt's steps before it went with another disk (:mod:`hf_mpwriter.state.lost`)."""
        self._resumed_fresh = False
        self.file_writer.first_step = None
        if self._claim is not None:
            lost.note_resumed(self._root, self._claim.name, step)

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
            or writer.first_step is not None
            or writer.repeats is not None
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
                or writer.first_step is not None or writer.repeats is not None):
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
