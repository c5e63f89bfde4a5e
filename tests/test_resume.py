"""A run resumed after preemption shows one curve: the restart point is the first step the resumed
attempt logs (``resume=True``, what the integrations set), read back with TensorBoard's readers."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import LAUNCHER_VARS, finish, plugin_accumulator, read_line, run, stacks, wait_for
from tb_readers import default_reader_scalars, python_reader_scalars, python_reader_text_steps
from upload_helpers import (
    TESTS,
    hub_env,
    local_event_files,
    materialise,
    sigkill,
    start_writer,
    uploader_pid,
    writer_env,
)
from upload_helpers import finish as finish_writer

from hf_mpwriter import HFSummaryWriter, SummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.state import attempts


def _attempt(logdir: Path, steps: range, offset: float, **kwargs) -> None:
    """One attempt, in a process of its own (as a relaunch is: ``resume`` restarts what another process wrote)."""
    run(f"""
        from hf_mpwriter import SummaryWriter
        with SummaryWriter({str(logdir)!r}, **{kwargs!r}) as writer:
            writer.add_text("args", "no step: not the restart point")  # as the Trainer's callback does first
            for step in {steps!r}:
                writer.add_scalar("loss", {offset!r} + step, step)
                writer.add_scalars("lr", {{"group0": {offset!r} + step}}, step)
    """)


@pytest.mark.parametrize("first", [{}, {"resume": True}], ids=["first-plain", "first-resume"])
@pytest.mark.parametrize("kwargs", [{"resume": True}, {"purge_step": 31}], ids=["resume", "purge_step"])
def test_a_resumed_attempt_replaces_the_steps_it_logs_again_in_the_run_and_its_add_scalars_sub_runs(tmp_path, kwargs,
                                                                                                   first):
    """In both of TensorBoard's readers, whether the first attempt wrote a restart point (a START) or not
    (the Python reader takes a run's first START for no restart)."""
    logdir = tmp_path / "run"
    _attempt(logdir, range(60), 0.0, **first)
    _attempt(logdir, range(31, 60), 1000.0, **kwargs)
    for reader in (python_reader_scalars, default_reader_scalars):
        runs = reader(logdir)
        assert set(runs) == {".", "lr/group0"}, reader.__name__
        for run_name, tag in ((".", "loss"), ("lr/group0", "lr")):
            want = [(s, (0.0 if s < 31 else 1000.0) + s) for s in range(60)]  # every step once, the last attempt's
            assert runs[run_name][tag] == want, (reader.__name__, run_name)


def test_resume_restarts_only_what_another_process_wrote(tmp_path):
    """A fresh run with ``resume=True`` loses nothing (records without a step do not set the point); and a second
    writer of the same process (a Trainer's ``evaluate()`` after ``train()``) continues the same attempt: no restart."""
    logdir = tmp_path / "run"
    _attempt(logdir, range(5, 10), 0.0, resume=True)
    assert [step for step, _ in python_reader_scalars(logdir)["."]["loss"]] == [5, 6, 7, 8, 9]
    same = tmp_path / "same"
    for steps in (range(0, 10), range(9, 11)):  # one process: logs 0-9, closes, a new writer logs 9-10
        with SummaryWriter(str(same), resume=True) as writer:
            for step in steps:
                writer.add_scalar("loss", float(step), step)
    shown = [step for step, _ in python_reader_scalars(same)["."]["loss"]]
    assert shown[:10] == list(range(10)), shown  # nothing the first writer logged is hidden (no restart point)


# -- the integrations, killed and resumed as their frameworks document it ------------------------
def _launch(cwd: Path, env: dict, *args: str) -> subprocess.Popen:
    """torchrun --standalone with 2 ranks on ``resume_workers.py``, in a session of its own (killed whole)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(TESTS / "resume_workers.py"), *args]
    return subprocess.Popen(argv, cwd=cwd, env=writer_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_job(proc: subprocess.Popen, logdirs: list[Path]) -> None:
    """SIGKILL as a lost node does it: the launcher's agent, its ranks and the node's uploader."""
    uploaders = [pid for pid in map(uploader_pid, logdirs) if pid]
    assert uploaders, "the scenario needs a live uploader to kill"
    ranks = [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]  # torchrun's are in sessions of their own
    assert len(ranks) >= 2
    for pid in [proc.pid, *ranks, *uploaders]:
        sigkill(pid)
    proc.wait(10)


def _uploader_evidence(logdirs: list[Path]) -> str:
    """Each logdir's uploader: its stacks, the end of its log, its ``status``."""
    parts = []
    for logdir in logdirs:
        pid = uploader_pid(logdir)
        log = logdir / ".hf_mpwriter" / "uploader.log"
        tail = log.read_text(errors="replace")[-20_000:] if log.exists() else "(no uploader.log)"
        try:
            status = json.dumps(collect(logdir), default=str)[:5_000]
        except Exception as exc:  # evidence, not the test: whatever status raises is part of it
            status = repr(exc)
        parts.append(f"=== {logdir}: uploader {pid}\n{stacks([pid]) if pid else ''}\n--- uploader.log:\n{tail}\n"
                     f"--- status:\n{status}")
    return "\n".join(parts)


def _hub_copy(hub, repo: str, into: Path) -> Path:
    files = {path: hub.read_file(repo, path) for path in hub.list_files(repo) if "tfevents" in path}
    return materialise(files, into) / "tensorboard"


@pytest.mark.timeout(480)  # (above the test's own deadlines: a child that hangs is shown with its stacks, then killed)
def test_a_trainer_killed_after_a_checkpoint_and_resumed_from_it_is_one_run_at_the_hub(tmp_path, hub):
    """``train(resume_from_checkpoint=True)`` with the default logdir (a new ``runs/<date>_<host>`` at
    each launch): the resumed attempt logs into the killed one's run, from the checkpoint's step; at the
    test Hub, both readers show each step once with the value of the last attempt that logged it, and
    the killed attempt's records that no commit had taken are there too."""
    pytest.importorskip("transformers", reason="the Trainer needs transformers")
    repo, out = "user/trainer-resume", tmp_path / "out"
    env = {**hub_env(hub, tmp_path), "REPO": repo, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    first = _launch(tmp_path, env, "trainer", str(out), "1")
    read_line(first, "step 25", timeout=240)
    assert (out / "checkpoint-20").is_dir()
    logdirs = list((out / "runs").iterdir())
    _kill_job(first, logdirs)
    killed = {step for step, _ in python_reader_scalars(logdirs[0])["rank-000"]["train/attempt"]}
    assert set(range(21, 25)) <= killed, "the killed attempt logged past its checkpoint"  # the overlap exists

    second = _launch(tmp_path, env, "trainer", str(out), "2")
    try:
        finish(second, timeout=180)  # (about 15 s: the 25 steps, then close() commits the last records)
    except AssertionError as exc:  # where it waited: the launcher's tree's stacks (in exc), the uploader's
        raise AssertionError(f"{exc}\n{_uploader_evidence(logdirs)}") from None
    assert list((out / "runs").iterdir()) == logdirs, "the resumed attempt logs into the killed attempt's run"
    history = {e["step"]: e for e in json.loads((out / "log_history.json").read_text()) if "loss" in e}
    assert sorted(history) == list(range(1, 41))  # the checkpoint's (attempt 1) to step 20, attempt 2's from 21
    for step, entry in history.items():
        entry["attempt"] = 1.0 if step <= 20 else 2.0
    copy = _hub_copy(hub, repo, tmp_path / "remote")
    assert local_event_files(logdirs[0]) == local_event_files(copy / logdirs[0].name), "every record is at the Hub"
    for reader in (python_reader_scalars, default_reader_scalars):
        runs = reader(copy)
        assert list(runs) == [f"{logdirs[0].name}/rank-000"], reader.__name__  # the main process's, once
        for tag, key in (("train/attempt", "attempt"), ("train/loss", "loss")):
            shown = runs[f"{logdirs[0].name}/rank-000"][tag]
            assert [step for step, _ in shown] == list(range(1, 41)), (reader.__name__, tag)  # every step once
            assert shown == [(s, pytest.approx(history[s][key], rel=1e-6)) for s in range(1, 41)], (reader.__name__, tag)


@pytest.mark.parametrize("kwargs", [{"resume": True}, {"purge_step": 31}], ids=["resume", "purge_step"])
def test_each_attempts_start_records_are_shown_once(tmp_path, kwargs):
    """What each attempt logs first without a step (the Trainer's ``args`` text, Lightning's ``hp_metric``): three
    attempts, one of each in the Python reader (``view``'s), the scalars' steps once each."""
    logdir = tmp_path / "run"
    for steps, more in ((range(60), {}), (range(31, 60), kwargs), (range(45, 60), {**kwargs, "purge_step": 45}
                                                                    if "purge_step" in kwargs else kwargs)):
        run(f"""
            from hf_mpwriter import SummaryWriter
            with SummaryWriter({str(logdir)!r}, **{more!r}) as writer:
                writer.add_text("args", "the run's arguments")
                writer.add_scalar("hp_metric", -1.0)
                for step in {steps!r}:
                    writer.add_scalar("loss", float(step), step)
        """)
    assert python_reader_text_steps(logdir)["."]["args/text_summary"] == [0]
    shown = python_reader_scalars(logdir)["."]
    assert shown["hp_metric"] == [(0, -1.0)]
    assert [step for step, _ in shown["loss"]] == list(range(60))


def test_a_relaunch_into_a_new_folder_commits_what_the_killed_attempt_left_without_a_sync(tmp_path, hub):
    """A killed attempt's records that no commit took, in a folder the next attempt does not use (a new
    default logdir, a new ``version_N``): the next uploader of the same target starts that folder's uploader."""
    repo, env = "user/relaunch", hub_env(hub, tmp_path)
    first_dir, second_dir = tmp_path / "runs" / "attempt-1", tmp_path / "runs" / "attempt-2"
    first = start_writer({"logdir": str(first_dir), "repo_id": repo, "commit_every_s": 600, "flush_every": 5}, env)
    read_line(first, "flushed 40", timeout=60)
    assert [f["writing"] for f in collect(first_dir)["files"]] == [True]
    _kill_writer_and_uploader(first, first_dir)
    wait_for(lambda: [f["writing"] for f in collect(first_dir)["files"]] == [False], 10,
             "status to say the file is no longer open (its writer and uploader are gone)")  # (the lock goes a moment later)
    written = local_event_files(first_dir)
    assert _hub_files(hub, repo, "attempt-1") != written, "the killed attempt left records no commit took"

    second = start_writer({"logdir": str(second_dir), "repo_id": repo, "commit_every_s": 600, "steps": 5}, env)
    finish(second)
    wait_for(lambda: _hub_files(hub, repo, "attempt-1") == written, 60, "the killed attempt's records at the Hub")
    wait_for(lambda: collect(first_dir)["up_to_date"], 30, "the killed attempt's logdir to be up to date")
    assert _hub_files(hub, repo, "attempt-2") == local_event_files(second_dir)
    wait_for(lambda: not list(attempts.index_dir().glob("*.json")), 30, "both logdirs to be done with")


def test_a_second_tracker_of_the_same_job_on_one_target_is_not_taken_for_an_earlier_attempt(tmp_path):
    """README's Accelerate pattern: a main tracker and an ``all_ranks`` one, two logdirs on one target. Each logdir's
    writers start its uploader; the other's must not start one beside them for an "earlier attempt". A logdir whose
    writers are gone still gets one (the relaunch's case: the path is checked, not only skipped)."""
    from hf_mpwriter import config as config_mod
    from hf_mpwriter.uploader.earlier_attempts import finish_earlier_attempts

    main_dir, ranks_dir, target = tmp_path / "logs" / "demo", tmp_path / "logs" / "demo-ranks", tmp_path / "mirror"
    main = HFSummaryWriter(logdir=str(main_dir), target_dir=str(target), uploader="none")
    main.add_scalar("train/loss", 1.0, 0)
    main.flush()
    with HFSummaryWriter(logdir=str(ranks_dir), target_dir=str(target), uploader="none") as ranks:
        ranks.add_scalar("rank/loss", 1.0, 0)
    config = config_mod.load(ranks_dir)
    assert finish_earlier_attempts(main_dir, config_mod.load(main_dir), None) == []  # (main_dir: in the index)
    assert finish_earlier_attempts(ranks_dir, config, None) == []
    main.close()
    started = finish_earlier_attempts(ranks_dir, config, None)
    assert len(started) == 1
    wait_for(lambda: not psutil.pid_exists(started[0]) or psutil.Process(started[0]).status() == "zombie", 60,
             "the uploader started for the closed logdir to finish")
    assert collect(main_dir)["up_to_date"]


def test_a_resume_on_a_new_machine_names_the_steps_that_went_with_the_old_disk(tmp_path, hub):
    """The first attempt's steps 0-27 committed, 28-39 only on its disk; it is SIGKILLed and its disk deleted. The
    second resumes (``resume=True``) at step 40 in a logdir of the same name: ``status`` and the rank's own output
    name steps 28 to 39 of its run, and nothing else; the Hub holds 0-27 and 40-59."""
    from hf_mpwriter.state.lost import Lost

    repo, logdir = "user/moved", tmp_path / "runs" / "exp"
    # (no ~28 s between two commits, the Hub's: the uploader's first may come before step 27 is flushed, then its next)
    env = {**hub_env(hub, tmp_path), "HF_MPWRITER_COMMITS_PER_HOUR": "36000"}
    more = tmp_path / "more"
    first = start_writer({"logdir": str(logdir), "repo_id": repo, "rank": 0, "commit_every_s": 600, "steps": 28,
                          "flush_every": 0, "trigger_every": 27, "more_after": str(more), "more_steps": 12, "hang": True},
                         env)
    read_line(first, "flushed 27", timeout=60)
    wait_for(lambda: collect(logdir)["up_to_date"] and collect(logdir)["commits"] >= 1, 60, "steps 0-27 committed")
    more.touch()
    read_line(first, "flushed 39", timeout=60)
    _kill_writer_and_uploader(first, logdir)
    (run,) = {str(Path(p).parent) for p in local_event_files(logdir)}
    shutil.rmtree(logdir)  # the node is gone with its disk
    assert _hub_steps(hub, repo, tmp_path / "before") == list(range(28)), "the scenario: 28-39 never reached the Hub"

    second = start_writer({"logdir": str(logdir), "repo_id": repo, "rank": 0, "commit_every_s": 600, "start": 40,
                           "steps": 60, "resume": True}, env)
    output = finish_writer(second)  # (its stderr: what the rank's log says)
    wait_for(lambda: collect(logdir)["up_to_date"], 60, "the second attempt up to date")
    lost = Lost(run, 27, 40)
    assert [{k: v for k, v in found.items() if k != "text"} for found in collect(logdir)["lost_steps"]] == [
        {"run": run, "after": 27, "restart": 40}]
    assert lost.text() in output  # said in the rank's own output, once
    assert output.count(lost.text()) == 1
    assert _hub_steps(hub, repo, tmp_path / "after") == [*range(28), *range(40, 60)]
    assert not list((tmp_path / "after").rglob("job"))  # (a lone rank has no job run: the job run's test is below)


def _hub_steps(hub, repo: str, into: Path) -> list[int]:
    """The steps of ``loss`` the Hub's copy of the logdir holds, read with TensorBoard's default reader."""
    files = {p[len("tensorboard/"):]: hub.read_file(repo, p) for p in hub.list_files(repo) if "tfevents" in p}
    runs = default_reader_scalars(materialise(files, into))
    (scalars,) = [run["loss"] for run in runs.values() if "loss" in run]
    return [step for step, _ in scalars]


def _kill_writer_and_uploader(proc: subprocess.Popen, logdir: Path) -> None:
    pid = uploader_pid(logdir)
    assert pid, "the scenario needs a live uploader to kill"
    sigkill(proc.pid)
    sigkill(pid)
    proc.communicate()


def _hub_files(hub, repo: str, folder: str) -> dict[str, bytes]:
    """The event files the test Hub holds under ``tensorboard/<folder>/`` (``{}`` before any commit)."""
    try:
        paths = hub.list_files(repo)
    except Exception:  # no repository yet
        return {}
    prefix = f"tensorboard/{folder}/"
    return {p[len(prefix):]: hub.read_file(repo, p) for p in paths if p.startswith(prefix) and "tfevents" in p}


def test_an_accelerate_tracker_relaunched_continues_its_run_with_the_resumed_values(tmp_path):
    """Accelerate's trackers log into ``<logging_dir>/<run_name>`` at every launch; a relaunch that resumes
    with ``load_state`` logs its steps again: one curve, every step once, in both readers."""
    pytest.importorskip("accelerate", reason="needs accelerate")
    for attempt, steps in ((1, range(60)), (2, range(31, 60))):  # each launch a process of its own
        run(f"""
            from accelerate.state import PartialState
            from hf_mpwriter.integrations import HFMPWriterTracker
            PartialState(cpu=True)
            tracker = HFMPWriterTracker("run", {str(tmp_path / "logs")!r}, uploader="none")
            tracker.start()
            tracker.store_init_configuration({{"lr": 0.1}})  # (logged without a step: not the restart point)
            for step in {steps!r}:
                value = {attempt} * 1000.0 + step
                tracker.log({{"loss": value, "parts": {{"a": value}}}}, step=step)
            tracker.finish()
        """, torch=True, timeout=60)
    for reader in (python_reader_scalars, default_reader_scalars):
        runs = reader(tmp_path / "logs" / "run")
        assert set(runs) == {".", "parts/a"}, reader.__name__
        for name, tag in ((".", "loss"), ("parts/a", "parts")):
            assert runs[name][tag] == [(s, (1000.0 if s < 31 else 2000.0) + s) for s in range(60)], (reader.__name__, name)


def test_a_trainer_resumed_in_one_process_logs_into_the_run_its_checkpoint_names(tmp_path, monkeypatch):
    """The callback's part alone, on every transformers the suite runs (4.57 on the oldest stack): the logdir
    travels in the checkpoint's ``trainer_state.json``; a second ``train(resume_from_checkpoint=True)``
    (the first one's default logdir is a new ``runs/<date>_<host>`` each time) finds it there."""
    pytest.importorskip("transformers", reason="the Trainer needs transformers")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from hf_mpwriter.integrations import HFMPWriterCallback

    for name in (*LAUNCHER_VARS, "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"

    def train(steps: int, resume: bool, callbacks: bool = True) -> Path:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16))
        data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (32, 8))]
        args = TrainingArguments(output_dir=str(out), max_steps=steps, logging_steps=1, save_steps=4,
                                 per_device_train_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True)
        callback = HFMPWriterCallback(uploader="none")
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback] if callbacks else [])
        trainer.train(resume_from_checkpoint=resume)
        return Path(callback.logging_dir or "")

    first = train(4, resume=False)
    for where in ("transformers.integrations.integration_utils", "transformers.training_args"):  # (5.x, 4.x)
        monkeypatch.setattr(f"{where}.default_logdir", lambda: "runs/another-launch", raising=False)  # a new date
    assert train(8, resume=True) == first
    assert list((out / "runs").iterdir()) == [first]
    for reader in (python_reader_scalars, default_reader_scalars):
        assert [step for step, _ in reader(first)["."]["train/loss"]] == list(range(1, 9)), reader.__name__
    # A checkpoint saved without this callback (an earlier release; the callback added on a resume): the next
    # save of the resumed Trainer looked the callback's state up in the checkpoint's and raised KeyError.
    shutil.rmtree(out)
    train(4, resume=False, callbacks=False)
    train(12, resume=True)
    assert (out / "checkpoint-12").is_dir()


