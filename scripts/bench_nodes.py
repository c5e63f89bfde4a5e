#!/usr/bin/env python
"""A multi-node job on the Hub: commits, Hub API requests and the age of each node's logs there, for
one leader, each node at its own slot (no store) and ``huggingface_hub.HFSummaryWriter`` in every rank, in one run.

Every job is N simulated nodes (``unshare --uts``: each node its own host name) x 2 ranks
(``--ranks-per-node``), node-local logdirs, one repository (``--bucket``: one Storage Bucket) on the
test Hub, through the real client (Xet). Each rank logs one scalar every 0.2 s. How the nodes start
and which store their uploaders meet in (``--store``):

``agent``  a real torchrun job (c10d rendezvous): the workers are clients of torchrun's agent store
``env``    an ``env://`` job as SLURM starts one (no torchrun): each node a shell starting its ranks
           with srun's variables (``SLURM_JOB_ID``, ``SLURM_NODEID``/``SLURM_NNODES``, ``SLURM_PROCID``) and
           ``MASTER_ADDR``/``MASTER_PORT``, ``RANK``/``WORLD_SIZE``; every rank calls
           ``init_process_group("gloo", init_method="env://")``, so rank 0 hosts the job's ``TCPStore``.
           The uploaders find it as :func:`hf_mpwriter.uploader.coordination.store.store_address` does: that
           address plus a job id (here ``SLURM_JOB_ID``), and their node from ``SLURM_NODEID``. The ranks
           start logging together (a barrier) and wait for each other before rank 0 ends (its store).

The ways:

``hf_mpwriter``   one node: its uploader commits (what every mode costs on one node)
``one leader``    hf_mpwriter with the job's store (torchrun's agent store, or the ``env://`` one): one
                  leader commits every node's files per interval
``turns``         hf_mpwriter with ``HF_MPWRITER_JOB_STORE=0``: each node commits its own files at its own
                  slot of the job's budget
``HFSummaryWriter in every rank``  the anchor, at its best: a run directory per rank, flushed every
                  second (its default, 120 s, would leave the target minutes behind); repositories only
                  (it has no buckets)

Clock: the test Hub takes a commit a second and the uploaders are told so
(``HF_MPWRITER_COMMITS_PER_HOUR=3600``, commits 1 s apart; huggingface.co: ~28 s), with ``commit_every``
6 s. The numbers that carry over to the Hub are per interval: at the default 5 minutes, one commit per
interval is 12 an hour, and the Hub takes about 128 an hour per repository. Without a store each node
commits at its own slot of the job's budget (``Plan.own_pacing``): the nodes together keep to its
commits and API requests, so each node's interval grows with their number.

Rates are over the steady window (:class:`Steady`: every node's records are at the target, so every
uploader has started and paid its one-time requests, and every rank still logs); the ratios are
against one node in the same run. Storage transfers (Xet CAS) are not Hub API requests and are left out
(``hf_mpwriter.testing.limits.is_api_route``). Age: every second of that window, now minus the wall time of
each node's newest record that the target holds; p50 and p95 over every look at every node.

After each job, once every node's logdir is committed (``hf-mpwriter status``'s "up to date"): every
rank's ``train/loss`` steps read back from the target with TensorBoard's reader; lost (a step missing)
and twice (a step more than once) are counted. Memory: every 3 s, the PSS (shared pages split among
the processes sharing them) of every process the job started, uploaders included, summed; and the
machine's available memory. Every process a job starts carries ``BENCH_NODES_RUN`` (a fresh value per
job) in its environment; whatever still carries it at the end is killed (nodes: their process groups).

Needs root (UTS namespaces). ``python scripts/bench_nodes.py [--nodes 1 2 4 8] [--seconds 60] [--bucket]
[--ranks-per-node 2] [--store agent|env]`` (~15 minutes on 2 CPUs; ``--quick``: 1 and 4 nodes, 40 s).
16 nodes of one rank each with an ``env://`` store: ``--nodes 16 --ranks-per-node 1 --store env --ways leader
--seconds 90`` (~4 minutes; about 310 MiB a node).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
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
TAG = "train/loss"
MARK = "BENCH_NODES_RUN"  # in the environment of every process a job starts (uploaders too): cleanup finds them by it
LABELS = {"single": "hf_mpwriter", "leader": "one leader", "turns": "each node at its own slot",
          "anchor": "HFSummaryWriter in every rank"}
#: The launcher's variables a job's processes get from this script only (not from the shell it runs in).
LAUNCHER_PREFIXES = ("SLURM_", "TORCHELASTIC_", "GROUP_", "PMI", "OMPI_", "PBS_", "LSB_", "FLUX_")
LAUNCHER_VARS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"}
#: One node of an ``env://`` job, as srun starts it (argv: the rank's command): its host name, then
#: ``SLURM_NTASKS_PER_NODE`` ranks, each with its global rank; exits with the first failure's status.
ENV_NODE = ('hostname "node-$SLURM_NODEID" || exit 1; rc=0; pids=; r=0; '
            'while [ "$r" -lt "$SLURM_NTASKS_PER_NODE" ]; do '
            'g=$((SLURM_NODEID * SLURM_NTASKS_PER_NODE + r)); '
            'RANK=$g SLURM_PROCID=$g LOCAL_RANK=$r SLURM_LOCALID=$r "$@" & pids="$pids $!"; r=$((r + 1)); done; '
            'for p in $pids; do wait "$p" || rc=$?; done; exit "$rc"')


# -- a rank (run by torchrun or a node's shell: python bench_nodes.py --rank ...) --------------------------
def rank_main(way: str, store: str, logdir: str, repo_id: str, seconds: float, commit_every: float) -> int:
    """Log ``train/loss`` every :data:`STEP_S` for ``seconds``, then close (the anchor: its final push).
    ``store == "env"``: the rank joins the job's process group first (``env://``: rank 0 hosts the store)."""
    rank = int(os.environ["RANK"])
    dist = None
    if store == "env":
        from datetime import timedelta

        import torch.distributed as dist

        dist.init_process_group("gloo", init_method="env://", timeout=timedelta(minutes=5))
    if way == "anchor":
        import huggingface_hub

        writer = huggingface_hub.HFSummaryWriter(repo_id=repo_id, logdir=f"{logdir}/rank-{rank:03d}",
                                                 commit_every=commit_every / 60, flush_secs=1)
        close = lambda: writer.__exit__(None, None, None)  # noqa: E731 - close + its last commit, awaited
    else:
        import hf_mpwriter

        writer = hf_mpwriter.HFSummaryWriter(repo_id=repo_id, logdir=logdir, commit_every=commit_every / 60)
        close = writer.close
    if dist is not None:
        dist.barrier()  # every rank logs from the same moment on
    for step in range(int(seconds / STEP_S)):
        writer.add_scalar(TAG, 1.0 / (step + 1), step)
        time.sleep(STEP_S)
    close()
    if dist is not None:
        dist.barrier()  # rank 0 (the store's host) ends after every rank has closed
        dist.destroy_process_group()
    return 0


