#!/usr/bin/env python
"""The job run's cost on one node: the uploader's CPU for reducing the ranks' scalars (and histograms),
and its size.

Simulates one node's hour (8 ranks x 50 scalar tags at 1 step/s by default; ``--histograms N``: N
histogram tags too, of 10,000 values each, every ``--histogram-every`` steps, on tensorboardX's default
buckets): the ranks' event files are written with this package's own encoders, interval by interval
(``--interval`` seconds, a commit interval); after each interval the real
:class:`~hf_mpwriter.uploader.jobrun.view.JobView` reduces what was added, as the uploader does before a
commit. Measured in the same run, as the baseline: the CPU of TensorBoard's own reader
(``EventFileLoader``, what any TensorBoard spends) loading the same rank files once. Prints the
reduction's CPU per simulated hour as a share of one core, per record, its ratio to the baseline, the
job run's bytes per hour and points per tag; nothing passes or fails.

    python scripts/bench_job_view.py                  # one simulated hour (~1 min)
    python scripts/bench_job_view.py --minutes 5      # a quick look
    python scripts/bench_job_view.py --histograms 5 --histogram-every 10

What it does not simulate: the ranks' writing (in other processes, it costs the uploader nothing) and
the commit. A multi-node job's leader, merging every node's points: ``bench_job_merge.py``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hf_mpwriter.events.encoding import scalar_event, summary_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.uploader.jobrun.view import JobView
from hf_mpwriter.writer.histogram import histogram_summary_bytes


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tensorboard_read_cpu(logdir: Path) -> float:
    """CPU seconds of TensorBoard's reader loading every rank file once (every record parsed)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    start = time.process_time()
    for path in sorted(logdir.glob("rank-*/*tfevents*")):
        for _ in EventFileLoader(str(path)).Load():
            pass
    return time.process_time() - start


def run(ranks: int, tags: int, minutes: float, interval: float, root: Path, histograms: int = 0,
        histogram_every: int = 10) -> dict[str, float]:
    logdir, clock = root / "logs", _Clock()
    writers = []
    for rank in range(ranks):
        run_dir = logdir / f"rank-{rank:03d}"
        run_dir.mkdir(parents=True)
        writers.append(EventFileWriter(run_dir, max_queue=1_000_000, flush_secs=3600))
    names = [f"train/metric_{i:02d}" for i in range(tags)]
    rng = np.random.default_rng(0)
    samples = [rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 3), 10_000) for _ in range(16)]
    logged = 0
    view = JobView(logdir, ranks, wait=interval, clock=clock)
    steps, cpu, step = int(minutes * 60), 0.0, 0
    while step < steps:
        last = min(steps, step + int(interval))
        for rank, writer in enumerate(writers):
            for s in range(step, last):
                for i, tag in enumerate(names):
                    writer.add_serialized(scalar_event(tag, float(rank * 0.01 + i + s * 1e-3), s, 1e9 + s))
                for j in range(histograms if s % histogram_every == 0 else 0):
                    summary = histogram_summary_bytes(f"weights/layer_{j:02d}", samples[(rank + j + s) % len(samples)])
                    assert summary is not None
                    writer.add_serialized(summary_event(summary, s, 1e9 + s))
                    logged += 1
            writer.flush()
        step = last
        clock.now = float(step)
        start = time.process_time()
        view.update(final=step >= steps)
        cpu += time.process_time() - start
    view.close()
    for writer in writers:
        writer.close()
    restart, lost = _restart_cost(logdir, ranks, interval, clock)
    resume_s, resume_updates = _resume_cost(logdir, ranks, names, steps, interval, clock)
    records = ranks * tags * steps + logged
    job_bytes = sum(p.stat().st_size for p in (logdir / "job").glob("*tfevents*"))
    baseline = _tensorboard_read_cpu(logdir)
    hours = steps / 3600.0
    return {"records": records, "cpu_s": cpu, "core_share": cpu / (steps or 1), "us_per_record": cpu / records * 1e6,
            "tensorboard_read_s": baseline, "ratio": cpu / baseline, "job_mb_per_hour": job_bytes / 1e6 / hours,
            "points_per_tag_per_hour": view.points / tags / hours, "restart_s": restart, "restart_lost_s": lost,
            "resume_s": resume_s, "resume_updates": resume_updates}


