"""Where run directories go in a logdir, so that no folder holds more entries than the Hub takes.

The Hub refuses a commit that leaves more than 10,000 entries (files and sub-folders) in one folder
of a repository (hub-docs, "Repository limitations"; the test Hub enforces it:
:class:`hf_mpwriter.testing.HubLimits`). One run directory per rank in the logdir would break that
past ~10,000 ranks, and one per host in ``system/`` past ~10,000 nodes. So the run directories of
indexes (ranks, node ranks, unranked processes) below :func:`flat_share` of the limit lie where they
always have (``rank-000`` ...), and the later ones go into a folder per block of that many, named
by its range: rank 12,345 writes ``ranks-9000-17999/rank-12345``.

Why this scheme:

- **The path depends on the index alone**, never on the world size: a restarted rank finds its run
  directory again, also in an elastic job whose world size changed across restarts, and a process
  given only ``rank=`` (its world size unknown) needs nothing else. A scheme that switched layout
  past a world size would move every rank of a job that grows past it: each would start a new run.
- **Ordinary jobs keep today's layout exactly**: ranks below 9,000 are untouched. The run directory
  keeps its name (``rank-{r:03d}``) inside a block folder, so code that looks for ``rank-12345``
  still finds it, and a block's name (``ranks-``, not ``rank-``) is never taken for a rank's. The
  one change for existing jobs: in a job of 9,000 to 9,999 ranks (which fitted in one folder),
  ranks 9,000 and up now write ``ranks-9000-17999/``; restarted across the upgrade, those ranks
  start their runs anew there.
- **Room for what lies beside the runs**: 9/10 of the limit is for run directories, the rest for
  the block folders, ``system/``, a second live writer's ``rank-NNN.1`` and the user's own files.
  With the Hub's 10,000: 9,000 ranks per folder and up to 900 block folders beside them, some 8.1
  million ranks (:func:`capacity`; past it the logdir itself would be refused).
- **TensorBoard walks sub-directories**: ``ranks-9000-17999/rank-12345`` is a run like any other.

A grouping for every rank (``rank-group-00/rank-00000`` from the first rank) would have been more
uniform, but it would move every existing user's runs; grouping by a hash of the rank would keep
the blocks even but tell no one where rank 12,345 is.
"""

from __future__ import annotations

#: The most entries (files and sub-folders) the Hub takes in one folder of a repository (hub-docs).
HUB_ENTRIES_PER_FOLDER = 10_000


def flat_share(entries_per_folder: int = HUB_ENTRIES_PER_FOLDER) -> int:
    """How many run directories one folder holds: 9/10 of ``entries_per_folder`` (9,000 on the Hub)."""
    if entries_per_folder < 2:
        raise ValueError(f"entries_per_folder must be at least 2, not {entries_per_folder!r}")
    return entries_per_folder - max(1, entries_per_folder // 10)


def in_block(index: int, name: str, kind: str, entries_per_folder: int = HUB_ENTRIES_PER_FOLDER) -> str:
    """``name`` for ``index`` below :func:`flat_share`, else ``<kind>-<first>-<last>/<name>``: the
    folder of the block of ``flat_share`` indexes that ``index`` is in (``ranks-9000-17999/rank-12345``)."""
    if index < 0:
        raise ValueError(f"index must be >= 0, not {index!r}")
    share = flat_share(entries_per_folder)
    if index < share:
        return name
    first = index // share * share
    return f"{kind}-{first}-{first + share - 1}/{name}"


def capacity(entries_per_folder: int = HUB_ENTRIES_PER_FOLDER) -> int:
    """How many indexes the layout places with every folder within ``entries_per_folder``: the
    flat share, and as many blocks as the room left beside it takes (8,109,000 on the Hub)."""
    share = flat_share(entries_per_folder)
    room = entries_per_folder - share
    blocks = room - max(1, room // 10)  # a tenth of the room stays for what is not a run directory
    return share * (1 + blocks)
