"""Preemption as clusters do it: SIGTERM, a grace period, SIGKILL, and the node's disk gone.

Real rank processes (tests/proc_writer.py) log without flushing (an hour's ``flush_secs``), so what
the target holds afterwards got there through the SIGTERM path alone: the ranks' handler handing
their records to the OS and asking for a commit, and the uploader's last commit. The logdir is
deleted once the grace period is over; the target is read back through the real client.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from helpers import _unread, closed_port, read_file_events, read_line, scalar_points, wait_for
from test_data_safety import fill, small_disk  # noqa: F401  (small_disk: a fixture, a real tmpfs)
from upload_helpers import (
    TOKEN,
    every_applied_commit_is_whole_and_only_grows,
    hub_env,
    local_target_files,
    materialise,
    sigkill,
    uploader_pid,
    writer_argv,
    writer_env,
)

from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.election import last_uploader_info, uploader_info
from hf_mpwriter.targets import HubTarget
from hf_mpwriter.targets.bucket import BucketTarget
from hf_mpwriter.timing import DEFAULT_PREEMPTION_DEADLINE_S, SIGNAL_REPEAT_S

TESTS = Path(__file__).resolve().parent
REPO = "tester/preempted"
BUCKET = "tester/preempted-runs"
PREFIX = "tensorboard/logs"
#: SLURM's, Kubernetes' and torchrun's default grace period between SIGTERM and SIGKILL.
GRACE_S = 30.0


#: A rank of these tests logs without flushing (an hour's ``flush_secs``, no ``flush()``) and says
#: each step it logged; it commits every 5 minutes unless told otherwise.
_RANK = {"commit_every_s": 300, "flush_secs": 3600, "max_queue": 10**6, "flush_every": 0, "print_steps": True,
         "sleep": 0.01}


def _start_rank(cfg: dict, env: dict | None) -> subprocess.Popen:
    return subprocess.Popen(writer_argv({**_RANK, **cfg}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=writer_env(env))


def _rest_of_output(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=10)
    return _unread(proc).decode(errors="replace") + (out or ""), err or ""


def _logged(out: str) -> list[int]:
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("logged ")]


def _target(kind: str, hub, tmp_path: Path) -> tuple[dict, dict | None]:
    """Writer settings for ``kind`` and the ranks' environment."""
    if kind == "local":
        return {"target_dir": str(tmp_path / "target")}, None
    env = hub_env(hub, tmp_path, xet=kind != "repo-lfs")
    if kind.startswith("repo"):
        return {"repo_id": REPO}, env
    return {"repo_id": f"hf://buckets/{BUCKET}"}, env


def _remote(kind: str, hub, tmp_path: Path) -> dict[str, bytes]:
    """What the target holds, read through the real client (the local target: its directory)."""
    if kind == "local":
        return local_target_files(tmp_path / "target", PREFIX)
    if kind.startswith("repo"):
        target = HubTarget(REPO, prefix=PREFIX, token=TOKEN, endpoint=hub.endpoint)
        paths = [p[len(PREFIX) + 1:] for p in target.api.list_repo_files(REPO) if p.startswith(PREFIX + "/")]
    else:
        target = BucketTarget(BUCKET, prefix=PREFIX, token=TOKEN, endpoint=hub.endpoint)
        paths = [p[len(PREFIX) + 1:] for p in hub.bucket_files(BUCKET) if p.startswith(PREFIX + "/")]
    return {rel: target.read(rel) for rel in paths}


def _commits(kind: str, hub, tmp_path: Path) -> int:
    if kind.startswith("repo"):
        return hub.commit_count(REPO)
    if kind == "bucket":
        return hub.stats["bucket_writes"]
    log = tmp_path / "target" / ".hf_mpwriter-commits.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _grace_then_kill(children: list[subprocess.Popen], pids: list[int], grace: float) -> list[int]:
    """Wait ``grace`` seconds for our ``children`` and other ``pids`` to exit; SIGKILL those left.
    Returns the pids killed. (Children are waited through Popen, which keeps their exit status.)"""
    deadline = time.monotonic() + grace
    killed = []
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
            killed.append(child.pid)
    others = []
    for pid in pids:
        try:
            others.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(others, timeout=max(0.0, deadline - time.monotonic()))
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=10)
    return killed + [p.pid for p in alive]


def _steps_on_target(remote: dict[str, bytes], tmp_path: Path) -> dict[int, Counter]:
    copy = materialise(remote, tmp_path / "remote")
    found: dict[int, Counter] = {}
    for rel in remote:
        if rel.startswith("job/"):  # the job run (statistics across the ranks): not a rank's
            continue
        rank = int(rel.split("/")[0].split("-")[1])
        found.setdefault(rank, Counter()).update(s for s, _ in scalar_points(read_file_events(copy / rel), "loss"))
    return found


