"""Worker functions for the multiprocessing tests of ``test_launchers.py``.

A module of its own (not the test module) so that ``spawn`` children import only this and
``hf_mpwriter``. Values are ``base * 100000 + step``: a lost or duplicated record shows.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

from hf_mpwriter import HFSummaryWriter

COMMIT_EVERY_MIN = 1 / 60  # one second

_barrier: Any | None = None


def init_worker(barrier: Any | None = None) -> None:
    """Pool initializer: remember the barrier that makes the workers' writers live at the same time."""
    global _barrier
    _barrier = barrier


def _together() -> None:
    if _barrier is not None:
        _barrier.wait(timeout=120)


def log_steps(logdir: str, target: str, rank: int | None, base: int, steps: int) -> tuple[int, str]:
    """Log ``steps`` values with ``rank`` (``None``: derived); returns ``(base, run directory)``."""
    with HFSummaryWriter(repo_id=None, logdir=logdir, target_dir=target, rank=rank,
                         commit_every=COMMIT_EVERY_MIN, close_timeout=90) as writer:
        _together()  # every worker holds its writer (and run directory) at once
        for step in range(steps):
            writer.add_scalar("loss", float(base * 100000 + step), step)
        run_dir = os.path.relpath(writer.run_dir, logdir)
    return base, run_dir


def log_until_killed(logdir: str, target: str, rank: int, progress_dir: str) -> None:
    """Log forever; after each flush, record the last flushed step in ``progress_dir/<rank>``."""
    writer = HFSummaryWriter(repo_id=None, logdir=logdir, target_dir=target, rank=rank,
                             commit_every=COMMIT_EVERY_MIN)
    progress = Path(progress_dir)
    for step in itertools.count():
        writer.add_scalar("loss", float(rank * 100000 + step), step)
        if step % 10 == 9:
            writer.flush()
            tmp = progress / f".{rank}.tmp"
            tmp.write_text(str(step))
            os.replace(tmp, progress / str(rank))
        time.sleep(0.002)
