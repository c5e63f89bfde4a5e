"""The version directory every rank of a Lightning run logs into, and this process's rank in the run.

Apart from :mod:`hf_mpwriter.integrations.lightning` (the logger Lightning calls): how rank 0
chooses a version from its listing of ``<save_dir>/<name>`` (the newest ``version_N`` an attempt
logged in and did not end, else the next one), the name of the marker of an attempt that ended, and
the rank and world size, from the process group once it is up.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

try:
    from lightning.fabric.utilities.rank_zero import rank_zero_only as _rank_zero_only
except ImportError:  # pragma: no cover - only the older package is installed
    from lightning_fabric.utilities.rank_zero import rank_zero_only as _rank_zero_only  # type: ignore[no-redef]

from ..state.registry import live_writers
from ..state.statedir import STATE_DIRNAME
from ..writer import ranks

logger = logging.getLogger(__name__)

#: Rank 0 creates this empty file in the version directory's state directory when ``finalize("success")``
#: runs (and removes it when it logs there again): a ``version_N`` without it, that a writer used, is
#: an attempt that did not end, which a relaunch continues. In ``.hf_mpwriter/``: the version's own
#: private state, which the uploader never sends and TensorBoard never reads; beside the writers'
#: files, so a version that no writer of this package used (``TensorBoardLogger``'s, an empty folder)
#: has no state directory at all and is never continued. Its presence is the whole record: nothing to
#: parse, nothing to tear.
ENDED_FILE = "lightning-ended"


def distributed() -> Any:
    """``torch.distributed`` if a process group is up, else ``None``."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - Lightning needs torch
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def rank_and_world() -> tuple[int, int]:
    """This process's global rank and the world size: the process group's once it is up, else
    Lightning's rank (from the launcher's environment) and the launcher's world size."""
    dist = distributed()
    if dist is not None:
        return dist.get_rank(), dist.get_world_size()
    try:
        world = ranks.detect().world_size
    except ValueError:
        world = 1
    try:
        world = max(world, int(os.environ.get("WORLD_SIZE") or 1))
    except ValueError:
        pass
    return int(getattr(_rank_zero_only, "rank", 0) or 0), world


def version_path(root_dir: str, version: int | str) -> Path:
    """``<save_dir>/<name>/<version>`` (``root_dir``: ``<save_dir>/<name>``), without ``sub_dir``."""
    name = version if isinstance(version, str) else f"version_{version}"
    return Path(os.path.expanduser(os.path.expandvars(os.path.join(root_dir, name))))


def choose_version(root_dir: str, rank_zero: bool = True) -> int:
    """Case 3 of :class:`~hf_mpwriter.integrations.HFMPWriterLogger`'s docstring: the newest ``version_N``
    in ``root_dir`` if an attempt logged there and did not end (continued), else one more
    (``TensorBoardLogger``'s choice), else 0."""
    try:
        names = [entry.name for entry in os.scandir(os.path.expanduser(os.path.expandvars(root_dir)))
                 if entry.is_dir()]
    except OSError:
        return 0
    found = [int(n[len("version_"):]) for n in names if n.startswith("version_") and n[len("version_"):].isdigit()]
    if not found:
        return 0
    newest = max(found)
    state = version_path(root_dir, newest) / STATE_DIRNAME
    if not state.is_dir() or (state / ENDED_FILE).exists() or live_writers(version_path(root_dir, newest)):
        return newest + 1  # (live writers: another job logs there now, not an attempt that was killed)
    if rank_zero:
        logger.info("continuing version_%d in %s: its last attempt did not end (pass version= for a new run)",
                    newest, root_dir)
    return newest

