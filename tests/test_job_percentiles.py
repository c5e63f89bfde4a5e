"""The job run's percentiles across ranks (``~job/<tag>/p50``, ``p90``, ``p99``) and the ranks above p99 (named in
``~job/extreme_ranks``): merged through the real merge tree and stores, they are within the stated error of the
exact nearest-rank percentiles of every rank's value; a spread in the store that is not one is refused, counted,
and the merge goes on."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import plugin_accumulator
from test_job_merge import _job_node, _store_port, _two_nodes_five_steps, job_nodes, store  # noqa: F401 (fixtures)
from test_job_view import _Clock, _job_points, _nearest_rank

from hf_mpwriter.timing import STORE_CALL_S
from hf_mpwriter.uploader.jobrun.exchange import ViewExchange
from hf_mpwriter.uploader.jobrun.percentiles import BIN_LIMIT, PERCENTILES, RELATIVE_ACCURACY, TOP, Spread
from hf_mpwriter.uploader.jobrun.stats import Stats
from hf_mpwriter.uploader.jobrun.view import JobView

RANKS, NODES, GROUP, STEPS = 1000, 20, 5, 6
DIVERGING = 613  # its value grows fifty-fold a step: far above every other rank's
FLOAT32 = 1e-6  # the event file's float32, relative


def _value(rank: int, step: int) -> float:
    """A rank's loss: lognormal across ranks; one rank diverging; a NaN and an infinity at some steps."""
    if rank == DIVERGING:
        return 50.0 * (step + 1)
    if (rank, step) == (7, 3):
        return math.nan
    if (rank, step) == (8, 4):
        return math.inf
    return random.Random(rank * 7919 + step).lognormvariate(0.0, 0.5)


def _above_p99(logdir: Path, tag: str) -> dict[int, list[int]]:
    """Each step's ranks named above p99 in ``~job/extreme_ranks``, highest first, as TensorBoard reads the text."""
    named: dict[int, list[int]] = {}
    for event in plugin_accumulator(logdir / "job").Tensors("~job/extreme_ranks/text_summary"):
        for line in event.tensor_proto.string_val[0].decode().split("  \n"):
            name, _, rest = line.partition(": min rank ")
            if name == tag and "above p99: " in rest:
                named[event.step] = [int(r) for r in re.findall(r"(\d+) \(", rest.split("above p99: ", 1)[1])]
    return named


def test_in_a_tree_of_a_thousand_ranks_the_percentiles_are_within_their_error_and_the_diverging_rank_is_named(
        tmp_path):
    _in_child("_tree_percentiles", tmp_path)


