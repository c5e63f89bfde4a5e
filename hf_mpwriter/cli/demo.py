"""The demo behind ``hf-mpwriter demo``: real worker processes log, the uploader commits, we verify.

Runs offline by default: the target is a local directory (or, with ``--local-hub``, the project's
own Hub-compatible server, reached through the real ``huggingface_hub`` client). ``--chaos``
SIGKILLs a worker (restarted with ``purge_step``, as after a preemption) and the uploader (the
writers start a new one) along the way; the verification must pass all the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger("hf_mpwriter.demo")

STEP_SLEEP_S = 0.02
DEMO_REPO = "demo/hf-mpwriter-demo"
DEMO_TOKEN = "hf_demo_token_not_a_secret"


# -- the worker: a fake training loop ---------------------------------------------------------
def worker(rank: int, steps: int, start: int, logdir: str, upload: dict, progress: str) -> int:
    """One training process: logs loss, lr, throughput, a histogram and an image."""
    import numpy as np

    from ..writer.hub_writer import HFSummaryWriter

    writer = HFSummaryWriter(
        upload.get("repo_id"), logdir=logdir, target_dir=upload.get("target_dir"), rank=rank,
        commit_every=upload["commit_every_s"] / 60.0, purge_step=start or None, close_timeout=60,
    )
    rng = np.random.default_rng(1000 * rank + start)
    for step in range(start, steps):
        t0 = time.perf_counter()
        frac = step / max(1, steps - 1)
        loss = 2.3 * math.exp(-3.0 * frac) + 0.1 + 0.05 * rng.standard_normal()
        lr = 3e-4 * min(1.0, (step + 1) / (0.1 * steps)) * 0.5 * (1 + math.cos(math.pi * frac))
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/lr", lr, step)
        if step % 20 == 0:
            writer.add_histogram("weights/layer0", rng.normal(0, 1 + frac, size=1000), step)
        if step % 50 == 0:
            img = (rng.random((3, 32, 32)) * 255 * (1 - frac)).astype("uint8")
            writer.add_image("samples/activation", img, step)
        time.sleep(STEP_SLEEP_S)
        writer.add_scalar("perf/steps_per_sec", 1.0 / (time.perf_counter() - t0), step)
        if step % 10 == 9 or step == steps - 1:
            writer.flush()
            Path(progress + ".tmp").write_text(str(step))
            os.replace(progress + ".tmp", progress)  # the parent never reads a half-written number
    writer.close()
    return 0


# -- verification -----------------------------------------------------------------------------
def read_events(data: bytes) -> Counter:
    """Count ``(tag, step)`` of scalar/histogram/image values in an event file's bytes."""
    import io

    from tensorboardX.proto.event_pb2 import Event

    from ..events.records import iter_records

    seen: Counter = Counter()
    for _, raw in iter_records(io.BytesIO(data)):
        event = Event.FromString(raw)
        for value in event.summary.value:
            seen[(value.tag, event.step)] += 1
    return seen


def verify(logdir: Path, target: Any, steps: int, workers: int) -> list[str]:
    """Compare every local event file with its remote copy; check every rank logged every step.

    Returns problems (empty: all good). Remote files must equal the local whole-record prefix; a file
    with no whole record yet (a process killed between creating it and its first flush) holds nothing
    to send.
    """
    from ..uploader.snapshot import Scanner

    problems = []
    scanner = Scanner(logdir)
    per_run: dict[str, set] = {}
    for rel, st in scanner.files():
        local = (logdir / rel).read_bytes()[: scanner.whole_size(rel, st, 0)]
        if not local:
            continue
        try:
            remote = target.read(rel)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems.append(f"{rel}: missing on the target ({type(exc).__name__})")
            continue
        if hashlib.sha256(remote).digest() != hashlib.sha256(local).digest():
            problems.append(f"{rel}: remote ({len(remote)} B) differs from local ({len(local)} B)")
        run = os.path.dirname(rel)
        per_run.setdefault(run, set()).update(s for (tag, s) in read_events(remote) if tag == "train/loss")
    from ..writer.ranks import RankInfo  # the workers' own naming of their run directories

    for rank in range(workers):
        run = str(RankInfo(rank, workers, "explicit").run_name())
        missing = set(range(steps)) - per_run.get(run, set())
        if missing:
            problems.append(f"{run}: steps missing on the target: {sorted(missing)[:10]}...")
    return problems


# -- orchestration ----------------------------------------------------------------------------
class _Demo:
    def __init__(self, workers: int, steps: int, base: Path, upload: dict, env: dict) -> None:
        self.workers, self.steps, self.base, self.upload, self.env = workers, steps, base, upload, env
        self.logdir = base / "logs"
        self.progress_dir = base / "progress"
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[int, subprocess.Popen] = {}
        self.events: list[str] = []

    def start(self, rank: int, start: int = 0) -> None:
        args = [sys.executable, "-m", "hf_mpwriter.cli.demo", "--worker", str(rank), str(self.steps), str(start),
                str(self.logdir), json.dumps(self.upload), str(self.progress_dir / f"rank-{rank}")]
        self.procs[rank] = subprocess.Popen(args, env=self.env)

    def done_steps(self, rank: int) -> int:
        try:
            return int((self.progress_dir / f"rank-{rank}").read_text() or -1) + 1
        except (OSError, ValueError):
            return 0

    def kill_worker(self, rank: int) -> None:
        self.procs[rank].send_signal(signal.SIGKILL)
        self.procs[rank].wait()
        resume = self.done_steps(rank)
        self.events.append(f"SIGKILLed worker {rank}; restarted it at step {resume} with purge_step={resume}")
        self.start(rank, resume)

    def kill_uploader(self) -> None:
        from ..state.election import uploader_alive, uploader_info
        from ..state.liveness import is_alive

        info = uploader_info(self.logdir)
        if not info or not uploader_alive(self.logdir):
            return
        os.kill(int(info["pid"]), signal.SIGKILL)
        killed = time.monotonic()
        while is_alive(info) and time.monotonic() - killed < 10:  # dying takes a moment
            time.sleep(0.01)
        while not uploader_alive(self.logdir) and time.monotonic() - killed < 30:
            time.sleep(0.05)
        new = uploader_info(self.logdir) or {}
        self.events.append(
            f"SIGKILLed uploader {info['pid']}; writers started uploader {new.get('pid')} "
            f"{time.monotonic() - killed:.1f} s later"
        )


