"""Training jobs that a test kills and resumes the way each framework documents resuming.

``python resume_workers.py trainer OUT ATTEMPT``: the transformers ``Trainer`` with ``HFMPWriterCallback``
(repository ``REPO`` on the test Hub, token in ``TEST_TOKEN``), checkpoints every 10 steps; attempt 2
resumes with ``train(resume_from_checkpoint=True)``. Every step logs ``train/attempt`` (the attempt
that logged it), so the test can tell which attempt's value each reader shows. Rank 0 prints ``step N``
as it goes and writes the run's ``log_history`` to ``OUT/log_history.json`` at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

STEPS = 40
SAVE_EVERY = 10


def trainer(out: Path, attempt: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from hf_mpwriter.integrations import HFMPWriterCallback

    class Attempt(TrainerCallback):
        """Adds the attempt to what is logged (before the writer's callback sees it), and paces the steps."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                logs["attempt"] = float(attempt)

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                print(f"step {state.global_step}", flush=True)
            time.sleep(float(os.environ.get("STEP_SLEEP", "0.15")))

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16))
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (STEPS * 4, 8))]
    args = TrainingArguments(output_dir=str(out), max_steps=STEPS, logging_steps=1, per_device_train_batch_size=2,
                             save_steps=SAVE_EVERY, report_to="none", use_cpu=True, disable_tqdm=True)
    callback = HFMPWriterCallback(repo_id=os.environ["REPO"], token=os.environ["TEST_TOKEN"], commit_every=1,
                                  close_timeout=90)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Attempt(), callback])
    trainer.train(resume_from_checkpoint=attempt > 1)
    if trainer.is_world_process_zero():
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history))


if __name__ == "__main__":
    {"trainer": trainer}[sys.argv[1]](Path(sys.argv[2]), int(sys.argv[3]))
