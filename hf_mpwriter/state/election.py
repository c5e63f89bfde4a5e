"""The election: which process is the logdir's uploader, and is it working.

The uploader is whoever holds ``.hf_mpwriter/uploader.lock`` (an OS ``flock``, never a soft lock
file: one left by a SIGKILLed holder would block every successor); the OS drops it when the holder
dies. The holder writes ``uploader.json`` (who it is) and beats it (its mtime) from its loop.
Liveness comes from what cannot lie: the lock, and the heartbeat judged on the observer's own clock.
Starting, replacing and handing over an uploader is :mod:`hf_mpwriter.writer.supervisor`'s job; the one it
started and that is not elected yet is a *candidate* (``spawned-<host>.json``), cleared when elected.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Literal

import psutil
from filelock import Timeout

from ..compat import LockUnsupported, os_file_lock
from ..timing import HUNG_AFTER_S
from .liveness import HOST, Heartbeat, host_file_name, is_alive, process_identity
from .statedir import read_json, state_dir, write_json_atomic

logger = logging.getLogger(__name__)



UploaderState = Literal["alive", "hung", "none"]
#: Who the last uploader was, when it stopped on an error that needs the user (:func:`note_stopped_for_user`).
STOPPED_FILE = "uploader.stopped.json"
#: What the last uploader published (``uploader.json``) as it exited, with ``exited`` (its wall time).
LAST_FILE = "uploader.last.json"


_heartbeat = Heartbeat(HUNG_AFTER_S)


class AlreadyRunning(Exception):
    """Another live uploader holds the lock of this logdir."""


class UploaderLock:
    """The lock that makes one process the logdir's uploader."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self._lock = os_file_lock(state_dir(logdir, create=False) / "uploader.lock", timeout=0)

    def acquire(self, wait: float) -> None:
        """Become the uploader within ``wait`` seconds, or raise :class:`AlreadyRunning`
        (:class:`~hf_mpwriter.compat.LockUnsupported` where the file system has no ``flock``)."""
        try:
            self._lock.acquire(timeout=wait)
        except Timeout:
            raise AlreadyRunning(f"another uploader is running for {self.logdir}") from None
        clear_candidate(self.logdir)  # elected: no longer "on its way" (see supervisor.ensure_uploader)

    def release(self) -> None:
        self._lock.release(force=True)


# -- candidates: an uploader on its way --------------------------------------------------------
def _candidate_path(logdir: Path) -> Path:
    return state_dir(logdir, create=False) / f"spawned-{host_file_name()}.json"


def note_candidate(logdir: Path, pid: int) -> None:
    """Record the uploader process this host just started (pid + start time), not elected yet."""
    try:
        write_json_atomic(_candidate_path(logdir), process_identity(pid))
    except (OSError, psutil.Error):
        pass  # then a slow start may see a second one started, which the election turns away


def candidate_starting(logdir: Path, for_s: float) -> bool:
    """Whether the candidate this host started still runs, is younger than ``for_s`` and has not
    been elected yet (an elected one clears its record: :func:`clear_candidate`)."""
    candidate = read_json(_candidate_path(logdir))
    return is_alive(candidate) and time.time() - float(candidate["create_time"]) < for_s  # type: ignore[index]


def clear_candidate(logdir: Path) -> None:
    """The elected uploader: if the record names this process, it is not "on its way" any more."""
    path = _candidate_path(logdir)
    candidate = read_json(path)
    if candidate and candidate.get("pid") == os.getpid() and candidate.get("host") == HOST:
        try:
            path.unlink()
        except OSError:
            pass


def lock_held(logdir: Path) -> bool:
    """Whether some process (this one included) holds the logdir's ``uploader.lock`` right now."""
    path = state_dir(logdir, create=False) / "uploader.lock"
    if not path.exists():
        return False
    probe = os_file_lock(path, timeout=0, mode=0o600)
    try:
        probe.acquire()
    except Timeout:
        return True
    except (LockUnsupported, OSError):  # no lock can be held there (the uploader itself refuses to start)
        return False
    probe.release()
    return False


def uploader_info(logdir: Path) -> dict | None:
    """Who claims to be the uploader (pid, host, start time, target), or ``None``."""
    return read_json(state_dir(logdir, create=False) / "uploader.json")


def note_stopped_for_user(logdir: Path, identity: dict) -> None:
    """An uploader stops on an error only the user can fix (its writers are gone): keep who it was, so
    that a writer still closing says that error (and its token's) rather than waiting for nothing."""
    try:
        write_json_atomic(state_dir(logdir, create=False) / STOPPED_FILE, identity)
    except OSError as exc:
        logger.warning("cannot write %s (%s)", STOPPED_FILE, exc)


def stopped_uploader_info(logdir: Path) -> dict | None:
    """The identity :func:`note_stopped_for_user` kept, or ``None`` (the error record's pid says
    whether it is still the current error: a new uploader clears that record when it starts)."""
    return read_json(state_dir(logdir, create=False) / STOPPED_FILE)


def last_uploader_info(logdir: Path) -> dict | None:
    """What the logdir's last uploader published as it exited (:data:`LAST_FILE`), or ``None``."""
    return read_json(state_dir(logdir, create=False) / LAST_FILE)


def uploader_alive(logdir: Path) -> bool:
    """Whether an uploader runs and makes progress (see :func:`uploader_state`)."""
    return uploader_state(logdir) == "alive"


def uploader_state(logdir: Path) -> UploaderState:
    """``"alive"``, ``"hung"`` (it exists but its loop made no progress) or ``"none"``.

    Liveness comes from what cannot lie: the election lock (an uploader that could not write
    ``uploader.json``, e.g. on a full disk, still runs and must not be replaced in a loop), and the
    progress heartbeat its loop writes (the mtime of ``uploader.json``), judged on this process's own
    monotonic clock, so that neither a clock step nor a stopped process fools it. A process that merely
    exists (stopped with SIGSTOP, blocked forever) is not alive.
    """
    path = state_dir(logdir, create=False) / "uploader.json"
    info = read_json(path)
    if is_alive(info, path):
        return "hung" if _heartbeat.stalled(path) else "alive"
    return "alive" if lock_held(logdir) else "none"
