#!/usr/bin/env python
"""Preemption as a cluster does it: SIGTERM, a 30 s grace period, SIGKILL, the node's disk deleted.
hf_mpwriter vs ``huggingface_hub.HFSummaryWriter``, same schedule, same run.

4 ranks log one scalar every 10 ms to one repository on the project's test Hub (the real client,
Xet on) with the default 5-minute interval. After ``--log-seconds`` (40 s, as measured in the issue)
the bench sends SIGTERM to every process of the job (the ranks and hf_mpwriter's uploader, as
SLURM's cgroup tracking and systemd do), or to the ranks only (torchrun's process group; the
uploader runs in its own session), waits up to 30 s, SIGKILLs what is left and deletes the logdir.
Printed per library and case: seconds from SIGTERM to the last commit the Hub applied, the
records logged before SIGTERM, and how many of them the repository does not hold.

The anchor writes each rank into its own logdir and ``path_in_repo`` (its best case: a shared one
would have each process upload every rank's files, and tensorboardX could give two ranks one file).

    python scripts/bench_preemption.py           # 40 s of logging per run (~5 min)
    python scripts/bench_preemption.py --quick   # 10 s (~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, header, table  # noqa: E402

RANKS = 4
GRACE_S = 30.0
PREFIX = "tensorboard"


class Rank:
    """A rank process; the steps it printed (after ``add_scalar`` returned) with their arrival times."""

    def __init__(self, bench: Bench, lib: str, rank: int, repo_id: str, logdir: Path) -> None:
        cfg = {"lib": lib, "rank": rank, "repo_id": repo_id, "logdir": str(logdir)}
        self.err = bench.tmp / f"{lib}-{rank}.err"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)], stdout=subprocess.PIPE,
                                         stderr=err, text=True, env=bench.env())
        self.steps: list[tuple[float, int]] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ready"):
                self.ready.set()
            elif line.strip().isdigit():
                self.steps.append((time.time(), int(line)))

    def logged_before(self, t0: float) -> int:
        """Steps printed before ``t0`` (each was logged before it)."""
        return sum(1 for at, _ in self.steps if at < t0)


def run(bench: Bench, lib: str, case: str, log_seconds: float) -> dict:
    slug = case.replace(" ", "-")
    repo_id, logdir = f"bench/preempt-{lib}-{slug}", bench.tmp / f"{lib}-{slug}"
    ranks = [Rank(bench, lib, r, repo_id, logdir) for r in range(RANKS)]
    for rank in ranks:
        if not rank.ready.wait(180):
            raise RuntimeError(f"{lib} rank did not start ({rank.proc.poll()}): {rank.err.read_text()[-3000:]}")
    uploader = None
    while lib == "hf_mpwriter" and uploader is None:  # the writers started it before returning: find it
        uploader = bench.uploader_pid(logdir)
        time.sleep(0.05)
    time.sleep(log_seconds)
    t0 = time.time()
    for rank in ranks:
        rank.proc.send_signal(signal.SIGTERM)
    if uploader is not None and case == "every process":
        os.kill(uploader, signal.SIGTERM)
    others = [psutil.Process(uploader)] if uploader is not None and psutil.pid_exists(uploader) else []
    deadline = time.monotonic() + GRACE_S
    killed = 0
    for rank in ranks:
        try:
            rank.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            rank.proc.kill()
            killed += 1
    _, alive = psutil.wait_procs(others, timeout=max(0.0, deadline - time.monotonic()))
    for proc in alive:
        proc.kill()
    killed += len(alive)
    for rank in ranks:
        rank.proc.wait(10)
    shutil.rmtree(logdir)  # the node's local disk does not survive preemption
    logged = {r: rank.logged_before(t0) for r, rank in enumerate(ranks)}
    held = _held(bench, repo_id)
    lost = sum(max(0, n - len(set(range(n)) & set(held.get(r, Counter())))) for r, n in logged.items())
    after = [c for c in _commit_times(bench, repo_id) if c >= t0]
    return {"lib": lib, "case": case, "logged": sum(logged.values()), "lost": lost,
            "last_commit_s": (max(after) - t0) if after else None, "killed": killed}


def _commit_times(bench: Bench, repo_id: str) -> list[float]:
    if not bench.server.repo_exists(repo_id):
        return []
    return [datetime.fromisoformat(c["date"].replace("Z", "+00:00")).timestamp() for c in bench.server.commits(repo_id)]


def _held(bench: Bench, repo_id: str) -> dict[int, Counter]:
    """Steps per rank the repository holds (read with TensorBoard's reader)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboardX.proto.event_pb2 import Event

    held: dict[int, Counter] = {}
    if not bench.server.repo_exists(repo_id):
        return held
    copy = bench.tmp / f"remote-{repo_id.replace('/', '-')}"
    for path in bench.server.list_files(repo_id):
        if "tfevents" not in path or "/rank-" not in f"/{path}":  # (the job run's mean has the ranks' tag)
            continue
        rank = int(next(part for part in path.split("/") if part.startswith("rank-")).split("-")[1])
        dest = copy / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(bench.server.read_file(repo_id, path))
        for raw in RawEventFileLoader(str(dest)).Load():
            event = Event.FromString(raw)
            if any(v.tag == "loss" for v in event.summary.value):
                held.setdefault(rank, Counter())[event.step] += 1
    return held


def worker(cfg: dict) -> None:
    sys.modules["torch"] = None  # type: ignore[assignment]  # not needed; tensorboardX would import it
    lib, rank, logdir = cfg["lib"], cfg["rank"], Path(cfg["logdir"])
    if lib == "hf_mpwriter":
        import hf_mpwriter

        writer = hf_mpwriter.HFSummaryWriter(cfg["repo_id"], logdir=logdir, rank=rank)  # its defaults: 5 min
    else:
        import huggingface_hub

        writer = huggingface_hub.HFSummaryWriter(repo_id=cfg["repo_id"], logdir=str(logdir / f"rank-{rank:03d}"),
                                                 path_in_repo=f"{PREFIX}/rank-{rank:03d}")
    print("ready", flush=True)
    step = 0
    while True:
        writer.add_scalar("loss", float(step), step)
        print(step, flush=True)
        step += 1
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of logging per run instead of 40 s")
    parser.add_argument("--log-seconds", type=float, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    log_seconds = args.log_seconds or (10.0 if args.quick else 40.0)
    print(header(f"{RANKS} ranks, one scalar every 10 ms, default 5-minute interval, SIGTERM after {log_seconds:g} s, "
                 f"{GRACE_S:g} s grace, SIGKILL, logdir deleted"))
    rows = []
    with Bench("preemption") as bench:
        for case in ("every process", "ranks only"):
            for lib in ("hf_mpwriter", "anchor"):
                result = run(bench, lib, case, log_seconds)
                share = result["lost"] / max(1, result["logged"])
                last = "none" if result["last_commit_s"] is None else f"{result['last_commit_s']:.1f} s"
                rows.append([case, LIB_LABELS[lib], last, result["logged"], f"{result['lost']} ({share:.1%})",
                             result["killed"]])
                print(f"  {case:13s} {LIB_LABELS[lib]:32s} last commit after SIGTERM: {last:7s} lost {share:.1%}",
                      flush=True)
    print()
    print(table(["SIGTERM to", "library", "SIGTERM -> last commit", "records logged before SIGTERM",
                 "lost", "SIGKILLed"], rows))


if __name__ == "__main__":
    main()
