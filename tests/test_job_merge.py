"""The job run of a multi-node job with a store: the nodes' points (:class:`Stats`) merge into exactly the
statistics every rank's values give at once, and the leader's rules for waiting, missing nodes, late
points and the intake budget hold. (The real job, through torchrun's store and the test Hub:
``test_multinode.py``.)"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from helpers import accumulator, plugin_accumulator, read_run_events, scalar_points, served_store, wait_for
from test_job_histogram import _log as _log_histogram
from test_job_view import _assert_equal, _assert_histogram, _Clock, _job_points, _log, _rank_writer, _recomputed

from hf_mpwriter.events.encoding import session_start_event
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.timing import STORE_CALL_S
from hf_mpwriter.uploader.coordination.member import JobTarget, store_prefix
from hf_mpwriter.uploader.coordination.protocol import (
    MAX_OFFER_WAIT_S,
    WITHDRAWN,
    Malformed,
    Offer,
    Skipped,
)
from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress
from hf_mpwriter.uploader.jobrun import exchange as job_merge
from hf_mpwriter.uploader.jobrun.bounds import ViewBounds
from hf_mpwriter.uploader.jobrun.exchange import ViewExchange
from hf_mpwriter.uploader.jobrun.merge import JobMerge
from hf_mpwriter.uploader.jobrun.stats import NO_RANK, Stats
from hf_mpwriter.uploader.jobrun.values import RESTARTS_KEPT, Held
from hf_mpwriter.uploader.jobrun.view import JobView


def _split(by_rank: dict[int, float], parts: int, rng: random.Random) -> list[dict[int, float]]:
    ranks = sorted(by_rank)
    rng.shuffle(ranks)
    cuts = sorted(rng.sample(range(1, len(ranks)), parts - 1))
    return [{r: by_rank[r] for r in ranks[a:b]} for a, b in zip([0, *cuts], [*cuts, len(ranks)])]


@pytest.mark.parametrize("values", [
    "random", "ties", "nan", "all_nan_part", "infinities", "huge",
])
def test_merged_statistics_equal_those_of_every_value_at_once(values):
    rng = random.Random(values)
    for _ in range(200):
        n = rng.randint(2, 40)
        by_rank = {r: rng.gauss(5.0, 3.0) * 10 ** rng.randint(-3, 3) for r in range(n)}
        if values == "ties":
            by_rank = {r: float(rng.randint(0, 2)) for r in range(n)}
        elif values == "nan":
            by_rank[rng.randrange(n)] = math.nan
        elif values == "all_nan_part":
            by_rank = {r: math.nan if r < n // 2 else 1.0 + r for r in range(n)}
        elif values == "infinities":
            by_rank[0], by_rank[n - 1] = math.inf, -math.inf if rng.random() < 0.5 else math.inf
        elif values == "huge":
            by_rank = {r: rng.choice([1e200, -1e200, 3e38]) for r in range(n)}
        parts = _split(by_rank, rng.randint(2, min(n, 8)), rng)
        merged = None
        for part in parts:
            stats = Stats.of(part, wall=float(len(part)))
            merged = stats if merged is None else merged.merge(stats)
        whole = Stats.of(by_rank, wall=0.0)
        assert (merged.n, merged.low, merged.low_rank, merged.high, merged.high_rank, merged.nan) == \
            (whole.n, whole.low, whole.low_rank, whole.high, whole.high_rank, whole.nan) or \
            (math.isnan(whole.low) and merged.low_rank == whole.low_rank == NO_RANK)
        for name in ("mean", "std"):
            got, want = getattr(merged, name), getattr(whole, name)
            if math.isfinite(want):
                scale = max(abs(v) for v in by_rank.values() if math.isfinite(v))  # a float's rounding of the values
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12 * scale), (name, by_rank, parts)
            else:
                assert (math.isnan(got) and math.isnan(want)) or got == want, (name, got, want, by_rank)
        sent = json.dumps(merged.to_list())  # as a node sends it (NaN and infinities too)
        assert json.dumps(Stats.from_list(json.loads(sent)).to_list()) == sent


@pytest.fixture
def job_nodes(tmp_path):
    """``make(nodes, per_node, clock)``: each node's view (as a node of a job with a store) and its ranks'
    event-file writers; all closed after the test."""
    made: list[tuple[list[JobView], list]] = []

    def make(nodes: int, per_node: int, clock: _Clock) -> tuple[list[JobView], list]:
        made.append(_node_views(tmp_path, clock, nodes, per_node))
        return made[-1]

    yield make
    for views, writers in made:
        for closing in [*views, *writers]:
            closing.close()
        for writer in writers:
            writer.close()


@pytest.fixture(scope="module")
def _store_port():
    pytest.importorskip("torch.distributed")
    with served_store() as (_, port):
        yield port


_JOB_IDS = itertools.count(1)


@pytest.fixture
def store(_store_port):
    """The job's store: a real TCPStore served by a process of its own, shared by this file's tests, each under a job
    id of its own (its keys apart: every key is under the job's prefix). Served in the test's process, a second
    node's first call to it hung 5 s after one fixed order of earlier tests (their stores served there too)."""
    return types.SimpleNamespace(port=_store_port, job=f"job-{next(_JOB_IDS)}")


def _node_views(tmp_path: Path, clock: _Clock, nodes: int, per_node: int) -> tuple[list[JobView], list]:
    views, writers = [], []
    for node in range(nodes):
        logdir = tmp_path / f"node-{node}" / "logs"
        writers += [_rank_writer(logdir, node * per_node + r) for r in range(per_node)]
        views.append(JobView(logdir, nodes * per_node, wait=30.0, clock=clock, node_ranks=per_node))
    return views, writers


def _round(views: list[JobView], merge: JobMerge, final: bool = False, sending: set[int] | None = None,
           limit: int | None = None) -> int:
    """What :class:`job_merge.ViewExchange` does, without the store: each node takes up what the leader
    held, updates and sends (``limit``: the most a node's value holds; by default its share, as a job's);
    the leader merges and writes."""
    limit = job_merge.node_limit(len(views)) if limit is None else limit
    held = Held.parse(merge.publication(by=0, points=[]))
    for node, view in enumerate(views):
        view.acknowledged(held, held.seen.get(node, 0))
        view.update(final=final)
    merge.start_round()
    for node, view in enumerate(views):
        if sending is None or node in sending:
            merge.take(node, view.message(limit, final))
            view.outbox.made = 0
    points = merge.due()
    merge.thin(limit)
    merge.write(points)
    return len(points)


def test_three_nodes_points_merge_into_the_job_run_a_dead_node_is_named_and_late_points_are_not_written(job_nodes):
    clock = _Clock()
    views, writers = job_nodes(3, 2, clock)
    merge = JobMerge(views[0].logdir, nodes=3, world=6, wait=30.0, held=Held(), clock=clock)
    rng = random.Random(7)
    values: dict[int, dict[int, float]] = defaultdict(dict)
    for step in range(10):
        for rank, writer in enumerate(writers):
            values[step][rank] = round(rng.uniform(-5, 5), 3)
            _log(writer, step, values[step][rank])
    assert _round(views, merge) == 10  # every node sent every step: all complete, written at once
    job = _job_points(views[0].logdir, "loss")
    for step in range(10):
        want = Stats.of(values[step])
        got = job[step]
        assert got["mean"] == pytest.approx(want.mean, rel=1e-6) and got["std"] == pytest.approx(want.std, rel=1e-6)
        assert (got["min"], got["max"]) == (pytest.approx(want.low), pytest.approx(want.high))
        assert (got["min_rank"], got["max_rank"], got["ranks"], got["missing"]) == (want.low_rank, want.high_rank, 6, 0)
    _round(views, merge)  # the nodes take up what the leader held: their outboxes empty
    assert [len(view.outbox) for view in views] == [0, 0, 0]
    # Node 2 goes silent (dead, or cut off from the store): its steps wait, then are written without it, named.
    for step in range(10, 13):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank))
    assert _round(views, merge, sending={0, 1}) == 0 and merge.waiting == 3
    clock.now = 59.9
    assert _round(views, merge, sending={0, 1}) == 0
    clock.now = 60.0
    assert _round(views, merge, sending={0, 1}) == 3
    job = _job_points(views[0].logdir, "loss")
    assert [(job[s]["ranks"], job[s]["missing"], job[s]["mean"]) for s in range(10, 13)] == [(4, 2, 1.5)] * 3
    named = plugin_accumulator(views[0].logdir / "job").Tensors("~job/loss/missing_ranks/text_summary")
    assert [(e.step, e.tensor_proto.string_val[0].decode()) for e in named] == [(s, "missing: rank 4, 5") for s in range(10, 13)]
    # Its points come after all: late, not written (the run holds those steps), and it takes up the leader's held.
    assert _round(views, merge) == 0 and _job_points(views[0].logdir, "loss")[12]["ranks"] == 4
    assert len(views[2].outbox) == 0
    # The job ends: each node's last points, then everything the leader has, complete or not.
    _log(writers[0], 13, 1.0)
    assert _round(views, merge, final=True) == 1 and _job_points(views[0].logdir, "loss")[13]["ranks"] == 1
    assert all(json.loads(view.message(1 << 18, True))["final"] for view in views)
    merge.close()