def test_a_target_that_cannot_list_holds_no_record_back_and_is_asked_again_after_a_backoff(tmp_path):
    """The look for a resumed run's lost steps lists the target. Where that listing fails (here: every call past its
    bound, as against a Hub that never answers), the run's records are committed all the same, in the same cycle,
    and the listing is asked again only after a backoff that doubles, not at every cycle. Once a look is made, a later
    uploader of the logdir makes it no more (the note of the resume stays: the queue keeps what was looked at)."""
    from types import SimpleNamespace

    from tensorboardX import SummaryWriter

    from hf_mpwriter.config import UploadConfig
    from hf_mpwriter.errors import TargetError
    from hf_mpwriter.state.lost import note_resumed
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.commit_cycle import Committer

    logdir, mirror = tmp_path / "logs", tmp_path / "mirror"
    writer = SummaryWriter(str(logdir / "rank-000"))  # (the rank's file, as any writer leaves it)
    writer.add_scalar("loss", 1.0, 40)
    writer.close()
    note_resumed(logdir, "rank-000", 40)  # (a resume on a disk that held nothing of the run)
    config = UploadConfig.for_local(mirror, prefix="logs", logdir=logdir)
    listings: list[float] = []
    now = SimpleNamespace(t=1000.0)

    answers = [False]

    calls: list[str] = []

    def call(what, fn, *args, nbytes=0):
        calls.append(what)
        if what == "list":
            listings.append(now.t)
            if not answers[0]:
                raise TargetError("the listing did not answer within its bound", transient=True, timed_out=True)
        return fn(*args)

    committer = Committer(logdir, config, target_for(config), None, call=call)
    committer.clock = SimpleNamespace(time=lambda: now.t, monotonic=lambda: now.t)  # type: ignore[assignment]
    committer.cycle()
    assert len(listings) == 1  # the scenario: the look was made, and failed
    assert [p.name for p in (mirror / "logs" / "rank-000").iterdir()] == [p.name for p in (logdir / "rank-000").iterdir()
                                                                          if "tfevents" in p.name]
    for seconds in (1.0, 30.0, 28.0):  # (the first backoff: 60 s)
        now.t += seconds
        committer.cycle()
    assert len(listings) == 1, listings  # not asked again at each cycle
    more = SummaryWriter(str(logdir / "rank-000"), filename_suffix=".more")  # (a record to send in the retry's cycle)
    more.add_scalar("loss", 1.0, 41)
    more.close()
    now.t += 120.0
    calls.clear()
    committer.cycle()
    assert len(listings) == 2 and listings[1] - listings[0] >= 60.0, listings
    assert calls.index("list") > calls.index("commit"), calls  # a failed look holds up no send again: after it
    answers[0] = True
    now.t += 240.0
    committer.cycle()
    assert len(listings) == 3  # looked at, at last
    committer.close()
    later = Committer(logdir, config, target_for(config), None, call=call)  # the next uploader of the logdir
    later.clock = committer.clock
    later.cycle()
    assert len(listings) == 3, listings  # no listing again
    later.close()


