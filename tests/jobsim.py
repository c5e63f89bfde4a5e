"""A deterministic simulation of a multi-node job's job run: the real decision code of every node (its
``JobView``, ``Outbox``, ``ViewExchange``, and the leader's ``JobMerge``), the ranks' real event files, one
virtual clock, and an in-memory store with the interface of the real one (:class:`MemoryStore`). A seed
chooses the job (nodes, ranks), the schedule (which rank logs when, which node runs its round, who leads)
and the faults:

- a rank late (it logs nothing for a while, then catches up; less than the view's wait);
- a rank restarted from a checkpoint, with a restart point (its writer's ``START``, twice, as
  ``purge_step`` / ``resume`` write it) or without one (a plain script resumed);
- a node's value in the store malformed (``1e999``, not JSON) for a round;
- the store's answer to the leader's publication lost (applied, then the call fails);
- the store gone for a while (every call fails);
- the leader moving to another node, or two nodes believing they lead in one round;
- a node's uploader restarted, with its view's state file or without it.

At quiescence (every rank logged its last step, every node's last rounds run) the invariant is what a
user sees: the job run, read as TensorBoard's default reader reads a run (:func:`default_reader`: a tag
logged again at a step it already holds drops that tag's values from there; ``START`` ignored), equals at
every step the mean of what that reader shows for the ranks' runs, every step once. A failing seed prints
itself; :func:`run` with that seed replays it exactly (the wall-clock parts of the code, ids and nonces,
change no decision).

Simulated: the store (a dict), the clock, the nodes (objects in one process). Real: every decision and
the files TensorBoard reads. Not covered here: the member's and the leader's commits of the ranks' files
(the Hub), the lease's threads.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simstore import OneStore, undecodable

from hf_mpwriter.events.decoding import summaries
from hf_mpwriter.events.encoding import scalar_event, session_start_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.events.records import iter_records
from hf_mpwriter.state.statedir import state_dir
from hf_mpwriter.timing import STORE_CALL_S
from hf_mpwriter.uploader.coordination.protocol import Skipped
from hf_mpwriter.uploader.coordination.store import MAX_VALUE_BYTES, StoreAddress, StoreError
from hf_mpwriter.uploader.jobrun.exchange import ViewExchange
from hf_mpwriter.uploader.jobrun.view import STATE_FILE, JobView

WAIT = 30.0  # the job view's wait for a late rank (s of the virtual clock)
TAG = "loss"


class MemoryStore(OneStore):
    """The job's store as the job run's exchange uses it, in memory
    (:class:`~hf_mpwriter.uploader.coordination.store.CoordinationStore`: mypy checks this class against it):
    ``fail`` makes every call fail (the store gone); ``lose_next_answer`` applies the next ``compare_set`` and then
    fails it (its answer lost). What the exchange never asks of a store (other prefixes, other stores, how long it
    was silent) raises :class:`NotImplementedError`."""

    what = "the job run simulation's store"

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.fail = False
        self.lose_next_answer = False
        self.address, self.prefix = StoreAddress("jobsim", 1, "job"), ""
        self.deadline, self.preemption, self.moves = STORE_CALL_S, math.inf, 0
        self.unreadable: list[str] = []  # values written that no node can read (:func:`~simstore.undecodable`)

    def _check(self) -> None:
        if self.fail:
            raise StoreError("the simulated store is gone")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.values.get(key)

    def set(self, key: str, value: bytes, largest: int = MAX_VALUE_BYTES) -> None:
        self._check()
        self._write(key, value)

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        self._check()
        return [self.values.get(key, b"") for key in keys]

    def multi_set(self, values: Mapping[str, bytes]) -> None:
        self._check()
        for key, value in values.items():
            self._write(key, value)

    def append(self, key: str, value: bytes) -> None:
        self._check()
        self._write(key, self.values.get(key, b"") + value)

    def add(self, key: str, amount: int) -> int:
        self._check()
        value = int(self.values.get(key, b"0")) + amount
        self.values[key] = str(value).encode()
        return value

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bool:
        self._check()
        applied = self.values.get(key, b"") == expected
        if applied:
            self._write(key, desired)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise StoreError("the simulated store's answer was lost")
        return applied

    def _write(self, key: str, value: bytes) -> None:
        self.values[key] = bytes(value)
        if (why := undecodable(key, value)) is not None:
            self.unreadable.append(f"a value no node can read was written: {why}")

    def until(self, started: float, longest: float) -> float:
        return started + min(longest, max(0.0, (self.preemption - started) / 3))

    def hurry(self, deadline: float) -> None:
        self.preemption = deadline

    def gone(self) -> bool:
        return self.fail

    def answers(self) -> bool:
        return not self.fail



@dataclass
class Seat:
    """A node's place in the job, as the exchange reads it (:class:`~hf_mpwriter.uploader.coordination.protocol.Seat`)."""

    node: int
    store: MemoryStore
    nodes: int
    leading: bool = False
    malformed: Skipped = field(default_factory=Skipped)

    def members(self) -> list[int]:
        return list(range(self.nodes))

    def store_usable(self) -> bool:
        return True

    def store_failed(self, exc: StoreError) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rank:
    """One rank: its attempts' ``(first step, last step)``, the second one resumed with or without a restart
    point; it logs ``value(attempt, rank, step)``."""

    rank: int
    run_dir: Path
    writer: EventFileWriter
    attempts: list[tuple[int, int]]
    restart_point: bool
    late_from: int = -1  # a step before which it stalls ...
    late_ticks: int = 0  # ... this many ticks
    attempt: int = 0
    step: int = 0
    stalled: int = 0
    _files: int = 1  # the attempts that opened a file so far

    def __post_init__(self) -> None:
        self.step = self.attempts[0][0]

    @property
    def done(self) -> bool:
        return self.attempt >= len(self.attempts)

    def tick(self) -> None:
        """Log its next step (or start its next attempt, or stall)."""
        if self.done:
            return
        if self.step == self.late_from and self.stalled < self.late_ticks:
            self.stalled += 1
            return
        first, last = self.attempts[self.attempt]
        if self.step == first and self.attempt > 0 and self._files <= self.attempt:  # a new attempt: a new process's file
            self.writer.close()
            self.writer = EventFileWriter(self.run_dir, max_queue=1000, flush_secs=3600, filename_suffix=f".a{self.attempt}")
            self._files += 1
            if self.restart_point:
                for _ in range(2):  # what the writer's purge_step / resume=True writes
                    self.writer.add_serialized(session_start_event(first, 0.0))
        self.writer.add_serialized(scalar_event(TAG, value(self.attempt, self.rank, self.step), self.step, 1000.0 + self.step))
        self.writer.flush()
        self.step += 1
        if self.step > last:
            self.attempt += 1
            if not self.done:
                self.step = self.attempts[self.attempt][0]


