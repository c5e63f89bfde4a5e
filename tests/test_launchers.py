"""Real launchers and trainers, on CPU: torchrun (DDP over gloo, with and without a restart),
multiprocessing pools (spawn, fork, derived ranks, ``terminate()``), transformers' ``Trainer`` and
Accelerate.

The launcher examples of ``README.md`` are run
exactly as written: each ``<!-- example: NAME/FILE -->`` python block is saved as ``FILE`` in a
fresh directory, each ``<!-- example: NAME -->`` bash block is run there (``torchrun`` and
``python`` are this interpreter's), and ``<!-- excerpt: PATH -->`` blocks must be lines of
``PATH``. Results are read back from the target with TensorBoard's own reader.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import launcher_workers
import pytest
from helpers import LAUNCHER_VARS, accumulator, child_env, read_raw_records, scalars, tensorboard_runs
from upload_helpers import (
    check_remote,
    committed_and_checked,
    local_event_files,
    local_target_files,
    materialise,
    uploader_pid,
    wait_for,
)

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.uploader.loop import Uploader

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SCRIPT = REPO / "scripts" / "torchrun_example.py"
COMMIT_EVERY_MIN = 1 / 60


# -- the documented examples ---------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One documented example: files to write, then shell commands to run."""

    name: str
    source: str
    files: tuple = ()  # ((file name, content), ...)
    commands: tuple = ()