def _in_child(scenario: str, tmp_path: Path) -> None:
    """A tree scenario in a process of its own, as ``test_job_merge``'s (its stores' clients and servers)."""
    pytest.importorskip("torch.distributed")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_job_merge as m; "
            f"import test_job_percentiles as t; m._with_store(t.{scenario}, __import__('pathlib').Path({str(tmp_path)!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def _tree_percentiles(tmp_path: Path, served) -> None:
    """1,000 ranks on 20 nodes of 50, in 4 groups of 5 nodes, through the job's store and the groups' own: each
    node reduces its ranks' values (``Stats.of``), its group's host merges its nodes' points, the leader the
    groups'. At every step the job run's p50, p90 and p99 (read back with TensorBoard's reader) are within
    :data:`RELATIVE_ACCURACY` of the exact ones, the diverging rank is named first above p99, and every rank
    named there is in the tail within that error."""
    clock = _Clock()
    per = RANKS // NODES
    views = [JobView(tmp_path / f"node-{k}" / "logs", RANKS, wait=30.0, clock=clock, node_ranks=per) for k in range(NODES)]
    jobs = [_job_node(served, k, NODES, deadline=3 * STORE_CALL_S) for k in range(NODES)]
    exchanges = [ViewExchange(view, job, NODES, size=GROUP) for view, job in zip(views, jobs)]
    jobs[0].leader.leading = True
    try:
        for r in range(8):  # two steps a round, then rounds for them to cross the tree (node -> host -> leader)
            for step in (2 * r, 2 * r + 1) if r < STEPS // 2 else ():
                for node, view in enumerate(views):
                    _make_point(view, range(node * per, (node + 1) * per), step)
            for exchange in exchanges:
                exchange.round(final=False)
        assert [e.group.hosting for e in exchanges if e.group is not None] == [True, *[False] * 4] * 4
        job = _job_points(views[0].logdir, "loss")
        named = _above_p99(views[0].logdir, "loss")
        assert sorted(job) == list(range(STEPS)) and sorted(named) == list(range(STEPS))
        for step in range(STEPS):
            values = {rank: _value(rank, step) for rank in range(RANKS)}
            want = _nearest_rank(values.values())
            for name, _ in PERCENTILES:
                assert job[step][name] == pytest.approx(want[name], rel=RELATIVE_ACCURACY + FLOAT32), (step, name)
            highest = 8 if step == 4 else DIVERGING  # (rank 8's +inf at step 4)
            assert job[step]["ranks"] == RANKS and job[step]["max_rank"] == highest
            assert named[step][0] == highest and DIVERGING in named[step][:2]
            assert len(named[step]) == TOP  # (10 ranks above p99 of 1,000: the 8 highest named)
            assert all(values[rank] > want["p99"] * (1 - RELATIVE_ACCURACY) for rank in named[step]), (step, named)
    finally:
        for exchange in exchanges:
            exchange.close()
        for view in views:
            view.close()


def _make_point(view: JobView, ranks: range, step: int) -> None:
    """A node's point of ``step``, as its view reduces its ranks' values (the bench's way: no event files)."""
    by_rank = {rank: _value(rank, step) for rank in ranks}
    view.outbox.add([("loss", step, Stats.of(by_rank, (), 1e9 + step))])
    for rank in ranks:
        view.newest[rank] = step
    view._reporters.setdefault("loss", set()).update(ranks)


def _hostile(spread: list) -> list:
    """Hostile or broken spreads, each in place of a good one's parts (``spread``: a long form of positive values);
    the values they count stay the good one's, so that none is refused for its count alone but the last."""
    top, neg, pos, zeros, bins, negative = spread
    total = sum(c for c in bins[1:] if c > 0)
    return [
        [top, neg, pos, zeros, [bins[0], total - 1, -10**9, 1], negative],  # keys a billion apart
        [top, neg, pos, zeros, [bins[0], total, *[-1] * (2 * BIN_LIMIT + 1)], negative],  # past the bins' bound
        [top, neg, pos, zeros, [10**9, total], negative],  # a key no finite value has
        [top, neg, pos, zeros, [bins[0], total - 1, 1e999], negative],  # a count of infinity (JSON's 1e999)
        [top, neg, pos, zeros, [bins[0], total - 1.5, 1.5], negative],  # counts not whole
        [list(reversed(top)), neg, pos, zeros, bins, negative],  # the top out of order
        [[math.nan, 0, *top[2:]], neg, pos, zeros, bins, negative],  # a NaN on top
        [top * 2, neg, pos, zeros, bins, negative],  # past the top's bound
        [top, -1, pos + 1, zeros, bins, negative],  # a negative count
        [top, neg, pos],  # short of its fields
        "not a spread",
        [top, neg, pos, zeros, [bins[0], 10**6], negative],  # counts that are not the point's values
    ]


