"""A training process for the tests: ``python tests/proc_writer.py '<json settings>'``.

Logs ``loss = rank * 100000 + step`` for each step (so any lost or duplicated record shows) and
prints what it did, so a test knows what was logged before it kills or signals the process:

- ``flushed <step>`` after each ``flush()`` (every ``flush_every`` steps, 10 by default; 0: never,
  then records reach the disk only through ``flush_secs``, ``max_queue``, a signal or ``close()``);
- ``logged <step>`` once ``add_scalar`` returned, with ``print_steps`` (the preemption tests: every
  step printed was logged before the process handled its signal);
- ``closed <unwritten bytes>`` after ``close()``, unless ``hang`` keeps it from closing.

``step_time`` logs a second tag, ``step_time``, whose values change order between ranks at every step
(and differ by ``attempt`` times 100: a resumed job's replayed steps log other values);
``trigger_every`` (N): ``writer.scheduler.trigger()`` every N steps.
``histogram`` (N) logs a histogram, ``weights``, of :func:`weights` every N steps (tensorboardX's
default buckets).
``stall_at`` and ``stall_s``: the rank stops that long before that step (it then runs late by it).
``crash_at`` (a step), ``crash_rank`` (a rank, ``RANK`` under torchrun) and ``crash_marker`` (a path): that
rank fails once at that step ("simulated failure of rank R at step S") and creates the marker; a rank of a
later attempt (torchrun's next rendezvous: another ``MASTER_PORT``; the restart count is no help, a node
restarted only because another one failed sees 0) resumes, with ``purge_step``, from the newest checkpoint
every rank reached (each writes one every ``checkpoint_every`` steps, 10 by default, next to the marker), as
``scripts/torchrun_example.py`` does ("attempt 1: steps ..."). No rank of the first attempt ends: the job
fails first (DDP's ranks go in step), and torchrun ends them.
``steps`` (default: until signalled) and ``start`` bound the loop, and ``until`` (a path) ends it once that
file exists; ``more_after`` (a path) and ``more_steps`` log that many steps more once that file exists;
``close_after`` (a path) holds the
process, still a live writer, after its last step until that file exists. ``trainer_flush`` calls
``flush()`` after every log, as the transformers Trainer does. ``user_handler`` installs a SIGTERM
handler before the writer (``"record"``: prints and goes on; ``"ignore"``: SIG_IGN). The token, if
any, comes from the environment (``TEST_TOKEN``), never the command line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

from hf_mpwriter import HFSummaryWriter


def weights(rank: int, step: int) -> np.ndarray:
    """The values of a rank's ``weights`` histogram at a step: a test recomputes them."""
    return np.random.default_rng(rank * 100003 + step).normal(rank - 1.5, 1.0 + step % 7, 257)


def _crashed_in(marker: str) -> str | None:
    """The ``MASTER_PORT`` of the attempt that failed (torchrun gives each rendezvous round its own), if one did."""
    try:
        with open(marker) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _checkpoint(marker: str, rank: int) -> int:
    """The newest step ``rank`` checkpointed (the state before it), 0 if none."""
    try:
        with open(f"{marker}.rank-{rank}") as f:
            return int(f.read())
    except FileNotFoundError:
        return 0


def _save_checkpoint(marker: str, rank: int, step: int) -> None:
    with open(f"{marker}.rank-{rank}.tmp", "w") as f:
        f.write(str(step))
    os.replace(f"{marker}.rank-{rank}.tmp", f"{marker}.rank-{rank}")