def test_in_a_job_of_many_nodes_each_node_looks_at_its_turn_at_its_own_runs_folders_only(tmp_path):
    """A resumed job of 1,024 nodes on new machines: every node would list the target at once. Node 30 looks only
    after its turn (25 nodes a window of 5 minutes), not while signalled, and then lists the folders of its restarted
    runs, nothing else (not the job run's, which the uploader writes itself); where one listing fails, what the others
    found is kept (``status``: also where the queue could not be written at once) and the failed one is asked again."""
    import dataclasses
    from types import SimpleNamespace

    from tensorboardX import SummaryWriter

    from hf_mpwriter.config import UploadConfig
    from hf_mpwriter.errors import TargetError
    from hf_mpwriter.state import lost as lost_mod
    from hf_mpwriter.state.lost import note_resumed
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.commit_cycle import Committer
    from hf_mpwriter.uploader.jobrun.runfile import JobRun
    from hf_mpwriter.uploader.lost_steps import look_turn

    assert [look_turn(node, 1024) for node in (0, 24, 25, 1023)] == [0.0, 0.0, 300.0, 40 * 300.0]
    assert look_turn(30, 1) == 0.0 and look_turn(30, 1024, requests_per_5min=100) == 5 * 300.0  # (6 nodes a window)
    logdir, mirror = tmp_path / "logs", tmp_path / "mirror"
    for rank in (0, 1):
        old = SummaryWriter(str(mirror / "logs" / f"rank-{rank:03d}"), filename_suffix=".first")  # (at the target)
        for step in range(28):
            old.add_scalar("loss", 1.0, step)
        old.close()
        writer = SummaryWriter(str(logdir / f"rank-{rank:03d}"))
        writer.add_scalar("loss", 2.0, 40)
        writer.close()
        note_resumed(logdir, f"rank-{rank:03d}", 40)
    job_run = JobRun(logdir)
    job_run.restart(40)  # (the job run's own folder starts at the restart point too: not a rank's run)
    job_run.close()
    config = dataclasses.replace(UploadConfig.for_local(mirror, prefix="logs", logdir=logdir), nodes=1024, node_rank=30)
    listed: list[tuple[float, str]] = []
    now = SimpleNamespace(t=1000.0)

    def call(what, fn, *args, nbytes=0):
        if what == "list":
            listed.append((now.t, args[0]))
            if len(listed) == 2:
                raise TargetError("the listing did not answer within its bound", transient=True, timed_out=True)
        return fn(*args)

    committer = Committer(logdir, config, target_for(config), None, call=call)
    committer.clock = SimpleNamespace(time=lambda: now.t, monotonic=lambda: now.t)  # type: ignore[assignment]
    committer.cycle()
    now.t += 299.0
    committer.cycle()
    assert listed == []  # not before its turn
    now.t += 1.0
    committer.signalled = lambda: True
    committer.cycle()
    assert listed == []  # signalled: its last records first, no look
    committer.signalled = lambda: False
    real_set_meta, failing = committer.queue.set_meta, [True]

    def set_meta(key, value):
        if failing and failing.pop():
            raise sqlite3.OperationalError("database is locked")
        real_set_meta(key, value)

    committer.queue.set_meta = set_meta  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):  # (the loop waits and cycles again)
        committer.cycle()
    assert listed == [(1300.0, "rank-000"), (1300.0, "rank-001")]  # the scenario: the second listing failed
    assert lost_mod.decode(committer.queue.get_meta(lost_mod.LOST_META)) == []  # (its write failed too)
    committer.cycle()
    kept = lost_mod.decode(committer.queue.get_meta(lost_mod.LOST_META))
    assert [(lost.run, lost.after, lost.restart) for lost in kept] == [("rank-000", 27, 40)]
    now.t += 120.0
    committer.cycle()
    assert [run for _, run in listed] == ["rank-000", "rank-001", "rank-001"]
    kept = lost_mod.decode(committer.queue.get_meta(lost_mod.LOST_META))
    assert [(lost.run, lost.after, lost.restart) for lost in kept] == [("rank-000", 27, 40), ("rank-001", 27, 40)]
    committer.close()