def test_a_node_whose_ranks_logged_nothing_yet_holds_the_points_back_until_they_do(job_nodes):
    """A node's uploader may send before its ranks' first records (its round at its start): the other nodes'
    points are not complete without it (CI's two-node job once wrote its first steps with half the ranks)."""
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    merge = JobMerge(views[0].logdir, nodes=2, world=4, wait=30.0, held=Held(), clock=clock)
    for step in range(3):
        for writer in writers[:2]:  # node 0's ranks only
            _log(writer, step, float(step))
    assert _round(views, merge) == 0 and merge.waiting == 3  # the path: node 1 sent, with no ranks yet
    assert json.loads(views[1].message(1 << 18, False))["ranks"] == {}
    for step in range(3):
        for writer in writers[2:]:
            _log(writer, step, float(step))
    assert _round(views, merge) == 3
    assert {point["ranks"] for point in _job_points(views[0].logdir, "loss").values()} == {4.0}
    merge.close()


def test_past_the_intake_budget_every_node_sends_every_kth_step_and_the_run_says_k(job_nodes):
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    merge = JobMerge(views[0].logdir, nodes=2, world=4, wait=30.0, held=Held(), clock=clock)
    step = 0
    ks = []
    for _ in range(8):  # each round: 20 steps of 3 tags from each node, far more than 2,500 bytes
        for _ in range(20):
            for rank, writer in enumerate(writers):
                for tag in ("loss", "lr", "time"):
                    _log(writer, step, float(rank + step), tag=tag)
            step += 1
        _round(views, merge, limit=2500)  # (a node's value: as with a thousand nodes' shares; k=4 leaves it room)
        ks.append(merge.every)
    # k rose to what the points made a round need, in one step (a power of two), and stayed there: the
    # backlog of the rounds before it (values still full) does not raise it further.
    assert ks[0] >= 4 and ks == [ks[0]] * 8, ks
    _round(views, merge, limit=2500)  # (nothing new: the nodes take up what the leader wrote)
    assert [len(view.outbox) for view in views] == [0, 0]  # what they made fitted: no backlog left behind
    job = _job_points(views[0].logdir, "loss")
    assert all(s % merge.every == 0 for s in job if s >= 20), sorted(job)  # after the first round: every k-th
    assert all(job[s]["ranks"] == 4 and job[s]["mean"] == pytest.approx(1.5 + s) for s in job)  # each point exact
    every = [e.value for e in accumulator(views[0].logdir / "job").Scalars("~job/every_kth_step")]
    assert every and every[-1] == merge.every
    merge.close()


# -- through a real store, as the uploaders of a job exchange them -------------------------------------------
def _job_node(store: types.SimpleNamespace, node: int, nodes: int = 2, deadline: float = STORE_CALL_S) -> JobTarget:
    """Node ``node`` of a job, as its uploader holds it (the store real; nothing here calls the Hub)."""
    address = StoreAddress("127.0.0.1", store.port, store.job)
    inner = HubTarget("tester/job", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:9", shared_branch=True)
    leader = HubTarget("tester/job", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:9")
    store = JobStore(address, store_prefix(address, inner.key), deadline)
    target = JobTarget(inner, leader, store, node, nodes, wait=10.0, spacing=0.5)
    assert target._announce()  # its keys in the store, as at its start (its leader thread is not started: see below)
    return target


def _exchanges(store: types.SimpleNamespace, views: list[JobView]) -> tuple[list[JobTarget], list[ViewExchange]]:
    jobs = [_job_node(store, k) for k in range(len(views))]
    return jobs, [ViewExchange(view, job, len(views)) for view, job in zip(views, jobs)]


def test_a_new_leader_takes_up_where_the_last_stopped_and_no_step_is_written_twice(tmp_path, job_nodes, store):
    """Two nodes' exchanges through a real TCPStore. Node 0 leads, then node 1 (the lease moved), then both
    believe they lead (a lease that moved while its old holder was in a round): the job run's files, read
    together as TensorBoard reads the run at the target, hold every step once, in order, with all 4 ranks."""
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    jobs, exchanges = _exchanges(store, views)

    def log(steps: range) -> None:
        for step in steps:
            for rank, writer in enumerate(writers):
                _log(writer, step, float(rank * 10 + step % 7))

    def rounds(leading: tuple[bool, bool]) -> list[int]:
        for job, leads in zip(jobs, leading):
            job.leader.leading = leads
        written = []
        for k in (0, 1, 0, 1):  # each node twice: the first sends, the second sees what the leader wrote
            views[k].update()
            written.append(exchanges[k].round(final=False))
        return written

    log(range(0, 10))
    assert sum(rounds((True, False))) == 10 and exchanges[1].merge is None
    log(range(10, 20))
    assert sum(rounds((False, True))) == 10 and exchanges[0].merge is None  # node 0 stopped merging
    log(range(20, 30))
    both = rounds((True, True))
    assert sum(both) == 10, both  # one of them wrote them; the other took up after it and had nothing due
    assert [len(view.outbox) for view in views] == [0, 0]
    run = tmp_path / "target-job"
    run.mkdir()
    for k in range(2):
        for path in (views[k].logdir / "job").glob("*tfevents*"):
            (run / path.name).write_bytes(path.read_bytes())
    for exchange in exchanges:
        exchange.close()
    files = sorted(run.glob("*tfevents*"))
    assert len(files) >= 2  # the scenario: two leaders wrote
    events = read_run_events(run)
    steps = [step for step, _ in scalar_points(events, "loss")]
    assert steps == list(range(30)), steps
    assert {value for _, value in scalar_points(events, "~job/loss/ranks")} == {4.0}


def test_a_node_that_is_not_the_leaders_says_its_lost_steps_in_its_own_file_of_the_job_run(tmp_path, job_nodes, store):
    """A job of two nodes resumed on new machines: node 1's ranks lost steps 28-39. Node 1 does not write the job
    run's points (node 0 leads), but its uploader hands its finds to its job run all the same: they land in its own
    file of the job run, and the job run at the target (both nodes' files) shows each rank's lost steps at the
    restart step, and every point once, in TensorBoard's default reader."""
    from tb_readers import default_reader_scalars, default_reader_texts

    from hf_mpwriter.config import UploadConfig
    from hf_mpwriter.state.lost import Lost
    from hf_mpwriter.uploader.jobrun.driver import JobRunDriver

    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    jobs, exchanges = _exchanges(store, views)
    jobs[0].leader.leading, jobs[1].leader.leading = True, False
    for step in range(40, 50):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank * 10 + step))
    for _ in range(2):
        for k in (0, 1):
            views[k].update()
            exchanges[k].round(final=False)
    lost = [Lost("rank-002", 27, 40), Lost("rank-003", 27, 40)]
    driver = JobRunDriver(views[1].logdir, UploadConfig.for_local(tmp_path / "mirror", prefix="logs", logdir=views[1].logdir),
                          lambda: None, lambda what, fn, *a: fn(*a), signalled=lambda: False)
    driver.view, driver.exchange = views[1], exchanges[1]  # (node 1's, as its start makes them in a job with a store)
    driver.say_lost(lost)
    driver.say_lost(lost)  # (each cycle hands them in again)
    for k in (0, 1):
        views[k].update()
        exchanges[k].round(final=False)
        exchanges[k].close()
        views[k].close()
    run = tmp_path / "target" / "job"
    run.mkdir(parents=True)
    for k in range(2):
        for path in (views[k].logdir / "job").glob("*tfevents*"):
            (run / path.name).write_bytes(path.read_bytes())
    texts = default_reader_texts(run.parent)["job"]
    said = {tag: [step for step, _ in values] for tag, values in texts.items() if "lost_steps" in tag}
    assert said == {"~job/lost_steps/rank-002/text_summary": [40], "~job/lost_steps/rank-003/text_summary": [40]}, texts
    assert [step for step, _ in default_reader_scalars(run.parent)["job"]["loss"]] == list(range(40, 50))


