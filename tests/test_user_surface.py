"""What a user types and reads (issue 33): one unit per flag, an uploader that stops when only the
user can help, a ``status`` that counts every byte not committed and names the full repository,
output that stays readable in a file, help that says each default once.

Real processes throughout: writer processes, the uploader they start, the ``hf-mpwriter`` command,
the real huggingface_hub client against the test Hub."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from upload_helpers import (
    TOKEN,
    check_remote,
    committed_and_checked,
    finish,
    hub_env,
    start_writer,
    uploader_pid,
    wait_for,
    writer_env,
)

from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.election import uploader_state
from hf_mpwriter.uploader.schedule import Action, Pacing, Schedule
from hf_mpwriter.writer import supervisor

ROOT = Path(__file__).resolve().parent.parent
REPO = "tester/run"
PREFIX = "tensorboard/logs/"
BAD_TOKEN = "hf_wrongTokenXYZ0123456789"


def _cli(*args: str, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run([sys.executable, "-m", "hf_mpwriter", *args], env=writer_env(env), text=True,
                          timeout=timeout, **kw)


def _cfg(tmp_path: Path, rank: int, **kw) -> dict:
    return {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "rank": rank, "commit_every_s": 1.0, "steps": 50,
            "sleep": 0.005, "close_timeout": 60, **kw}


def _env(hub, tmp_path: Path, token: str | None) -> dict:
    """A writer's environment for the test Hub, with ``token`` (``None``: no token anywhere)."""
    env = hub_env(hub, tmp_path, token or "")
    if token is None:
        env.pop("TEST_TOKEN")
    return env


def _remote(hub, repo: str = REPO) -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(repo, p) for p in hub.list_files(repo) if p.startswith(PREFIX)}


