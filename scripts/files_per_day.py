#!/usr/bin/env python
"""How many files a job leaves in a Hub repository per day, and when it passes the Hub's 100,000.

Measures what a record costs with this library's own writer (a rank logging 20 scalars a step,
tags like ``train/metric_07``; one system-metrics sample of this machine, written by the uploader's
sampler), then prints the README's table from :func:`hf_mpwriter.events.file_count.files_made`, the
function the writer's warning at start uses too:

    files a day = ranks × (1 + bytes a rank writes a day / rotate_bytes)

    python scripts/files_per_day.py                       # the README's table
    python scripts/files_per_day.py --steps-per-s 0.2 --scalars 50 --rotate-mib 16
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
from pathlib import Path

from hf_mpwriter import SummaryWriter
from hf_mpwriter.config import HUB_MAX_FILES
from hf_mpwriter.events.event_file import DEFAULT_ROTATE_BYTES
from hf_mpwriter.events.file_count import TYPICAL_BYTES_PER_RANK_PER_S, bytes_until_files, files_made
from hf_mpwriter.timing import SYSTEM_METRICS_PERIOD_S
from hf_mpwriter.uploader.system_metrics import SystemMetrics
from hf_mpwriter.writer.file_limit import WARN_WITHIN_DAYS, outlook

DAY_S = 86400.0
RANKS = (8, 64, 1024, 8192)
RANKS_PER_NODE = 8


def _size(directory: Path) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(str(directory / "**" / "*tfevents*"), recursive=True))


def scalar_step_bytes(scalars: int, steps: int = 2000) -> float:
    """Bytes one step of ``scalars`` scalars adds to a rank's event files, measured."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        with SummaryWriter(str(run)) as writer:
            writer.flush()
            start = _size(run)
            for step in range(10**6, 10**6 + steps):
                for i in range(scalars):
                    writer.add_scalar(f"train/metric_{i:02d}", 0.123456789 * step + i, step)
        return (_size(run) - start) / steps


def system_sample_bytes(samples: int = 20) -> float:
    """Bytes one system-metrics sample of this machine adds (GPUs add theirs: none here)."""
    with tempfile.TemporaryDirectory() as tmp:
        sampler = SystemMetrics(tmp, SYSTEM_METRICS_PERIOD_S)
        sampler.sample()  # rates need two readings
        sampler._write(sampler.sample())  # opens the file (its version and info records)
        sampler._writer.flush()
        start = _size(Path(tmp))
        for _ in range(samples):
            sampler._write(sampler.sample())
        size = (_size(Path(tmp)) - start) / samples
        sampler.stop()
        return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalars", type=int, default=20, help="scalars a rank logs a step (default 20)")
    parser.add_argument("--steps-per-s", type=float, default=1.0, help="steps a second (default 1)")
    parser.add_argument("--rotate-mib", type=float, default=DEFAULT_ROTATE_BYTES / 2**20, help="rotate_bytes in MiB")
    args = parser.parse_args()
    rotate = int(args.rotate_mib * 2**20)
    step = scalar_step_bytes(args.scalars)
    rate = step * args.steps_per_s
    per_day = rate * DAY_S
    print(f"a scalar record: {step / args.scalars:.1f} bytes; a step of {args.scalars}: {step:.0f} bytes; "
          f"{rate:.0f} bytes/s a rank at {args.steps_per_s:g} step/s = {per_day / 2**20:.1f} MiB a day "
          f"(the library's TYPICAL_BYTES_PER_RANK_PER_S: {TYPICAL_BYTES_PER_RANK_PER_S})")
    sample = system_sample_bytes()
    sys_day = sample * DAY_S / SYSTEM_METRICS_PERIOD_S
    print(f"a system-metrics sample: {sample:.0f} bytes (no GPU) every {SYSTEM_METRICS_PERIOD_S:g} s = "
          f"{sys_day / 2**20:.1f} MiB a day a node: {files_made(1, rotate, sys_day)} files a node a day")
    print(f"rotate_bytes = {rotate / 2**20:g} MiB; the Hub: fewer than {HUB_MAX_FILES:,} files a repository\n")
    print("| ranks | files at start | files per day | files per day with system metrics "
          f"({RANKS_PER_NODE} ranks a node) | days to {HUB_MAX_FILES:,} |")
    print("|---|---|---|---|---|")
    for ranks in RANKS:
        nodes = max(1, ranks // RANKS_PER_NODE)
        days = bytes_until_files(HUB_MAX_FILES, ranks, rotate) / per_day
        print(f"| {ranks:,} | {files_made(ranks, rotate, 0):,} | {files_made(ranks, rotate, per_day):,} | "
              f"{files_made(ranks, rotate, per_day) + files_made(nodes, rotate, sys_day):,} | {days:,.1f} |")
    first = next(n for n in range(2, HUB_MAX_FILES + 1) if outlook(n, rotate, bytes_per_day=per_day).too_many)
    advice = outlook(first, rotate, bytes_per_day=per_day).suggested_rotate
    print(f"\nrank 0 warns at start from {first:,} ranks (the repository full within {WARN_WITHIN_DAYS:g} days at this "
          f"rate); at {first:,} ranks it advises a bucket, or rotate_bytes={advice}")
    for ranks in RANKS:
        seen = outlook(ranks, rotate, bytes_per_day=per_day)
        if seen.too_many:
            print(f"  {ranks:,} ranks: rotate_bytes={seen.suggested_rotate} -> "
                  f"{outlook(ranks, seen.suggested_rotate or rotate, bytes_per_day=per_day).days_to_limit:.1f} days")


if __name__ == "__main__":
    main()
