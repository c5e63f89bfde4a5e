"""A training process for the tests: ``python tests/proc_writer.py '<json settings>'``.

Logs ``loss = rank * 100000 + step`` for each step (so any lost or duplicated record shows), prints
``flushed <step>`` after each flush, and closes (waiting for the upload) unless told not to. The
token, if any, comes from the environment (``TEST_TOKEN``), never the command line.
"""

import json
import os
import sys
import time

from hf_mpwriter import HFSummaryWriter


def main() -> int:
    cfg = json.loads(sys.argv[1])
    rank = cfg.get("rank")
    writer = HFSummaryWriter(
        cfg.get("repo_id"),
        logdir=cfg["logdir"],
        target_dir=cfg.get("target_dir"),
        rank=rank,
        commit_every=cfg.get("commit_every_s", 1.0) / 60,
        close_timeout=cfg.get("close_timeout", 60),
        purge_step=cfg.get("purge_step"),
        rotate_bytes=cfg.get("rotate_bytes", 8 << 20),
        uploader=cfg.get("uploader", "process"),
        token=os.environ.get("TEST_TOKEN"),
        repo_revision=cfg.get("repo_revision"),
        repo_type=cfg.get("repo_type"),
    )
    print("started", flush=True)
    base = (rank or 0) * 100000
    for step in range(cfg.get("start", 0), cfg["steps"]):
        writer.add_scalar("loss", float(base + step), step)
        if step % 10 == 9:
            writer.flush()
            print(f"flushed {step}", flush=True)
        time.sleep(cfg.get("sleep", 0.005))
    writer.flush()
    print(f"flushed {cfg['steps'] - 1}", flush=True)
    if cfg.get("hang"):
        time.sleep(3600)
    writer.close()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