# -- the bench side -----------------------------------------------------------------------------------
def rank_of(path: str) -> int:
    """The rank whose file ``path`` is (its run directory ``rank-NNN``; none: a job of one process)."""
    return next((int(part[5:]) for part in path.split("/") if part.startswith("rank-")), 0)


def records_by_node(files: dict[str, bytes], ranks_per_node: int) -> dict[int, tuple[float, float]]:
    """Node -> wall times of its oldest and newest whole record at the target."""
    from tensorboardX.proto.event_pb2 import Event

    span: dict[int, tuple[float, float]] = {}
    for path, data in files.items():
        if path.startswith("job/") or "/job/" in path:  # the job run (its mean has the ranks' tag): not a rank's
            continue
        node = rank_of(path) // ranks_per_node
        for _, payload in iter_records(io.BytesIO(data), 0, len(data)):
            event = Event.FromString(payload)
            if event.summary.value:
                old, new = span.get(node, (event.wall_time, event.wall_time))
                span[node] = (min(old, event.wall_time), max(new, event.wall_time))
    return span


def lost_and_twice(files: dict[str, bytes], ranks: int, steps: int, tmp: Path) -> tuple[int, int]:
    """(steps missing, steps more than once or unknown) of :data:`TAG` over every rank, ``files`` read with
    TensorBoard's reader (each rank logged steps ``0 .. steps - 1``, value ``1 / (step + 1)``)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    held: dict[int, Counter] = {rank: Counter() for rank in range(ranks)}
    tmp.mkdir(parents=True, exist_ok=True)
    for i, (path, data) in enumerate(sorted(p for p in files.items() if not (p[0].startswith("job/") or "/job/" in p[0]))):
        copy = tmp / f"{i}.tfevents"
        copy.write_bytes(data)
        for event in LegacyEventFileLoader(str(copy)).Load():
            for value in event.summary.value:
                if value.tag == TAG and abs(value.simple_value - 1.0 / (event.step + 1)) < 1e-6:
                    held.setdefault(rank_of(path), Counter())[event.step] += 1
    lost = sum(1 for rank in range(ranks) for step in range(steps) if not held[rank][step])
    expected = {(rank, step) for rank in range(ranks) for step in range(steps)}
    twice = sum(n - 1 if (rank, step) in expected else n  # a step logged once too many, or never logged
                for rank, counts in held.items() for step, n in counts.items())
    return lost, twice


class Steady:
    """Watches the target every second. The steady window opens once every node has records there
    (every uploader has started, made its first commit and paid its one-time requests: creating the
    repository, the model card, a first token) and closes when the first node stops logging (its
    oldest record + ``seconds``). Within it: each node's newest record's age at every look, and the
    Hub's counters at both ends."""

    def __init__(self, read: Callable[[], dict[str, bytes]], nodes: int, ranks_per_node: int, seconds: float,
                 snapshot: Callable[[], dict]) -> None:
        self.read, self.nodes, self.ranks_per_node, self.seconds = read, nodes, ranks_per_node, seconds
        self.snapshot = snapshot
        self.ages: list[float] = []
        self.opened: tuple[float, dict] | None = None
        self.closed: tuple[float, dict] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.closed is None:
            try:
                span = records_by_node(self.read(), self.ranks_per_node)
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


