"""The values the nodes of a multi-node job exchange for its job run (:mod:`.exchange`): a node's, and a
group's (:mod:`.tree`: its nodes' values merged into one), read by one parser.

A node's value (:meth:`.view.JobView.message`)::

    {"ranks": {rank: newest step}, "tags": [tag, ...] or null, "final": bool, "late": int, "made": int,
     "every": int, "epoch": int, "restarts": [[id, step], ...], "points": [[tag, step, point.to_list()], ...]}

A group's::

    {"nodes": {node: {"ranks", "final", "late", "made", "every", "epoch", "restarts"}}, "tags": {tag: [node, ...]},
     "points": [[tag, step, point.to_list(), [node, ...] or null (every node of the value)], ...]}

(a point: :mod:`.points`), and the leader's word to every node, ``view/held`` (:class:`Held`)::

    {"held": {tag: step}, "every": int, "restarts": [[epoch, step], ...], "seen": {node: id},
     "unwritten": step or null, "by": node, "n": int}

**Restarts.** A node that reads a rank's restart at ``step`` (:meth:`.view.JobView._restart`) after it
passed on points from there makes them anew and says so: ``[id, step]`` in ``restarts`` (an id that only
grows: counted by the node above the last one it gave and the last one the word says the leader took in,
never read off a clock, :meth:`.outbox.Outbox.report`). The leader takes each in once (``seen``: the last id
per node) and
starts a new *epoch* from the lowest step it took in that round: it drops the job run's points from there
(a ``SessionLog.START``; a new leader that finds no point written since the last epoch's step writes it
again, in case the last one died before it did) and the points waiting; every node, at its next round,
makes its points from there anew (:meth:`Held.floor_after`) and says the epoch it made them in, and until
it did the leader, and a group's host, take none of its points from there (:meth:`Held.stale`). Epochs
are ids too: a node whose epoch the word does not hold (it missed them, or the job's store is new) makes
its points anew from the lowest step the word holds.

**Unwritten.** A word is published before its points are written (:mod:`.exchange`): ``unwritten`` is the
lowest step of the points it calls held that its leader had not written yet (``null`` once its next word
says they are). The nodes drop those points when they read the word; a leader that dies (or whose
publication's answer was lost, then the lease moved) before it wrote them would lose them, so a new
leader that takes up a word with ``unwritten`` restarts the job run from there, as for a rank's restart:
every node makes its points anew from that step, and what the last leader did write is dropped by the
``START`` and written again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

from ..coordination.protocol import VERSION, Malformed, Skipped, parse_count, parse_step, versioned
from .points import Point, merge_all, point_from_list

logger = logging.getLogger(__name__)
_Key = tuple[str, int]
#: What a value that does not parse raises in the parsers' hands (``1e999`` is a float infinity to JSON, and
#: ``int()`` of it raises ``OverflowError``): each is :class:`Malformed` to their callers.
UNPARSED = (ValueError, KeyError, TypeError, AttributeError, OverflowError)


@dataclasses.dataclass(frozen=True)
class Head:
    """What a node says of itself in its value: its ranks' newest steps, whether it is done (every point
    it will have is in the value), its late values, and the points it made in its last round at k
    ``every``."""

    ranks: dict[int, int]
    final: bool
    late: int
    made: int
    every: int
    epoch: int = 0  # the job run's restart (:class:`Held`) whose steps the node made anew
    restarts: tuple[tuple[int, int], ...] = ()  # its own restarts the leader has not taken in: (id, step)

    def to_dict(self) -> dict:
        return {"ranks": {str(r): s for r, s in self.ranks.items()}, "final": self.final, "late": self.late,
                "made": self.made, "every": self.every, "epoch": self.epoch, "restarts": [list(r) for r in self.restarts]}

    @classmethod
    def from_dict(cls, head: dict) -> Head:
        """A head as a value holds it; its steps within :func:`~..coordination.protocol.parse_step`'s bounds."""
        return cls({int(r): parse_step(s, "a rank's newest step") for r, s in head["ranks"].items()},
                   bool(head["final"]), parse_count(head["late"], "late"), parse_count(head["made"], "made"),
                   parse_step(head.get("every", 1), "every", 1),
                   parse_count(head.get("epoch", 0), "epoch"),
                   tuple((parse_count(n, "a restart's epoch"), parse_step(step, "a restart's step"))
                         for n, step in head.get("restarts", ())))


