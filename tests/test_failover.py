"""Fail-over and recovery that trust nothing: hung uploaders, stale settings, the first second.

Real processes and real signals: SIGSTOP for a hung uploader, a server that accepts connections and
never answers, bad tokens fixed by the user, processes that die right after creating their writer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from upload_helpers import (
    TOKEN,
    check_remote,
    commit_time,
    finish,
    hub_env,
    kill_and_collect,
    local_commits,
    local_target_files,
    read_line,
    start_writer,
    uploader_pid,
    wait_for,
    writer_env,
)

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.redaction import redact
from hf_mpwriter.state.jobqueue import JobQueue
from hf_mpwriter.state.jobs import JobState
from hf_mpwriter.state.registry import live_writers
from hf_mpwriter.state.statedir import write_json_atomic
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.testing import HubServer
from hf_mpwriter.uploader.loop import Superseded, Uploader
from hf_mpwriter.uploader.schedule import FINAL_GAP_S

BAD = "hf_badTokenForTests0123456789"
REPO = "tester/run"
PREFIX = "tensorboard/logs/"


#: A writer's environment for the test Hub.
_env = hub_env


def _local_cfg(tmp_path: Path, rank: int, **kw) -> dict:
    cfg = {"logdir": str(tmp_path / "logs"), "target_dir": str(tmp_path / "target"), "rank": rank,
           "commit_every_s": 1.0, "steps": 300, "sleep": 0.02}
    cfg.update(kw)
    return cfg


def _hub_cfg(tmp_path: Path, rank: int, **kw) -> dict:
    cfg = {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "rank": rank, "commit_every_s": 1.0,
           "steps": 100, "sleep": 0.01, "close_timeout": 60}
    cfg.update(kw)
    return cfg


def _remote(hub: HubServer) -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(PREFIX)}


# -- a hung uploader is replaced -------------------------------------------------------------------
def test_stopped_uploader_is_replaced_and_never_commits_again(tmp_path):
    logdir = tmp_path / "logs"
    procs = [start_writer(_local_cfg(tmp_path, r)) for r in range(2)]
    for proc in procs:
        read_line(proc, "flushed 9")
    old = wait_for(lambda: uploader_pid(logdir), 20, "an uploader")
    wait_for(lambda: local_commits(tmp_path / "target"), 20, "a first commit")
    os.kill(old, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        # How soon is the schedule's business (its fake-clock tests); here: replaced, in that order,
        # within bounds generous enough for a loaded machine.
        new = wait_for(lambda: (uploader_pid(logdir) or old) != old and uploader_pid(logdir), 60,
                       "a writer to replace the stopped uploader")
        wait_for(lambda: [c for c in local_commits(tmp_path / "target") if c["time"] > stopped_at], 60,
                 "a commit by the new uploader")
    finally:
        try:
            os.kill(old, signal.SIGCONT)  # if it still existed, it would wake up now
        except ProcessLookupError:
            pass
    assert new != old
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE, "the old one lives on"
    for proc in procs:
        finish(proc)
    remote = local_target_files(tmp_path / "target", "tensorboard/logs")
    check_remote(logdir, remote, {0: range(300), 1: range(300)}, tmp_path / "remote")  # nothing lost or twice


def test_superseded_uploader_sends_nothing(tmp_path):
    """The fence behind the kill: an uploader that finds a newer generation in the queue stops."""
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                         commit_every=1) as writer:
        writer.add_scalar("loss", 1.0, 0)
    old = Uploader(logdir)
    old.acquire()
    old.release()  # as if it had been stopped while holding the queue...
    newer = Uploader(logdir)
    newer.acquire()  # ...and replaced
    newer.release()
    with pytest.raises(Exception, match="replaced by generation"):
        old.cycle()
    assert not local_commits(tmp_path / "target")


@pytest.mark.parametrize("late", [JobState.PENDING, JobState.DONE])
def test_a_replaced_uploaders_late_update_leaves_its_successors_job_alone(tmp_path, late):
    """Two real handles on one queue: the first sends the job and is replaced while its call runs; the
    successor takes the job over and sends it again. The first's call then comes back (failed, or
    landed): its update of the job is refused, and the successor's job stays in flight (before: the
    first flipped it back to pending, or acknowledged it with its own, older pieces)."""
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                         commit_every=1) as writer:
        writer.add_scalar("loss", 1.0, 0)
    uploader = Uploader(logdir)
    key, db = uploader.target.key, logdir / ".hf_mpwriter" / "queue.db"
    first, second = JobQueue(db), JobQueue(db)
    try:
        first.new_generation()
        sent = first.add(key, uploader.committer.scanner.snapshot({}))
        first.move(sent, JobState.INFLIGHT)  # the first sends it...
        second.new_generation()  # ...and is replaced while its call runs
        theirs = second.unfinished(key)
        second.move(theirs, JobState.PENDING, next_try=0.0)  # the successor finds it did not land...
        second.move(theirs, JobState.INFLIGHT)  # ...and sends it again
        refused: Exception | None = None
        try:  # the first's call comes back
            first.move(sent, late, error="timed out", next_try=time.time() + 60, commit_id="late")
        except Exception as exc:  # noqa: BLE001 - which one is asserted below
            refused = exc
        job = second.unfinished(key)
        assert job is not None and (job.id, job.state) == (theirs.id, JobState.INFLIGHT), job
        assert isinstance(refused, Superseded), refused
    finally:
        first.close()
        second.close()


#: Longer than the whole test: a request held this long is ended by the client's timeout, or never.
HELD_S = 600.0


def test_a_server_that_never_answers_times_out_and_everything_lands_after(hub, tmp_path):
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    # The first two requests are accepted and never answered while the test runs; the rest are served.
    hang = hub.inject("latency", route="any", seconds=HELD_S, times=2)
    env = _env(hub, tmp_path, HF_MPWRITER_HTTP_TIMEOUT="2")
    try:
        proc = start_writer(_hub_cfg(tmp_path, 0, close_timeout=3), env)
        finish(proc)  # close() gives up after its timeout; the uploader keeps trying
        wait_for(lambda: collect(logdir)["up_to_date"], 45, "everything on the target after the timeouts")
        # The scenario: both held requests are still unanswered (the server holds them), so the data
        # landed only because the uploader stopped waiting for them, and said why.
        assert hang.hits == 2 and hang.done == 0, (hang.hits, hang.done)
    finally:
        hang.release()
    # ... each held request ended by the read timeout (not by a bound on the whole call, nor an answer).
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    assert sum("ReadTimeout" in line for line in log.splitlines()) == 2, log[-3000:]
    check_remote(logdir, _remote(hub), {0: range(100)}, tmp_path / "remote")


# -- the fix takes ------------------------------------------------------------------------------------
def test_bad_token_close_returns_at_once_then_sync_with_the_fix_takes_over(hub, tmp_path):
    logdir = tmp_path / "logs"
    go = tmp_path / "go"
    # Rank 0 goes on running (the job is not over), so its uploader, waiting for the user, is still
    # there when sync comes: with every writer gone it would have stopped (nobody left to fix it).
    held = start_writer(_hub_cfg(tmp_path, 0, steps=50, close_after=str(go)), _env(hub, tmp_path, BAD))
    read_line(held, "flushed 49", 60)
    started = time.monotonic()
    proc = start_writer(_hub_cfg(tmp_path, 1, steps=50, close_timeout=60), _env(hub, tmp_path, BAD))
    err = finish(proc)
    assert time.monotonic() - started < 30, "close() waited for an error retrying cannot fix"
    assert "refused the token (HTTP 401)" in err and "hf-mpwriter sync" in err and BAD not in err, err
    old = uploader_pid(logdir)
    assert old, "the uploader with the bad token still holds the logdir (it waits for the user)"
    env = _env(hub, tmp_path)
    env["HF_TOKEN"] = TOKEN
    result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet", "--timeout", "60"],
                            env=writer_env(env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    check_remote(logdir, _remote(hub), {0: range(50), 1: range(50)}, tmp_path / "remote")
    wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE, 10,
             "the old uploader to hand over and exit")
    go.touch()
    finish(held)


def test_writer_with_the_fixed_token_takes_over_from_a_stuck_uploader(hub, tmp_path):
    logdir = tmp_path / "logs"
    go = tmp_path / "go"
    held = start_writer(_hub_cfg(tmp_path, 0, steps=30, close_after=str(go), close_timeout=10), _env(hub, tmp_path, BAD))
    read_line(held, "flushed 29", 60)
    wait_for(lambda: "refused the token" in (collect(logdir)["last_error"] or ""), 30, "the bad token's error")
    assert uploader_pid(logdir)
    finish(start_writer(_hub_cfg(tmp_path, 1, steps=30, close_timeout=60), _env(hub, tmp_path)))
    # close() returned once its files were committed, with the bad token's writer still alive: only the
    # writer with the new token starts the uploader that replaces the one waiting for the user (before,
    # the bad token's writer often restarted it first, and the handover went round for all of close_timeout).
    fixed = [f for f in collect(logdir)["files"] if f["run"] == "rank-001"]
    assert fixed and all(f["bytes_committed"] == f["bytes_written"] for f in fixed), fixed
    go.touch()
    finish(held)

    def landed() -> bool:
        local = {p.relative_to(logdir).as_posix(): p.stat().st_size for p in logdir.glob("rank-*/*tfevents*")}
        remote = {path: len(data) for path, data in _remote(hub).items()
                  if path.startswith("rank-")} if hub.repo_exists(REPO) else {}
        return len(local) == 2 and remote == local

    wait_for(landed, 60, "both ranks' files on the Hub, whole")
    check_remote(logdir, _remote(hub), {0: range(30), 1: range(30)}, tmp_path / "remote")


# -- the first second ---------------------------------------------------------------------------------
_DIES_EARLY = """
import sys, time
sys.modules["torch"] = None  # floats only: tensorboardX would import torch (~1.5 s of CPU per process)
from hf_mpwriter import HFSummaryWriter
logdir, target, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
writer = HFSummaryWriter(logdir=logdir, target_dir=target, rank=rank, commit_every=5)
for step in range(20):
    writer.add_scalar("loss", float(rank * 100000 + step), step)