def marked(mark: str) -> list:
    """The live processes whose environment carries ``MARK=mark``: every process a job started."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARK) == mark:
                found.append(proc)
        except psutil.Error:
            pass
    return found


class Memory:
    """Every 3 s: the summed PSS of the job's processes (ranks, uploaders, the rest: shells, torchrun's
    agents), and the machine's available memory; the peaks."""

    def __init__(self, mark: str) -> None:
        import psutil

        self.mark = mark
        self.available_before = self.available_min = psutil.virtual_memory().available
        self.peak = {"ranks": 0, "uploaders": 0, "other": 0, "total": 0, "processes": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self.stop.wait(3.0):
            sums = {"ranks": 0, "uploaders": 0, "other": 0}
            procs = marked(self.mark)
            for proc in procs:
                try:
                    cmd = proc.cmdline()
                    pss = proc.memory_full_info().pss
                except psutil.Error:
                    continue
                python = bool(cmd) and os.path.basename(cmd[0]).startswith("python")  # not a node's shell
                kind = ("uploaders" if "hf_mpwriter.uploader" in cmd else "other" if "torch.distributed.run" in cmd
                        else "ranks" if python and "--rank" in cmd else "other")  # other: shells, torchrun's agents
                sums[kind] += pss
            sums["total"] = sum(sums.values())
            sums["processes"] = len(procs)
            self.peak = {k: max(v, sums[k]) for k, v in self.peak.items()}
            self.available_min = min(self.available_min, psutil.virtual_memory().available)


def end_processes(procs: list[subprocess.Popen], mark: str) -> int:
    """Kill every node's process group, then whatever else of the job still runs (its uploaders: they run in
    sessions of their own); how many of those there were."""
    import psutil

    for proc in procs:
        if proc.poll() is None:  # not reaped yet: its pid is still its group's (start_new_session)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    left = marked(mark)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=30)
    return len(left)


def clean_env() -> dict[str, str]:
    """This process's environment less any launcher's variables (a job gets its own)."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith(LAUNCHER_PREFIXES)}


def run_job(hub, way: str, nodes: int, ranks_per_node: int, store: str, seconds: float, commit_every: float,
            tmp: Path, bucket: bool) -> dict:
    """One job; what the Hub saw of it in its steady window, what reached it in the end, its memory."""
    from hf_mpwriter.cli.status import collect

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
    mark = uuid.uuid4().hex
    env = {**clean_env(), **hub.env(), "HF_HOME": str(tmp / "hf_home"), "HF_TOKEN": TOKEN, "OMP_NUM_THREADS": "1",
           "HF_MPWRITER_COMMITS_PER_HOUR": "3600", "HF_MPWRITER_JOB_STORE": "0" if way == "turns" else "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "GLOO_SOCKET_IFNAME": "lo", MARK: mark}
    port = free_port()
    target = f"hf://buckets/{repo}" if bucket else repo
    logdirs = [tmp / repo / f"node-{k}" / "logs" for k in range(nodes)]
    memory = Memory(mark)
    memory.thread.start()
    procs: list[subprocess.Popen] = []
    outs: list[Path] = []
    steady = Steady(read, nodes, ranks_per_node, seconds, lambda: {"stats": hub.stats, "commits": commits()})
    killed = 0
    try:
        for k in range(nodes):
            rank = [__file__, "--rank", way, store, str(logdirs[k]), target, str(seconds), str(commit_every)]
            if store == "agent":
                argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node",
                        str(ranks_per_node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                        "--rdzv-id", repo.replace("/", "-"), "--local-addr", "127.0.0.1", *rank]
                node = ["unshare", "--uts", "sh", "-c", f'hostname node-{k} && exec "$@"', "node", *argv]
                node_env = env
            else:
                node = ["unshare", "--uts", "sh", "-c", ENV_NODE, "node", sys.executable, *rank]
                node_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                            "WORLD_SIZE": str(nodes * ranks_per_node), "LOCAL_WORLD_SIZE": str(ranks_per_node),
                            "SLURM_JOB_ID": str(port), "SLURM_NNODES": str(nodes), "SLURM_NODEID": str(k),
                            "SLURM_NTASKS": str(nodes * ranks_per_node), "SLURM_NTASKS_PER_NODE": str(ranks_per_node)}
            outs.append(tmp / f"{repo.replace('/', '-')}-node-{k}.out")
            with open(outs[-1], "w") as out:
                procs.append(subprocess.Popen(node, env=node_env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        steady.thread.start()
        for k, proc in enumerate(procs):
            if proc.wait(timeout=seconds * 4 + 240) != 0:
                raise SystemExit(f"node {k} of the {nodes}-node {way} job failed (exit {proc.returncode}):\n"
                                 f"{outs[k].read_text()[-3000:]}")
        # Every node's uploader commits what its ranks left, then exits once drained.
        deadline = time.monotonic() + 180
        while not all(collect(d)["up_to_date"] for d in logdirs):
            if time.monotonic() > deadline:
                raise SystemExit(f"{nodes}-node {way} job: logdirs not committed 180 s after the job ended: "
                                 f"{[str(d) for d in logdirs if not collect(d)['up_to_date']]}")
            time.sleep(1.0)
        deadline = time.monotonic() + 60
        while marked(mark) and time.monotonic() < deadline:
            time.sleep(1.0)
    finally:
        steady.stop.set()
        if steady.thread.is_alive():
            steady.thread.join()
        killed = end_processes(procs, mark)
        memory.stop.set()
        memory.thread.join()
    if steady.opened is None or steady.closed is None:
        raise SystemExit(f"{nodes}-node {way} job: no steady window (the nodes' records never all reached the "
                         f"target while every rank logged): use more --seconds")
    logs = [(d / ".hf_mpwriter" / "uploader.log").read_text() if (d / ".hf_mpwriter" / "uploader.log").exists()
            else "" for d in logdirs]
    lost, twice = lost_and_twice(read(), nodes * ranks_per_node, int(seconds / STEP_S), tmp / f"read-{repo}")
    ages = sorted(steady.ages)
    minutes = (steady.closed[0] - steady.opened[0]) / 60
    return {"way": way, "nodes": nodes, "minutes": minutes,
            "commits_per_min": (steady.closed[1]["commits"] - steady.opened[1]["commits"]) / minutes,
            "requests_per_min": sum(api_requests(steady.closed[1]["stats"], steady.opened[1]["stats"]).values()) / minutes,
            "p50": statistics.median(ages), "p95": ages[int(0.95 * (len(ages) - 1))],
            "records": nodes * ranks_per_node * int(seconds / STEP_S), "lost": lost, "twice": twice,
            "memory": memory.peak, "available_drop": memory.available_before - memory.available_min,
            "available_min": memory.available_min, "killed": killed,
            # the scenario, from the uploaders' logs: the nodes that joined the job's leader, the leader's
            # commits, and how often a node committed its own files instead (the store failed or was gone)
            "joined": sum("commits through one leader" in log for log in logs),
            "leader_commits": sum(log.count("job leader: committed") for log in logs),
            "own_commits": sum(log.count("commits its files itself") for log in logs)}


def report(rows: list[dict], commit_every: float, bucket: bool, seconds: float, ranks_per_node: int, store: str) -> str:
    one = next(r for r in rows if r["way"] == "single")
    labels = {**LABELS, "turns": "each node its own"} if bucket else LABELS  # a bucket has no turns
    per_interval = commit_every / 60
    how = "torchrun, c10d rendezvous, agent store" if store == "agent" else "env:// store hosted by rank 0"
    gib = 1024 ** 3
    lines = [f"{'bucket' if bucket else 'repository'}: {how}; {ranks_per_node} rank(s) per node, {seconds:g} s of "
             f"logging, commit_every {commit_every:g} s, Hub spacing 1 s; rates over the steady window, x: against "
             f"one node; records: every rank's steps read back with TensorBoard's reader after the job; memory: "
             f"peak summed PSS of the job's processes (its ranks / its uploaders)",
             "", "| nodes | way | commits/min | x | commits per interval | Hub API requests/min | x "
             "| age of each node's newest record p50 / p95 | p95 in intervals | records lost / twice | memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["memory"]
        lines.append(f"| {r['nodes']} | {labels[r['way']]} | {r['commits_per_min']:.1f} | "
                     f"{r['commits_per_min'] / one['commits_per_min']:.2f} | {r['commits_per_min'] * per_interval:.1f} | "
                     f"{r['requests_per_min']:.1f} | {r['requests_per_min'] / one['requests_per_min']:.2f} | "
                     f"{r['p50']:.1f} s / {r['p95']:.1f} s | {r['p95'] / commit_every:.2f} | "
                     f"{r['lost']} / {r['twice']} of {r['records']:,} | {m['total'] / gib:.1f} GiB "
                     f"({m['ranks'] / gib:.1f} / {m['uploaders'] / gib:.1f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)  # seconds: say -s
    parser.add_argument("--nodes", type=int, nargs="+", default=None, help="node counts (default 1 2 4 8)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of logging per job (default 60)")
    parser.add_argument("--commit-every-s", type=float, default=6.0, help="seconds between commits (default 6)")
    parser.add_argument("--bucket", action="store_true", help="a Storage Bucket instead of a repository")
    parser.add_argument("--ways", nargs="+", choices=["leader", "turns", "anchor"], default=["leader", "turns", "anchor"])
    parser.add_argument("--ranks-per-node", type=int, default=2, help="ranks per node (default 2)")
    parser.add_argument("--store", choices=["agent", "env"], default="agent",
                        help="agent: torchrun jobs (c10d, the agent's store); env: env:// jobs, rank 0 hosts the store")
    parser.add_argument("--quick", action="store_true", help="1 and 4 nodes, 40 s")
    parser.add_argument("--rank", nargs=6, metavar=("WAY", "STORE", "LOGDIR", "REPO", "SECONDS", "EVERY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank:
        way, store, logdir, repo, seconds, every = args.rank
        return rank_main(way, store, logdir, repo, float(seconds), float(every))
    if os.geteuid() != 0:
        raise SystemExit("simulated nodes need root (unshare --uts)")

    def interrupted(signum: int, _frame: object) -> None:  # unwinds: each job's ``finally`` ends its processes
        raise SystemExit(f"bench_nodes: {signal.Signals(signum).name}")

    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a job started with ``&`` ignores it
        signal.signal(signum, interrupted)
    sizes = args.nodes or ([1, 4] if args.quick else [1, 2, 4, 8])
    seconds = args.seconds or (40.0 if args.quick else 60.0)
    ways = [w for w in args.ways if not (args.bucket and w == "anchor")]  # HFSummaryWriter has no buckets
    from hf_mpwriter.testing import HubServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp, HubServer(tokens={TOKEN}) as hub:
        for nodes in sorted(set(sizes) | {1}):
            for way in (["single", *(["anchor"] if "anchor" in ways else [])] if nodes == 1 else ways):
                started = time.monotonic()
                rows.append(run_job(hub, way, nodes, args.ranks_per_node, args.store, seconds, args.commit_every_s,
                                    Path(tmp), args.bucket))
                r, m, gib = rows[-1], rows[-1]["memory"], 1024 ** 3
                print(f"{nodes} node(s), {LABELS[way]}: {r['commits_per_min']:.1f} commits/min, "
                      f"{r['requests_per_min']:.1f} requests/min, age p50 {r['p50']:.1f} s p95 {r['p95']:.1f} s, "
                      f"lost {r['lost']} twice {r['twice']} of {r['records']} records; memory: PSS peak "
                      f"{m['total'] / gib:.2f} GiB over {m['processes']} processes (ranks {m['ranks'] / gib:.2f}, "
                      f"uploaders {m['uploaders'] / gib:.2f}, other {m['other'] / gib:.2f}), available "
                      f"{r['available_min'] / gib:.1f} GiB at least ({r['available_drop'] / gib:.1f} GiB less than "
                      f"before the job); {r['joined']} node(s) joined the job's leader, {r['leader_commits']} leader "
                      f"commit(s), {r['own_commits']} time(s) a node committed itself; {r['killed']} process(es) "
                      f"left at the end, killed "
                      f"(steady {r['minutes'] * 60:.0f} s; {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    print(report(rows, args.commit_every_s, args.bucket, seconds, args.ranks_per_node, args.store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
