#!/usr/bin/env python
"""Commits per hour one repository receives from a multi-node job: hf_mpwriter (one uploader per
node, node-local logdirs, nodes taking turns) vs ``huggingface_hub.HFSummaryWriter`` in every rank.

Time is scaled down so that the Hub's spacing (~28 s per commit: about 128 commits per hour) becomes
1 s: the uploaders are told so with ``HF_MPWRITER_HUB_COMMIT_SPACING=1``, and every interval is divided
by the same factor (28.125). A commit interval of 1 minute becomes 2.13 s. Each simulated node is a
group of processes with its own host name (a UTS namespace when run as root) and the SLURM
variables of its node (``SLURM_NODEID``, ``SLURM_NNODES``), with 2 ranks and a node-local logdir.
The bench process hosts the test Hub and counts the commits on the repository while the ranks log.

Expected: hf_mpwriter stays at or under the budget (128 per hour) whatever the number of nodes; the
anchor makes ranks x 60 / interval commits per hour, far over it.

    python scripts/bench_nodes.py            # 1, 2, 4, 8 nodes; 20 s windows (~4 min)
    python scripts/bench_nodes.py --quick    # 1, 4 nodes; 8 s windows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, StatsSampler, header, ratio, table  # noqa: E402

SCALE = 3600 / 128  # real Hub seconds per commit -> 1 scaled second
BUDGET = 128  # commits per hour per repository
RANKS_PER_NODE = 2
LIBS = ("hf_mpwriter", "anchor")


def run_one(bench: Bench, lib: str, nodes: int, window: float, interval: float) -> dict:
    repo_id = f"bench/nodes-{lib}-{nodes}"
    bench.server.create_repo(repo_id)
    sampler = StatsSampler(bench.server, repo_id)
    workers = []
    for node in range(nodes):
        logdir = bench.tmp / f"{lib}-{nodes}" / f"node-{node}" / "logs"  # node-local
        env = {"SLURM_NODEID": str(node), "SLURM_NNODES": str(nodes), "HF_MPWRITER_HUB_COMMIT_SPACING": "1"}
        workers += bench.start_many(RANKS_PER_NODE, first_rank=node * RANKS_PER_NODE, lib=lib, repo_id=repo_id,
                                    logdir=str(logdir), commit_every_s=interval, duration_s=window, tick_s=0.01,
                                    per_tick=1, host=f"node-{node}", env=env)
        if lib == "hf_mpwriter":
            bench.uploader_pid(logdir)
    at_go = sampler.sample()
    for w in workers:
        w.send("go")
    for w in workers:
        w.wait("logged", timeout=window + 120)
    at_logged = sampler.sample()
    for w in workers:
        w.wait("closed", timeout=300)
    bench.finish(workers)
    sampler.stop()
    commits, seconds = at_logged[1] - at_go[1], at_logged[0] - at_go[0]
    return {"lib": lib, "nodes": nodes, "commits": commits, "seconds": seconds,
            "per_hour": commits / seconds * BUDGET}  # 1 commit per real second = 128 per scaled hour


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 4 nodes, 8 s windows")
    parser.add_argument("--nodes", type=int, nargs="+", default=None)
    parser.add_argument("--window", type=float, default=None, help="logging seconds per configuration")
    parser.add_argument("--commit-every", type=float, default=1.0, help="commit interval in (real-Hub) minutes")
    args = parser.parse_args(argv)
    sizes = args.nodes or ([1, 4] if args.quick else [1, 2, 4, 8])
    window = args.window or (8.0 if args.quick else 20.0)
    interval = args.commit_every * 60 / SCALE

    results = []
    with Bench("nodes") as bench:
        for nodes in sizes:
            for lib in LIBS:
                t0 = time.monotonic()
                results.append(run_one(bench, lib, nodes, window, interval))
                print(f"  done: {nodes} node(s) {lib} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(header(f"{RANKS_PER_NODE} ranks per node, commit_every={args.commit_every:g} min, time scaled "
                 f"{SCALE:.3f}x (Hub spacing 1 s, interval {interval:.2f} s), {window:g} s of logging") + "\n")
    by = {(r["lib"], r["nodes"]): r for r in results}
    rows = []
    for r in results:
        rows.append([r["nodes"], r["nodes"] * RANKS_PER_NODE, LIB_LABELS[r["lib"]], r["commits"],
                     f"{r['per_hour']:.0f}", f"{r['per_hour'] / BUDGET:.2f}x",
                     ratio(r["per_hour"], by[("hf_mpwriter", r["nodes"])]["per_hour"])])
    print(table(["nodes", "ranks", "library", "commits while logging", "commits per hour (scaled)",
                 "of the Hub's budget", "vs hf_mpwriter"], rows))


if __name__ == "__main__":
    main()