def main() -> int:
    cfg = json.loads(sys.argv[1])
    if cfg.get("user_handler") == "record":
        signal.signal(signal.SIGTERM, lambda signum, frame: print("user handler", signum, flush=True))
    elif cfg.get("user_handler") == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rank = cfg.get("rank")
    options = {key: cfg[key] for key in ("flush_secs", "max_queue", "purge_step", "repo_revision", "repo_type", "resume")
               if key in cfg}
    start = cfg.get("start", 0)
    marker, every = cfg.get("crash_marker"), cfg.get("checkpoint_every", 10)
    resumed = marker is not None and _crashed_in(marker) not in (None, os.environ.get("MASTER_PORT"))
    if resumed:
        start = options["purge_step"] = min(_checkpoint(marker, r) for r in range(int(os.environ["WORLD_SIZE"])))
        print(f"attempt 1: steps {start}..{cfg['steps'] - 1} (purge_step={start})", flush=True)
    writer = HFSummaryWriter(
        cfg.get("repo_id"),
        logdir=cfg.get("logdir"),  # none: the default logdir (tensorboardX's, or the launcher's job's)
        target_dir=cfg.get("target_dir"),
        rank=rank,
        commit_every=cfg.get("commit_every_s", 1.0) / 60,
        close_timeout=cfg.get("close_timeout", 60),
        rotate_bytes=cfg.get("rotate_bytes", 8 << 20),
        uploader=cfg.get("uploader", "process"),
        token=os.environ.get("TEST_TOKEN"),
        **options,
    )
    print("started", flush=True)
    base = (rank if rank is not None else int(os.environ.get("RANK", "0"))) * 100000  # under torchrun: its rank
    flush_every = cfg.get("flush_every", 10)
    step = start
    until = cfg.get("until")
    while step < cfg.get("steps", sys.maxsize) and not (until and os.path.exists(until)):
        if marker and step % every == 0 and step > start:
            _save_checkpoint(marker, base // 100000, step)
        if not resumed and step == cfg.get("crash_at") and base // 100000 == cfg.get("crash_rank"):
            with open(marker, "w") as f:  # the failed attempt's, by its rendezvous (its MASTER_PORT)
                f.write(os.environ.get("MASTER_PORT", ""))
            raise RuntimeError(f"simulated failure of rank {base // 100000} at step {step}")
        writer.add_scalar("loss", float(base + step), step)
        if cfg.get("step_time"):  # a second tag whose min and max move between ranks (the job run's tests)
            writer.add_scalar("step_time", (base // 100000 * 7919 + step * 104729) % 1000 / 37.0 + 100 * cfg.get("attempt", 0),
                              step)
        if cfg.get("histogram") and step % cfg["histogram"] == 0:
            writer.add_histogram("weights", weights(base // 100000, step), step)
        if cfg.get("trainer_flush"):
            writer.flush()
        if cfg.get("print_steps"):
            print(f"logged {step}", flush=True)
        if cfg.get("trigger_every") and step % cfg["trigger_every"] == 0:
            writer.scheduler.trigger()  # huggingface_hub's API: commit now (the future is not waited for)
        if flush_every and step % flush_every == flush_every - 1:
            writer.flush()
            print(f"flushed {step}", flush=True)
        step += 1
        time.sleep(cfg.get("sleep", 0.005))
        if step == cfg.get("stall_at"):  # a stall (a data loader, a checkpoint of its own): the rank runs late
            time.sleep(cfg["stall_s"])
    writer.flush()
    print(f"flushed {step - 1}", flush=True)
    if cfg.get("more_after"):  # a second burst of ``more_steps`` once that file exists
        while not os.path.exists(cfg["more_after"]):
            time.sleep(0.05)
        for more in range(step, step + cfg["more_steps"]):
            writer.add_scalar("loss", float(base + more), more)
        writer.flush()
        print(f"flushed {more}", flush=True)
    if cfg.get("hang"):
        time.sleep(3600)
    while marker and not resumed:  # the first attempt never ends: it fails, and torchrun ends its ranks
        time.sleep(0.05)
    while cfg.get("close_after") and not os.path.exists(cfg["close_after"]):
        time.sleep(0.05)
    print("closing", time.time(), flush=True)  # (when its close began: commits after it may be the close's)
    writer.close()
    print("closed", writer.unwritten_bytes, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
