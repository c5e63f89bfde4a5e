"""Data-parallel training on CPU under torchrun; every rank logs with ``HFSummaryWriter``.

    torchrun --standalone --nproc-per-node 4 scripts/torchrun_example.py --logdir runs/ddp --target-dir tb-mirror
    torchrun --standalone --nproc-per-node 4 scripts/torchrun_example.py --logdir runs/ddp --repo-id you/ddp-run

Rank r logs ``train/loss`` and ``train/lr`` into ``<logdir>/rank-00r``; the node's single uploader
commits every ``--commit-every-s`` seconds to the Hub (``--repo-id``) or a directory (``--target-dir``).
Gradients are averaged across ranks by ``DistributedDataParallel`` (gloo backend).

Fault tolerance: every ``--checkpoint-every`` steps each rank saves a checkpoint. Started again
(by ``torchrun --max-restarts N`` after a failure, or by hand), the ranks agree on the newest
checkpoint they all have, load it and reopen their writers with ``purge_step=<that step>``: the
same ``rank-NNN`` TensorBoard runs continue, and TensorBoard hides the steps logged after the
checkpoint by the failed attempt. ``--crash-rank R --crash-at-step S`` makes rank R fail once at
step S to try it::

    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc-per-node 4 --max-restarts 1 \\
        scripts/torchrun_example.py --logdir runs/ddp --target-dir tb-mirror --crash-rank 2 --crash-at-step 37

(``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``: with torch 2.13, restarted ranks otherwise share the failed
attempt's rendezvous store and gloo often cannot connect them; see pytorch/pytorch#135712.)
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hf_mpwriter import HFSummaryWriter

logger = logging.getLogger("torchrun_example")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # allow_abbrev=False: --commit-every (minutes, like commit_every=) must not pass for --commit-every-s
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--logdir", required=True, help="TensorBoard logdir (rank r writes into <logdir>/rank-00r)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo-id", help="Hub repo to commit the logs to")
    where.add_argument("--target-dir", help="local directory to commit the logs to (no Hub)")
    parser.add_argument("--steps", type=int, default=100, help="training steps")
    parser.add_argument("--commit-every-s", type=float, default=60.0, help="seconds between commits (default 60)")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints")
    parser.add_argument("--checkpoint-dir", help="default: <logdir>/checkpoints")
    parser.add_argument("--step-time", type=float, default=0.0, help="extra seconds of 'work' per step")
    parser.add_argument("--crash-rank", type=int, help="this rank fails once, at --crash-at-step")
    parser.add_argument("--crash-at-step", type=int, default=0)
    return parser.parse_args(argv)


# -- checkpoints: one file per rank and step, the two newest kept ---------------------------------
def checkpoint_file(directory: Path, rank: int, step: int) -> Path:
    return directory / f"rank-{rank:03d}" / f"step-{step:08d}.pt"


def save_checkpoint(directory: Path, rank: int, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> None:
    """Atomically save the state *before* ``step``; keep the two newest (ranks may be one apart)."""
    path = checkpoint_file(directory, rank, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, path)
    for old in sorted(path.parent.glob("step-*.pt"))[:-2]:
        old.unlink()


def resume_step(directory: Path, rank: int) -> int:
    """The newest checkpoint step every rank has (0: start from scratch)."""
    steps = [int(p.stem.split("-")[1]) for p in (directory / f"rank-{rank:03d}").glob("step-*.pt")]
    newest = torch.tensor([max(steps, default=0)])
    dist.all_reduce(newest, op=dist.ReduceOp.MIN)
    return int(newest.item())


# -- the job ----------------------------------------------------------------------------------------
def batch(rank: int, step: int, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's shard of a synthetic regression problem (deterministic per rank and step)."""
    generator = torch.Generator().manual_seed(rank * 1_000_003 + step)
    x = torch.randn(32, weights.numel(), generator=generator)
    return x, x @ weights + 0.01 * torch.randn(32, generator=generator)


def learning_rate(step: int, steps: int, base: float = 0.05) -> float:
    return base * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))  # set by torchrun: 0, 1, ...
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(name)s: %(message)s")
    checkpoints = Path(args.checkpoint_dir or os.path.join(args.logdir, "checkpoints"))

    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate(0, args.steps))
    start = resume_step(checkpoints, rank)
    if start:
        state = torch.load(checkpoint_file(checkpoints, rank, start), weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    # A resumed rank continues its TensorBoard run: purge_step hides what the failed attempt
    # logged at steps >= start (it is logged again below).
    purge_step = start if (start or restart) else None
    logger.info("attempt %d: steps %d..%d of %d (purge_step=%s)", restart, start, args.steps - 1, args.steps, purge_step)

    writer = HFSummaryWriter(
        repo_id=args.repo_id,
        target_dir=args.target_dir,
        logdir=args.logdir,
        commit_every=args.commit_every_s / 60,  # minutes, as huggingface_hub's HFSummaryWriter
        purge_step=purge_step,
    )
    weights = torch.linspace(-1, 1, 8)
    for step in range(start, args.steps):
        if step % args.checkpoint_every == 0 and step > start:
            save_checkpoint(checkpoints, rank, step, model.module, optimizer)
        if rank == args.crash_rank and step == args.crash_at_step and restart == 0:
            marker = checkpoints / f"crashed-rank-{rank:03d}"
            if not marker.exists():  # only once, even if the launcher does not count restarts
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"simulated failure of rank {rank} at step {step}")
        lr = learning_rate(step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batch(rank, step, weights)
        loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()  # DDP all-reduces (averages) the gradients across the ranks here
        optimizer.step()
        writer.add_scalar("train/loss", loss.item(), step)
        writer.add_scalar("train/lr", lr, step)
        if args.step_time:
            time.sleep(args.step_time)
    writer.close()  # returns once this rank's logs are committed
    logger.info("done: %d steps on %d ranks", args.steps, world)
    del model, optimizer  # first: DDP's reducer holds the process group, which must go in destroy_process_group
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