def test_the_job_run_says_a_resumed_runs_lost_steps_once_at_its_restart_step(tmp_path):
    """The steps a resume on a new machine lost are said in the job run too (``~job/lost_steps/<run>``, a text at the
    run's restart step), once: again neither within the uploader nor by the next uploader (the job run's state keeps
    it). Two ranks restarted at one step: TensorBoard's default reader shows both (it keeps one value of a tag a step),
    after points at later steps."""
    from tb_readers import default_reader_texts

    from hf_mpwriter.state.lost import Lost
    from hf_mpwriter.uploader.jobrun.runfile import JobRun
    from hf_mpwriter.uploader.jobrun.stats import Stats

    logdir = tmp_path / "logs"
    lost = [Lost("rank-001", 27, 40)]
    run = JobRun(logdir)
    run.write([("loss", step, Stats.of({0: 1.0, 1: 2.0}, wall=float(step))) for step in (40, 41, 42)], world=2)
    run.say_lost(lost)
    run.say_lost(lost)  # (each cycle hands the finds in again)
    state = run.state()
    run.close()
    again = JobRun(logdir)
    again.load(state)
    again.say_lost(lost)  # (the next uploader, from the state)
    again.say_lost([*lost, Lost("rank-000", 30, 40)])
    again.close()
    (said,) = default_reader_texts(logdir).values()
    assert {tag: [step for step, _ in texts] for tag, texts in said.items() if "lost" in tag} == {
        "~job/lost_steps/rank-001/text_summary": [40], "~job/lost_steps/rank-000/text_summary": [40]}, said
    assert "'rank-001' lost steps 28 to 39" in said["~job/lost_steps/rank-001/text_summary"][0][1]
    assert "'rank-000' lost steps 31 to 39" in said["~job/lost_steps/rank-000/text_summary"][0][1]


