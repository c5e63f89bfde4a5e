"""The steps a resumed run lost with an earlier attempt's disk, found once at the target and said.

A resumed writer (``resume=True``, ``purge_step``) starts its run's new file with its restart point (a ``START`` at
step s). Where the target holds files of that run this disk does not, the earlier attempt's disk is gone (a replaced
node, an ephemeral pod): the run there ends where that attempt's last commit took it, and its steps from there to the
restart point were only on the lost disk. Nothing can bring them back; the user must hear it, once.
"""

from __future__ import annotations

import io
import logging
import posixpath
from collections.abc import Callable
from pathlib import Path

from ..events.decoding import step_of, summaries
from ..events.records import iter_records
from ..state import lost
from ..state.lost import Lost
from .coordination.plan import API_WINDOW_S, DEFAULT_REQUESTS_PER_5MIN
from .jobrun.runfile import RUN_DIR as JOB_RUN_DIR
from .system_metrics import RUN_DIR as SYSTEM_RUN_DIR

logger = logging.getLogger("hf_mpwriter.uploader")

#: The listings a node's look is taken to make, one folder per restarted run: a node of 8 ranks.
LISTINGS_PER_NODE = 8
#: The share of the job's API requests its nodes' looks spend in a window (the plan's default 400: 25 nodes a window,
#: 200 requests): with the plan, within the rule's margin of twice the plan (docs/guarantees.md).
LOOKS_SHARE = 0.5

#: A restart point is among a file's first records (its ``file_version``, then the ``START``).
HEAD_RECORDS = 4


def look_turn(node_rank: int, nodes: int, requests_per_5min: float | None = None) -> float:
    """Seconds after its uploader starts that node ``node_rank`` of ``nodes`` may look: the job's nodes take turns (a
    resumed job's nodes all start together), as many a window as :data:`LOOKS_SHARE` of the job's requests
    (``requests_per_5min``, the plan's default by default) allows (1,024 nodes at the default: 41 windows, 3.4 h)."""
    if nodes <= 1:
        return 0.0
    per_window = max(1, int((requests_per_5min or DEFAULT_REQUESTS_PER_5MIN) * LOOKS_SHARE / LISTINGS_PER_NODE))
    return (max(0, node_rank) // per_window) * API_WINDOW_S


def restart_point(path: Path) -> int | None:
    """The restart step a local event file starts with, if it does."""
    try:
        with open(path, "rb") as handle:
            for count, (_, data) in enumerate(iter_records(handle)):
                if (restart := summaries(data)[2]) is not None:
                    return restart
                if count + 1 >= HEAD_RECORDS:
                    return None
    except OSError:
        return None
    return None


def last_step(content: bytes) -> int | None:
    """The highest step among ``content``'s whole records (an event file as the target holds it)."""
    steps = (step_of(data) for _, data in iter_records(io.BytesIO(content)))
    return max((s for s in steps if s is not None), default=None)


def restarted_runs(files: list[str], logdir: Path, heads: dict[str, int | None]) -> dict[str, int]:
    """``run -> restart point`` of each run this disk holds nothing of before it: its oldest local event file (names
    sort in write order) starts with one (``purge_step``), or its writer noted it (``resume=True``). ``heads``
    keeps each oldest file's restart point, read once."""
    oldest: dict[str, str] = {}
    for rel in files:
        if "tfevents" in rel and rel.split("/", 1)[0] not in (JOB_RUN_DIR, SYSTEM_RUN_DIR):  # (the uploader's own)
            run = posixpath.dirname(rel) or "."
            oldest[run] = min(oldest.get(run, rel), rel)
    found = lost.resumed_runs(logdir)
    for run, rel in oldest.items():
        if rel not in heads:
            heads[rel] = restart_point(logdir / rel)
        if (restart := heads[rel]) is not None:
            found[run] = restart
    return {run: restart for run, restart in found.items() if restart > 0}


def lost_in_run(run: str, restart: int, local: set[str], remote: list[str], read: Callable[[str], bytes]) -> Lost | None:
    """What ``run`` lost, given the target's files (``remote``: paths relative to the logdir) and ``read`` (a remote
    file's content); ``None`` where it lost nothing, or where the target holds no file of it this disk lacks."""
    prefix = "" if run == "." else run + "/"
    theirs = sorted(p for p in remote if p.startswith(prefix) and "/" not in p[len(prefix):] and "tfevents" in p
                    and p not in local)
    after = None
    for path in reversed(theirs):  # the newest file that holds a record decides
        if (after := last_step(read(path))) is not None:
            break
    if after is None or after >= restart - 1:
        return None
    return Lost(run, after, restart)


class LostSteps:
    """What the uploader found lost, each restarted run looked at once."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.found: list[Lost] | None = None  # (the queue's, read by the committer first)
        self.looked: set[tuple[str, int]] = set()  # (run, restart) of each run looked at
        self._heads: dict[str, int | None] = {}

    def look(self, files: list[str], listing: Callable[[str], list[str]], read: Callable[[str], bytes]) -> list[Lost]:
        """The newly found (each said once in the uploader's log); ``listing`` (of a folder) and ``read`` are the
        target's, and raise as it does: what was not looked at is looked at again next time. Only a restarted run's
        folder is listed: one request a run, whatever else the target holds."""
        runs = {run: restart for run, restart in restarted_runs(files, self.logdir, self._heads).items()
                if (run, restart) not in self.looked}
        local, new = set(files), []
        self.found = self.found or []
        for run, restart in sorted(runs.items()):  # (each find kept before the next call: a failure keeps it)
            found = lost_in_run(run, restart, local, listing(run), read)
            if found is not None and found not in self.found:
                logger.warning("%s; nothing can bring them back (docs/guarantees.md: what bounds such a loss)", found.text())
                new.append(found)
                self.found.append(found)
            self.looked.add((run, restart))
        return new
