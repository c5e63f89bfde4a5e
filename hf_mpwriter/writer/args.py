"""The checks of a writer's constructor arguments, made before anything is created.

:class:`~hf_mpwriter.writer.summary_writer.SummaryWriter` and :class:`~hf_mpwriter.writer.hub_writer.HFSummaryWriter`
run :func:`check_writer_args` first and :func:`check_logdir` last, so that a rejected call leaves
no empty logdir behind and says what to fix: a URL logdir (it would silently become a local
directory named ``s3:``), a logdir this process cannot write to, a ``purge_step``,
``rotate_bytes``, ``max_queue``, ``flush_secs`` or ``filename_suffix`` that is not one, a rank
the launcher's environment does not give.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
import socket
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigurationError
from ..events.event_file import DEFAULT_FLUSH_SECS, DEFAULT_ROTATE_BYTES
from . import ranks


def default_logdir(comment: str) -> str:
    """Where the logs go when no logdir is given: ``runs/<launcher>-<job id><comment>`` in a launched job
    (torchrun, SLURM, PBS, LSF, Flux, MPI), the same in every process of it; else tensorboardX's and
    torch's ``runs/<Mon>DD_HH-MM-SS_<host><comment>``.

    Why not theirs in a job: each process stamps its own second and host, so the ranks of one job (and
    every node) would get logdirs of their own: several remote folders, several uploaders a node, and
    nodes that never meet the job's leader (its store keys follow the folder)."""
    job = ranks.job_id()
    if job is not None:
        return os.path.join("runs", f"{job}{comment or ''}")
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


def check_keywords(name: str, given: dict[str, Any], function: Callable[..., Any], extra: Iterable[str] = ()) -> None:
    """Refuse a keyword ``function`` does not take, naming ``name`` (the class the user called) and
    the closest valid argument, before anything is created.

    Why: passed through ``**kwargs``, a misspelt keyword (``flush_sec=5``) would otherwise fail deep
    inside the base class, naming a function the user never called, after the logdir and its
    settings were written.
    """
    valid = [p for p in inspect.signature(function).parameters if p not in ("self", "args", "kwargs")]
    valid += [p for p in extra if p not in valid]
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid arguments: {', '.join(sorted(valid))}"
            raise TypeError(f"{name}() got an unexpected keyword argument {key!r}{hint}")


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
