"""Starting a logdir's uploader process: what a writer does when none runs, and what an uploader does
for a logdir an earlier attempt to its target left behind (:mod:`hf_mpwriter.state.attempts`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from .statedir import private_open, state_dir

logger = logging.getLogger(__name__)

#: ``uploader.out`` (the uploader's raw stdout/stderr) is set aside past this size at the next spawn.
OUT_BYTES = 1 << 20
#: What a launcher sets for a rank: the uploader is not one (it would be mistaken for it).
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_PROCID")


def start_uploader_process(logdir: Path, token: str | None) -> subprocess.Popen:
    """``python -m hf_mpwriter.uploader LOGDIR`` in a session of its own (it outlives its starter). The
    token goes through the environment, never the command line."""
    env = dict(os.environ)
    if token:
        env["HF_TOKEN"] = token
    for var in LAUNCHER_VARS:
        env.pop(var, None)
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no terminal: bars would only fill uploader.out
    out = state_dir(logdir) / "uploader.out"  # only what escapes logging (a crash): rotated here
    try:
        if out.stat().st_size > OUT_BYTES:
            out.replace(out.with_name("uploader.out.1"))
    except OSError:
        pass
    log = os.fdopen(private_open(out), "ab")
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
