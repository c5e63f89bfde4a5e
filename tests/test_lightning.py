"""The Lightning logger, with real ``lightning.pytorch`` Trainers on CPU.

- The README's example, exactly as written: ``strategy="ddp"`` with 2 processes (Lightning starts
  the second one itself, so there is no job id): both ranks land in the same version, which rank 0
  chose and sent, both ranks' metrics and hyperparameters are on the target, as two runs.
- torchrun (a job id) with ``rank_zero_only=True``: one run, in the version named after the job.
- A DDP job SIGKILLed whole after a checkpoint and relaunched with ``fit(ckpt_path="last")``: the
  relaunch continues the killed attempt's version (its checkpoint found there), one run per rank at
  the test Hub, as both of TensorBoard's readers show it.
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

import psutil
import pytest
from helpers import child_env, finish, plugin_accumulator, read_line, read_raw_records, scalars, spawn, tensorboard_runs
from tb_readers import default_reader_scalars, python_reader_scalars
from test_launchers import example_env, examples, run_example, wait_up_to_date
from test_resume import _hub_copy
from upload_helpers import (
    TESTS,
    hub_env,
    local_event_files,
    local_target_files,
    materialise,
    sigkill,
    uploader_pid,
    writer_env,
)

from hf_mpwriter.cli.status import collect
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


# -- killed and resumed --------------------------------------------------------------------------------
#: What tells a process its job's id (the logger's case 2): cleared, so the version is rank 0's choice.
JOB_IDS = ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID", "PMIX_NAMESPACE")


def _launch_lightning(cwd: Path, env: dict, out: Path, attempt: int) -> subprocess.Popen:
    """``resume_workers.py lightning``: rank 0, which starts rank 1 itself (Lightning's launcher), in a
    session of its own."""
    env = {k: v for k, v in writer_env(env).items() if k not in JOB_IDS}
    return subprocess.Popen([sys.executable, str(TESTS / "resume_workers.py"), "lightning", str(out), str(attempt)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_whole(proc: subprocess.Popen, logdir: Path) -> None:
    """SIGKILL as a lost node does it: the launching rank, every process it started (listed first: a
    launcher may put them in sessions of their own) and the node's uploader."""
    uploader = uploader_pid(logdir)
    assert uploader, "the scenario needs a live uploader to kill"
    children = [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    assert children, "Lightning's launcher started the second rank"
    for pid in dict.fromkeys([proc.pid, *children, uploader]):
        try:
            sigkill(pid)
        except ProcessLookupError:  # a child gone with its parent
            pass
    proc.wait(10)


def test_a_ddp_job_killed_after_a_checkpoint_and_relaunched_from_last_is_one_version_at_the_hub(tmp_path, hub):
    """Lightning's own launcher (no job id: rank 0 picks the version), SIGKILLed whole past its step-20
    checkpoint, relaunched with ``fit(ckpt_path="last")``: the relaunch continues the killed attempt's
    ``version_0`` (so "last" finds its checkpoint there), and at the test Hub both readers show one run
    per rank, every step once, the killed attempt's values up to the checkpoint and the relaunch's after."""
    repo, out = "user/lightning-resume", tmp_path / "out"
    env = {**hub_env(hub, tmp_path), "REPO": repo, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    version = out / "logs" / "demo" / "version_0"
    first = _launch_lightning(tmp_path, env, out, 1)
    read_line(first, "step 24", timeout=240)  # printed after step 24's checkpoint hook, before it logs
    assert (version / "checkpoints" / "epoch=0-step=20.ckpt").is_file()
    _kill_whole(first, version)
    killed = python_reader_scalars(version)
    for rank in ("rank-000", "rank-001"):  # the overlap exists: logged past the checkpoint, then killed
        assert {step for step, _ in killed[rank]["train/attempt"]} >= set(range(23)), (rank, killed[rank])

    second = _launch_lightning(tmp_path, env, out, 2)
    assert "version 0" in finish(second, timeout=300).splitlines()
    assert [p.name for p in version.parent.iterdir()] == ["version_0"], "the relaunch continued the killed version"
    assert (version / ".hf_mpwriter" / "lightning-ended").is_file(), "fit returned: the version's attempt ended"
    copy = _hub_copy(hub, repo, tmp_path / "remote")
    assert local_event_files(copy / "demo" / "version_0") == local_event_files(version), "every record is at the Hub"
    # Each rank's hp_metric (no step: step 0) again at the relaunch's start, after the job run holds step 0, was
    # counted late ("2 late values left out", issue 69); the relaunch leaves it out (writer/repeats.py).
    view = collect(version)["job_view"]
    assert view["late"] == 0 and view["newest_step"] == {"0": 29, "1": 29}, view
    # Lightning logs a batch's metrics at the step before its global step, and the checkpoint of global
    # step 20 is saved before batch 20's metrics are logged (step 19); resumed from it, Lightning counts
    # batch 20 done (RESTARTED_ON_TRAIN_BATCH_END) and logs the next one at step 20: attempt 1's steps
    # 0-19, attempt 2's 20-29 (attempt 1's own 20-23 are replaced).
    # Each attempt logs its hyperparameters first, hp_metric with no step: not the restart point (at step 0
    # it would hide attempt 1's steps from the Python reader).
    expected = [(step, 1.0 if step < 20 else 2.0) for step in range(30)]
    for reader in (python_reader_scalars, default_reader_scalars):
        runs = reader(copy)
        assert sorted(runs) == [f"demo/version_0/{run}" for run in ("job", "rank-000", "rank-001")], reader.__name__
        for rank in ("rank-000", "rank-001"):
            tags = runs[f"demo/version_0/{rank}"]
            assert tags["train/attempt"] == expected, (reader.__name__, rank)
            assert [step for step, _ in tags["train/loss"]] == list(range(30)), (reader.__name__, rank)
        job = runs["demo/version_0/job"]  # the job run: the mean of what the reader shows for the ranks, at every step
        for tag in ("train/attempt", "train/loss"):
            ranks = [dict(runs[f"demo/version_0/{rank}"][tag]) for rank in ("rank-000", "rank-001")]
            assert [step for step, _ in job[tag]] == list(range(30)), (reader.__name__, tag)
            assert job[tag] == [(s, pytest.approx((ranks[0][s] + ranks[1][s]) / 2, rel=1e-6)) for s in range(30)], (
                reader.__name__, tag)


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


def test_version_from_the_job_and_other_ranks_only_foresee_rank_zeros_before_the_process_group(tmp_path, monkeypatch,
                                                                                              no_job):
    # Rank 1 before the process group is up (where Lightning looks for ckpt_path="last"): what its listing
    # says rank 0 will choose, kept nowhere and creating nothing. A real second process, with what
    # Lightning's own launcher gives it (SubprocessScriptLauncher._call_children_scripts); started first,
    # it imports Lightning while this process checks the rest.
    root = tmp_path / "second" / "n"
    (root / "version_0" / ".hf_mpwriter").mkdir(parents=True)
    (root / "version_0" / ".hf_mpwriter" / "lightning-ended").touch()
    (root / "version_1" / ".hf_mpwriter").mkdir(parents=True)  # its attempt did not end: rank 0 continues it
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
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
    assert out["version"] == 1 and out["error"] is None and out["kept"] is None, out
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == listing, "rank 1 changed the versions"


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
print(json.dumps({{"rank": rank_zero_only.rank, "group": group, "version": version, "error": error,
                  "kept": logger._version}}))
"""


def test_a_relaunch_continues_the_newest_version_until_an_attempt_ends_it(tmp_path, no_job):
    """Case 3, one process: a ``version_N`` that a writer used is continued until ``finalize("success")``, and
    one whose writers are alive (another job logs there now) is not. (The restart point of a relaunch, a
    process of its own, is the DDP test's: a writer of the same process continues its attempt.)"""
    def logger():
        return HFMPWriterLogger(tmp_path / "logs", name="exp", target_dir=tmp_path / "target", uploader="none")

    root = tmp_path / "logs" / "exp"
    (root / "version_0").mkdir(parents=True)  # no writer of ours used it (TensorBoardLogger's, say): not continued
    first = logger()
    assert first.version == 1
    for step in range(5):
        first.log_metrics({"loss": float(step)}, step)
    first.finalize("failed")  # as the Trainer does on an exception: not an end
    relaunch = logger()
    assert relaunch.version == 1
    relaunch.log_hyperparams({"lr": 0.1})
    for step in range(3, 6):
        relaunch.log_metrics({"loss": 100.0 + step}, step)
    relaunch.finalize("success")
    assert (root / "version_1" / ".hf_mpwriter" / "lightning-ended").is_file()
    assert {step for step, _ in scalars(root / "version_1", "loss")} == set(range(6))  # both attempts, one version
    assert logger().version == 2, "a version whose attempt ended is never continued"
    live = logger()
    assert live.version == 2
    live.log_metrics({"loss": 1.0}, 0)  # its writer lives: version_2 is another job's now
    assert logger().version == 3, "a version whose writers are alive is never continued"
    live.finalize("failed")
    assert HFMPWriterLogger(tmp_path, purge_step=3)._writer_kwargs.get("resume") is None  # the user's restart step


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
