"""Multi-node jobs on one machine, for real: each node is a group of processes in its own UTS
namespace (``unshare --uts`` + ``hostname node-k``), started by ``torchrun --nnodes 2`` with a c10d
rendezvous on 127.0.0.1 (gloo, CPU), one rank crashing once and the job restarting.

Node-local logdirs: one uploader per node, one repository, each node at its own slot (no store); one
leader for the job through torchrun's agent store (2 nodes through a SIGKILL, the store host's death
and preemption; 4 nodes to a repository and to a bucket, about one commit per interval). A logdir
shared by every node: one uploader for the whole job; when its node dies, another node's writers
take over. Every rank's records must be on the target exactly once, read back through the real client.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import accumulator, read_file_events, read_run_events, scalar_points, scalars
from proc_writer import weights
from test_job_view import _assert_equal, _assert_histogram, _job_points, _recomputed
from upload_helpers import (
    commit_time,
    committed_and_checked,
    every_applied_commit_is_whole_and_only_grows,
    local_event_files,
    local_target_files,
    read_line,
    wait_for,
    writer_argv,
    writer_env,
)

from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.election import last_uploader_info, uploader_info
from hf_mpwriter.targets.bucket import BucketTarget, batch_takes_xet_hashes
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.testing import HubServer

REPO = "tester/multinode"
TOKEN = "hf_goodTokenForTests0123456789"
STEPS = 40

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="simulated nodes need root and unshare (UTS namespaces)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _in_node(k: int, argv: list[str]) -> list[str]:
    """``argv`` run as node ``k``: its own host name, so its processes see another host."""
    return ["unshare", "--uts", "sh", "-c", f'hostname node-{k} && exec "$@"', "node", *argv]


def _torchrun_argv(port: int, logdir: Path, target: dict, steps: int = STEPS, commit_every: float = 1,
                   step_time: float = 0.05, crash: bool = False) -> list[str]:
    """One node of a 2-node x 2-rank torchrun job (c10d rendezvous on ``port``); the ranks are
    ``proc_writer.py`` (``--no-python``, no torch: a DDP rank costs ~6 s of CPU, mostly imports, and the
    example script under torchrun is test_launchers.py's). ``crash``: rank 3 fails once at step 23, and
    torchrun restarts every rank of both nodes from step 20 with ``purge_step``, as the example does."""
    cfg = {"logdir": str(logdir), **target, "steps": steps, "commit_every_s": commit_every, "sleep": step_time,
           **({"crash_rank": 3, "crash_at": 23, "crash_marker": str(logdir.parent.parent / "crashed")} if crash else {})}
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "multinode-test",
            "--max-restarts", "1", "--monitor-interval", "0.5", "--local-addr", "127.0.0.1", "--no-python",
            *writer_argv(cfg)]


def _torchrun_node(k: int, port: int, logdir: Path, target: dict, env: dict) -> subprocess.Popen:
    argv = _torchrun_argv(port, logdir, target, crash=True)
    return subprocess.Popen(_in_node(k, argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _job_env(extra: dict | None = None) -> dict:
    env = writer_env(extra)
    env.update({"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
    return env


def _run_job(tmp_path: Path, logdirs: list[Path], target: dict, env: dict) -> str:
    port = _free_port()
    nodes = [_torchrun_node(k, port, logdirs[k], target, env) for k in range(2)]
    outputs = []
    for node in nodes:
        out, _ = node.communicate(timeout=240)
        outputs.append(out)
        assert node.returncode == 0, "\n".join(outputs)
    joined = "\n".join(outputs)
    assert "simulated failure of rank 3" in joined and "attempt 1:" in joined, joined[-3000:]
    return joined


def _check_exactly_once(files: dict[str, bytes], tmp_path: Path) -> None:
    """Every global rank's run holds each step once (after TensorBoard's purge of the failed attempt)."""
    copy = tmp_path / "remote-copy"
    per_rank: dict[int, Counter] = {}
    for rel, data in files.items():
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    for rank in range(4):
        run = copy / f"rank-{rank:03d}"
        assert run.is_dir(), f"no run directory for rank {rank}: {sorted(files)}"
        steps = [s for s, _ in scalars(run, "loss")]
        assert steps == list(range(STEPS)), f"rank {rank}: {steps}"
        # Raw records: steps after the resume point appear once per attempt at most, never twice
        # within one attempt's files (the purge hides the failed attempt's).
        raw = Counter()
        for path in run.glob("*tfevents*"):
            raw.update(s for s, _ in scalar_points(read_file_events(path), "loss"))
        per_rank[rank] = raw
        assert max(raw.values()) <= 2, f"rank {rank}: a step was uploaded more than twice"


def test_node_local_logdirs_without_a_store_commit_to_one_repository_at_their_own_slots(tmp_path):
    with HubServer(tokens={TOKEN}) as hub:
        hub.create_repo(REPO)
        # The test Hub's hour compressed: the logs get 1,800 commits an hour (2 s apart, not huggingface.co's ~28 s).
        env = _job_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN,
                        "HF_MPWRITER_COMMITS_PER_HOUR": "1800", "HF_MPWRITER_JOB_STORE": "0"})
        logdirs = [tmp_path / f"node-{k}" / "logs" for k in range(2)]
        _run_job(tmp_path, logdirs, {"repo_id": REPO}, env)
        for logdir in logdirs:
            wait_for(lambda logdir=logdir: collect(logdir)["up_to_date"], 60, f"{logdir} to be committed")
        remote = _read_back(hub)
        _check_exactly_once(remote, tmp_path)
        assert not [p for p in remote if p.startswith("job/")]  # no node saw every rank: no job run
        # Each node paced itself at its own slot of the job's budget, its commits 2 s apart at the closest.
        configs = [json.loads((d / ".hf_mpwriter" / "config.json").read_text()) for d in logdirs]
        assert sorted((c["nodes"], c["node_rank"]) for c in configs) == [(2, 0), (2, 1)], configs
        assert all(c["min_interval"] == 2 for c in configs), configs


def _read_back(hub: HubServer, prefix: str = "tensorboard/logs") -> dict[str, bytes]:
    """Every event file of the repository under ``prefix``, read through the real client (downloads), as a user would."""
    target = HubTarget(REPO, prefix=prefix, token=TOKEN, endpoint=hub.endpoint)
    paths = [p for p in hub.list_files(REPO) if p.startswith(prefix + "/") and "tfevents" in p]
    return {p[len(prefix) + 1:]: target.read(p[len(prefix) + 1:]) for p in paths}


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _points(files: dict[str, bytes], rank: int, tmp: Path, tag: str = "loss") -> Counter:
    """``(step, value)`` of every ``tag`` record of ``rank`` in ``files`` (relative path -> bytes)."""
    points: Counter = Counter()
    for rel, data in files.items():
        if rel.startswith(f"rank-{rank:03d}/"):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            points.update(scalar_points(read_file_events(path), tag))
    return points


def _log(logdir: Path) -> str:
    path = logdir / ".hf_mpwriter" / "uploader.log"
    return path.read_text() if path.exists() else ""


def _job(logdir: Path) -> dict:
    """How the commits of ``logdir``'s running uploader go, as it publishes them for ``status`` ({} if none runs)."""
    return (uploader_info(logdir) or {}).get("job") or {}