def _preempt(kind: str, hub, tmp_path: Path, *, ranks: int, uploader_too: bool, extra: dict | None = None):
    """Run ``ranks`` ranks, SIGTERM them (and the uploader), grace, SIGKILL, delete the logdir.

    Returns (steps each rank printed, what the target holds per rank, uploader pid, killed pids,
    ranks' exit codes, commits before SIGTERM, commits after)."""
    logdir = tmp_path / "logs"
    settings, env = _target(kind, hub, tmp_path)
    procs = [_start_rank({"logdir": str(logdir), "rank": r, **settings, **(extra or {})}, env) for r in range(ranks)]
    try:
        for proc in procs:
            read_line(proc, "started", 60)
        uploader = wait_for(lambda: uploader_pid(logdir), 30, "the uploader")
        for proc in procs:
            read_line(proc, "logged 30", 60)  # each rank has logged (in memory only: nothing flushed)
        before = _commits(kind, hub, tmp_path)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        if uploader_too:
            os.kill(uploader, signal.SIGTERM)
        killed = _grace_then_kill(procs, [uploader], GRACE_S)
        outputs = [_rest_of_output(p) for p in procs]
    finally:
        for proc in procs:
            proc.kill()
    shutil.rmtree(logdir)  # the node's local disk does not survive preemption
    # read_line consumed the lines up to "logged 30": every rank logged 0..30, then what it printed after
    logged = {r: list(range(max([30, *_logged(out)]) + 1)) for r, (out, _) in enumerate(outputs)}
    on_target = _steps_on_target(_remote(kind, hub, tmp_path), tmp_path)
    codes = [p.returncode for p in procs]
    return logged, on_target, uploader, killed, codes, before, _commits(kind, hub, tmp_path), outputs


def _assert_nothing_lost(logged: dict[int, list[int]], on_target: dict[int, Counter]) -> None:
    for rank, steps in logged.items():
        assert steps and steps == list(range(len(steps))), f"rank {rank} printed {steps[:5]}..."
        have = on_target.get(rank, Counter())
        missing = [s for s in steps if have[s] == 0]
        assert not missing, f"rank {rank}: {len(missing)} of {len(steps)} steps logged before SIGTERM are not on the target"
        assert all(n == 1 for n in have.values()), f"rank {rank}: duplicated records"
        assert max(have) <= len(steps), "records nobody logged"


def _published(logdir: Path, pid: int) -> dict:
    """What uploader ``pid`` of ``logdir`` publishes (``uploader.json``), or kept as it exited; ``{}`` if neither."""
    for info in (uploader_info(logdir), last_uploader_info(logdir)):
        if info is not None and info.get("pid") == pid:
            return info
    return {}


@pytest.mark.parametrize("kind", ["repo", "repo-lfs", "bucket", "local"])
def test_sigterm_to_every_process_then_sigkill_and_a_lost_disk_loses_nothing(hub, tmp_path, kind):
    ranks = 4 if kind == "repo" else 2
    logged, on_target, uploader, killed, codes, before, after, _ = _preempt(
        kind, hub, tmp_path, ranks=ranks, uploader_too=True,
    )
    # The scenario happened: every process got SIGTERM; the ranks died of it (exit status as without
    # us); the uploader made a commit after it (the default 5-minute interval would not have) and
    # exited by itself within the grace period.
    assert codes == [-signal.SIGTERM] * ranks, codes
    assert uploader not in killed and not killed, f"SIGKILLed after the grace period: {killed}"
    assert after > before, "no commit after SIGTERM"
    if kind == "repo":
        assert hub.stats["xorb_bytes_received"] > 0 and hub.stats["lfs_uploads"] == 0  # the Xet path
    if kind == "repo-lfs":
        assert hub.stats["lfs_uploads"] > 0 and hub.stats["xorb_bytes_received"] == 0  # the legacy LFS path
    if kind.startswith("repo"):
        assert every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path) == after + 1  # + the initial commit
    _assert_nothing_lost(logged, on_target)


def test_sigterm_to_the_ranks_only_commits_at_once(hub, tmp_path):
    logged, on_target, uploader, killed, codes, before, after, _ = _preempt(
        "repo", hub, tmp_path, ranks=2, uploader_too=False,
    )
    assert codes == [-signal.SIGTERM] * 2
    assert not killed, f"the uploader did not finish by itself within the grace period: {killed}"
    assert after > before
    every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)
    _assert_nothing_lost(logged, on_target)


def test_sigterm_with_the_uploader_in_a_thread_of_the_rank(tmp_path):
    """uploader="thread": the uploader dies with its process, so the rank's handler waits for its
    last commit (bounded by the preemption deadline) before the process ends by the signal."""
    logged, on_target, _, killed, codes, _, after, _ = _preempt(
        "local", None, tmp_path, ranks=1, uploader_too=False, extra={"uploader": "thread"},
    )
    assert codes == [-signal.SIGTERM] and not killed
    assert after >= 1
    _assert_nothing_lost(logged, on_target)


