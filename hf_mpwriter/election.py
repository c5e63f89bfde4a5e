"""How writers make sure an uploader runs: check, spawn, fail over, trigger.

Writers never upload. They check every couple of seconds (from a heartbeat thread, never the
training thread) whether the logdir's uploader is alive (``uploader.json`` + ``psutil``) and, if
not, start one. Many writers may notice at once; ``spawn.lock`` makes one of them spawn and the
uploader's own lock makes sure a single uploader ever runs.

Modes:

- ``"process"`` (default): a detached child process (its own session, so torchrun's SIGTERM/SIGKILL
  of the training processes does not reach it). Training processes do no hashing and no HTTP.
- ``"thread"``: a daemon thread of one writer process, for environments that forbid child
  processes. Same queue and guarantees while the process lives, but the thread hashes and does
  HTTP inside a training process, and dies with it (the next start or ``hf-mpwriter sync`` resumes).
- ``"none"``: nothing uploads; logs are written and ``hf-mpwriter sync`` sends them later.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from filelock import FileLock, Timeout

from .errors import ConfigurationError
from .state import is_alive, private_open, read_json, state_dir

logger = logging.getLogger(__name__)

MODES = ("process", "thread", "none")
#: After an uploader exits with an error right away, writers wait this long before the next try
#: (instead of respawning it every heartbeat).
SPAWN_PAUSE_S = 30.0
_threads: dict[str, threading.Thread] = {}
_spawn_pause_until: dict[str, float] = {}


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES`, else a :class:`~hf_mpwriter.ConfigurationError`."""
    if mode not in MODES:
        raise ConfigurationError(f"uploader must be one of {', '.join(MODES)}, got {mode!r}")
    return str(mode)


def uploader_info(logdir: Path) -> Optional[dict]:
    """Who claims to be the uploader (pid, host, start time, target), or ``None``."""
    return read_json(state_dir(logdir, create=False) / "uploader.json")


def uploader_alive(logdir: Path) -> bool:
    """Whether an uploader runs: its ``uploader.json`` names a live process, or its lock is held.

    The lock counts on its own because an uploader that could not write ``uploader.json`` (full
    disk) still runs and must not be replaced in a loop.
    """
    if is_alive(uploader_info(logdir), state_dir(logdir, create=False) / "uploader.json"):
        return True
    return lock_held(logdir)


def lock_held(logdir: Path) -> bool:
    """Whether some process (this one included) holds the logdir's ``uploader.lock`` right now."""
    path = state_dir(logdir, create=False) / "uploader.lock"
    if not path.exists():
        return False
    probe = FileLock(str(path), timeout=0, mode=0o600)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False


def trigger(logdir: Path) -> None:
    """Ask the uploader to commit now (used by ``close()`` and ``scheduler.trigger()``)."""
    try:
        os.close(private_open(state_dir(logdir) / "trigger"))
        os.utime(state_dir(logdir) / "trigger")
    except OSError as exc:
        logger.warning("could not trigger the uploader of %s: %s", logdir, exc)


def ensure_uploader(logdir: Path, mode: str, token: Optional[str] = None, wait: float = 10.0) -> bool:
    """Start an uploader for ``logdir`` unless one is alive. Returns whether one is (now) alive."""
    if mode == "none" or uploader_alive(logdir):
        return mode != "none"
    lock = FileLock(str(state_dir(logdir) / "spawn.lock"), timeout=0, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        return False  # another writer is spawning one right now
    try:
        if uploader_alive(logdir):
            return True
        if mode == "thread":
            return _start_thread(logdir, token)
        key = str(Path(logdir).resolve())
        if time.monotonic() < _spawn_pause_until.get(key, 0.0):
            return False
        proc = _spawn_process(logdir, token)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if uploader_alive(logdir):
                return True
            if proc.poll() is not None:
                if proc.returncode not in (0, 2):  # 2: another uploader won the election
                    _spawn_pause_until[key] = time.monotonic() + SPAWN_PAUSE_S
                    logger.error(
                        "the uploader of %s exited with code %s (see %s); not restarting it for %.0f s",
                        logdir, proc.returncode, state_dir(logdir) / "uploader.log", SPAWN_PAUSE_S,
                    )
                return uploader_alive(logdir)
            time.sleep(0.05)
        return False
    finally:
        lock.release()


def _spawn_process(logdir: Path, token: Optional[str]) -> subprocess.Popen:
    env = dict(os.environ)
    if token:
        env["HF_TOKEN"] = token  # environment, never the command line
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_PROCID"):
        env.pop(var, None)
    log = os.fdopen(private_open(state_dir(logdir) / "uploader.out"), "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hf_mpwriter.uploader", str(Path(logdir).resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    logger.debug("spawned uploader pid %d for %s", proc.pid, logdir)
    return proc


def _start_thread(logdir: Path, token: Optional[str]) -> bool:
    from .uploader import Uploader

    key = str(Path(logdir).resolve())
    thread = _threads.get(key)
    if thread is not None and thread.is_alive():
        return True

    def run() -> None:
        try:
            Uploader(logdir, token=token).run()
        except Exception:
            logger.exception("uploader thread for %s failed", logdir)

    thread = threading.Thread(target=run, name="hf_mpwriter-uploader", daemon=True)
    _threads[key] = thread
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and thread.is_alive() and not uploader_alive(logdir):
        time.sleep(0.02)
    return uploader_alive(logdir)
