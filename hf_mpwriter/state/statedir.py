"""The ``<logdir>/.hf_mpwriter/`` directory: its layout, private files, atomic JSON.

Everything the processes of one logdir must agree on lives here, as small files that survive any
crash::

    claims/<run>.lock     held by the process writing run directory <run>      (registry.py)
    writers/<host>-<pid>-<n>.json   one per live writer                         (registry.py)
    config.json           the upload target and settings, never a token         (config.py)
    uploader.lock / uploader.json   the elected uploader and its heartbeat      (election.py)
    uploader.last.json    what the last uploader published, as it exited        (election.py)
    job_view.json, job_view_state.json   the job run: status, and where it takes up (jobrun/view.py)
    spawn.lock, spawned-<host>.json  who starts an uploader, the one on its way (supervisor.py, election.py)
    trigger, handover     requests to the uploader                              (mailbox.py)
    target.json           the target as the uploader resolved it (full repo id) (commit_cycle.py)
    queue.db              the persistent job queue                              (jobqueue.py)
    staging/              immutable copies of open files, for the queue         (snapshot.py)
    uploader.log, uploader.out      the uploader's log, and what escaped it     (uploader.py, supervisor.py)

Beside them: rotated logs (``uploader.log.1``...), SQLite's ``queue.db-wal`` / ``-shm`` (or ``-journal``), and the
temporary names of atomic writes. The directory is private to the user (0700, files 0600): it
holds staged copies of the logs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


STATE_DIRNAME = ".hf_mpwriter"

#: Subdirectories of the state directory (kept private like it).
_PRIVATE_SUBDIRS = ("claims", "writers", "staging")


def state_dir(logdir: str | os.PathLike, create: bool = True) -> Path:
    """``<logdir>/.hf_mpwriter``, created private (0700) on first use."""
    path = Path(logdir) / STATE_DIRNAME
    if create and not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(path)
    return path


def make_private(path: Path) -> None:
    """Mode 0700 for a directory, 0600 for a file, whatever it was (owner's files only).

    The state directory holds staged copies of the logs and the queue: a directory that already
    existed with mode 0777 (created by hand, or by a tool with a permissive umask) must not stay so.
    Best effort: a file owned by someone else is left alone (chmod would fail anyway).
    """
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    if stat.S_IMODE(st.st_mode) != wanted:
        try:
            os.chmod(path, wanted)
        except OSError as exc:
            logger.warning("could not make %s private (mode %o): %s", path, wanted, exc)


def secure_state_dir(logdir: str | os.PathLike) -> Path:
    """Create the state directory if needed and make it and everything in it private."""
    root = state_dir(logdir)
    make_private(root)
    for entry in _scandir(root):
        make_private(Path(entry.path))
        if entry.name in _PRIVATE_SUBDIRS:
            for sub in _scandir(Path(entry.path)):
                make_private(Path(sub.path))
    return root


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        return []


def private_open(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """``os.open`` with mode 0600 (and 0600 enforced if the file already existed)."""
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        pass
    return fd


def is_disk_full(exc: BaseException) -> bool:
    """An ``OSError`` that means "no space": waiting for space fixes it, nothing else to change."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old or the new content, never a torn file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or ``None`` if it is missing or unreadable."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
