"""A node's part in the job run of a job with a store: the points its job view made that the job's leader
has not written yet, the k it passes them on at, and the restarts the leader has not taken in
(:mod:`.values`). Each round (:mod:`.exchange`) the node sends :meth:`Outbox.message` and takes the
leader's word (:meth:`Outbox.take_word`)."""

from __future__ import annotations

import json
import logging
import math

from ..coordination.protocol import VERSION
from .points import Point, point_from_list
from .values import Held

logger = logging.getLogger(__name__)

#: A node's points kept for the leader at most (more: no leader takes them, the oldest go).
OUTBOX_POINTS = 20_000
_Key = tuple[str, int]


class Outbox:
    """A node's points for the job's leader, oldest steps first."""

    def __init__(self) -> None:
        self.points: dict[_Key, Point] = {}  # the points the leader has not written yet
        self.every = 1  # only the steps divisible by this are passed on (the leader's k)
        self.made = 0  # points made since the node's last value was sent (the leader's k is set by it)
        self.dropped = 0  # points dropped from a full outbox
        self.epoch = 0  # the job run's last restart this node made its points anew for (:class:`~.values.Held`)
        #: This node's restarts the leader has not taken in: ``(id, step)``; id 0 until this process heard the
        #: leader's word (:meth:`take_word`), which numbers them.
        self.reports: list[tuple[int, int]] = []
        #: The highest report id this node gave, or that the word says the leader took in: ids only grow,
        #: counted, never read off a clock (a clock stepped back made a restart's id lower than one taken in).
        self.last_id = 0
        self._heard = False  # this process took the leader's word (:meth:`take_word`)

    def __len__(self) -> int:
        return len(self.points)

    def add(self, points: list[tuple[str, int, Point]]) -> None:
        """Points the node's view made (each tag's steps in order), within :data:`OUTBOX_POINTS`."""
        self.points.update({(tag, step): stats for tag, step, stats in points})
        self.made += len(points)
        for key in sorted(self.points, key=lambda key: (key[1], key[0]))[:max(0, len(self.points) - OUTBOX_POINTS)]:
            del self.points[key]  # (no leader takes them: the store gone, say) the oldest go
            if not self.dropped:
                logger.warning("job run: no leader takes this node's points (%d kept at most); the oldest go",
                               OUTBOX_POINTS)
            self.dropped += 1

    def report(self, step: int) -> None:
        """A restart at ``step`` whose points this node makes anew: for the leader (:mod:`.values`). Its id
        follows the last one this node gave or the leader took in; before this process heard the leader (a
        lost state file, or one saved before the last ids were sent), the word numbers it (:meth:`take_word`)."""
        if self._heard:
            self.last_id += 1
        self.reports.append((self.last_id if self._heard else 0, step))

    def drop_from(self, step: int) -> None:
        """The points from ``step`` on are made anew (a restart)."""
        for key in [key for key in self.points if key[1] >= step]:
            del self.points[key]

    def message(self, head: dict, limit: int, done: bool) -> bytes:
        """The node's value: ``head`` (its ranks' newest steps, its tags, its late values), what this outbox
        says of itself, and its points, oldest steps first, within ``limit`` bytes; ``"final"`` where the
        node is ``done`` (every point it will have is made) and every point fits."""
        head = {"v": VERSION, **head, "final": False, "made": self.made, "every": self.every, "epoch": self.epoch,
                "restarts": [list(report) for report in self.reports if report[0]]}  # (numbered: see report)
        room = limit - len(json.dumps({**head, "points": []}))
        if room < 0:  # its tags alone are too many: the leader learns them from the points
            head["tags"] = None
            room = limit - len(json.dumps({**head, "points": []}))
        points = []
        for (tag, step), stats in sorted(self.points.items(), key=lambda item: (item[0][1], item[0][0])):
            item = [tag, step, stats.to_list()]
            room -= len(json.dumps(item)) + 2  # (json's ", " between items)
            if room < 0:
                break
            points.append(item)
        head["final"] = done and len(points) == len(self.points)
        return json.dumps({**head, "points": points}).encode()

    def take_word(self, held: Held, seen: int) -> tuple[float, dict[str, float], bool]:
        """The leader's word (``seen``: the id of the last of this node's restarts it took in): the points
        the job run holds, or that its k leaves out, leave. Returns the step from which this node makes its
        points anew (``math.inf``: none; the job run restarted since it last did: the caller drops them),
        the steps the job run holds per tag (but not from a restart of this node the leader has not taken
        in yet: those it drops at once, and this node is making them anew), and whether points left."""
        self.last_id = max(self.last_id, seen)
        if not self._heard:  # reports made before this process heard the word: above anything it took in
            self._heard = True
            numbered = []
            for number, step in self.reports:
                if not number:
                    self.last_id += 1
                    number = self.last_id
                numbered.append((number, step))
            self.reports = numbered
        self.reports = [report for report in self.reports if report[0] > seen]
        floor = held.floor_after(self.epoch)
        self.epoch = held.epoch
        if held.every > self.every:
            self.every, self.made = held.every, 0  # (what was made at the old k does not tell the leader the new rate)
        below = min((step for _, step in self.reports), default=math.inf) - 1
        steps = {tag: min(step, below) for tag, step in held.steps.items()}
        gone = [key for key in self.points if key[1] <= steps.get(key[0], -math.inf) or key[1] % self.every]
        for key in gone:
            del self.points[key]
        return floor, steps, bool(gone)

    def state(self) -> dict:
        return {"outbox": [[tag, step, stats.to_list()] for (tag, step), stats in self.points.items()],
                "epoch": self.epoch, "reports": [list(report) for report in self.reports], "last_id": self.last_id}

    def load(self, state: dict) -> None:
        self.points = {(str(tag), int(step)): point_from_list(str(tag), item) for tag, step, item in state["outbox"]}
        self.epoch = int(state.get("epoch", 0))  # (a state of before a job run's restarts: none)
        self.reports = [(int(n), int(step)) for n, step in state.get("reports", ())]
        self.last_id = max([int(state.get("last_id", 0)), *(number for number, _ in self.reports)])