def _leading(logdirs: list[Path]) -> set[int]:
    """Pids of the running uploaders that publish that they lead the job (hold its lease)."""
    return {info["pid"] for d in logdirs if (info := uploader_info(d)) and (info.get("job") or {}).get("leading")}


def _start_leader_job(hub: HubServer, tmp_path: Path) -> tuple[list[Path], list[subprocess.Popen]]:
    """A 2-node x 2-rank torchrun job logging to ``REPO`` for minutes, node-local logdirs; its nodes'
    uploaders meet in torchrun's agent store (one leader commits for both)."""
    hub.create_repo(REPO)
    # The Hub's hour compressed (a commit per 2 s), and the logger given all of it (1,800 an hour): at the
    # default quarter the plan would space this job's commits 9 s apart, not its commit_every of 2 s.
    env = writer_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN,
                      "HF_MPWRITER_COMMITS_PER_HOUR": "1800",
                      "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
    logdirs = [tmp_path / f"node-{k}" / "logs" for k in range(2)]
    port = _free_port()
    argv = [_torchrun_argv(port, logdirs[k], {"repo_id": REPO}, steps=3000, commit_every=2)
            for k in range(2)]
    nodes = [subprocess.Popen(_in_node(k, argv[k]), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(2)]
    return logdirs, nodes


def test_one_leader_commits_for_every_node_through_a_sigkill_the_store_hosts_death_and_preemption(tmp_path):
    """A 2-node torchrun job, node-local logdirs, one repository; torchrun's agent store coordinates the
    nodes' uploaders. 1. Each node uploads its own content, one leader commits every node's files
    together. 2. SIGKILL that leader: a writer of its node starts another uploader, the lease moves once
    unrenewed, and the new leader commits for both nodes. 3. SIGKILL every process of the node hosting
    the store while the other is preempted as a scheduler does it: SIGTERM to every one of its processes
    at once, a grace period, SIGKILL, its disk deleted; it finds the store gone and commits its last
    records itself before its deadline (or, found gone before its signal, through its own successor store).
    Every record the surviving node's ranks wrote is in the repository exactly once; what the dead node had
    committed is a whole prefix of what it wrote, once."""
    with HubServer(tokens={TOKEN}) as hub:
        logdirs, nodes = _start_leader_job(hub, tmp_path)
        try:
            # 1. The nodes joined the job's store, and the leader's commits hold the files of both
            # nodes (ranks 0-1 on one node, 2-3 on the other).
            wait_for(lambda: any(_job(d).get("leader_commits") for d in logdirs), 90, "the leader's first commit")
            for d in logdirs:  # what `status` shows: the job's way, as the uploader last published it
                job = json.loads((d / ".hf_mpwriter" / "uploader.json").read_text())["job"]
                assert job["mode"] == "job" and job["nodes"] == 2, job
            joint = [c for c in hub.commits(REPO) if "node(s)" in c["summary"]
                     and {p.split("/")[2] for p in c["added"]} >= {"rank-000", "rank-002"}]
            assert joint, [(c["summary"], c["added"]) for c in hub.commits(REPO)]
            # 2. SIGKILL the leading uploader: another one leads, and commits for both nodes again.
            (first,) = wait_for(lambda: len(_leading(logdirs)) == 1 and _leading(logdirs), 30, "one leader")
            own = [_job(d).get("own_commits") for d in logdirs]  # (the leader's count goes with it)
            os.kill(first, 9)
            commits = len(hub.commits(REPO))
            wait_for(lambda: _leading(logdirs) - {first}, 60, "another uploader to take the lease")
            wait_for(lambda: any("node(s)" in c["summary"] for c in hub.commits(REPO)[:len(hub.commits(REPO)) - commits]),
                     30, "the new leader's first commit")
            own += [_job(d).get("own_commits") for d in logdirs]
            assert own == [0] * 4, own  # the leader did it all: no node committed its files itself
            # 3. The job ends hard: the node that hosts the store (torchrun's agent) dies (SIGKILL to its
            # agent, ranks and uploader) while the scheduler preempts the other one (SIGTERM to every one of
            # its processes at once, a grace period, SIGKILL to what is left; then its disk goes).
            job = json.loads((logdirs[0] / ".hf_mpwriter" / "uploader.json").read_text())["job"]
            store_port = int(job["store"].rsplit(":", 1)[1])
            listener = next(c.pid for c in psutil.net_connections("tcp")
                            if c.status == psutil.CONN_LISTEN and c.laddr.port == store_port)
            host = next(k for k in range(2) if listener in {p.pid for p in _tree(psutil.Process(nodes[k].pid))})
            alive = 1 - host
            procs = [{p.pid: p for p in [*_tree(psutil.Process(nodes[k].pid)), psutil.Process(
                json.loads((logdirs[k] / ".hf_mpwriter" / "uploader.json").read_text())["pid"])]} for k in range(2)]
            assert all(len(node) >= 4 for node in procs), procs  # torchrun, 2 ranks, an uploader at least
            for proc in procs[host].values():
                proc.kill()
            for proc in procs[alive].values():
                try:
                    proc.terminate()
                except psutil.NoSuchProcess:
                    pass
            nodes[host].wait(30)
            assert not any(c.laddr.port == store_port for c in psutil.net_connections("tcp")
                           if c.status == psutil.CONN_LISTEN), "the store still listens"
            _, left = psutil.wait_procs(list(procs[alive].values()), timeout=30)  # the grace (the deadline: 20 s)
            for proc in left:
                proc.kill()
            assert not left, f"still running after the grace period: {left}"
        finally:
            for node in nodes:
                node.kill()
                node.communicate(timeout=30)
        # The scenario: the signal taken, the store gone, the node committing itself (none of this before step 3),
        # or, where its SIGTERM came after it found the store gone, through its own successor store (node 1's).
        last = last_uploader_info(logdirs[alive]) or {}
        assert last.get("signalled") and (last["job"]["own_commits"] >= 1 or last["job"]["moves"] >= 1), \
            (last, _log(logdirs[alive])[-3000:])
        local = {k: {str(p.relative_to(d)): p.read_bytes() for p in d.glob("rank-*/*tfevents*")}
                 for k, d in enumerate(logdirs)}  # what each rank wrote, read before the disk goes
        shutil.rmtree(logdirs[alive].parent)
        # Every commit the Hub applied (the leaders', the nodes' own): whole records, no file ever shorter.
        every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)
        remote = _read_back(hub)
        for k in range(2):
            for rank in (2 * k, 2 * k + 1):
                wrote = _points(local[k], rank, tmp_path / "local")
                landed = _points(remote, rank, tmp_path / "remote")
                assert landed, f"rank {rank} (node {k}, {'alive' if k == alive else 'dead'}): nothing landed"
                assert max(landed.values()) == 1, f"rank {rank}: a record twice"
                if k == alive:
                    assert wrote and landed == wrote, f"rank {rank}: {len(wrote - landed)} records missing"
                else:  # the dead node: what it committed before dying, a whole prefix of what it wrote
                    assert landed and not landed - wrote, f"rank {rank}"
        # The job run at the target (a file per leader that wrote one and whose node committed it), read as
        # TensorBoard reads a run: each step once and in order, each with every rank of the job. (Through
        # hand-overs in detail: test_job_merge.py.)
        job = tmp_path / "remote-job"
        for rel, data in remote.items():
            if rel.startswith("job/"):
                (job / rel).parent.mkdir(parents=True, exist_ok=True)
                (job / rel).write_bytes(data)
        # (None may have landed: the first leader SIGKILLed before its node committed its file, the next one's
        # node killed at step 3.)
        events = read_run_events(job / "job") if (job / "job").is_dir() else []
        steps = [step for step, _ in scalar_points(events, "loss")]
        assert steps == sorted(set(steps)), steps
        assert {value for _, value in scalar_points(events, "~job/loss/ranks")} <= {4.0}


