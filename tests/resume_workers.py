"""Training jobs that a test kills and resumes the way each framework documents resuming.

``python resume_workers.py trainer OUT ATTEMPT``: the transformers ``Trainer`` with ``HFMPWriterCallback``
(repository ``REPO`` on the test Hub, token in ``TEST_TOKEN``), checkpoints every 10 steps; attempt 2
resumes with ``train(resume_from_checkpoint=True)``. Every step logs ``train/attempt`` (the attempt
that logged it), so the test can tell which attempt's value each reader shows. Rank 0 prints ``logdir D``
once and ``step N`` as it goes, and writes the run's ``log_history`` to ``OUT/log_history.json`` at the end.

Called from Python (``scripts/resume_rows.py``), the jobs also take keyword options: the steps, and the
callback's ``logdir`` or the logger's root, ``version`` and checkpoint ``dirpath``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

STEPS = 40
LIGHTNING_STEPS = 30
SAVE_EVERY = 10


def trainer(out: Path, attempt: int, steps: int = STEPS, logdir: str | None = None) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from hf_mpwriter.integrations import HFMPWriterCallback

    said: list[str] = []  # the logdir was printed

    class Attempt(TrainerCallback):
        """Adds the attempt to what is logged (before the writer's callback sees it), and paces the steps."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                logs["attempt"] = float(attempt)

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                if not said:  # once, where the writer logs
                    said.append(callback.logging_dir)
                    print(f"logdir {callback.logging_dir}", flush=True)
                print(f"step {state.global_step}", flush=True)
            time.sleep(float(os.environ.get("STEP_SLEEP", "0.15")))

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16))
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (steps * 4, 8))]
    args = TrainingArguments(output_dir=str(out), max_steps=steps, logging_steps=1, per_device_train_batch_size=2,
                             save_steps=SAVE_EVERY, report_to="none", use_cpu=True, disable_tqdm=True)
    extra = {"logdir": logdir} if logdir else {}
    callback = HFMPWriterCallback(repo_id=os.environ["REPO"], token=os.environ["TEST_TOKEN"], commit_every=1,
                                  close_timeout=90, **extra)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Attempt(), callback])
    trainer.train(resume_from_checkpoint=attempt > 1)
    if trainer.is_world_process_zero():
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history))
    del trainer, model
    end_process_group()


def end_process_group() -> None:
    """Free the DDP model (its reducer holds the job's process group), then destroy the group, as torch asks of
    every script. In the other order the reducer's deallocation, at the end of the caller's frame, drops the
    group's last reference with the GIL held: gloo's destructor joins its worker threads, and one of them may be
    waiting for the GIL to free a finished collective's tensors (pytorch/pytorch#56297): rank 1 of a resumed
    Trainer hung there, never ending (py-spy: ``~ProcessGroupGloo`` under ``Reducer`` dealloc in the main thread,
    ``~AsyncAllgatherWork`` in ``gil_scoped_acquire`` in gloo's thread). Dropped by ``destroy_process_group``, the
    group goes without the GIL. Without destroying it at all, gloo's threads are torn down at interpreter exit,
    which aborted a rank once (SIGABRT)."""
    import gc

    import torch

    gc.collect()  # (the Trainer, its accelerator and the DDP model hold one another)
    ddp = [o for o in gc.get_objects() if isinstance(o, torch.nn.parallel.DistributedDataParallel)]
    assert not ddp, "a DDP model outlives its training: its reducer would hold the process group past its end"
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def lightning(out: Path, attempt: int, steps: int = LIGHTNING_STEPS, logs: str | None = None,
              version: str | None = None, dirpath: str | None = None) -> None:
    """``python resume_workers.py lightning OUT ATTEMPT``: a Lightning DDP job, 2 ranks on CPU started by
    Lightning's own launcher (no job id: the logger's version is rank 0's choice), ``HFMPWriterLogger`` in
    ``OUT/logs/demo`` pushing to ``REPO``, a ``ModelCheckpoint`` every 10 steps (``save_last``, default
    dirpath: the version's ``checkpoints``). Every step logs ``train/loss`` and ``train/attempt``; rank 0
    prints ``logdir D`` once, ``step N`` (the global step, after the checkpoint of that step) and, at the end,
    ``version V``. Attempt 2 resumes with ``fit(ckpt_path="last")``. ``logs``: the logger's root instead of
    ``OUT/logs``."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from hf_mpwriter.integrations import HFMPWriterLogger

    said: list[str] = []  # the logdir was printed

    class Model(pl.LightningModule):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__()
            self.save_hyperparameters()  # Lightning logs them (and hp_metric, with no step) at each fit's start
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            self.log("train/attempt", float(attempt))
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):  # after the callbacks': the checkpoint is saved
            if self.trainer.is_global_zero:
                if not said:  # once, where the logger logs
                    said.append(self.logger.log_dir)
                    print(f"logdir {self.logger.log_dir}", flush=True)
                print(f"step {self.trainer.global_step}", flush=True)
            time.sleep(float(os.environ.get("STEP_SLEEP", "0.15")))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(2 * steps * 4, 4)), batch_size=4)  # one epoch per rank
    extra = {"version": version} if version else {}
    logger = HFMPWriterLogger(logs or out / "logs", name="demo", repo_id=os.environ["REPO"],
                              token=os.environ["TEST_TOKEN"], commit_every=1, close_timeout=90, max_queue=1,
                              **extra)  # max_queue=1: each record to the OS
    checkpoint = ModelCheckpoint(save_last=True, every_n_train_steps=SAVE_EVERY, dirpath=dirpath)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=steps, log_every_n_steps=1,
                         logger=logger, callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=out)
    trainer.fit(Model(), data, ckpt_path="last" if attempt > 1 else None)
    if trainer.is_global_zero:
        print(f"version {logger.version}", flush=True)
    del trainer
    end_process_group()



if __name__ == "__main__":
    {"trainer": trainer, "lightning": lightning}[sys.argv[1]](Path(sys.argv[2]), int(sys.argv[3]))
