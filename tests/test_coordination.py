"""The coordination package's contracts, each on real parts: one store connection shared by its views,
identity from the store, a protocol that skips what it cannot parse, launcher facts that reach the
uploader through the logdir's settings, and one commit rate on a single node.

Each test shows the defect's scenario happened (the abandoned call, the replacement whose clock runs
behind, the malformed offer in the store, the uploader's environment without the launcher's variables,
the commits the writers asked for) before it checks the outcome."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import time

import psutil
import pytest
from helpers import closed_port, read_file_events, scalar_points
from test_job_commit import REPO, _commit_together, _leading, _log_commits, _node, _pieces
from upload_helpers import (
    TOKEN,
    check_remote,
    commit_time,
    every_applied_commit_is_whole_and_only_grows,
    finish,
    hub_env,
    local_event_files,
    read_line,
    sigkill,
    start_writer,
    wait_for,
)

from hf_mpwriter.config import UploadConfig, commit_interval, load
from hf_mpwriter.state.election import uploader_info
from hf_mpwriter.timing import HUB_COMMIT_SPACING_S
from hf_mpwriter.uploader.coordination.factory import for_job
from hf_mpwriter.uploader.coordination.member import JobTarget
from hf_mpwriter.uploader.coordination.pacing import pacing
from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress, StoreError

dist = pytest.importorskip("torch.distributed")

#: torchrun's variables as a rank of node 1000 of a 1,024-node job of 8 ranks a node sees them.
TORCHRUN = {"RANK": "8003", "LOCAL_RANK": "3", "WORLD_SIZE": "8192", "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": "1000",
            "GROUP_WORLD_SIZE": "1024", "TORCHELASTIC_RUN_ID": "big", "MASTER_ADDR": "127.0.0.1"}


@pytest.fixture(autouse=True)
def _endpoint(hub_is_this_process_hub):
    """The test Hub as the process's Hub (conftest.py's ``hub_is_this_process_hub``)."""


def test_views_share_one_connection_an_abandoned_call_and_a_deadline(store_process):
    """A call abandoned on one view (its store host frozen) drops the connection for every view: once the
    host runs again, each view's next call gets its own value on a fresh client, not the answer the
    abandoned call still waits for. A preemption deadline given to one reaches every view."""
    proc, port = store_process
    job = JobStore(StoreAddress("127.0.0.1", port, "job"), "a", deadline=1.0)
    view = job.scoped("b")
    job.set("k", b"A")
    view.set("k", b"B")
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, 10, "the store's host to be stopped")
    with pytest.raises(StoreError):
        view.get("k")
    assert job.hanging == view.hanging == 1  # the scenario: one call abandoned, seen from both
    os.kill(proc.pid, signal.SIGCONT)
    assert job.get("k") == b"A" and view.get("k") == b"B"
    now = time.monotonic()
    assert view.until(now, 100.0) == now + 100.0
    job.hurry(now + 3.0)
    assert view.until(now, 100.0) == pytest.approx(now + 1.0)  # a third of what is left before the deadline
    # A successor store probed while signalled (a node moving on as the job is preempted): its calls hurry too.
    assert job.elsewhere(StoreAddress("127.0.0.1", port, "job")).until(now, 100.0) == pytest.approx(now + 1.0)


def test_a_replacement_whose_clock_runs_behind_is_heard(hub, tmp_path, monkeypatch):
    """Node 1's uploader is replaced by one whose wall clock reads an hour earlier: the store numbers
    them, so the replacement's offer is committed by the leader like its predecessor's."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    hub.create_repo(REPO)
    first = [_node(hub, server.port, 0), _node(hub, server.port, 1)]
    with _leading(first) as leader:
        assert leader.node == 0 or pytest.skip("node 1 took the lease first: the replacement would lead itself")
        _commit_together(first, [_pieces(tmp_path, 0, 1000), _pieces(tmp_path, 1, 1000)])
        predecessor = first[1].incarnation
        first[1].stop()
        behind = time.time_ns() - 3600 * 10**9
        monkeypatch.setattr(time, "time_ns", lambda: behind)
        replacement = _node(hub, server.port, 1)
        replacement.start()
        try:
            commit = replacement.commit(_pieces(tmp_path, 1, 3000), "node commit")
        finally:
            replacement.stop()
    assert replacement.incarnation > predecessor  # the scenario: a newer uploader, an older clock
    assert replacement.mode == "job"  # the leader's commit, not the node's own
    newest = _log_commits(hub)[0]  # (newest first)
    assert commit == newest["oid"] and newest["summary"] != "node commit"


