"""The leader's side of a multi-node job's job run: every node's points merged into the job run of its
logdir, when each point is due, and which nodes it misses (:class:`JobMerge`); the whole job as this node's
merges heard it (:class:`Heard`). The rounds through the store are :mod:`.exchange`'s."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from .points import Point, merge_all, point_from_list
from .runfile import JobRun
from .values import Head, Held, parse_value, stale

logger = logging.getLogger(__name__)

#: A point waits this many times the view's wait at the leader (the node's own wait, then its next round).
LEADER_WAIT_FACTOR = 2.0
_Key = tuple[str, int]


@dataclasses.dataclass
class Heard:
    """The whole job as one node's merges heard it, for ``status``: kept across them (a leader that moves alone
    to a successor store as the job ends, the other nodes done, still shows every node and rank)."""

    nodes: set[int] = dataclasses.field(default_factory=set)
    ranks_of: dict[int, dict[int, int]] = dataclasses.field(default_factory=dict)  # node -> its ranks' newest steps
    picture: dict | None = None  # the whole job's picture a merge of this node last showed
    held: dict[str, int] = dataclasses.field(default_factory=dict)  # the job run's steps as that merge left them
    showing: bool = False  # ``status`` shows it now (a round this node did not lead showed its part instead)

    def newest(self) -> dict[int, int]:
        """Rank -> its newest step, as its node was last heard."""
        return {rank: step for ranks in self.ranks_of.values() for rank, step in ranks.items()}


class JobMerge:
    """The leader's side: the nodes' points, merged into the job run of this node's logdir."""

    def __init__(self, logdir: Path, nodes: int, world: int, wait: float, held: Held,
                 clock: Callable[[], float] = time.monotonic, hops: int = 1, heard: Heard | None = None) -> None:
        """``held``: where the last leader left the job run (``view/held``); ``hops``: the rounds a node's
        value takes to reach the leader (2 in a tree: :mod:`.tree`); ``heard``: what this node's earlier
        merges heard (the picture ``status`` shows goes on from there)."""
        self.nodes, self.world, self.clock, self.hops = nodes, world, clock, hops
        self.heard = Heard() if heard is None else heard
        self._earlier = self.heard.picture is not None  # an earlier merge showed the job: its picture stands till this one writes
        self._wrote = False
        self.wait = (LEADER_WAIT_FACTOR + hops - 1) * wait  # how long a point waits here for its nodes
        self.run = JobRun(logdir, after=max(held.steps.values(), default=None))
        self.word = Held(dict(held.steps), held.every, list(held.restarts), dict(held.seen))  # published next
        self.every = held.every
        # The nodes' restarts taken in this round: the lowest step; from the start, where the last leader may not
        # have written the points of its last word (the nodes dropped them: they make them anew from there).
        self._restart_from: float = math.inf if held.unwritten is None else held.unwritten
        #: The job run drops its points from here before the next ones: the last epoch's step again where no
        #: point was written since (its leader may have died before it wrote its ``START``).
        last = held.restarts[-1][1] if held.restarts else None
        self._start_at = last if last is not None and max(held.steps.values(), default=-1) < last else None
        self._said = (dict(held.seen), list(held.restarts))  # the nodes' restarts and the epochs, as last published
        self._shown: dict | None = None  # the picture ``status`` shows, as this merge last wrote it
        self._values: dict[_Key, dict[frozenset[int], Point]] = {}  # (tag, step) -> nodes -> their point, not written
        self._first: dict[_Key, float] = {}
        self._heard: set[int] = set()  # the nodes that sent something
        self._done: set[int] = set()  # the nodes that said every point they will have is in their value
        self._tag_nodes: dict[str, set[int]] = {}  # tag -> the nodes that sent it
        self._ranks_of: dict[int, dict[int, int]] = {}  # node -> its ranks' newest steps
        self._late: dict[int, int] = {}  # node -> its values that came after the leader wrote their step
        self._made: dict[int, int] = {}  # node -> the points it made in its last round (at this k)
        self.points_read = 0  # in the last round
        self.bytes_read = 0  # in the last round
        self.largest = 0  # the largest node value in the last round

    def start_round(self) -> None:
        """What the last round read is forgotten (the nodes' values are read again, whole, each round)."""
        self.bytes_read = self.points_read = self.largest = 0

    def take(self, node: int | None, raw: bytes) -> None:
        """One value: a node's (:meth:`JobView.message`; ``node``: whose) or a group's (:func:`group_value`;
        ``node`` unused), taken whole or not at all: raises :class:`Malformed` or another of ``UNPARSED`` if it
        does not parse (the caller leaves it out, counted). A point that covers nodes another value's point of
        that step covers too (a node that moved between its group and the store) is taken once: a node's point
        of a step never changes."""
        self.bytes_read += len(raw)
        self.largest = max(self.largest, len(raw))
        value = parse_value(node, raw)
        if value is None:
            return
        staged = [(tag, step, point_from_list(tag, item), covered) for tag, step, item, covered in value.points
                  if not (step <= self.held.get(tag, -math.inf) or step % self.every)
                  and not stale(value, step, covered, self.word)]  # (made before its node took in the last restart)
        for one, head in value.heads.items():
            self._restarted(one, head)
            if head.ranks or head.final:  # (a node that read none of its ranks yet does not know its tags)
                self._heard.add(one)
            self._ranks_of[one] = head.ranks
            self._late[one] = head.late
            self._made[one] = head.made if head.every >= self.every else 0  # (made at an older k: no rate for this one)
            if head.final:
                self._done.add(one)
            else:  # (a node's uploader that started again: not done any more)
                self._done.discard(one)
        for tag, nodes in value.tags.items():
            self._tag_nodes.setdefault(tag, set()).update(nodes)
        now = self.clock()
        self.points_read += len(value.points)
        for tag, step, point, covered in staged:
            key = (tag, step)
            self._tag_nodes.setdefault(tag, set()).update(covered)  # (its tags said so too, unless cut short)
            by = self._values.setdefault(key, {})
            if any(covered <= had for had in by):
                continue
            for had in [had for had in by if had & covered]:
                del by[had]
            by[covered] = point
            self._first.setdefault(key, now)

    @property
    def held(self) -> dict[str, int]:
        """Tag -> the last step the job run holds (every leader's), as this merge publishes it next."""
        return self.word.steps

    def _restarted(self, node: int, head: Head) -> None:
        """``node``'s restarts not taken in yet: the job run restarts from the lowest step (:meth:`due`)."""
        new = [step for number, step in head.restarts if number > self.word.seen.get(node, 0)]
        if new:
            self.word.seen[node] = max(number for number, _ in head.restarts)
            self._restart_from = min(self._restart_from, *new)

    @property
    def word_moved(self) -> bool:
        """Whether ``view/held`` must be published even with no point due: a node's restart taken in, an epoch
        started, or the last word's points written since it said them unwritten."""
        return (self.word.seen, self.word.restarts) != self._said or self.word.unwritten is not None

    def publication(self, by: int, points: list[tuple[str, int, Point]]) -> bytes:
        """``view/held`` as this round leaves it (``by``: this node), ``points`` (from :meth:`due`) not written yet."""
        self.word.every = self.every
        self.word.unwritten = min((step for _, step, _ in points), default=None)
        return self.word.to_json(by)

    def due(self, final: bool = False) -> list[tuple[str, int, Point]]:
        """The points to write now (all of them when ``final`` or every node is done), merged; from here on
        :attr:`held` counts them written (the caller publishes that, then writes them: :meth:`write`). A
        node's restart taken in this round restarts the job run first: its points from there, and those
        waiting here, are dropped, and every node makes its own anew (:mod:`.values`)."""
        if self._restart_from < math.inf:
            step, self._restart_from = int(self._restart_from), math.inf
            self.word.restart(step)
            self._start_at = step if self._start_at is None else min(self._start_at, step)
            for key in [key for key in self._values if key[1] >= step]:
                del self._values[key], self._first[key]
            logger.info("job run: restarted at step %d (a node's rank restarted there, or the last leader may not have "
                        "written its points from there); the job run's steps from there are made anew", step)
        final = final or len(self._done) >= self.nodes
        everyone = len(self._heard) >= self.nodes
        now = self.clock()
        last: dict[str, int] = {}
        for (tag, step), by_nodes in self._values.items():
            complete = everyone and frozenset().union(*by_nodes) >= self._tag_nodes[tag]
            if final or complete or now - self._first[(tag, step)] >= self.wait:
                last[tag] = max(step, last.get(tag, step))
        due = sorted((key for key in self._values if key[0] in last and key[1] <= last[key[0]]), key=lambda k: (k[1], k[0]))
        points = []
        for tag, step in due:
            by_nodes = self._values.pop((tag, step))
            del self._first[(tag, step)]
            stats = _merged(by_nodes)
            covered = frozenset().union(*by_nodes)
            absent = [r for node in sorted(self._tag_nodes[tag] - covered) for r in self._ranks_of.get(node, {})]
            if absent:
                stats = dataclasses.replace(stats, missing=tuple(sorted(stats.missing + tuple(absent))))
            points.append((tag, step, stats))
            self.held[tag] = step
        return points

    def write(self, points: list[tuple[str, int, Point]]) -> None:
        """Write ``points`` (from :meth:`due`) into the job run, and the picture ``status`` shows."""
        self._said = (dict(self.word.seen), list(self.word.restarts))
        if self._start_at is not None:
            self.run.restart(self._start_at)
            self._start_at = None
        if points:
            self.run.write(points, self.world, self.every)
            self._wrote = True
        self.show()

    def show(self) -> None:
        """The whole job's picture for ``status``, where it changed, as this node's merges heard it (:class:`Heard`:
        a node this merge did not hear keeps its ranks' last steps). Written whether or not a point is due (a
        leader that takes up after its predecessor wrote every point shows the job too), except by a merge that
        wrote nothing yet where an earlier one of this node showed the job (its counts, its min and max, stand: shown
        again where a round that did not lead showed this node's part meanwhile, unless another leader wrote later
        steps since: it would show steps the job is long past)."""
        self.heard.nodes |= self._heard
        self.heard.ranks_of.update(self._ranks_of)
        if self._earlier and not self._wrote:
            earlier = self.heard.picture
            if earlier is not None and not self.heard.showing and self._written_since() == {}:
                self._show(earlier)
            return
        picture = self.run.summary(self.heard.newest(), self.world, waiting=len(self._values), late=sum(self._late.values()),
                                   backlog=False, every=self.every, nodes=len(self.heard.nodes), restarts=self.word.epoch)
        self.heard.held = dict(self.held)
        if picture != self._shown or not self.heard.showing:
            self._show(picture)

    def _written_since(self) -> dict[str, int]:
        """The job run's steps written after the picture this node last showed (by another leader)."""
        return {tag: step for tag, step in self.held.items() if step > self.heard.held.get(tag, -1)}

    def _show(self, picture: dict) -> None:
        self.run.publish(picture)
        self._shown = self.heard.picture = picture
        self.heard.showing = True

    @property
    def nodes_heard(self) -> int:
        """The nodes this merge heard from."""
        return len(self._heard)

    @property
    def waiting(self) -> int:
        """Points some node sent that are not written yet."""
        return len(self._values)

    def thin(self, limit: int) -> None:
        """A node's value near ``limit`` (full), and a node making more points a round than a value holds:
        every node sends only the steps divisible by a larger k from now on (a power of two: the steps kept
        are among those kept before). A backlog alone (a node making fewer points than its value holds)
        drains by itself. The points waiting here that no node sends any more are dropped."""
        if self.largest <= limit * 0.9 or not self.points_read:
            return
        per_point = self.bytes_read / self.points_read
        factor = max(self._made.values(), default=0) * per_point * self.hops / (0.8 * limit)  # (a value carries
        # what its nodes made since the leader's word reached them: a round a hop)
        if factor <= 1:
            return
        self.every *= 2 ** math.ceil(math.log2(factor))
        logger.warning("job run: the nodes make more points than their values in the store may carry (%d bytes each); "
                       "from now on it holds the steps divisible by %d", limit, self.every)
        for key in [key for key in self._values if key[1] % self.every]:
            del self._values[key], self._first[key]

    def close(self) -> None:
        self.run.close()


def _merged(by_nodes: dict[frozenset[int], Point]) -> Point:
    return merge_all(list(by_nodes.values()))
