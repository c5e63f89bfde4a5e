#!/usr/bin/env python
"""Fail-over time: seconds from SIGKILL of hf_mpwriter's uploader to the next commit on the Hub.

Two hf_mpwriter worker processes log one scalar every 5 ms with a 2 s commit interval. Repeatedly:
wait until the current uploader (pid in ``<logdir>/.hf_mpwriter/uploader.json``) has committed,
wait a random fraction of an interval, SIGKILL it, then poll (every 20 ms) for a new uploader and
for the first commit the test Hub receives once the new uploader exists (so a commit the dead one
had already sent is not counted). At the end the workers close and the bench checks that the repo
holds every byte they wrote.

Expected: the writers' heartbeat (2 s) notices the free lock and spawns a new uploader, which
reconciles the job left in flight and commits at once: within one commit interval plus a few
seconds. ``huggingface_hub.HFSummaryWriter`` has no equivalent (its scheduler is a thread of the
training process).

    python scripts/bench_failover.py            # 8 kills (~1 min)
    python scripts/bench_failover.py --quick    # 3 kills (<1 min)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import Bench, StatsSampler, header, median, remote_coverage, table  # noqa: E402


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 kills")
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--interval", type=float, default=2.0, help="commit interval (s)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    kills = args.kills or (3 if args.quick else 8)
    rng = random.Random(0)

    spawn_s, commit_s = [], []
    with Bench("failover") as bench:
        repo_id, logdir = "bench/failover", bench.tmp / "logs"
        sampler = StatsSampler(bench.server, repo_id, interval=0.5)  # only for the final bookkeeping
        workers = bench.start_many(args.workers, lib="hf_mpwriter", repo_id=repo_id, logdir=str(logdir),
                                   commit_every_s=args.interval, tick_s=0.005, per_tick=1)
        for w in workers:
            w.send("go")
        for k in range(kills):
            pid = wait_until(lambda: bench.uploader_pid(logdir), 60, "live uploader")
            before = bench.server.commit_count(repo_id)
            wait_until(lambda b=before: bench.server.commit_count(repo_id) > b, 60, "commit by the live uploader")
            time.sleep(rng.uniform(0, args.interval))
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            new_seen = None
            while True:  # poll: a new uploader, then the first commit once it exists
                now = time.monotonic()
                if now - t_kill > 120:
                    raise TimeoutError("no commit within 120 s of the kill")
                if new_seen is None:
                    new = bench.uploader_pid(logdir)
                    if new is not None and new != pid:
                        new_seen, base = now, bench.server.commit_count(repo_id)
                elif bench.server.commit_count(repo_id) > base:
                    spawn_s.append(new_seen - t_kill)
                    commit_s.append(now - t_kill)
                    break
                time.sleep(0.02)
            print(f"  kill {k + 1}: new uploader after {spawn_s[-1]:.2f} s, commit after {commit_s[-1]:.2f} s",
                  file=sys.stderr, flush=True)
        for w in workers:
            w.send("stop")
        for w in workers:
            w.wait("closed", timeout=300)
        bench.finish(workers)
        bench.wait_uploader_gone(logdir)
        sampler.stop()
        coverage = remote_coverage(bench.server, repo_id, logdir)

    print(header(f"{args.workers} hf_mpwriter worker processes, one scalar each every 5 ms, commit interval "
                 f"{args.interval:g} s; {kills} SIGKILLs of the uploader") + "\n")
    rows = [
        ["hf_mpwriter", args.interval, kills, f"{median(spawn_s):.2f} / {max(spawn_s):.2f}",
         f"{median(commit_s):.2f} / {max(commit_s):.2f}",
         f"{median(commit_s) / args.interval:.2f}× / {max(commit_s) / args.interval:.2f}×",
         f"{coverage:.0%}"],
        ["huggingface_hub.HFSummaryWriter", args.interval, "–",
         "n/a — HFSummaryWriter's scheduler thread dies with its process", "–", "–", "–"],
    ]
    print(table(["library", "commit interval (s)", "kills", "new uploader after (s), median / max",
                 "next commit after (s), median / max", "vs interval, median / max",
                 "written bytes on the Hub at the end"], rows))


if __name__ == "__main__":
    main()
