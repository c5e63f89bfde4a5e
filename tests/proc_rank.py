"""A training rank that logs until a signal ends it: ``python tests/proc_rank.py '<json settings>'``.

Logs ``loss = rank * 100000 + step`` and prints ``logged <step>`` once ``add_scalar`` returned, so
every step printed was logged before the process handled its signal. By default nothing reaches the
disk before the signal (``flush_secs`` of an hour, a huge ``max_queue``): what the target holds
afterwards got there through the SIGTERM path alone. ``trainer_flush`` calls ``flush()`` after every
log, as the transformers Trainer does. ``user_handler`` installs a SIGTERM handler before the writer
(``"record"``: prints and goes on; ``"ignore"``: SIG_IGN). The token comes from ``TEST_TOKEN``.
"""

import json
import os
import signal
import sys
import time

sys.modules["torch"] = None  # type: ignore[assignment]  # not needed here; tensorboardX would import it (slow)

from hf_mpwriter import HFSummaryWriter  # noqa: E402


def main() -> int:
    cfg = json.loads(sys.argv[1])
    if cfg.get("user_handler") == "record":
        signal.signal(signal.SIGTERM, lambda signum, frame: print("user handler", signum, flush=True))
    elif cfg.get("user_handler") == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rank = cfg["rank"]
    writer = HFSummaryWriter(
        cfg.get("repo_id"), logdir=cfg["logdir"], target_dir=cfg.get("target_dir"), rank=rank,
        commit_every=cfg.get("commit_every_min", 5), token=os.environ.get("TEST_TOKEN"),
        flush_secs=cfg.get("flush_secs", 3600), max_queue=cfg.get("max_queue", 10**6),
        close_timeout=cfg.get("close_timeout", 60), uploader=cfg.get("uploader", "process"),
    )
    print("started", flush=True)
    step = 0
    while step < cfg.get("steps", 10**9):
        writer.add_scalar("loss", float(rank * 100000 + step), step)
        if cfg.get("trainer_flush"):
            writer.flush()
        print(f"logged {step}", flush=True)
        step += 1
        time.sleep(cfg.get("sleep", 0.01))
    writer.close()
    print("closed", writer.unwritten_bytes, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