def test_a_spread_that_is_not_one_is_refused_counted_and_the_merge_goes_on(job_nodes, store):  # noqa: F811
    """Node 1's value, its spreads replaced by each hostile one in turn: the leader's round refuses the value
    whole (counted as the store's other malformed values), returns at once, and goes on merging; node 1's
    good value is then taken, and the job run's percentiles are those of all 4 ranks."""
    views, jobs, exchanges = _two_nodes_five_steps(job_nodes, store)
    for view, exchange in zip(views, exchanges):
        view.update()
        exchange.round(final=False)  # neither leads yet: both values in the store
    good = jobs[1].store.get("view/1")
    value = json.loads(good)
    wide = Stats.of({r: 1.5 ** r for r in range(3 * TOP)}).to_list()  # a point whose spread has a sketch, to break
    assert Stats.from_list(json.loads(json.dumps(wide))).spread is not None  # (whole, it parses)
    jobs[0].leader.leading = True
    for number, spread in enumerate(_hostile(wide[12]), 1):
        bad = json.loads(good)
        for point in bad["points"]:
            point[2] = [*wide[:12], spread]
        jobs[1].store.set("view/1", json.dumps(bad).encode())
        started = time.monotonic()
        assert exchanges[0].round(final=False) == 0  # node 1's ranks are waited for: nothing due
        assert time.monotonic() - started < 5 and exchanges[0].merge is not None
        assert dict(jobs[0].malformed.kinds) == {"view": number}, spread
    jobs[1].store.set("view/1", good)
    assert exchanges[0].round(final=False) == 5
    job = _job_points(views[0].logdir, "loss")
    assert len(job) == 5 and all(point["ranks"] == 4 and "p50" in point for point in job.values())
    assert value["points"] and all(len(point[2]) == 13 for point in value["points"])  # (the good one had spreads)
    for exchange in exchanges:
        exchange.close()


@pytest.mark.parametrize("values", ["lognormal", "signs", "ties", "nan-and-infinities", "few"])
def test_spreads_merged_in_any_grouping_give_the_percentiles_of_every_value_at_once(values):
    """Parts of some ranks' values, each sent through JSON and merged in a random grouping: the percentiles are
    within :data:`RELATIVE_ACCURACY` of the exact nearest-rank ones (exact where at most :data:`TOP` values, and
    the infinities' places), and equal to those of the spread of every value at once."""
    rng = random.Random(values)
    for _ in range(60):
        n = rng.randint(1, TOP) if values == "few" else rng.randint(TOP + 1, 600)
        by_rank = {r: rng.lognormvariate(0.0, 2.0) for r in range(n)}
        if values == "signs":
            by_rank = {r: rng.gauss(0.0, 1.0) * 10 ** rng.randint(-4, 4) for r in range(n)}
        elif values == "ties":
            by_rank = {r: float(rng.randint(-2, 2)) for r in range(n)}
        elif values == "nan-and-infinities":
            by_rank.update({r: rng.choice([math.nan, math.inf, -math.inf]) for r in rng.sample(range(n), n // 5)})
        spreads = [Spread.from_list(json.loads(json.dumps(Spread.of(part).to_list()))) for part in _parts(by_rank, rng)]
        while len(spreads) > 1:
            a, b = (spreads.pop(rng.randrange(len(spreads))) for _ in range(2))
            spreads.append(Spread.from_list(json.loads(json.dumps(a.merge(b).to_list()))))
        merged, whole = spreads[0], Spread.of(by_rank)
        finite = [v for v in by_rank.values() if not math.isnan(v)]
        if not finite:
            assert all(math.isnan(merged.percentile(p)) for _, p in PERCENTILES)
            continue
        want = _nearest_rank(finite)
        for name, p in PERCENTILES:
            got = merged.percentile(p)
            assert got == whole.percentile(p)  # the grouping changes nothing
            exact = n <= TOP or math.isinf(want[name]) or want[name] == 0.0
            assert got == want[name] if exact else got == pytest.approx(want[name], rel=RELATIVE_ACCURACY), (name, n)


def _parts(by_rank: dict[int, float], rng: random.Random) -> list[dict[int, float]]:
    ranks = list(by_rank)
    rng.shuffle(ranks)
    cuts = sorted({0, len(ranks), *(rng.randrange(len(ranks)) for _ in range(rng.randint(0, 12)))})
    return [{r: by_rank[r] for r in ranks[a:b]} for a, b in zip(cuts, cuts[1:]) if b > a]