writer.flush()
time.sleep(0.1)
raise SystemExit("training failed right after it started")
"""


def test_processes_that_fail_right_after_creating_their_writer_lose_nothing(tmp_path):
    logdir, target = tmp_path / "logs", tmp_path / "target"
    for batch in range(2):
        procs = [subprocess.Popen([sys.executable, "-c", _DIES_EARLY, str(logdir), str(target), str(batch * 10 + i)],
                                  env=writer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(10)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 1 and "training failed" in err, err
    # No manual sync: the uploader they started outlives them and commits everything.
    wait_for(lambda: collect(logdir)["up_to_date"], 60, "every record on the target")
    remote = local_target_files(target, "tensorboard/logs")
    check_remote(logdir, remote, {r: range(20) for r in range(20)}, tmp_path / "remote")


def test_a_closing_writer_does_not_restart_an_uploader_that_just_finished(tmp_path, monkeypatch):
    """The uploader commits and exits at once when the last writer is gone. A closing writer that read
    the queue just before that commit must not start a second uploader with nothing to do."""
    import hf_mpwriter.writer.hub_writer as hub_writer
    from hf_mpwriter.state.election import candidate_starting
    from hf_mpwriter.writer import supervisor

    logdir = tmp_path / "logs"
    real_read = hub_writer.read_committed
    stale_reads = []
    starting = []  # whether the candidate record still said "an uploader is on its way" then
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, commit_every=5)
    first = wait_for(lambda: uploader_pid(logdir), 60, "the writer's uploader to be elected")

    def read_committed(path, key):
        if not stale_reads:  # the first look of close(): taken before the commit, seen after the exit
            wait_for(lambda: _gone(first), 60, "the uploader to commit and exit")
            starting.append(candidate_starting(logdir, supervisor.STARTING_FOR_S))
            stale_reads.append(real_read(path, key))
            return {}
        return real_read(path, key)

    writer.add_scalar("loss", 1.0, 0)
    monkeypatch.setattr(hub_writer, "read_committed", read_committed)
    before = {p.pid for p in psutil.Process().children()}  # the uploader the writer started
    writer.close()
    assert stale_reads and stale_reads[0], "the scenario: the uploader had committed everything and exited"
    # ... and it was elected and is gone, so no candidate record holds a new start back: only close()'s
    # second look at the queue can.
    assert starting == [False], "the scenario: no uploader on its way"
    spawned = [p for p in psutil.Process().children()
               if p.pid not in before and "hf_mpwriter.uploader" in " ".join(_cmdline(p))]
    for proc in spawned:  # (a zombie or a live one: either way, one too many)
        proc.wait(30)
    assert not spawned, "close() started an uploader after everything was committed"
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    assert len(re.findall(r"uploader \d+ started", log)) == 1, log


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_slow_starting_uploader_is_not_doubled(tmp_path):
    """On a loaded node an uploader can take longer to start than a writer waits for it: the writers'
    heartbeats must not spawn a second one meanwhile (each would add to the load)."""
    from hf_mpwriter.state.election import candidate_starting, uploader_alive
    from hf_mpwriter.writer import supervisor

    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none")
    before = {p.pid for p in psutil.Process().children()}

    def spawned() -> list[psutil.Process]:
        return [p for p in psutil.Process().children() if p.pid not in before]

    try:
        assert supervisor.ensure_uploader(logdir, "process", wait=0) is False  # spawned, not up yet
        assert len(spawned()) == 1
        starting = spawned()[0]
        starting.suspend()  # SIGSTOP: still starting, as long as the test needs
        assert not uploader_alive(logdir), "the scenario: the spawned uploader is not elected yet"
        assert supervisor.ensure_uploader(logdir, "process", wait=0) is False
        assert [p.pid for p in spawned()] == [starting.pid], "a second uploader was spawned"
        starting.resume()
        wait_for(lambda: uploader_pid(logdir) == starting.pid, 60, "the slow uploader to be elected")
        # Elected, it is no candidate any more: once it exits, the next writer starts one at once.
        assert not candidate_starting(logdir, supervisor.STARTING_FOR_S)
    finally:
        writer.close()
        for proc in spawned():
            proc.kill()
            proc.wait(10)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # a zombie has none: it can only be the uploader close() started
        return ["hf_mpwriter.uploader"]


# -- writers judged dead by mistake --------------------------------------------------------------------
def test_a_writer_judged_dead_by_mistake_is_not_deleted_and_does_not_speed_up_commits(hub, tmp_path):
    """A live writer whose registration no longer matches its process (a clock step, another PID
    namespace) keeps writing: the uploader, which counts no live writer, commits what is new no more
    often than :data:`~hf_mpwriter.uploader.schedule.FINAL_GAP_S`, not at every loop, and deletes nothing."""
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    # Each commit takes 0.3 s: the writer (a flush every ~10 ms) always has something new when the
    # uploader looks right after a commit, so the uploader never finds itself done, and goes on.
    hub.inject("latency", route="commit", seconds=0.3, times=None)
    env = _env(hub, tmp_path, HF_MPWRITER_COMMITS_PER_HOUR="3600000")  # ~no Hub spacing: the rule spaces commits
    proc = start_writer(_hub_cfg(tmp_path, 0, uploader="none", commit_every_s=600, steps=10**6, sleep=0.005,
                                 flush_every=2), env)
    uploader = None
    try:
        read_line(proc, "flushed 9")
        (registration,) = [p for p in (logdir / ".hf_mpwriter" / "writers").glob("*.json")
                           if json.loads(p.read_text())["pid"] == proc.pid]
        data = json.loads(registration.read_text())
        data["create_time"] -= 3600  # a clock step: psutil's start time no longer matches
        write_json_atomic(registration, data)
        collect(logdir)
        assert registration.exists(), "status deleted a registration"
        uploader = subprocess.Popen([sys.executable, "-m", "hf_mpwriter.uploader", str(logdir)],
                                    env=writer_env({**env, "HF_TOKEN": TOKEN}), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
        commits = wait_for(lambda: t if len(t := _commit_times(hub)) >= 2 else None, 30,
                           "a first commit, then one of what the writer wrote since")  # (as the target applied them)
        # The scenario: the uploader ran all along, counting no live writer, while the writer lived and wrote.
        assert uploader.poll() is None, "the uploader exited: nothing was left to pace"
        assert proc.poll() is None and not live_writers(logdir), "the writer must be alive and judged dead"
    finally:
        kill_and_collect(proc)
        if uploader is not None:
            kill_and_collect(uploader)
    gap = commits[1] - commits[0]
    assert gap >= FINAL_GAP_S - 1, f"commits {gap:.2f} s apart with no live writer counted (at most one per {FINAL_GAP_S} s)"
    assert registration.exists(), "the uploader deleted a live writer's registration"


def _commit_times(hub) -> list[float]:
    """When the target applied each of the uploader's commits, oldest first."""
    return sorted(commit_time(c) for c in hub.commits(REPO)
                  if c["summary"].startswith("Upload TensorBoard logs"))


