#!/usr/bin/env python
"""Commits and bytes the Hub receives vs the number of processes: hf_mpwriter vs
``huggingface_hub.HFSummaryWriter`` created in every process.

For each world size N and each library, N worker processes (see ``_bench_common.py``) create their
writer with the same commit interval (2 s; 1 s with --quick), then, all at once, log one scalar every 5 ms for the
same wall time, then close. The bench process hosts the test Hub and reads its counters: commits
on the repo during the logging window (and over the whole run, which adds the set-up commits, e.g.
model cards, and the final ones at close) and request bytes received over the whole run. One repo
and one logdir per (library, N); configurations run one after another.

Expected: hf_mpwriter makes about window / interval commits whatever N (one uploader per node);
the anchor makes about N times as many.

    python scripts/bench_world_size.py            # N = 1, 4, 16; 20 s windows (~3-4 min)
    python scripts/bench_world_size.py --quick    # N = 1, 4; 4 s windows, 1 s interval (<1 min)
    python scripts/bench_world_size.py --bucket 16   # 16 processes to a Storage Bucket (~1 min)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, StatsSampler, fmt_bytes, header, ratio, table  # noqa: E402

LIBS = ("hf_mpwriter", "anchor")


def run_one(bench: Bench, lib: str, n: int, window: float, interval: float, tick: float) -> dict:
    repo_id, logdir = f"bench/ws-{lib}-{n}", bench.tmp / f"{lib}-{n}"
    sampler = StatsSampler(bench.server, repo_id)
    workers = bench.start_many(n, lib=lib, repo_id=repo_id, logdir=str(logdir), commit_every_s=interval,
                               duration_s=window, tick_s=tick, per_tick=1)
    if lib == "hf_mpwriter":
        bench.uploader_pid(logdir)
    at_go = sampler.sample()
    for w in workers:
        w.send("go")
    logged = [w.wait("logged", timeout=window + 120) for w in workers]
    at_logged = sampler.sample()
    closes = [w.wait("closed", timeout=300)["close_s"] for w in workers]
    bench.finish(workers)
    if lib == "hf_mpwriter":
        bench.wait_uploader_gone(logdir)
    sampler.stop()
    first, last = sampler.samples[0], sampler.samples[-1]
    return {
        "lib": lib, "n": n,
        "window_commits": at_logged[1] - at_go[1],
        "window_s": at_logged[0] - at_go[0],
        "total_commits": last[1] - first[1],
        "bytes": last[2] - first[2],
        "scalars": sum(e["scalars"] for e in logged),
        "close_max": max(closes),
    }


def run_bucket(bench: Bench, n: int, window: float, tick: float) -> dict:
    """hf_mpwriter to a Storage Bucket at its default interval: how many writes, and what arrived.

    (The test Hub does not enforce the real Hub's rate limits; a bucket has no commit budget anyway.)"""
    bucket, logdir = f"bench/ws-bucket-{n}", bench.tmp / f"bucket-{n}"
    before = bench.server.stats
    workers = bench.start_many(n, lib="hf_mpwriter", repo_id=f"hf://buckets/{bucket}", logdir=str(logdir),
                               duration_s=window, tick_s=tick, per_tick=1, default_interval=True)
    bench.uploader_pid(logdir)
    for w in workers:
        w.send("go")
    for w in workers:
        w.wait("logged", timeout=window + 120)
    closes = [w.wait("closed", timeout=300)["close_s"] for w in workers]
    bench.finish(workers)
    after = bench.server.stats
    remote = {"/".join(p.split("/")[-2:]): d for p, d in bench.server.bucket_files(bucket).items()}
    local = {"/".join(p.parts[-2:]): p.stat().st_size for p in logdir.rglob("*tfevents*") if ".hf_mpwriter" not in p.parts}
    held = sum(min(size, len(remote.get(key, b""))) for key, size in local.items())
    return {"n": n, "writes": after["bucket_writes"] - before["bucket_writes"],
            "coverage": held / max(1, sum(local.values())), "close_max": max(closes)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 4; 4 s windows; 1 s interval")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--window", type=float, default=None, help="logging seconds per configuration")
    parser.add_argument("--interval", type=float, default=None, help="commit interval (s), both libraries")
    parser.add_argument("--tick", type=float, default=0.005, help="seconds between scalars per process")
    parser.add_argument("--bucket", type=int, default=None, metavar="N",
                        help="only: N processes (e.g. 16) to a Storage Bucket at its default interval")
    args = parser.parse_args(argv)
    if args.bucket:
        window = args.window or 20.0
        with Bench("world_size_bucket") as bench:
            r = run_bucket(bench, args.bucket, window, args.tick)
        print(header(f"hf_mpwriter to a Storage Bucket, default interval (10 s), {args.bucket} processes, one "
                     f"scalar per process every {args.tick * 1000:g} ms for {window:g} s") + "\n")
        print(table(["processes", "bucket writes (one uploader)", "event-file bytes on the bucket", "slowest close (s)"],
                    [[r["n"], r["writes"], f"{r['coverage']:.0%}", f"{r['close_max']:.2f}"]]))
        return
    sizes = args.sizes or ([1, 4] if args.quick else [1, 4, 16])
    window = args.window or (4.0 if args.quick else 20.0)
    interval = args.interval or (1.0 if args.quick else 2.0)

    results = []
    with Bench("world_size") as bench:
        for n in sizes:
            for lib in LIBS:
                t0 = time.monotonic()
                results.append(run_one(bench, lib, n, window, interval, args.tick))
                print(f"  done: N={n} {lib} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(header(f"commit interval {interval:g} s for both, one scalar per process every "
                 f"{args.tick * 1000:g} ms for {window:g} s") + "\n")
    rows = []
    by = {(r["lib"], r["n"]): r for r in results}
    for r in results:
        base = by[("hf_mpwriter", r["n"])]
        rows.append([
            r["n"], LIB_LABELS[r["lib"]], r["scalars"],
            f"{r['window_commits']} ({r['window_commits'] / (r['window_s'] / interval):.2f}/interval)",
            r["total_commits"], fmt_bytes(r["bytes"]),
            ratio(r["total_commits"], base["total_commits"]), ratio(r["bytes"], base["bytes"]),
        ])
    print(table(["processes", "library", "scalars logged", "commits while logging",
                 "commits, whole run", "bytes received, whole run", "commits vs hf_mpwriter",
                 "bytes vs hf_mpwriter"], rows))


if __name__ == "__main__":
    main()