def test_a_users_sigterm_handler_is_chained_and_the_process_goes_on(tmp_path):
    """torchrun, Accelerate, Lightning or the user may have their own handler: it still runs, and the
    process lives on as it decided; our handler only adds the flush and the commit request."""
    logdir = tmp_path / "logs"
    for mode in ("record", "ignore"):
        target = tmp_path / f"target-{mode}"
        proc = _start_rank({"logdir": str(logdir / mode), "rank": 0, "target_dir": str(target),
                            "user_handler": mode, "steps": 10**9}, None)
        try:
            read_line(proc, "logged 20", 60)
            proc.send_signal(signal.SIGTERM)
            if mode == "record":
                assert read_line(proc, "user handler", 30) == f"user handler {int(signal.SIGTERM)}"
            last = int(read_line(proc, "logged", 30).split()[1])
            read_line(proc, f"logged {last + 20}", 30)  # still alive and logging after the signal
            # ...and what it logged before the signal is on disk although nothing else flushed it.
            files = sorted((logdir / mode).rglob("*tfevents*"))
            steps = sorted(s for f in files for s, _ in scalar_points(read_file_events(f), "loss"))
            assert steps[:last] == list(range(last)), (mode, steps[:10], last)
        finally:
            proc.kill()
            proc.communicate(timeout=10)