BUCKET = "tester/multinode-logs"


def _rank_writes(hub, bucket: bool, per_node: int) -> list[tuple[float, int]]:
    """(when, nodes) of every write at the target that holds ranks' files (a repository's commits, a bucket's
    batches), the nodes counted from the ranks whose files it holds (torchrun: node k's ranks follow node k-1's)."""
    if bucket:
        writes = [(batch["time"], batch["paths"]) for batch in hub.bucket_batches(BUCKET)]
    else:
        writes = [(commit_time(c), c["added"])
                  for c in hub.commits(REPO)]
    found = []
    for when, paths in writes:
        ranks = {int(m[1]) for path in paths if (m := re.search(r"/rank-(\d+)/", path)) and "tfevents" in path}
        if ranks:
            found.append((when, len({rank // per_node for rank in ranks})))
    return sorted(found)


def _last_jobs(logdirs: list[Path]) -> list[dict]:
    """Each node's job part of what its uploader publishes (``uploader.json``: one may still send the job run's
    last points), or published as it exited (``uploader.last.json``)."""
    return [(uploader_info(d) or last_uploader_info(d) or {}).get("job") or {} for d in logdirs]


#: Each target kind once and each shape once (a job of these costs ~50 s of CPU on 2 cores); the other two
#: pairings with HF_MPWRITER_TESTS_EVERY_PAIRING=1.
_JOBS = [("repository", 4, 2), ("bucket", 2, 4)] + (
    [("bucket", 4, 2), ("repository", 2, 4)] if os.environ.get("HF_MPWRITER_TESTS_EVERY_PAIRING") == "1" else [])


@pytest.mark.parametrize("kind,nodes,per_node", _JOBS)
def test_a_jobs_nodes_make_about_one_commit_per_interval_through_one_leader_and_one_exact_job_run(
        tmp_path, kind, nodes, per_node):
    """A 4-node x 2-rank (and a 2-node x 4-rank) torchrun job (c10d rendezvous), node-local logdirs, one
    repository or one bucket; the nodes' uploaders meet in torchrun's agent store. The ranks are ``proc_writer.py``
    (no torch: cheap on 2 CPUs), started by torchrun with ``--no-python``. Every write the target
    received is one of the leader's, most of them hold several nodes' files, and there is about one
    per interval (node turns or nodes writing on their own: about four); every rank's records are at
    the target exactly once, read back through the real client. The repository's job gives no logdir:
    every process of the job gets the same default one, from the job's id (each node's, under its
    working directory), so the job's ranks land in one remote folder and meet one leader."""
    bucket = kind == "bucket"
    if bucket and not batch_takes_xet_hashes():
        pytest.skip("a bucket's leader needs huggingface_hub 1.10+ (older: each node writes its own files)")
    steps, every = 300, 2.0
    with HubServer(tokens={TOKEN}) as hub:
        if bucket:
            hub.create_bucket(BUCKET)
        else:
            hub.create_repo(REPO)
        env = writer_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN,
                          "HF_MPWRITER_COMMITS_PER_HOUR": "1800",  # as above
                          "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
        homes = [tmp_path / f"node-{k}" for k in range(nodes)]
        port, procs, outs = _free_port(), [], [tmp_path / f"node-{k}.out" for k in range(nodes)]
        for k in range(nodes):
            homes[k].mkdir()
            # The last node is the slowest: node 0's agent (which hosts the job's store) and ranks end first, and
            # the store goes the moment the last node's ranks end (torchrun's exit barrier): the case where a
            # node's last job run points need the store after its ranks are done.
            cfg = {"repo_id": f"hf://buckets/{BUCKET}" if bucket else REPO, "commit_every_s": every, "steps": steps,
                   "sleep": 0.08 if k == nodes - 1 else 0.05, "close_timeout": 120, "step_time": True, "histogram": 10,
                   **({"logdir": str(homes[k] / "logs")} if bucket else {})}
            argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", str(per_node),
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "four-nodes",
                    "--monitor-interval", "0.5", "--local-addr", "127.0.0.1", "--no-python", *writer_argv(cfg)]
            with open(outs[k], "w") as out:
                procs.append(subprocess.Popen(_in_node(k, argv), env=env, stdout=out, stderr=subprocess.STDOUT,
                                              cwd=homes[k]))
        try:
            for k, proc in enumerate(procs):
                assert proc.wait(240) == 0, outs[k].read_text()[-3000:]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(30)
        logdirs = [homes[k] / "logs" for k in range(nodes)] if bucket else sorted(tmp_path.glob("node-*/runs/*"))
        assert len(logdirs) == nodes and len({d.name for d in logdirs}) == 1, logdirs  # one logdir a node, one name
        prefix = "tensorboard/" + logdirs[0].name
        for logdir in logdirs:
            wait_for(lambda logdir=logdir: collect(logdir)["up_to_date"], 60, f"{logdir} to be committed")
        # The scenario: the leader wrote every node's files, every node's at once at least once (read at the
        # target). How many nodes a write holds on average is no measure: the nodes end one by one, and a slow
        # start leaves few writes, the last ones a node each (CI: [4, 1, 1]). The bound on the number of writes
        # below is what shows that the nodes' files went together (alone, each node writes once an interval).
        leader = _rank_writes(hub, bucket, per_node)
        assert leader and max(n for _, n in leader) == nodes, leader
        jobs = _last_jobs(logdirs)
        assert all(jobs), jobs  # every node's uploader said how its files went
        # The job's Xet write token is the leader's node's, shared through the store: fewer than one a node. (A
        # node whose first upload comes more than 5 s before the leader shares it fetches its own: exactly one
        # for the job is test_job_commit.py's, in one process, where nothing races.)
        tokens = sum(job["xet_tokens"] for job in jobs)
        assert 1 <= tokens and (tokens < nodes or nodes <= 2), jobs
        assert sum(job.get("leader_commits", 0) for job in jobs) >= len(leader) - 1, jobs  # the leader's writes
        # No node committed its files itself while the job's store was there. The job run's last points come
        # after every rank's last records (once every node is done): the store's host (node 0's torchrun agent)
        # may be gone by then, and the leader's node then commits them itself, one write of the job run alone.
        for job in jobs:
            assert job.get("own_commits") == 0 or job.get("store_gone") or job.get("mode") == "node", jobs
        if bucket:
            writes, rank_writes = hub.stats["bucket_writes"], None
            client = BucketTarget(BUCKET, prefix="tensorboard/logs", token=TOKEN, endpoint=hub.endpoint)
            files = {p: client.read(p) for p in (q[len("tensorboard/logs/"):] for q in hub.bucket_files(BUCKET)
                                                 if q.startswith("tensorboard/logs/") and "tfevents" in q)}
        else:
            added = [[p for p in c["added"] if "tfevents" in p] for c in hub.commits(REPO)]
            writes = sum(bool(paths) for paths in added)
            rank_writes = sum(any("/rank-" in p for p in paths) for paths in added)
            every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)
            files = _read_back(hub, prefix)
        # Writes of the job run alone: a node that leads as it ends commits the job run's last points it merged
        # at once, and the last leader once more at the job's end; not one a round (no burst). (The bound was 1:
        # it held only while the nodes ended within a commit interval of each other; with node 1's steps 0.14 s
        # instead of 0.08 s, 13 writes, 11 of them with ranks' files, at a28393e too.)
        assert writes - len(leader) <= nodes, f"{writes} writes, {len(leader)} of them with ranks' files"
        assert rank_writes is None or rank_writes <= len(leader), f"{rank_writes} writes of ranks' files"
        intervals = (leader[-1][0] - leader[0][0]) / every + 1
        assert len(leader) <= 1.5 * intervals, f"{len(leader)} commits in {intervals:.0f} intervals"
    world = nodes * per_node
    for rank in range(world):
        points = _points(files, rank, tmp_path / "remote", tag="loss")
        assert points == Counter({(s, float(rank * 100000 + s)): 1 for s in range(steps)}), f"rank {rank}"
    # One job run for the whole job, merged by the leader(s) from every node's points through the store, read
    # back from the same target: every step of both tags equals the statistics of every rank's run.
    copy = tmp_path / "remote"
    for rel, data in files.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    assert any(rel.startswith("job/") for rel in files), sorted(files)
    # The job's last round needs the job's store, which torchrun's agent of one node hosts (it stops once every
    # node's ranks are done): each rank's close() waits for its node's last job run points to reach a leader,
    # so the store outlives the last exchange whichever node hosts it, and the job run ends at the last step.
    # `status` on the last leader's node shows the whole job: every node heard, every rank at its last step (as its
    # merges heard it: a leader that took up with nothing left to write, or that moved alone to its successor store
    # once torchrun's agent took the job's store with it, shows it too; a node that stopped leading shows its part).
    merged = [view for view in (collect(d)["job_view"] for d in logdirs) if view and view.get("nodes") == nodes]
    whole = any(v["newest_step"] == {str(r): steps - 1 for r in range(world)} for v in merged)
    assert whole, (merged, _last_jobs(logdirs))
    for tag in ("loss", "step_time"):
        want = _recomputed(copy, tag)
        assert len(want) == steps and all(stats["ranks"] == world for stats in want.values())
        _assert_equal(_job_points(copy, tag), want, world=world)
    # And each step's histogram of every rank's weights, merged on each node, then by the leader.
    histograms = {e.step: e.histogram_value for e in accumulator(copy / "job").Histograms("weights")}
    assert sorted(histograms) == list(range(0, steps, 10)), sorted(histograms)
    assert len(histograms) >= steps // 20
    for step, got in histograms.items():
        _assert_histogram(got, np.concatenate([weights(rank, step) for rank in range(world)]))


def test_a_logdir_shared_by_every_node_has_one_uploader(tmp_path):
    shared = tmp_path / "shared" / "logs"
    env = _job_env()
    with _Elections(shared) as elections:
        _run_job(tmp_path, [shared, shared], {"target_dir": str(tmp_path / "target")}, env)
        wait_for(lambda: collect(shared)["up_to_date"], 60, "the shared logdir to be committed")
    assert elections.elected, "no uploader seen"  # the scenario: the logdir's uploader(s), as they published themselves
    assert not elections.overlaps, f"two uploaders at once: {elections.overlaps}"
    files = local_target_files(tmp_path / "target", "tensorboard/logs")
    _check_exactly_once(files, tmp_path)
    # The one uploader sees every rank of the job: the job run holds each step's mean of the 4 ranks.
    copy = tmp_path / "remote-copy"
    by_rank = [dict(scalars(copy / f"rank-{rank:03d}", "loss")) for rank in range(4)]
    assert scalars(copy / "job", "~job/loss/ranks") == [(s, 4.0) for s in range(STEPS)]
    assert scalars(copy / "job", "loss") == [
        (s, pytest.approx(math.fsum(r[s] for r in by_rank) / 4, rel=1e-6)) for s in range(STEPS)]


class _Elections:
    """Watches, from a thread, the uploader ``logdir`` publishes (``uploader.json``): each one elected, in order,
    and whether the one before had exited by then (its ``uploader.last.json``, written before it lets the lock
    go) or was dead; one still running is an overlap: two uploaders at once. An uploader that came and went
    between two looks is still seen, by the ``uploader.last.json`` it left."""

    def __init__(self, logdir: Path) -> None:
        self.logdir, self.elected, self.overlaps = logdir, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> _Elections:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._look()  # one that exited since the thread's last look

    def __enter__(self) -> _Elections:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self._look()

    def _look(self) -> None:
        last = last_uploader_info(self.logdir)
        for info in (last, uploader_info(self.logdir)):
            if info is None or (info["pid"], info["started"]) in self.elected:
                continue
            if self.elected and info["started"] < self.elected[-1][1]:  # it had exited before the one seen last
                self.elected = sorted([*self.elected, (info["pid"], info["started"])], key=lambda e: e[1])
                continue
            if self.elected:
                pid, started = self.elected[-1]
                exited = last is not None and last.get("pid") == pid and last.get("started") == started
                if not (exited and last["exited"] <= info["started"]) and _runs(pid):
                    self.overlaps.append((pid, info["pid"]))
            self.elected.append((info["pid"], info["started"]))


def _runs(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_shared_logdir_survives_the_death_of_the_uploader_node(tmp_path):
    """SIGKILL every process of the node that runs the uploader: the other node's writers take over
    once its heartbeat is stale, and nothing is lost or committed twice."""
    logdir, target = tmp_path / "shared", tmp_path / "target"
    cfg = {"logdir": str(logdir), "target_dir": str(target), "commit_every_s": 1.0, "steps": 400, "sleep": 0.02}
    go = tmp_path / "close-now"  # the surviving node's writers stay alive until its uploader is seen
    cfg["close_after"] = str(go)
    nodes = {}
    elections = _Elections(logdir).start()
    for k in range(2):
        nodes[k] = [subprocess.Popen(_in_node(k, writer_argv({**cfg, "rank": 2 * k + r})),
                                     env=writer_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for r in range(2)]
    for procs in nodes.values():
        for proc in procs:
            read_line(proc, "flushed 9")
    info = wait_for(lambda: json.loads((logdir / ".hf_mpwriter" / "uploader.json").read_text())
                    if (logdir / ".hf_mpwriter" / "uploader.json").exists() else None, 20, "an uploader")
    dead = int(info["host"].split("-")[1])
    alive = 1 - dead
    uploader = psutil.Process(info["pid"])
    flushed = {}
    for r, proc in enumerate(nodes[dead]):
        flushed[2 * dead + r] = int(read_line(proc, "flushed 1").split()[1])
    for proc in nodes[dead]:  # the whole node dies at once: its writers and its uploader
        proc.kill()
    uploader.kill()
    for proc in nodes[dead]:
        proc.wait()
    # The scenario: the other node's writers start an uploader of their own (it runs while they do,
    # and exits once they are gone and all is committed: its record is looked for now, not afterwards).
    try:
        new = wait_for(lambda: _uploader_of(logdir, f"node-{alive}"), 60, f"node-{alive} to start an uploader")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_state_report(logdir)}") from None
    assert new["pid"] != info["pid"]
    go.touch()
    for proc in nodes[alive]:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    wait_for(lambda: collect(logdir)["up_to_date"], 60, "the other node's uploader to commit everything")
    elections.stop()
    files = local_target_files(target, "tensorboard/shared")
    copy = tmp_path / "copy"
    for rel, data in files.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    for rank in range(4):
        points = Counter()
        for path in (copy / f"rank-{rank:03d}").glob("*tfevents*"):
            points.update(scalar_points(read_file_events(path), "loss"))
        expect = range(400) if rank // 2 == alive else range(flushed[rank] + 1)
        missing = [s for s in expect if points[(s, float(rank * 100000 + s))] != 1]
        assert not missing, f"rank {rank}: steps missing or twice: {missing[:10]}"
    pids = [pid for pid, _ in elections.elected]  # the scenario: the killed node's uploader, then the other node's
    assert info["pid"] in pids and new["pid"] in pids[pids.index(info["pid"]) + 1:], (info, new, elections.elected)
    assert not elections.overlaps, f"two uploaders at once: {elections.overlaps}"


def _state_report(logdir: Path) -> str:
    """What the logdir's state directory says (records and the uploader's log), for a failure message."""
    state = logdir / ".hf_mpwriter"
    parts = [f"{p.name}: {p.read_text()}" for p in sorted(state.glob("*.json"))]
    log = state / "uploader.log"
    return "\n".join(parts + ["uploader.log:", log.read_text()[-4000:] if log.exists() else "(none)"])


def _uploader_of(logdir: Path, host: str) -> dict | None:
    """The logdir's uploader record if a live uploader of ``host`` wrote it (pids are shared: one kernel)."""
    from hf_mpwriter.state.election import uploader_info

    info = uploader_info(logdir)
    return info if info and info.get("host") == host and psutil.pid_exists(info["pid"]) else None


def test_nodes_write_their_own_files_into_one_bucket(tmp_path):
    """SLURM-style nodes (no torchrun), node-local logdirs, one bucket: no coordination needed."""
    with HubServer(tokens={TOKEN}) as hub:
        env = writer_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN})
        procs = []
        for node in range(2):
            node_env = {**env, "SLURM_NODEID": str(node), "SLURM_NNODES": "2"}
            for local in range(2):
                cfg = {"logdir": str(tmp_path / f"node-{node}" / "logs"), "repo_id": "hf://buckets/tester/nodes",
                       "rank": 2 * node + local, "commit_every_s": 1.0, "steps": 100, "sleep": 0.01,
                       "close_timeout": 60}
                procs.append(subprocess.Popen(_in_node(node, writer_argv(cfg)),
                                              env=node_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        files = {p[len("tensorboard/logs/"):]: d for p, d in hub.bucket_files("tester/nodes").items()
                 if p.startswith("tensorboard/logs/")}
    copy = tmp_path / "copy"
    for rel, data in files.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    for rank in range(4):
        points = Counter()
        for path in (copy / f"rank-{rank:03d}").glob("*tfevents*"):
            points.update(scalar_points(read_file_events(path), "loss"))
        assert points == Counter({(s, float(rank * 100000 + s)): 1 for s in range(100)}), f"rank {rank}"
    for node in range(2):
        assert committed_and_checked(tmp_path / f"node-{node}" / "logs")


def _node_writer(k: int, nodes: int, port: int, logdir: Path, env: dict, **cfg) -> subprocess.Popen:
    """Node ``k`` of ``nodes`` (one rank each, its own host name) as torchrun would start its rank: the job's store
    at ``port``; ``cfg``: ``proc_writer.py``'s settings (``steps``; ``close_after``: it closes once that file exists)."""
    ranks = {"TORCHELASTIC_RUN_ID": "store-dies", "TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port), "GROUP_RANK": str(k), "GROUP_WORLD_SIZE": str(nodes), "RANK": str(k),
             "LOCAL_RANK": "0", "WORLD_SIZE": str(nodes), "LOCAL_WORLD_SIZE": "1"}
    cfg = {"logdir": str(logdir), "repo_id": REPO, "sleep": 0.02, "commit_every_s": 30, "close_timeout": 5, **cfg}
    return subprocess.Popen(_in_node(k, writer_argv(cfg)), env={**env, **ranks}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("dies", ["before", "after-a-leader"])
def test_wherever_the_jobs_store_died_every_nodes_last_records_land_soon_after_its_writers_closed(tmp_path, dies):
    """8 nodes (real processes, each its own host), the default budget (a node's own slot minutes apart), the job's
    store killed before any node's uploader reached it, or once one leads the job there: once their
    writers closed, every node's records are at the Hub within 3 minutes."""
    from helpers import served_store

    nodes, steps = 8, 30
    with HubServer(tokens={TOKEN}) as hub, served_store() as (store, port):
        hub.create_repo(REPO)
        env = _job_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN})
        logdirs = [tmp_path / f"node-{k}" / "logs" for k in range(nodes)]
        if dies == "before":  # the scenario: nothing listens before any uploader starts
            store.kill()
            store.wait(10)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        end = tmp_path / "end"
        writers = [_node_writer(k, nodes, port, logdirs[k], env, steps=steps, close_after=str(end)) for k in range(nodes)]
        if dies == "after-a-leader":  # (the other nodes' uploaders reached it before, or not yet)
            wait_for(lambda: any(_job(d).get("leading") for d in logdirs), 120, "a node's uploader to lead the job")
            store.kill()
            store.wait(10)
        end.touch()
        for writer in writers:
            _, err = writer.communicate(timeout=180)
            assert writer.returncode == 0, err[-2000:]
        closed = time.monotonic()
        want = {rel: data for d in logdirs for rel, data in local_event_files(d).items() if rel.startswith("rank-")}
        assert len({rel.split("/")[0] for rel in want}) == nodes, sorted(want)
        wait_for(lambda: {p: v for p, v in _read_back(hub).items() if p in want} == want, 180,
                 "every node's records at the Hub")
        took = time.monotonic() - closed
        assert took < 180, took
        every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)


def test_a_job_resumed_on_new_machines_names_each_ranks_lost_steps_in_status_its_output_and_the_job_run(tmp_path):
    """Two nodes (real processes, each its own host, the job's store): each rank's steps 0-27 committed, 28-39 only on
    its node's disk; every process SIGKILLed and both disks deleted. The job relaunched on new machines (a new store)
    resumes (``resume=True``) at step 40: each node's ``status``, each rank's own output and the job run at the Hub
    (TensorBoard's default reader) name that rank's steps 28 to 39, and nothing else."""
    from helpers import served_store
    from tb_readers import default_reader_texts
    from upload_helpers import materialise, sigkill

    from hf_mpwriter.state.lost import Lost

    with HubServer(tokens={TOKEN}) as hub:
        hub.create_repo(REPO)
        env = _job_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN,
                        "HF_MPWRITER_COMMITS_PER_HOUR": "36000"})  # (the commits seconds apart, not the Hub's ~28 s)
        logdirs, more = [tmp_path / f"node-{k}" / "logs" for k in range(2)], tmp_path / "more"

        reads = iter(range(1_000_000))

        def at_hub(rank: int) -> list[int]:
            """The steps of ``rank``'s run at the Hub (its records: the two attempts' steps do not meet)."""
            return sorted(step for step, _ in _points(_read_back(hub), rank, tmp_path / f"read-{next(reads)}"))

        with served_store() as (_, port):
            first = [_node_writer(k, 2, port, logdirs[k], env, steps=28, flush_every=0, trigger_every=27,
                                  more_after=str(more), more_steps=12, hang=True, commit_every_s=600) for k in range(2)]
            for proc in first:
                read_line(proc, "flushed 27", timeout=90)
            wait_for(lambda: all(at_hub(k) == list(range(28)) for k in range(2)), 120, "steps 0-27 of each rank at the Hub")
            more.touch()
            for k, proc in enumerate(first):
                read_line(proc, "flushed 39", timeout=60)
                uploader = _uploader_of(logdirs[k], f"node-{k}")
                assert uploader, "the scenario needs a live uploader to kill"
                sigkill(proc.pid)
                sigkill(uploader["pid"])
                proc.communicate()
        for logdir in logdirs:
            shutil.rmtree(logdir)  # the nodes are gone with their disks
        assert [at_hub(k) for k in range(2)] == [list(range(28))] * 2  # the scenario: 28-39 never reached the Hub

        with served_store() as (_, port):  # the relaunch, on new machines: a new store
            second = [_node_writer(k, 2, port, logdirs[k], env, start=40, steps=60, resume=True, commit_every_s=600,
                                   close_timeout=90) for k in range(2)]
            outputs = [proc.communicate(timeout=180)[1] for proc in second]
            wait_for(lambda: not any(_uploader_of(logdirs[k], f"node-{k}") for k in range(2)), 120,
                     "both uploaders to finish")
        lost = [Lost(f"rank-{k:03d}", 27, 40) for k in range(2)]
        for k, logdir in enumerate(logdirs):
            assert [{key: v for key, v in found.items() if key != "text"} for found in collect(logdir)["lost_steps"]] == [
                {"run": lost[k].run, "after": 27, "restart": 40}]
            assert outputs[k].count(lost[k].text()) == 1, outputs[k][-3000:]
            assert at_hub(k) == [*range(28), *range(40, 60)]
        job = materialise({p: v for p, v in _read_back(hub).items() if p.startswith("job/")}, tmp_path / "job-run")
        texts = default_reader_texts(job)["job"]
        assert {tag: [(step, text) for step, text in said] for tag, said in texts.items() if "lost_steps" in tag} == {
            f"~job/lost_steps/{found.run}/text_summary": [(40, found.text())] for found in lost}

