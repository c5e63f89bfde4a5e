"""The uploader against the project's Hub-compatible server, through the real huggingface_hub
client on the Xet path (what every user with hf_xet gets): real writer processes, real SIGKILLs,
injected server faults, a server that is down. ``test_uploader_lfs.py`` keeps the legacy LFS path."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from helpers import read_line
from upload_helpers import (
    READ_ONLY,
    TOKEN,
    check_remote,
    committed_and_checked,
    finish,
    hub_env,
    sigkill,
    start_writer,
    uploader_pid,
    wait_for,
    writer_env,
)

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.queue_readers import read_error
from hf_mpwriter.testing import HubServer

REPO = "tester/run"
PREFIX = "tensorboard/logs/"


#: A writer's environment for the test Hub.
_env = hub_env


def _cfg(tmp_path: Path, rank: int, **kw) -> dict:
    cfg = {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "rank": rank, "commit_every_s": 1.0,
           "steps": 200, "sleep": 0.01, "close_timeout": 90}
    cfg.update(kw)
    return cfg


def _remote(hub: HubServer) -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(PREFIX)}


def _log_commits(hub: HubServer) -> list[dict]:
    return [c for c in hub.commits(REPO) if c["summary"].startswith("Upload TensorBoard logs")]


def _no_token_anywhere(logdir: Path, *texts: str) -> None:
    for path in (logdir / ".hf_mpwriter").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"token found in {path}"
    for text in texts:
        assert TOKEN not in text


def test_four_writers_reach_the_hub_with_one_uploader(hub, tmp_path):
    env = _env(hub, tmp_path)
    started = time.monotonic()
    procs = [start_writer(_cfg(tmp_path, r, steps=400), env) for r in range(4)]
    logdir = tmp_path / "logs"
    pid = wait_for(lambda: uploader_pid(logdir), 30, "an uploader")
    cmdline = " ".join(psutil.Process(pid).cmdline())
    errs = [finish(p) for p in procs]
    elapsed = time.monotonic() - started
    check_remote(logdir, _remote(hub), {r: range(400) for r in range(4)}, tmp_path / "remote")
    commits = _log_commits(hub)
    assert 2 <= len(commits) <= math.ceil(elapsed / 1.0) + 3, (len(commits), elapsed)
    # Only the uploader creates the repo and tags the model card: once, not once per rank.
    assert hub.stats["requests"].get("create_repo") == 1
    assert b"hf-summary-writer" in hub.read_file(REPO, "README.md")
    assert len([c for c in hub.commits(REPO) if "README" in c["summary"] or "README.md" in c.get("added", [])]) <= 1
    _no_token_anywhere(logdir, cmdline, *errs)
    assert committed_and_checked(logdir)
    assert hub.stats["xorb_bytes_received"] > 0 and hub.stats["lfs_uploads"] == 0, "not the Xet path"


@pytest.mark.parametrize("faults", [
    [("status", {"status": 503}), ("rate_limit", {"retry_after": 1}), ("status", {"status": 409})],
    [("lost_response", {}), ("drop", {})],
], ids=["5xx-429-409", "lost-response-and-drop"])
def test_server_faults_lose_and_duplicate_nothing(hub, tmp_path, faults):
    hub.create_repo(REPO)
    injected = [hub.inject(kind, route="commit", **params) for kind, params in faults]
    procs = [start_writer(_cfg(tmp_path, r, steps=300), _env(hub, tmp_path)) for r in range(2)]
    for proc in procs:
        finish(proc)
    assert all(fault.hits == 1 for fault in injected), [f.hits for f in injected]
    check_remote(tmp_path / "logs", _remote(hub), {r: range(300) for r in range(2)}, tmp_path / "remote")
    assert committed_and_checked(tmp_path / "logs")


@pytest.mark.parametrize("route", ["xorb_upload", "commit"], ids=["mid-upload", "mid-commit"])
def test_uploader_sigkilled_mid_request(hub, tmp_path, route):
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    fault = hub.inject("latency", route=route, seconds=4.0)
    procs = [start_writer(_cfg(tmp_path, r, steps=500), _env(hub, tmp_path)) for r in range(2)]
    wait_for(lambda: fault.hits, 30, f"a {route} request to be in flight")
    first = uploader_pid(logdir)
    sigkill(first)
    wait_for(lambda: uploader_pid(logdir) not in (None, first), 20, "a new uploader")
    for proc in procs:
        finish(proc)
    check_remote(logdir, _remote(hub), {r: range(500) for r in range(2)}, tmp_path / "remote")


def test_server_down_for_the_whole_run_then_next_start_drains(hub, tmp_path):
    hub.stop()
    logdir = tmp_path / "logs"
    env = _env(hub, tmp_path)
    procs = [start_writer(_cfg(tmp_path, r, steps=100, close_timeout=3), env) for r in range(2)]
    errs = [finish(p) for p in procs]
    assert all("hf-mpwriter sync" in err and "is safe and queued" in err for err in errs), errs
    status = collect(logdir)
    assert not status["up_to_date"] and status["last_error"], status
    sigkill(uploader_pid(logdir))  # the job ends: nothing runs any more
    hub.start()
    # The next start (a new writer in the same logdir) drains the backlog of the first run.
    finish(start_writer(_cfg(tmp_path, 2, steps=20), env))
    wait_for(lambda: collect(logdir)["up_to_date"], 60, "the backlog to drain")
    check_remote(logdir, _remote(hub), {0: range(100), 1: range(100), 2: range(20)}, tmp_path / "remote")


def test_sync_command_drains_a_backlog(hub, tmp_path):
    logdir = tmp_path / "logs"
    env = _env(hub, tmp_path)
    for rank in range(2):
        finish(start_writer(_cfg(tmp_path, rank, steps=50, uploader="none"), env))
    env["HF_TOKEN"] = TOKEN
    result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet"],
                            env=writer_env(env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "synced" in result.stdout
    check_remote(logdir, _remote(hub), {0: range(50), 1: range(50)}, tmp_path / "remote")


@pytest.mark.parametrize("token,expect", [("hf_wrongTokenXYZ0123456789", "refused the token (HTTP 401)"),
                                          (READ_ONLY, "refused the token (HTTP 403)")])
def test_bad_token_is_reported_and_nothing_is_lost(hub, tmp_path, token, expect):
    logdir = tmp_path / "logs"
    proc = start_writer(_cfg(tmp_path, 0, steps=50, close_timeout=4), _env(hub, tmp_path, token))
    err = finish(proc)
    assert expect in err and "hf-mpwriter sync" in err, err
    assert token not in err
    status = collect(logdir)
    assert expect in (status["last_error"] or ""), status
    for path in (logdir / ".hf_mpwriter").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    # Every writer is gone and only the user can fix the token: the uploader stops (it used to retry 10 min).
    wait_for(lambda: uploader_pid(logdir) is None, 60, "the uploader to stop")
    # With a good token, the same logdir is finished by sync: nothing was lost.
    env = _env(hub, tmp_path)
    env["HF_TOKEN"] = TOKEN
    result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet"],
                            env=writer_env(env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    check_remote(logdir, _remote(hub), {0: range(50)}, tmp_path / "remote")


def test_missing_revision_is_reported(hub, tmp_path):
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    err = finish(start_writer(_cfg(tmp_path, 0, steps=20, close_timeout=4, repo_revision="nope"),
                              _env(hub, tmp_path)))
    assert "hf-mpwriter sync" in err
    wait_for(lambda: "revision 'nope' does not exist" in (collect(logdir)["last_error"] or ""), 10,
             "the revision error in status")


def test_an_invalid_repo_id_says_what_to_write_instead(tmp_path):
    with pytest.raises(ConfigurationError) as bad:
        HFSummaryWriter(logdir=str(tmp_path / "logs"), repo_id="me/run/sub")
    text = str(bad.value)
    assert "'me/run/sub'" in text and "path_in_repo" in text and "hf://buckets/" in text, text
    assert "repo_type" not in text and ".." not in text, text  # no hint that does not apply, no doubled period


@pytest.mark.parametrize("kwargs,message", [
    ({"repo_id": "not a valid/repo id"}, "invalid repo_id"),
    ({"repo_id": "a/b/c"}, "invalid repo_id"),
    ({"repo_id": "me/run", "repo_type": "modle"}, "invalid repo_type"),
    ({"repo_id": "me/run", "commit_every": 0}, "commit_every"),
    ({"repo_id": "me/run", "uploader": "cron"}, "uploader must be one of"),
    ({"repo_id": "me/run", "target_dir": "/tmp/x"}, "either repo_id"),
])
def test_bad_settings_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        HFSummaryWriter(logdir=str(tmp_path / "logs"), **kwargs)
    assert not list((tmp_path / "logs").rglob("*tfevents*")), "nothing may be written before the error"


def test_a_logdir_every_node_shares_without_a_store_commits_as_one_node(hub, tmp_path, monkeypatch):
    """No job store (``HF_MPWRITER_JOB_STORE=0``): a node's uploader commits at its own slot of the job's
    budget, 8 nodes' worth apart (1,000 s here). Once writers of another host register in the logdir (a
    logdir every node shares), this is the job's only uploader: it commits every ``commit_every`` (10 s),
    from its next turn; when they are gone, at its own slot again."""
    import dataclasses
    import json
    import threading

    from hf_mpwriter.config import load
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.uploader.coordination.factory import situation
    from hf_mpwriter.uploader.coordination.pacing import pacing
    from hf_mpwriter.uploader.loop import Uploader
    from hf_mpwriter.uploader.schedule import until_turn

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name, value in {**hub.env(), "HF_HOME": str(tmp_path / "hf_home")}.items():
        monkeypatch.setenv(name, value)
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(REPO, logdir=str(logdir), uploader="none", rank=0, token=TOKEN, commit_every=10 / 60)
    config = dataclasses.replace(load(logdir), nodes=8, endpoint=hub.endpoint, job_store=False)
    target = HubTarget(REPO, prefix=config.prefix, token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
    # A node whose own slot is at least 300 s away by the wall clock now: far off for the whole test.
    config = next(c for c in (dataclasses.replace(config, node_rank=n) for n in range(8))
                  if until_turn(*pacing(situation(c, target))[:2], time.time()) >= 300)
    uploader = Uploader(logdir, config=config, token=TOKEN, target=target)
    state = logdir / ".hf_mpwriter"

    def next_in() -> float:  # (None until the loop's first decision: not due yet, nothing known)
        return (json.loads((state / "uploader.json").read_text()).get("next_cycle_at") or 0.0) - time.time()

    stop = threading.Event()
    thread = threading.Thread(target=uploader.run, kwargs={"stop": stop, "watch": True})
    other = state / "writers" / "node-b-4242-0.json"
    fresh = threading.Event()

    def keep_fresh() -> None:  # the other host's writer refreshes its registration, as a live one does
        while not fresh.wait(1.0):
            if other.exists():
                other.touch()

    toucher = threading.Thread(target=keep_fresh)
    try:
        thread.start()
        toucher.start()
        wait_for(lambda: (state / "uploader.json").exists() and next_in() > 20, 30, "its own slot, far off")
        assert next_in() > 100  # the scenario: 8 nodes' own slots are 1,000 s apart
        other.write_text(json.dumps({"pid": 4242, "create_time": 0.0, "host": "node-b", "run_dir": "x"}))
        wait_for(lambda: next_in() <= 10.5, 10, "the shared logdir's uploader to commit every commit_every")
        writer.add_scalar("loss", 1.0, 0)
        writer.flush()
        wait_for(lambda: collect(logdir)["up_to_date"], 30, "a commit at the shared pace")
        other.unlink()
        wait_for(lambda: next_in() > 100, 30, "its own slot again once the other host's writers are gone")
    finally:
        fresh.set()
        stop.set()
        thread.join(30)
        toucher.join(5)
        writer.close()


def test_an_uploader_whose_hub_refuses_it_waits_between_tries_and_does_not_spin(hub, tmp_path):
    """The Hub goes away with a commit failed (a job with a backoff in the queue); the uploader is replaced
    (SIGKILL: its writer starts a new one, whose target is not prepared yet). Preparing it backs off; the
    job's backoff ran out meanwhile: the new uploader's loop cycled at once, again and again, doing nothing
    (seen: 50% of a core for as long as the Hub was gone). It waits for the target's next try."""
    logdir = tmp_path / "logs"
    writer = start_writer({"logdir": str(logdir), "repo_id": REPO, "commit_every_s": 1.0, "sleep": 0.05},
                          _env(hub, tmp_path))  # logs until it is killed
    try:
        read_line(writer, "flushed", timeout=30)
        wait_for(lambda: collect(logdir)["commits"] >= 1, 30, "a first commit")
        hub.stop()
        # the scenario: a job that waits for its retry
        wait_for(lambda: _failed_attempts(logdir) > 0, 30, "a commit to fail (its backoff in the queue)")
        first = uploader_pid(logdir)
        sigkill(first)
        second = wait_for(lambda: (lambda pid: pid if pid and pid != first else None)(uploader_pid(logdir)), 30,
                          "the writer to start a new uploader")
        proc = psutil.Process(second)
        wait_for(lambda: getattr(read_error(logdir / ".hf_mpwriter" / "queue.db"), "pid", None) == second, 30,
                 "the new uploader's first try to prepare its target to fail")  # (it records its error in the queue)
        before = sum(proc.cpu_times()[:2])
        time.sleep(5.0)  # (a span measured, not a wait for something)
        used = sum(proc.cpu_times()[:2]) - before
        assert used < 1.0, f"the uploader used {used:.2f} s of CPU in 5 s while its Hub refused it"
    finally:
        writer.kill()
        writer.communicate()


