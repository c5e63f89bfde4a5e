"""A logdir remembers the Hub its logs go to: ``status``, ``sync`` and ``view`` use it (and say so) in a
shell whose ``HF_ENDPOINT`` names another Hub; ``view`` of what does not exist, or of a directory that
holds logdirs, says so. Run as a user runs them: the console script in a subprocess, against the test Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from upload_helpers import TOKEN, writer_env

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.compat import BUCKET_FS_VERSION, hub_version
from hf_mpwriter.errors import ConfigurationError
from hf_mpwriter.state.statedir import STATE_DIRNAME
from hf_mpwriter.testing import HubServer

SCRIPT = shutil.which("hf-mpwriter", path=os.path.dirname(sys.executable)) or shutil.which("hf-mpwriter")
REPO = "tester/endpoint"


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    assert SCRIPT, "the hf-mpwriter console script is not installed (pip install -e .)"
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=writer_env(env), timeout=120)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``hf-mpwriter: error:`` line of an expected failure (non-zero exit, no traceback)."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("hf-mpwriter: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def shell(hub: HubServer, tmp_path: Path) -> dict:
    """A shell whose HF_ENDPOINT is ``hub``'s, with a token both test Hubs accept."""
    return {**hub.env(), "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf_home")}


def notice(logdir_hub: HubServer, shell_hub: HubServer) -> str:
    return (f"this logdir sends to {logdir_hub.endpoint}; the shell's HF_ENDPOINT is {shell_hub.endpoint}: "
            f"using {logdir_hub.endpoint}")


@pytest.fixture
def two_hubs():
    """The logdir's Hub, and the one the shell points at later."""
    with HubServer(tokens={TOKEN}) as ours, HubServer(tokens={TOKEN}) as other:
        yield ours, other


def write_logs(logdir: Path, monkeypatch, hub: HubServer, repo_id: str = REPO, rank: int = 0) -> None:
    """Logs of a writer created where HF_ENDPOINT is ``hub``'s; no uploader: the backlog waits for ``sync``."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    with HFSummaryWriter(repo_id=repo_id, logdir=str(logdir), uploader="none", rank=rank) as writer:
        for step in range(20):
            writer.add_scalar("loss", float(step), step)


def test_sync_status_and_view_use_the_logdirs_hub(tmp_path, monkeypatch, two_hubs):
    ours, other = two_hubs
    logdir = tmp_path / "logs"
    write_logs(logdir, monkeypatch, ours)
    recorded = json.loads((logdir / STATE_DIRNAME / "config.json").read_text())
    assert recorded["endpoint"] == ours.endpoint  # what the writer's environment said
    elsewhere = shell(other, tmp_path)

    synced = run("sync", str(logdir), "--quiet", "--timeout", "60", env=elsewhere)
    assert notice(ours, other) in synced.stderr.splitlines(), synced.stderr  # the shell did point elsewhere
    assert synced.returncode == 0, synced.stderr
    assert ours.commit_count(REPO) >= 1 and any("tfevents" in f for f in ours.list_files(REPO))
    assert other.stats["requests"] == {}, other.stats["requests"]  # not one call went to the shell's Hub

    status = run("status", str(logdir), env=elsewhere)
    assert status.returncode == 0 and notice(ours, other) in status.stderr.splitlines(), status.stderr
    assert f"target    {ours.endpoint}/{REPO}" in status.stdout and "up to date" in status.stdout, status.stdout
    info = json.loads(run("status", str(logdir), "--json", env=elsewhere).stdout)
    assert info["target"]["endpoint"] == ours.endpoint and info["up_to_date"]

    before = ours.stats["requests"].get("repo_info", 0)
    view = run("view", str(logdir), "--print", env=elsewhere)
    assert view.returncode == 0 and notice(ours, other) in view.stderr.splitlines(), view.stderr
    assert view.stdout.split()[:2] == [f"HF_ENDPOINT={ours.endpoint}", "tensorboard"], view.stdout
    assert ours.stats["requests"].get("repo_info", 0) > before  # the repository was checked on the logdir's Hub
    assert other.stats["requests"] == {}, other.stats["requests"]


def test_a_config_without_an_endpoint_keeps_the_shells(tmp_path, monkeypatch, two_hubs):
    """A config.json written before the endpoint was recorded: the environment's Hub, as before, no notice."""
    ours, other = two_hubs
    logdir = tmp_path / "logs"
    write_logs(logdir, monkeypatch, other)
    path = logdir / STATE_DIRNAME / "config.json"
    old = json.loads(path.read_text())
    del old["endpoint"]
    path.write_text(json.dumps(old))
    synced = run("sync", str(logdir), "--quiet", "--timeout", "60", env=shell(ours, tmp_path))
    assert synced.returncode == 0 and "this logdir sends to" not in synced.stderr, synced.stderr
    assert ours.commit_count(REPO) >= 1 and other.stats["requests"] == {}