def test_the_opt_out_leaves_sigterm_alone(tmp_path):
    """With HF_MPWRITER_HANDLE_SIGTERM=0 the default action ends the rank at once: what it held in
    memory is lost. (This is also the proof that the tests above depend on the handler.)"""
    proc = _start_rank({"logdir": str(tmp_path / "logs"), "rank": 0, "target_dir": str(tmp_path / "target")},
                       {"HF_MPWRITER_HANDLE_SIGTERM": "0"})
    try:
        read_line(proc, "logged 20", 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    files = sorted((tmp_path / "logs").rglob("*tfevents*"))
    steps = [s for f in files for s, _ in scalar_points(read_file_events(f), "loss")]
    assert steps == [], "records reached the disk without a flush: the other tests would prove nothing"


def test_full_disk_while_logging_like_the_trainer_crashes_no_rank(tmp_path, small_disk):  # noqa: F811
    """flush() after every log (transformers' TensorBoardCallback) on a disk that fills: no rank dies,
    and every record accepted reaches the target once space returns."""
    logdir = small_disk / "logs"
    cfg = {"logdir": str(logdir), "target_dir": str(tmp_path / "target"), "trainer_flush": True, "flush_secs": 0.2,
           "commit_every_s": 1, "steps": 400, "sleep": 0.005}
    procs = [_start_rank({**cfg, "rank": r}, None) for r in range(2)]
    try:
        for proc in procs:
            read_line(proc, "logged 50", 60)
        filler = fill(small_disk)
        for proc in procs:
            read_line(proc, "logged 250", 60)  # logging (and flushing) goes on on the full disk
        filler.unlink()
        outs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"a rank crashed ({proc.returncode}): {err[-2000:]}"
            outs.append((_unread(proc).decode() + out, err))
    finally:
        for proc in procs:
            proc.kill()
    assert any("cannot write event file" in err for _, err in outs), "the disk never refused a write"
    for out, _ in outs:
        assert "closed 0" in out, out[-300:]  # nothing left unwritten at close
    remote = local_target_files(tmp_path / "target", PREFIX)
    on_target = _steps_on_target(remote, tmp_path)
    for rank in range(2):
        assert sorted(on_target[rank]) == list(range(400)) and set(on_target[rank].values()) == {1}


def test_uploader_second_signal_exits_at_once_and_says_what_is_left(hub, tmp_path):
    """A second SIGTERM while the last commit hangs (the Hub answers nothing): the uploader exits at
    once, logs how many bytes are left and the command that sends them; they stay queued."""
    logdir = tmp_path / "logs"
    settings, env = _target("repo", hub, tmp_path)
    proc = _start_rank({"logdir": str(logdir), "rank": 0, **settings, "flush_secs": 0.2}, env)
    try:
        read_line(proc, "logged 50", 60)
        uploader = wait_for(lambda: uploader_pid(logdir), 30, "the uploader")
        wait_for(lambda: hub.commit_count(REPO) >= 1, 30, "a first commit")
        hung = hub.inject("latency", route="any", times=None, seconds=120)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        os.kill(uploader, signal.SIGTERM)
        log = logdir / ".hf_mpwriter" / "uploader.log"
        wait_for(lambda: _published(logdir, uploader).get("signalled"), 30, "the uploader to start its last commit")
        first = time.monotonic()  # the uploader noted the signal before this line (its handler may run late)
        wait_for(lambda: hung.hits > 0, 30, "the last commit to hang in the Hub")
        # A second signal, not the first one delivered twice (those come within SIGNAL_REPEAT_S).
        time.sleep(max(0.0, first + SIGNAL_REPEAT_S - time.monotonic()))
        started = time.monotonic()
        # The scenario: the preemption deadline (from the first signal) is more than 10 s away: only the
        # second signal can end the uploader within the 10 s below.
        assert started + 10.0 < sent + DEFAULT_PREEMPTION_DEADLINE_S, started - sent
        os.kill(uploader, signal.SIGTERM)
        gone = _grace_then_kill([], [uploader], 10.0)
        assert not gone, "the second signal did not end the uploader"
        assert time.monotonic() - started < 10.0
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        hub.clear_faults()
    text = log.read_text()
    assert "bytes are not committed" in text and f"hf-mpwriter sync {logdir}" in text, text[-2000:]


def test_a_sync_that_gives_up_takes_its_handover_request_back(hub, tmp_path):
    """`sync --timeout` during a network black hole gives up; the uploader it asked to hand over is
    stuck in a call meanwhile. Once the call returns, that uploader must not honour the stale request
    (the writers are gone by then: nobody would send their logs): it carries on and lands everything,
    without anyone running `sync` again."""
    logdir = tmp_path / "logs"
    settings, env = _target("repo", hub, tmp_path)
    proc = _start_rank({"logdir": str(logdir), "rank": 0, **settings, "flush_secs": 0.2, "commit_every_s": 1,
                        "steps": 300, "close_timeout": 1}, env)
    try:
        read_line(proc, "logged 20", 60)
        uploader = wait_for(lambda: uploader_pid(logdir), 30, "the uploader")
        wait_for(lambda: hub.commit_count(REPO) >= 1, 30, "a first commit")
        hung = hub.inject("latency", route="any", times=None, seconds=10)
        wait_for(lambda: hung.hits > 0, 30, "the uploader to be stuck in a call")
        sync = subprocess.run(
            [sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet", "--timeout", "2"],
            env=writer_env({**env, "HF_TOKEN": TOKEN}), capture_output=True, text=True, timeout=60,
        )
        assert sync.returncode == 1, sync.stderr  # it gave up...
        assert not (logdir / ".hf_mpwriter" / "handover").exists()  # ...and took its request back
        hub.clear_faults()
        read_line(proc, "closed", 60)  # the writer closes (close_timeout 1 s) and exits: nobody waits
        assert proc.wait(30) == 0
        assert uploader_pid(logdir) == uploader  # the stuck uploader is still the one, still running
        wait_for(lambda: not psutil.pid_exists(uploader) or psutil.Process(uploader).status() == psutil.STATUS_ZOMBIE,
                 90, "the uploader to finish the job and exit")
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        hub.clear_faults()
    # It was the last uploader of the logdir (no sync ran after it), and it left everything committed
    # (had it handed over to the sync that gave up, its backlog would still wait on disk).
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    assert (last_uploader_info(logdir) or {}).get("pid") == uploader, log[-2000:]
    assert collect(logdir)["up_to_date"], log[-2000:]
    on_target = _steps_on_target(_remote("repo", hub, tmp_path), tmp_path)
    assert sorted(on_target[0]) == list(range(300)) and set(on_target[0].values()) == {1}


def test_a_framework_that_wraps_our_handler_keeps_control(tmp_path):
    """Lightning installs its SIGTERM handler after ours and calls the one it found from its own
    (training then stops gracefully, logger finalized). Called that way, our handler flushes and asks
    for a commit, but must not end the process by the default action: the framework decides."""
    from helpers import spawn

    proc = spawn(f"""
import signal, time
from hf_mpwriter import SummaryWriter
w = SummaryWriter({str(tmp_path / "logs")!r}, flush_secs=3600, max_queue=10**6)
for step in range(50):
    w.add_scalar("loss", float(step), step)
found = signal.getsignal(signal.SIGTERM)
received = []
def framework(signum, frame):  # what lightning's _HandlersCompose does with the handler it found
    received.append(signum)
    found(signum, frame)
signal.signal(signal.SIGTERM, framework)
print("ready", flush=True)
while not received:
    time.sleep(0.01)
print("graceful stop", flush=True)
w.close()
""")
    try:
        read_line(proc, "ready", 60)
        proc.send_signal(signal.SIGTERM)
        assert read_line(proc, "graceful stop", 30) == "graceful stop"
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    steps = [s for f in (tmp_path / "logs").rglob("*tfevents*") for s, _ in scalar_points(read_file_events(f), "loss")]
    assert sorted(steps) == list(range(50))


def _blocked_signals(native_id: int, process: bool = False) -> int:
    """The blocked-signal mask of one thread of this process (``SigBlk`` in its /proc status), or with
    ``process``, of the main thread of process ``native_id``."""
    status = Path(f"/proc/{native_id}/status" if process else f"/proc/self/task/{native_id}/status")
    for line in status.read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_our_threads_leave_sigterm_to_the_main_thread(tmp_path):
    """The kernel hands SIGTERM to any thread that does not block it. One of ours taking it while the
    main thread waits on a lock (a pool worker between tasks) would leave Python's handler unrun and the
    process alive: Pool.terminate() then waited for ever (seen in CI). Every thread hf_mpwriter starts
    in a training process blocks SIGTERM and SIGINT; the main thread does not."""
    from hf_mpwriter import HFSummaryWriter

    with HFSummaryWriter(repo_id=None, target_dir=str(tmp_path / "target"), logdir=str(tmp_path / "logs"),
                         uploader="none") as writer:
        writer.add_scalar("loss", 1.0, 0)
        ours = {t.name: t.native_id for t in threading.enumerate() if t.name.startswith("hf_mpwriter-")}
        assert {"hf_mpwriter-flusher", "hf_mpwriter-heartbeat"} <= set(ours), ours  # the scenario: both run
        terms = 1 << (signal.SIGTERM - 1) | 1 << (signal.SIGINT - 1)
        for name, native_id in ours.items():
            assert _blocked_signals(native_id) & terms == terms, name
        assert not _blocked_signals(threading.main_thread().native_id) & terms


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_an_uploader_the_heartbeat_thread_restarts_still_takes_sigterm(tmp_path):
    """A process inherits the signal mask of the thread that started it, and the writer's heartbeat
    thread (which starts a replacement uploader) blocks SIGTERM: such an uploader ignored preemption
    (seen in a multi-node test). The uploader unblocks its termination signals once it handles them."""
    from hf_mpwriter import HFSummaryWriter

    logdir = tmp_path / "logs"
    with HFSummaryWriter(repo_id=None, target_dir=str(tmp_path / "target"), logdir=str(logdir), commit_every=1,
                         close_timeout=30) as writer:
        writer.add_scalar("loss", 1.0, 0)
        first = wait_for(lambda: uploader_pid(logdir), 30, "the uploader")
        sigkill(first)
        second = wait_for(lambda: (uploader_pid(logdir) or first) != first and uploader_pid(logdir), 30,
                          "the heartbeat thread to start another uploader")
        wait_for(lambda: _published(logdir, second).get("next_cycle_at"), 30, "the new uploader to run its loop")
        # glibc blocks every signal for a moment while a thread creates another (pthread_create), so one
        # reading may catch that; the defect is a mask that keeps SIGTERM blocked for good.
        sigterm = 1 << (signal.SIGTERM - 1)
        wait_for(lambda: not _blocked_signals(second, process=True) & sigterm, 10,
                 "the restarted uploader to unblock SIGTERM in its main thread")
        os.kill(second, signal.SIGTERM)  # ... and acts on it: its last commit, then it exits
        wait_for(lambda: _published(logdir, second).get("signalled"), 30, "the uploader to take SIGTERM")



def test_sigterm_while_the_uploader_is_still_starting_gives_its_last_commit(hub, tmp_path, monkeypatch):
    """The uploader's first seconds: a multi-node job's uploader imports torch and asks the job's store
    (here a host that takes the connection and never answers: the whole store deadline) before its
    loop runs. A SIGTERM then still gets the last commit, not death with the backlog."""
    pytest.importorskip("torch.distributed", reason="the uploader asks the job's store through torch's client")

    from hf_mpwriter import HFSummaryWriter

    monkeypatch.setenv("GROUP_RANK", "1")  # node 1 of 2: the uploader looks for the job's store
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    env = writer_env(hub_env(hub, tmp_path))
    for name, value in env.items():
        if name.startswith("HF_"):
            monkeypatch.setenv(name, value)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(60)
    launcher = {"GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "job-1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(silent.getsockname()[1])}
    for name, value in launcher.items():  # what the writer reads, and saves for its uploader
        monkeypatch.setenv(name, value)
    logdir = tmp_path / "logs"
    with HFSummaryWriter(REPO, logdir=str(logdir), uploader="none", token=TOKEN, rank=0) as writer:
        for step in range(50):
            writer.add_scalar("loss", float(step), step)
    env.update({"HF_TOKEN": TOKEN, **launcher})
    proc = subprocess.Popen([sys.executable, "-m", "hf_mpwriter.uploader", str(logdir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = silent.accept()  # the scenario: the uploader is inside its start, asking the store
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(GRACE_S)
        took = time.monotonic() - sent
        conn.close()
    finally:
        silent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    assert code == 0, (code, proc.stderr.read() if proc.stderr else "", log[-2000:])
    assert _published(logdir, proc.pid).get("signalled"), log[-2000:]  # its loop took the signal (its last commit)
    assert took < 20.0 + 5.0, took  # within the default preemption deadline (and its last call's bound)
    into = materialise(_remote("repo", hub, tmp_path), tmp_path / "remote")
    steps = sorted(s for f in into.rglob("*tfevents*") for s, _ in scalar_points(read_file_events(f), "loss"))
    assert steps == list(range(50)), steps
# -- a node of a multi-node job, preempted while it waits on the job's leader ------------------------
#: The preemption deadline of these tests (seconds after SIGTERM), short: what must land, lands before it.
JOB_DEADLINE_S = 4.0


class _Relay:
    """A TCP relay in front of the job's store that can go silent as a black-holed host does: it goes on
    accepting and holding connections, and forwards nothing either way (no refusal, no reset)."""

    def __init__(self, upstream: int) -> None:
        self.upstream, self.silent, self.swallowed = upstream, threading.Event(), 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:  # the accept timeout, or closed
                continue
            self._sockets.append(client)
            upstream = None if self.silent.is_set() else socket.create_connection(("127.0.0.1", self.upstream))
            if upstream is not None:
                self._sockets.append(upstream)
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while data := src.recv(65536):
                if dst is None or self.silent.is_set():
                    self.swallowed += len(data)
                else:
                    dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._closed.set()
        for sock in [self._server, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def job_store():
    """The job's store: a real TCPStore server on a free port, as a job's rank 0 or torchrun's agent hosts it."""
    from datetime import timedelta

    TCPStore = pytest.importorskip("torch.distributed").TCPStore
    server = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    yield server
    del server


def _answered(store, prefix: str, seq: int) -> bool:
    """Whether the leader answered node 0's offer ``seq`` or a later one of node 0's (a node's answer key exists from its
    start, empty)."""
    import json

    return store.check([prefix + "answer/0"]) and json.loads(store.get(prefix + "answer/0") or b"{}").get("seq", -1) >= seq


def _pending_offer(store, prefix: str, logdir: Path) -> dict | None:
    """Node 0's offer in the job's store, if it is there, unanswered, and holds every record its rank
    wrote (the sizes of its event files on disk)."""
    import json

    from hf_mpwriter.uploader.coordination.protocol import WITHDRAWN

    if not store.check([prefix + "offer/0"]):
        return None
    raw = store.get(prefix + "offer/0")
    if raw == WITHDRAWN:
        return None
    offer = json.loads(raw)
    if _answered(store, prefix, offer["seq"]):
        return None
    sizes = {f"{PREFIX}/{p.relative_to(logdir).as_posix()}": p.stat().st_size for p in logdir.rglob("*tfevents*")
             if ".hf_mpwriter" not in p.parts}
    return offer if {path: size for path, _, size, _ in offer["files"]} == sizes else None


class _Node0:
    """Node 0 of a 2-node job, as real processes: its rank (steps 0-59 on disk, 20 more once ``more`` exists) and
    its uploader, meeting node 1 (an in-process :class:`Leader` the test makes) in the job's store, reached
    through ``relay``; ``prefix``: its keys there."""

    def __init__(self, logdir: Path, env: dict, relay: _Relay, more: Path, rank: subprocess.Popen) -> None:
        self.logdir, self.env, self.relay, self.more, self.rank = logdir, env, relay, more, rank
        self.uploader: subprocess.Popen | None = None
        self.leader = None
        self.address = None
        self.prefix = ""

    def start_uploader(self) -> subprocess.Popen:
        """As the rank's writer would start it, in the job's environment."""
        self.uploader = subprocess.Popen([sys.executable, "-m", "hf_mpwriter.uploader", str(self.logdir)],
                                         env=writer_env({**self.env, "HF_TOKEN": TOKEN}),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self.uploader

    def signal(self, grace: float = JOB_DEADLINE_S) -> list[int]:
        """SIGTERM to the rank and the uploader; SIGKILL to those still running ``grace`` s later: their pids."""
        assert self.uploader is not None
        signalled = time.monotonic()
        self.rank.send_signal(signal.SIGTERM)
        os.kill(self.uploader.pid, signal.SIGTERM)
        return _grace_then_kill([self.rank, self.uploader], [], signalled + grace - time.monotonic())


@contextmanager
def _node_0_of_two(hub, tmp_path: Path, job_store, run_id: str, kind: str = "repo") -> Iterator[_Node0]:
    """:class:`_Node0` logging to ``kind`` (``repo``, ``bucket``), once its rank flushed steps 0-59; at the end every
    process of it killed, node 1's leader stopped and the relay closed."""
    from hf_mpwriter.config import load
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.coordination.member import store_prefix
    from hf_mpwriter.uploader.coordination.store import StoreAddress

    if kind == "repo":
        hub.create_repo(REPO)
    logdir, more, relay = tmp_path / "logs", tmp_path / "more", _Relay(job_store.port)
    settings, env = _target(kind, hub, tmp_path)
    env = {**env, "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "2", "HF_MPWRITER_PREEMPTION_DEADLINE": str(JOB_DEADLINE_S),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(relay.port), "TORCHELASTIC_RUN_ID": run_id}
    rank = _start_rank({"logdir": str(logdir), "rank": 0, **settings, "uploader": "none", "steps": 60,
                        "flush_every": 10, "commit_every_s": 1, "close_after": str(tmp_path / "never"),
                        "more_after": str(more), "more_steps": 20}, env)
    node = _Node0(logdir, env, relay, more, rank)
    try:
        read_line(rank, "flushed 59", 60)  # every record on disk; the rank lives on, as a training does
        node.address = StoreAddress("127.0.0.1", job_store.port, f"torchrun-{run_id}")
        node.prefix = store_prefix(node.address, target_for(load(logdir), TOKEN).key) + "/"
        yield node
    finally:
        for proc in (rank, node.uploader):
            if proc is not None:
                proc.kill()
                proc.communicate(timeout=10)
        if node.leader is not None:
            node.leader.stop()
        relay.close()


@pytest.mark.parametrize("store_is", ["answering", "black-holed"])
def test_a_node_preempted_while_waiting_on_a_leader_that_never_answers_commits_itself_in_time(hub, tmp_path, job_store,
                                                                                               store_is):
    """Node 0 of a 2-node job offers its rank's records to the job's leader, node 1, which holds
    the lease but never commits (its Hub is out of reach); the job's store answers, or its host goes
    silent (black-holed: connections held, nothing answered). The rank writes more records, then
    SIGTERM to the node's rank and uploader while the uploader waits: the node commits its records
    itself before its deadline (its wait for the leader, and for the store, end in time), then the node
    and its disk are gone. One commit carries them all, its newest files, whether its offer was taken
    back or not (the store silent: a leader that claimed it fixed its parent before, and is refused)."""
    from hf_mpwriter.uploader.coordination.member import Leader
    from hf_mpwriter.uploader.coordination.protocol import WITHDRAWN
    from hf_mpwriter.uploader.coordination.store import JobStore

    with _node_0_of_two(hub, tmp_path, job_store, "job-preempted") as node:
        logdir, prefix, rank, relay = node.logdir, node.prefix, node.rank, node.relay
        out_of_reach = HubTarget(REPO, prefix=PREFIX, token=TOKEN, endpoint=f"http://127.0.0.1:{closed_port()}")
        node.leader = leader = Leader(out_of_reach, JobStore(node.address, prefix), node=1, nodes=2, spacing=0.5)
        leader.start()
        wait_for(lambda: leader.leading, 20, "node 1 to lead")
        uploader = node.start_uploader()
        offer = wait_for(lambda: _pending_offer(job_store, prefix, logdir), 60, "node 0 to offer all its records")
        node.more.touch()
        read_line(rank, "flushed 79", 20)  # records its offer does not hold
        published = _published(logdir, uploader.pid).get("job") or {}  # how its commits go, as status shows it
        if store_is == "black-holed":
            relay.silent.set()
            wait_for(lambda: relay.swallowed > 0, 10, "node 0's store calls to go unanswered")
        killed = node.signal()
        taken_back = job_store.get(prefix + "offer/0") == WITHDRAWN
        answered = _answered(job_store, prefix, offer["seq"])
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    last = _published(logdir, uploader.pid)  # what node 0's uploader published as it exited
    shutil.rmtree(logdir)  # the node's local disk does not survive preemption
    # The scenario: node 0 waited on the leader with all its records offered when the signal came (its
    # uploader took it), and the leader, node 1 all along, never answered nor committed; node 0 never led.
    assert offer["files"] and published.get("mode") == "job", (published, log[-3000:])
    assert last.get("signalled") and last["job"]["leases"] == 0, (killed, last, log[-3000:])
    assert not answered and leader.commits == 0 and leader.leases == 1, (leader.commits, leader.leases)
    assert last["job"]["through_leader"] == 0 and last["job"]["leader_commits"] == 0, last["job"]
    on_target = _steps_on_target(_remote("repo", hub, tmp_path), tmp_path)
    missing = sorted(set(range(80)) - set(on_target.get(0, {})))
    assert not missing, f"{len(missing)} of 80 records not on the target by the deadline; uploader log:\n{log[-3000:]}"
    assert set(on_target[0].values()) == {1}
    which = ["the rank" if pid == rank.pid else "the uploader" for pid in killed]
    assert not killed, f"still running at the deadline: {which}; uploader log:\n{log[-3000:]}"  # it exited by itself
    # The path taken: the node committed itself...
    if store_is == "answering":  # ...the wait for the leader cut short, the offer taken back: its newest files, once
        assert taken_back and last["job"]["taken_back"] >= 1, (last["job"], log[-3000:])
        assert last["job"]["own_commits"] == 1, (last["job"], log[-3000:])
    else:  # ...the store silent: the offer still there, its newest files committed anyway (the deadline came first), once
        assert not taken_back and last["job"]["taken_back"] == 0, (last["job"], log[-3000:])
        assert last["job"]["own_commits"] == 1, (last["job"], log[-3000:])


#: How long the leader gathers before it commits: node 0 commits itself and exits ~2 s after the leader saw its offer.
GATHER_S = 8.0


@pytest.mark.parametrize("kind", ["repo", "bucket"])
def test_a_leader_never_commits_the_offer_of_a_node_that_committed_newer_files_itself_cut_off_and_preempted(
        hub, tmp_path, job_store, kind):
    """Node 0 offers its rank's records (steps 0-59) to the leader, node 1, which gathers for the other node's
    offer before it commits. Meanwhile node 0 is cut off from the job's store (black-holed, only node 0: the
    leader sees no gap), its rank logs steps 60-79, and SIGTERM: its offer cannot be taken back and its deadline
    comes first, so node 0 commits its newest files itself and exits; its disk is gone. When the leader's
    gathering ends, the old offer is still in the store, unanswered: committed, the file would go back to step 59.
    Every commit the Hub applied keeps steps 0-79 once there (a bucket: every batch applied since node 0's own
    write holds no shorter version of its file, and the bucket holds steps 0-79 at the end)."""
    from hf_mpwriter.timing import JobTiming
    from hf_mpwriter.uploader.coordination.member import Leader
    from hf_mpwriter.uploader.coordination.store import JobStore

    leader_log = tmp_path / "leader.log"  # (the leader runs here: its log, should its round not end)
    with _node_0_of_two(hub, tmp_path, job_store, "job-cut-off", kind) as node, _logged_to(leader_log):
        logdir, prefix, relay = node.logdir, node.prefix, node.relay
        target = (HubTarget(REPO, prefix=PREFIX, token=TOKEN, endpoint=hub.endpoint, shared_branch=True) if kind == "repo"
                  else BucketTarget(BUCKET, prefix=PREFIX, token=TOKEN, endpoint=hub.endpoint))
        node.leader = leader = Leader(target, JobStore(node.address, prefix), node=1, nodes=2, spacing=0.5,
                                      timing=JobTiming(gather=GATHER_S))
        leader.start()
        wait_for(lambda: leader.leading, 20, "node 1 to lead")
        node.start_uploader()
        offer = wait_for(lambda: _pending_offer(job_store, prefix, logdir), 60, "node 0 to offer all its records")
        # (an offer is two calls, the offer and the ``offered`` counter the leader polls: cut off between them, node 0's
        # offer would stay unseen, and the leader would have nothing to gather)
        wait_for(lambda: (0, offer["seq"]) in leader._first_seen, 20, "the leader to see node 0's offer")
        relay.silent.set()
        node.more.touch()
        read_line(node.rank, "flushed 79", 20)
        wait_for(lambda: relay.swallowed > 0, 10, "node 0's store calls to go unanswered")
        killed = node.signal(JOB_DEADLINE_S + 1)
        node_commits = len(_writes(kind, hub))  # (the initial commit and node 0's own, once it exited)
        gathering = time.monotonic() - leader._first_seen.get((0, offer["seq"]), -1e9) < GATHER_S
        try:
            answered = wait_for(lambda: _answered(job_store, prefix, offer["seq"]) or leader.commits, 40,
                                "the leader's round to end with node 0's offer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the leader's log:\n{leader_log.read_text()[-4000:]}") from None
    log = (logdir / ".hf_mpwriter" / "uploader.log").read_text()
    shutil.rmtree(logdir)
    # The scenario: node 0 committed itself by its deadline, while the leader still held its offer, unanswered.
    assert not killed and gathering and answered and node_commits >= (2 if kind == "repo" else 1), \
        (killed, gathering, node_commits, log[-3000:])
    if kind == "bucket":
        batches = _writes(kind, hub)
        own = batches[node_commits - 1]["sizes"]  # node 0's own write, its last before it exited
        for batch in batches[node_commits - 1:]:
            assert all(batch["sizes"][path] >= size for path, size in own.items() if path in batch["sizes"]), (own, batch)
        steps = sorted(_steps_on_target(_remote(kind, hub, tmp_path), tmp_path)[0].elements())
        assert steps == list(range(80)), f"the bucket holds steps {steps[:1]}-{steps[-1:]}"
        return
    history = hub.commits(REPO)  # newest first
    assert len(history) >= node_commits
    for commit in history[:len(history) - node_commits + 1]:  # node 0's own commit and every commit the Hub applied since
        steps = _rank0_steps_at(hub, tmp_path, commit["id"])
        assert steps == list(range(80)), f"commit {commit['id'][:8]} ({commit['summary']}): steps {steps[:1]}-{steps[-1:]}"


def _writes(kind: str, hub) -> list:
    """Every commit the Hub applied to the repository, newest first; every batch it applied to the bucket, oldest
    first."""
    return hub.commits(REPO) if kind == "repo" else hub.bucket_batches(BUCKET)


@contextmanager
def _logged_to(path: Path) -> Iterator[None]:
    """The package's log records of this process, at INFO and above, written to ``path`` meanwhile."""
    handler, package = logging.FileHandler(path), logging.getLogger("hf_mpwriter")
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(levelname)s %(message)s"))
    level, package.level = package.level, logging.INFO
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()


def _rank0_steps_at(hub, tmp_path: Path, revision: str) -> list[int]:
    """Rank 0's logged steps in the repository at ``revision``, read through the real client."""
    api = HubTarget(REPO, prefix=PREFIX, token=TOKEN, endpoint=hub.endpoint).api
    into = tmp_path / "at" / revision
    steps: list[int] = []
    for path in api.list_repo_files(REPO, revision=revision):
        if path.startswith(f"{PREFIX}/rank-000/") and "tfevents" in path:
            local = api.hf_hub_download(REPO, path, revision=revision, local_dir=into)
            steps += [s for s, _ in scalar_points(read_file_events(Path(local)), "loss")]
    return sorted(steps)
