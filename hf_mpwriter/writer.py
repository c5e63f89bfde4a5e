"""``SummaryWriter``: a drop-in for tensorboardX's and ``torch.utils.tensorboard``'s writer.

Every ``add_*`` method is tensorboardX's own (its summary functions and protobufs); what changes
is underneath:

- events go to this library's :class:`~hf_mpwriter.event_file.EventFileWriter` (whole records, one
  ``write`` per batch, unique names, flush every 2 s by default, rotation);
- ``add_scalar`` has a fast path that encodes the event directly (byte-identical output);
- each process gets a run directory of its own: ``<logdir>`` for a single process (the plain layout
  of today's writers), ``<logdir>/rank-NNN`` for rank NNN of a distributed job;
- ``add_scalars`` and ``add_hparams`` keep tensorboardX's directory layout but use this writer, and
  ``add_scalars`` does not keep every value in memory (``export_scalars_to_json`` reads the files back);
- torch tensors of any dtype ``torch.utils.tensorboard`` accepts work (bfloat16 included), and
  histograms of torch tensors are computed where the tensor lives (:mod:`hf_mpwriter.histogram`);
- ``add_tensor`` and ``add_hparams`` accept ``torch.utils.tensorboard``'s signatures too;
- URL logdirs (``s3://``, ``gs://``...) are refused: this writer writes a local directory.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import tensorboardX
from tensorboardX import writer as tbx_writer
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboardX.proto.tensor_pb2 import TensorProto
from tensorboardX.summary import hparams, scalar

from . import histogram as _histogram
from . import ranks, registry, termination
from .encoding import scalar_event
from .errors import ConfigurationError
from .event_file import DEFAULT_FLUSH_SECS, DEFAULT_ROTATE_BYTES, EventFileWriter
from .records import iter_records

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
    ) -> None:  # no super().__init__: it would open a tensorboardX event file
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.event_writer = EventFileWriter(logdir, max_queue, flush_secs, filename_suffix, rotate_bytes)
        termination.watch(self.event_writer)  # on SIGTERM, its records reach the OS before the process ends
        self._default_metadata: dict = {}


def _default_logdir(comment: str) -> str:
    stamp = datetime.now().strftime("%b%d_%H-%M-%S")
    return os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment or ''}")


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def refuse_url_logdir(logdir: str | os.PathLike) -> None:
    """Refuse ``s3://``, ``gs://`` and any other ``scheme://`` logdir before anything is created.

    ``Path("s3://bucket/run")`` is the relative path ``s3:/bucket/run``: without this check the
    events would silently land in a local directory named ``s3:``.
    """
    match = _URL.match(os.fspath(logdir)) if isinstance(logdir, (str, os.PathLike)) else None
    if match is None:
        return
    raise ConfigurationError(
        f"logdir {os.fspath(logdir)!r} is a URL ({match.group(1)}://): hf_mpwriter writes event files to a local "
        "directory and its uploader sends that directory to the Hub. Pass a local path (e.g. 'runs/exp1'), or use "
        "tensorboardX.SummaryWriter directly to write to S3 or GCS"
    )


def check_logdir(logdir: str | os.PathLike) -> Path:
    """Create ``logdir`` if needed and make sure this process can write there, or say what to fix.

    Nothing is created for a logdir that is refused (a URL, a file, an unwritable place): directories
    made here are removed again if the result is not writable.
    """
    refuse_url_logdir(logdir)
    path = Path(logdir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"logdir {str(path)!r} exists and is not a directory: pass a directory path")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create logdir {str(path)!r}: {exc.strerror or exc}; choose a directory you can write to"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        for made in created:  # innermost first
            try:
                made.rmdir()
            except OSError:
                break
        raise ConfigurationError(f"logdir {str(path)!r} is not writable by this user; choose another directory")
    return path


def check_writer_args(
    logdir: str | os.PathLike | None = None,
    *,
    purge_step: int | None = None,
    max_queue: int | None = 10,
    flush_secs: float | None = DEFAULT_FLUSH_SECS,
    filename_suffix: str | None = "",
    rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    rank: int | None = None,
) -> ranks.RankInfo:
    """Every check of :class:`SummaryWriter`'s arguments that needs no file system change.

    Run before :func:`check_logdir`, so that a rejected call leaves no empty logdir behind. Returns
    the detected rank information.
    """
    if logdir is not None:
        refuse_url_logdir(logdir)
    if purge_step is not None and (isinstance(purge_step, bool) or not _is_int(purge_step) or int(purge_step) < 0):
        raise ConfigurationError(f"purge_step must be a non-negative step number, got {purge_step!r}")
    if not _is_int(rotate_bytes) or rotate_bytes < 4096:
        raise ConfigurationError(f"rotate_bytes must be at least 4096, got {rotate_bytes!r}")
    if max_queue is not None and (isinstance(max_queue, bool) or not _is_int(max_queue)):
        raise ConfigurationError(f"max_queue must be a number of events, got {max_queue!r}")
    if flush_secs is not None and (isinstance(flush_secs, bool) or not _is_number(flush_secs)):
        raise ConfigurationError(f"flush_secs must be a finite number of seconds, got {flush_secs!r}")
    if filename_suffix and (not isinstance(filename_suffix, str) or os.sep in filename_suffix or "/" in filename_suffix):
        raise ConfigurationError(f"filename_suffix must be a file name suffix without '/', got {filename_suffix!r}")
    try:
        return ranks.detect(rank)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _is_int(value: Any) -> bool:
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


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


def _describe(value: Any) -> str:
    """``type 'repr'`` of a rejected argument, short."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (str, bytes)):
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return f"{type(value).__name__} {text}"


