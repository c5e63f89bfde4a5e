#!/usr/bin/env python
"""Bytes on the wire per commit as the logs grow: hf_mpwriter vs ``huggingface_hub.HFSummaryWriter``.

One worker process per library logs at a high rate (20 scalars every 5 ms) with a short commit
interval (1.5 s) until the Hub has received ``--commits`` commits from it, then closes. Both run
with their defaults, on the Xet path every user with ``hf_xet`` gets: hf_mpwriter hands the client
file paths (a staged copy of the open file), so Xet re-uses every chunk an appended file already
had; the anchor hands it a file object, which the client sends through the legacy LFS path, whole.

The test Hub (in the bench process) counts request bytes (xorbs included) but not bytes per commit, so the bench
samples its counters every 20 ms and charges each commit with the bytes received since the
previous commit (uploads come before their ``/commit``). Printed: mean bytes per commit over the
first third of the commits (without the first, which carries set-up requests), the middle and the
last third, the largest commit, the total, and the total over the bytes actually logged (upload
amplification), then every commit's bytes.

Expected: flat for hf_mpwriter (each commit sends only the new chunks: about the data logged since
the last commit; goal: all bytes sent <= 1.3x the bytes logged), growing linearly for the anchor (the
whole file every time).

    python scripts/bench_growth.py            # 30 commits at 1.5 s (~2 min)
    python scripts/bench_growth.py --quick    # 12 commits at 1 s (<1 min)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, StatsSampler, fmt_bytes, header, ratio, table  # noqa: E402

LIBS: dict[str, dict] = {"hf_mpwriter": {}, "anchor": {}}


def local_bytes(logdir: Path) -> int:
    return sum(p.stat().st_size for p in logdir.rglob("*tfevents*") if ".hf_mpwriter" not in p.parts)


def run_one(bench: Bench, lib: str, commits: int, interval: float, per_tick: int, tick: float) -> dict:
    repo_id, logdir = f"bench/growth-{lib}", bench.tmp / lib
    sampler = StatsSampler(bench.server, repo_id)
    (worker,) = bench.start_many(1, lib=lib, repo_id=repo_id, logdir=str(logdir), commit_every_s=interval,
                                 per_tick=per_tick, tick_s=tick, kwargs=LIBS[lib])
    if lib == "hf_mpwriter":
        bench.uploader_pid(logdir)
    at_go = sampler.sample()
    worker.send("go")
    deadline = time.monotonic() + commits * interval * 4 + 60
    while sampler.sample()[1] - at_go[1] < commits and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send("stop")
    worker.wait("closed", timeout=300)
    bench.finish([worker])
    if lib == "hf_mpwriter":
        bench.wait_uploader_gone(logdir)
    sampler.stop()
    per_commit = sampler.per_commit_bytes(since=at_go[0])[:commits]
    return {"lib": lib, "per_commit": per_commit, "total": sum(per_commit), "logged": local_bytes(logdir)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 commits at 1 s")
    parser.add_argument("--commits", type=int, default=None)
    parser.add_argument("--interval", type=float, default=None, help="commit interval (s), both libraries")
    parser.add_argument("--per-tick", type=int, default=20, help="scalars logged every tick")
    parser.add_argument("--tick", type=float, default=0.005, help="seconds between ticks")
    args = parser.parse_args(argv)
    commits = args.commits or (12 if args.quick else 30)
    interval = args.interval or (1.0 if args.quick else 1.5)

    results = []
    with Bench("growth") as bench:
        for lib in LIBS:
            t0 = time.monotonic()
            results.append(run_one(bench, lib, commits, interval, args.per_tick, args.tick))
            print(f"  done: {lib} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

    def mean(values: list[int]) -> float:
        return statistics.fmean(values) if values else float("nan")

    print(header(f"commit interval {interval:g} s for both; {args.per_tick} scalars every {args.tick * 1000:g} ms; "
                 f"default rotate_bytes; Xet on; bytes per commit = request bytes (xorbs included) since the previous commit")
          + "\n")
    rows = []
    for r in results:
        pc = r["per_commit"]
        third = max(1, len(pc) // 3)
        early, middle, late = mean(pc[1:third]), mean(pc[third:2 * third]), mean(pc[2 * third:])
        rows.append([LIB_LABELS[r["lib"]], len(pc), fmt_bytes(early), fmt_bytes(middle), fmt_bytes(late),
                     ratio(late, early), fmt_bytes(max(pc)), fmt_bytes(r["total"]), fmt_bytes(r["logged"]),
                     ratio(r["total"], r["logged"])])
    print(table(["library", "commits", "bytes/commit, early third", "middle third", "late third",
                 "late / early", "largest commit", "bytes sent, all commits", "bytes logged", "sent / logged"], rows))
    print("\nBytes per commit, every commit (KiB):\n")
    for r in results:
        print(f"- {LIB_LABELS[r['lib']]}: " + " ".join(f"{b / 1024:.0f}" for b in r["per_commit"]))


if __name__ == "__main__":
    main()
