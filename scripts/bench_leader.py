"""A multi-node job's cost on the Hub: commits and Hub API requests, one leader against node turns.

Real torchrun jobs (c10d rendezvous, gloo, CPU) of N simulated nodes (``unshare --uts``: each node its
own host name) x 2 ranks, node-local logdirs, one repository (or, ``--bucket``, one Storage Bucket)
on the test Hub, the real client (Xet). A bucket's "commits" are its batch writes.
For each node count, the same run twice: with the job's store (one leader commits for every node) and
with ``HF_MPWRITER_JOB_STORE=0`` (every node commits in its turn). Storage transfers (Xet CAS) are not
Hub API requests and are left out (``bench_requests.STORAGE_ROUTES``). The ratios are against one node
in the same run, over the steady window (:class:`Steady`: every node started and committed once, every
rank still logging), per minute; the whole run's counts (with each node's one-time start) are printed
too. Freshness: every second of that window, the age of each node's newest record at the target (now
minus the record's wall time, read back from what the target holds); p50 and p95 over every look at
every node.

Needs root (UTS namespaces). Run: ``python scripts/bench_leader.py [--nodes 1 2 4] [--seconds 40] [--bucket]``.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_requests import api_requests  # noqa: E402

from hf_mpwriter.events.records import iter_records  # noqa: E402
from hf_mpwriter.testing import HubServer  # noqa: E402

REPO = "bench/nodes"
TOKEN = "hf_benchNodesToken0123456789"
STEP_S = 0.2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def records_by_node(files: dict[str, bytes]) -> dict[int, tuple[float, float]]:
    """Node -> wall times of its oldest and newest whole record at the target (2 ranks per node)."""
    from tensorboardX.proto.event_pb2 import Event

    span: dict[int, tuple[float, float]] = {}
    for path, data in files.items():
        node = int(next(part for part in path.split("/") if part.startswith("rank-"))[5:]) // 2
        for _, payload in iter_records(io.BytesIO(data), 0, len(data)):
            event = Event.FromString(payload)
            if event.summary.value:
                old, new = span.get(node, (event.wall_time, event.wall_time))
                span[node] = (min(old, event.wall_time), max(new, event.wall_time))
    return span


class Steady:
    """Watches the target every second. The steady window opens once every node has records there
    (every uploader has started, made its first commit and paid its one-time requests: creating the
    repository, the model card, a first token) and closes when the first node stops logging (its
    oldest record + ``seconds``). Within it: each node's newest record's age at every look, and the
    Hub's counters at both ends."""

    def __init__(self, read, nodes: int, seconds: float, snapshot) -> None:
        self.read, self.nodes, self.seconds, self.snapshot = read, nodes, seconds, snapshot
        self.ages: list[float] = []
        self.opened: tuple[float, dict] | None = None
        self.closed: tuple[float, dict] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.closed is None:
            try:
                span = records_by_node(self.read())
            except KeyError:  # nothing there yet
                span = {}
            now = time.time()
            if len(span) == self.nodes:
                if self.opened is None:
                    self.opened = (now, self.snapshot())
                if now >= min(old for old, _ in span.values()) + self.seconds - 1.0:
                    self.closed = (now, self.snapshot())
                else:
                    self.ages.extend(now - new for _, new in span.values())
            self.stop.wait(1.0)