def test_a_malformed_offer_is_skipped_and_counted_and_the_others_land(hub, tmp_path):
    """Node 2's offer in the store lacks its files (another version, a bug): the leader skips it, counts it,
    and commits nodes 0 and 1 in the same round, as if node 2 had not offered."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    hub.create_repo(REPO)
    nodes = [_node(hub, server.port, k, nodes=3) for k in range(2)]
    third = _node(hub, server.port, 2, nodes=3)
    third._announce()  # its keys exist, as a member's (before the leader starts: its first read of the members has it)
    third.store.set("offer/2", b'{"seq": 99, "incarnation": 9}')
    third.store.add("offered", 1)
    with _leading(nodes) as leader:
        results = _commit_together(nodes, [_pieces(tmp_path, 0, 1000), _pieces(tmp_path, 1, 1000)])
        # (either node's: on a loaded machine the lease may change hands once between the two)
        skipped = sum(node.leader.malformed.total for node in nodes)
        counted = max(node.job_info()["malformed"] for node in nodes)
    assert leader in nodes and skipped >= 1 and counted >= 1  # the scenario: the leader met it
    commits = _log_commits(hub)
    assert results[0] == results[1] == commits[0]["oid"] and len(commits) == 1  # one commit of both, the leader's
    assert all(node.mode == "job" for node in nodes)


def test_the_uploader_plans_for_the_ranks_its_launcher_started(hub, tmp_path, monkeypatch):
    """A writer under torchrun (8 ranks a node, 1,024 nodes) saves what its launcher says; the uploader,
    spawned without the launcher's variables, plans for 8 files a node: 125 nodes a commit, 9 groups."""
    from hf_mpwriter import HFSummaryWriter

    port = closed_port()  # the job's store, not up yet: the plan is the node's own
    for name, value in {**TORCHRUN, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(REPO, logdir=str(logdir), uploader="none", token=TOKEN)
    writer.close()
    config = load(logdir)
    assert config is not None and (config.ranks_per_node, config.nodes, config.node_rank) == (8, 1024, 1000)
    for name in (*TORCHRUN, "MASTER_PORT"):  # the uploader's environment: none of the launcher's facts
        monkeypatch.delenv(name)
    from hf_mpwriter.targets import target_for

    node = for_job(config, target_for(config, TOKEN), TOKEN, call_bound=60)
    assert isinstance(node, JobTarget) and node.store.address.port == port
    plan = node.plan_now(node.files_hint)
    assert (node.files_hint, plan.per_commit, plan.groups) == (8, 123, 9)  # (1,000 files: 125 nodes, less the leader's room)
    interval, phase = pacing(node.situation(config))[:2]
    assert phase > 0 and interval > config.commit_every  # node 1000 starts in a later group, not with all


def test_commits_per_hour_caps_a_single_node(hub, tmp_path):
    """``HF_MPWRITER_COMMITS_PER_HOUR=20``, one node of 2 ranks, ``commit_every`` 5 s, each rank calling
    ``writer.scheduler.trigger()`` every second: the ranks log for 20 s (4 intervals), and the target gets
    at most one commit before their close (20 an hour: 180 s apart; issue 52 D5: the triggers made a commit
    every commit_every, 5 s, whatever the rate), then their last records at close; every record lands."""
    config = dataclasses.replace(UploadConfig.for_hub(REPO, prefix="tb", commit_every=5), commits_per_hour=20)
    assert commit_interval(config) == 180.0
    assert commit_interval(dataclasses.replace(config, commits_per_hour=None, endpoint="https://huggingface.co")) == \
        HUB_COMMIT_SPACING_S  # nothing set: the Hub's rate
    env = {**hub_env(hub, tmp_path), "HF_MPWRITER_COMMITS_PER_HOUR": "20"}
    logdir = tmp_path / "logs"
    cfg = {"logdir": str(logdir), "repo_id": REPO, "commit_every_s": 5.0, "steps": 200, "sleep": 0.1, "close_timeout": 90,
           "trigger_every": 10}
    started = time.time()
    procs = [start_writer({**cfg, "rank": r}, env) for r in range(2)]
    first_close = min(float(read_line(proc, "closing").split()[1]) for proc in procs)  # (each printed when it began)
    for proc in procs:
        finish(proc)
    times = [commit_time(c) for c in _log_commits_all(hub)]
    assert first_close - started >= 20, first_close - started  # the scenario: 4 intervals, a trigger every second
    before_close = [t for t in times if t < first_close]
    assert len(before_close) <= 1 and len(times) <= 3, (times, started, first_close)
    check_remote(logdir, _remote(hub), {r: range(200) for r in range(2)}, tmp_path / "remote")


def _log_commits_all(hub) -> list[dict]:
    return [c for c in hub.commits(REPO) if c["summary"].startswith("Upload TensorBoard logs")]


def _remote(hub) -> dict[str, bytes]:
    prefix = "tensorboard/logs/"
    return {p[len(prefix):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(prefix)}


def test_with_the_jobs_store_killed_real_nodes_go_on_through_a_successor_store(hub, tmp_path, store_process):
    """Three nodes of one rank each, as real processes: a writer per node (node-local logdirs) and its
    uploader, meeting in a job's store that a process of its own serves (as torchrun's agent does); node 1's
    uploader hosts the successor store. SIGKILL the store's process: every node's uploader
    moves to a successor store, where one leader commits the files of all three nodes together, and no node
    commits its files itself. Then the job ends (the writers close): every record of every rank is at the
    Hub exactly once, and every commit the Hub applied is whole."""
    proc, port = store_process
    hub.create_repo(REPO)
    env = {**hub_env(hub, tmp_path), "HF_MPWRITER_COMMITS_PER_HOUR": "1800", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": "successor-job", "GROUP_WORLD_SIZE": "3",
           "WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    logdirs = [tmp_path / f"node-{k}" / "logs" for k in range(3)]  # node-local: the same name on every node
    until, close = tmp_path / "until", tmp_path / "close"
    cfg = {"repo_id": REPO, "commit_every_s": 2.0, "sleep": 0.05, "until": str(until), "close_after": str(close),
           "close_timeout": 120}
    writers = [start_writer({**cfg, "logdir": str(logdirs[k]), "rank": k}, {**env, "GROUP_RANK": str(k), "RANK": str(k)})
               for k in range(3)]
    try:
        wait_for(lambda: all(_job(d).get("successors") == 1 for d in logdirs), 120,
                 "every node to know the successor store")  # (its host copies every 10 s; answers list it)
        assert [_job(d).get("hosts_successor") for d in logdirs] == [None, 1, None]
        own = [_job(d)["own_commits"] for d in logdirs]
        killed_at = time.time()
        sigkill(proc.pid)  # the job's store dies with its host process
        wait_for(lambda: all(_job(d).get("moves", 0) >= 1 for d in logdirs), 90, "every node to move to a successor")
        commits = len(hub.commits(REPO))  # (counted once every node moved: none of these is the old leader's)

        def joint_since() -> bool:
            log = hub.commits(REPO)
            return any(re.search(r"from [23] node\(s\)", c["summary"]) for c in log[:len(log) - commits])

        wait_for(joint_since, 120, "a leader's commit of several nodes' files through the successor store")
        assert len({_job(d)["store"] for d in logdirs}) == 1 and _job(logdirs[0])["store"] != f"127.0.0.1:{port}"
        assert [_job(d)["own_commits"] for d in logdirs] == own  # through the successor's leader, none itself
        # The scenario: each rank logs on past the kill (under load, the nodes may have moved before it, and the
        # joint commit come at once), so records made after it go through the successor too.
        wait_for(lambda: all(_logged_after(d, killed_at + 1) for d in logdirs), 60, "every rank to log after the kill")
        until.touch()
        close.touch()
        for writer in writers:
            finish(writer, 180)
    finally:
        for writer in writers:
            writer.kill()
            writer.communicate(timeout=30)
    every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)
    remote = _remote(hub)
    for k, logdir in enumerate(logdirs):  # after close, each rank's file is on the Hub byte for byte
        local = {rel: data for rel, data in local_event_files(logdir).items() if rel.startswith(f"rank-{k:03d}/")}
        mine = {rel: data for rel, data in remote.items() if rel.startswith(f"rank-{k:03d}/")}
        assert local and set(mine) == set(local) and all(mine[rel] == local[rel] for rel in local), k
        steps = sorted(step for path in logdir.glob("rank-*/*tfevents*")
                       for step, _ in scalar_points(read_file_events(path), "loss"))
        assert steps == list(range(len(steps))), steps[-3:]


def _logged_after(logdir, moment: float) -> bool:
    """Whether ``logdir``'s ranks logged a value after ``moment`` (wall clock), as far as their files hold yet."""
    return any(e.wall_time > moment for path in logdir.glob("rank-*/*tfevents*") for e in read_file_events(path)
               if e.HasField("summary"))


def _job(logdir) -> dict:
    """How the commits of ``logdir``'s running uploader go, as it publishes them for ``status`` ({} if none runs)."""
    return (uploader_info(logdir) or {}).get("job") or {}
