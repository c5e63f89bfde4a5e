"""What a new user meets in the first hour: huggingface_hub's own documented usage, the command line's
help and advice (followed literally), warnings said once, arguments refused without leaving a trace."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest
from upload_helpers import check_remote, writer_env

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.testing import HubServer

TOKEN = "hf_goodTokenForTests0123456789"


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_mpwriter", *args], env=writer_env(env), capture_output=True,
                          text=True, timeout=timeout)


_NO_NAMESPACE = """
import os, sys
from hf_mpwriter import HFSummaryWriter
writer = HFSummaryWriter(repo_id="test_hf_logger", logdir=sys.argv[1], commit_every=1 / 60,
                         token=os.environ["TEST_TOKEN"], close_timeout=60)
for step in range(30):
    writer.add_scalar("loss", float(step), step)
writer.close()
print("repo_id", writer.repo_id)
"""


def test_repo_id_without_namespace_uploads_to_the_token_namespace(tmp_path):
    """huggingface_hub's documented ``HFSummaryWriter(repo_id="test_hf_logger")``, through the real client."""
    with HubServer(tokens={TOKEN}) as hub:
        env = {**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN}
        result = subprocess.run([sys.executable, "-c", _NO_NAMESPACE, str(tmp_path / "logs")], env=writer_env(env),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        full = f"{hub.username}/test_hf_logger"
        assert result.stdout.split() == ["repo_id", full], result.stdout + result.stderr
        assert "not committed" not in result.stderr, result.stderr
        view = subprocess.run([sys.executable, "-m", "hf_mpwriter", "view", str(tmp_path / "logs"), "--print"],
                              env=writer_env({**env, "HF_TOKEN": TOKEN}),  # view checks the repo first: it reads it
                              capture_output=True, text=True, timeout=60)
        assert f"hf://{full}/tensorboard/logs " in view.stdout, view.stdout + view.stderr  # the full id, not "name"
        prefix = "tensorboard/logs/"
        remote = {p[len(prefix):]: hub.read_file(full, p) for p in hub.list_files(full) if p.startswith(prefix)}
    from helpers import read_file_events, scalar_points

    [(rel, data)] = remote.items()
    copy = tmp_path / "copy" / rel
    copy.parent.mkdir(parents=True)
    copy.write_bytes(data)
    assert scalar_points(read_file_events(copy), "loss") == [(s, float(s)) for s in range(30)]


def test_interval_warning_is_said_once_per_logdir(tmp_path, caplog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    caplog.set_level(logging.WARNING, logger="hf_mpwriter")
    for rank in range(3):
        with HFSummaryWriter(repo_id="me/run", logdir=str(tmp_path / "logs"), rank=rank, commit_every=0.1,
                             uploader="none") as writer:
            writer.add_scalar("loss", 1.0, 0)
    warnings = [r for r in caplog.records if r.name == "hf_mpwriter.config"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].args[:2] == (6.0, 3600 / 128)  # commit_every, and the interval it gets: the Hub's rate


@pytest.mark.parametrize("commit_every", [math.inf, -1, 0, float("nan"), "5"])
def test_bad_intervals_are_refused_and_leave_no_logdir(tmp_path, commit_every):
    with pytest.raises(ConfigurationError, match="commit_every"):
        HFSummaryWriter(repo_id="me/run", logdir=str(tmp_path / "new"), commit_every=commit_every)
    assert not (tmp_path / "new").exists()


def test_rejected_arguments_leave_no_logdir(tmp_path):
    for kwargs in ({"repo_id": "not a valid/repo id"}, {"repo_id": "me/run", "repo_type": "modle"},
                   {"repo_id": "me/run", "path_in_repo": "../up"}, {"repo_id": "me/run", "uploader": "cron"},
                   {"repo_id": "me/run", "purge_step": -1}, {"repo_id": "me/run", "rotate_bytes": 10},
                   {"repo_id": "me/run", "flush_secs": "x"}, {"repo_id": "me/run", "logdir": "s3://bucket/logs"}):
        with pytest.raises(ConfigurationError):
            HFSummaryWriter(**{"logdir": str(tmp_path / "new"), **kwargs})
        assert not (tmp_path / "new").exists(), kwargs


def test_status_advice_for_a_local_only_logdir_works_when_followed(tmp_path):
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), rank=0) as writer:  # no repo_id, no target: local only
        writer.add_scalar("loss", 1.0, 0)
    status = _cli("status", str(logdir))
    assert status.returncode == 0 and "--repo-id ID" in status.stdout and "--target DIR" in status.stdout, status.stdout
    synced = _cli("sync", str(logdir), "--target", str(tmp_path / "mirror"), "--quiet")
    assert synced.returncode == 0, synced.stderr
    assert "up to date" in _cli("status", str(logdir)).stdout


def test_sync_quiet_shows_no_progress_bars(tmp_path, monkeypatch):
    with HubServer(tokens={TOKEN}) as hub:
        logdir = tmp_path / "logs"
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # the Hub the logdir records, and sync uses
        with HFSummaryWriter(repo_id="tester/run", logdir=str(logdir), rank=0, uploader="none") as writer:
            for step in range(50):
                writer.add_scalar("loss", float(step), step)
        env = {**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": TOKEN}
        result = _cli("sync", str(logdir), "--quiet", env=env)
        assert result.returncode == 0, result.stderr
        assert "%|" not in result.stderr and "it/s" not in result.stderr and "B/s" not in result.stderr, result.stderr
        check_remote(logdir, {p[len("tensorboard/logs/"):]: hub.read_file("tester/run", p)
                              for p in hub.list_files("tester/run") if p.startswith("tensorboard/logs/")},
                     {}, tmp_path / "remote")


@pytest.mark.parametrize("command", [[], ["demo"], ["status"], ["sync"]])
def test_help_is_plain_text_and_every_option_says_what_it_does(command):
    result = _cli(*command, "--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and ":class:" not in result.stdout, result.stdout
    lines = result.stdout.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("--") and stripped not in ("--help",):
            described = len(stripped.split()) > 2 or (i + 1 < len(lines) and lines[i + 1].startswith(" " * 20))
            assert described, f"{stripped!r} has no help in `hf-mpwriter {' '.join(command)} --help`"