def _failed_attempts(logdir: Path) -> int:
    """The attempts of the queue's unfinished job (0: none), read as ``status`` reads the queue."""
    from hf_mpwriter import config as config_mod
    from hf_mpwriter.state.jobqueue import JobQueue

    queue = JobQueue(logdir / ".hf_mpwriter" / "queue.db", readonly=True)
    try:
        job = queue.unfinished(config_mod.load(logdir).target_key)
        return job.attempts if job else 0
    finally:
        queue.close()


class _OwnThread:
    """An uploader in this process, made and driven in a thread of its own (its queue's connection is that thread's)."""

    def __init__(self, hub: HubServer, logdir: Path, prefix: str) -> None:
        from hf_mpwriter.targets.hub import HubTarget
        from hf_mpwriter.uploader.loop import Uploader

        self.logdir, self.pool = logdir, ThreadPoolExecutor(1, thread_name_prefix=f"test-uploader-{prefix}")
        target = lambda: HubTarget(REPO, prefix=f"tensorboard/{prefix}", token=TOKEN, endpoint=hub.endpoint)  # noqa: E731
        self.uploader = self.pool.submit(lambda: Uploader(logdir, token=TOKEN, target=target())).result()

    def cycle(self) -> Future:
        return self.pool.submit(self.uploader.cycle)

    def landed(self) -> bool:
        """One cycle more; whether everything is at the Hub then."""
        self.cycle().result()
        return bool(collect(self.logdir)["up_to_date"])