def _processes_naming(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline and proc.pid != psutil.Process().pid:
            found.append(cmdline)
    return found


def _last_error(logdir: Path) -> str:
    """The uploader's error as ``status`` shows it ("" while the logdir is not there yet)."""
    return (collect(logdir)["last_error"] or "") if (logdir / ".hf_mpwriter" / "config.json").exists() else ""


def _says_sync_once(text: str, logdir: Path) -> None:
    """The command that finishes the job is given with the real logdir, once per message."""
    assert f"hf-mpwriter sync {logdir}" in text, text
    assert "LOGDIR" not in text, text
    for line in text.splitlines():
        assert line.count("hf-mpwriter sync") <= 1, line


# -- item 2: one unit per flag -------------------------------------------------------------------
def test_interval_flags_say_their_unit_and_the_old_spelling_is_refused(tmp_path):
    demo = _cli("demo", "--help")
    assert "--commit-every-s" in demo.stdout, demo.stdout
    refused = _cli("demo", "--commit-every", "5", "--out", str(tmp_path / "demo"))
    assert refused.returncode == 2 and "--commit-every" in refused.stderr, refused.stderr
    assert not (tmp_path / "demo").exists()
    pytest.importorskip("torch")
    example = subprocess.run([sys.executable, str(ROOT / "scripts" / "torchrun_example.py"), "--help"],
                             capture_output=True, text=True, timeout=120, env=writer_env())
    assert example.returncode == 0 and "--commit-every-s" in example.stdout, example.stdout + example.stderr
    old = subprocess.run([sys.executable, str(ROOT / "scripts" / "torchrun_example.py"), "--logdir", str(tmp_path),
                          "--target-dir", str(tmp_path / "t"), "--commit-every", "5"],
                         capture_output=True, text=True, timeout=120, env=writer_env())
    assert old.returncode == 2 and "--commit-every" in old.stderr, old.stderr


# -- item 3: an uploader that only the user can help stops with its writers ----------------------
@pytest.mark.parametrize("token,expect", [(None, "no token was given"), (BAD_TOKEN, "refused the token")],
                         ids=["no-token", "bad-token"])
def test_uploader_stops_with_its_writers_when_only_the_user_can_help(hub, tmp_path, token, expect):
    logdir = tmp_path / "logs"
    go = tmp_path / "go"
    procs = [start_writer(_cfg(tmp_path, r, close_after=str(go)), _env(hub, tmp_path, token)) for r in range(2)]
    pid = wait_for(lambda: uploader_pid(logdir), 30, "an uploader")
    wait_for(lambda: expect in _last_error(logdir), 30, "the uploader to meet the error")
    go.touch()
    errs = [finish(p) for p in procs]  # every writer is gone
    try:  # a bound for a broken build (600 s of retries), not a timing goal
        psutil.Process(pid).wait(timeout=60)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise AssertionError("the uploader still runs 60 s after its last writer, retrying what only the user "
                             "can fix") from None
    assert uploader_state(logdir) == "none" and not _processes_naming(logdir), _processes_naming(logdir)
    # A writer closing now (it met the error late) is told it at once, and starts no uploader for it.
    assert expect in (supervisor.fatal_error(logdir, token or "") or ""), supervisor.fatal_error(logdir)
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    assert f"hf-mpwriter sync {logdir}" in log, log[-2000:]
    for err in errs:  # each writer said it, with the command that finishes the job
        assert expect in err, err
        _says_sync_once(err, logdir)
    # Everything is still there to send, and status says what to run.
    info = collect(logdir)
    assert info["bytes_committed"] == 0 and info["pending_bytes"] == info["bytes_written"] > 0, info
    status = _cli("status", str(logdir))
    assert expect in status.stdout, status.stdout
    _says_sync_once(status.stdout, logdir)
    fixed = _cli("sync", str(logdir), "--quiet", env={**_env(hub, tmp_path, None), "HF_TOKEN": TOKEN})
    assert fixed.returncode == 0, fixed.stderr
    check_remote(logdir, _remote(hub), {0: range(50), 1: range(50)}, tmp_path / "remote")


def test_the_rule_with_a_fake_clock_writers_gone_and_an_error_that_needs_the_user():
    """The schedule's rule alone: once every writer is gone, the commit made then fails with an error
    only the user can fix: exit (1) at once; a transient error goes on being retried."""
    pacing = Pacing(interval=300.0, phase=None, trigger_gap=28.0, final_gap=28.0, drain_timeout=600.0,
                    preemption_deadline=20.0)
    for needs_user, exits in ((True, True), (False, False)):
        schedule = Schedule(pacing, now=0.0, wall=0.0)
        schedule.cycled(0.0, 0.0, "interval")
        schedule.needs_user = needs_user  # writers alive: never a reason to stop
        assert schedule.decide(1.0, drained=False, retry_due=False).action is not Action.EXIT
        schedule.writers(2.0, alive=False)
        decision = schedule.decide(2.0, drained=False, retry_due=False)
        assert decision.action is Action.CYCLE and decision.urgent  # the last writer is gone: commit now
        schedule.cycled(2.0, 2.0, decision.reason)
        decision = schedule.decide(2.25, drained=False, retry_due=False)
        assert (decision.action is Action.EXIT and decision.code == 1) is exits, decision


def test_sync_without_a_token_stops_at_once_and_leaves_no_uploader(hub, tmp_path):
    """A writer still runs (its uploader waits for a token) when the user tries ``sync`` without one."""
    logdir = tmp_path / "logs"
    go = tmp_path / "go"
    writer = start_writer(_cfg(tmp_path, 0, close_after=str(go)), _env(hub, tmp_path, None))
    wait_for(lambda: "no token was given" in _last_error(logdir), 30, "the no-token error")
    first = uploader_pid(logdir)
    assert first is not None
    result = _cli("sync", str(logdir), "--timeout", "300", env=_env(hub, tmp_path, None), timeout=90)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert uploader_pid(logdir) != first  # the scenario: the first uploader handed over to sync
    wait_for(lambda: collect(logdir)["last_error_kind"] == "needs_user", 30, "the missing token, recorded")
    assert "started again" not in out and "timed out" not in out, out
    _says_sync_once(out, logdir)
    go.touch()
    finish(writer)
    wait_for(lambda: uploader_state(logdir) == "none" and not _processes_naming(logdir), 60,
             "no uploader left once the writer is gone")
    assert collect(logdir)["bytes_committed"] == 0


# -- item 4: status and sync's output ------------------------------------------------------------
def test_status_counts_bytes_not_queued_yet(tmp_path):
    logdir = tmp_path / "logs"
    cfg = {"logdir": str(logdir), "target_dir": str(tmp_path / "target"), "rank": 0, "steps": 40,
           "uploader": "none"}
    finish(start_writer(cfg))
    info = json.loads(_cli("status", str(logdir), "--json").stdout)
    assert info["pending_jobs"] == 0 and info["bytes_committed"] == 0, info  # nothing was queued yet
    assert info["pending_bytes"] == info["bytes_written"] > 0, info
    text = _cli("status", str(logdir)).stdout
    [line] = [line for line in text.splitlines() if line.startswith("pending")]
    assert f"{info['bytes_written']} bytes" in line, line


def test_status_names_the_repository_with_its_namespace(hub, tmp_path):
    logdir = tmp_path / "logs"
    finish(start_writer(_cfg(tmp_path, 0, repo_id="tiny-ddp2"), _env(hub, tmp_path, TOKEN)))
    full = f"{hub.username}/tiny-ddp2"
    assert committed_and_checked(logdir)
    info = json.loads(_cli("status", str(logdir), "--json").stdout)
    assert info["up_to_date"] and full in info["target"]["description"], info["target"]
    [line] = [line for line in _cli("status", str(logdir)).stdout.splitlines() if line.startswith("target")]
    assert f"/{full} " in line, line


def test_sync_output_into_a_file_has_no_bars_and_no_client_chatter(hub, tmp_path):
    logdir = tmp_path / "logs"
    finish(start_writer(_cfg(tmp_path, 0, uploader="none", steps=200), _env(hub, tmp_path, TOKEN)))
    env = {**_env(hub, tmp_path, None), "HF_TOKEN": TOKEN}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # the test Hub's setting; a user's shell has none
    with open(tmp_path / "sync.out", "w") as out:
        result = _cli("sync", str(logdir), env=env, stdout=out, stderr=subprocess.STDOUT)
    text = (tmp_path / "sync.out").read_text()
    assert result.returncode == 0 and "synced" in text, text
    assert hub.stats["commits"] >= 2, "the repository was created and its card tagged: the card path was taken"
    assert "metadata block" not in text, text
    assert "\r" not in text and "%|" not in text and "B/s" not in text, repr(text)
    assert len(text.splitlines()) <= 2, text


# -- item 5: help says each default once ---------------------------------------------------------
def _option_helps(help_text: str) -> dict[str, str]:
    """``--option -> its help text`` from argparse's output (the text may start on the next line and
    span several)."""
    options: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        if re.match(r"^\s{2}-", line):
            invocation, _, text = line.strip().partition("  ")
            current = re.findall(r"--?[\w-]+", invocation)[-1]
            options[current] = text.strip()
        elif current and line.startswith(" " * 6) and line.strip():
            options[current] = (options[current] + " " + line.strip()).strip()
        else:
            current = None
    return options


@pytest.mark.parametrize("command", [["demo"], ["status"], ["sync"], ["view"], ["testing-hub"]])
def test_help_says_each_default_once_and_describes_every_option(command):
    if command == ["testing-hub"]:
        result = subprocess.run([sys.executable, "-m", "hf_mpwriter.testing.hub_server", "--help"],
                                capture_output=True, text=True, timeout=60, env=writer_env())
    else:
        result = _cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    options = _option_helps(result.stdout)
    assert "--help" in options, result.stdout
    for option, text in options.items():
        assert text.count("(default") <= 1, f"{option}: {text}"
        assert text, f"{option} has no help in {command}"


def test_status_names_a_repository_given_without_its_namespace_the_same_before_and_after_its_first_commit(hub,
                                                                                                          tmp_path):
    """``repo_id="s5"``: the Hub puts it in the token's namespace. ``status`` names it so before the uploader ever
    reached the Hub, as it does once the uploader resolved it."""
    logdir = tmp_path / "logs"
    env = writer_env({**hub_env(hub, tmp_path), "HF_TOKEN": TOKEN})

    def named() -> str:
        out = subprocess.run([sys.executable, "-m", "hf_mpwriter", "status", "--json", str(logdir)], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)["target"]["description"]

    finish(start_writer({"logdir": str(logdir), "repo_id": "s5", "steps": 5, "uploader": "none"},
                        {**hub_env(hub, tmp_path)}))
    before = named()
    subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet", "--timeout", "60"], env=env,
                   capture_output=True, text=True, timeout=120, check=True)
    from hf_mpwriter.config import resolved_repo_id

    assert resolved_repo_id(logdir) == "test-user/s5" and hub.repo_exists("test-user/s5")  # the scenario: resolved since
    assert before == named()


