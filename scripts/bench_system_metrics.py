#!/usr/bin/env python
"""What per-node system metrics cost: the uploader's CPU, and the training processes' step time.

1. **Per sample**, in this process: :class:`hf_mpwriter.uploader.system_metrics.SystemMetrics` reads every
   source (psutil: CPU times, memory, swap, the logdir's disk use and I/O, network; NVML where a GPU
   is) and writes the sample with the project's event-file writer; CPU time (``time.thread_time``)
   per sample, and what that is as a share of one core at the default period (10 s).
2. **The uploader process**: 2 writer processes log (2 ``add_scalar`` every 10 ms, commits to the
   test Hub every 10 s) for ``--window`` seconds; the uploader's CPU time (user + system, from
   psutil) over that window, with system metrics off, every 10 s (the default) and every 1 s. The
   sampler also says, when the uploader stops, how many samples it took and its own CPU time.
3. **Step time of training**: ``scripts/bench_interference.py``'s own measurement (its ``run_one``:
   one CPU-bound worker process per core, 2 ``add_scalar`` per step, commits every 1 s), with
   hf_mpwriter's writers given ``system_metrics`` off, 10 s and 1 s, against no logger.

    python scripts/bench_system_metrics.py            # ~4 min
    python scripts/bench_system_metrics.py --quick    # ~1.5 min
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_interference  # noqa: E402
import psutil  # noqa: E402
from _bench_common import Bench, header, table  # noqa: E402

from hf_mpwriter.timing import SYSTEM_METRICS_PERIOD_S as DEFAULT_PERIOD_S  # noqa: E402
from hf_mpwriter.uploader.system_metrics import SystemMetrics  # noqa: E402

#: label -> system_metrics argument
CONDITIONS = {"off": False, "every 10 s (default)": True, "every 1 s": 1}


def per_sample(n: int) -> dict[str, float]:
    """CPU and wall time of one sample (read + write), in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        sampler = SystemMetrics(tmp, period=DEFAULT_PERIOD_S)
        sampler._write(sampler.sample())  # warm: imports, the event file, the first readings
        cpu, wall = [], []
        for _ in range(n):
            c0, w0 = time.thread_time(), time.perf_counter()
            sampler._write(sampler.sample())
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        sampler.stop()
        size = sum(p.stat().st_size for p in sampler.run_dir.iterdir())
    return {"cpu_us": statistics.median(cpu) * 1e6, "wall_us": statistics.median(wall) * 1e6,
            "bytes": size / (n + 1)}


def uploader_cpu(bench: Bench, label: str, setting: Any, window: float, run: int) -> dict[str, Any]:
    """The uploader's CPU share over ``window`` seconds of logging by 2 writer processes."""
    repo_id, logdir = f"bench/sysm-{run}", bench.tmp / f"sysm-{run}"
    workers = bench.start_many(2, lib="hf_mpwriter", repo_id=repo_id, logdir=str(logdir), commit_every_s=10.0,
                               duration_s=window, per_tick=2, tick_s=0.01, kwargs={"system_metrics": setting})
    deadline = time.monotonic() + 30
    pid = bench.uploader_pid(logdir)
    while pid is None and time.monotonic() < deadline:
        time.sleep(0.1)
        pid = bench.uploader_pid(logdir)
    assert pid is not None, "no uploader"
    uploader = psutil.Process(pid)
    time.sleep(2.0)  # its start-up (imports, first commit) is not what we measure
    before, t0 = uploader.cpu_times(), time.monotonic()
    for w in workers:
        w.send("go")
    for w in workers:
        w.wait("logged", timeout=window + 120)
    after, t1 = uploader.cpu_times(), time.monotonic()
    for w in workers:
        w.wait("closed", timeout=300)
    bench.finish(workers)
    bench.wait_uploader_gone(logdir)
    used = (after.user + after.system) - (before.user + before.system)
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    said = re.findall(r"system metrics: (\d+) samples, ([\d.]+) ms of CPU in all \(([\d.]+) ms for the first.*?"
                      r"then ([\d.]+) ms per sample", log)
    numbers = [float(x) for x in said[-1]] if said else [0.0, 0.0, 0.0, 0.0]
    return {"label": label, "percent": 100 * used / (t1 - t0), "seconds": t1 - t0, "samples": int(numbers[0]),
            "sampler_ms": numbers[1], "first_ms": numbers[2], "per_sample_ms": numbers[3]}


