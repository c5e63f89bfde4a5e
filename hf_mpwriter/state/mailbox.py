"""Requests to the uploader, as small files in ``.hf_mpwriter/``: ``trigger`` (commit now) and
``handover`` (finish the cycle and exit, for a requester that takes over).

Files, not sockets: they work whoever runs the uploader (a process, a thread, ``sync`` on a login
node), survive a crash of either side, and cost the writer nothing but a ``open``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .liveness import process_identity
from .statedir import private_open, read_json, state_dir, write_json_atomic

logger = logging.getLogger(__name__)


def trigger(logdir: Path) -> None:
    """Ask the uploader to commit now (used by ``close()`` and ``scheduler.trigger()``)."""
    try:
        os.close(private_open(state_dir(logdir) / "trigger"))
        os.utime(state_dir(logdir) / "trigger")
    except OSError as exc:
        logger.warning("could not trigger the uploader of %s: %s", logdir, exc)


def request_handover(logdir: Path, for_token_id: str | None = None) -> None:
    """Ask the running uploader to finish its cycle and exit (a ``sync`` with new settings, a writer
    with a new token after an error that needed the user): the next one starts with what is new.

    The request names its requester: it is honoured only while the requester is alive, and a
    requester that gives up takes it back (:func:`withdraw_handover`). A request left behind must never
    make an uploader exit with nobody to take over. ``for_token_id`` (a writer with a new token): the
    token the next uploader must have; writers with another token leave the start to the requester.
    """
    request = process_identity()
    if for_token_id is not None:
        request["token_id"], request["time"] = for_token_id, time.time()
    try:
        write_json_atomic(state_dir(logdir) / "handover", request)
    except OSError as exc:
        logger.warning("could not ask the uploader of %s to hand over: %s", logdir, exc)


def handover_requester(logdir: Path) -> dict | None:
    """Who asks the uploader to hand over (``{}``: a request that names nobody), or ``None``."""
    path = state_dir(logdir, create=False) / "handover"
    if not path.exists():
        return None
    return read_json(path) or {}


def withdraw_handover(logdir: Path, requester: dict | None = None) -> None:
    """Remove the handover request: this process's own (default), ``requester``'s, or any (``{}``)."""
    path = state_dir(logdir, create=False) / "handover"
    owner = process_identity() if requester is None else requester
    current = read_json(path) or {}
    if owner and current and current.get("pid") != owner.get("pid"):
        return  # someone else's request: not ours to take back
    try:
        path.unlink()
    except OSError:
        pass


def take(logdir: Path, name: str) -> bool:
    """Whether the request file ``name`` was there; removes it (the uploader's side)."""
    try:
        (state_dir(logdir, create=False) / name).unlink()
        return True
    except OSError:
        return False
