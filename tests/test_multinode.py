"""Multi-node jobs on one machine, for real: each node is a group of processes in its own UTS
namespace (``unshare --uts`` + ``hostname node-k``), started by ``torchrun --nnodes 2`` with a c10d
rendezvous on 127.0.0.1 (gloo, CPU), one rank crashing once and the job restarting.

Node-local logdirs (one uploader per node, one repository, nodes taking turns) and a logdir shared by
every node (one uploader for the whole job; when its node dies, another node's writers take over).
Every rank's records must be on the target exactly once, read back through the real client.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest
from helpers import read_file_events, scalar_points
from upload_helpers import local_target_files, read_line, wait_for, writer_argv, writer_env

from hf_mpwriter.status import collect
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.testing import HubServer

REPO = "tester/multinode"
TOKEN = "hf_goodTokenForTests0123456789"
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "torchrun_example.py"
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


def _torchrun_node(k: int, port: int, logdir: Path, target: list[str], env: dict) -> subprocess.Popen:
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "multinode-test",
            "--max-restarts", "1", "--monitor-interval", "0.5", "--local-addr", "127.0.0.1",
            str(SCRIPT), "--logdir", str(logdir), *target, "--steps", str(STEPS), "--commit-every", "1",
            "--checkpoint-every", "10", "--crash-rank", "3", "--crash-at-step", "23",
            "--checkpoint-dir", str(logdir.parent / "checkpoints")]
    return subprocess.Popen(_in_node(k, argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _job_env(extra: dict | None = None) -> dict:
    env = writer_env(extra)
    env.update({"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
    return env


def _run_job(tmp_path: Path, logdirs: list[Path], target: list[str], env: dict) -> str:
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
    from helpers import scalars

    for rank in range(4):
        run = copy / f"rank-{rank:03d}"
        assert run.is_dir(), f"no run directory for rank {rank}: {sorted(files)}"
        steps = [s for s, _ in scalars(run, "train/loss")]
        assert steps == list(range(STEPS)), f"rank {rank}: {steps}"
        # Raw records: steps after the resume point appear once per attempt at most, never twice
        # within one attempt's files (the purge hides the failed attempt's).
        raw = Counter()
        for path in run.glob("*tfevents*"):
            raw.update(s for s, _ in scalar_points(read_file_events(path), "train/loss"))
        per_rank[rank] = raw
        assert max(raw.values()) <= 2, f"rank {rank}: a step was uploaded more than twice"


def test_node_local_logdirs_commit_to_one_repository_in_turns(tmp_path):
    with HubServer(tokens={TOKEN}) as hub:
        hub.create_repo(REPO)
        # The test Hub accepts a commit every 2 s (not huggingface.co's ~28 s): turns of 2 x 2 s, not 2 x 28 s.
        env = _job_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": TOKEN,
                        "HF_MPWRITER_HUB_COMMIT_SPACING": "2"})
        logdirs = [tmp_path / f"node-{k}" / "logs" for k in range(2)]
        _run_job(tmp_path, logdirs, ["--repo-id", REPO], env)
        for logdir in logdirs:
            wait_for(lambda logdir=logdir: collect(logdir)["up_to_date"], 60, f"{logdir} to be committed")
        # Read back through the real client (downloads), as a user would.
        target = HubTarget(REPO, prefix="tensorboard/logs", token=TOKEN, endpoint=hub.endpoint)
        paths = [p for p in hub.list_files(REPO) if p.startswith("tensorboard/logs/") and "tfevents" in p]
        files = {p[len("tensorboard/logs/"):]: target.read(p[len("tensorboard/logs/"):]) for p in paths}
        _check_exactly_once(files, tmp_path)
        # Each node paced itself: one turn per max(commit_every, nodes x the Hub's spacing).
        configs = [json.loads((d / ".hf_mpwriter" / "config.json").read_text()) for d in logdirs]
        assert sorted((c["nodes"], c["node_rank"]) for c in configs) == [(2, 0), (2, 1)], configs
        assert all(c["min_interval"] == 2 for c in configs), configs


def test_a_logdir_shared_by_every_node_has_one_uploader(tmp_path):
    shared = tmp_path / "shared" / "logs"
    env = _job_env()
    _run_job(tmp_path, [shared, shared], ["--target-dir", str(tmp_path / "target")], env)
    wait_for(lambda: collect(shared)["up_to_date"], 60, "the shared logdir to be committed")
    files = local_target_files(tmp_path / "target", "tensorboard/logs")
    _check_exactly_once(files, tmp_path)
    starts = [line for line in (shared / ".hf_mpwriter" / "uploader.log").read_text().splitlines()
              if "started for" in line]
    spans = _uploader_spans(shared)
    for (_a_start, a_end), (b_start, _) in zip(spans, spans[1:]):
        assert b_start >= a_end, f"two uploaders at once: {starts}"


def _uploader_spans(logdir: Path) -> list[tuple[str, str]]:
    """(start, end) log times of each uploader that ran for ``logdir``, in order."""
    spans: dict[str, list[str]] = {}
    for line in (logdir / ".hf_mpwriter" / "uploader.log").read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        stamp, pid = f"{parts[0]} {parts[1]}", parts[2]
        spans.setdefault(pid, [stamp, stamp])[1] = stamp
    return sorted((a, b) for a, b in spans.values())


def test_shared_logdir_survives_the_death_of_the_uploader_node(tmp_path):
    """SIGKILL every process of the node that runs the uploader: the other node's writers take over
    once its heartbeat is stale, and nothing is lost or committed twice."""
    logdir, target = tmp_path / "shared", tmp_path / "target"
    cfg = {"logdir": str(logdir), "target_dir": str(target), "commit_every_s": 1.0, "steps": 400, "sleep": 0.02}
    nodes = {}
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
    for proc in nodes[alive]:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    wait_for(lambda: collect(logdir)["up_to_date"], 60, "the other node's uploader to commit everything")
    new = json.loads((logdir / ".hf_mpwriter" / "uploader.json").read_text()) \
        if (logdir / ".hf_mpwriter" / "uploader.json").exists() else None
    assert new is None or new["host"] == f"node-{alive}"
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
    spans = _uploader_spans(logdir)
    for (_, a_end), (b_start, _) in zip(spans, spans[1:]):
        assert b_start >= a_end, spans


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
        assert collect(tmp_path / f"node-{node}" / "logs")["up_to_date"]
