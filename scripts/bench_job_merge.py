#!/usr/bin/env python
"""The job run of a multi-node job at scale: the leader's merging, the job's store, the job run's age and size.

Simulates N nodes x 8 ranks x 50 scalar tags at 1 step/s (by default) for some minutes, round by round
(``--interval`` seconds, a commit interval). Real: the job's store (a ``TCPStore`` server, here in this
process; the simulated nodes share one connection to it, the leader has its own), every node's
:class:`~hf_mpwriter.uploader.job_merge.ViewExchange`
with its :class:`~hf_mpwriter.uploader.job_commit.JobTarget` and a node's
:class:`~hf_mpwriter.uploader.job_view.JobView` (their store calls, the node's value and its limits,
the leader's merge, its fence, the every-k-th-step budget, and the job run's file). Simulated: the
nodes (one process runs them in turn: their own reduction of their ranks' files, measured by
``bench_job_view.py``, is replaced by points made here, one per tag and step, as their ranks'
values would give them) and the commits (the job run lands with the leader's commit of the round it
was written in). Conservative timing: the leader's round reads what the nodes set in the round before.
In a merge tree (from 65 nodes, unless ``--flat``) the groups' hosts serve real stores in this process,
each member a client of its host's, and each host runs first of its group: it relays what its members set
in the round before.

Prints, per node count: the leader's CPU for its rounds (share of one core: its merging thread; and the
whole process meanwhile, the store's server thread and the store clients' threads included), the bytes
through the store per round, k at the end, the job run's points per tag per hour
and its size per hour, and the age of the newest job point at the target over time (p50/p95); nothing
passes or fails.

    python scripts/bench_job_merge.py                              # 64, 256, 1024 nodes, 20 min each
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
from hf_mpwriter.uploader import job_group, job_merge
from hf_mpwriter.uploader.job_commit import JobTarget, store_prefix
from hf_mpwriter.uploader.job_stats import Stats
from hf_mpwriter.uploader.job_store import JobStore, StoreAddress
from hf_mpwriter.uploader.job_view import JobView


def _node(store: JobStore, node: int, nodes: int, root: Path, ranks: int, interval: float) -> job_merge.ViewExchange:
    inner = HubTarget("bench/job", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:9", shared_branch=True)
    target = JobTarget(inner, inner, store, node, nodes, wait=10.0, spacing=0.5)
    assert target._announce(), "the store did not answer"
    logdir = root / f"node-{node}"
    logdir.mkdir()
    view = JobView(logdir, nodes * ranks, wait=interval, node_ranks=ranks)
    return job_merge.ViewExchange(view, target, nodes)


def _make_points(view: JobView, node: int, ranks: int, tags: list[str], steps: range) -> None:
    """What the node's own reduction passes on for these steps (every k-th: the leader's k)."""
    first = node * ranks
    for step in steps:
        if step % view.every:
            continue
        for i, tag in enumerate(tags):
            values = {first + r: math.sin(step * 0.01 + i) + 0.001 * (first + r) for r in range(ranks)}
            view.outbox[(tag, step)] = Stats.of(values, (), 1e9 + step)
            view.made += 1
    for r in range(ranks):
        view.newest[first + r] = steps[-1]
    for tag in tags:
        view._reporters.setdefault(tag, set()).update(range(first, first + ranks))


def run(nodes: int, ranks: int, tags: int, minutes: float, interval: float, root: Path) -> dict[str, float]:
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
    address = StoreAddress("127.0.0.1", server.port, "bench")
    prefix = store_prefix(address, HubTarget("bench/job", prefix="tb", endpoint="http://127.0.0.1:9").key)
    simulated = JobStore(address, prefix)  # one connection for the simulated nodes; the leader has its own
    exchanges = [_node(JobStore(address, prefix) if k == 0 else simulated, k, nodes, root, ranks, interval)
                 for k in range(nodes)]
    leader = exchanges[0]
    leader.job.leader.leading = True
    names = [f"train/metric_{i:02d}" for i in range(tags)]
    merging = whole = 0.0
    moved: list[int] = []
    grouped: list[int] = []  # group 0's own store, in a tree
    landed: list[tuple[float, int]] = []  # (sim time, newest step the job run holds at the target)
    rounds = int(minutes * 60 / interval)
    for r in range(rounds):
        now = (r + 1) * interval
        thread, process = time.thread_time(), time.process_time()
        leader.round(final=False)  # first: what the nodes set in the round before
        merging += time.thread_time() - thread
        whole += time.process_time() - process
        assert leader.merge is not None
        moved.append(2 * leader.merge.bytes_read)  # the nodes' values: set by them, read by the leader
        landed.append((now, max(leader.merge.held.values(), default=-1)))
        steps = range(int(now - interval), int(now))
        for k, exchange in enumerate(exchanges):
            _make_points(exchange.view, k, ranks, names, steps)
            if k:
                exchange.round(final=False)
            elif exchange.group is not None:  # the leader's node sends its own value too (as its group's host)
                exchange.group.send(lambda limit: leader.view.message(limit, False))
                exchange.view.made = 0
            else:  # (its round above was the leader's)
                exchange.job.store.set("view/0", exchange.view.message(exchange.limit, False))
                exchange.view.made = 0
        if leader.group is not None and leader.group._own is not None:  # group 0's store: set, then read
            grouped.append(2 * sum(map(len, leader.group._own.multi_get([f"view/{n}" for n in leader.group.nodes]))))
    merge = leader.merge
    every, points = merge.every, merge.run.points
    leader.close()
    job_bytes = sum(p.stat().st_size for p in (root / "node-0" / "job").glob("*tfevents*"))
    del server
    seconds = rounds * interval
    hours = seconds / 3600
    ages = [t - newest for t0, newest in landed for t in _seconds(t0, interval)]  # sampled every second
    return {
        "merging_share": merging / seconds, "whole_share": whole / seconds,
        "mb_per_round": statistics.mean(moved[2:] or moved) / 1e6, "every": every,
        "group_mb_per_round": statistics.mean(grouped[2:] or grouped or [0]) / 1e6,
        "groups": leader.groups,
        "points_per_tag_hour": points / tags / hours, "job_mb_hour": job_bytes / 1e6 / hours,
        "age_p50": statistics.median(ages), "age_p95": sorted(ages)[int(0.95 * len(ages))],
    }


def _seconds(start: float, interval: float) -> range:
    return range(int(start), int(start + interval))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="64,256,1024", help="node counts, comma-separated (default 64,256,1024)")
    parser.add_argument("--ranks", type=int, default=8, help="ranks per node (default 8)")
    parser.add_argument("--tags", type=int, default=50, help="scalar tags per rank (default 50)")
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated minutes at 1 step/s (default 20)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between rounds (default 30)")
    parser.add_argument("--flat", action="store_true", help="no merge in a tree, at any node count")
    args = parser.parse_args()
    if args.flat:
        job_group.GROUP_FROM = 1 << 30
    print(f"{args.ranks} ranks a node x {args.tags} tags at 1 step/s, {args.minutes:g} simulated minutes, a round every "
          f"{args.interval:g} s; the store's budget {job_merge.ROUND_BYTES / 2**20:g} MiB a round\n")
    print("| nodes | groups | leader's merging (one core) | with the stores, this process (one core) | job's store MB a round "
          "| a group's store MB a round | k at the end | points per tag per hour | job run per hour "
          "| newest point's age p50 / p95 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nodes in (int(n) for n in args.nodes.split(",")):
        root = Path(tempfile.mkdtemp(prefix="bench_job_merge-"))
        try:
            r = run(nodes, args.ranks, args.tags, args.minutes, args.interval, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"| {nodes} | {r['groups'] or '-'} | {r['merging_share']:.1%} | {r['whole_share']:.1%} | {r['mb_per_round']:.1f} "
              f"| {r['group_mb_per_round']:.1f} | {r['every']} "
              f"| {r['points_per_tag_hour']:,.0f} | {r['job_mb_hour']:.1f} MB | {r['age_p50']:.0f} s / {r['age_p95']:.0f} s |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
