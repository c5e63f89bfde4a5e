"""Is that process alive, and is it making progress? Identity and heartbeats.

A pid alone can be reused: a process is named by pid + start time + host. On this host ``psutil``
answers; a process of another host (a logdir shared between nodes) counts as alive while it
refreshes its heartbeat file. Progress is a different question from existence: a stopped or
blocked uploader exists but does nothing, so its loop beats a file and observers judge the beat on
their own monotonic clock (:class:`Heartbeat`), which neither a clock step nor SIGSTOP fools.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import psutil

from ..timing import OTHER_HOST_STALE_S

HOST = socket.gethostname()
_NOT_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._-]")


def host_file_name(host: str | None = None) -> str:
    """``host`` (default: this host) as a part of a file name: the one rule for every file named
    after a host (event files, writer registrations, uploader candidates, system-metrics runs).

    Ordinary host names (letters, digits, ``.``, ``-``, ``_``) are kept as they are, so these names
    do not change; any other character (``/`` above all) becomes ``_``, leading and trailing dots go
    (no hidden file, no ``..``), and an empty result is ``localhost``.
    """
    return _NOT_IN_FILE_NAMES.sub("_", HOST if host is None else host).strip(".") or "localhost"


# -- process identity ------------------------------------------------------------------------
def process_identity(pid: int | None = None) -> dict:
    """pid + start time + host: enough to tell a live process from a reused pid."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "create_time": psutil.Process(pid).create_time(), "host": HOST}



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


class Heartbeat:
    """Whether a heartbeat file stopped moving, judged on this process's monotonic clock."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._seen: dict[str, tuple[int, float]] = {}  # file -> (mtime seen, when first seen: monotonic)

    def stalled(self, path: Path) -> bool:
        """``path``'s mtime has not moved for :attr:`stale_after` seconds of this process's time."""
        try:
            beat = path.stat().st_mtime_ns
        except OSError:
            return False
        now = time.monotonic()
        seen = self._seen.get(str(path))
        if seen is None or seen[0] != beat:
            self._seen[str(path)] = (beat, now)
            return False
        return now - seen[1] > self.stale_after
