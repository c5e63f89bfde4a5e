#!/usr/bin/env python
"""The job run of a multi-node job at scale: the leader's merging, the job's store, the job run's age and size.

Simulates N nodes x 8 ranks x 50 scalar tags at 1 step/s (by default) for some minutes, at the ratios a
job has with a target's defaults (``--target``): the job run's rounds every ``commit_every`` (at most
30 s: 10 s on a bucket, 30 s on a repository), and the leader's node's commits as production paces them
(:func:`~hf_mpwriter.uploader.coordination.pacing.pacing` of the leading node, in the job's plan for that target and
node count: at its groups' slots where they fill the interval, 125 s on a repository at 1,024 nodes; else once an
interval). Real: the job's store (a ``TCPStore`` server, here in
this process; the simulated nodes share one connection to it, the leader has its own), every node's
:class:`~hf_mpwriter.uploader.jobrun.exchange.ViewExchange` with its
:class:`~hf_mpwriter.uploader.coordination.member.JobTarget` and a node's :class:`~hf_mpwriter.uploader.jobrun.view.JobView`
(their store calls, the node's value and its limits, the leader's merge, its fence, the every-k-th-step
budget, and the job run's file); in a merge tree (from 65 nodes, unless ``--flat``) the stores the
groups' hosts serve, in this process, each member a client of its host's. Simulated: the nodes (one
process runs them in turn, in their order within a round: the nodes, the hosts, the leader; their own
reduction of their ranks' files, measured by ``bench_job_view.py``, is replaced by points made here, one
per tag and step, as their ranks' values would give them: each round's points are the steps of the
round before, as a node reads them at its round), and the commits (the job run lands with the first of
the leader's commits after its merge; four phases of the commits against the rounds, pooled).

Prints, per node count: the leader's CPU for its rounds (share of one core: its merging thread; and the
whole process meanwhile, the store's server thread and the store clients' threads included), the bytes
through the store per round and a point's bytes there (its value's head included), k at the end, the job
run's points per tag per hour and its size per hour, and the age of the newest job point at the target over
time (p50/p95); nothing passes or fails.

    python scripts/bench_job_merge.py                              # 64, 256, 1024 nodes, 20 min each, a bucket
    python scripts/bench_job_merge.py --target hub --nodes 256     # a repository
    python scripts/bench_job_merge.py --nodes 1024 --minutes 60
    python scripts/bench_job_merge.py --flat                       # no merge tree (from 65 nodes by default)
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.timing import BUCKET_COMMIT_EVERY_S, HUB_COMMIT_EVERY_S, JOB_VIEW_WAIT_S
from hf_mpwriter.uploader.coordination.member import JobTarget, store_prefix
from hf_mpwriter.uploader.coordination.pacing import Situation, Store, pacing
from hf_mpwriter.uploader.coordination.plan import make_budget, make_plan
from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress
from hf_mpwriter.uploader.jobrun import exchange as job_merge
from hf_mpwriter.uploader.jobrun import tree as job_group
from hf_mpwriter.uploader.jobrun.stats import Stats
from hf_mpwriter.uploader.jobrun.view import JobView


class _Clock:
    """The simulated time (the views', the merge's and the groups' clock): a round here may take longer than
    its simulated seconds, and a host's beat must not look stale for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _node(store: JobStore, node: int, nodes: int, root: Path, ranks: int, commit_every: float,
          clock: _Clock) -> job_merge.ViewExchange:
    inner = HubTarget("bench/job", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:9", shared_branch=True)
    target = JobTarget(inner, inner, store, node, nodes, wait=10.0, spacing=0.5)
    assert target._announce(), "the store did not answer"
    logdir = root / f"node-{node}"
    logdir.mkdir()
    view = JobView(logdir, nodes * ranks, wait=max(JOB_VIEW_WAIT_S, commit_every), node_ranks=ranks,  # (as start_for)
                   clock=clock)
    return job_merge.ViewExchange(view, target, nodes, period=commit_every)  # (as the uploader makes it)


#: The seconds between two writes of the job's files, as the uploader's defaults give them (its _write_spacing).
SPACING = {"hub": min(HUB_COMMIT_EVERY_S, HubTarget.min_interval) / 2, "bucket": 0.0}


def _make_points(view: JobView, node: int, ranks: int, tags: list[str], steps: range) -> None:
    """What the node's own reduction passes on for these steps (every k-th: the leader's k)."""
    first = node * ranks
    for step in steps:
        if step % view.outbox.every:
            continue
        for i, tag in enumerate(tags):
            values = {first + r: math.sin(step * 0.01 + i) + 0.001 * (first + r) for r in range(ranks)}
            view.outbox.points[(tag, step)] = Stats.of(values, (), 1e9 + step)
            view.outbox.made += 1
    for r in range(ranks):
        view.newest[first + r] = steps[-1]
    for tag in tags:
        view._reporters.setdefault(tag, set()).update(range(first, first + ranks))


def run(nodes: int, ranks: int, tags: int, minutes: float, kind: str, root: Path) -> dict[str, float]:
    import torch.distributed as dist

    config = {"hub": HUB_COMMIT_EVERY_S, "bucket": BUCKET_COMMIT_EVERY_S}[kind]
    plan = make_plan(make_budget(), kind, nodes, ranks + 1, config, SPACING[kind])  # (its ranks' files, its job run)
    # The leader's node's commits, as production paces them (at the groups' slots where they fill the interval).
    lead = Situation(commit_every=config, rate_interval=config, nodes=nodes, node=0, kind=kind, budget=make_budget(),
                     files=ranks + 1, store=Store.PLANNED, plan=plan, leading=True,
                     job_run_every=min(config, JOB_VIEW_WAIT_S))
    interval = pacing(lead)[0]
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
    address = StoreAddress("127.0.0.1", server.port, "bench")
    prefix = store_prefix(address, HubTarget("bench/job", prefix="tb", endpoint="http://127.0.0.1:9").key)
    simulated = JobStore(address, prefix)  # one connection for the simulated nodes; the leader has its own
    clock = _Clock()
    exchanges = [_node(JobStore(address, prefix) if k == 0 else simulated, k, nodes, root, ranks, config, clock)
                 for k in range(nodes)]
    leader = exchanges[0]
    leader.job.leader.leading = True
    period = leader.period
    names = [f"train/metric_{i:02d}" for i in range(tags)]
    merging = whole = 0.0
    moved: list[int] = []
    sizes: list[float] = []  # bytes a point in the job's store (the values' heads included)
    grouped: list[int] = []  # group 0's own store, in a tree
    merged: list[tuple[float, int]] = []  # (sim time, newest step the leader's job run holds)
    rounds = int(minutes * 60 / period)
    for r in range(rounds):
        start = clock.now = (r + 1) * period  # a round's start; its steps are those logged in the period before
        for k, exchange in enumerate(exchanges):
            _make_points(exchange.view, k, ranks, names, range(int(start - period), int(start)))
        # In the order of their times in the round (next_in): the nodes, then the groups' hosts, then the leader.
        for k in sorted(range(nodes), key=lambda k: exchanges[k].next_in(1000 * period)):
            if k:
                exchanges[k].round(final=False)
                continue
            thread, process = time.thread_time(), time.process_time()
            leader.round(final=False)
            merging += time.thread_time() - thread
            whole += time.process_time() - process
        assert leader.merge is not None
        moved.append(2 * leader.merge.bytes_read)  # the values: set by their senders, read by the leader
        if leader.merge.points_read:
            sizes.append(leader.merge.bytes_read / leader.merge.points_read)
        merged.append((start + leader.next_in(1000 * period) % period, max(leader.merge.held.values(), default=-1)))
        host = next((e.group for e in exchanges if e.group is not None and e.group.index == 0 and e.group.hosting), None)
        if host is not None and host._own is not None:  # group 0's store: set, then read
            grouped.append(2 * sum(map(len, host._own.multi_get([f"view/{n}" for n in host.nodes]))))
    merge = leader.merge
    every, points = merge.every, merge.run.points
    leader.close()
    job_bytes = sum(p.stat().st_size for p in (root / "node-0" / "job").glob("*tfevents*"))
    del server
    seconds = rounds * period
    hours = seconds / 3600
    ages = _ages(merged, interval, seconds)
    return {
        "merging_share": merging / seconds, "whole_share": whole / seconds, "period": period,
        "interval": interval, "mb_per_round": statistics.mean(moved[2:] or moved) / 1e6, "every": every,
        "point_bytes": statistics.mean(sizes[2:] or sizes or [0]),
        "group_mb_per_round": statistics.mean(grouped[2:] or grouped or [0]) / 1e6,
        "groups": leader.groups,
        "points_per_tag_hour": points / tags / hours, "job_mb_hour": job_bytes / 1e6 / hours,
        "age_p50": statistics.median(ages), "age_p95": sorted(ages)[int(0.95 * len(ages))],
    }


def _ages(merged: list[tuple[float, int]], interval: float, seconds: float) -> list[float]:
    """The newest job point's age at the target, each second after the first commit that holds one: the job
    run lands with the leader's node's commits, one an ``interval`` at a phase of their own (the rounds' wall
    clock and the commits' plan are not aligned: four phases, a quarter interval apart, pooled)."""
    ages = []
    for phase in (0.0, 0.25, 0.5, 0.75):
        commits = [phase * interval + m * interval for m in range(int(seconds / interval) + 2)]
        landed = -1
        for second in range(int(seconds)):
            done = [c for c in commits if c <= second]
            if done:
                landed = max((step for at, step in merged if at <= done[-1]), default=-1)
            if landed >= 0:
                ages.append(second - landed)
    return ages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="64,256,1024", help="node counts, comma-separated (default 64,256,1024)")
    parser.add_argument("--ranks", type=int, default=8, help="ranks per node (default 8)")
    parser.add_argument("--tags", type=int, default=50, help="scalar tags per rank (default 50)")
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated minutes at 1 step/s (default 20)")
    parser.add_argument("--target", choices=("bucket", "hub"), default="bucket",
                        help="whose default commit_every and commit plan (default bucket)")
    parser.add_argument("--flat", action="store_true", help="no merge in a tree, at any node count")
    args = parser.parse_args()
    if args.flat:
        job_group.GROUP_FROM = 1 << 30
    print(f"{args.ranks} ranks a node x {args.tags} tags at 1 step/s, {args.minutes:g} simulated minutes, a round every "
          f"{args.target}'s default commit_every; the store's budget {job_merge.ROUND_BYTES / 2**20:g} MiB a "
          f"{JOB_VIEW_WAIT_S:g}-s round\n")
    print("| nodes | groups | round / commit interval | leader's merging (one core) "
          "| with the stores, this process (one core) | job's store MB a round | bytes a point there "
          "| a group's store MB a round | k at the end | points per tag per hour | job run per hour "
          "| newest point's age p50 / p95 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for nodes in (int(n) for n in args.nodes.split(",")):
        root = Path(tempfile.mkdtemp(prefix="bench_job_merge-"))
        try:
            r = run(nodes, args.ranks, args.tags, args.minutes, args.target, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"| {nodes} | {r['groups'] or '-'} | {r['period']:g} s / {r['interval']:g} s | {r['merging_share']:.1%} "
              f"| {r['whole_share']:.1%} | {r['mb_per_round']:.1f} | {r['point_bytes']:.0f} "
              f"| {r['group_mb_per_round']:.1f} | {r['every']} "
              f"| {r['points_per_tag_hour']:,.0f} | {r['job_mb_hour']:.1f} MB | {r['age_p50']:.0f} s / {r['age_p95']:.0f} s |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