def run_job(hub: HubServer, nodes: int, seconds: float, commit_every: float, job_store: bool, tmp: Path,
            bucket: bool = False) -> dict:
    """One job; what the Hub saw of it: commits (a bucket's batch writes), Hub API requests by route."""
    repo = f"{REPO}-{nodes}-{'job' if job_store else 'turns'}"
    if bucket:
        hub.create_bucket(repo)
    else:
        hub.create_repo(repo)
    commits = (lambda: hub.stats["bucket_writes"]) if bucket else (lambda: hub.commit_count(repo))
    if bucket:
        def read() -> dict[str, bytes]:
            return {p: d for p, d in hub.bucket_files(repo).items() if "tfevents" in p}
    else:
        def read() -> dict[str, bytes]:
            return {p: hub.read_file(repo, p) for p in hub.list_files(repo) if "tfevents" in p}
    env = {**os.environ, **hub.env(), "HF_HOME": str(tmp / "hf_home"), "HF_TOKEN": TOKEN, "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo", "HF_MPWRITER_HUB_COMMIT_SPACING": "1",
           "HF_MPWRITER_JOB_STORE": "1" if job_store else "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    port = _free_port()
    before = hub.stats
    commits_before = commits()
    procs = []
    for k in range(nodes):
        logdir = tmp / repo / f"node-{k}" / "logs"
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", repo.replace("/", "-"),
                "--local-addr", "127.0.0.1", str(ROOT / "scripts" / "torchrun_example.py"), "--logdir", str(logdir),
                "--repo-id", f"hf://buckets/{repo}" if bucket else repo,
                "--steps", str(int(seconds / STEP_S)), "--step-time", str(STEP_S),
                "--commit-every", str(commit_every), "--checkpoint-every", "1000000",
                "--checkpoint-dir", str(logdir.parent / "checkpoints")]
        node = ["unshare", "--uts", "sh", "-c", f'hostname node-{k} && exec "$@"', "node", *argv]
        out = open(tmp / f"{repo.replace('/', '-')}-node-{k}.out", "w")  # noqa: SIM115 - closed with the process below
        procs.append(subprocess.Popen(node, env=env, stdout=out, stderr=subprocess.STDOUT))
        out.close()
    started = time.monotonic()
    steady = Steady(read, nodes, seconds, lambda: {"stats": hub.stats, "commits": commits()})
    steady.thread.start()
    for k, proc in enumerate(procs):
        if proc.wait(timeout=seconds * 4 + 180) != 0:
            tail = (tmp / f"{repo.replace('/', '-')}-node-{k}.out").read_text()[-3000:]
            raise SystemExit(f"node {k} of the {nodes}-node job failed (exit {proc.returncode}):\n{tail}")
    steady.stop.set()
    steady.thread.join()
    ages = sorted(steady.ages)
    if steady.opened is None or steady.closed is None:
        raise SystemExit(f"{nodes}-node job: no steady window (the nodes' records never all reached the target "
                         f"while every rank logged): use more --seconds")
    minutes = (steady.closed[0] - steady.opened[0]) / 60
    return {"p50": statistics.median(ages) if ages else float("nan"),
            "p95": ages[int(0.95 * (len(ages) - 1))] if ages else float("nan"),
            "commits": commits() - commits_before, "requests": api_requests(hub.stats, before),
            "steady_minutes": minutes,
            "commits_per_min": (steady.closed[1]["commits"] - steady.opened[1]["commits"]) / minutes,
            "requests_per_min": sum(api_requests(steady.closed[1]["stats"], steady.opened[1]["stats"]).values()) / minutes,
            "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds of logging per job")
    parser.add_argument("--commit-every", type=float, default=6.0)
    parser.add_argument("--bucket", action="store_true", help="a Storage Bucket instead of a repository")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("simulated nodes need root (unshare --uts)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, HubServer(tokens={TOKEN}) as hub:
        for nodes in args.nodes:
            for job_store in (True, False):
                result = run_job(hub, nodes, args.seconds, args.commit_every, job_store, Path(tmp), args.bucket)
                rows.append((nodes, "one leader" if job_store else "node turns", result))
                print(f"{nodes} node(s), {rows[-1][1]}: {result['commits']} commits, "
                      f"{sum(result['requests'].values())} Hub API requests {dict(result['requests'])}; steady "
                      f"{result['steady_minutes'] * 60:.0f} s: {result['commits_per_min']:.1f} commits/min, "
                      f"{result['requests_per_min']:.1f} requests/min, newest record's age p50 {result['p50']:.1f} s "
                      f"p95 {result['p95']:.1f} s", flush=True)
    base = {mode: r for n, mode, r in rows if n == min(args.nodes)}
    print(f"\n{'bucket' if args.bucket else 'repository'}: {args.seconds:.0f} s of logging, "
          f"commit_every {args.commit_every:.0f} s, 2 ranks per node. Whole run (with each node's start), then the "
          f"steady window (every node's records at the target, every rank logging):")
    print("| nodes | mode | commits | Hub API requests | commits/min | x one node | requests/min | x one node "
          "| newest record's age p50 / p95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for nodes, mode, r in rows:
        one = base[mode]
        print(f"| {nodes} | {mode} | {r['commits']} | {sum(r['requests'].values())} | {r['commits_per_min']:.1f} | "
              f"{r['commits_per_min'] / one['commits_per_min']:.2f} | {r['requests_per_min']:.1f} | "
              f"{r['requests_per_min'] / one['requests_per_min']:.2f} | {r['p50']:.1f} s / {r['p95']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