@dataclasses.dataclass
class Value:
    """One value in the store, a node's or a group's, parsed: the nodes it speaks for, the tags each logs
    (as far as it says), and its points, each with the nodes it covers."""

    heads: dict[int, Head]
    tags: dict[str, set[int]]
    points: list[tuple[str, int, list, frozenset[int]]]


#: The job run's restarts ``view/held`` keeps (a node that missed older ones makes every point anew).
RESTARTS_KEPT = 16


def new_id(after: int = 0) -> int:
    """An epoch's id: unique, above ``after`` (the wall clock's nanoseconds: an epoch id is only compared for
    equality, and one of a job's earlier store must not equal one of its new store's)."""
    return max(time.time_ns(), after + 1)


@dataclasses.dataclass
class Held:
    """``view/held``, the leader's word: per tag the last step the job run holds, k, the job run's restarts
    (``(epoch id, step)``, the newest last) and per node the id of the last of its restarts the leader took in."""

    steps: dict[str, int] = dataclasses.field(default_factory=dict)
    every: int = 1
    restarts: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    seen: dict[int, int] = dataclasses.field(default_factory=dict)
    unwritten: int | None = None  # the lowest step held whose points its leader had not written when it said it

    @property
    def epoch(self) -> int:
        return self.restarts[-1][0] if self.restarts else 0

    def floor_after(self, epoch: int) -> float:
        """The lowest step the restarts after ``epoch`` dropped (``math.inf``: none): a node that made its
        points in ``epoch`` makes them anew from there (from every restart the word holds where it does not
        hold ``epoch``; from 0 where some may be gone from it)."""
        ids = [number for number, _ in self.restarts]
        if epoch == self.epoch or not ids:
            return math.inf
        if epoch in ids:
            return min(step for _, step in self.restarts[ids.index(epoch) + 1:])
        return 0 if len(ids) >= RESTARTS_KEPT else min(step for _, step in self.restarts)

    def stale(self, epoch: int, step: int) -> bool:
        """Whether a node's point of ``step`` made in ``epoch`` is of an attempt the job run dropped since."""
        return step >= self.floor_after(epoch)

    def restart(self, step: int) -> None:
        """A new epoch: the job run drops its points from ``step``."""
        self.restarts = [*self.restarts, (new_id(self.epoch), step)][-RESTARTS_KEPT:]
        self.steps = {tag: min(held, step - 1) for tag, held in self.steps.items()}

    def to_json(self, by: int) -> bytes:
        """The value to publish (``by``: the leader's node; with a nonce, two leaders never publish the same bytes)."""
        return json.dumps({"v": VERSION, "held": self.steps, "every": self.every, "restarts": [list(r) for r in self.restarts],
                           "seen": {str(n): k for n, k in sorted(self.seen.items())}, "unwritten": self.unwritten, "by": by,
                           "n": time.time_ns()}).encode()

    @classmethod
    def parse(cls, raw: bytes | None, skipped: Skipped | None = None) -> Held:
        """``view/held`` as read from the store (empty, or not parsing: nothing held, counted in ``skipped``); its
        steps within :func:`~..coordination.protocol.parse_step`'s bounds (a tag's held step -1: none)."""
        if not raw:
            return cls()
        try:
            value = versioned(json.loads(raw), "view/held")
            unwritten = value.get("unwritten")
            return cls({str(t): parse_step(s, "a held step") for t, s in value["held"].items()},
                       parse_step(value["every"], "every", 1),
                       [(parse_count(e, "a restart's epoch"), parse_step(s, "a restart's step"))
                        for e, s in value.get("restarts", ())],
                       {int(n): parse_count(k, "seen") for n, k in value.get("seen", {}).items()},
                       None if unwritten is None else parse_step(unwritten, "unwritten"))
        except UNPARSED as exc:
            (skipped or Skipped()).count("view/held", Malformed(f"view/held: {exc}"))
            return cls()