def _readme_examples():
    """The README's blocks as ``scripts/check_readme_examples.py`` reads them (one parser for both)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_readme_examples
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return check_readme_examples


def examples(name: str) -> list[Example]:
    """Example ``name`` of README.md or a docs/ page: its files, then the commands of its command block."""
    readme = _readme_examples()
    for document in readme.documents():
        found = readme.examples_of(readme.parse(document.read_text())).get(name)
        if found is not None:
            break
    assert found is not None and found.run is not None, f"no example {name!r} with a command block in README.md or docs/"
    text = found.run.text.replace("\\\n", " ")
    commands = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))
    return [Example(name, document.name, tuple((f, c if c.endswith("\n") else c + "\n") for f, c in found.files.items()),
                    commands)]


def example_env(cwd: Path, **extra: str) -> dict[str, str]:
    """A child environment: no launcher variables, this checkout first, no network, no user config."""
    env = child_env(
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(cwd / ".hf-home"),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def run_example(example: Example, cwd: Path, timeout: float) -> str:
    """Write the example's files into ``cwd`` and run its commands there; their output."""
    cwd.mkdir(parents=True, exist_ok=True)
    if not (cwd / "scripts").exists():
        (cwd / "scripts").symlink_to(REPO / "scripts", target_is_directory=True)
    for filename, content in example.files:
        (cwd / filename).write_text(content)
    output = []
    for command in example.commands:
        tokens = shlex.split(command)
        env = {}
        while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
            key, _, value = tokens.pop(0).partition("=")
            env[key] = value
        program = {"torchrun": [sys.executable, "-m", "torch.distributed.run"], "python": [sys.executable],
                   "rm": ["rm"]}  # an example that starts clean each time
        assert tokens and tokens[0] in program, f"{example.source}: cannot run {command!r}"
        argv = program[tokens[0]] + tokens[1:]
        try:
            proc = subprocess.run(argv, cwd=cwd, env=example_env(cwd, **env), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{example.source}: {command!r} timed out after {timeout} s\n{exc.stdout}\n{exc.stderr}")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{example.source}: {command!r} exited {proc.returncode}\n{out[-6000:]}"
        output.append(out)
    return "\n".join(output)


# -- reading the target back ---------------------------------------------------------------------
def remote_copy(logdir: Path, target: Path, into: Path) -> Path:
    """Copy what the target holds for ``logdir``; check it is the local files cut at whole records."""
    remote = local_target_files(target, f"tensorboard/{logdir.name}")
    local = local_event_files(logdir)
    assert remote and set(remote) == set(local), f"remote {sorted(remote)} != local {sorted(local)}"
    copy = materialise(remote, into)
    for rel, data in remote.items():
        assert local[rel].startswith(data), f"{rel}: the remote file is not a prefix of the local one"
        consumed = sum(16 + len(r) for r in read_raw_records(copy / rel))
        assert consumed == len(data), f"{rel}: the remote file ends mid-record ({consumed} != {len(data)})"
    return copy


def steps(run_dir: Path, tag: str, purge: bool = True) -> list[int]:
    return [step for step, _ in scalars(run_dir, tag, purge)]


def wait_up_to_date(logdir: Path, timeout: float = 60) -> dict:
    return wait_for(lambda: (lambda s: s if s["up_to_date"] else None)(collect(logdir)), timeout,
                    f"{logdir} to be committed")


def uploader_starts(logdir: Path) -> list[int]:
    """Pids of the uploaders that ran for ``logdir``, in order; fails if two ever ran at once."""
    alive, starts = None, []
    log = logdir / ".hf_mpwriter" / "uploader.log"
    for line in log.read_text().splitlines():
        match = re.match(r"\S+ \S+ (\d+) \w+ \S+: (.*)$", line)
        if not match:
            continue
        pid, message = int(match.group(1)), match.group(2)
        if re.match(r"uploader \d+ started", message):
            assert alive is None, f"uploader {pid} started while uploader {alive} was running:\n{log.read_text()}"
            alive = pid
            starts.append(pid)
        elif pid == alive and ("uploader exits" in message or "hf-mpwriter sync" in message):
            alive = None
    return starts


def text_tags(run_dir: Path) -> list[str]:
    return accumulator(run_dir).Tags()["tensors"]


# -- torchrun --------------------------------------------------------------------------------------
def _torchrun_checks(cwd: Path, n_steps: int, logdir_name: str = "runs/ddp", mirror: str = "tb-mirror") -> tuple[Path, Path]:
    logdir, target = cwd / logdir_name, cwd / mirror
    assert sorted(p.name for p in logdir.iterdir() if p.name.startswith("rank")) == [f"rank-{r:03d}" for r in range(4)]
    status = wait_up_to_date(logdir)
    assert status["pending_jobs"] == 0 and not status["last_error"], status
    copy = remote_copy(logdir, target, cwd / "remote")
    assert sorted(tensorboard_runs(copy)) == ["job"] + [f"rank-{r:03d}" for r in range(4)]
    for rank in range(4):
        run = copy / f"rank-{rank:03d}"
        assert steps(run, "train/loss") == list(range(n_steps)), f"rank {rank}"
        assert steps(run, "train/lr") == list(range(n_steps)), f"rank {rank}"
        losses = [value for _, value in scalars(run, "train/loss")]
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], f"rank {rank} did not train"
    # The job run: every step's mean of the four ranks' losses, all four counted.
    by_rank = [dict(scalars(copy / f"rank-{rank:03d}", "train/loss")) for rank in range(4)]
    assert scalars(copy / "job", "~job/train/loss/ranks") == [(s, 4.0) for s in range(n_steps)]
    assert scalars(copy / "job", "train/loss") == [
        (s, pytest.approx(math.fsum(r[s] for r in by_rank) / 4, rel=1e-6)) for s in range(n_steps)]
    return logdir, copy


def test_torchrun_four_ranks(tmp_path):
    pytest.importorskip("torch", reason="the torchrun example trains a torch model")
    for i, example in enumerate(examples("torchrun")):
        cwd = tmp_path / f"v{i}"
        run_example(example, cwd, timeout=180)
        logdir, _ = _torchrun_checks(cwd, 100)
        assert len(uploader_starts(logdir)) == 1, "four ranks of a node share one uploader"