def run_demo(
    workers: int = 4, steps: int = 200, repo_id: str | None = None, target: str | None = None,
    chaos: bool = False, out: str = "hf_mpwriter_demo", commit_every_s: float = 2.0, local_hub: bool = False,
    quiet: bool = False,
) -> int:
    """Run the demo; return the exit code (0 when remote and local agree)."""
    from ..errors import ConfigurationError
    from .common import show_bars

    if workers < 1 or steps < 20:
        raise ConfigurationError("the demo needs --workers >= 1 and --steps >= 20")
    base = Path(out).resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    env = dict(os.environ)
    server = None
    if local_hub:
        server = _start_local_hub(env, base)
        repo_id = DEMO_REPO
    bars = show_bars(quiet, client=repo_id is not None)  # a local target needs no client here
    upload: dict = {"commit_every_s": commit_every_s, "repo_id": repo_id}
    if repo_id is None:
        upload["target_dir"] = str(Path(target).resolve() if target else base / "target")
    demo = _Demo(workers, steps, base, upload, env)
    started = time.monotonic()
    try:
        for rank in range(workers):
            demo.start(rank)
        _follow_workers(demo, chaos, bars)
        failed = [r for r, p in demo.procs.items() if p.returncode != 0]
        if failed:
            print(f"demo: worker(s) {failed} failed; see their output above", file=sys.stderr)
            return 1
        from .. import config as config_mod
        from ..targets import target_for
        from .status import collect

        config = config_mod.load(demo.logdir)
        assert config is not None
        remote = target_for(config, env.get("HF_TOKEN"), endpoint=server.endpoint if server else None)
        problems = verify(demo.logdir, remote, steps, workers)
        info = collect(demo.logdir)
    finally:
        for proc in demo.procs.values():
            if proc.poll() is None:
                proc.kill()
        if server is not None:
            server.stop()
    return _report(demo, info, remote.description, config.prefix, problems, time.monotonic() - started)


def _start_local_hub(env: dict, base: Path) -> Any:  # -> HubServer
    """``--local-hub``: start the project's Hub server and point ``env`` and this process at it."""
    from ..testing import HubServer, require_testing_extra

    require_testing_extra("hf-mpwriter demo --local-hub")  # before any worker starts: one line, no traceback
    server = HubServer().start()
    env.update(server.env())
    env.update({"HF_TOKEN": DEMO_TOKEN, "HF_HOME": str(base / "hf_home")})
    # This process reads the copy back through the client too: the local Hub's settings for it as
    # for the workers (HF_HOME keeps the demo out of the user's cache; NO_PROXY: loopback), set
    # before its first import of huggingface_hub, which reads them then.
    os.environ.update(env)
    return server


def _follow_workers(demo: _Demo, chaos: bool, bars: bool) -> None:
    """Until every worker exits: a progress bar of their steps and the commits, and ``--chaos``'s kills
    on the way."""
    from tqdm.auto import tqdm

    from .status import collect

    workers = demo.workers
    total = workers * demo.steps
    chaos_plan = [(0.3, lambda: demo.kill_worker(min(1, workers - 1))), (0.55, demo.kill_uploader)] if chaos else []
    bar = tqdm(total=total, desc=f"{workers} workers", unit="step", disable=not bars)
    while any(p.poll() is None for p in demo.procs.values()):
        done = sum(demo.done_steps(r) for r in range(workers))
        if chaos_plan and done >= chaos_plan[0][0] * total:
            chaos_plan.pop(0)[1]()
            bar.write(demo.events[-1]) if demo.events else None
        commits = collect(demo.logdir)["commits"] if (demo.logdir / ".hf_mpwriter").is_dir() else 0
        bar.n = done
        bar.set_postfix(commits=commits)
        bar.refresh()
        time.sleep(0.2)
    bar.n = total
    bar.close()


def _report(demo: _Demo, info: dict[str, Any], where: str, prefix: str, problems: list[str], elapsed: float) -> int:
    """The demo's last lines: what chaos did, the logs, the target, the verification, how to view it."""
    print()
    for line in demo.events:
        print(f"chaos     {line}")
    print(f"logs      {demo.logdir}  ({len(info['files'])} event files, {info['bytes_written']} bytes)")
    print(f"target    {where}/{prefix}  ({info['commits']} commits)")
    if problems:
        print("verify    FAILED:")
        for problem in problems:
            print(f"          {problem}")
        return 1
    print(f"verify    OK: every event file on the target equals the local one, record for record;"
          f" all {demo.steps} steps of all {demo.workers} ranks are there ({elapsed:.1f} s)")
    if demo.upload.get("target_dir"):
        print(f"view      tensorboard --logdir {Path(demo.upload['target_dir']) / prefix}")
    else:
        print(f"view      tensorboard --logdir {demo.logdir}")
    return 0


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=6, metavar=("RANK", "STEPS", "START", "LOGDIR", "UPLOAD", "PROGRESS"))
    args = parser.parse_args(argv)
    rank, steps, start, logdir, upload, progress = args.worker
    return worker(int(rank), int(steps), int(start), logdir, json.loads(upload), progress)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
