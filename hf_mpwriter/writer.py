"""``SummaryWriter``: a drop-in for tensorboardX's and ``torch.utils.tensorboard``'s writer.

Every ``add_*`` method is tensorboardX's own (its summary functions and protobufs); what changes
is underneath:

- events go to this library's :class:`~hf_mpwriter.event_file.EventFileWriter` (whole records, one
  ``write`` per batch, unique names, flush every 2 s by default, rotation);
- ``add_scalar`` has a fast path that encodes the event directly (byte-identical output);
- each process gets a run directory of its own: ``<logdir>`` for a single process (the plain layout
  of today's writers), ``<logdir>/rank-NNN`` for rank NNN of a distributed job;
- ``add_scalars`` and ``add_hparams`` keep tensorboardX's directory layout but use this writer, and
  ``add_scalars`` does not keep every value in memory.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Union

import tensorboardX
from tensorboardX import writer as tbx_writer
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboardX.proto.tensor_pb2 import TensorProto
from tensorboardX.summary import hparams, scalar

from . import ranks, state
from .encoding import scalar_event
from .errors import ConfigurationError
from .event_file import DEFAULT_FLUSH_SECS, DEFAULT_ROTATE_BYTES, EventFileWriter

logger = logging.getLogger(__name__)


class FileWriter(tbx_writer.FileWriter):
    """tensorboardX's ``FileWriter`` API over this library's event-file writer."""

    def __init__(
        self,
        logdir: Union[str, os.PathLike],
        max_queue: int = 10,
        flush_secs: float = DEFAULT_FLUSH_SECS,
        filename_suffix: str = "",
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> None:  # no super().__init__: it would open a tensorboardX event file
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.event_writer = EventFileWriter(logdir, max_queue, flush_secs, filename_suffix, rotate_bytes)
        self._default_metadata: dict = {}


def _default_logdir(comment: str) -> str:
    stamp = datetime.now().strftime("%b%d_%H-%M-%S")
    return os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment or ''}")


def check_logdir(logdir: Union[str, os.PathLike]) -> Path:
    """Create ``logdir`` if needed and make sure this process can write there, or say what to fix."""
    path = Path(logdir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"logdir {str(path)!r} exists and is not a directory: pass a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create logdir {str(path)!r}: {exc.strerror or exc}; choose a directory you can write to"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"logdir {str(path)!r} is not writable by this user; choose another directory")
    return path


def _as_float(value: Any) -> float:
    """A Python float from a float, int, numpy scalar or one-element array / tensor."""
    item = getattr(value, "item", None)
    if item is not None:
        try:
            value = item()
        except (ValueError, RuntimeError):
            shape = getattr(value, "shape", "?")
            raise ValueError(f"scalar_value must hold exactly one number, got shape {tuple(shape)}") from None
    return float(value)


def _tensor_scalar(tag: str, value: float, new_style: bool, double_precision: bool) -> Summary:
    """``torch.utils.tensorboard``'s ``new_style`` / ``double_precision`` scalar summary."""
    if double_precision:
        tensor = TensorProto(dtype="DT_DOUBLE", double_val=[value])
    else:
        tensor = TensorProto(dtype="DT_FLOAT", float_val=[value])
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    return Summary(value=[Summary.Value(tag=tag, tensor=tensor, metadata=metadata)])