# -- errors that retrying cannot fix, and transient ones -----------------------------------------------
def test_errors_are_classified_by_what_retrying_can_fix():
    import httpx2

    target = HubTarget("me/run", prefix="tb")  # classification only: no request is made
    assert not target._error(ValueError("bad argument"), "commit").transient
    assert not target._error(TypeError("bad type"), "commit").transient
    assert target._error(httpx2.ReadTimeout("timed out"), "commit").transient
    assert target._error(ConnectionError("refused"), "commit").transient
    # hf_xet reports a failed transfer as a ConnectionError (above); other RuntimeErrors are bugs (test_client.py)
    assert not target._error(RuntimeError("xet transfer failed"), "commit").transient


def test_space_repos_are_created_and_receive_the_logs(hub, tmp_path):
    logdir = tmp_path / "logs"
    finish(start_writer(_hub_cfg(tmp_path, 0, steps=30, repo_type="space"), _env(hub, tmp_path)))
    files = [p for p in hub.list_files(REPO, repo_type="space") if p.startswith(PREFIX)]
    assert files and collect(logdir)["up_to_date"]


@pytest.mark.parametrize("layout", ["target-inside-logdir", "logdir-inside-target", "same"])
def test_overlapping_target_and_logdir_are_refused(tmp_path, layout):
    logdir = tmp_path / "logs"
    target = {"target-inside-logdir": logdir / "mirror", "logdir-inside-target": tmp_path,
              "same": logdir}[layout]
    with pytest.raises(ConfigurationError, match="overlap"):
        HFSummaryWriter(logdir=str(logdir), target_dir=str(target), rank=0)
    assert not logdir.exists() or not any(logdir.iterdir())