def _restart_cost(logdir: Path, ranks: int, interval: float, clock: _Clock) -> tuple[float, float]:
    """Wall seconds of a restarted uploader's job view up to its first update: from its state file, and
    without it (lost: the ranks' files read from their start, up to one commit cycle's budget)."""
    from hf_mpwriter.timing import JOB_VIEW_READ_S
    from hf_mpwriter.uploader.jobrun.view import STATE_FILE

    start = time.monotonic()
    JobView(logdir, ranks, wait=interval, clock=clock).update(budget=JOB_VIEW_READ_S)
    restart = time.monotonic() - start
    (logdir / ".hf_mpwriter" / STATE_FILE).unlink()
    start = time.monotonic()
    JobView(logdir, ranks, wait=interval, clock=clock).update(budget=JOB_VIEW_READ_S)
    return restart, time.monotonic() - start


def _resume_cost(logdir: Path, ranks: int, names: list[str], steps: int, interval: float,
                 clock: _Clock) -> tuple[float, int]:
    """CPU seconds of the job view (its uploader's, from its state file) until it has made the job run anew after
    the job resumed from a checkpoint 10 minutes back (every rank restarted with ``purge_step`` there and logged
    one interval again), and its updates, each within one commit cycle's budget."""
    from hf_mpwriter.events.encoding import session_start_event
    from hf_mpwriter.timing import JOB_VIEW_READ_S

    back = max(0, steps - 600)
    for rank in range(ranks):
        writer = EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1_000_000, flush_secs=3600, filename_suffix=".2")
        writer.add_serialized(session_start_event(back, 2e9))
        for s in range(back, back + int(interval)):
            for i, tag in enumerate(names):
                writer.add_serialized(scalar_event(tag, float(rank * 0.01 + i - s * 1e-3), s, 2e9 + s))
        writer.close()
    view = JobView(logdir, ranks, wait=interval, clock=clock)
    start, updates = time.process_time(), 0
    while True:
        view.update(budget=JOB_VIEW_READ_S)
        updates += 1
        if not view.backlog:
            break
    view.close()
    return time.process_time() - start, updates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8, help="ranks of the node (default 8)")
    parser.add_argument("--tags", type=int, default=50, help="scalar tags per rank (default 50)")
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated minutes at 1 step/s (default 60)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between reductions (default 30)")
    parser.add_argument("--histograms", type=int, default=0, help="histogram tags per rank (default 0)")
    parser.add_argument("--histogram-every", type=int, default=10, help="steps between histograms (default 10)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_job_view-"))
    try:
        r = run(args.ranks, args.tags, args.minutes, args.interval, root, args.histograms, args.histogram_every)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    extra = f" and {args.histograms} histogram tags every {args.histogram_every} steps" if args.histograms else ""
    print(f"{args.ranks} ranks x {args.tags} tags{extra} x {args.minutes:g} min at 1 step/s, a reduction every "
          f"{args.interval:g} s ({r['records']:,} records)\n")
    print(f"a restarted uploader's first update: {r['restart_s']:.2f} s from its state file, "
          f"{r['restart_lost_s']:.2f} s without it (reading from the start, one cycle's budget)")
    print(f"the job resumed from a checkpoint 10 minutes back: {r['resume_s']:.2f} s of CPU to make the job run anew "
          f"from there ({r['resume_updates']} update(s))\n")
    print("| reduction CPU | share of one core | per record | TensorBoard's reader, same files | ratio "
          "| job run per hour | points per tag per hour |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {r['cpu_s']:.1f} s | {r['core_share']:.2%} | {r['us_per_record']:.1f} µs | "
          f"{r['tensorboard_read_s']:.1f} s | {r['ratio']:.2f}x | {r['job_mb_per_hour']:.1f} MB | "
          f"{r['points_per_tag_per_hour']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