def test_a_node_ending_after_the_leaders_node_sends_its_last_points_until_it_leads_and_writes_them(
        tmp_path, job_nodes, store):
    """Node 0 leads and ends first: its last round cannot write the steps node 1 has not sent yet. Node 1
    ends while node 0 still holds the lease, then the lease moves to it (node 0's uploader gone): node 1
    sends its last points again until it leads, and writes them. The job run at the target (both leaders'
    files) holds every step once, with all 4 ranks."""
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    jobs, exchanges = _exchanges(store, views)
    jobs[0].leader.leading = True
    for step in range(7):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank * 10 + step))
        if step == 4:
            for k in (1, 0):
                views[k].update()
                exchanges[k].round(final=False)
    assert _job_points(views[0].logdir, "loss").keys() == set(range(5))
    views[0].update(final=True)
    assert exchanges[0].last_round(wait=0.0) == 0 and views[0].outbox  # node 1's steps 5-6 not sent: not due
    started = time.monotonic()  # a termination signal ends the wait at once (the commit comes first)
    assert exchanges[0].last_round(wait=20.0, stop=lambda: True, pause=5.0) == 0
    assert time.monotonic() - started < 5.0
    views[1].update(final=True)
    written: list[int] = []
    ending = threading.Thread(target=lambda: written.append(exchanges[1].last_round(wait=20.0, pause=0.1)))
    ending.start()
    try:
        wait_for(lambda: json.loads(jobs[0].store.get("view/1") or b"{}").get("final"), 10, "node 1's last value")
        assert ending.is_alive() and exchanges[1].merge is None  # the path: node 0 still leads, and 1 waits
        jobs[0].leader.leading, jobs[1].leader.leading = False, True  # node 0's uploader gone: the lease moved
    finally:
        ending.join(30)
    assert written == [2]  # steps 5 and 6, by node 1 as the leader
    run = tmp_path / "target-job"
    run.mkdir()
    for exchange in exchanges:
        exchange.close()
    for view in views:
        for path in (view.logdir / "job").glob("*tfevents*"):
            (run / path.name).write_bytes(path.read_bytes())
    events = read_run_events(run)
    assert [step for step, _ in scalar_points(events, "loss")] == list(range(7))
    assert {value for _, value in scalar_points(events, "~job/loss/ranks")} == {4.0}


def test_a_nodes_value_stays_within_its_limit_oldest_steps_first(tmp_path):
    """Many tags and long names: the value the node sets never passes the limit (the store refuses more),
    and what it holds is the oldest steps; the rest follows at the next rounds."""
    view = JobView(tmp_path / "logs", 8, wait=30.0, node_ranks=8)
    for step in range(40):
        for i in range(60):
            tag = f"a/rather/long/tag/name/{i:03d}"
            view._reporters.setdefault(tag, set()).update(range(8))
            view.outbox.points[(tag, step)] = Stats.of({r: r * 0.1 + step for r in range(8)}, (3,), 1e9)
    view.newest = {r: 39 for r in range(8)}
    for limit in (4096, 16384, 65536):
        value = view.message(limit, final=True)
        message = json.loads(value)
        assert len(value) <= limit and 0 < len(message["points"]) < len(view.outbox), (limit, len(value))
        assert not message["final"]  # not everything fits: the node is not done
        steps = [step for _, step, _ in message["points"]]
        assert steps == sorted(steps) and steps[0] == 0


def test_a_rank_killed_on_one_node_is_counted_missing_and_named_in_the_merged_points(job_nodes):
    """Rank 3 (node 1) is killed after step 4: from step 5 each point waits its node's wait, then counts 5 of 6
    and names rank 3; the points before are whole, and nothing else changes."""
    clock = _Clock()
    views, writers = job_nodes(3, 2, clock)
    views[1].live = {2}  # rank 3's writer is gone, as node 1's uploader sees it
    merge = JobMerge(views[0].logdir, nodes=3, world=6, wait=30.0, held=Held(), clock=clock)
    for step in range(10):
        for rank, writer in enumerate(writers):
            if rank != 3 or step < 5:
                _log(writer, step, float(rank + step))
    assert _round(views, merge) == 5  # steps 0-4: every rank; node 1's later steps wait for rank 3
    clock.now = 29.9
    assert _round(views, merge) == 0
    clock.now = 30.0
    assert _round(views, merge) == 5  # node 1's wait passed: it sent them without rank 3, complete for the leader
    job = _job_points(views[0].logdir, "loss")
    assert [(job[s]["ranks"], job[s]["missing"]) for s in range(10)] == [(6, 0)] * 5 + [(5, 1)] * 5
    assert all(job[s]["mean"] == pytest.approx((sum(range(6)) - (3 if s >= 5 else 0)) / (6 if s < 5 else 5) + s)
               for s in range(10))
    named = plugin_accumulator(views[0].logdir / "job").Tensors("~job/loss/missing_ranks/text_summary")
    assert [(e.step, e.tensor_proto.string_val[0].decode()) for e in named] == [(s, "missing: rank 3") for s in range(5, 10)]
    merge.close()


def _two_nodes_five_steps(job_nodes, store) -> tuple[list[JobView], list[JobTarget], list[ViewExchange]]:
    """Two nodes of two ranks each, their exchanges through the real store, and steps 0-4 logged."""
    views, writers = job_nodes(2, 2, _Clock())
    jobs, exchanges = _exchanges(store, views)
    for step in range(5):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank + step))
    return views, jobs, exchanges


def test_two_leaders_in_one_round_write_its_steps_once(tmp_path, job_nodes, store):
    """Both nodes believe they lead and read the same view/held; node 0 does a whole round between node 1's
    read and its publication, with the same points: the publications differ (each names its writer), so
    node 1's compare-and-set fails and it writes nothing (the same bytes would have let both write)."""
    views, jobs, exchanges = _two_nodes_five_steps(job_nodes, store)
    for view, exchange in zip(views, exchanges):
        view.update()
        assert exchange.round(final=False) == 0  # neither leads: both values in the store
    jobs[0].leader.leading = jobs[1].leader.leading = True
    read = jobs[1].store.multi_get
    written = []

    def node_0_meanwhile(keys):
        jobs[1].store.multi_get = read
        written.append(exchanges[0].round(final=False))
        return read(keys)

    jobs[1].store.multi_get = node_0_meanwhile
    written.append(exchanges[1].round(final=False))
    assert written == [5, 0], written  # the scenario: node 0 wrote in the middle of node 1's round
    for exchange in exchanges:
        exchange.close()
    run = tmp_path / "target-job"
    run.mkdir()
    for view in views:
        for path in (view.logdir / "job").glob("*tfevents*"):
            (run / path.name).write_bytes(path.read_bytes())
    assert [step for step, _ in scalar_points(read_run_events(run), "loss")] == list(range(5))


def test_a_node_of_one_rank_and_a_node_of_many_tags_still_send_their_points(tmp_path, job_nodes):
    """One rank per node (one GPU each) is a node's whole reduction; and a node whose tag names alone fill its
    value sends points without them (the leader learns its tags from them)."""
    clock = _Clock()
    views, writers = job_nodes(2, 1, clock)
    for step in range(3):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank))
    assert views[0].update() == 3 and len(views[0].outbox) == 3
    many = JobView(tmp_path / "many", 8, wait=30.0, node_ranks=8)
    for i in range(1000):
        tag = f"a/long/tag/name/number/{i:04d}"
        many._reporters[tag] = set(range(8))
        many.outbox.points[(tag, 0)] = Stats.of({r: float(r) for r in range(8)})
    value = many.message(16384, final=False)
    message = json.loads(value)
    assert len(value) <= 16384 and message["tags"] is None and message["points"]
    many.close()


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_publication_whose_answer_is_lost_neither_loses_nor_repeats_its_points(applied, job_nodes, store):
    """The leader's compare-and-set of view/held raises (the store's answer lost), after it applied or before:
    at the next round the points are written once, from the attempt it kept or from the nodes again."""
    from hf_mpwriter.uploader.coordination.store import StoreError

    views, jobs, exchanges = _two_nodes_five_steps(job_nodes, store)
    views[1].update()
    exchanges[1].round(final=False)
    jobs[0].leader.leading = True
    fence = jobs[0].store.compare_set

    def answer_lost(key, expected, desired):
        jobs[0].store.compare_set = fence
        if applied:
            fence(key, expected, desired)
        raise StoreError("the store's answer was lost")

    jobs[0].store.compare_set = answer_lost
    views[0].update()
    assert exchanges[0].round(final=False) == 0 and jobs[0].store.compare_set is fence  # the scenario
    jobs[0]._store_rests_until = 0.0  # (its rest after a store failure, over)
    assert exchanges[0].round(final=False) == 5
    assert exchanges[0].round(final=False) == 0
    exchanges[0].close()
    assert [step for step, _ in scalar_points(read_run_events(views[0].logdir / "job"), "loss")] == list(range(5))


def test_points_made_before_a_node_learnt_the_new_k_do_not_raise_it_again(tmp_path):
    """A node that made a round's points at the old k, then learns the new one, says it made none: the leader
    does not take the old rate for the new k's (it overshot to k=64 where 8 was enough)."""
    view = JobView(tmp_path / "logs", 2, wait=30.0, node_ranks=2)
    view.outbox.made = 1500
    assert view.acknowledged(Held(every=8)) is False and view.outbox.every == 8 and view.outbox.made == 0
    assert json.loads(view.message(1 << 16, final=False))["made"] == 0
    view.close()