def test_torchrun_restart_resumes_same_runs_with_purge_step(tmp_path):
    pytest.importorskip("torch", reason="the torchrun example trains a torch model")
    for i, example in enumerate(examples("torchrun-restart")):
        cwd = tmp_path / f"v{i}"
        output = run_example(example, cwd, timeout=240)
        assert "simulated failure of rank 2 at step 37" in output
        for rank in range(4):  # every rank restarted, resumed from the step-30 checkpoint
            assert f"rank {rank} torchrun_example: attempt 1: steps 30..99 of 100 (purge_step=30)" in output, output
        logdir, copy = _torchrun_checks(cwd, 100, "runs/ddp-restart", "tb-mirror-restart")  # the README's names
        for rank in range(4):
            # The same run directory holds both attempts' files: one run continued, not a new one.
            assert len(list((copy / f"rank-{rank:03d}").glob("*tfevents*"))) == 2
        # The failed rank flushed steps 30..36 before it died; TensorBoard hides them only thanks to
        # purge_step (without purging it would show them twice).
        unpurged = Counter(steps(copy / "rank-002", "train/loss", purge=False))
        assert {s for s, n in unpurged.items() if n == 2} >= set(range(30, 37))
        # One uploader at a time, and one that finished the job after the restart.
        wait_for(lambda logdir=logdir: uploader_pid(logdir) is None, 30, "the uploader to exit once all is committed")
        log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
        assert 1 <= len(uploader_starts(logdir)) <= 2, log


def test_torchrun_example_excerpts_are_the_script():
    """The README's excerpts (of the torchrun example) are made of the script's own lines."""
    readme = _readme_examples()
    excerpts = [block for block in readme.parse(README.read_text()) if block.kind == "excerpt"]
    assert excerpts, "no excerpt blocks in README.md"
    problems = [readme.check_excerpt(block) for block in excerpts]
    assert not any(problems), problems


# -- multiprocessing -------------------------------------------------------------------------------
@pytest.fixture
def no_launcher_env(monkeypatch):
    """A fresh process's view: no launcher variables, and SIGTERM as Python starts (its default
    action, no handler of ours yet). An earlier test of this pytest worker may have left a SIGTERM
    handler that does not end the process (Lightning's, in-process); fork workers inherit it, survive
    ``Pool.terminate()``'s SIGTERM and wait for ever on the pool's queue lock the parent holds."""
    import signal

    from hf_mpwriter.writer import termination

    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    monkeypatch.setattr(termination, "_installed", False)
    monkeypatch.setattr(termination, "_previous", None)
    yield
    signal.signal(signal.SIGTERM, previous)


def _context(method: str):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method on this platform")
    return multiprocessing.get_context(method)


def test_multiprocessing_example_spawn(tmp_path):
    for i, example in enumerate(examples("multiprocessing")):
        cwd = tmp_path / f"v{i}"
        run_example(example, cwd, timeout=120)
        logdir = cwd / "logs" / "mp"
        wait_up_to_date(logdir)
        copy = remote_copy(logdir, cwd / "tb-mirror", cwd / "remote")
        assert sorted(tensorboard_runs(copy)) == ["job"] + [f"rank-{r:03d}" for r in range(4)]
        for rank in range(4):
            points = scalars(copy / f"rank-{rank:03d}", "loss")
            assert [s for s, _ in points] == list(range(50))
            assert [v for _, v in points] == pytest.approx([1.0 / (rank + s + 1) for s in range(50)])


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_pool_with_explicit_ranks(tmp_path, method, no_launcher_env):
    ctx = _context(method)
    logdir, target = tmp_path / "logs", tmp_path / "target"
    with ctx.Pool(4, initializer=launcher_workers.init_worker, initargs=(ctx.Barrier(4),)) as pool:
        results = pool.starmap(launcher_workers.log_steps,
                               [(str(logdir), str(target), rank, rank, 120) for rank in range(4)])
        pool.close()  # the workers exit on their own (leaving the block would terminate() them)
        pool.join()
    assert sorted(results) == [(r, f"rank-{r:03d}") for r in range(4)]
    assert committed_and_checked(logdir), "close() returned before the worker's logs were committed"
    remote = local_target_files(target, "tensorboard/logs")
    check_remote(logdir, remote, {r: range(120) for r in range(4)}, tmp_path / "remote")


