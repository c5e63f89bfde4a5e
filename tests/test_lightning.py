"""The Lightning logger, with real ``lightning.pytorch`` Trainers on CPU.

- The README's example, exactly as written: ``strategy="ddp"`` with 2 processes (Lightning starts
  the second one itself, so there is no job id): both ranks land in the same version, which rank 0
  chose and sent, both ranks' metrics and hyperparameters are on the target, as two runs.
- torchrun (a job id) with ``rank_zero_only=True``: one run, in the version named after the job.
- The logger alone in one process: plain layout, prefixes, dict metrics, HParams, ``finalize``
  returning once committed; argument checks; pickling.

Everything is read back from the target with TensorBoard's own reader.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, finish, plugin_accumulator, read_raw_records, scalars, spawn, tensorboard_runs
from test_launchers import example_env, examples, run_example, wait_up_to_date
from upload_helpers import local_event_files, local_target_files, materialise

from hf_mpwriter.errors import ConfigurationError

# Skipped without importing lightning: importing it takes seconds, paid by every xdist worker that
# collects this file, while only the worker that runs a test here needs it.
if importlib.util.find_spec("lightning") is None:
    pytest.skip("the Lightning integration needs lightning", allow_module_level=True)
if importlib.util.find_spec("torch") is None:
    pytest.skip("Lightning trains torch models", allow_module_level=True)


def HFMPWriterLogger(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - stands for the class
    from hf_mpwriter.integrations import HFMPWriterLogger as logger_class

    return logger_class(*args, **kwargs)


def job_version(environ: dict) -> str | None:
    from hf_mpwriter.integrations.lightning import job_version as version

    return version(environ)


REPO = Path(__file__).resolve().parent.parent


def remote_copy(logdir: Path, target: Path, prefix: str, into: Path) -> Path:
    """What the target holds under ``prefix``: the local files of ``logdir``, cut at whole records."""
    remote = local_target_files(target, prefix)
    local = local_event_files(logdir)
    assert remote and set(remote) == set(local), f"remote {sorted(remote)} != local {sorted(local)}"
    copy = materialise(remote, into)
    for rel, data in remote.items():
        assert local[rel].startswith(data), f"{rel}: the remote file is not a prefix of the local one"
        assert sum(16 + len(r) for r in read_raw_records(copy / rel)) == len(data), f"{rel} ends mid-record"
    return copy


def hparams_of(run: Path) -> dict:
    """The hyperparameters TensorBoard's HParams plugin finds in ``run`` (its session start info)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = plugin_accumulator(run)
    content = acc.PluginTagToContent("hparams")
    start = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()
             if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info")]
    assert start, f"no HParams session in {run}: {sorted(content)}"
    out = {}
    for key, value in start[0].hparams.items():
        out[key] = value.number_value if value.HasField("number_value") else value.string_value
    return out


def test_readme_example_logs_every_rank_into_one_version(tmp_path):
    for i, example in enumerate(examples("lightning")):
        cwd = tmp_path / f"v{i}"
        (cwd / "logs" / "demo" / "version_0").mkdir(parents=True)  # an earlier run: rank 0 must pick version_1
        run_example(example, cwd, timeout=240)
        versions = sorted(p.name for p in (cwd / "logs" / "demo").iterdir())
        assert versions == ["version_0", "version_1"], f"the ranks did not agree on one version: {versions}"
        logdir = cwd / "logs" / "demo" / "version_1"
        wait_up_to_date(logdir)
        copy = remote_copy(logdir, cwd / "tb-mirror", "tensorboard/demo/version_1", cwd / "remote")
        assert sorted(tensorboard_runs(copy)) == ["job", "rank-000", "rank-001"]
        losses = {}
        for rank in range(2):
            run = copy / f"rank-{rank:03d}"
            points = scalars(run, "train/loss")
            assert len(points) == 8, f"rank {rank}: {points}"  # 2 epochs x 8 batches per rank, every 2nd step
            losses[rank] = points
            assert hparams_of(run) == {"lr": 0.05}
            assert [v for _, v in scalars(run, "hp_metric")] == [-1.0]
        assert [s for s, _ in losses[0]] == [s for s, _ in losses[1]]
        assert [v for _, v in losses[0]] != [v for _, v in losses[1]], "each rank logs its own shard's loss"
        assert (logdir / "hparams.yaml").read_text().strip() == "lr: 0.05"