def _scalar_error(method: str, tag: str, value: Any) -> Exception:
    """What ``add_scalar`` says for a value that is not a number (only built when it fails)."""
    kind = ValueError if getattr(value, "shape", None) is not None else TypeError
    return kind(f"{method}({tag!r}): scalar_value must be a number or a one-element tensor/array, got {_describe(value)}")


def _checked_float(method: str, tag: str, value: Any) -> float:
    try:
        return _as_float(value)
    except (TypeError, ValueError, RuntimeError):
        raise _scalar_error(method, tag, value) from None


def _checked_step(method: str, tag: str, step: Any) -> int | None:
    if step is None:
        return None
    try:
        return int(step)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise TypeError(f"{method}({tag!r}): global_step must be an integer, got {_describe(step)}") from None


def _on_host(value: Any) -> Any:
    """A torch tensor in a dtype numpy (and so tensorboardX) can convert, detached; others as they are.

    tensorboardX's conversion is ``x.cpu().numpy()``: bfloat16 (and the float8 types) have no
    numpy dtype and raise ``TypeError``. They are widened to float32 on the tensor's device first
    (exact, unlike ``torch.utils.tensorboard``'s float16, which overflows past 65504).
    """
    if torch is None or not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    if value.dtype == torch.bfloat16 or (value.is_floating_point() and value.element_size() == 1):
        return value.to(torch.float32)
    if value.dtype == torch.complex32:
        return value.to(torch.complex64)
    return value


def _tensor_args(*names: str) -> Callable[[Callable], Callable]:
    """Wrap a tensorboardX method so that its tensor arguments ``names`` go through :func:`_on_host`."""

    def wrap(method: Callable) -> Callable:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            for name in names:
                if name in bound.arguments:
                    bound.arguments[name] = _on_host(bound.arguments[name])
            return method(*bound.args, **bound.kwargs)

        return wrapper

    return wrap