def test_pool_with_derived_ranks_gives_each_worker_its_own_run(tmp_path, no_launcher_env):
    ctx = _context("fork")
    logdir, target = tmp_path / "logs", tmp_path / "target"
    with ctx.Pool(4, initializer=launcher_workers.init_worker, initargs=(ctx.Barrier(4),)) as pool:
        results = pool.starmap(launcher_workers.log_steps,
                               [(str(logdir), str(target), None, base, 80) for base in range(4)])
        pool.close()
        pool.join()
    run_dirs = [run for _, run in results]
    assert len(set(run_dirs)) == 4, f"workers shared a run directory: {results}"
    assert committed_and_checked(logdir)
    copy = remote_copy(logdir, target, tmp_path / "remote")
    assert sorted(tensorboard_runs(copy)) == sorted(run_dirs)
    for base, run in results:
        assert scalars(copy / run, "loss") == [(s, float(base * 100000 + s)) for s in range(80)], run


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_terminated_pool_flushed_steps_reach_target(tmp_path, method, no_launcher_env):
    ctx = _context(method)
    logdir, target, progress = tmp_path / "logs", tmp_path / "target", tmp_path / "progress"
    progress.mkdir()

    def flushed() -> dict[int, int]:
        out = {}
        for rank in range(4):
            try:
                out[rank] = int((progress / str(rank)).read_text())
            except (OSError, ValueError):
                pass
        return out

    pool = ctx.Pool(4)
    try:
        pool.starmap_async(launcher_workers.log_until_killed,
                           [(str(logdir), str(target), rank, str(progress)) for rank in range(4)])
        wait_for(lambda: len(flushed()) == 4 and min(flushed().values()) >= 99, 90,
                 "every worker to flush 100 steps")
        wait_for(lambda: uploader_pid(logdir), 30, "the uploader to run")
        seen = flushed()
    finally:
        pool.terminate()  # SIGTERM, mid-run
        pool.join()
    # The uploader outlives the workers; it commits what they flushed, then exits. A drain
    # afterwards (what `hf-mpwriter sync` does) finds nothing left, or finishes the job.
    wait_for(lambda: uploader_pid(logdir) is None, 60, "the uploader to finish and exit")
    assert Uploader(logdir).drain(timeout=60)
    assert collect(logdir)["up_to_date"]
    remote = local_target_files(target, "tensorboard/logs")
    check_remote(logdir, remote, {r: range(seen[r] + 1) for r in range(4)}, tmp_path / "remote")


# -- transformers ----------------------------------------------------------------------------------
def test_trainer_example_with_callback(tmp_path):
    pytest.importorskip("torch", reason="the Trainer example needs torch")
    pytest.importorskip("transformers", reason="the Trainer example needs transformers")
    for i, example in enumerate(examples("transformers")):
        cwd = tmp_path / f"v{i}"
        run_example(example, cwd, timeout=180)
        logdir = cwd / "logs" / "trainer"
        wait_up_to_date(logdir)
        copy = remote_copy(logdir, cwd / "tb-mirror", cwd / "remote")
        assert list(tensorboard_runs(copy)) == ["."], "a single process keeps the plain layout"
        assert steps(copy, "train/loss") == [2, 4, 6, 8]
        assert steps(copy, "train/learning_rate") == [2, 4, 6, 8]
        assert {"args/text_summary", "model_config/text_summary"} <= set(text_tags(copy))


def _tiny_trainer(tmp_path: Path, callbacks: list):
    import torch
    from transformers import BertConfig, BertForMaskedLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (24, 8))]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, logging_steps=1,
                             per_device_train_batch_size=4, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    return Trainer(model=BertForMaskedLM(config), args=args, train_dataset=data, callbacks=callbacks)


