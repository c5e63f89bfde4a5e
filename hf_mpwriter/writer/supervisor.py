"""How writers make sure an uploader runs: check, spawn, replace, hand over.

Writers never upload. They check every second (from a heartbeat thread, never the
training thread) whether the logdir's uploader is alive (:mod:`hf_mpwriter.state.election`) and, if not,
start one. Many writers may notice at once; ``spawn.lock`` makes one of them spawn and the
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
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil
from filelock import Timeout

from ..compat import keep_signals_for_the_main_thread, os_file_lock
from ..errors import ConfigurationError
from ..redaction import token_id
from ..state.election import (
    HUNG_AFTER_S,
    candidate_starting,
    note_candidate,
    stopped_uploader_info,
    uploader_alive,
    uploader_info,
    uploader_state,
)
from ..state.liveness import HOST, is_alive
from ..state.mailbox import handover_requester, request_handover
from ..state.spawn import start_uploader_process
from ..state.statedir import state_dir
from ..timing import HANDOVER_TO_TOKEN_S, SPAWN_PAUSE_S, STARTING_FOR_S, THREAD_START_WAIT_S

logger = logging.getLogger(__name__)


MODES = ("process", "thread", "none")




_threads: dict[str, threading.Thread] = {}


_thread_uploaders: dict[str, Any] = {}  # logdir -> the Uploader running in a thread of this process


_spawn_pause_until: dict[str, float] = {}


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES`, else a :class:`~hf_mpwriter.ConfigurationError`."""
    if mode not in MODES:
        raise ConfigurationError(f"uploader must be one of {', '.join(MODES)}, got {mode!r}")
    return str(mode)


def stop_hung_uploader(logdir: Path) -> bool:
    """SIGKILL the logdir's uploader process if it is hung; ``True`` once it is gone.

    Only a dedicated uploader process of this host is stopped (never a training process hosting an
    uploader thread, never a process of another host: there the heartbeat going stale and the lock
    decide). Its queue survives a SIGKILL by design; the replacement resumes it, and fencing
    (``parent_commit``, the queue's generation) keeps a late commit of the old one harmless.
    """
    info = uploader_info(logdir) or {}
    if info.get("host") != HOST or info.get("thread") != "MainThread":
        return False
    try:
        pid = int(info["pid"])
        if pid == os.getpid() or not is_alive(info):  # (a pid reused since: not ours to stop)
            return False
        proc = psutil.Process(pid)
        if "hf_mpwriter" not in " ".join(proc.cmdline()) and "hf-mpwriter" not in " ".join(proc.cmdline()):
            return False
        logger.warning(
            "the uploader of %s (pid %d) made no progress for over %.0f s (stopped or blocked); replacing it",
            logdir, pid, HUNG_AFTER_S,
        )
        proc.kill()
        proc.wait(5)
    except (psutil.Error, KeyError, ValueError, TypeError, subprocess.TimeoutExpired):
        return False
    return True


