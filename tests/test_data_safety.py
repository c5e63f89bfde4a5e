"""Nothing accepted is lost, and the target is judged by what it really holds.

Zombie commits (a commit the Hub applies after its uploader was SIGKILLed), regressions planted
directly in the target, full disks (a real tmpfs), symlinks and escaping paths. Every commit the
server applied is checked, not only the end state.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from upload_helpers import (
    TOKEN,
    check_remote,
    committed_and_checked,
    finish,
    hub_env,
    local_target_files,
    read_line,
    sigkill,
    start_writer,
    uploader_pid,
    wait_for,
    writer_env,
)

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.config import UploadConfig
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.testing import HubServer
from hf_mpwriter.uploader.loop import Uploader
from hf_mpwriter.uploader.schedule import LOCAL_RETRY_S

REPO = "tester/run"
PREFIX = "tensorboard/logs/"


#: A writer's environment for the test Hub.
_env = hub_env


def _hub_cfg(tmp_path: Path, rank: int, **kw) -> dict:
    cfg = {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "rank": rank, "commit_every_s": 1.0,
           "steps": 300, "sleep": 0.01, "close_timeout": 90}
    cfg.update(kw)
    return cfg


def _remote(hub: HubServer, revision: str = "main") -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(REPO, p, revision=revision)
            for p in hub.list_files(REPO, revision=revision) if p.startswith(PREFIX) and "tfevents" in p}


def assert_history_only_extends(hub: HubServer) -> int:
    """Every commit the server applied: no event file is ever replaced by content that does not
    extend it (a zombie commit landing late would replace it with an older, shorter version)."""
    history = [c["id"] for c in reversed(hub.commits(REPO))]  # oldest first
    previous: dict[str, bytes] = {}
    for oid in history:
        files = _remote(hub, oid)
        for path, before in previous.items():
            assert path in files, f"commit {oid[:8]} deleted {path}"
            assert files[path].startswith(before), (
                f"commit {oid[:8]} replaced {path} ({len(before)} bytes) by content that does not extend it "
                f"({len(files[path])} bytes)")
        previous = files
    return len(history)


def _server_idle(hub: HubServer) -> bool:
    """No request is being served (a held commit included)."""
    return hub.active_requests == 0


# -- fencing --------------------------------------------------------------------------------------
#: At most how long the test Hub holds the killed uploader's commit (a server thread waits: no CPU);
#: the test releases it as soon as the new uploader has committed.
_ZOMBIE_HOLD_S = 120.0


def test_zombie_commit_of_a_killed_uploader_never_replaces_newer_content(hub, tmp_path):
    """The Hub applies a commit after its uploader is SIGKILLed; the commits made meanwhile by the
    new uploader must win: the zombie names a parent that is no longer the head (412)."""
    hub.create_repo(REPO)
    # The card is already tagged: the uploader's first commit is a commit of logs, the one held.
    _plant(hub, tmp_path, "README.md", b"---\ntags:\n- hf-summary-writer\n---\n")
    logdir = tmp_path / "logs"
    # Held until the new uploader has committed (released below); if the bound runs out first, the
    # test fails (outcome 200), it does not pass without a zombie.
    hold = hub.inject("hold", route="commit", seconds=_ZOMBIE_HOLD_S)
    procs = [start_writer(_hub_cfg(tmp_path, r), _env(hub, tmp_path)) for r in range(2)]
    wait_for(lambda: hold.hits, 30, "a commit held by the server")
    commits_before = hub.commit_count(REPO)
    first = uploader_pid(logdir)
    sigkill(first)
    wait_for(lambda: uploader_pid(logdir) not in (None, first), 30, "a new uploader")
    for proc in procs:
        finish(proc)
    # The writers are done and everything was committed by the new uploader (the head moved under
    # the held commit); now the zombie lands, and the fence refuses it: its parent is stale (412).
    assert hub.commit_count(REPO) > commits_before, "the new uploader committed nothing"
    assert hold.done == 0, "the held commit was applied before the new uploader was done: no zombie"
    hold.release()
    wait_for(lambda: _server_idle(hub), _ZOMBIE_HOLD_S + 30, "the held commit to be processed")
    assert hold.done == 1, "the held commit was never processed"
    assert hold.outcomes == [412], f"the zombie commit was not fenced off: {hold.outcomes}"
    held = [c for c in hub.commits(REPO) if c["summary"].startswith("Upload TensorBoard logs")]
    assert held, "no commit of logs"
    assert_history_only_extends(hub)
    check_remote(logdir, _remote(hub), {r: range(300) for r in range(2)}, tmp_path / "remote")
    assert committed_and_checked(logdir)


def test_an_uploader_replaced_during_its_commit_steps_down_and_leaves_its_successors_job_alone(hub, tmp_path):
    """The real loop's commit is held by the server; meanwhile a newer uploader takes the queue over and
    commits the job itself. The first's commit then comes back refused (412): its update of the job is
    refused too (:class:`Superseded`), and its loop exits (2) leaving the job acknowledged (before: it
    put its successor's acknowledged job back to pending, with a backoff, and went on)."""
    hub.create_repo(REPO)
    _plant(hub, tmp_path, "README.md", b"---\ntags:\n- hf-summary-writer\n---\n")  # the held commit: of logs
    logdir = tmp_path / "logs"
    with HFSummaryWriter(logdir=str(logdir), repo_id=REPO, rank=0, uploader="none") as writer:
        for step in range(50):
            writer.add_scalar("loss", float(step), step)

    def uploader() -> Uploader:
        return Uploader(logdir, token=TOKEN, target=HubTarget(REPO, prefix="tensorboard/logs", token=TOKEN,
                                                              endpoint=hub.endpoint))

    hold = hub.inject("hold", route="commit", seconds=_ZOMBIE_HOLD_S)
    first, codes = uploader(), []
    thread = threading.Thread(target=lambda: codes.append(first.run()), name="test-first-uploader")
    thread.start()
    try:
        wait_for(lambda: hold.hits, 30, "the first uploader's commit held by the server")
        second = uploader()
        second.committer.take_over()  # what its acquire() does: the queue's next generation
        second.cycle()  # finds the job in flight, not landed: sends it itself
        assert second.queue.unfinished(second.target.key) is None and hub.commit_count(REPO) == 2  # README, logs
    finally:
        hold.release()
        thread.join(60)
    assert hold.outcomes == [412]  # the first's commit came back refused: the path under test was taken
    assert codes == [2]  # it stepped down
    job = second.queue.last_done(second.target.key)
    assert second.queue.unfinished(second.target.key) is None and job is not None and job.attempts == 2
    second.committer.close()
    assert collect(logdir)["up_to_date"] and hub.commit_count(REPO) == 2
    check_remote(logdir, _remote(hub), {0: range(50)}, tmp_path / "remote")


# -- the audit --------------------------------------------------------------------------------------
def _plant(hub: HubServer, tmp_path: Path, path: str, data: bytes) -> None:
    """Commit ``data`` at ``path`` behind the uploader's back, through the real client."""
    blob = tmp_path / "planted.bin"
    blob.write_bytes(data)
    code = ("import os, sys; from huggingface_hub import HfApi; "
            "HfApi(token=os.environ['TEST_TOKEN']).upload_file(path_or_fileobj=sys.argv[1], "
            "path_in_repo=sys.argv[2], repo_id=sys.argv[3], commit_message='planted')")
    subprocess.run([sys.executable, "-c", code, str(blob), path, REPO], env=writer_env(_env(hub, tmp_path)),
                   check=True, capture_output=True, timeout=60)


def _sync(hub: HubServer, tmp_path: Path, logdir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = _env(hub, tmp_path)
    env["HF_TOKEN"] = TOKEN
    return subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet",
                           "--timeout", str(timeout)],
                          env=writer_env(env), capture_output=True, text=True, timeout=timeout + 60)