class SummaryWriter(tensorboardX.SummaryWriter):
    """Writes TensorBoard event files for this process, fast and crash-safe.

    Args are those of ``tensorboardX.SummaryWriter`` / ``torch.utils.tensorboard.SummaryWriter``
    (``flush_secs`` defaults to 2 s instead of 120 s: that is what a crash can lose), plus:

    Args:
        rank: this process's global rank, overriding the launcher's environment (``RANK``,
            ``SLURM_PROCID``, Open MPI / PMI). Rank ``r`` of a distributed job writes into
            ``<logdir>/rank-<r:03d>``; a single process writes into ``<logdir>`` itself.
        rotate_bytes: continue in a new event file past this size (bounds the cost of uploads).

    Example:
        >>> from hf_mpwriter import SummaryWriter
        >>> with SummaryWriter("runs/exp1") as writer:  # doctest: +SKIP
        ...     for step in range(100):
        ...         writer.add_scalar("loss/train", 1 / (step + 1), step)
    """

    def __init__(
        self,
        logdir: Optional[Union[str, os.PathLike]] = None,
        comment: Optional[str] = "",
        purge_step: Optional[int] = None,
        max_queue: Optional[int] = 10,
        flush_secs: Optional[float] = DEFAULT_FLUSH_SECS,
        filename_suffix: Optional[str] = "",
        write_to_disk: Optional[bool] = True,
        log_dir: Optional[Union[str, os.PathLike]] = None,
        comet_config: Optional[dict] = None,
        *,
        rank: Optional[int] = None,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> None:
        if log_dir is not None and logdir is None:
            logdir = log_dir
        if not logdir:
            logdir = _default_logdir(comment or "")
        if purge_step is not None and (isinstance(purge_step, bool) or int(purge_step) < 0):
            raise ConfigurationError(f"purge_step must be a non-negative step number, got {purge_step!r}")
        if rotate_bytes < 4096:
            raise ConfigurationError(f"rotate_bytes must be at least 4096, got {rotate_bytes!r}")
        try:
            self.rank_info = ranks.detect(rank)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._root = check_logdir(logdir) if write_to_disk else Path(logdir)
        self._owner_pid = os.getpid()  # a forked child must not close what its parent owns
        self._rotate_bytes = rotate_bytes
        self._claim: Optional[state.Claim] = None
        self._purge_pending = purge_step is not None
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
        """The directory this process's events go to: ``logdir`` or ``logdir/rank-NNN``."""
        if self._claim is None:
            return self._root / (self.rank_info.run_name() or "")
        return self._claim.path

    def get_logdir(self) -> str:
        """Directory of this process's event files (its run directory)."""
        return str(self.run_dir)

    def _new_file_writer(self, directory: Union[str, os.PathLike]) -> FileWriter:
        return FileWriter(directory, self._max_queue or 10, self._flush_secs, self._filename_suffix or "", self._rotate_bytes)

    def _get_file_writer(self) -> Any:
        """The writer of this process's run directory (claimed on first use, again after close)."""
        if not self._write_to_disk:
            return super()._get_file_writer()
        if self.all_writers is None or self.file_writer is None:
            if self._claim is None:
                self._claim = state.claim_run_dir(self._root, self.rank_info.run_name())
            self.file_writer = self._new_file_writer(self._claim.path)
            if self._purge_pending:  # once per writer: repeated after a close it would hide our own events
                self._purge_pending = False
                self.file_writer.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(
                    Event(step=self.purge_step, session_log=SessionLog(status=SessionLog.START))
                )
            self.file_writer.event_writer.try_flush()  # a full disk must not stop construction
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
        return self.file_writer

    # -- the hot path ------------------------------------------------------------------------
    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: Optional[int] = None,
        walltime: Optional[float] = None,
        display_name: Optional[str] = "",
        summary_description: Optional[str] = "",
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
        ):
            return self._add_scalar_slow(
                tag, scalar_value, global_step, walltime, display_name, summary_description, new_style, double_precision
            )
        value = scalar_value if type(scalar_value) is float else _as_float(scalar_value)
        if global_step is not None:
            global_step = int(global_step)
            if global_step < 0:
                return self._add_scalar_slow(tag, value, global_step, walltime, "", "", False, False)
        writer.event_writer.add_serialized(
            scalar_event(tag, value, global_step, time.time() if walltime is None else walltime)
        )

    def _add_scalar_slow(
        self,
        tag: str,
        scalar_value: Any,
        global_step: Optional[int],
        walltime: Optional[float],
        display_name: Optional[str],
        summary_description: Optional[str],
        new_style: bool,
        double_precision: bool,
    ) -> None:
        if new_style or double_precision:
            summary = _tensor_scalar(tag, _as_float(scalar_value), new_style, double_precision)
            self._get_file_writer().add_summary(summary, global_step, walltime)
            return
        super().add_scalar(tag, scalar_value, global_step, walltime, display_name, summary_description)

    # -- methods whose tensorboardX versions create tensorboardX writers -----------------------
    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict,
        global_step: Optional[int] = None,
        walltime: Optional[float] = None,
    ) -> None:
        """Several scalars on one chart: each tag in ``<run>/<main_tag>/<tag>``, as tensorboardX does.

        Unlike tensorboardX, values are not also kept in memory (which grows without bound), so
        ``export_scalars_to_json`` is not available.
        """
        if not self._write_to_disk:
            return
        walltime = time.time() if walltime is None else walltime
        run = self._get_file_writer().get_logdir()
        for tag, value in tag_scalar_dict.items():
            key = os.path.join(run, main_tag, tag)
            writer = self.all_writers.get(key)
            if writer is None:
                writer = self.all_writers[key] = self._new_file_writer(key)
            writer.add_summary(scalar(main_tag, _as_float(value)), global_step, walltime)

    def export_scalars_to_json(self, path: str) -> None:
        raise NotImplementedError(
            "hf_mpwriter does not keep logged values in memory; read them back from the event files "
            "(e.g. tensorboard.backend.event_processing.event_accumulator.EventAccumulator)"
        )

    def add_hparams(
        self,
        hparam_dict: dict,
        metric_dict: dict,
        name: Optional[str] = None,
        global_step: Optional[int] = None,
        *,
        hparam_domain_discrete: Optional[dict] = None,
        run_name: Optional[str] = None,
    ) -> None:
        """Hyperparameters and their metrics, in a sub-run ``<run>/<name>`` (tensorboardX layout)."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionaries")
        if hparam_domain_discrete:
            logger.debug("hparam_domain_discrete is not supported by tensorboardX's hparams; ignored")
        if not self._write_to_disk:
            return
        exp, ssi, sei = hparams(hparam_dict, metric_dict)
        name = run_name or name or str(time.time())
        writer = self._new_file_writer(os.path.join(self._get_file_writer().get_logdir(), name))
        try:
            for summary in (exp, ssi, sei):
                writer.add_summary(summary)
            for key, value in metric_dict.items():
                writer.add_summary(scalar(key, _as_float(value)), global_step)
        finally:
            writer.close()

    # -- lifecycle ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Hand everything logged so far to the OS (no network, never blocks on upload)."""
        super().flush()

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