def test_a_writer_with_another_hub_is_refused(tmp_path, monkeypatch, two_hubs):
    """One logdir sends to one repository on one Hub: a writer started where HF_ENDPOINT names another
    Hub is refused before it writes anything, and says which Hub the logdir uses."""
    ours, other = two_hubs
    logdir = tmp_path / "logs"
    write_logs(logdir, monkeypatch, ours)
    monkeypatch.setenv("HF_ENDPOINT", other.endpoint)
    with pytest.raises(ConfigurationError, match=f"sends its logs to the Hub at {ours.endpoint}.*HF_ENDPOINT here "
                                                 f"is {other.endpoint}: set HF_ENDPOINT={ours.endpoint}"):
        HFSummaryWriter(repo_id=REPO, logdir=str(logdir), uploader="none", rank=1)
    assert not (logdir / "rank-001").exists()
    assert json.loads((logdir / STATE_DIRNAME / "config.json").read_text())["endpoint"] == ours.endpoint


def test_view_of_a_missing_repository_fails(tmp_path, monkeypatch, two_hubs):
    ours, other = two_hubs
    logdir = tmp_path / "logs"
    write_logs(logdir, monkeypatch, ours)  # never synced: the repository was never created
    assert not ours.repo_exists(REPO)
    result = run("view", str(logdir), "--print", env=shell(other, tmp_path))
    line = error_line(result)
    assert ours.stats["requests"].get("repo_info", 0) >= 1 and other.stats["requests"] == {}  # asked the right Hub
    assert f"nothing to view at hf://{REPO}/tensorboard/logs on {ours.endpoint}: no such repository" in line, line
    assert f"`hf-mpwriter status {logdir}`" in line and "tensorboard" not in result.stdout, result.stdout


@pytest.mark.skipif(hub_version() < BUCKET_FS_VERSION, reason="HfFileSystem reads hf://buckets/ from huggingface_hub 1.6")
def test_view_of_a_missing_bucket_fails(tmp_path):
    with HubServer(tokens={TOKEN}) as ours:
        bucket = run("view", "hf://buckets/tester/nothing-here", "--print", env=shell(ours, tmp_path))
        line = error_line(bucket)
        assert ours.stats["requests"].get("bucket_info", 0) >= 1, ours.stats["requests"]
    assert f"hf://buckets/tester/nothing-here on {ours.endpoint}: no such bucket" in line, line
    assert "check the id" in line


def test_status_and_view_of_a_directory_that_holds_logdirs(tmp_path, monkeypatch):
    """A Lightning ``save_dir`` holds ``name/version_N/`` logdirs: both are listed with their targets."""
    save_dir = tmp_path / "save_dir"
    for version in range(2):
        with HFSummaryWriter(logdir=str(save_dir / "exp" / f"version_{version}"), uploader="none",
                             target_dir=str(tmp_path / f"target{version}")) as writer:
            writer.add_scalar("loss", 1.0, 1)
    too_deep = save_dir / "a" / "b" / "c" / "d" / "e"
    with HFSummaryWriter(logdir=str(too_deep), uploader="none", target_dir=str(tmp_path / "deep")) as writer:
        writer.add_scalar("loss", 1.0, 1)
    (save_dir / "link").symlink_to(save_dir / "exp")  # not followed: each logdir is listed once
    logdirs = [save_dir / "exp" / "version_0", save_dir / "exp" / "version_1"]
    env = {"HF_HOME": str(tmp_path / "hf_home")}

    status = run("status", str(save_dir), env=env)
    assert status.returncode == 0, status.stderr
    assert f"{save_dir} is not a logdir; it holds 2" in status.stdout, status.stdout
    for version, logdir in enumerate(logdirs):
        assert f"{logdir}  {tmp_path / f'target{version}'}" in status.stdout, status.stdout
    assert "link" not in status.stdout and str(too_deep) not in status.stdout
    listed = json.loads(run("status", str(save_dir), "--json", env=env).stdout)
    assert [row["logdir"] for row in listed["logdirs"]] == [str(p.resolve()) for p in logdirs]

    view = run("view", str(save_dir), "--print", env=env)
    line = error_line(view)
    assert view.returncode == 2, view
    assert "is not a logdir but holds 2 (listed above, each with its target); pass one of them" in line, line
    assert [row.split()[0] for row in view.stderr.splitlines()[:-1]] == [str(p) for p in logdirs], view.stderr
