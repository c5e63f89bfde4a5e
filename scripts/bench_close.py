#!/usr/bin/env python
"""Time for ``close()`` to return with everything committed, and memory over a long run:
hf_mpwriter vs ``huggingface_hub.HFSummaryWriter``.

1. Close: 4 worker processes log one scalar every 5 ms for a few seconds with a 60 s commit
   interval (so what they logged is still to be committed), then close, all at once or rank r
   after r seconds: ``HFSummaryWriter.close()`` for hf_mpwriter, ``__exit__`` (tensorboardX
   close + ``scheduler.trigger().result()``) for the anchor. Printed: each rank's close time,
   the share of the written event-file bytes the Hub holds at the moment the last close has
   returned (100% = everything committed when close returns), and the commits the closes made.
   hf_mpwriter commits once for ranks that close together: an early rank's close waits for the
   others, or until min(commit_every, ~28 s) has passed since the uploader's last commit.
2. Memory: one worker logs ``--scalars`` scalars (50 every 5 ms) with a 2 s commit interval; the
   bench samples the RSS (psutil) of the worker and of hf_mpwriter's uploader process every
   0.25 s. Printed: RSS at the start of logging, at its peak and at the end. Flat means no growth
   with the number of records (every process here imports torch through tensorboardX, the
   uploader too: the baseline is large).

    python scripts/bench_close.py            # 200k scalars (~2 min)
    python scripts/bench_close.py --quick    # 30k scalars (<1 min)
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, fmt_bytes, header, remote_coverage, table  # noqa: E402

LIBS = ("hf_mpwriter", "anchor")


def run_close(bench: Bench, lib: str, n: int, window: float, stagger: float) -> dict:
    repo_id, logdir = f"bench/close-{lib}-{stagger:g}", bench.tmp / f"close-{lib}-{stagger:g}"
    workers = bench.start_many(n, lib=lib, repo_id=repo_id, logdir=str(logdir), commit_every_s=60.0,
                               duration_s=window, tick_s=0.005, per_tick=1, hold=True)
    if lib == "hf_mpwriter":
        bench.uploader_pid(logdir)
    for w in workers:
        w.send("go")
    for w in workers:
        w.wait("logged", timeout=300)
    before = bench.server.commit_count(repo_id)
    for w in workers:
        w.send("stop")  # close: all at once, or rank r after r * stagger seconds
        time.sleep(stagger)
    closes = [w.wait("closed", timeout=300)["close_s"] for w in workers]
    coverage = remote_coverage(bench.server, repo_id, logdir)  # right after the last close returned
    commits = bench.server.commit_count(repo_id) - before
    bench.finish(workers)
    if lib == "hf_mpwriter":
        bench.wait_uploader_gone(logdir)
    return {"lib": lib, "stagger": stagger, "closes": closes, "coverage": coverage, "commits": commits}


def run_memory(bench: Bench, lib: str, scalars: int) -> dict:
    repo_id, logdir = f"bench/mem-{lib}", bench.tmp / f"mem-{lib}"
    per_tick = 50
    (worker,) = bench.start_many(1, lib=lib, repo_id=repo_id, logdir=str(logdir), commit_every_s=2.0,
                                 steps=scalars // per_tick, per_tick=per_tick, tick_s=0.005)
    samples: dict[str, list[int]] = {"worker": [], "uploader": []}
    done = threading.Event()

    def sample() -> None:
        procs = {"worker": psutil.Process(worker.pid)}
        while not done.is_set():
            if lib == "hf_mpwriter" and "uploader" not in procs:
                pid = bench.uploader_pid(logdir)
                if pid:
                    procs["uploader"] = psutil.Process(pid)
            for name, proc in procs.items():
                try:
                    samples[name].append(proc.memory_info().rss)
                except psutil.Error:
                    pass
            done.wait(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.monotonic()
    worker.send("go")
    logged = worker.wait("logged", timeout=600)
    seconds = time.monotonic() - t0
    done.set()
    thread.join()
    worker.wait("closed", timeout=300)
    bench.finish([worker])
    if lib == "hf_mpwriter":
        bench.wait_uploader_gone(logdir)
    return {"lib": lib, "scalars": logged["scalars"], "seconds": seconds, "samples": samples}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30k scalars, 2 s close window")
    parser.add_argument("--scalars", type=int, default=None, help="scalars logged in the memory run")
    parser.add_argument("--workers", type=int, default=4, help="processes in the close run")
    args = parser.parse_args(argv)
    scalars = args.scalars or (30_000 if args.quick else 200_000)
    window = 2.0 if args.quick else 5.0

    with Bench("close") as bench:
        close_results = [run_close(bench, lib, args.workers, window, stagger) for stagger in (0.0, 1.0)
                         for lib in LIBS]
        print("  close runs done", file=sys.stderr, flush=True)
        mem_results = [run_memory(bench, lib, scalars) for lib in LIBS]

    print(header() + "\n")
    print(f"Close: {args.workers} processes log for {window:g} s (commit interval 60 s), then close all at once, "
          f"or one after another 1 s apart.\n")
    print(table(["library", "ranks close", "close() of each rank (s)", "slowest close() (s)",
                 "written bytes on the Hub when the last close returned", "commits made by the closes"],
                [[LIB_LABELS[r["lib"]], "1 s apart" if r["stagger"] else "at once",
                  " / ".join(f"{c:.2f}" for c in r["closes"]), f"{max(r['closes']):.2f}",
                  f"{r['coverage']:.0%}", r["commits"]] for r in close_results]))
    print(f"\nMemory: one process logs {scalars} scalars (50 every 5 ms), commit interval 2 s; RSS sampled "
          f"every 0.25 s.\n")
    rows = []
    for r in mem_results:
        for name, values in r["samples"].items():
            if not values:
                continue
            proc = "worker (training process)" if name == "worker" else "uploader process"
            rows.append([LIB_LABELS[r["lib"]], proc, f"{r['scalars']} in {r['seconds']:.0f} s",
                         fmt_bytes(values[0]), fmt_bytes(max(values)), fmt_bytes(values[-1]),
                         fmt_bytes(values[-1] - values[0])])
    print(table(["library", "process", "scalars", "RSS at start", "peak", "at end", "end − start"], rows))


if __name__ == "__main__":
    main()