def interference(bench: Bench, label: str, setting: Any, run: int, procs: int, steps: int, work: int,
                 settle: float) -> list[float]:
    """Step times from bench_interference.run_one, hf_mpwriter with ``system_metrics=setting``."""
    if setting is None:
        return bench_interference.run_one(bench, "none", run, procs, steps, work, settle)["times"]
    start_many = bench.start_many

    def with_setting(n: int, **cfg: Any) -> Any:
        return start_many(n, **cfg, kwargs={"system_metrics": setting})

    bench.start_many = with_setting  # type: ignore[method-assign]
    try:
        tag = f"{run}-{re.sub(r'[^a-z0-9]', '', label)}"
        return bench_interference.run_one(bench, "hf_mpwriter", tag, procs, steps, work, settle)["times"]  # type: ignore[arg-type]
    finally:
        bench.start_many = start_many  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, 1 round")
    parser.add_argument("--window", type=float, default=None, help="seconds of logging per uploader measurement")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the step-time measurement")
    parser.add_argument("--steps", type=int, default=None, help="steps per process in the step-time measurement")
    parser.add_argument("--work", type=int, default=150_000, help="pure-Python loop iterations per step")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--parts", default="sample,uploader,steps",
                        help="which measurements, comma-separated: sample, uploader, steps")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    window = args.window or (20.0 if args.quick else 60.0)
    rounds = args.rounds or (1 if args.quick else 3)
    steps = args.steps or (800 if args.quick else 1500)

    sample = per_sample(100 if args.quick else 500) if "sample" in parts else None
    uploads: list[dict] = []
    steps_by: dict[str, list[list[float]]] = {"no logger": [], **{k: [] for k in CONDITIONS}}
    with Bench("system_metrics") as bench:
        for i, (label, setting) in enumerate(CONDITIONS.items() if "uploader" in parts else []):
            t0 = time.monotonic()
            uploads.append(uploader_cpu(bench, label, setting, window, i))
            print(f"  done: uploader CPU, {label} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        settings: list[tuple[str, Any]] = [("no logger", None), *CONDITIONS.items()]
        for r in range(rounds if "steps" in parts else 0):
            order = settings[r % len(settings):] + settings[:r % len(settings)]
            for label, setting in order:
                t0 = time.monotonic()
                steps_by[label].append(interference(bench, label, setting, r, args.procs, steps, args.work, 3.0))
                print(f"  done: round {r + 1} {label} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

    print(header("system metrics: sampling cost and interference") + "\n")
    if sample is not None:
        print(f"**One sample** (read every source + write it; median of {100 if args.quick else 500}): "
              f"{sample['cpu_us']:.0f} µs CPU ({sample['wall_us']:.0f} µs wall), {sample['bytes']:.0f} bytes of "
              f"event file; at the default period ({DEFAULT_PERIOD_S:g} s): "
              f"{100 * sample['cpu_us'] * 1e-6 / DEFAULT_PERIOD_S:.4f}% of one core.\n")
    if uploads:
        print_uploads(uploads, window)
    if steps_by["no logger"]:
        print_steps(steps_by, args.procs, steps, rounds)


def print_uploads(uploads: list[dict], window: float) -> None:
    rows = []
    base = uploads[0]["percent"]
    for u in uploads:
        own = (f"{u['sampler_ms']:.1f} ms: {u['first_ms']:.1f} for the first, then {u['per_sample_ms']:.2f} per sample"
               if u["samples"] else "–")
        rows.append([u["label"], f"{u['percent']:.2f}%", f"{u['percent'] - base:+.2f} points", f"{u['samples']}", own])
    print(f"**The uploader process** (2 writers, 2 add_scalar / 10 ms each, commits every 10 s, "
          f"{window:.0f} s window):\n")
    print(table(["system_metrics", "uploader CPU (% of one core)", "vs off", "samples (uploader's life)",
                 "sampler thread's own CPU"], rows) + "\n")


def print_steps(steps_by: dict[str, list[list[float]]], procs: int, steps: int, rounds: int) -> None:
    print(f"**Step time** ({procs} processes x {steps} steps x {rounds} round(s), bench_interference's "
          f"run_one; ratios within each round):\n")
    rows = []
    for label, per_round in steps_by.items():
        meds = [statistics.median(t) for t in per_round]
        ratios = [m / statistics.median(none) for m, none in zip(meds, steps_by["no logger"], strict=True)]
        spread = "" if len(ratios) == 1 else f" ({min(ratios):.3f}–{max(ratios):.3f})"
        rows.append([label if label == "no logger" else f"hf_mpwriter, system_metrics {label}",
                     f"{statistics.median(meds) * 1e3:.2f}", f"{statistics.median(ratios):.3f}×{spread}"])
    print(table(["logger", "median step (ms)", "vs no logger"], rows))


if __name__ == "__main__":
    main()
