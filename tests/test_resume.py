"""A run resumed after preemption shows one curve: the restart point is the first step the resumed
attempt logs (``resume=True``, what the integrations set), read back with TensorBoard's readers."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import scalars, tensorboard_runs

from hf_mpwriter import SummaryWriter


def _attempt(logdir: Path, steps: range, offset: float, **kwargs) -> None:
    with SummaryWriter(str(logdir), **kwargs) as writer:
        writer.add_text("args", "no step: not the restart point")  # as the Trainer's callback does first
        for step in steps:
            writer.add_scalar("loss", offset + step, step)
            writer.add_scalars("lr", {"group0": offset + step}, step)


@pytest.mark.parametrize("kwargs", [{"resume": True}, {"purge_step": 31}], ids=["resume", "purge_step"])
def test_a_resumed_attempt_replaces_the_steps_it_logs_again_in_the_run_and_its_add_scalars_sub_runs(tmp_path, kwargs):
    logdir = tmp_path / "run"
    _attempt(logdir, range(60), 0.0)
    _attempt(logdir, range(31, 60), 1000.0, **kwargs)
    assert set(tensorboard_runs(logdir)) == {".", "lr/group0"}
    for run, tag in ((logdir, "loss"), (logdir / "lr" / "group0", "lr")):
        points = scalars(run, tag)
        assert [step for step, _ in points] == list(range(60)), run  # every step once
        assert points[30] == (30, 30.0) and points[31] == (31, 1031.0) and points[59] == (59, 1059.0)


def test_resume_restarts_at_the_first_step_with_a_step_not_at_zero(tmp_path):
    """A fresh run with ``resume=True`` loses nothing; records without a step do not set the point."""
    logdir = tmp_path / "run"
    _attempt(logdir, range(5, 10), 0.0, resume=True)
    assert [step for step, _ in scalars(logdir, "loss")] == [5, 6, 7, 8, 9]