def test_regression_planted_in_the_hub_is_found_repaired_and_reported(hub, tmp_path):
    logdir = tmp_path / "logs"
    for proc in [start_writer(_hub_cfg(tmp_path, r, steps=100), _env(hub, tmp_path)) for r in range(2)]:
        finish(proc)
    assert committed_and_checked(logdir)
    victim = sorted(_remote(hub))[0]
    good = _remote(hub)[victim]
    _plant(hub, tmp_path, PREFIX + victim, good[: len(good) // 2])  # an older, shorter version
    # The next uploader (here: sync) audits first. While the Hub refuses commits, status says what
    # the audit found and that the target is not up to date.
    hub.inject("status", route="commit", times=None, status=500)
    result = _sync(hub, tmp_path, logdir, timeout=6)
    assert result.returncode != 0
    status = collect(logdir)
    assert not status["up_to_date"]
    assert victim in status["audit"]["repairing"] and victim in status["audit"]["found_wrong"], status["audit"]
    assert "repaired" in subprocess.run([sys.executable, "-m", "hf_mpwriter", "status", str(logdir)],
                                        env=writer_env(), capture_output=True, text=True, timeout=60).stdout
    hub.clear_faults()
    result = _sync(hub, tmp_path, logdir)
    assert result.returncode == 0, result.stderr
    status = collect(logdir)
    assert status["up_to_date"] and not status["audit"]["repairing"], status["audit"]
    assert status["audit"]["repaired_total"] == 1
    check_remote(logdir, _remote(hub), {0: range(100), 1: range(100)}, tmp_path / "remote")


def _local_logs(tmp_path: Path, steps: int = 50) -> Path:
    logdir = tmp_path / "logs"
    for rank in (0, 1):
        with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=rank,
                             uploader="none", commit_every=1) as writer:
            for step in range(steps):
                writer.add_scalar("loss", float(rank * 100000 + step), step)
    return logdir


@pytest.mark.parametrize("damage", ["truncated", "rewritten", "deleted"])
def test_regression_planted_in_a_local_target_is_repaired_by_the_periodic_audit(tmp_path, damage):
    logdir = _local_logs(tmp_path)
    target_root = tmp_path / "target" / "tensorboard" / "logs"
    config = UploadConfig(**{**json.loads((logdir / ".hf_mpwriter" / "config.json").read_text()), "audit_every": 0.2})
    uploader = Uploader(logdir, config=config)
    uploader.acquire()
    try:
        uploader.cycle()  # the start-up audit (nothing committed yet), then the commit
        assert collect(logdir)["up_to_date"]
        victim = sorted(local_target_files(tmp_path / "target", "tensorboard/logs"))[1]
        dest = target_root / victim
        good = dest.read_bytes()
        if damage == "truncated":
            dest.write_bytes(good[: len(good) // 2])
        elif damage == "rewritten":  # same size, different bytes
            dest.write_bytes(bytes(len(good)))
        else:
            dest.unlink()
        # The queue still believes it; the running uploader's next periodic audit does not.
        first_audit = collect(logdir)["audit"]["last_full_audit"]
        wait_for(lambda: uploader.cycle() and collect(logdir)["audit"]["last_full_audit"] != first_audit, 10,
                 "a periodic audit")
        audit = collect(logdir)["audit"]
        assert list(audit["found_wrong"]) == [victim], audit
        uploader.cycle()
    finally:
        uploader.release()
    assert dest.read_bytes() == good
    status = collect(logdir)
    assert status["up_to_date"] and status["audit"]["repaired_total"] == 1, status["audit"]


# -- symlinks and escaping paths ----------------------------------------------------------------
def test_symlinks_are_never_followed(tmp_path):
    logdir = _local_logs(tmp_path, steps=10)
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:do not upload me\n")
    (logdir / "rank-000" / "events.out.tfevents.1.2.host.3").symlink_to(secret)
    (logdir / "linked-run").symlink_to(secret.parent, target_is_directory=True)
    (logdir / "passwd").symlink_to("/etc/passwd")
    # With repo_allow_patterns=None every regular file is uploaded: still no link.
    config_path = logdir / ".hf_mpwriter" / "config.json"
    config = json.loads(config_path.read_text())
    config["allow_patterns"] = []
    config_path.write_text(json.dumps(config))
    assert Uploader(logdir).drain(timeout=30)
    target = tmp_path / "target"
    uploaded = [p for p in target.rglob("*") if p.is_file()]
    assert uploaded and not any(b"do not upload me" in p.read_bytes() or b"root:" in p.read_bytes()
                                for p in uploaded)
    assert not any(p.name in ("passwd", "secret.txt") or "linked-run" in p.parts for p in uploaded)
    assert committed_and_checked(logdir)


@pytest.mark.parametrize("path_in_repo", ["../x", "a/../../x", "..", "tensorboard/../../../etc"])
@pytest.mark.parametrize("where", ["hub", "local"])
def test_path_in_repo_that_leaves_the_target_is_refused_at_construction(tmp_path, path_in_repo, where):
    kwargs = {"repo_id": "me/run"} if where == "hub" else {"target_dir": str(tmp_path / "target")}
    with pytest.raises(ConfigurationError, match="would leave the repository"):
        HFSummaryWriter(logdir=str(tmp_path / "logs"), path_in_repo=path_in_repo, **kwargs)
    assert not list(tmp_path.rglob("*tfevents*"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "target").exists()


def test_a_permissive_state_directory_is_made_private(tmp_path):
    logdir = tmp_path / "logs"
    state = logdir / ".hf_mpwriter"
    state.mkdir(parents=True)
    os.chmod(state, 0o777)
    (state / "claims").mkdir()
    os.chmod(state / "claims", 0o777)
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, commit_every=1) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"


# -- full disks (a real tmpfs) ----------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs: a disk that really fills up (needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler (delete it to give the space back)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


_FULL_DISK_WRITER = """
import json, os, sys, time
from pathlib import Path
from hf_mpwriter import HFSummaryWriter
import hf_mpwriter.events.event_file as ef
cfg = json.loads(sys.argv[1])
ef.CLOSE_RETRY_SECS = cfg.get("close_retry", 10.0)
disk = Path(cfg["disk"])

def wait_file(name):
    while not (disk.parent / name).exists():
        time.sleep(0.02)

w = HFSummaryWriter(logdir=cfg["logdir"], target_dir=cfg["target"], rank=0, commit_every=1 / 60,
                    flush_secs=0.2, close_timeout=cfg.get("close_timeout", 60))
print("constructed", flush=True)
if cfg.get("full_at_start"):
    wait_file("space")
for step in range(0, 100):
    w.add_scalar("loss", float(step), step)
w.flush()
print("flushed", flush=True)
wait_file("full")
for step in range(100, 300):
    w.add_scalar("loss", float(step), step)
w.flush()  # never raises (the Trainer calls it after every log): says how much waits instead
print("flush returned, unwritten:", w.unwritten_bytes > 0, flush=True)
if cfg.get("free_before_close"):
    wait_file("freed")
w.close()
print("closed", flush=True)
"""


def _full_disk_writer(tmp_path: Path, disk: Path, **cfg) -> subprocess.Popen:
    settings = {"logdir": str(disk / "logs"), "target": str(tmp_path / "target"), "disk": str(disk), **cfg}
    return subprocess.Popen([sys.executable, "-c", _FULL_DISK_WRITER, json.dumps(settings)], env=writer_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _expect(proc: subprocess.Popen, line: str, timeout: float = 60) -> None:
    """The child's next stdout line is ``line`` (fails, never hangs, if it prints nothing in time)."""
    got = read_line(proc, "", timeout)
    assert got == line, f"expected {line!r}, got {got!r}"


def _target_steps(tmp_path: Path) -> list[int]:
    from helpers import read_file_events, scalar_points

    files = local_target_files(tmp_path / "target", "tensorboard/logs")
    copy = tmp_path / "copy"
    steps: list[int] = []
    for rel, data in files.items():
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        steps += [s for s, _ in scalar_points(read_file_events(dest), "loss")]
    return sorted(steps)


def _new_uploader_holds_the_lock(logdir: Path, old_pid: int) -> bool:
    import psutil

    from hf_mpwriter.state.election import lock_held

    uploaders = [p for p in psutil.process_iter(["cmdline"])
                 if "hf_mpwriter.uploader" in " ".join(p.info["cmdline"] or []) and str(logdir) in " ".join(p.info["cmdline"])]
    return lock_held(logdir) and any(p.pid != old_pid for p in uploaders)


def test_full_disk_mid_run_loses_nothing_once_space_returns(tmp_path, small_disk):
    proc = _full_disk_writer(tmp_path, small_disk, free_before_close=True)
    try:
        _expect(proc, "constructed")
        _expect(proc, "flushed")
        logdir = small_disk / "logs"
        first = wait_for(lambda: uploader_pid(logdir), 20, "an uploader")
        filler = fill(small_disk)
        (small_disk.parent / "full").touch()
        _expect(proc, "flush returned, unwritten: True")  # no crash, and no pretending: they are not on disk
        # The uploader, killed now, must start again on the full disk and resume once space returns.
        sigkill(first)
        wait_for(lambda: _new_uploader_holds_the_lock(logdir, first), 20, "a new uploader on the full disk")
        filler.unlink()
        (small_disk.parent / "freed").touch()
        _expect(proc, "closed")
        finish(proc)
    finally:
        proc.kill()
    assert _target_steps(tmp_path) == list(range(300))
    assert committed_and_checked(small_disk / "logs")


def test_full_disk_at_close_keeps_trying_then_tells_the_truth(tmp_path, small_disk):
    proc = _full_disk_writer(tmp_path, small_disk, close_retry=1.0, close_timeout=3)
    try:
        _expect(proc, "constructed")
        _expect(proc, "flushed")
        filler = fill(small_disk)
        (small_disk.parent / "full").touch()
        _expect(proc, "flush returned, unwritten: True")
        _expect(proc, "closed")
        err = finish(proc)
    finally:
        proc.kill()
    assert "NOT on disk" in err and "lost" in err, err
    assert "LOST" in err  # at exit: the process ends with space still missing, and says so
    filler.unlink()
    # What was on disk before the disk filled is intact and complete on the target.
    wait_for(lambda: collect(small_disk / "logs")["up_to_date"] or Uploader(small_disk / "logs").drain(timeout=20),
             40, "the on-disk records to be committed")
    steps = _target_steps(tmp_path)
    assert steps[:100] == list(range(100)) and steps == sorted(set(steps))


def test_writer_constructed_on_a_full_disk_works_and_uploads_once_space_returns(tmp_path, small_disk):
    filler = fill(small_disk)
    proc = _full_disk_writer(tmp_path, small_disk, full_at_start=True, free_before_close=True)
    try:
        _expect(proc, "constructed")  # no OSError: the settings wait in memory
        assert not (small_disk / "logs" / ".hf_mpwriter" / "config.json").exists()
        filler.unlink()
        (small_disk.parent / "space").touch()
        _expect(proc, "flushed")
        (small_disk.parent / "full").touch()
        _expect(proc, "flush returned, unwritten: False")
        (small_disk.parent / "freed").touch()
        _expect(proc, "closed")
        finish(proc)
    finally:
        proc.kill()
    assert _target_steps(tmp_path) == list(range(300))


def test_full_disk_is_retried_every_few_seconds_then_everything_lands(tmp_path, small_disk):
    """The real uploader loop started on a real full disk: every attempt fails locally (its queue cannot
    even be opened) and the next comes ``LOCAL_RETRY_S`` later, not at the next poll (before: four a
    second, each failing the same way); once space returns, every record lands."""
    logdir = small_disk / "logs"
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none",
                             commit_every=1)
    for step in range(100):
        writer.add_scalar("loss", float(step), step)
    writer.flush()  # an open file: the uploader would have to stage a copy of it
    filler = fill(small_disk)
    stop, codes, uploader = threading.Event(), [], Uploader(logdir)
    thread = threading.Thread(target=lambda: codes.append(uploader.run(stop)), name="test-uploader")
    thread.start()
    try:  # (what it publishes for status: uploader.json cannot be written on the full disk)
        wait_for(lambda: len(uploader.local_error_times) >= 3, 30, "three attempts failing on the full disk")
        times = list(uploader.local_error_times)  # the wall time of each failed attempt
        assert min(b - a for a, b in zip(times, times[1:])) >= 0.9 * LOCAL_RETRY_S, times
        filler.unlink()
        for step in range(100, 200):
            writer.add_scalar("loss", float(step), step)
        writer.close()
        thread.join(60)
        assert codes == [0]  # everything committed, then the uploader exits with the last writer gone
    finally:
        stop.set()
        thread.join()
        filler.unlink(missing_ok=True)
        writer.close()
    assert _target_steps(tmp_path) == list(range(200))
    assert committed_and_checked(logdir)