def _hparams_call(args: tuple, kwargs: dict) -> tuple[dict | None, str | None, int | None]:
    """``(hparam_domain_discrete, run name, global_step)`` from either library's ``add_hparams`` call.

    tensorboardX: ``(hparam_dict, metric_dict, name=None, global_step=None)``; torch:
    ``(hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None, global_step=None)``.
    A dict in third place is torch's domain, a str tensorboardX's name.
    """
    if len(args) > 3:
        raise TypeError(f"add_hparams() takes at most 5 positional arguments ({len(args) + 2} given)")
    third = args[0] if args else None
    torch_order = isinstance(third, dict) or len(args) == 3 or (len(args) == 2 and isinstance(args[1], str))
    if third is not None and not isinstance(third, (dict, str)):
        raise TypeError(f"add_hparams(): third argument must be a dict (hparam_domain_discrete) or a str (name), "
                        f"got {_describe(third)}")
    names = ("hparam_domain_discrete", "run_name", "global_step") if torch_order else ("name", "global_step")
    given = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in given and value is not None:
            raise TypeError(f"add_hparams() got multiple values for argument {key!r}")
        if value is not None or key not in given:
            given[key] = value
    domain, run_name, name = given.get("hparam_domain_discrete"), given.get("run_name"), given.get("name")
    if run_name and name and run_name != name:
        raise TypeError(f"add_hparams(): name={name!r} and run_name={run_name!r} disagree; pass one of them")
    return domain, run_name or name, given.get("global_step")


def _domain_discrete(exp: Summary, hparam_dict: dict, domain: dict | None) -> Summary:
    """tensorboardX's experiment summary with torch's ``hparam_domain_discrete`` (same checks as torch)."""
    if not domain:
        return exp
    if not isinstance(domain, dict):
        raise TypeError("parameter: hparam_domain_discrete should be a dictionary, nothing logged.")
    for key, values in domain.items():
        if key not in hparam_dict or not isinstance(values, list) or not all(
            isinstance(v, type(hparam_dict[key])) for v in values
        ):
            raise TypeError(
                f"parameter: hparam_domain_discrete[{key}] should be a list of same type as hparam_dict[{key}]."
            )
    from google.protobuf import struct_pb2
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    metadata = exp.value[0].metadata
    data = HParamsPluginData.FromString(metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        if info.name not in domain:
            continue
        values = []
        for v in domain[info.name]:
            if isinstance(v, bool):
                values.append(struct_pb2.Value(bool_value=v))
            elif isinstance(v, str):
                values.append(struct_pb2.Value(string_value=v))
            else:
                values.append(struct_pb2.Value(number_value=v))
        info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=values))
    metadata.plugin_data.content = data.SerializeToString()
    return exp


def _scalars_json(files_by_key: dict, marks: dict) -> dict:
    """``{key: [[wall_time, step, value], ...]}`` of the scalars in each key's event files past ``marks``.

    ``marks`` (``{file: offset}``) is updated to where this read ended: tensorboardX forgets what it
    exported, so the next export has only what was logged after it.
    """
    out: dict = {}
    for key, files in files_by_key.items():
        points = out.setdefault(key, [])
        for path in files:
            start = marks.get(path, 0)
            try:
                with open(path, "rb") as stream:
                    for end, data in iter_records(stream, start):
                        points.extend(_scalar_points(data))
                        marks[path] = end
            except FileNotFoundError:  # removed by the user: nothing to read
                continue
        if not points:
            del out[key]
    return out