def parse_value(node: int | None, raw: bytes) -> Value | None:
    """A node's value (:meth:`JobView.message`, of ``node``) or a group's (:func:`group_value`); ``None`` if
    it holds nothing yet. Raises :class:`Malformed` if it does not parse (a step out of its bounds included)."""
    if not raw or raw == b"{}":
        return None
    try:
        return _value(node, raw)
    except UNPARSED as exc:
        raise Malformed(f"{type(exc).__name__}: {exc}") from None


def _value(node: int | None, raw: bytes) -> Value:
    message = versioned(json.loads(raw), "view")
    if "nodes" in message:  # a group's
        heads = {int(n): Head.from_dict(h) for n, h in message["nodes"].items()}
        everyone = frozenset(heads)
        tags = {str(t): {int(n) for n in nodes} for t, nodes in message["tags"].items()}
        points = [(str(t), parse_step(s, "a point's step"), item,
                   everyone if covered is None else frozenset(int(n) for n in covered))
                  for t, s, item, covered in message["points"]]
        return Value(heads, tags, points)
    if node is None:
        raise ValueError("a node's value where a group's was expected")
    one = frozenset((node,))
    tags = {str(t): {node} for t in message["tags"] or ()}  # (none: too many for its value; learnt from its points)
    return Value({node: Head.from_dict(message)}, tags,
                 [(str(t), parse_step(s, "a point's step"), item, one) for t, s, item in message["points"]])


def stale(value: Value, step: int, covered: frozenset[int], held: Held) -> bool:
    """Whether a point of ``value`` (of ``step``, covering the nodes ``covered``) is of an attempt the job run
    dropped since one of its nodes made it (:meth:`Held.stale`)."""
    return any(held.stale(value.heads[node].epoch, step) for node in covered if node in value.heads)


def group_value(values: dict[int, bytes], limit: int, held: Held, skipped: Skipped | None = None) -> bytes:
    """The values of a group's nodes (``node -> its value``) as one (:mod:`.tree`): each step's points
    merged, but those the leader's word (``held``) leaves out (a step the job run holds, one k leaves out, a
    point of an attempt the job run dropped since its node made it), the oldest steps first within
    ``limit`` bytes (a group cut short says none of its nodes is done). A value that does not parse is left
    out, and said."""
    heads: dict[int, Head] = {}
    tags: dict[str, set[int]] = {}
    found: dict[_Key, tuple[list[Point], frozenset[int]]] = {}
    for node, raw in sorted(values.items()):
        try:
            value = parse_value(node, raw)
            if value is None:
                continue
            parsed = [(t, s, point_from_list(t, item), covered) for t, s, item, covered in value.points]
        except UNPARSED as exc:
            (skipped or Skipped()).count(f"view/{node}", exc)
            continue
        heads.update(value.heads)
        for tag, nodes in value.tags.items():
            tags.setdefault(tag, set()).update(nodes)
        for tag, step, stats, covered in parsed:
            if step <= held.steps.get(tag, -math.inf) or step % held.every or stale(value, step, covered, held):
                continue
            had = found.setdefault((tag, step), ([], frozenset()))
            had[0].append(stats)
            found[(tag, step)] = (had[0], had[1] | covered)
    merged = {key: (merge_all(points), covered) for key, (points, covered) in found.items()}
    everyone = frozenset(heads)
    said = {str(n): h.to_dict() for n, h in sorted(heads.items())}
    head = {"v": VERSION, "nodes": said, "tags": {t: sorted(nodes) for t, nodes in sorted(tags.items())}}
    room = limit - len(json.dumps({**head, "points": []}))
    points: list[list] = []
    for (tag, step), (stats, covered) in sorted(merged.items(), key=lambda pair: (pair[0][1], pair[0][0])):
        item: list = [tag, step, stats.to_list(), None if covered == everyone else sorted(covered)]
        room -= len(json.dumps(item)) + 2
        if room < 0:
            for one in said.values():
                one["final"] = False
            break
        points.append(item)
    return json.dumps({**head, "points": points}).encode()