def test_status_waits_a_few_seconds_at_most_for_a_hub_that_does_not_answer_whoami(hub, tmp_path):
    """``repo_id="s5"`` and a Hub whose ``whoami`` never answers (a latency past any timeout): ``status`` shows the
    name as given within :data:`~hf_mpwriter.cli.status.WHOAMI_WAIT_S` and a margin, not after the client's read
    timeout (60 s, then its retries)."""
    from hf_mpwriter.cli.status import WHOAMI_WAIT_S

    logdir = tmp_path / "logs"
    env = writer_env({**hub_env(hub, tmp_path), "HF_TOKEN": TOKEN})
    finish(start_writer({"logdir": str(logdir), "repo_id": "s5", "steps": 2, "uploader": "none"}, {**hub_env(hub, tmp_path)}))
    stuck = hub.inject("latency", route="whoami", times=None, seconds=600)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hf_mpwriter", "status", "--json", str(logdir)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    took = time.monotonic() - started
    assert stuck.hits == 1  # the scenario: status asked, and the Hub did not answer
    assert "test-user" not in json.loads(out)["target"]["description"] and took < WHOAMI_WAIT_S + 10, took
    hub.clear_faults()


def test_status_in_a_users_process_leaves_huggingface_hubs_client_as_it_is(hub, monkeypatch):
    """``status``'s reading (``collect``) may run in a user's process: naming a repository in the token's namespace
    asks the Hub's ``whoami`` without giving huggingface_hub's process-wide client the uploader's timeouts."""
    from hf_mpwriter.cli import status
    from hf_mpwriter.targets import hub_client

    configured: list = []
    monkeypatch.setattr(hub_client, "configure_process_client", lambda *a, **k: configured.append(a))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    status._in_namespace.cache_clear()
    assert status._in_namespace("s6", hub.endpoint) == "test-user/s6"  # (the scenario: whoami was asked)
    assert configured == []

