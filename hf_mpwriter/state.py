"""The ``<logdir>/.hf_mpwriter/`` directory: who writes where, who uploads, and what to upload to.

Everything processes of one logdir must agree on lives here, as small files that survive any crash:

- ``claims/<run>.lock``: held (``filelock``) by the process writing run directory ``<run>``. The OS
  drops the lock when the holder dies, so a restarted rank takes its run directory back, and two
  live processes can never share one.
- ``writers/<host>-<pid>-<n>.json``: one per live writer; the uploader keeps running while any of
  them is alive (checked with ``psutil``, pid + start time, so a reused pid is not mistaken for it).
- ``config.json``: the upload target and settings (never a token).
- ``uploader.lock`` / ``uploader.json``: the elected uploader and its pid.
- ``queue.db``: the persistent job queue (see :mod:`hf_mpwriter.jobqueue`).

The directory is private to the user (0700): it holds staged copies of the logs.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

STATE_DIRNAME = ".hf_mpwriter"
HOST = socket.gethostname()
_registration_counter = itertools.count()
# Run directories claimed by this process (a second writer of the same process must not share).
_claimed_here: set[str] = set()


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


# -- process identity ------------------------------------------------------------------------
def process_identity(pid: int | None = None) -> dict:
    """pid + start time + host: enough to tell a live process from a reused pid."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "create_time": psutil.Process(pid).create_time(), "host": HOST}


#: A process of another host (shared logdir) counts as alive while its file is fresher than this:
#: we cannot ask that host's kernel, so writers and uploaders refresh their file's mtime.
OTHER_HOST_STALE_S = 10.0


def touch(path: Path | None) -> None:
    """Refresh ``path``'s mtime (a heartbeat other hosts can see); missing files are ignored."""
    if path is not None:
        try:
            os.utime(path)
        except OSError:
            pass


def is_alive(identity: dict | None, path: Path | None = None) -> bool:
    """Whether the process ``identity`` (read from ``path``) still runs.

    On this host: psutil, pid + start time. On another host: its heartbeat file is fresh.
    """
    if not identity:
        return False
    if identity.get("host", HOST) != HOST:
        try:
            return path is not None and time.time() - path.stat().st_mtime < OTHER_HOST_STALE_S
        except OSError:
            return False
    try:
        proc = psutil.Process(int(identity["pid"]))
        if abs(proc.create_time() - float(identity["create_time"])) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


# -- run directory claims ----------------------------------------------------------------------
@dataclass
class Claim:
    """A run directory this process writes into, held until :meth:`release`."""

    name: str  # "." for the plain layout
    path: Path
    lock: FileLock

    def release(self) -> None:
        _claimed_here.discard(str(self.path))
        self.lock.release(force=True)


def claim_run_dir(logdir: Path, preferred: str | None) -> Claim:
    """Claim ``preferred`` (or the plain layout ``logdir`` itself when ``None``).

    If another live process holds it (two processes without rank information, or a second
    writer in this process), fall back to the first free ``<preferred>.<n>`` / ``proc-<n>``: every
    process gets a run directory of its own, and restarted processes find the same names again in
    the same order.
    """
    claims = state_dir(logdir) / "claims"
    claims.mkdir(mode=0o700, exist_ok=True)
    base = preferred or "."
    for n in itertools.count():
        if n == 0:
            name = base
        else:
            name = f"{preferred}.{n}" if preferred else f"proc-{n:03d}"
        path = (logdir / name) if name != "." else logdir
        if str(path) in _claimed_here:
            continue
        lock_name = "plain" if name == "." else name
        lock = FileLock(str(claims / f"{lock_name}.lock"), timeout=0, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            continue
        if n and preferred:
            logger.warning("run directory %s is in use by another live process; writing to %s instead", base, name)
        path.mkdir(parents=True, exist_ok=True)
        _claimed_here.add(str(path))
        return Claim(name, path, lock)
    raise AssertionError("unreachable")


def forget_claims_after_fork() -> None:
    _claimed_here.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_claims_after_fork)


# -- writer registrations ----------------------------------------------------------------------
def register_writer(logdir: Path, run_dir: Path) -> Path:
    """Record that this process writes into ``logdir`` (the uploader waits for it)."""
    writers = state_dir(logdir) / "writers"
    writers.mkdir(mode=0o700, exist_ok=True)
    ident = process_identity()
    path = writers / f"{HOST}-{ident['pid']}-{next(_registration_counter)}.json"
    write_json_atomic(path, {**ident, "run_dir": str(run_dir)})
    return path


def live_writers(logdir: Path) -> list[dict]:
    """Registrations of writers whose process still runs (read only: see :func:`prune_stale_registrations`)."""
    writers = state_dir(logdir, create=False) / "writers"
    live = []
    try:
        entries = list(writers.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.suffix != ".json":
            continue
        data = read_json(entry)
        if data is not None and is_alive(data, entry):
            live.append(data)
    return live


def prune_stale_registrations(logdir: Path, stale_after: float) -> None:
    """Delete registrations of dead writers whose heartbeat is older than ``stale_after`` seconds.

    Only then: a live writer refreshes its file every couple of seconds, so a writer wrongly judged
    dead (another PID namespace, a clock step, no permission to inspect it) keeps its registration.
    """
    writers = state_dir(logdir, create=False) / "writers"
    now = time.time()
    try:
        entries = list(writers.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > stale_after and not is_alive(read_json(entry), entry):
                entry.unlink()
        except OSError:
            pass
