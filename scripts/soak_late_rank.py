#!/usr/bin/env python
"""A rank late by 40 s, in real processes, read back from the target with TensorBoard's reader.

Four real writer processes (``tests/proc_writer.py``, ``WORLD_SIZE=4``) log ``loss`` and ``step_time`` at
10 steps a second to a local target through the node's uploader; rank 2 stalls ``--stall-s`` seconds
(default 40) before step 100 and logs every later step that much after the others (a data loader, a
checkpoint of its own). Too long for the test suite (a minute and more), so a script: it prints, for
each tag, the steps whose job run point misses a rank, and whether the job run equals the statistics of
the four rank runs at every step, as TensorBoard reads them at the target. Exit 0 when it does.

    python scripts/soak_late_rank.py              # rank 2 late by 40 s
    python scripts/soak_late_rank.py --stall-s 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

ROOT = Path(__file__).resolve().parent.parent
WORLD, STEPS = 4, 200
ALL = {event_accumulator.SCALARS: 0}


def scalars(run: Path, tag: str) -> dict[int, float]:
    acc = event_accumulator.EventAccumulator(str(run), size_guidance=ALL)
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)} if tag in acc.Tags()["scalars"] else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall-s", type=float, default=40.0, help="how late rank 2 runs from step 100 (default 40)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak_late_rank_") as tmp:
        logdir, target = Path(tmp) / "logs", Path(tmp) / "target"
        cfg = {"logdir": str(logdir), "target_dir": str(target), "commit_every_s": 2.0, "step_time": True,
               "sleep": 0.1, "steps": STEPS, "close_timeout": 120}
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        procs = []
        started = time.monotonic()
        for rank in range(WORLD):
            mine = {**cfg, **({"stall_at": 100, "stall_s": args.stall_s} if rank == 2 else {})}
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "proc_writer.py"), json.dumps(mine)],
                                          env={**env, "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in procs:
            proc.wait(600)
        while (logdir / ".hf_mpwriter" / "uploader.json").exists() and time.monotonic() - started < 900:
            time.sleep(0.5)  # the uploader writes the job run's last points, commits them and exits
        copy = target / "tensorboard" / "logs"
        ok = True
        for tag in ("loss", "step_time"):
            ranks = [scalars(copy / f"rank-{r:03d}", tag) for r in range(WORLD)]
            job_mean, job_n = scalars(copy / "job", tag), scalars(copy / "job", f"~job/{tag}/ranks")
            short = sorted(step for step, n in job_n.items() if n < WORLD)
            wrong = [step for step in range(STEPS) if step not in job_mean or abs(
                job_mean[step] - np.mean([r[step] for r in ranks])) > 1e-4 * max(1.0, abs(job_mean[step]))]
            print(f"{tag}: {len(job_mean)} job points of {STEPS} steps; points missing a rank: {short[:10]}"
                  f"{' ...' if len(short) > 10 else ''} ({len(short)}); steps whose mean differs from the ranks': "
                  f"{wrong[:10]} ({len(wrong)})")
            ok = ok and not short and not wrong and len(job_mean) == STEPS
        status = json.loads((logdir / ".hf_mpwriter" / "job_view.json").read_text())
        print(f"status: late {status['late']}, behind {status['behind']}, slowest at the last step {status['slowest']}")
        print(f"rank 2 late by {args.stall_s:.0f} s: the job run {'equals' if ok else 'DOES NOT equal'} the ranks' statistics "
              f"at every step ({time.monotonic() - started:.0f} s)")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
