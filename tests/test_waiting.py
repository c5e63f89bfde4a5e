"""Saying why while waiting (issue 39, items 4 and 5): a ``close()`` that waits says once what for;
``status`` while the uploader works says when its next commit is due; a Hub target with no token found
is said when the writer is made, and does not hold ``close()`` for its whole ``close_timeout``.

Real processes: the writers here are in this process, their uploader is the process they start, the
Hub is the test Hub (or a port nothing listens on)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import closed_port
from upload_helpers import TOKEN, committed_and_checked, wait_for, writer_env

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.election import uploader_state
from hf_mpwriter.state.upload_error import ErrorKind, UploadError
from hf_mpwriter.writer import hub_writer
from hf_mpwriter.writer.waiting import describe

REPO = "tester/waiting"


def _hub_env(monkeypatch, env: dict[str, str], tmp_path: Path) -> None:
    """This process (and the uploader it starts) talks to ``env``'s Hub with no token anywhere."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _said_by(caplog, function: str) -> list[logging.LogRecord]:
    """The records one function of the writer logged (found by where they come from, not by wording)."""
    return [r for r in caplog.records if r.name == hub_writer.logger.name and r.funcName == function]


def _no_uploader_left(logdir: Path) -> None:
    wait_for(lambda: uploader_state(logdir) == "none", 60, "the uploader to exit")


# -- item 4: close() says what it waits for -----------------------------------------------------------
def test_a_close_that_waits_says_once_what_it_waits_for(hub, tmp_path, monkeypatch, caplog):
    """Rank 0 closes while rank 1 still writes: its commit waits for the spacing of commits (15 s here: 240 an hour)."""
    caplog.set_level(logging.INFO, logger="hf_mpwriter")
    _hub_env(monkeypatch, {**hub.env(), "HF_MPWRITER_COMMITS_PER_HOUR": "240"}, tmp_path)
    logdir = tmp_path / "logs"
    other = HFSummaryWriter(repo_id=REPO, logdir=str(logdir), rank=1, token=TOKEN, close_timeout=60)
    writer = HFSummaryWriter(repo_id=REPO, logdir=str(logdir), rank=0, token=TOKEN, close_timeout=60)
    try:
        writer.add_scalar("loss", 1.0, 0)
        writer.flush()
        wait_for(lambda: collect(logdir)["commits"] >= 1, 30, "the first commit")
        writer.add_scalar("loss", 2.0, 1)
        started = time.time()
        writer.close()
        took = time.time() - started
    finally:
        other.close()
    assert took > hub_writer.SAY_WAIT_AFTER_S, took  # the scenario: a close() that waited
    said = _said_by(caplog, "_say_waiting")
    assert len(said) == 1, [r.getMessage() for r in said]  # once, not every poll
    assert said[0].levelno == logging.WARNING  # rank 0: on the user's terminal
    assert said[0].created - started >= hub_writer.SAY_WAIT_AFTER_S - 0.5, said[0].created - started
    assert str(logdir) in said[0].getMessage()
    wait_for(lambda: collect(logdir)["up_to_date"], 30, "everything committed")
    _no_uploader_left(logdir)


def test_a_quick_close_says_nothing_about_waiting(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hf_mpwriter")
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, commit_every=1) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert collect(logdir)["bytes_committed"] > 0  # the scenario: it was committed within close()
    assert not _said_by(caplog, "_say_waiting")
    _no_uploader_left(logdir)


@pytest.mark.parametrize(("job", "words"), [
    (None, ("next commit, due in 42 s",)),
    ({"job_id": "j", "node": 1, "nodes": 2, "mode": "job", "leading": False, "age_bound": 300.0},
     ("leader", "node 1 of 2", "5 min")),  # (one unit for a span, as status says it)
    ({"job_id": "j", "node": 0, "nodes": 2, "mode": "job", "leading": True}, ("leads",)),
    ({"job_id": "j", "node": 1, "nodes": 2, "mode": "node", "why": "the store failed"}, ("turn", "the store failed")),
    ({"job_id": "j", "node": 1, "nodes": 2, "mode": "job", "store_gone": True}, ("turn",)),
])
def test_what_a_wait_is_for_is_read_from_the_uploaders_published_state(job, words):
    info = {"next_cycle_at": 1042.0, "job": job}
    text = describe("alive", info, None, "the Hub", now=1000.0)
    assert all(word in text for word in words), text