def test_a_store_that_never_answers_costs_one_bounded_call_and_keeps_the_nodes_points(job_nodes):
    """The job's store accepts the connection and never answers (its host frozen): the exchange's round
    returns after the store call's own deadline, the store rests (the next rounds do not ask it), and the
    node's points stay for a store that answers again."""
    import socket
    import threading

    from hf_mpwriter.timing import STORE_CALL_S

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.extend(listener.accept() for _ in iter(int, 1)), daemon=True).start()
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    for step in range(3):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank))
    address = StoreAddress("127.0.0.1", listener.getsockname()[1], "job-1")
    inner = HubTarget("tester/job", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:9", shared_branch=True)
    job = JobTarget(inner, inner, JobStore(address, store_prefix(address, inner.key)), 0, 2, wait=10.0, spacing=0.5)
    exchange = ViewExchange(views[0], job, 2)
    views[0].update()
    started = time.monotonic()
    assert exchange.round(final=False) == 0
    took = time.monotonic() - started
    assert accepted, "the store never saw the connection"  # the scenario: it connected, and got no answer
    assert took < 3 * STORE_CALL_S, took
    assert not job.store_usable() and exchange.round(final=False) == 0  # resting: not asked again
    assert len(views[0].outbox) == 3
    # The abandoned call's thread ends once the store goes (no thread of it outlives the test).
    listener.close()
    for connection in accepted:
        connection[0].close()
    for thread in [t for t in threading.enumerate() if t.name == "hf_mpwriter-store"]:
        thread.join(30)
        assert not thread.is_alive()


def _in_child(scenario: str, tmp_path: Path) -> None:
    """Run a tree scenario in a process of its own: its nodes, their stores and the groups' stores all live
    in one process there, and torch's store clients made and dropped in a process that serves stores slow
    its later connections (a whole connect timeout, now and then): no other test shares that process."""
    pytest.importorskip("torch.distributed")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_job_merge as t; "
            f"t._with_store(t.{scenario}, __import__('pathlib').Path({str(tmp_path)!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def _with_store(scenario, tmp_path: Path) -> None:
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    scenario(tmp_path, types.SimpleNamespace(port=server.port, job="job-1"))
    sys.stdout.flush()
    os._exit(0)  # passed: the interpreter's teardown of torch's stores is not the scenario's (it aborted once)


def _tree(tmp_path: Path, store, clock: _Clock, nodes: int, size: int):
    views, writers = _node_views(tmp_path, clock, nodes, 2)
    # (a longer deadline than a node's: every node's store clients, and the groups' stores, share this one
    # process, and each connection here now and then waits out a try: :func:`job_store._connect`)
    jobs = [_job_node(store, k, nodes, deadline=3 * STORE_CALL_S) for k in range(nodes)]
    exchanges = [ViewExchange(view, job, nodes, size=size) for view, job in zip(views, jobs)]
    jobs[0].leader.leading = True
    ranks = tmp_path / "every-rank"  # every rank's run in one folder, as the target holds them
    ranks.mkdir()
    for view in views:
        for run in view.logdir.glob("rank-*"):
            (ranks / run.name).symlink_to(run)
    return views, writers, exchanges, ranks


def _values(exchange: ViewExchange, keys: list[str]) -> dict[str, dict]:
    return {key: json.loads(exchange.job.store.get(key) or b"{}") for key in keys}


def test_in_a_tree_the_groups_hosts_carry_the_nodes_points_and_the_job_run_is_exact(tmp_path):
    _in_child("_tree_exact", tmp_path)


def _tree_exact(tmp_path: Path, store) -> None:
    """6 nodes x 2 ranks in groups of 2, through the real job store and the stores the groups' hosts serve:
    the job's store holds the groups' values (each covering its nodes) and no node's own, and the job run
    equals the statistics of all 12 ranks' values."""
    clock = _Clock()
    views, writers, exchanges, ranks = _tree(tmp_path, store, clock, 6, 2)
    rng = random.Random(3)
    try:
        for r in range(5):  # (a point takes up to two rounds more than in a flat merge: node -> host -> leader)
            for step in range(r * 5, r * 5 + 5) if r < 3 else ():
                for rank, writer in enumerate(writers):
                    _log(writer, step, round(rng.uniform(-5, 5), 3))
                    _log_histogram(writer, "w", _weights(rank, step), step)
            for view, exchange in zip(views, exchanges):
                view.update()
                exchange.round(final=False)
        assert [e.group.hosting for e in exchanges] == [True, False] * 3  # the first of each group claimed it
        stored = _values(exchanges[0], [f"view/g{g}" for g in range(3)] + [f"view/{n}" for n in range(6)])
        for g in range(3):  # the path: each group's value speaks for its two nodes, and no node's own is set
            assert sorted(stored[f"view/g{g}"]["nodes"]) == [str(2 * g), str(2 * g + 1)]
        assert all(stored[f"view/{n}"] == {} for n in range(6))
        job = _job_points(views[0].logdir, "loss")
        assert sorted(job) == list(range(15))
        _assert_equal(job, _recomputed(ranks, "loss"), 12)
        # A round's order (next_in): the nodes at its start, the hosts a sixth of it later, the leader a sixth
        # after them. In that order a point reaches the job run in the round its node sent it.
        start = 1_000 * exchanges[0].period
        assert [e.next_in(start) / e.period for e in exchanges] == pytest.approx([2 / 6, 0, 1 / 6, 0, 1 / 6, 0])
        for writer in writers:
            _log(writer, 15, round(rng.uniform(-5, 5), 3))
        for view, exchange in sorted(zip(views, exchanges), key=lambda pair: pair[1].next_in(start)):
            view.update()
            exchange.round(final=False)
        assert 15 in _job_points(views[0].logdir, "loss")
        for step in range(16, 18):  # the job's last steps: each node says it is done
            for writer in writers:
                _log(writer, step, round(rng.uniform(-5, 5), 3))
        for final in (True, True):
            for view, exchange in zip(views, exchanges):
                view.update(final=final)
                exchange.round(final=final)
        done = json.loads(exchanges[0].job.store.get("view/1"))
        assert done["final"]  # a member's last value is in the job's store too
        job = _job_points(views[0].logdir, "loss")
        assert sorted(job) == list(range(18))  # taken once, whichever way they came
        _assert_equal(job, _recomputed(ranks, "loss"), 12)
        # The histograms went the same way: each step's, merged on the nodes, the hosts and the leader, is the
        # histogram of all 12 ranks' values.
        histograms = {e.step: e.histogram_value for e in accumulator(views[0].logdir / "job").Histograms("w")}
        assert sorted(histograms) == list(range(15))
        for step, got in histograms.items():
            _assert_histogram(got, np.concatenate([_weights(rank, step) for rank in range(12)]))
    finally:
        for exchange in exchanges:
            exchange.close()
        for closing in [*views, *writers]:
            closing.close()


def _weights(rank: int, step: int) -> np.ndarray:
    """A rank's values of its ``w`` histogram at a step: ranks far apart and overlapping."""
    return np.random.default_rng(rank * 1009 + step).normal(rank % 5 * 3.0 - 6.0, 0.5 + rank % 3, 100)


def test_histograms_merge_across_nodes_exactly_a_dead_node_is_named_and_unmergeable_ones_are_counted(job_nodes):
    """3 nodes x 2 ranks through the leader's merge: each step's ``w`` histogram in the job run is tensorboardX's
    histogram of all 6 ranks' values; a silent node's steps are written after the wait without its ranks,
    named; a tag whose ranks pick their own buckets is written for none of its steps, and counted."""
    clock = _Clock()
    views, writers = job_nodes(3, 2, clock)
    merge = JobMerge(views[0].logdir, nodes=3, world=6, wait=30.0, held=Held(), clock=clock)
    for step in range(5):
        for rank, writer in enumerate(writers):
            _log_histogram(writer, "w", _weights(rank, step), step)
            _log_histogram(writer, "auto", _weights(rank, step), step, bins="auto")
    assert _round(views, merge) == 10  # every node sent both tags' steps: complete, written at once
    for step in range(5, 7):  # node 2 goes silent
        for rank, writer in enumerate(writers):
            _log_histogram(writer, "w", _weights(rank, step), step)
    assert _round(views, merge, sending={0, 1}) == 0 and merge.waiting == 2
    clock.now = 60.0
    assert _round(views, merge, sending={0, 1}) == 2
    acc = accumulator(views[0].logdir / "job")
    histograms = {e.step: e.histogram_value for e in acc.Histograms("w")}
    assert sorted(histograms) == list(range(7)) and "auto" not in acc.Tags()["histograms"]
    for step, got in histograms.items():
        _assert_histogram(got, np.concatenate([_weights(rank, step) for rank in range(6 if step < 5 else 4)]))
    named = plugin_accumulator(views[0].logdir / "job").Tensors("~job/w/missing_ranks/text_summary")
    assert [(e.step, e.tensor_proto.string_val[0].decode()) for e in named] == [(s, "missing: rank 4, 5") for s in (5, 6)]
    assert merge.run.summary({}, 6)["histograms_not_merged"] == 5
    merge.close()


def test_in_a_tree_a_dead_host_s_members_go_to_the_job_store_then_one_hosts_and_nothing_is_lost(tmp_path):
    _in_child("_tree_dead_host", tmp_path)


def test_in_a_tree_a_host_that_never_answers_costs_its_members_one_bounded_call_a_round(tmp_path):
    _in_child("_tree_hanging_host", tmp_path)


def _tree_hanging_host(tmp_path: Path, store) -> None:
    """As :func:`_tree_dead_host`, but group 1's host is frozen: its port takes connections and never answers
    (node 3's calls to it have a node's own deadline, 5 s)."""
    _tree_dead_host(tmp_path, store, hangs=True)


def _tree_dead_host(tmp_path: Path, store, hangs: bool = False) -> None:
    """Group 1's host (node 2) dies with its store: node 3 sets its value in the job's store at once, then
    claims the group once its claim is stale and carries it; every step is written once, exact, node 2's
    ranks named missing from its death on. A round every 30 s, the view's wait."""
    clock = _Clock()
    views, writers, exchanges, ranks = _tree(tmp_path, store, clock, 6, 2)
    alive = list(range(6))

    def round_(steps: range = range(0)) -> None:
        clock.now += 30.0
        for step in steps:
            for rank in (r for node in alive for r in (2 * node, 2 * node + 1)):
                _log(writers[rank], step, float(rank * 10 + step % 7))
        for node in alive:
            views[node].update()
            exchanges[node].round(final=False)

    try:
        round_(range(0, 5))
        round_(range(5, 10))
        assert exchanges[2].group.hosting
        exchanges[2].close()  # its store goes with it: no one connects any more,
        exchanges[3].group._client = None  # and node 3's connection to it is reset (a dropped server, in this
        alive.remove(2)  # process, still serves the connections it has)
        if hangs:  # its claim names a port that takes connections and never answers (a frozen host)
            frozen = socket.create_server(("127.0.0.1", 0), backlog=16)
            claim = json.loads(exchanges[3].job.store.get(exchanges[3].group.key))
            claim["at"] = ["127.0.0.1", frozen.getsockname()[1]]
            exchanges[3].job.store.set(exchanges[3].group.key, json.dumps(claim).encode())
            exchanges[3].job.store.deadline = STORE_CALL_S  # its client to the host gets a node's own deadline
        started = time.monotonic()
        round_(range(10, 15))
        if hangs:  # the path: one call to the frozen host, abandoned at its deadline
            assert time.monotonic() - started >= STORE_CALL_S and exchanges[3].group._client.hanging == 1
            exchanges[3].job.store.deadline = 3 * STORE_CALL_S
        assert exchanges[3].group.direct and not exchanges[3].group.hosting
        assert json.loads(exchanges[0].job.store.get("view/3"))["points"]  # the path: node 3's own value
        round_(range(15, 20))
        round_(range(20, 25))
        if hangs:  # (the frozen claim was put in after round 2: node 3 saw it change a round later)
            round_()
        assert not exchanges[3].group.hosting  # node 2's claim is not stale yet
        round_()
        assert exchanges[3].group.hosting and not exchanges[3].group.direct
        assert json.loads(exchanges[0].job.store.get("view/3")) == {}  # emptied: it goes through its group again
        for _ in range(4):  # node 2 never sends again: its steps wait for it as long as the leader's rule says
            round_()
        job = _job_points(views[0].logdir, "loss")
        assert sorted(job) == list(range(25)), sorted(job)
        _assert_equal(job, _recomputed(ranks, "loss"), 12)
        assert {job[step]["ranks"] for step in range(10)} == {12.0}
        assert {job[step]["ranks"] for step in range(10, 25)} == {10.0}  # node 2's two ranks: missing
    finally:
        for exchange in exchanges:
            exchange.close()
        for closing in [*views, *writers]:
            closing.close()


def test_in_a_tree_a_group_host_claim_holding_1e999_is_skipped_and_the_groups_points_are_merged(tmp_path):
    _in_child("_tree_hostile_host_claim", tmp_path)


def _tree_hostile_host_claim(tmp_path: Path, store) -> None:
    """P1: group 1's host key names node ``1e999`` (an infinity to JSON): ``int()`` of it raised ``OverflowError`` out
    of every round of the group's nodes, and the group's part of the job run stopped. The claim is malformed now:
    counted, taken as none (one of the group's nodes claims the group), and every step holds all 8 ranks."""
    clock = _Clock()
    views, writers, exchanges, ranks = _tree(tmp_path, store, clock, 4, 2)
    exchanges[0].job.store.set("view/g1/host", b'{"node": 1e999, "at": null, "n": 1}')
    try:
        for r in range(5):
            for step in range(r * 5, r * 5 + 5) if r < 2 else ():
                for rank, writer in enumerate(writers):
                    _log(writer, step, float(rank * 10 + step % 7))
            for view, exchange in zip(views, exchanges):
                view.update()
                exchange.round(final=False)
        assert (views[0].logdir / "job").is_dir(), "no job run: no step was merged"
        job = _job_points(views[0].logdir, "loss")
        assert sorted(job) == list(range(10)), sorted(job)
        assert {point["ranks"] for point in job.values()} == {8.0}
        _assert_equal(job, _recomputed(ranks, "loss"), 8)
        assert [e.group.hosting for e in exchanges] == [True, False, True, False]  # (the path: node 2 hosts group 1)
        assert exchanges[2].job.malformed.kinds["view"] >= 1  # the claim it read: counted
    finally:
        for exchange in exchanges:
            exchange.close()
        for closing in [*views, *writers]:
            closing.close()


def test_status_on_a_node_that_does_not_lead_says_where_the_job_run_is(tmp_path, job_nodes, store):
    """Node 1 does not lead: its ``status`` shows its ranks' part (points made, not taken yet) and that the
    job's leader writes the run; node 0 leads and shows the whole job. Neither overwrites the other's."""
    from hf_mpwriter.cli.status import collect
    from hf_mpwriter.cli.status_text import _job_view_lines

    views, jobs, exchanges = _two_nodes_five_steps(job_nodes, store)
    jobs[0].leader.leading = True
    for _ in range(2):
        for view, exchange in zip(views, exchanges):
            view.update()
            exchange.round(final=False)
    node_1, node_0 = collect(views[1].logdir)["job_view"], collect(views[0].logdir)["job_view"]
    assert node_1["node"] is True and node_1["points"] == 5 and sorted(node_1["newest_step"]) == ["2", "3"]
    assert "node" not in node_0 and node_0["points"] == 5 and node_0["world_size"] == 4  # the leader: the whole job
    assert len(_job_view_lines(node_1, None)) == 1  # (said in one line, without the whole job's counts)
    for exchange in exchanges:
        exchange.close()


def test_a_leader_that_leads_again_after_another_wrote_later_steps_shows_no_older_picture_of_the_job(
        tmp_path, job_nodes, store):
    """Node 0 leads for steps 0-4, node 1 for 5-19, then node 0 leads again with nothing due. Its ``status`` must not
    show the whole-job picture its first merge left (steps 4 everywhere, 5 points) while the run holds 20 steps: a
    review's script, once a node that leads again shows its earlier picture anew."""
    from hf_mpwriter.cli.status import collect

    views, writers = job_nodes(2, 2, _Clock())
    jobs, exchanges = _exchanges(store, views)

    def led_by(leader: int, steps: range) -> None:
        for step in steps:
            for rank, writer in enumerate(writers):
                _log(writer, step, float(rank + step))
        for k, job in enumerate(jobs):
            job.leader.leading = k == leader
        for _ in range(2):
            for view, exchange in zip(views, exchanges):
                view.update(final=True)
                exchange.round(final=True)

    led_by(0, range(5))
    assert collect(views[0].logdir)["job_view"]["newest_step"] == {str(r): 4 for r in range(4)}  # its picture
    led_by(1, range(5, 20))
    assert collect(views[1].logdir)["job_view"]["newest_step"] == {str(r): 19 for r in range(4)}  # node 1 wrote on
    led_by(0, range(0))
    assert exchanges[0].merge is not None  # (the scenario: node 0 leads again, with nothing to write)
    picture = collect(views[0].logdir)["job_view"]
    assert set(picture["newest_step"].values()) == {19}, picture
    for exchange in exchanges:
        exchange.close()


def _led_to_the_end(job_nodes, store, leader: int) -> tuple[list[JobView], list[JobTarget], list[ViewExchange]]:
    """Two nodes' steps 0-4, every one written by node ``leader``'s merge in the nodes' last rounds."""
    views, jobs, exchanges = _two_nodes_five_steps(job_nodes, store)
    jobs[leader].leader.leading = True
    for _ in range(2):
        for view, exchange in zip(views, exchanges):
            view.update(final=True)
            exchange.round(final=True)
    return views, jobs, exchanges


def test_a_leader_that_takes_up_with_nothing_due_shows_the_whole_job(tmp_path, job_nodes, store):
    """Node 0 leads and writes every step; then the lease moves to node 1 (node 0's lease lost under load, say),
    with nothing left to write. Node 0's ``status`` now shows its part; node 1's must show the whole job, or
    no node does (seen in CI: a 4-node job whose every ``status`` showed one node's part)."""
    from hf_mpwriter.cli.status import collect

    views, jobs, exchanges = _led_to_the_end(job_nodes, store, 0)
    assert collect(views[0].logdir)["job_view"]["newest_step"] == {str(r): 4 for r in range(4)}  # node 0 wrote it all
    jobs[0].leader.leading, jobs[1].leader.leading = False, True
    for view, exchange in zip(views, exchanges):
        view.update(final=True)
        assert exchange.round(final=True) == 0  # (the scenario: nothing due for the new leader)
    assert collect(views[0].logdir)["job_view"].get("node") is True  # the old leader shows its part now
    whole = collect(views[1].logdir)["job_view"]
    assert whole.get("nodes") == 2 and whole["newest_step"] == {str(r): 4 for r in range(4)}, whole
    for exchange in exchanges:
        exchange.close()


@pytest.mark.parametrize("waits", [False, True], ids=["leads-at-once", "waits-first"])
def test_a_leader_that_moves_alone_to_a_successor_store_still_shows_the_whole_job(tmp_path, job_nodes, store, waits):
    """Node 1 leads and writes every step of both nodes; the job's store then goes (torchrun's agent that hosts it
    exits as the job ends) and node 1, still running, moves to a successor store where it is alone, and leads
    there. Its ``status`` keeps what its merges heard of the whole job: both nodes, every rank at its last step
    (seen in CI: the picture said one node, its own ranks, and six missing). ``waits``: it first does not lead
    there for a round (it waits out the mark its own lease left there, the job's store seen silent rather than
    refused), its ``status`` showing its part meanwhile (a fresh clone's suite beside a sweep: every node's
    ``status`` showed its part at the end)."""
    from hf_mpwriter.cli.status import collect

    views, jobs, exchanges = _led_to_the_end(job_nodes, store, 1)
    whole = {str(r): 4 for r in range(4)}
    before = collect(views[1].logdir)["job_view"]
    assert before["newest_step"] == whole and before["points"] == 5  # (the scenario: node 1 wrote it all)
    # (the successor served by a process of its own, as the file's store: served in the test's process, its first
    # connection timed out after one fixed order of this file's tests)
    with served_store() as (_, port):
        jobs[1].store.move_to(StoreAddress("127.0.0.1", port, store.job))
        assert jobs[1]._announce()  # node 1 alone in the successor store
        if waits:
            jobs[1].leader.leading = False
            exchanges[1].round(final=True)
            assert collect(views[1].logdir)["job_view"].get("node") is True  # (the scenario: its part shown meanwhile)
            jobs[1].leader.leading = True
        exchanges[1].round(final=True)
        assert exchanges[1].merge is not None and exchanges[1].merge.nodes_heard <= 1  # a new merge: node 1 at most
        picture = collect(views[1].logdir)["job_view"]
        assert picture.get("nodes") == 2 and picture["newest_step"] == whole and not picture["missing_ranks"], picture
        assert picture["points"] == 5 and picture["extremes"] == before["extremes"] != {}  # (its counts stand too)
        for exchange in exchanges:
            exchange.close()


def _at_the_target(tmp_path: Path, views: list[JobView], exchanges: list[ViewExchange]) -> Path:
    """The nodes' logdirs in one folder, as the target holds them (the exchanges closed first: the runs whole)."""
    for exchange in exchanges:
        exchange.close()
    copy = tmp_path / "target"
    for view in views:
        shutil.copytree(view.logdir, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".hf_mpwriter"))
    return copy