def ensure_uploader(
    logdir: Path, mode: str, token: str | None = None, wait: float = 10.0, needed: Callable[[], bool] | None = None,
) -> bool:
    """Start an uploader for ``logdir`` unless one is alive and working. Returns whether one is (now) alive.

    A hung uploader is stopped and replaced. One that waits for the user (bad token) while this
    writer has another token is asked to hand over, so that the fix takes effect.

    ``needed`` (for a closing writer): asked once no uploader is alive, whether there is still work
    for one. An uploader exits right after its last commit, so a writer that read the queue just
    before that commit would otherwise start a new uploader with nothing to do.
    """
    if mode == "none":
        return False
    current = uploader_state(logdir)
    if current == "alive":
        _hand_over_for_new_token(logdir, token)
        return True
    if current == "hung" and not stop_hung_uploader(logdir):
        return False
    lock = os_file_lock(state_dir(logdir) / "spawn.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False  # another writer is spawning one right now
    try:
        if uploader_alive(logdir):
            return True
        if needed is not None and not needed():
            return False
        if _handover_to_another_token(logdir, token):
            return False  # the writer with the new token starts the next uploader, not one with the refused token
        if mode == "thread":
            return _start_thread(logdir, token)
        key = str(Path(logdir).resolve())
        if time.monotonic() < _spawn_pause_until.get(key, 0.0) or candidate_starting(logdir, STARTING_FOR_S):
            return False
        proc = start_uploader_process(logdir, token)
        note_candidate(logdir, proc.pid)
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


def _own_token_id(token: str | None) -> str | None:
    """The id of the token this writer's uploader would use (its own, else ``HF_TOKEN``)."""
    return token_id(token or os.environ.get("HF_TOKEN"))


def _hand_over_for_new_token(logdir: Path, token: str | None) -> None:
    info = uploader_info(logdir) or {}
    mine = _own_token_id(token)
    if "token_id" not in info or info.get("token_id") == mine:
        return
    if fatal_error(logdir) is not None:
        logger.warning("the uploader of %s runs with another token and waits for the user; handing over", logdir)
        request_handover(logdir, for_token_id=mine)


def _handover_to_another_token(logdir: Path, token: str | None) -> bool:
    """Whether a live writer asked, lately, for a handover to a token other than this writer's. Without this,
    a writer still holding the refused token restarts an uploader with it as soon as the old one exits,
    often before the requester does, and the handover starts over, again and again."""
    requester = handover_requester(logdir)
    if not requester or "token_id" not in requester:
        return False
    fresh = time.time() - float(requester.get("time", 0)) < HANDOVER_TO_TOKEN_S  # a requester that never starts one
    return fresh and requester["token_id"] != _own_token_id(token) and is_alive(requester)


def fatal_error(logdir: Path, token: str | None = None) -> str | None:
    """The error the running uploader cannot fix by retrying (bad token, missing repo...), if any.

    With ``token``: only if the uploader runs with that token (a writer with another token has asked
    it to hand over: the error is not its own). With no uploader running, the one that stopped on
    that error once every writer was gone (nobody was left to fix it) answers for it.
    """
    from ..state.queue_readers import read_error
    from ..state.upload_error import ErrorKind  # the queue modules are not needed by writers otherwise

    error = read_error(state_dir(logdir, create=False) / "queue.db")
    info = uploader_info(logdir) or stopped_uploader_info(logdir) or {}
    if error is None or error.kind is not ErrorKind.NEEDS_USER or error.pid != info.get("pid"):
        return None  # none, one that retrying fixes, or recorded by an uploader that is gone
    if token is not None and info.get("token_id") != _own_token_id(token):
        return None
    return error.text


def terminate_thread_uploader(logdir: Path) -> bool:
    """SIGTERM for an uploader running as a thread of this process: its last commit, now.
    Returns whether there is one."""
    uploader = _thread_uploaders.get(str(Path(logdir).resolve()))
    if uploader is not None:
        uploader.terminate()
    return uploader is not None


def _start_thread(logdir: Path, token: str | None) -> bool:
    from ..uploader.loop import Uploader

    key = str(Path(logdir).resolve())
    thread = _threads.get(key)
    if thread is not None and thread.is_alive():
        return True

    def run() -> None:
        keep_signals_for_the_main_thread()
        try:
            uploader = _thread_uploaders[key] = Uploader(logdir, token=token)
            uploader.run()
        except Exception:
            logger.exception("uploader thread for %s failed", logdir)
        finally:
            _thread_uploaders.pop(key, None)

    thread = threading.Thread(target=run, name="hf_mpwriter-uploader", daemon=True)
    _threads[key] = thread
    thread.start()
    deadline = time.monotonic() + THREAD_START_WAIT_S
    while time.monotonic() < deadline and thread.is_alive() and not uploader_alive(logdir):
        time.sleep(0.02)
    return uploader_alive(logdir)
