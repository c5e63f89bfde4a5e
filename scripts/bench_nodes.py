#!/usr/bin/env python
"""A multi-node job on the Hub: commits, Hub API requests and the age of each node's logs there, for
one leader, node turns and ``huggingface_hub.HFSummaryWriter`` in every rank, in one run.

Every job is a real torchrun job (c10d rendezvous) of N simulated nodes (``unshare --uts``: each node
its own host name) x 2 ranks, node-local logdirs, one repository (``--bucket``: one Storage Bucket) on
the test Hub, through the real client (Xet). Each rank logs one scalar every 0.2 s. The ways:

``hf_mpwriter``   one node: its uploader commits (what every mode costs on one node)
``one leader``    hf_mpwriter with the job's store (torchrun's agent store): one leader commits every
                  node's files per interval
``node turns``    hf_mpwriter with ``HF_MPWRITER_JOB_STORE=0``: each node commits its own files, in its turn
                  (a bucket: each node writes its own, no turns)
``HFSummaryWriter in every rank``  the anchor, at its best: a run directory per rank, flushed every
                  second (its default, 120 s, would leave the target minutes behind); repositories only
                  (it has no buckets)

Clock: the test Hub takes a commit a second and the uploaders are told so
(``HF_MPWRITER_HUB_COMMIT_SPACING=1``; huggingface.co: ~28 s), with ``commit_every`` 6 s. The numbers that
carry over to the Hub are per interval: at the default 5 minutes, one commit per interval is 12 an hour,
and the Hub takes about 128 an hour per repository. Node turns commit at ``max(commit_every, nodes x
spacing)``: every interval here, but on huggingface.co 8 nodes' turns are 224 s apart.

Rates are over the steady window (:class:`Steady`: every node's records are at the target, so every
uploader has started and paid its one-time requests, and every rank still logs); the ratios are
against one node in the same run. Storage transfers (Xet CAS) are not Hub API requests and are left out
(``hf_mpwriter.testing.limits.is_api_route``). Age: every second of that window, now minus the wall time of
each node's newest record that the target holds; p50 and p95 over every look at every node.

Needs root (UTS namespaces). ``python scripts/bench_nodes.py [--nodes 1 2 4 8] [--seconds 60] [--bucket]``
(~15 minutes on 2 CPUs; ``--quick``: 1 and 4 nodes, 40 s).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
from _bench_common import free_port  # noqa: E402
from bench_requests import api_requests  # noqa: E402

from hf_mpwriter.events.records import iter_records  # noqa: E402

TOKEN = "hf_benchNodesToken0123456789"
STEP_S = 0.2
RANKS_PER_NODE = 2
LABELS = {"single": "hf_mpwriter", "leader": "one leader", "turns": "node turns",
          "anchor": "HFSummaryWriter in every rank"}


# -- a rank (run by torchrun: python bench_nodes.py --rank ...) -------------------------------------------
def rank_main(way: str, logdir: str, repo_id: str, seconds: float, commit_every: float) -> int:
    """Log ``train/loss`` every :data:`STEP_S` for ``seconds``, then close (the anchor: its final push)."""
    rank = int(os.environ["RANK"])
    if way == "anchor":
        import huggingface_hub

        writer = huggingface_hub.HFSummaryWriter(repo_id=repo_id, logdir=f"{logdir}/rank-{rank:03d}",
                                                 commit_every=commit_every / 60, flush_secs=1)
        close = lambda: writer.__exit__(None, None, None)  # noqa: E731 - close + its last commit, awaited
    else:
        import hf_mpwriter

        writer = hf_mpwriter.HFSummaryWriter(repo_id=repo_id, logdir=logdir, commit_every=commit_every / 60)
        close = writer.close
    for step in range(int(seconds / STEP_S)):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        time.sleep(STEP_S)
    close()
    return 0


# -- the bench side -----------------------------------------------------------------------------------
def records_by_node(files: dict[str, bytes]) -> dict[int, tuple[float, float]]:
    """Node -> wall times of its oldest and newest whole record at the target (2 ranks per node)."""
    from tensorboardX.proto.event_pb2 import Event

    span: dict[int, tuple[float, float]] = {}
    for path, data in files.items():
        node = int(next(part for part in path.split("/") if part.startswith("rank-"))[5:]) // RANKS_PER_NODE
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

    def __init__(self, read: Callable[[], dict[str, bytes]], nodes: int, seconds: float,
                 snapshot: Callable[[], dict]) -> None:
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


def run_job(hub, way: str, nodes: int, seconds: float, commit_every: float, tmp: Path, bucket: bool) -> dict:
    """One job; what the Hub saw of it in its steady window."""
    repo = f"bench/nodes-{nodes}-{way}"
    if bucket:
        hub.create_bucket(repo)

        def read() -> dict[str, bytes]:
            return {p: d for p, d in hub.bucket_files(repo).items() if "tfevents" in p}

        commits = lambda: hub.stats["bucket_writes"]  # noqa: E731
    else:
        hub.create_repo(repo)

        def read() -> dict[str, bytes]:
            return {p: hub.read_file(repo, p) for p in hub.list_files(repo) if "tfevents" in p}

        commits = lambda: hub.commit_count(repo)  # noqa: E731
    env = {**os.environ, **hub.env(), "HF_HOME": str(tmp / "hf_home"), "HF_TOKEN": TOKEN, "OMP_NUM_THREADS": "1",
           "HF_MPWRITER_HUB_COMMIT_SPACING": "1", "HF_MPWRITER_JOB_STORE": "0" if way == "turns" else "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    port = free_port()
    procs, outs = [], []
    for k in range(nodes):
        logdir = tmp / repo / f"node-{k}" / "logs"
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node",
                str(RANKS_PER_NODE), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-id", repo.replace("/", "-"), "--local-addr", "127.0.0.1", __file__, "--rank", way,
                str(logdir), f"hf://buckets/{repo}" if bucket else repo, str(seconds), str(commit_every)]
        outs.append(tmp / f"{repo.replace('/', '-')}-node-{k}.out")
        with open(outs[-1], "w") as out:
            node = ["unshare", "--uts", "sh", "-c", f'hostname node-{k} && exec "$@"', "node", *argv]
            procs.append(subprocess.Popen(node, env=env, stdout=out, stderr=subprocess.STDOUT))
    steady = Steady(read, nodes, seconds, lambda: {"stats": hub.stats, "commits": commits()})
    steady.thread.start()
    try:
        for k, proc in enumerate(procs):
            if proc.wait(timeout=seconds * 4 + 240) != 0:
                raise SystemExit(f"node {k} of the {nodes}-node {way} job failed (exit {proc.returncode}):\n"
                                 f"{outs[k].read_text()[-3000:]}")
    finally:
        for proc in procs:
            proc.kill()
        steady.stop.set()
        steady.thread.join()
    if steady.opened is None or steady.closed is None:
        raise SystemExit(f"{nodes}-node {way} job: no steady window (the nodes' records never all reached the "
                         f"target while every rank logged): use more --seconds")
    ages = sorted(steady.ages)
    minutes = (steady.closed[0] - steady.opened[0]) / 60
    return {"way": way, "nodes": nodes, "minutes": minutes,
            "commits_per_min": (steady.closed[1]["commits"] - steady.opened[1]["commits"]) / minutes,
            "requests_per_min": sum(api_requests(steady.closed[1]["stats"], steady.opened[1]["stats"]).values()) / minutes,
            "p50": statistics.median(ages), "p95": ages[int(0.95 * (len(ages) - 1))]}


def report(rows: list[dict], commit_every: float, bucket: bool, seconds: float) -> str:
    one = next(r for r in rows if r["way"] == "single")
    labels = {**LABELS, "turns": "each node its own"} if bucket else LABELS  # a bucket has no turns
    per_interval = commit_every / 60
    lines = [f"{'bucket' if bucket else 'repository'}: {RANKS_PER_NODE} ranks per node, {seconds:g} s of logging, "
             f"commit_every {commit_every:g} s, Hub spacing 1 s; rates over the steady window, x: against one node",
             "", "| nodes | way | commits/min | x | commits per interval | Hub API requests/min | x "
             "| age of each node's newest record p50 / p95 | p95 in intervals |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['nodes']} | {labels[r['way']]} | {r['commits_per_min']:.1f} | "
                     f"{r['commits_per_min'] / one['commits_per_min']:.2f} | {r['commits_per_min'] * per_interval:.1f} | "
                     f"{r['requests_per_min']:.1f} | {r['requests_per_min'] / one['requests_per_min']:.2f} | "
                     f"{r['p50']:.1f} s / {r['p95']:.1f} s | {r['p95'] / commit_every:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)  # seconds: say -s
    parser.add_argument("--nodes", type=int, nargs="+", default=None, help="node counts (default 1 2 4 8)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of logging per job (default 60)")
    parser.add_argument("--commit-every-s", type=float, default=6.0, help="seconds between commits (default 6)")
    parser.add_argument("--bucket", action="store_true", help="a Storage Bucket instead of a repository")
    parser.add_argument("--ways", nargs="+", choices=["leader", "turns", "anchor"], default=["leader", "turns", "anchor"])
    parser.add_argument("--quick", action="store_true", help="1 and 4 nodes, 40 s")
    parser.add_argument("--rank", nargs=5, metavar=("WAY", "LOGDIR", "REPO", "SECONDS", "EVERY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank:
        way, logdir, repo, seconds, every = args.rank
        return rank_main(way, logdir, repo, float(seconds), float(every))
    if os.geteuid() != 0:
        raise SystemExit("simulated nodes need root (unshare --uts)")
    sizes = args.nodes or ([1, 4] if args.quick else [1, 2, 4, 8])
    seconds = args.seconds or (40.0 if args.quick else 60.0)
    ways = [w for w in args.ways if not (args.bucket and w == "anchor")]  # HFSummaryWriter has no buckets
    from hf_mpwriter.testing import HubServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp, HubServer(tokens={TOKEN}) as hub:
        for nodes in sorted(set(sizes) | {1}):
            for way in (["single", *(["anchor"] if "anchor" in ways else [])] if nodes == 1 else ways):
                started = time.monotonic()
                rows.append(run_job(hub, way, nodes, seconds, args.commit_every_s, Path(tmp), args.bucket))
                r = rows[-1]
                print(f"{nodes} node(s), {LABELS[way]}: {r['commits_per_min']:.1f} commits/min, "
                      f"{r['requests_per_min']:.1f} requests/min, age p50 {r['p50']:.1f} s p95 {r['p95']:.1f} s "
                      f"(steady {r['minutes'] * 60:.0f} s; {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    print(report(rows, args.commit_every_s, args.bucket, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