def _attempt_value(attempt: int, rank: int, step: int) -> float:
    return attempt * 1000.0 + rank * 10.0 + (step * 7 + rank * 3) % 11


@pytest.mark.parametrize("restarted", ["every rank", "one rank of the node that does not lead",
                                       "every rank, node 1 reading it late", "every rank, files read in parts"])
def test_a_restart_on_a_node_makes_the_leaders_job_run_what_tensorboard_shows_for_the_ranks(tmp_path, job_nodes,
                                                                                            store, restarted):
    """Two nodes of two ranks, through a real TCPStore; node 0 leads and writes attempt 1's steps. Then
    ranks restart at 100 (a ``SessionLog.START``, as ``purge_step`` writes) and log 100-199 again with other
    values (attempt 2): every rank, or only rank 3 on node 1 (the others go on to 199 in attempt 1). Late:
    node 1 sent attempt 1's steps 140-149 before the restart, and its uploader reads its ranks' restart only
    after the leader's node has restarted the job run and done a round more. The leader's job run, read with
    TensorBoard's reader, equals at every step 0-199 the statistics of what that reader shows for the four
    rank runs. In parts: the ranks' files are read again in parts, a part a round (a long job's files)."""
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    jobs, exchanges = _exchanges(store, views)
    jobs[0].leader.leading = True
    late, parts = restarted.endswith("late"), restarted.endswith("parts")

    def rounds(times: int = 3, final: bool = False, nodes: tuple[int, ...] = (1, 0)) -> None:
        for _ in range(times * (40 if parts else 1)):
            for k in nodes:
                views[k].update(final=final, budget=0 if parts and not final else math.inf)
                exchanges[k].round(final=final)

    def log(steps: range, attempt: int, ranks: range | list[int] = range(4)) -> None:
        for step in steps:
            for rank in ranks:
                _log(writers[rank], step, _attempt_value(attempt, rank, step))

    log(range(140 if late else 150), 1)
    rounds()
    if late:
        log(range(140, 150), 1)
        rounds(1, nodes=(1,))  # node 1 sent 140-149; the leader has not taken them yet
    assert max(_job_points(views[0].logdir, "loss")) == (139 if late else 149)  # the job run holds steps past 100
    if parts:  # (the views the uploaders made read long files from here)
        for view in views:
            view.bounds = ViewBounds(read_bytes=1500, mark_bytes=700)
    again = [3] if restarted.startswith("one rank") else range(4)
    for rank, writer in enumerate(writers):
        if rank in again:
            writer.add_serialized(session_start_event(100, 2000.0))
    log(range(100, 200), 2, again)
    log(range(150, 200), 1, [rank for rank in range(4) if rank not in again])
    if late:
        rounds(3, nodes=(0,))  # the leader restarts the job run and its node makes its points anew: node 1's
        # value in the store is still of attempt 1 (140-149), and no point is made of it
        assert all(stats["mean"] >= 2000 for step, stats in _job_points(views[0].logdir, "loss").items() if step >= 100)
    rounds()
    views[1].update(final=True)
    views[0].update(final=True)
    rounds(final=True)
    assert [view.late for view in views] == [0, 0]  # (no value was taken for a step the job run held)
    held = Held.parse(jobs[0].store.get("view/held"))
    assert [step for _, step in held.restarts] == [100] * (2 if late else 1)  # the path: the job run restarted
    # at 100 (again once node 1, late, read its ranks' restarts)
    copy = _at_the_target(tmp_path, views, exchanges)
    want = _recomputed(copy, "loss")
    assert sorted(want) == list(range(200))
    attempts = {step: {int(stats["mean"] // 1000)} for step, stats in want.items()}
    assert attempts[99] == {1} and attempts[145] == ({1} if restarted.startswith("one rank") else {2})  # TensorBoard's
    _assert_equal(_job_points(copy, "loss"), want, 4)


def test_a_node_in_its_last_round_makes_its_points_anew_after_a_restart_of_the_job_run(tmp_path, job_nodes, store):
    """Node 1's ranks are done, and its last round waits for a leader to take its points, when rank 0 on node 0
    (the leader's) restarts at step 100: node 1 makes its steps from 100 anew for the restarted job run (its
    ranks' values are the same), and the job run at the end holds every step with all 4 ranks, as TensorBoard
    shows them."""
    clock = _Clock()
    views, writers = job_nodes(2, 2, clock)
    jobs, exchanges = _exchanges(store, views)
    jobs[0].leader.leading = True
    for step in range(150):
        for rank, writer in enumerate(writers):
            _log(writer, step, _attempt_value(1, rank, step))
    for _ in range(2):
        for k in (1, 0):
            views[k].update()
            exchanges[k].round(final=False)
    assert max(_job_points(views[0].logdir, "loss")) == 149
    for step in range(150, 160):
        _log(writers[2], step, _attempt_value(1, 2, step))
        _log(writers[3], step, _attempt_value(1, 3, step))
    views[1].update(final=True)
    written: list[int] = []
    ending = threading.Thread(target=lambda: written.append(exchanges[1].last_round(wait=20.0, pause=0.1)))
    ending.start()
    try:
        wait_for(lambda: json.loads(jobs[0].store.get("view/1") or b"{}").get("final"), 10, "node 1's last value")
        writers[0].add_serialized(session_start_event(100, 2000.0))
        for step in range(100, 160):
            _log(writers[0], step, _attempt_value(2, 0, step))
            _log(writers[1], step, _attempt_value(1, 1, step))
        views[0].update()
        exchanges[0].round(final=False)  # the job run restarts at 100
        assert [step for _, step in Held.parse(jobs[0].store.get("view/held")).restarts] == [100]
        wait_for(lambda: json.loads(jobs[0].store.get("view/1") or b"{}").get("epoch"), 10, "node 1 to take it in")
        views[0].update(final=True)
        exchanges[0].last_round(wait=10.0, pause=0.1)
    finally:
        ending.join(30)
    copy = _at_the_target(tmp_path, views, exchanges)
    want = _recomputed(copy, "loss")
    assert sorted(want) == list(range(160)) and {stats["ranks"] for stats in want.values()} == {4}
    _assert_equal(_job_points(copy, "loss"), want, 4)


def test_a_group_s_host_leaves_out_a_member_s_point_of_an_attempt_the_job_run_dropped_and_keeps_the_others():
    """In a merge tree the group's host merges its members' values: a member that has not taken in the job
    run's restart at 100 yet (its value of the epoch before) has its point of step 100 left out, not the
    others' (which the leader then takes); its point of step 99 stays."""
    from hf_mpwriter.uploader.jobrun.values import group_value

    def node_value(epoch: int, base: float) -> bytes:
        return json.dumps({"ranks": {"0": 100}, "tags": ["loss"], "final": False, "late": 0, "made": 1, "every": 1,
                           "epoch": epoch, "restarts": [],
                           "points": [["loss", step, Stats.of({0: base + step}).to_list()] for step in (99, 100)]}).encode()

    held = Held(steps={"loss": 98}, restarts=[(5, 100)])
    value = json.loads(group_value({0: node_value(0, 1000.0), 1: node_value(5, 2000.0)}, 1 << 20, held))
    covered = {step: (None if nodes is None else sorted(nodes)) for _, step, _, nodes in value["points"]}
    assert covered == {99: None, 100: [1]}  # (None: every node of the value)
    merge = JobMerge(Path("/nonexistent"), nodes=2, world=2, wait=30.0, held=held, clock=lambda: 0.0)
    merge.take(None, json.dumps(value).encode())
    assert merge.waiting == 2


def test_the_leaders_word_tells_each_node_from_which_step_to_make_its_points_anew():
    """A node of the last epoch: none; of an epoch the word holds: the lowest step of the restarts after it;
    of one it does not hold (a job's new store, or one it missed): the lowest step the word holds, or 0 once
    some may be gone from it."""
    held = Held(restarts=[(10, 120), (20, 100), (30, 140)])
    assert held.floor_after(30) == math.inf and held.floor_after(20) == 140 and held.floor_after(10) == 100
    assert held.floor_after(0) == 100 and held.floor_after(5) == 100 and Held().floor_after(3) == math.inf
    assert held.stale(20, 140) and not held.stale(20, 139) and not held.stale(30, 10**6)
    for _ in range(RESTARTS_KEPT):
        held.restart(200)
    assert len(held.restarts) == RESTARTS_KEPT and held.floor_after(30) == 0 and held.steps == {}
    assert len({epoch for epoch, _ in held.restarts}) == RESTARTS_KEPT  # (ids that only grow)


@pytest.mark.parametrize("written_since", [False, True])
def test_a_new_leader_writes_the_last_restart_of_the_job_run_again_unless_a_point_was_written_since(tmp_path,
                                                                                                    written_since):
    """The last leader published a restart of the job run at 100 and may have died before it wrote its ``START``:
    a new leader that finds no step from 100 held writes it (again: harmless); one that finds one does not."""
    from hf_mpwriter.events.decoding import summaries
    from hf_mpwriter.events.records import iter_records

    held = Held(steps={"loss": 120 if written_since else 99}, restarts=[(5, 100)])
    merge = JobMerge(tmp_path, nodes=2, world=4, wait=30.0, held=held, clock=lambda: 0.0)
    merge.write([("loss", 121, Stats.of({0: 1.0, 1: 2.0}))])
    merge.close()
    starts = []
    for path in sorted((tmp_path / "job").glob("*tfevents*")):
        with open(path, "rb") as handle:
            starts += [summaries(record)[2] for _, record in iter_records(handle) if summaries(record)[2] is not None]
    assert starts == ([] if written_since else [100, 100])  # (twice: JobRun.restart)


@pytest.mark.parametrize("unwritten", [None, 110])
def test_a_new_leader_restarts_the_job_run_at_the_last_words_unwritten_points_and_only_there(tmp_path, unwritten):
    """The last leader's word held steps up to 120 and said the points from 110 on were not written yet (it
    may have died, or lost its publication's answer, before it wrote them; the nodes dropped them): a new
    leader restarts the job run at 110 (a new epoch: the nodes make those points anew; a ``START`` drops
    what was written). A word that says its points written restarts nothing."""
    from hf_mpwriter.events.decoding import summaries
    from hf_mpwriter.events.records import iter_records

    held = Held.parse(Held(steps={"loss": 120}, unwritten=unwritten).to_json(by=1))
    merge = JobMerge(tmp_path, nodes=2, world=4, wait=30.0, held=held, clock=lambda: 0.0)
    points = merge.due()
    assert points == [] and merge.word_moved == (unwritten is not None)  # (published even with nothing due)
    assert merge.held == {"loss": 109 if unwritten else 120} and len(merge.word.restarts) == (1 if unwritten else 0)
    merge.write(points)
    merge.close()
    starts = []
    for path in sorted((tmp_path / "job").glob("*tfevents*")):
        with open(path, "rb") as handle:
            starts += [summaries(record)[2] for _, record in iter_records(handle) if summaries(record)[2] is not None]
    assert starts == ([110, 110] if unwritten else [])


# -- values another process wrote (issue 52: D2, D3, D6) ---------------------------------------------------
# A malformed value is skipped, counted per kind of key, said once, and never stops a round.
FILE = ["tb/rank-000/events.out.tfevents.1.h", "0" * 64, 10, None]


@pytest.mark.parametrize("wait", ["Infinity", "1e999", "NaN", "-1"])
def test_an_offer_whose_wait_is_not_a_finite_number_is_malformed(wait):
    """D6: ``"wait": Infinity`` parsed, and the leader never expired that offer."""
    raw = f'{{"seq": 1, "incarnation": 1, "wait": {wait}, "files": [{json.dumps(FILE)}]}}'.encode()
    with pytest.raises(Malformed):
        Offer.decode(raw)
    assert Offer.decode(raw.replace(wait.encode(), b"2.5")).wait == 2.5  # (the same offer, finite: taken)


def test_an_offer_whose_wait_is_past_its_bound_is_never_taken_and_one_within_it_expires_at_its_wait(store):
    """D6, still: ``"wait": 1e300`` is finite, and the leader took that offer and never let it expire. An offer's wait is
    at most :data:`MAX_OFFER_WAIT_S` (no node waits longer for its answer): past it the offer is malformed, skipped and
    counted; within it, the offer is taken until its wait is over on the leader's clock."""
    leader, node = _job_node(store, 0), _job_node(store, 1)
    now = [0.0]
    leader.leader.clock = lambda: now[0]

    def offered(seq: int, wait: str) -> dict[int, dict]:
        """Node 1's offer ``seq`` in the store; the offers the leader takes now."""
        node.store.set("offer/1", f'{{"seq": {seq}, "incarnation": {node.incarnation}, "wait": {wait}, '
                                  f'"files": [{json.dumps(FILE)}]}}'.encode())
        return leader.leader._offers()

    assert offered(1, "1e300") == {}  # not taken
    now[0] += 365 * 86400.0
    assert offered(1, "1e300") == {}  # nor a year later
    assert dict(leader.leader.malformed.kinds) == {"offer": 2}
    assert list(offered(2, repr(MAX_OFFER_WAIT_S))) == [1]  # (the path: an offer within its bound is taken)
    now[0] += MAX_OFFER_WAIT_S - 1.0
    assert list(offered(2, repr(MAX_OFFER_WAIT_S))) == [1]
    now[0] += 1.5
    assert offered(2, repr(MAX_OFFER_WAIT_S)) == {}  # expired: its node takes it back


def test_a_put_off_offer_is_taken_back_and_no_late_answer_makes_it_a_candidate_again(store, monkeypatch):
    """Seed 61946 of the commit simulation: the leader put node 2's offer off; node 2 committed newer files itself;
    a deposed leader's late answer to an older offer of node 2's then overwrote the put-off answer, the offer was a
    candidate again, and the next leader committed it: the file went back at the Hub. A node now takes back an offer
    its leader puts off. (Real store; the leader's side written by hand.)"""
    from hf_mpwriter.errors import Deferred
    from hf_mpwriter.state.piece import Piece
    from hf_mpwriter.targets.base import UploadedFile

    leader, node = _job_node(store, 0), _job_node(store, 1)
    monkeypatch.setattr(node.inner, "preupload", lambda pieces: [UploadedFile(f"tb/{p.path}", p.sha256, p.size)
                                                                 for p in pieces])  # (no Hub: the content is there)
    view = leader.store

    def put_off() -> None:
        raw = wait_for(lambda: (raw if (raw := view.get("offer/1") or b"").startswith(b"{") else None), 10, "the offer")
        view.set("answer/1", json.dumps({"seq": json.loads(raw)["seq"], "commit": None, "retry_in": 60.0}).encode())
        view.add("answered", 1)

    answering = threading.Thread(target=put_off)
    answering.start()
    with pytest.raises(Deferred):  # the scenario: the leader put the node's files off
        node.commit([Piece(path="rank-001/events.out.tfevents.1.h", size=10, sha256="1" * 64, source="")], "node commit")
    answering.join()
    assert view.get("offer/1") == WITHDRAWN  # taken back
    view.set("answer/1", json.dumps({"seq": node.offers.seq - 1, "commit": None, "retry_in": 2.0}).encode())  # (late)
    assert leader.leader._offers() == {}  # no candidate: the next leader commits nothing of node 1's


def test_a_nodes_value_or_the_leaders_word_holding_1e999_is_skipped_counted_and_the_rounds_go_on(job_nodes, store):
    """D2: ``int(1e999)`` raises ``OverflowError``, which the merge did not catch: every round of the leader's
    merge failed (it stopped merging), and a ``view/held`` holding it broke every node's round."""
    views, jobs, exchanges = _two_nodes_five_steps(job_nodes, store)
    for view, exchange in zip(views, exchanges):
        view.update()
        assert exchange.round(final=False) == 0  # neither leads yet: both values in the store
    good = jobs[1].store.get("view/1")
    bad = json.loads(good)
    bad["late"] = "LATE"
    store_key = jobs[1].store
    store_key.set("view/1", json.dumps(bad).encode().replace(b'"LATE"', b"1e999"))
    jobs[0].leader.leading = True
    for _ in range(3):  # the same bad value, read every round
        assert exchanges[0].round(final=False) == 0  # node 1's ranks are waited for: nothing due yet
        assert exchanges[0].merge is not None, "the leader's merge stopped"
    assert dict(jobs[0].malformed.kinds) == {"view": 3}  # counted each time it was read, one kind
    store_key.set("view/1", good)
    assert exchanges[0].round(final=False) == 5  # node 1's points again: every step, both nodes' ranks

    for _ in range(2):
        jobs[1].store.set("view/held", b'{"held": {"loss": 1e999}, "every": 1}')
        views[1].update()
        exchanges[1].round(final=False)  # raised OverflowError out of the round before
    assert dict(jobs[1].malformed.kinds) == {"view": 2}
    for exchange in exchanges:
        exchange.close()


def test_a_step_past_int64_in_a_nodes_value_is_skipped_and_tensorboard_shows_every_step(job_nodes, store):
    """P4: a point of step 2**64 in node 1's value was merged, and its step wrapped to 0 in the job run's file:
    TensorBoard's reader then dropped the job run's points. A step is below 2**63 (TensorBoard's steps are int64):
    that value is malformed, skipped and counted; node 1's next value is taken, and the job run read back with
    TensorBoard's reader holds every step of all 4 ranks."""
    views, writers = job_nodes(2, 2, _Clock())
    jobs, exchanges = _exchanges(store, views)
    for step in range(10):
        for rank, writer in enumerate(writers):
            _log(writer, step, float(rank + step))
    for view, exchange in zip(views, exchanges):
        view.update()
        assert exchange.round(final=False) == 0  # neither leads yet: both values in the store
    value = json.loads(jobs[1].store.get("view/1"))
    tag, _, point = value["points"][0]
    value["points"].append([tag, 2**64, point])
    jobs[1].store.set("view/1", json.dumps(value).encode())
    jobs[0].leader.leading = True
    exchanges[0].round(final=False)  # reads node 1's value with the step 2**64
    for _ in range(2):
        for k in (1, 0):  # node 1 sends its own value again; the job ends
            views[k].update(final=True)
            exchanges[k].round(final=True)
    for exchange in exchanges:
        exchange.close()
    job = _job_points(views[0].logdir, "loss")
    assert sorted(job) == list(range(10)), sorted(job)
    assert {point["ranks"] for point in job.values()} == {4.0}
    assert dict(jobs[0].malformed.kinds) == {"view": 1}  # skipped, counted


def test_an_undecodable_prepared_id_is_skipped_and_the_node_prepares_its_target_itself(store):
    """D3: an undecodable ``prepared`` value raised ``UnicodeDecodeError`` out of ``JobTarget.prepare`` (not a
    ``TargetError``): the node never prepared its target and tried again every 10 s, for ever."""
    node = _job_node(store, 1)
    for raw in (b"\xff\xfe", b"not an id", b"a/b/../c"):
        node.store.set("prepared", raw)
        assert node._prepared_by_node_0() is None  # prepared by this node itself, then
    assert dict(node.malformed.kinds) == {"prepared": 3}
    node.store.set("prepared", b"tester/job")
    assert node._prepared_by_node_0() == "tester/job"


def test_a_leaders_word_is_parsed_whole_or_taken_as_empty():
    skipped = Skipped()
    past = 2**64  # (a step past TensorBoard's int64 steps)
    for raw in (b'{"held": {"loss": 1e999}, "every": 1}', b"\xff", b'{"held": 3}', b'{"held": {}, "every": 1e999}',
                b'{"held": {"loss": %d}, "every": 1}' % past, b'{"held": {}, "every": 1, "unwritten": %d}' % past,
                b'{"held": {}, "every": 1, "restarts": [[1, %d]]}' % past, b'{"held": {}, "every": %d}' % past):
        assert Held.parse(raw, skipped) == Held()
    assert skipped.total == 8
    assert Held.parse(b'{"held": {"loss": -1}, "every": 2, "unwritten": 3}') == Held({"loss": -1}, 2, unwritten=3)


@pytest.mark.parametrize("state", ["kept", "lost"])
def test_a_nodes_restart_is_taken_in_whatever_ids_the_leader_took_in_before(state, tmp_path):
    """Issue 52, D1: a restart's id was the wall clock's nanoseconds; after the node's clock stepped back (or
    with the leader's ``seen`` from a host whose clock runs ahead) the next restart's id was below what the
    leader had taken in, and it was dropped: the job run kept the failed attempt's values. Ids are counted
    now, above the last one given and the last one the word says the leader took in."""
    from hf_mpwriter.uploader.jobrun.merge import JobMerge
    from hf_mpwriter.uploader.jobrun.outbox import Outbox

    ahead = 2**62  # an id the leader took in, above any clock's nanoseconds until 2116 (ids are below 2^63)
    outbox = Outbox()
    if state == "kept":
        outbox.take_word(Held(seen={1: ahead}), ahead)  # this process heard the leader's word
    outbox.report(200)  # a rank's restart at 200 (a "lost" state: before this process heard the word)
    held = Held(steps={"loss": 299}, seen={1: ahead})
    outbox.take_word(held, held.seen[1])
    merge = JobMerge(tmp_path, nodes=2, world=4, wait=30.0, held=held, clock=lambda: 0.0)
    merge.take(1, outbox.message({"ranks": {"2": 199}, "tags": ["loss"], "late": 0}, 10_000, False))
    assert merge.word.seen[1] > ahead and merge.word_moved  # taken in: the job run restarts at 200


def test_a_negative_step_a_writer_logged_is_part_of_the_job_run_and_one_past_int64_is_not():
    """TensorBoard's steps are int64, negative ones included (``add_scalar(..., global_step=-5)``): a node's value
    with them parses; one with a step past int64 is refused (it would wrap in the job run's file)."""
    from hf_mpwriter.uploader.jobrun.values import Head

    head = {"ranks": {"0": -5}, "final": False, "late": 0, "made": 3, "every": 1, "epoch": 0, "restarts": [[1, -5]]}
    assert Head.from_dict(head).ranks == {0: -5}
    for bad in ({"ranks": {"0": -(2**63) - 1}}, {"made": 10**305}, {"epoch": -1}, {"restarts": [[10**30, 0]]}):
        with pytest.raises(Malformed):
            Head.from_dict({**head, **bad})
