#!/usr/bin/env python
"""How much logging and uploading slow down a CPU-bound training loop: no logger vs hf_mpwriter vs
tensorboardX.SummaryWriter vs ``huggingface_hub.HFSummaryWriter``, and hf_mpwriter with the job's
store in use (``--store``).

One worker process per CPU runs a fixed amount of pure-Python work per step (``--work`` loop
iterations, ~5 ms here) plus 2 ``add_scalar`` calls per step, with no sleep, so every core is busy
and any CPU the logger or its uploads take (hf_mpwriter's uploader process, the anchor's
scheduler thread, tensorboardX's writer thread) shows up as longer steps. Commit interval 1 s for
the two that upload (the test Hub runs in the bench process and costs them alike). The loop starts
``--settle`` seconds after the writers are created (start-up costs are not counted). Printed: the
median and the mean step time over all steps of all processes, their ratio to the no-logger run
of the same round, and the commits received while the loop ran. With ``--rounds`` > 1 the
conditions run again in a rotated order; the table gives the median over rounds and the range.
Wall-clock step times are sensitive to anything else running on the machine (the header gives
the load average at the start): compare ratios, and rerun on a quiet machine.

``--store`` adds "hf_mpwriter + job store": rank 0 hosts a ``TCPStore`` (as an ``env://`` job's
``init_process_group`` does) and the workers' environment names it (``MASTER_ADDR``/``MASTER_PORT``,
a job id) in a job of 2 nodes (``GROUP_WORLD_SIZE=2``; this is node 0), so the node's uploader
commits through the job's leader: its lease renewals, offers and answers are served by rank 0's
store thread while rank 0 trains. (The second node is not run: its uploader would add the same
small polling again.) Needs torch.

    python scripts/bench_interference.py            # 3 rounds x 1500 steps per process (~3 min)
    python scripts/bench_interference.py --quick    # 1 round x 800 steps (<1 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_common import LIB_LABELS, Bench, free_port, header, table  # noqa: E402

LIBS = ("none", "hf_mpwriter", "tensorboardX", "anchor")


STORE = "hf_mpwriter+store"


def run_one(bench: Bench, lib: str, run: int, procs: int, steps: int, work: int, settle: float) -> dict:
    repo_id, logdir = f"bench/interf-{lib.replace('+', '-')}-{run}", bench.tmp / f"{lib}-{run}"
    extra: dict = {}
    if lib == STORE:
        port = free_port()
        extra = {"env": {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": f"bench-{run}",
                         "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "2"}}
        workers = [bench.start(lib="hf_mpwriter", rank=0, host_store=port, repo_id=repo_id, logdir=str(logdir),
                               commit_every_s=1.0, steps=steps, work=work, per_tick=2, tick_s=0, record_steps=True,
                               **extra)]
        workers[0].wait("ready", timeout=180)  # the store is up before the other ranks' writers start
        workers += bench.start_many(procs - 1, first_rank=1, lib="hf_mpwriter", repo_id=repo_id, logdir=str(logdir),
                                    commit_every_s=1.0, steps=steps, work=work, per_tick=2, tick_s=0,
                                    record_steps=True, **extra)
    else:
        workers = bench.start_many(procs, lib=lib, repo_id=repo_id, logdir=str(logdir), commit_every_s=1.0,
                                   steps=steps, work=work, per_tick=2, tick_s=0, record_steps=True)
    time.sleep(settle)  # let start-up work end (imports, the uploader's start and first commit)
    if lib in ("hf_mpwriter", STORE):
        bench.uploader_pid(logdir)
    if lib == STORE:  # the scenario: this node's commits go through the job's leader
        log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
        assert "commits through one leader" in log and "leads the job's commits" in log, log[-2000:]
    before = bench.server.commit_count(repo_id)
    for w in workers:
        w.send("go")
    logged = [w.wait("logged", timeout=600) for w in workers]
    commits = bench.server.commit_count(repo_id) - before
    for w in workers:
        w.wait("closed", timeout=300)
    bench.finish(workers)
    if lib in ("hf_mpwriter", STORE):
        bench.wait_uploader_gone(logdir)
    if lib == STORE:  # (its last records may be committed by the node itself: rank 0, the store's host, is gone)
        log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
        assert "job leader: committed" in log, log[-2000:]
    return {"lib": lib, "times": [t for e in logged for t in e["step_times"]], "commits": commits,
            "seconds": max(e["seconds"] for e in logged)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round x 800 steps")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per process per run")
    parser.add_argument("--work", type=int, default=150_000, help="pure-Python loop iterations per step")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between start-up and the loop")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="worker processes")
    parser.add_argument("--store", action="store_true", help="also hf_mpwriter with the job's store in use")
    args = parser.parse_args(argv)
    libs = LIBS + ((STORE,) if args.store else ())
    rounds = args.rounds or (1 if args.quick else 3)
    steps = args.steps or (800 if args.quick else 1500)

    per_round: list[dict] = []
    with Bench("interference") as bench:
        for r in range(rounds):
            order = libs[r % len(libs):] + libs[:r % len(libs)]
            per_round.append({})
            for lib in order:
                t0 = time.monotonic()
                per_round[-1][lib] = run_one(bench, lib, r, args.procs, steps, args.work, args.settle)
                print(f"  done: round {r + 1} {lib} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

    print(header(f"{args.procs} worker processes x {steps} steps x {rounds} round(s); {args.work} loop "
                 f"iterations + 2 add_scalar per step; commit interval 1 s") + "\n")

    def spread(values: list[float], fmt: str) -> str:
        text = fmt.format(statistics.median(values))
        return text if len(values) == 1 else f"{text} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    rows = []
    for lib in libs:
        meds = [statistics.median(rnd[lib]["times"]) for rnd in per_round]
        means = [statistics.fmean(rnd[lib]["times"]) for rnd in per_round]
        med_ratio = [m / statistics.median(rnd["none"]["times"]) for m, rnd in zip(meds, per_round, strict=True)]
        mean_ratio = [m / statistics.fmean(rnd["none"]["times"]) for m, rnd in zip(means, per_round, strict=True)]
        commits = sum(rnd[lib]["commits"] for rnd in per_round)
        seconds = sum(rnd[lib]["seconds"] for rnd in per_round)
        label = LIB_LABELS.get(lib, "hf_mpwriter + job store (leader)")
        rows.append([label, spread([m * 1e3 for m in meds], "{:.2f}"), spread(med_ratio, "{:.3f}×"),
                     spread([m * 1e3 for m in means], "{:.2f}"), spread(mean_ratio, "{:.3f}×"),
                     "–" if lib in ("none", "tensorboardX") else f"{commits} in {seconds:.0f} s"])
    print(table(["logger", "median step (ms)", "median vs none", "mean step (ms)", "mean vs none",
                 "commits during the loop"], rows))
    if rounds > 1:
        print("\nMedian over rounds (min–max over rounds in parentheses); ratios are taken within each round.")


if __name__ == "__main__":
    main()
