"""How much the job view reads and keeps at once (:class:`ViewBounds`).

Why an object: these bound the view's memory and time on a long run (days of steps, a backlog after a
restart without state); tests make them small to reach those paths with short files. They are handed down
from where a view is made, as :class:`~...timing.JobTiming` is, so no test changes a module's constant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewBounds:
    """The job view's bounds on one update's reading and on what it keeps waiting."""

    #: The most read from one rank file in one update: a long backlog (a restart without the state file,
    #: ``sync`` of a logdir logged offline) is read over several updates, in bounded memory and time.
    read_bytes: int = 4 * 1024 * 1024
    #: A rank file's marks, one each this many bytes read or more: a restart reads about this much of a file
    #: again before its step (:class:`~.marks.Marks`).
    mark_bytes: int = 1024 * 1024
    #: Points read and not written yet, at most (their ranks' values, some 1 KB each): past this, the oldest
    #: whose wait is over are written without the ranks they wait for (a rank far behind: its values, late).
    waiting_points: int = 50_000
    #: Records decoded between two calls of the uploader's heartbeat while reading (a long read must not look hung).
    beat_every: int = 2000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViewBounds.{name} must be a whole number of 1 or more, not {value!r}")
