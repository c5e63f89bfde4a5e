"""The uploader with the local-directory target: real writer processes, real SIGKILLs."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from upload_helpers import (
    check_remote,
    finish,
    local_commits,
    local_target_files,
    read_line,
    sigkill,
    start_writer,
    uploader_pid,
    wait_for,
)

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.jobqueue import JobQueue
from hf_mpwriter.state.jobs import JobState
from hf_mpwriter.uploader.loop import Uploader


def _cfg(tmp_path: Path, rank: int, **kw) -> dict:
    cfg = {"logdir": str(tmp_path / "logs"), "target_dir": str(tmp_path / "target"), "rank": rank,
           "commit_every_s": 1.0, "steps": 200, "sleep": 0.01}
    cfg.update(kw)
    return cfg


def test_four_writers_one_uploader_commit_per_interval(tmp_path):
    started = time.monotonic()
    procs = [start_writer(_cfg(tmp_path, r, steps=400)) for r in range(4)]
    for proc in procs:
        finish(proc)
    elapsed = time.monotonic() - started
    logdir, target = tmp_path / "logs", tmp_path / "target"
    remote = local_target_files(target, "tensorboard/logs")
    check_remote(logdir, remote, {r: range(400) for r in range(4)}, tmp_path / "remote")
    commits = local_commits(target)
    # One commit per interval for the node (not per rank), plus at most a couple for the closes.
    assert 2 <= len(commits) <= math.ceil(elapsed / 1.0) + 3, (len(commits), elapsed)
    status = collect(logdir)
    assert status["up_to_date"] and status["pending_jobs"] == 0
    assert (logdir / ".hf_mpwriter").stat().st_mode & 0o777 == 0o700


def test_uploader_and_writer_sigkilled_then_everything_arrives(tmp_path):
    logdir = tmp_path / "logs"
    procs = [start_writer(_cfg(tmp_path, r, steps=600)) for r in range(3)]
    for proc in procs:
        read_line(proc, "started")
    first = wait_for(lambda: uploader_pid(logdir), 20, "an uploader")
    wait_for(lambda: local_commits(tmp_path / "target"), 20, "a first commit")
    sigkill(first)
    second = wait_for(lambda: (uploader_pid(logdir) or first) != first and uploader_pid(logdir), 15,
                      "a writer to start a new uploader")
    assert second != first
    # SIGKILL writer 2 once it has flushed some steps: what it flushed must arrive anyway.
    flushed = int(read_line(procs[2], "flushed 2").split()[1])
    sigkill(procs[2].pid)
    procs[2].wait()
    for proc in procs[:2]:
        finish(proc)
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    wait_for(lambda: collect(logdir)["up_to_date"], 30, "the killed writer's records to be committed")
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {0: range(600), 1: range(600), 2: range(flushed + 1)}, tmp_path / "remote")


def _offline_logs(tmp_path: Path, ranks=(0, 1), steps=50) -> Path:
    """Logs written with no uploader (``uploader="none"``), queued for the local target."""
    logdir = tmp_path / "logs"
    for rank in ranks:
        with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=rank,
                             uploader="none", commit_every=1) as writer:
            for step in range(steps):
                writer.add_scalar("loss", float(rank * 100000 + step), step)
    return logdir


def _crash_mid_commit(logdir: Path, apply: int) -> None:
    """Leave the state a SIGKILL mid-commit leaves: job in flight, ``apply`` files written."""
    uploader = Uploader(logdir)
    uploader.acquire()
    try:
        assert uploader.committer.prepare()
        job = uploader.queue.add(uploader.target.key, uploader.committer.scanner.snapshot({}))
        uploader.queue.move(job, JobState.INFLIGHT)
        if apply:
            uploader.target.commit(job.pieces[:apply], "interrupted")
    finally:
        uploader.release()


@pytest.mark.parametrize("apply", [0, 1, 2])
def test_job_in_flight_at_crash_is_reconciled(tmp_path, apply):
    logdir = _offline_logs(tmp_path)
    _crash_mid_commit(logdir, apply)
    before = len(local_commits(tmp_path / "target"))
    assert Uploader(logdir).drain(timeout=30)
    # Fully applied: acknowledged without a second commit of the ranks' files. Otherwise: sent once more.
    # (The job run, new to this uploader, is committed with them, or alone when they are all there.)
    after = [c for c in local_commits(tmp_path / "target") if any("/rank-" in f for f in c["files"])]
    assert len(after) == before + (0 if apply == 2 else 1)
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {0: range(50), 1: range(50)}, tmp_path / "remote")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_queue_is_set_aside_and_rebuilt(tmp_path, damage):
    logdir = _offline_logs(tmp_path)
    assert Uploader(logdir).drain(timeout=30)
    queue = logdir / ".hf_mpwriter" / "queue.db"
    for extra in ("-wal", "-shm"):
        Path(str(queue) + extra).unlink(missing_ok=True)
    data = queue.read_bytes()
    queue.write_bytes(b"this is not a database" * 100 if damage == "garbage" else data[: len(data) // 3])
    # More data arrives after the damage: it must be committed along with everything else.
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                         commit_every=1, purge_step=50) as writer:
        for step in range(50, 80):
            writer.add_scalar("loss", float(step), step)
    assert Uploader(logdir).drain(timeout=30)
    assert list((logdir / ".hf_mpwriter").glob("queue.db.corrupt-*")), "the damaged queue was not set aside"
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {0: range(80), 1: range(50)}, tmp_path / "remote")
    assert JobQueue(queue).unfinished(Uploader(logdir).target.key) is None


def test_backlog_without_uploader_is_drained_by_sync_api(tmp_path):
    logdir = _offline_logs(tmp_path, ranks=(0, 1, 2))
    assert not local_commits(tmp_path / "target")
    status = collect(logdir)
    assert not status["up_to_date"] and status["bytes_committed"] == 0
    assert Uploader(logdir).drain(timeout=30)
    assert collect(logdir)["up_to_date"]
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {r: range(50) for r in range(3)}, tmp_path / "remote")


def test_thread_mode_uploads_in_process(tmp_path):
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="thread",
                         commit_every=1, close_timeout=30) as writer:
        for step in range(100):
            writer.add_scalar("loss", float(step), step)
    # close() returned once the queue had the last commit done; the uploader thread checks that commit
    # at the target right after (CI once saw status a few ms before that check): up to date once checked.
    assert collect(logdir)["bytes_committed"] == collect(logdir)["bytes_written"]
    wait_for(lambda: collect(logdir)["up_to_date"], 30, "the last commit checked at the target")
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {0: range(100)}, tmp_path / "remote")


def test_rotation_sends_closed_files_once(tmp_path):
    logdir = tmp_path / "logs"
    proc = start_writer(_cfg(tmp_path, 0, steps=3000, sleep=0.0005, rotate_bytes=16384, commit_every_s=0.5))
    finish(proc)
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    assert len(remote) > 5
    check_remote(logdir, remote, {0: range(3000)}, tmp_path / "remote")
    sizes: dict[str, list[int]] = {}
    for commit in local_commits(tmp_path / "target"):
        for path, size in commit["files"].items():
            sizes.setdefault(path, []).append(size)
    # Each commit carries only what grew: a file is never re-sent at a size already sent, so a
    # completed (rotated) file goes out at most once more after its last growth.
    for path, seen in sizes.items():
        assert seen == sorted(set(seen)), (path, seen)


def test_unreachable_target_does_not_pile_up_staged_copies(tmp_path):
    logdir = tmp_path / "logs"
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "tensorboard").write_text("a file where the target needs a directory")
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                             commit_every=1)
    uploader = Uploader(logdir)
    uploader.acquire()
    staging = logdir / ".hf_mpwriter" / "staging"
    try:
        for round_ in range(6):
            for step in range(round_ * 100, (round_ + 1) * 100):
                writer.add_scalar("loss", float(step), step)
            writer.flush()
            uploader.cycle()
            if round_ % 2:
                uploader.queue.reset_backoff(uploader.target.key)  # as a trigger or a new start does
            # One open file: never more than one staged copy, however many retries.
            assert len([p for p in staging.iterdir() if not p.name.startswith(".")]) <= 1
        assert "Not a directory" in (uploader.last_error() or "")
    finally:
        uploader.release()
        writer.close()
    (tmp_path / "target" / "tensorboard").unlink()
    assert Uploader(logdir).drain(timeout=30)
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {0: range(600)}, tmp_path / "remote")


def test_a_deleted_run_does_not_block_the_others(tmp_path):
    import shutil

    logdir = _offline_logs(tmp_path)
    _crash_mid_commit(logdir, apply=0)  # a job with both ranks' files is in flight
    shutil.rmtree(logdir / "rank-001")  # then someone deletes rank 1's run
    assert Uploader(logdir).drain(timeout=30)
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    assert {p.split("/")[0] for p in remote} == {"rank-000"}
    check_remote(logdir, remote, {0: range(50)}, tmp_path / "remote")


def test_close_does_not_wait_for_files_the_patterns_exclude(tmp_path):
    writer = HFSummaryWriter(logdir=str(tmp_path / "logs"), target_dir=str(tmp_path / "target"), rank=1,
                             repo_ignore_patterns=["rank-001/*"], commit_every=1, close_timeout=5)
    writer.add_scalar("loss", 1.0, 1)
    started = time.monotonic()
    writer.close()
    took = time.monotonic() - started
    assert list((tmp_path / "logs" / "rank-001").glob("*tfevents*"))  # the scenario: a file, which the patterns exclude
    assert took < writer.close_timeout, took  # close() waited for nothing (else: its whole close_timeout)
    assert not list((tmp_path / "target").rglob("*tfevents*"))


def test_sync_keeps_the_saved_patterns(tmp_path):
    import subprocess
    import sys

    logdir = tmp_path / "logs"
    for rank in (0, 1):
        with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=rank, uploader="none",
                             repo_ignore_patterns=["rank-001/*"], commit_every=1) as writer:
            writer.add_scalar("loss", 1.0, 1)
    result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--target",
                             str(tmp_path / "target"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    synced = {p.parent.name for p in (tmp_path / "target").rglob("*tfevents*")}
    assert synced == {"rank-000"}  # and no job run: its statistics would carry rank 1's values


def test_processes_of_other_hosts_are_alive_while_their_heartbeat_is_fresh(tmp_path):
    import json
    import os

    from hf_mpwriter.state.liveness import OTHER_HOST_STALE_S, is_alive

    path = tmp_path / "w.json"
    identity = {"pid": 1, "create_time": 0.0, "host": "some-other-node"}
    path.write_text(json.dumps(identity))
    assert is_alive(identity, path)
    old = time.time() - OTHER_HOST_STALE_S - 1
    os.utime(path, (old, old))
    assert not is_alive(identity, path)


def test_scheduler_trigger_commits_now(tmp_path):
    """``writer.scheduler.trigger()``, as with huggingface_hub's HFSummaryWriter: no wait for the interval."""
    with HFSummaryWriter(logdir=str(tmp_path / "logs"), target_dir=str(tmp_path / "target"), rank=0,
                         commit_every=10, close_timeout=30) as writer:  # 10 minutes
        for step in range(40):
            writer.add_scalar("loss", float(step), step)
        assert writer.scheduler.trigger().result(timeout=60)
        remote = local_target_files(tmp_path / "target", "tensorboard/logs")
        check_remote(tmp_path / "logs", remote, {0: range(40)}, tmp_path / "remote")
