"""What a resumed attempt would write again: the records an earlier attempt wrote at the start of the run (the
Trainer's ``args`` text, Lightning's ``hp_metric``, Accelerate's ``hparams``), below the restart point.

Why: TensorBoard's Python reader (``--load_fast=false``, what ``hf-mpwriter view`` starts) keeps records below a
restart point from every attempt, so each one's would show once per attempt. Records at a step the earlier files
hold for the same tag, below the restart point, are left out; those at or past it are written (the restart hides
the earlier ones there). Only the heads of the earlier files are read (their records up to the first step past 0):
that is where an attempt writes what it writes once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..events.decoding import step_and_tags
from ..events.records import iter_records

#: Records read at most at the head of each earlier file.
HEAD_RECORDS = 64


def written_at_start(run_dir: Path) -> set[tuple[str, int]]:
    """``(tag, step)`` of the records at the heads of the run's event files (never raises: a file that cannot be
    read holds nothing to leave out)."""
    found: set[tuple[str, int]] = set()
    try:
        names = [entry.name for entry in os.scandir(run_dir) if "tfevents" in entry.name and entry.is_file()]
    except OSError:
        return found
    for name in names:
        try:
            with open(run_dir / name, "rb") as handle:
                for count, (_, data) in enumerate(iter_records(handle)):
                    parsed = step_and_tags(data)
                    if parsed is None or parsed[0] > 0 or count >= HEAD_RECORDS:
                        break
                    found.update((tag, parsed[0]) for tag in parsed[1])
        except OSError:
            continue
    return found


class Repeats:
    """The filter of one resumed run: which records it leaves out, until the run passes its restart point."""

    def __init__(self, earlier: set[tuple[str, int]], restart: int | None) -> None:
        """``restart``: the restart point, or ``None`` until the first step logged says it (``resume=True``)."""
        self.earlier, self.restart = earlier, restart
        self.held: list[tuple[object, int | None, float | None]] = []  # repeats logged before the restart was known

    def leaves_out(self, event: object, step: int | None, walltime: float | None, tags: list[str]) -> bool:
        """Whether ``event`` (logged at ``step``, ``None``: 0) is a repeat left out, or held until the restart point
        is known (:meth:`restarted`)."""
        at = 0 if step is None else int(step)
        if not tags or any((tag, at) not in self.earlier for tag in tags):
            return False
        if self.restart is None:
            self.held.append((event, step, time.time() if walltime is None else walltime))
            return True
        return at < self.restart

    def restarted(self, restart: int) -> list[tuple[object, int | None, float | None]]:
        """The restart point is known: the held records to write after all (at or past it)."""
        self.restart = restart
        kept = [held for held in self.held if (0 if held[1] is None else int(held[1])) >= restart]
        self.held = []
        return kept

    def passed(self, step: int | None) -> bool:
        """Whether a record at ``step`` is past the restart point: nothing is left out from then on."""
        return self.restart is not None and step is not None and int(step) >= self.restart