def _racing_uploaders(hub: HubServer, tmp_path: Path) -> tuple[list[HFSummaryWriter], list[_OwnThread]]:
    """Two logdirs of one job on one repository, each with its uploader, their first logs landed and more written."""
    hub.create_repo(REPO)
    writers, uploaders = [], []
    for name in ("a", "b"):
        writer = HFSummaryWriter(logdir=str(tmp_path / name), repo_id=REPO, rank=0, uploader="none", token=TOKEN)
        writer.add_scalar("loss", 1.0, 0)
        writer.flush()
        uploaders.append(_OwnThread(hub, tmp_path / name, name))
        uploaders[-1].cycle().result()
        writers.append(writer)
    for writer in writers:
        writer.add_scalar("loss", 2.0, 1)
        writer.flush()
    return writers, uploaders


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("hf_mpwriter")]


def test_a_race_between_two_uploaders_of_one_repository_that_resolves_itself_is_not_a_warning(hub, tmp_path, caplog):
    """Uploader a's commit is held by the Hub while b's lands: a's comes back 412 (the branch moved), and its next try
    lands. Nothing of it is a warning or a ``status`` error; every record is at the Hub."""
    caplog.set_level(logging.INFO, logger="hf_mpwriter")
    writers, (a, b) = _racing_uploaders(hub, tmp_path)
    hold = hub.inject("hold", route="commit", seconds=60)
    raced = a.cycle()
    try:
        wait_for(lambda: hold.hits, 30, "a's commit held by the Hub")
        b.cycle().result()
    finally:
        hold.release()
        raced.result(60)
    assert hold.outcomes == [412], "no race: a's commit was not refused"
    assert _said(caplog) == [] and collect(tmp_path / "a")["last_error"] is None
    wait_for(a.landed, 30, "a's next try to land")
    assert _said(caplog) == []
    for writer in writers:
        writer.close()
    assert all(collect(tmp_path / name)["up_to_date"] for name in ("a", "b"))


def test_a_commit_that_keeps_losing_races_is_said(hub, tmp_path, caplog):
    """The same refusal three tries in a row is news: a warning and a ``status`` error, the records kept."""
    from hf_mpwriter.uploader.commit_cycle import RACES_SAID_AFTER

    caplog.set_level(logging.INFO, logger="hf_mpwriter")
    writers, (a, _) = _racing_uploaders(hub, tmp_path)
    refused = hub.inject("status", route="commit", times=RACES_SAID_AFTER, status=412)
    wait_for(lambda: a.cycle().result() is not None and refused.hits == RACES_SAID_AFTER, 30, "three refusals")
    assert len(_said(caplog)) == 1 and collect(tmp_path / "a")["last_error_kind"] == "transient"
    wait_for(a.landed, 30, "the next try to land")
    for writer in writers:
        writer.close()