def test_an_error_the_queue_records_is_what_the_wait_is_for():
    transient = UploadError(ErrorKind.TRANSIENT, "HTTP 503", 1, 0.0, 0.0)
    assert "HTTP 503" in describe("alive", {"next_cycle_at": 0.0}, transient, "the Hub", now=1.0)
    assert "commit in progress" in describe("alive", {"next_cycle_at": 1.0}, None, "the Hub", now=1.2)
    assert "start" in describe("none", None, None, "the Hub", now=0.0)


# -- item 4: status while the uploader works ---------------------------------------------------------
def test_status_while_the_uploader_works_says_when_its_next_commit_is_due(tmp_path):
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, commit_every=5)  # minutes
    try:
        writer.add_scalar("loss", 1.0, 0)
        writer.flush()
        wait_for(lambda: collect(logdir)["commits"] >= 1, 30, "the first commit (at the uploader's start)")
        writer.add_scalar("loss", 2.0, 1)
        writer.flush()

        def between_cycles() -> dict | None:  # right after a commit the cycle may still run: due "now"
            info = collect(logdir)
            due = info["uploader"] and info["uploader"]["next_cycle_at"]
            return info if due and due > info["checked_at"] + 1 else None

        info = wait_for(between_cycles, 30, "the uploader between two cycles")
        assert info["uploader"]["alive"] and info["pending_bytes"] > 0, info  # the scenario: alive, behind
        due = info["uploader"]["next_cycle_at"]
        assert due is not None and 200 < due - info["checked_at"] <= 301, (due, info["checked_at"])
        assert info["last_error_kind"] is None, info
        shown = subprocess.run([sys.executable, "-m", "hf_mpwriter", "status", str(logdir)], capture_output=True,
                               text=True, env=writer_env(), timeout=60)
        last = shown.stdout.strip().splitlines()[-1]
        assert shown.returncode == 0 and last.startswith("not up to date yet") and "due in " in last, shown.stdout
    finally:
        writer.close()
    assert committed_and_checked(logdir)
    _no_uploader_left(logdir)


# -- item 5: no token found ---------------------------------------------------------------------------
def test_a_hub_target_with_no_token_is_said_at_construction_and_close_does_not_wait_it_out(
        tmp_path, monkeypatch, caplog):
    """No token anywhere and no Hub to reach: the network error used to hide the missing token, and
    close() waited out its close_timeout."""
    caplog.set_level(logging.INFO, logger="hf_mpwriter")
    _hub_env(monkeypatch, {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}, tmp_path)
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(repo_id=REPO, logdir=str(logdir), rank=0, close_timeout=60)
    assert len(_said_by(caplog, "_warn_if_no_token")) == 1  # at construction, before anything is logged
    assert _said_by(caplog, "_warn_if_no_token")[0].levelno == logging.WARNING
    writer.add_scalar("loss", 1.0, 0)
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 30  # not the close_timeout
    info = collect(logdir)
    assert info["last_error_kind"] == "needs_user", info  # the uploader met the missing token
    assert info["bytes_committed"] == 0 and info["pending_bytes"] > 0, info  # kept, for `sync` with a token
    _no_uploader_left(logdir)


@pytest.mark.parametrize("where", ["argument", "login file"])
def test_a_token_found_is_not_warned_about_nor_printed(tmp_path, monkeypatch, caplog, where):
    caplog.set_level(logging.INFO, logger="hf_mpwriter")
    _hub_env(monkeypatch, {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}, tmp_path)
    if where == "login file":  # what `hf auth login` writes (huggingface_hub reads its path once, at import)
        import huggingface_hub.constants

        (tmp_path / "hf_home").mkdir()
        (tmp_path / "hf_home" / "token").write_text(TOKEN)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    writer = HFSummaryWriter(repo_id=REPO, logdir=str(tmp_path / "logs"), rank=0, uploader="none",
                             token=TOKEN if where == "argument" else None)
    writer.close()
    assert not _said_by(caplog, "_warn_if_no_token")
    assert caplog.records and TOKEN not in caplog.text  # the scenario: the writer did log