def test_transient_sqlite_errors_never_set_the_queue_aside(tmp_path):
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                         commit_every=1) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert Uploader(logdir).drain(timeout=30)
    code = """
import errno, resource, sqlite3, sys
from pathlib import Path
from hf_mpwriter.state.jobqueue import JobQueue
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))  # few to use up, whatever the host allows
keep = []
try:
    while True:
        keep.append(open(sys.argv[1] + "/.hf_mpwriter/config.json"))  # use up every descriptor
except OSError as exc:
    assert exc.errno == errno.EMFILE, exc
try:
    JobQueue(Path(sys.argv[1]) / ".hf_mpwriter" / "queue.db")
    print("opened")
except sqlite3.OperationalError as exc:
    print("transient", exc)
"""
    result = subprocess.run([sys.executable, "-c", code, str(logdir)], env=writer_env(), capture_output=True,
                            text=True, timeout=60)
    # The path under test was taken: opening the queue met a transient error (no descriptor left)...
    assert result.stdout.startswith("transient"), (result.stdout, result.stderr)
    # ...and raised it, leaving the healthy queue where it was.
    assert not list((logdir / ".hf_mpwriter").glob("queue.db.corrupt-*")), "a healthy queue was set aside"
    assert collect(logdir)["up_to_date"]