def test_the_uploaders_job_run_takes_the_lost_steps_where_it_writes_one(tmp_path):
    """The uploader hands its finds to its job run (:class:`JobRunDriver`): written where two ranks or more make a job
    run, nothing where a lone rank has none."""
    from tensorboardX import SummaryWriter

    from hf_mpwriter.config import UploadConfig
    from hf_mpwriter.state.lost import Lost
    from hf_mpwriter.uploader.jobrun.driver import JobRunDriver
    from hf_mpwriter.uploader.jobrun.runfile import RUN_DIR

    for ranks in (1, 2):
        logdir = tmp_path / f"ranks-{ranks}"
        for rank in range(ranks):
            writer = SummaryWriter(str(logdir / f"rank-{rank:03d}"))
            writer.add_scalar("loss", 1.0, 40)
            writer.close()
        config = UploadConfig.for_local(tmp_path / "mirror", prefix="logs", logdir=logdir)
        driver = JobRunDriver(logdir, config, lambda: None, lambda what, fn, *a: fn(*a), signalled=lambda: False)
        driver.start()
        driver.update(final=True)
        driver.say_lost([Lost("rank-000", 27, 40)])
        driver.close()
        said = plugin_accumulator(logdir / RUN_DIR).Tensors("~job/lost_steps/rank-000/text_summary") if ranks > 1 else []
        assert [e.step for e in said] == ([40] if ranks > 1 else []), ranks
        assert ranks > 1 or not (logdir / RUN_DIR).exists()