RANK_ZERO_SCRIPT = """
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from hf_mpwriter.integrations import HFMPWriterLogger


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.example_input_array = torch.zeros(2, 4)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        loss = self(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


logger = HFMPWriterLogger("logs", name="solo", target_dir="tb-mirror", commit_every=1, rank_zero_only=True,
                          log_graph=True, prefix="p")
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, log_every_n_steps=1,
                     logger=logger, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Model(), DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4))
print(f"rank {trainer.global_rank} version {logger.version}", flush=True)
# As torch asks of every script: without it, gloo's threads are torn down at interpreter exit, which aborted
# a rank once here ("terminate called without an active exception", SIGABRT) after everything was done.
torch.distributed.destroy_process_group()
"""


def test_rank_zero_only_under_torchrun_one_run_in_the_jobs_version(tmp_path):
    (tmp_path / "train.py").write_text(textwrap.dedent(RANK_ZERO_SCRIPT))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "train.py"],
        cwd=tmp_path, env=example_env(tmp_path), capture_output=True, text=True, timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    versions = set(re.findall(r"rank \d version (\S+)", out))
    assert len(re.findall(r"rank \d version", out)) == 2 and len(versions) == 1, out[-3000:]
    version = versions.pop()
    assert re.fullmatch(r"torchrun-[0-9a-f-]{8,}", version), version  # torchrun's run id: no listing involved
    assert [p.name for p in (tmp_path / "logs" / "solo").iterdir()] == [version]
    logdir = tmp_path / "logs" / "solo" / version
    wait_up_to_date(logdir)
    copy = remote_copy(logdir, tmp_path / "tb-mirror", f"tensorboard/solo/{version}", tmp_path / "remote")
    assert list(tensorboard_runs(copy)) == ["rank-000"], "rank_zero_only: rank 0's run only"
    assert [s for s, _ in scalars(copy / "rank-000", "p-train/loss")] == [0, 1, 2, 3, 4, 5]
    from helpers import accumulator

    assert accumulator(copy / "rank-000").Graph() is not None  # log_graph, from example_input_array


