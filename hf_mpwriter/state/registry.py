"""Who writes where: run-directory claims and writer registrations.

- ``claims/<run>.lock``: held (``filelock``) by the process writing run directory ``<run>`` (a path
  when the run lies in a block folder: ``claims/ranks-9000-17999/rank-12345.lock``). The OS
  drops the lock when the holder dies, so a restarted rank takes its run directory back, and two
  live processes can never share one.
- ``writers/<host>-<pid>-<n>.json``: one per live writer; the uploader keeps running while any of
  them is alive (pid + start time, see :mod:`hf_mpwriter.state.liveness`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout

from ..compat import OsFileLock, os_file_lock
from .liveness import host_file_name, is_alive, process_identity
from .run_dirs import in_block
from .statedir import read_json, state_dir, write_json_atomic

logger = logging.getLogger(__name__)


_registration_counter = itertools.count()

# Run directories claimed by this process (a second writer of the same process must not share).
_claimed_here: set[str] = set()
# Run directories this process ever wrote into: a later writer of the same process continues the same attempt.
_used_here: set[str] = set()
_fork_hook_installed = False  # with the first claim: importing changes nothing in the process


def _forget_claims_in_forked_children() -> None:
    """A forked child holds none of its parent's claims (the locks are the parent's)."""
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=forget_claims_after_fork)
        _fork_hook_installed = True

# -- run directory claims ----------------------------------------------------------------------
@dataclass
class Claim:
    """A run directory this process writes into, held until :meth:`release`."""

    name: str  # "." for the plain layout
    path: Path
    lock: OsFileLock
    #: An earlier process (an attempt that was killed, preempted, relaunched) wrote into it: it holds event
    #: files, and no writer of this process used it before.
    earlier_attempt: bool = False
    #: It holds no event files, and no writer of this process used it before: a new run, or one resumed on a disk
    #: that lacks its earlier attempts' files (their records are at the target, or lost with their disk).
    fresh: bool = False

    def release(self) -> None:
        _claimed_here.discard(str(self.path))
        self.lock.release(force=True)


def claim_run_dir(logdir: Path, preferred: str | None) -> Claim:
    """Claim ``preferred`` (or the plain layout ``logdir`` itself when ``None``).

    If another live process holds it (two processes without rank information, or a second
    writer in this process), fall back to the first free ``<preferred>.<n>`` (beside ``preferred``,
    in its folder) / ``proc-<n>`` (past ``proc-8999`` in block folders, as ranks:
    :mod:`~hf_mpwriter.state.run_dirs`): every process gets a run directory of its own, and
    restarted processes find the same names again in the same order.
    """
    claims = state_dir(logdir) / "claims"
    claims.mkdir(mode=0o700, exist_ok=True)
    base = preferred or "."
    for n in itertools.count():
        if n == 0:
            name = base
        else:
            name = f"{preferred}.{n}" if preferred else in_block(n, f"proc-{n:03d}", "procs")
        path = (logdir / name) if name != "." else logdir
        if str(path) in _claimed_here:
            continue
        _forget_claims_in_forked_children()
        lock_name = "plain" if name == "." else name
        lock_path = claims / f"{lock_name}.lock"
        lock_path.parent.mkdir(mode=0o700, exist_ok=True)  # a run in a block folder: its lock in one too
        lock = os_file_lock(lock_path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue
        if n and preferred:
            logger.warning("run directory %s is in use by another live process; writing to %s instead", base, name)
        path.mkdir(parents=True, exist_ok=True)
        first_use, written = str(path) not in _used_here, any("tfevents" in entry.name for entry in os.scandir(path))
        _claimed_here.add(str(path))
        _used_here.add(str(path))
        return Claim(name, path, lock, first_use and written, first_use and not written)
    raise AssertionError("unreachable")


def forget_claims_after_fork() -> None:
    _claimed_here.clear()

# -- writer registrations ----------------------------------------------------------------------
def register_writer(logdir: Path, run_dir: Path) -> Path:
    """Record that this process writes into ``logdir`` (the uploader waits for it)."""
    writers = state_dir(logdir) / "writers"
    writers.mkdir(mode=0o700, exist_ok=True)
    ident = process_identity()
    path = writers / f"{host_file_name()}-{ident['pid']}-{next(_registration_counter)}.json"
    write_json_atomic(path, {**ident, "run_dir": os.path.abspath(run_dir)})
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


def writer_ranks(writers: list[dict]) -> set[int]:
    """The ranks of these writers' run directories (``rank-<r>``; other layouts have none)."""
    ranks = set()
    for writer in writers:
        match = re.fullmatch(r"rank-(\d+)", Path(str(writer.get("run_dir", ""))).name)
        if match:
            ranks.add(int(match[1]))
    return ranks


def prune_stale_registrations(logdir: Path, stale_after: float) -> None:
    """Delete registrations of dead writers whose heartbeat is older than ``stale_after`` seconds.

    Only then: a live writer refreshes its file every second (HEARTBEAT_S), so a writer wrongly judged
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
