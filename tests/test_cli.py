"""The ``hf-mpwriter`` console script, run as a user runs it: a subprocess, exit codes, messages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from upload_helpers import writer_env

from hf_mpwriter import HFSummaryWriter, SummaryWriter
from hf_mpwriter.testing import HubServer

SCRIPT = shutil.which("hf-mpwriter", path=os.path.dirname(sys.executable)) or shutil.which("hf-mpwriter")
TOKEN = "hf_cliTestToken0123456789abc"


def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    assert SCRIPT, "the hf-mpwriter console script is not installed (pip install -e .)"
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=writer_env(env), cwd=cwd,
                          timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Expected failures: non-zero exit, one ``hf-mpwriter: error:`` line, no traceback."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("hf-mpwriter: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _local_logs(tmp_path: Path, uploader: str = "none") -> Path:
    logdir = tmp_path / "logs"
    for rank in range(2):
        with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=rank,
                             uploader=uploader, commit_every=1) as writer:
            for step in range(30):
                writer.add_scalar("loss", float(step), step)
    return logdir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_version_and_help():
    assert run("--version").stdout.startswith("hf-mpwriter ")
    help_text = run("--help").stdout
    assert "demo" in help_text
    assert "python -m hf_mpwriter.testing.hub_server" in help_text  # how to try a script without the Hub


def test_status_errors(tmp_path):
    one_line_error(run("status", str(tmp_path / "nope")), "no such logdir")
    one_line_error(run("status", str(tmp_path)), "never used by an hf_mpwriter writer")


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    """`hf-mpwriter status LOGDIR | head -1`: the reader leaves early; that is no failure of ours."""
    logdir = _local_logs(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written: the write must meet EPIPE
    with os.fdopen(write_end, "wb") as stdout:
        proc = subprocess.run([SCRIPT, "status", str(logdir)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                              env=writer_env(), timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_status_and_sync_of_a_local_backlog(tmp_path):
    logdir = _local_logs(tmp_path)
    info = json.loads(run("status", str(logdir), "--json").stdout)
    assert info["pending_jobs"] == 0 and info["bytes_committed"] == 0 and not info["up_to_date"]
    assert {f["run"] for f in info["files"]} == {"rank-000", "rank-001"}
    assert info["target"]["kind"] == "local" and info["uploader"] is None
    human = run("status", str(logdir))
    assert human.returncode == 0 and "NOT up to date" in human.stdout and "rank-001" in human.stdout
    synced = run("sync", str(logdir), "--quiet")
    assert synced.returncode == 0, synced.stderr
    info = json.loads(run("status", str(logdir), "--json").stdout)
    assert info["up_to_date"] and info["bytes_committed"] == info["bytes_written"] > 0
    assert info["commits"] == 1 and info["last_commit"]["id"]
    assert "up to date" in run("status", str(logdir)).stdout


def test_sync_needs_a_target_for_local_only_logs(tmp_path):
    with SummaryWriter(str(tmp_path / "logs")) as writer:
        writer.add_scalar("x", 1.0, 1)
    one_line_error(run("sync", str(tmp_path / "logs")), "no upload target", "--repo-id")
    one_line_error(run("sync", str(tmp_path / "logs"), "--repo-id", "bad id with spaces"), "invalid repo_id")
    done = run("sync", str(tmp_path / "logs"), "--target", str(tmp_path / "target"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "target").rglob("*tfevents*"))


def test_sync_unreachable_endpoint(tmp_path):
    logdir = tmp_path / "logs"
    with SummaryWriter(str(logdir)) as writer:
        writer.add_scalar("x", 1.0, 1)
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}", "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1,localhost"}
    result = run("sync", str(logdir), "--repo-id", "me/run", "--timeout", "4", "--quiet", env=env)
    one_line_error(result, "not everything is committed", "hf-mpwriter sync")
    assert TOKEN not in result.stderr + result.stdout


def test_sync_auth_failure_from_the_test_hub(tmp_path):
    logdir = tmp_path / "logs"
    with SummaryWriter(str(logdir)) as writer:
        writer.add_scalar("x", 1.0, 1)
    with HubServer(tokens={"hf_theOnlyGoodToken0123456"}) as hub:
        env = {**hub.env(), "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf")}
        result = run("sync", str(logdir), "--repo-id", "me/run", "--timeout", "60", "--quiet", env=env)
        one_line_error(result, "refused the token (HTTP 401)")
        assert result.stderr.count("refused the token") == 1, result.stderr  # said once, not by the uploader too
        assert TOKEN not in result.stderr + result.stdout
        debug = run("--debug", "sync", str(logdir), "--timeout", "60", "--quiet", env=env)
        assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_demo_default_runs_offline_and_verifies(tmp_path):
    result = run("demo", "--workers", "2", "--steps", "60", "--commit-every-s", "1.5", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify    OK" in result.stdout and "tensorboard --logdir" in result.stdout
    assert list((tmp_path / "hf_mpwriter_demo").rglob("target/tensorboard/logs/rank-001/*tfevents*"))
    [logdir] = (tmp_path / "hf_mpwriter_demo").glob("run-*/logs")
    assert json.loads(run("status", str(logdir), "--json").stdout)["target"]["commit_every_s"] == 1.5  # seconds


def test_demo_chaos_kills_and_still_verifies(tmp_path):
    result = run("demo", "--workers", "3", "--steps", "150", "--chaos", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIGKILLed worker 1" in result.stdout and "SIGKILLed uploader" in result.stdout
    assert "verify    OK" in result.stdout


def test_verify_skips_a_file_with_no_whole_record_and_names_one_the_target_lacks(tmp_path):
    """An uploader SIGKILLed between creating the job run's file and its first flush leaves it empty: nothing
    was accepted, so nothing is owed to the target (CI's chaos demo once failed on that)."""
    from hf_mpwriter.cli.demo import verify
    from hf_mpwriter.events.encoding import scalars_event
    from hf_mpwriter.events.event_file import EventFileWriter
    from hf_mpwriter.targets.local import LocalTarget
    from hf_mpwriter.uploader.snapshot import Scanner
    from hf_mpwriter.writer.ranks import RankInfo

    logdir = tmp_path / "logs"
    run_dir = logdir / str(RankInfo(0, 1, "explicit").run_name())
    run_dir.mkdir(parents=True)
    writer = EventFileWriter(run_dir)
    for step in range(3):
        writer.add_serialized(scalars_event([("train/loss", 1.0)], step, 0.0))
    writer.close()
    target = LocalTarget(tmp_path / "target")
    target.prepare()
    target.commit(Scanner(logdir).snapshot({}), "the ranks")
    (logdir / "job").mkdir()
    (logdir / "job" / "events.out.tfevents.1.host.1").touch()  # created; the process killed before its first flush
    assert verify(logdir, target, steps=3, workers=1) == []
    job = EventFileWriter(logdir / "job")
    job.add_serialized(scalars_event([("train/loss", 1.0)], 0, 0.0))
    job.close()
    [problem] = verify(logdir, target, steps=3, workers=1)
    assert job.files[0].name in problem


def test_demo_through_the_local_hub(tmp_path):
    result = run("demo", "--workers", "2", "--steps", "40", "--local-hub", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify    OK" in result.stdout
