"""Which process of a distributed job this is, from the launcher's environment.

Each rank must write into a run directory of its own (TensorBoard erases a run's events when two
writers interleave steps in one directory), and a rank restarted on the same logdir must find its
old run directory again so that ``purge_step`` continues the same TensorBoard run. The rank number
is the stable identity that gives both.

Where a rank's run directory lies depends on its rank alone (:mod:`hf_mpwriter.state.run_dirs`):
``rank-000`` ... ``rank-8999`` in the logdir, as always, then ``ranks-9000-17999/rank-12345`` and
so on, so that no folder holds more than the Hub's 10,000 entries. What restarts do:

- same rank, same world size: the same run directory;
- an elastic restart with another world size: each rank still finds the run directory of its rank
  number (the launcher may give that number to another process than before: the run follows the
  rank, as TensorBoard shows it); a world that shrinks to one process writes the plain layout
  (the logdir itself), as a single process always has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..environment import job_id  # noqa: F401 - the writers' name for it (args, the Lightning logger)
from ..state.run_dirs import HUB_ENTRIES_PER_FOLDER, in_block

# (variable of the global rank, of the world size, launcher name), most specific first. detect() reads
# nothing else of the launcher: not the local rank (the run directory is named by the global rank), not
# torchrun's restart count (the run directory stays the same across restarts by design).
_LAUNCHERS = (
    ("RANK", "WORLD_SIZE", "torchrun"),
    ("SLURM_PROCID", "SLURM_NTASKS", "slurm"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "openmpi"),
    ("PMI_RANK", "PMI_SIZE", "pmi"),
    ("PMIX_RANK", "PMIX_SIZE", "pmix"),
)


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in its job. ``rank is None`` means "not part of a multi-process job".

    The node is a separate question (:func:`detect_nodes`): only the uploader's schedule needs it.
    """

    rank: int | None
    world_size: int
    launcher: str
    #: ``False`` for ``rank=`` with no launcher's world size: ``world_size`` is then ``rank + 1``, a floor.
    world_known: bool = True

    @property
    def distributed(self) -> bool:
        return self.rank is not None and self.world_size > 1 or self.launcher == "explicit"

    def run_name(self, entries_per_folder: int = HUB_ENTRIES_PER_FOLDER) -> str | None:
        """Path of this rank's run directory inside the logdir, ``None`` for the plain layout:
        ``rank-012``, or ``ranks-9000-17999/rank-12345`` past the ranks one folder holds when no folder
        may hold more than ``entries_per_folder`` entries (the Hub's limit; a test sets a small one)."""
        if not self.distributed or self.rank is None:
            return None
        return in_block(self.rank, f"rank-{self.rank:03d}", "ranks", entries_per_folder)


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer; fix or unset it") from None


def check_rank(rank: object) -> int:
    """Validate a user-given ``rank=``: a non-negative int (bools and strings are mistakes)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative integer (the process's global rank), got {rank!r}")
    return rank


#: (variable of the node rank, of the node count) per launcher: torchrun's groups are its nodes.
_NODES = (("GROUP_RANK", "GROUP_WORLD_SIZE"), ("SLURM_NODEID", "SLURM_NNODES"))


def detect_nodes(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(node rank, node count)`` from the launcher's environment; ``(0, 1)`` on a single node.

    Why: every node runs its own uploader, and the nodes of one job share one repository's commit
    budget; each commits at its own slot of it, by node rank.
    """
    env = os.environ if env is None else env
    for rank_var, count_var in _NODES:
        count = _int(env, count_var)
        node = _int(env, rank_var)
        if count and node is not None:
            if not 0 <= node < count:
                raise ValueError(f"{rank_var}={node} is outside the node count {count_var}={count}")
            return node, count
    return 0, 1


def detect(rank: int | None = None, env: Mapping[str, str] | None = None) -> RankInfo:
    """Rank of this process: the explicit ``rank`` if given, else the first launcher found in ``env``."""
    env = os.environ if env is None else env
    if rank is not None:
        rank = check_rank(rank)
        world = None
        for _, size_var, _ in _LAUNCHERS:
            world = _int(env, size_var)
            if world:
                break
        return RankInfo(rank, max(world or 0, rank + 1), "explicit", world_known=bool(world))
    for rank_var, size_var, name in _LAUNCHERS:
        found = _int(env, rank_var)
        if found is None:
            continue
        world = _int(env, size_var) or 1
        if found < 0 or found >= world:
            raise ValueError(f"{rank_var}={found} is outside the world size {size_var}={world}")
        return RankInfo(found, world, name)
    return RankInfo(None, 1, "none")