def value(attempt: int, rank: int, step: int) -> float:
    return attempt * 1000.0 + rank * 10.0 + (step * 7 + rank * 3) % 11


@dataclass
class Node:
    logdir: Path
    seat: Seat
    view: JobView
    exchange: ViewExchange


def _node(logdir: Path, seat: Seat, clock: Clock, world: int, per_node: int) -> Node:
    view = JobView(logdir, world, wait=WAIT, clock=clock, node_ranks=per_node)
    return Node(logdir, seat, view, ViewExchange(view, seat, seat.nodes, period=10.0))


@dataclass
class Result:
    seed: int
    kinds: tuple[str, ...]
    faults: list[str]
    problems: list[str]

    def __str__(self) -> str:
        head = f"seed {self.seed} ({', '.join(self.faults) or 'no faults'})"
        if not self.problems:
            return head
        replay = f"scripts/sweep_jobsim.py --replay {self.seed} --kinds {' '.join(self.kinds)}"
        return f"{head}: {'; '.join(self.problems[:5])} (replay: {replay})"


#: The kinds of fault a seed may draw (:func:`run`'s ``kinds`` picks some).
KINDS = ("resume", "late", "malformed", "lost-answer", "store-gone", "leader", "uploader-restart")


def run(seed: int, tmp: Path, steps: int = 24, kinds: tuple[str, ...] = KINDS) -> Result:
    """One seed's job, from its start to quiescence, with faults of ``kinds``; the invariant's failures."""
    rng = random.Random(seed)
    root = tmp / f"seed-{seed}"
    shutil.rmtree(root, ignore_errors=True)
    nodes_n, per_node = rng.choice([2, 3]), rng.choice([1, 2])
    world = nodes_n * per_node
    clock, store, faults = Clock(), MemoryStore(), []
    nodes, ranks = [], []
    for k in range(nodes_n):
        logdir = root / f"node-{k}" / "logs"
        for r in range(k * per_node, (k + 1) * per_node):
            (logdir / f"rank-{r:03d}").mkdir(parents=True)
            writer = EventFileWriter(logdir / f"rank-{r:03d}", max_queue=1000, flush_secs=3600)
            attempts, restart_point = [(0, steps - 1)], True
            if rng.random() < 0.3 and "resume" in kinds:  # killed past a checkpoint, resumed from it
                killed, resumed = rng.randrange(steps // 2, steps), rng.randrange(1, steps // 2)
                attempts = [(0, killed), (resumed, steps - 1)]
                restart_point = rng.random() < 0.5
                faults.append(f"rank {r} resumed at {resumed} after {killed} ({'START' if restart_point else 'no START'})")
            late = rng.random() < 0.2 and "late" in kinds
            ranks.append(Rank(r, logdir / f"rank-{r:03d}", writer, attempts, restart_point, rng.randrange(steps) if late else -1,
                              rng.randrange(5, 20) if late else 0))
            if late:
                faults.append(f"rank {r} late by {ranks[-1].late_ticks} ticks at step {ranks[-1].late_from}")
        nodes.append(_node(logdir, Seat(k, store, nodes_n), clock, world, per_node))
    leader = rng.randrange(nodes_n)
    nodes[leader].seat.leading = True

    def round_of(node: Node, final: bool = False) -> None:
        node.view.update(final=final)
        node.exchange.round(final=final)

    ticks = 0
    while not all(rank.done for rank in ranks) and ticks < 10 * steps:
        ticks += 1
        clock.now += 1.0
        for rank in rng.sample(ranks, len(ranks)):
            if rng.random() < 0.9:
                rank.tick()
        store.fail = rng.random() < 0.05 and "store-gone" in kinds
        for node in rng.sample(nodes, len(nodes)):
            roll = rng.random()
            if roll < 0.03 and not store.fail and "malformed" in kinds:
                key = f"view/{node.seat.node}"
                store.values[key] = rng.choice([b"not json", b'{"ranks": {"0": 1e999}, "tags": [], "points": []}'])
                faults.append(f"tick {ticks}: {key} malformed")
                continue
            if roll < 0.06 and "lost-answer" in kinds:
                store.lose_next_answer = True
                faults.append(f"tick {ticks}: an answer lost")
            if roll > 0.98 and "uploader-restart" in kinds:
                lost = rng.random() < 0.5
                node.exchange.close()
                node.view.close()
                if lost:
                    (state_dir(node.logdir) / STATE_FILE).unlink(missing_ok=True)
                nodes[node.seat.node] = node = _node(node.logdir, node.seat, clock, world, per_node)
                kept = "state lost" if lost else "state kept"
                faults.append(f"tick {ticks}: node {node.seat.node}'s uploader restarted ({kept})")
            round_of(node)
        if rng.random() < 0.05 and "leader" in kinds:
            old, leader = leader, rng.randrange(nodes_n)
            both = rng.random() < 0.3
            for node in nodes:
                node.seat.leading = node.seat.node == leader or (both and node.seat.node == old)
            faults.append(f"tick {ticks}: node {leader} leads" + (f" (node {old} too, for a round)" if both else ""))
        elif any(node.seat.leading and node.seat.node != leader for node in nodes):
            for node in nodes:
                node.seat.leading = node.seat.node == leader
    store.fail = store.lose_next_answer = False
    for _ in range(4):  # the job's end: every node's last rounds, past the wait
        clock.now += WAIT + 1
        for node in nodes:
            round_of(node, final=True)
    for node in nodes:
        node.exchange.close()
        node.view.close()
    for rank in ranks:
        rank.writer.close()
    return Result(seed, kinds, faults, store.unreadable + _problems(root, nodes_n, world, steps))


def default_reader(run_dir: Path, tag: str = TAG) -> dict[int, float]:
    """``step -> value`` of ``tag`` in a run as TensorBoard's default reader (its Rust data server) shows it:
    its files in name order; a value at a step at or below the tag's last one drops the tag's values from
    that step on; ``START`` ignored (the rule ``tests/tb_readers.py`` checks against the real server)."""
    shown: dict[int, float] = {}
    for path in sorted(p for p in run_dir.glob("*tfevents*") if p.is_file()):
        with open(path, "rb") as handle:
            for _, record in iter_records(handle):
                for scalar in summaries(record)[0]:
                    if scalar.tag != tag:
                        continue
                    if shown and scalar.step <= max(shown):
                        shown = {s: v for s, v in shown.items() if s < scalar.step}
                    shown[scalar.step] = scalar.value
    return shown


def _problems(root: Path, nodes: int, world: int, steps: int) -> list[str]:
    job = root / "job-run"
    job.mkdir()
    for k in range(nodes):  # the leaders' files, as the target holds them (every node's job/ folder)
        for path in sorted((root / f"node-{k}" / "logs" / "job").glob("*tfevents*")):
            shutil.copy(path, job / path.name)
    ranks = {r: default_reader(root / f"node-{r // (world // nodes)}" / "logs" / f"rank-{r:03d}") for r in range(world)}
    got = default_reader(job)
    problems = []
    for step in range(steps):
        values = [shown[step] for shown in ranks.values() if step in shown]
        if len(values) != world:
            problems.append(f"step {step}: {len(values)} of {world} ranks show it")
            continue
        want = sum(values) / world
        if step not in got:
            problems.append(f"step {step}: not in the job run")
        elif abs(got[step] - want) > 1e-3 * max(1.0, abs(want)):
            problems.append(f"step {step}: job run {got[step]:g}, ranks' mean {want:g}")
    extra = sorted(set(got) - set(range(steps)))
    if extra:
        problems.append(f"steps {extra} in the job run that no rank shows")
    return problems


def sweep(seeds: range, tmp: Path, kinds: tuple[str, ...] = KINDS) -> list[Result]:
    """Every seed's result that broke the invariant."""
    failed = []
    for seed in seeds:
        result = run(seed, tmp, kinds=kinds)
        if result.problems:
            failed.append(result)
        shutil.rmtree(tmp / f"seed-{seed}", ignore_errors=True)
    return failed


if __name__ == "__main__":  # a quick look: python tests/jobsim.py SEED
    import sys
    import tempfile

    print(json.dumps(str(run(int(sys.argv[1]), Path(tempfile.mkdtemp())))))