# -- the logger alone, in this process ---------------------------------------------------------------
@pytest.fixture
def no_job(monkeypatch):
    from helpers import LAUNCHER_VARS

    for var in (*LAUNCHER_VARS, "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID",
                "PMIX_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_plain_layout_and_finalize_waits_for_the_commit(tmp_path, no_job):
    (tmp_path / "logs" / "exp" / "version_3").mkdir(parents=True)
    logger = HFMPWriterLogger(tmp_path / "logs", name="exp", target_dir=tmp_path / "target", commit_every=10,
                              prefix="val", uploader="thread")
    assert logger.version == 4 and logger.log_dir == str(tmp_path / "logs" / "exp" / "version_4")
    logger.log_hyperparams({"opt": {"lr": 0.1, "name": "sgd"}, "layers": 2})
    for step in range(5):
        logger.log_metrics({"loss": 1.0 / (step + 1), "acc": {"top1": step / 10, "top5": step / 5}}, step)
    logger.finalize("success")  # returns once committed: nothing to wait for afterwards
    logdir = tmp_path / "logs" / "exp" / "version_4"
    copy = remote_copy(logdir, tmp_path / "target", "tensorboard/exp/version_4", tmp_path / "remote")
    runs = sorted(tensorboard_runs(copy))
    assert runs == [".", "val-acc/top1", "val-acc/top5"], runs  # plain layout; add_scalars' sub-runs
    assert [s for s, _ in scalars(copy, "val-loss")] == [0, 1, 2, 3, 4]
    assert hparams_of(copy) == {"opt/lr": 0.1, "opt/name": "sgd", "layers": 2.0}
    with pytest.raises(ValueError, match="you tried to log"):
        logger.log_metrics({"bad": [1, 2, 3]}, 0)
    logger.finalize("success")


def test_arguments_are_checked_when_the_logger_is_built(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword"):
        HFMPWriterLogger(tmp_path, repo_idd="me/x")
    with pytest.raises(TypeError, match="rank"):
        HFMPWriterLogger(tmp_path, rank=1)
    with pytest.raises(ConfigurationError, match="system_metrics"):
        HFMPWriterLogger(tmp_path, target_dir=tmp_path.parent / "t", system_metrics="often")
    with pytest.raises(ConfigurationError, match="repo_id"):
        HFMPWriterLogger(tmp_path, repo_id="not a repo id!")
    assert not list(tmp_path.iterdir()), "a rejected logger creates nothing"


def test_version_from_the_job_and_never_from_a_listing_on_other_ranks(tmp_path, monkeypatch, no_job):
    # Rank 1 before the process group is up: its version is unknown there, not guessed. A real second
    # process, with what Lightning's own launcher gives it (SubprocessScriptLauncher._call_children_scripts);
    # started first, it imports Lightning while this process checks the rest.
    env = child_env(LOCAL_RANK="1", NODE_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    second_rank = spawn(SECOND_RANK.format(save_dir=str(tmp_path / "second")), env, torch=True)
    assert job_version({"TORCHELASTIC_RUN_ID": "none", "SLURM_JOB_ID": "123"}) == "slurm-123"
    assert job_version({"TORCHELASTIC_RUN_ID": "ab12-cd"}) == "torchrun-ab12-cd"
    assert job_version({"PBS_JOBID": "77.server/x"}) == "pbs-77.server_x"
    assert job_version({}) is None
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert HFMPWriterLogger(tmp_path, name="n").log_dir == str(tmp_path / "n" / "slurm-4242")
    assert HFMPWriterLogger(tmp_path, name="n", version=7).version == 7
    monkeypatch.delenv("SLURM_JOB_ID")
    out = json.loads(finish(second_rank, timeout=120).splitlines()[-1])
    assert out["rank"] == 1 and not out["group"], f"the scenario: Lightning's rank 1, no process group yet: {out}"
    assert out["version"] is None and "chosen by rank 0" in out["error"], out
    assert not (tmp_path / "second").exists(), "rank 1 created a version directory"


#: Reads the logger's version where Lightning's launcher starts rank 1, before the Trainer exists.
SECOND_RANK = """
import json
import torch.distributed as dist
from lightning.fabric.utilities.rank_zero import rank_zero_only
from hf_mpwriter.integrations import HFMPWriterLogger

logger = HFMPWriterLogger({save_dir!r}, name="n")
try:
    version, error = logger.version, None
except RuntimeError as exc:
    version, error = None, str(exc)
group = dist.is_available() and dist.is_initialized()
print(json.dumps({{"rank": rank_zero_only.rank, "group": group, "version": version, "error": error}}))
"""


def test_pickled_without_its_writer(tmp_path, no_job):
    logger = HFMPWriterLogger(tmp_path / "logs", target_dir=tmp_path / "target", uploader="none")
    logger.log_metrics({"x": 1.0}, 0)
    clone = pickle.loads(pickle.dumps(logger))
    assert clone._experiment is None and clone.version == logger.version == 0
    logger.finalize("success")


def test_the_older_pytorch_lightning_trainer_takes_it_too(tmp_path, no_job):
    pl = pytest.importorskip("pytorch_lightning", reason="the older package is not installed")
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    logger = HFMPWriterLogger(tmp_path / "logs", target_dir=tmp_path / "target", commit_every=10, uploader="thread")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, log_every_n_steps=1, logger=logger,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(Model(), DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4))
    logdir = tmp_path / "logs" / "lightning_logs" / "version_0"
    copy = remote_copy(logdir, tmp_path / "target", "tensorboard/lightning_logs/version_0", tmp_path / "remote")
    assert [s for s, _ in scalars(copy, "loss")] == [0, 1, 2, 3]