def test_trainer_tensorboard_callback_with_hf_summary_writer(tmp_path, monkeypatch, no_launcher_env):
    pytest.importorskip("torch", reason="Trainer needs torch")
    pytest.importorskip("transformers", reason="needs transformers")
    from transformers.integrations import TensorBoardCallback

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    logdir, target = tmp_path / "tbcb", tmp_path / "target"
    writer = HFSummaryWriter(repo_id=None, target_dir=str(target), logdir=str(logdir), commit_every=COMMIT_EVERY_MIN,
                             close_timeout=60)
    trainer = _tiny_trainer(tmp_path, [TensorBoardCallback(tb_writer=writer)])
    trainer.train()  # on_train_end closes the writer: committed when train() returns
    assert committed_and_checked(logdir)
    copy = remote_copy(logdir, target, tmp_path / "remote")
    expected = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert [s for s, _ in expected] == [1, 2, 3, 4, 5, 6]
    assert scalars(copy, "train/loss") == [(s, pytest.approx(v, rel=1e-6)) for s, v in expected]


def test_callback_logdir_defaults_and_validation(tmp_path, monkeypatch, no_launcher_env):
    pytest.importorskip("torch", reason="Trainer needs torch")
    pytest.importorskip("transformers", reason="needs transformers")
    from hf_mpwriter import ConfigurationError
    from hf_mpwriter.integrations import HFMPWriterCallback

    with pytest.raises(TypeError, match="commit_evry"):
        HFMPWriterCallback(target_dir=str(tmp_path), commit_evry=1)
    with pytest.raises(ConfigurationError, match="commit_every"):
        HFMPWriterCallback(target_dir=str(tmp_path), commit_every=0)
    with pytest.raises(ConfigurationError, match="not both"):
        HFMPWriterCallback(repo_id="me/run", target_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="invalid repo_id"):
        HFMPWriterCallback(repo_id="not a repo")
    # No logdir: TensorBoardCallback's default, <output_dir>/runs/<date>_<host>.
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = HFMPWriterCallback(target_dir=str(tmp_path / "target"), commit_every=COMMIT_EVERY_MIN)
    trainer = _tiny_trainer(tmp_path, [callback])
    trainer.train()
    logdirs = list((tmp_path / "out" / "runs").iterdir())
    assert len(logdirs) == 1 and callback.tb_writer is None  # closed at the end of training
    assert committed_and_checked(logdirs[0])
    copy = remote_copy(logdirs[0], tmp_path / "target", tmp_path / "remote")
    assert steps(copy, "train/loss") == [1, 2, 3, 4, 5, 6]


# -- accelerate ------------------------------------------------------------------------------------
def test_accelerate_example_main_process_and_all_ranks(tmp_path):
    pytest.importorskip("torch", reason="Accelerate needs torch")
    pytest.importorskip("accelerate", reason="the Accelerate example needs accelerate")
    for i, example in enumerate(examples("accelerate")):
        cwd = tmp_path / f"v{i}"
        run_example(example, cwd, timeout=180)
        main_logdir, ranks_logdir = cwd / "logs" / "demo", cwd / "logs" / "demo-ranks"
        wait_up_to_date(main_logdir)
        wait_up_to_date(ranks_logdir)
        # Main process only by default: rank 1 logged nothing.
        main = remote_copy(main_logdir, cwd / "tb-mirror", cwd / "remote-main")
        assert sorted(tensorboard_runs(main)) == ["rank-000", "rank-000/hparams"]
        assert steps(main / "rank-000", "train/loss") == list(range(20))
        assert "hparams/text_summary" in text_tags(main / "rank-000")
        hparams = accumulator(main / "rank-000" / "hparams").SummaryMetadata("_hparams_/session_start_info")
        assert hparams.plugin_data.plugin_name == "hparams"
        # all_ranks=True: every rank in its own run.
        per_rank = remote_copy(ranks_logdir, cwd / "tb-mirror", cwd / "remote-ranks")
        assert sorted(tensorboard_runs(per_rank)) == ["job", "rank-000", "rank-001"]  # and the job run
        for rank in range(2):
            assert steps(per_rank / f"rank-{rank:03d}", "rank/loss") == list(range(20))


