"""The logdirs an earlier attempt of the same job left on this host without an uploader: each gets one, which
commits what that attempt wrote after its last commit (the index of logdirs: :mod:`hf_mpwriter.state.attempts`).

Why here, not in the loop: it is done once, when an uploader starts (a relaunch into a new folder), and once when it
exits with everything committed (forgotten: no later uploader needs to look at it); nothing of it may stop the
uploader.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .. import config as config_mod
from ..config import UploadConfig
from ..errors import ConfigurationError
from ..state import attempts
from ..state.election import uploader_state
from ..state.registry import live_writers
from ..state.spawn import start_uploader_process

logger = logging.getLogger("hf_mpwriter.uploader")


def _repository(config: UploadConfig) -> str:
    """The repository, bucket or directory a logdir's settings send to, whatever the folder in it (each
    logdir has its own), and the endpoint: how the index of logdirs matches an earlier attempt's."""
    return f"{config.kind}:{config.repo_type}:{config.repo_id or config.directory}@{config.revision} {config.endpoint}"


def finish_earlier_attempts(logdir: Path, config: UploadConfig, token: str | None) -> list[int]:
    """Record ``logdir`` for its target, and start the uploader of each logdir that an earlier attempt to the same
    target left on this host without one: a relaunch into a new folder must not leave the killed attempt's last
    records on disk. A logdir with a live writer is not an earlier attempt's (the same job's second tracker on one
    repository): its writers start its uploader. Returns the uploaders started."""
    target = _repository(config)
    attempts.record(logdir, target)
    started = []
    for earlier in attempts.left_behind(logdir, target):
        try:
            theirs = config_mod.load(earlier)
            if theirs is None or _repository(theirs) != target or uploader_state(earlier) != "none":
                continue  # (its settings name another target: never started with this token)
            if live_writers(earlier):
                continue
            pid = start_uploader_process(earlier, token).pid
        except (OSError, ConfigurationError) as exc:
            logger.warning("%s, an earlier attempt's logdir for the same target, has no uploader, and none "
                           "could be started (%s): `hf-mpwriter sync %s` sends what it holds", earlier, exc, earlier)
            continue
        logger.warning("%s, an earlier attempt's logdir for the same target, had no uploader: started one "
                       "(pid %d) to commit what it holds", earlier, pid)
        started.append(pid)
    return started


def forget_if_done(logdir: Path, drained: Callable[[], bool]) -> None:
    """Everything committed (``drained()``) and no writer left: no later uploader needs to look at ``logdir``."""
    try:
        if drained() and not live_writers(logdir):
            attempts.forget(logdir)
    except (OSError, sqlite3.Error) as exc:
        logger.debug("kept %s in the index of logdirs (%s)", logdir, exc)