def test_backoff_starts_over_when_an_uploader_takes_over(tmp_path):
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                         commit_every=1) as writer:
        writer.add_scalar("loss", 1.0, 0)
    uploader = Uploader(logdir)
    job = uploader.queue.add(uploader.target.key, uploader.committer.scanner.snapshot({}))
    for _ in range(8):  # eight failed attempts: the next backoff would be minutes
        uploader.queue.move(job, JobState.INFLIGHT)
        uploader.queue.move(job, JobState.PENDING, error="boom", next_try=time.time() + 300)
    uploader.committer.close()  # a new uploader process: it opens the queue afresh
    uploader.acquire()
    try:
        job = uploader.queue.unfinished(uploader.target.key)
        assert job.attempts == 1 and job.next_try == 0
    finally:
        uploader.release()
    assert JobQueue(logdir / ".hf_mpwriter" / "queue.db").unfinished(uploader.target.key) is not None


def test_redaction_keeps_paths_and_names_readable():
    token = "hf_" + "a1B2" * 9
    text = f"error at /data/.hf_mpwriter/queue.db for hf_mpwriter and {token} (Bearer {token})"
    assert redact(text, token) == "error at /data/.hf_mpwriter/queue.db for hf_mpwriter and *** (Bearer ***)"
    assert redact("abc abcdef xabc", "abc") == "*** abcdef xabc"  # a short token: whole words only
    assert redact("Bearer hf_" + "Z" * 34) == "Bearer hf_***"  # shaped like a Hub token, unknown