def test_accelerate_tracker_log_values(tmp_path, monkeypatch, no_launcher_env, caplog):
    torch = pytest.importorskip("torch", reason="Accelerate needs torch")
    pytest.importorskip("accelerate", reason="needs accelerate")
    from accelerate.state import PartialState

    from hf_mpwriter.integrations import HFMPWriterTracker

    PartialState(cpu=True)
    tracker = HFMPWriterTracker("run", tmp_path / "logs", target_dir=str(tmp_path / "target"),
                                commit_every=COMMIT_EVERY_MIN, close_timeout=60)
    assert (tracker.name, tracker.requires_logging_directory, tracker.main_process_only) == ("hf_mpwriter", True, True)
    tracker.start()
    tracker.store_init_configuration({"lr": 0.1, "name": "x", "flag": True, "none": None, "list": [1, 2]})
    tracker.log({"a": 1, "b": 2.5, "t": torch.tensor(3.0), "s": "hello", "d": {"x": 1.0, "y": 2.0}, "bad": [1, 2]},
                step=3)
    assert "'bad'" in caplog.text
    writer = tracker.tracker
    tracker.finish()
    tracker.finish()  # idempotent (end_training and the user may both call it)
    logdir = tmp_path / "logs" / "run"
    assert writer.run_dir == logdir and committed_and_checked(logdir)
    copy = remote_copy(logdir, tmp_path / "target", tmp_path / "remote")
    assert scalars(copy, "a") == [(3, 1.0)] and scalars(copy, "b") == [(3, 2.5)] and scalars(copy, "t") == [(3, 3.0)]
    assert {"s/text_summary", "hparams/text_summary"} <= set(text_tags(copy))
    assert scalars(copy / "d" / "x", "d") == [(3, 1.0)]  # add_scalars layout: <run>/<main_tag>/<tag>
    assert not any("bad" in tag for tag in accumulator(copy).Tags()["scalars"])


def test_importing_hf_mpwriter_imports_no_framework():
    code = ("import sys, hf_mpwriter, hf_mpwriter.integrations as i; "
            "print(json.dumps(sorted(m for m in ('transformers', 'accelerate') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], env=example_env(REPO), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("integration", ["transformers", "accelerate"])
def test_integrations_give_a_bucket_the_buckets_default_interval(tmp_path, integration, no_launcher_env):
    """Without ``commit_every``, a bucket target commits every 10 s (its default everywhere), a
    repository every 5 minutes (huggingface_hub's): the integrations pass no default of their own."""
    from types import SimpleNamespace

    from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
    from hf_mpwriter.config import load

    if hub_version() < BUCKETS_VERSION:
        pytest.skip("Storage Buckets need huggingface_hub 1.5")
    pytest.importorskip(integration)
    intervals = {}
    for name, repo_id in (("bucket", "hf://buckets/me/runs"), ("repo", "me/run")):
        logdir = tmp_path / name
        if integration == "transformers":
            from hf_mpwriter.integrations import HFMPWriterCallback

            callback = HFMPWriterCallback(repo_id, logdir=str(logdir), uploader="none")
            callback._init_summary_writer(SimpleNamespace(output_dir=str(tmp_path / "out")))
            writer = callback.tb_writer
        else:
            from hf_mpwriter.integrations import HFMPWriterTracker

            tracker = HFMPWriterTracker("run", str(logdir), repo_id, uploader="none")
            writer = tracker._writer()
            logdir = logdir / "run"
        writer.close()
        intervals[name] = load(logdir).commit_every
    assert intervals == {"bucket": 10.0, "repo": 300.0}, intervals
