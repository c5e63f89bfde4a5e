#!/usr/bin/env python
"""Seconds from ``add_scalar`` to readable on the target: a bucket, a repository, and
``huggingface_hub.HFSummaryWriter``.

One worker per configuration logs a scalar every 100 ms whose step is the wall time it was logged at
(in tenths of a second), so the target itself says when each record was written. The bench process
hosts the test Hub, reads what the target holds every 200 ms (whole records only, parsed as
TensorBoard would), and notes when each step first becomes readable. Printed: p50 and p95 of
(first readable - logged) over every step of the window.

Configurations: hf_mpwriter to a bucket at its default interval (10 s); hf_mpwriter to a repository
and the anchor at ``--repo-interval`` (default 1 minute: the repository default, 5 minutes, would make
the bench last half an hour; freshness scales with the interval).

    python scripts/bench_freshness.py            # 150 s windows (~8 min)
    python scripts/bench_freshness.py --quick    # 40 s windows, repo interval 20 s
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, header, table  # noqa: E402

from hf_mpwriter.events.records import iter_records  # noqa: E402


def readable_steps(files: dict[str, bytes]) -> set[int]:
    """Steps of every whole record in ``files`` (what TensorBoard would read)."""
    import io

    from tensorboardX.proto.event_pb2 import Event

    steps = set()
    for data in files.values():
        for _, payload in iter_records(io.BytesIO(data), 0, len(data)):
            event = Event.FromString(payload)
            if event.summary.value:
                steps.add(event.step)
    return steps


def watch(read: Callable[[], dict[str, bytes]], seen: dict[int, float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            now = time.time()
            for step in readable_steps(read()) - seen.keys():
                seen[step] = now
        except KeyError:
            pass  # nothing there yet
        stop.wait(0.2)


def run_one(bench: Bench, name: str, lib: str, repo_id: str, interval: float | None, window: float) -> dict:
    logdir = bench.tmp / name
    cfg = dict(lib=lib, repo_id=repo_id, logdir=str(logdir), duration_s=window, tick_s=0.1, per_tick=1,
               step_clock=True)
    if interval is not None:
        cfg["commit_every_s"] = interval
    else:
        cfg["default_interval"] = True
    if repo_id.startswith("hf://buckets/"):
        bucket = repo_id[len("hf://buckets/"):]

        def read() -> dict[str, bytes]:
            return {p: d for p, d in bench.server.bucket_files(bucket).items() if "tfevents" in p}
    else:
        bench.server.create_repo(repo_id)

        def read() -> dict[str, bytes]:
            return {p: bench.server.read_file(repo_id, p) for p in bench.server.list_files(repo_id) if "tfevents" in p}
    seen: dict[int, float] = {}
    stop = threading.Event()
    (worker,) = bench.start_many(1, **cfg)
    watcher = threading.Thread(target=watch, args=(read, seen, stop), daemon=True)
    watcher.start()
    worker.send("go")
    worker.wait("logged", timeout=window + 120)
    worker.send("stop")
    worker.wait("closed", timeout=300)
    stop.set()
    watcher.join()
    now = time.time()  # one last look once the writer has closed: what close() made readable
    for step in readable_steps(read()) - seen.keys():
        seen[step] = now
    bench.finish([worker])
    delays = sorted(seen[s] - s / 10 for s in seen)
    return {"name": name, "lib": lib, "interval": interval, "steps": len(delays),
            "p50": statistics.median(delays) if delays else float("nan"),
            "p95": delays[int(0.95 * (len(delays) - 1))] if delays else float("nan")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 s windows, repo interval 20 s")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--repo-interval", type=float, default=None, help="seconds, for the repo and the anchor")
    args = parser.parse_args(argv)
    window = args.window or (40.0 if args.quick else 150.0)
    repo_interval = args.repo_interval or (20.0 if args.quick else 60.0)
    configs = [("bucket", "hf_mpwriter", "hf://buckets/bench/fresh", None),
               ("repo", "hf_mpwriter", "bench/fresh-repo", repo_interval),
               ("anchor", "anchor", "bench/fresh-anchor", repo_interval)]
    results = []
    with Bench("freshness") as bench:
        for name, lib, repo_id, interval in configs:
            t0 = time.monotonic()
            results.append(run_one(bench, name, lib, repo_id, interval, window))
            print(f"  done: {name} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(header(f"one scalar every 100 ms for {window:g} s; target read every 200 ms") + "\n")
    rows = [[r["name"], LIB_LABELS[r["lib"]], "default (10 s)" if r["interval"] is None else f"{r['interval']:g} s",
             r["steps"], f"{r['p50']:.1f}", f"{r['p95']:.1f}"] for r in results]
    print(table(["target", "library", "commit interval", "steps seen", "p50 s (logged -> readable)", "p95 s"], rows))


if __name__ == "__main__":
    main()