def _scalar_points(data: bytes) -> list:
    event = Event.FromString(data)
    if not event.HasField("summary"):
        return []
    return [[event.wall_time, event.step, v.simple_value]
            for v in event.summary.value if v.WhichOneof("value") == "simple_value"]


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
    ) -> None:
        if log_dir is not None and logdir is None:
            logdir = log_dir
        if not logdir:
            logdir = _default_logdir(comment or "")
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
        """The directory this process's events go to: ``logdir`` or ``logdir/rank-NNN``."""
        if self._claim is None:
            return self._root / (self.rank_info.run_name() or "")
        return self._claim.path

    def get_logdir(self) -> str:
        """Directory of this process's event files (its run directory)."""
        return str(self.run_dir)

    def _new_file_writer(self, directory: str | os.PathLike) -> FileWriter:
        return FileWriter(directory, self._max_queue or 10, self._flush_secs, self._filename_suffix or "", self._rotate_bytes)

    def _get_file_writer(self) -> Any:
        """The writer of this process's run directory (claimed on first use, again after close)."""
        if not self._write_to_disk:
            return super()._get_file_writer()
        if self.all_writers is None or self.file_writer is None:  # type: ignore[has-type]
            if self._claim is None:
                self._claim = registry.claim_run_dir(self._root, self.rank_info.run_name())
            self.file_writer = self._new_file_writer(self._claim.path)
            if self._purge_pending:  # once per writer: repeated after a close it would hide our own events
                self._purge_pending = False
                self.file_writer.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(
                    Event(step=self.purge_step, session_log=SessionLog(status=SessionLog.START))
                )
            self.file_writer.event_writer.flush()  # never raises: a full disk must not stop construction
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
        return self.file_writer

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
        ):
            return self._add_scalar_slow(
                tag, scalar_value, global_step, walltime, display_name, summary_description, new_style, double_precision
            )
        try:  # checks cost only on failure: the hot path stays as it was
            value = scalar_value if type(scalar_value) is float else _as_float(scalar_value)
            if global_step is not None:
                global_step = int(global_step)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            value = _checked_float("add_scalar", tag, scalar_value)
            global_step = _checked_step("add_scalar", tag, global_step)
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
        value = _checked_float("add_scalar", tag, scalar_value)
        global_step = _checked_step("add_scalar", tag, global_step)
        if new_style or double_precision:
            summary = _tensor_scalar(tag, value, new_style, double_precision)
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
        values = {tag: _checked_float("add_scalars", f"{main_tag}/{tag}", v) for tag, v in tag_scalar_dict.items()}
        walltime = time.time() if walltime is None else walltime
        run = self._get_file_writer().get_logdir()
        for tag, value in values.items():
            key = os.path.join(run, main_tag, tag)
            writer = self.all_writers.get(key)
            if writer is None:
                writer = self.all_writers[key] = self._new_file_writer(key)
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
        data = _scalars_json(files, self._exported_up_to)
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
        domain, name, global_step = _hparams_call(
            args, {"name": name, "global_step": global_step, "hparam_domain_discrete": hparam_domain_discrete,
                   "run_name": run_name},
        )
        exp, ssi, sei = hparams(hparam_dict, metric_dict)
        exp = _domain_discrete(exp, hparam_dict, domain)
        values = {k: _checked_float("add_hparams", k, v) for k, v in metric_dict.items()}
        if not self._write_to_disk:
            return
        step = _checked_step("add_hparams", "global_step", global_step)
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
        """tensorboardX's ``add_histogram``, same bytes; a torch tensor is binned on its own device.

        Only the bucket counts, min, max, sum and sum of squares are copied to the host (see
        :mod:`hf_mpwriter.histogram`); other inputs and ``bins`` strings other than
        ``'tensorflow'`` take tensorboardX's path.
        """
        summary = _histogram.histogram_summary(tag, values, bins, max_bins)
        if summary is None or self._comet_enabled:
            super().add_histogram(tag, _on_host(values), global_step, bins, walltime, max_bins)
            return
        self._get_file_writer().add_summary(summary, global_step, walltime)

    add_image = _tensor_args("img_tensor")(tensorboardX.SummaryWriter.add_image)
    add_images = _tensor_args("img_tensor")(tensorboardX.SummaryWriter.add_images)
    add_image_with_boxes = _tensor_args("img_tensor", "box_tensor")(tensorboardX.SummaryWriter.add_image_with_boxes)
    add_video = _tensor_args("vid_tensor")(tensorboardX.SummaryWriter.add_video)
    add_audio = _tensor_args("snd_tensor")(tensorboardX.SummaryWriter.add_audio)
    add_embedding = _tensor_args("mat", "label_img")(tensorboardX.SummaryWriter.add_embedding)
    add_pr_curve = _tensor_args("labels", "predictions", "weights")(tensorboardX.SummaryWriter.add_pr_curve)
    add_mesh = _tensor_args("vertices", "colors", "faces")(tensorboardX.SummaryWriter.add_mesh)

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
