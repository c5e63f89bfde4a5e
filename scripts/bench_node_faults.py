#!/usr/bin/env python
"""End-to-end runs of a multi-node job when something fails (issue 37's "Done when"), with real processes.

Every run is N simulated nodes x 1 rank (``unshare --uts``: each node its own host name), started by
``torchrun --nnodes N`` with a c10d rendezvous on 127.0.0.1 (the agents' store is the job's store),
node-local logdirs, one repository on the test Hub (``hf_mpwriter.testing.HubServer``, the Hub's free
limits on: 1,000 API requests per 5 minutes, 128 commits an hour), the real huggingface_hub client.
Each rank logs ``train/loss`` (value ``rank * 100000 + step``) every 0.2 s for ``--seconds`` and closes.

Runs (``--runs``):

``kill-store``      the default budget (``HF_MPWRITER_COMMITS_PER_HOUR`` not set);
                    ``--kill-at`` s after every rank started logging, SIGKILL every process of the node
                    hosting the store (the agent listening on the store's port, its rank, its uploader).
``leader-cut-off``  ``HF_MPWRITER_COMMITS_PER_HOUR=360`` (commits 10 s apart at the closest),
                    ``commit_every`` 6 s (a healthy job is ~11 s behind); node 0's writer and uploader get
                    an ``HF_ENDPOINT`` that accepts TCP connections and never answers. Nodes 1.. start their
                    writers ``--others-delay`` s after node 0's, so that node 0's uploader takes the lease first.
``leader-cut-mid``  the same, node 0's Hub address a proxy to the test Hub that, ``--kill-at`` s in, stops
                    forwarding and answering (its open connections hang, new ones are held): the leader's
                    node loses its route to the Hub mid-run (its Xet transfers, to the CAS address the Hub
                    gave, still go through: its Hub API calls, the commits among them, hang).
``healthy``         the same as leader-cut-off without the fault: the baseline (nodes 1.. delayed alike).
``normal-end``      the kill-store settings, nothing killed: the job ends normally.

What is measured, after the run, from the Hub's commit history (every commit, read at its revision: exact
to the commit's time, as a poll every second would see it, without loading the 2 CPUs while the job runs):

- **time to land**: for every surviving rank, the time of the commit that made its last record (the last
  step in its local files) present at the Hub, minus the moment its writer's ``close()`` began (or its
  SIGTERM came). Bound: 180 s.
- **behind** (leader-cut-off, leader-cut-mid, healthy): every second from the moment every rank logs until the first one
  stops, for each node but node 0: now minus the wall time of its newest record held at the Hub (before
  the first: now minus its first record's time); p50/p95 (bound with node 0 cut off: p95 <= 60 s). Also over
  the steady window of ``bench_nodes.py`` (opens once every such node has a record at the Hub).
- **exactly once**: every record each surviving rank wrote (its local files, TensorBoard's reader) is in
  the repository exactly once, read back through the real client; what a killed node committed is a
  prefix of what it wrote; every applied commit is whole and only grows (``tests/upload_helpers.py``).
- **uploaders**: each surviving node's ``uploader.json`` ``job`` (sampled every second while it runs),
  ``hf-mpwriter status --json``'s ``up_to_date`` after the run, and how each uploader exited (its log);
  with node 0 cut off, ``status --json`` of node 0 at 70% of the logging, after the others closed, and
  60 s later (its uploader still trying).

Exits 1 when a bound is missed, a record is missing or twice, or an uploader exits with records behind.
Needs root (UTS namespaces). ``PYTHONPATH=. python scripts/bench_node_faults.py [--runs kill-store
leader-cut-off leader-cut-mid healthy normal-end] [--nodes 8] [--seconds 75] [--kill-at 30] [--workdir DIR]
[--json FILE]``; a run takes 1 to 4 minutes on 2 CPUs (``--workdir`` keeps each node's logdir, uploader
log and torchrun output).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP_S = 0.2
TAG = "train/loss"
TOKEN = "hf_benchNodeFaults0123456789"
REPO = "bench/node-faults"
LAND_BOUND_S = 180.0
BEHIND_BOUND_S = 60.0


# -- a rank (torchrun runs: python bench_node_faults.py --rank LOGDIR REPO SECONDS EVERY DELAY) ---------------
def rank_main(logdir: str, repo: str, seconds: float, every: float, delay: float) -> int:
    """Log :data:`TAG` every :data:`STEP_S` for ``seconds``, then close; say when in ``rank-N.json`` next
    to the logdir (start, close begun, close returned; or the SIGTERM that ended it)."""
    sys.modules["torch"] = None  # type: ignore[assignment]  # tensorboardX would import it (~1.5 s CPU a rank)
    rank = int(os.environ["RANK"])
    info_path = Path(logdir).parent / f"rank-{rank}.json"
    info: dict = {"rank": rank, "pid": os.getpid()}

    def save() -> None:
        tmp = info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, info_path)

    step = -1

    def on_term(signum: int, _frame: object) -> None:  # after the writer's handler flushed (it chains to us)
        info.update(signalled_at=time.time(), last_step=step)
        save()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_term)
    time.sleep(delay)
    import hf_mpwriter

    writer = hf_mpwriter.HFSummaryWriter(repo_id=repo, logdir=logdir, commit_every=every / 60)
    info["start_at"] = time.time()
    save()
    for step in range(int(seconds / STEP_S)):  # noqa: B007 (read by on_term)
        writer.add_scalar(TAG, float(rank * 100000 + step), step)
        time.sleep(STEP_S)
    info.update(close_at=time.time(), last_step=step)
    save()
    writer.close()
    info.update(closed_at=time.time(), unwritten=writer.unwritten_bytes)
    save()
    return 0


# -- the bench side -----------------------------------------------------------------------------------------
class BlackHole:
    """A TCP listener that accepts every connection and never answers (a Hub out of reach, the route up)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted(conn)

    def accepted(self, conn: socket.socket) -> None:
        """A connection came: held, silent."""

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class CutProxy(BlackHole):
    """A TCP proxy to ``upstream`` that, once :meth:`cut`, forwards nothing more and answers nothing: the
    connections it holds stay open and silent, new ones are accepted and held (a node's route to the Hub
    lost mid-run, its connections hanging)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.cut_at: float | None = None
        super().__init__()

    def cut(self) -> None:
        self.cut_at = time.time()

    def accepted(self, conn: socket.socket) -> None:
        if self.cut_at is not None:
            return
        up = socket.create_connection(("127.0.0.1", self.upstream))
        self.held.append(up)
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    if self.cut_at is None:
                        dst.shutdown(socket.SHUT_WR)
                    return
                while self.cut_at is not None:  # cut: hold it, silent (the peer waits on its read timeout)
                    time.sleep(1.0)
                dst.sendall(data)
        except OSError:
            return


def rank_points(files: dict[str, bytes], rank: int) -> Counter:
    """``(step, value)`` of every :data:`TAG` record of ``rank`` in ``files`` (relative path -> bytes), read
    with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    points: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (rel, data) in enumerate(sorted(files.items())):
            if f"rank-{rank:03d}/" not in rel:
                continue
            copy = Path(tmp) / f"{i}.tfevents"
            copy.write_bytes(data)
            for event in LegacyEventFileLoader(str(copy)).Load():
                for value in event.summary.value:
                    if value.tag == TAG:
                        points[(event.step, value.simple_value)] += 1
    return points


def newest(data: bytes) -> tuple[int, float] | None:
    """(largest step, newest wall time) of the whole records of :data:`TAG` in one event file's bytes."""
    from tensorboardX.proto.event_pb2 import Event

    from hf_mpwriter.events.records import iter_records

    best = None
    for _, payload in iter_records(io.BytesIO(data), 0, len(data)):
        event = Event.FromString(payload)
        if any(v.tag == TAG for v in event.summary.value):
            best = (max(best[0], event.step), max(best[1], event.wall_time)) if best else (event.step, event.wall_time)
    return best


def hub_timeline(hub, repo: str) -> tuple[list[tuple[float, dict[int, tuple[int, float]]]], int]:
    """Every commit of ``repo``, oldest first: (its time, rank -> (largest step, newest wall time) held
    at the Hub once it applied); and the number of commits."""
    from datetime import datetime, timezone

    held: dict[str, tuple[int, float]] = {}  # path -> what it holds
    out = []
    commits = list(reversed(hub.commits(repo)))
    for commit in commits:
        for path in commit["added"]:
            if "tfevents" in path and "/rank-" in f"/{path}":  # (the job run's mean has the ranks' tag: not a rank)
                found = newest(hub.read_file(repo, path, revision=commit["oid"]))
                if found:
                    held[path] = found
        per_rank: dict[int, tuple[int, float]] = {}
        for path, (step, wall) in held.items():
            rank = next(int(p[5:]) for p in path.split("/") if p.startswith("rank-"))
            old = per_rank.get(rank, (-1, 0.0))
            per_rank[rank] = (max(old[0], step), max(old[1], wall))
        when = datetime.strptime(commit["date"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        out.append((when.timestamp(), per_rank))
    return out, len(commits)


def local_files(logdir: Path) -> dict[str, bytes]:
    return {p.relative_to(logdir).as_posix(): p.read_bytes() for p in logdir.rglob("*tfevents*")
            if ".hf_mpwriter" not in p.parts}


def log_text(logdir: Path) -> str:
    path = logdir / ".hf_mpwriter" / "uploader.log"
    return path.read_text(errors="replace") if path.exists() else ""


def exits(logdir: Path) -> list[str]:
    """How each uploader of ``logdir`` ended, from its log (its last words)."""
    return [line.split(" ", 4)[-1] for line in log_text(logdir).splitlines()
            if "uploader exits" in line or "They are kept queued" in line or "exiting" in line]


def status_json(logdir: Path) -> dict:
    """``hf-mpwriter status --json logdir``, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "hf_mpwriter", "status", "--json", str(logdir)], env=env,
                         capture_output=True, text=True, timeout=120)
    try:
        value = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"error": out.stdout[-2000:] + out.stderr[-2000:]}
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def tree(pid: int) -> list:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else float("nan")


def run(kind: str, nodes: int, seconds: float, kill_at: float, others_delay: float, every: float, tmp: Path,
        limits: bool, late: float = 60.0) -> dict:
    """One run of ``kind``; what it measured (see the module's docstring)."""
    import psutil
    from bench_nodes import MARK, clean_env, end_processes, marked
    from upload_helpers import every_applied_commit_is_whole_and_only_grows

    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.testing import HubLimits, HubServer

    fast = kind in ("leader-cut-off", "leader-cut-mid", "healthy")
    cut_off = [0] if kind in ("leader-cut-off", "leader-cut-mid") else []  # node 0: its Hub never answers
    base = tmp / kind
    logdirs = [base / f"node-{k}" / "logs" for k in range(nodes)]
    hole = BlackHole() if kind == "leader-cut-off" else None
    proxy = None
    mark = uuid.uuid4().hex
    result: dict = {"run": kind, "nodes": nodes, "seconds": seconds, "failures": []}
    fail = result["failures"].append
    with HubServer(tokens={TOKEN}, limits=HubLimits.hub_free() if limits else None) as hub:
        hub.create_repo(REPO)
        if kind == "leader-cut-mid":
            proxy = CutProxy(hub.port)
        env = {**clean_env(), **hub.env(), "HF_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
               "PYTHONPATH": str(ROOT), MARK: mark}
        if fast:
            env.update(HF_MPWRITER_COMMITS_PER_HOUR="360")
        port = _free_port()
        procs: list[subprocess.Popen] = []
        samples: dict[int, list[tuple[float, dict]]] = {k: [] for k in range(nodes)}  # uploader.json job, changes
        killed: int | None = None
        killed_at = None
        status_mid = None
        stop = threading.Event()

        def watch() -> None:  # every second: each node's uploader.json (gone once its uploader exits)
            while not stop.wait(1.0):
                for k, d in enumerate(logdirs):
                    try:
                        job = json.loads((d / ".hf_mpwriter" / "uploader.json").read_text()).get("job")
                    except (OSError, ValueError):
                        continue
                    if not samples[k] or samples[k][-1][1] != job:
                        samples[k].append((time.time(), job))

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            for k in range(nodes):
                logdirs[k].parent.mkdir(parents=True)
                node_env = {**env, "HF_HOME": str(logdirs[k].parent / "hf_home")}  # node-local
                if hole is not None and k == 0:
                    node_env["HF_ENDPOINT"] = f"http://127.0.0.1:{hole.port}"
                if proxy is not None and k == 0:
                    node_env["HF_ENDPOINT"] = f"http://127.0.0.1:{proxy.port}"
                delay = others_delay if (fast and k > 0) else 0.0
                argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", "1",
                        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"faults-{kind}",
                        "--monitor-interval", "0.5", "--local-addr", "127.0.0.1", __file__, "--rank", str(logdirs[k]),
                        REPO, str(seconds), str(every), str(delay)]
                node = ["unshare", "--uts", "sh", "-c", f'hostname node-{k} && exec "$@"', "node", *argv]
                with open(base / f"node-{k}.out", "w") as out:
                    procs.append(subprocess.Popen(node, env=node_env, stdout=out, stderr=subprocess.STDOUT,
                                                  start_new_session=True, cwd=logdirs[k].parent))
                if k == 0:  # node 0's agent hosts the rendezvous store (it binds the port first)
                    deadline = time.monotonic() + 60
                    while not _listening(port) and time.monotonic() < deadline:
                        time.sleep(0.2)
            watcher.start()
            infos = lambda: {k: _info(base, k) for k in range(nodes)}  # noqa: E731
            deadline = time.monotonic() + 300
            while not all("start_at" in i for i in infos().values()):
                if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                    raise SystemExit(f"{kind}: the ranks did not all start: {infos()}\n"
                                     f"{(base / 'node-0.out').read_text()[-3000:]}")
                time.sleep(0.5)
            started = max(i["start_at"] for i in infos().values())
            result["start_spread_s"] = started - min(i["start_at"] for i in infos().values())
            if proxy is not None:
                time.sleep(max(0.0, started + kill_at - time.time()))
                proxy.cut()
                result["cut_at_s"] = proxy.cut_at - started
            if kind == "kill-store":
                time.sleep(max(0.0, started + kill_at - time.time()))
                store_port = None
                for k in range(nodes):
                    job = samples[k][-1][1] if samples[k] else None
                    if job and job.get("store"):
                        store_port = int(job["store"].rsplit(":", 1)[1])
                        break
                if store_port is None:
                    raise SystemExit(f"{kind}: no uploader said where the job's store is: {samples}")
                listener = next(c.pid for c in psutil.net_connections("tcp")
                                if c.status == psutil.CONN_LISTEN and c.laddr.port == store_port)
                killed = next(k for k in range(nodes) if listener in {p.pid for p in tree(procs[k].pid)})
                victims = {p.pid: p for p in tree(procs[killed].pid)}
                uploader = json.loads((logdirs[killed] / ".hf_mpwriter" / "uploader.json").read_text())["pid"]
                victims[uploader] = psutil.Process(uploader)
                for proc in victims.values():
                    try:
                        proc.kill()
                    except psutil.NoSuchProcess:
                        pass
                killed_at = time.time()
                result.update(killed_node=killed, killed_at_s=killed_at - started, store_port=store_port,
                              killed_processes=len(victims))
                procs[killed].wait(30)
            alive = [k for k in range(nodes) if k != killed]
            # Every surviving rank ends (closes, or is stopped by its agent).
            deadline = time.monotonic() + seconds + 400
            while not all(("closed_at" in infos()[k] or "signalled_at" in infos()[k] or procs[k].poll() is not None
                           or (k in cut_off and "close_at" in infos()[k])) for k in alive):
                if cut_off and status_mid is None and time.time() > started + 0.7 * seconds:
                    status_mid = result["status_node0_mid"] = status_json(logdirs[0])
                if time.monotonic() > deadline:
                    fail(f"ranks still running {seconds + 400:.0f} s on: {infos()}")
                    break
                time.sleep(1.0)
            ended = {k: infos()[k].get("signalled_at", infos()[k].get("close_at")) for k in alive}
            last_end = max((t for t in ended.values() if t), default=time.time())
            if cut_off:
                result["status_node0_after_close"] = status_json(logdirs[0])
            # The surviving uploaders drain and exit (node 0's in leader-cut-off never reaches the Hub).
            waited = [k for k in alive if k not in cut_off]
            deadline = time.monotonic() + max(0.0, last_end + LAND_BOUND_S + 60 - time.time())
            uploaders = lambda: [p for p in marked(mark) if "hf_mpwriter.uploader" in " ".join(p.cmdline())]  # noqa: E731
            while time.monotonic() < deadline:
                running = {str(_logdir_of(p)) for p in uploaders()}
                if not any(str(logdirs[k]) in running for k in waited):
                    break
                time.sleep(2.0)
            result["uploaders_running_at_end"] = sorted({str(_logdir_of(p)) for p in uploaders()})
            result["status"] = {k: status_json(logdirs[k]) for k in alive}
            if cut_off:  # what node 0 says a while after it handed over (its uploader still trying)
                time.sleep(late)
                result["status_node0_late"] = status_json(logdirs[0])
                result["status_node0_late_at_s"] = time.time() - started
        finally:
            stop.set()
            result["left_killed"] = end_processes(procs, mark)
            for closing in (hole, proxy):
                if closing is not None:
                    closing.close()
        # -- what the Hub holds, and when it came ----------------------------------------------------------
        timeline, result["commits"] = hub_timeline(hub, REPO)
        result["hub_stats"] = {k: hub.stats[k] for k in ("commits", "limits_hit")}
        target = HubTarget(REPO, prefix="tensorboard/logs", token=TOKEN, endpoint=hub.endpoint)
        remote = {p[len("tensorboard/logs/"):]: target.read(p[len("tensorboard/logs/"):]) for p in hub.list_files(REPO)
                  if p.startswith("tensorboard/logs/") and "tfevents" in p}
        result["remote_prefixes"] = sorted({p.split("/", 2)[0] + "/" + p.split("/", 2)[1] for p in hub.list_files(REPO)
                                            if "tfevents" in p})
        try:
            every_applied_commit_is_whole_and_only_grows(hub, REPO, base / "history")
            result["commits_whole"] = True
        except AssertionError as exc:
            result["commits_whole"] = False
            fail(f"a commit is torn or shrank a file: {exc}")
    infos_end = {k: _info(base, k) for k in range(nodes)}
    result["ranks"] = {}
    for k in range(nodes):
        wrote = rank_points(local_files(logdirs[k]), k)
        landed = rank_points(remote, k)
        last = max((s for s, _ in wrote), default=-1)
        info = infos_end[k]
        end = info.get("signalled_at", info.get("close_at"))
        land_at = next((t for t, per in timeline if per.get(k, (-1, 0))[0] >= last), None) if last >= 0 else None
        row = {"wrote": sum(wrote.values()), "landed": sum(landed.values()),
               "twice": sum(n - 1 for n in landed.values() if n > 1),
               "missing": sum((wrote - landed).values()), "extra": sum((landed - wrote).values()),
               "ended_by": "signal" if "signalled_at" in info else "close" if "close_at" in info else "killed",
               "close_returned_after_s": info["closed_at"] - info["close_at"] if "closed_at" in info else None,
               "ended_at_s": None if end is None else end - infos_end[k].get("start_at", end),
               "land_after_end_s": (land_at - end) if (land_at is not None and end is not None) else None}
        result["ranks"][k] = row
        if k == killed:
            if row["extra"] or row["twice"]:
                fail(f"rank {k} (killed): {row['extra']} records not a prefix of what it wrote, {row['twice']} twice")
            continue
        if k in cut_off:
            continue
        if row["missing"] or row["twice"] or row["extra"]:
            fail(f"rank {k}: {row['missing']} missing, {row['twice']} twice, {row['extra']} never written")
        if row["land_after_end_s"] is None or row["land_after_end_s"] > LAND_BOUND_S:
            fail(f"rank {k}: last record landed {row['land_after_end_s']} s after its end (bound {LAND_BOUND_S:.0f} s)")
    for k, status in result.get("status", {}).items():
        if k in cut_off:
            continue
        if not status.get("up_to_date"):
            fail(f"node {k}: status says not up to date (pending {status.get('pending_bytes')} bytes, "
                 f"error {status.get('last_error')})")
    result["exits"] = {k: exits(logdirs[k]) for k in range(nodes)}
    for k, words in result["exits"].items():
        if k != killed and k not in cut_off and any("kept queued" in w for w in words):
            fail(f"node {k}'s uploader exited with records behind: {words}")
    logs = {k: log_text(logdirs[k]) for k in range(nodes)}
    result["leaders"] = [k for k in range(nodes) if "leads the job's commits" in logs[k]]
    result["handed_over"] = [k for k in range(nodes) if "hands the job's commits over" in logs[k]]
    result["own_commit_warnings"] = {k: logs[k].count("this node commits its files itself") for k in range(nodes)}
    result["store_gone_said"] = [k for k in range(nodes) if "is gone (its host stopped)" in logs[k]]
    result["job_samples"] = {k: [(round(t - started, 1), j) for t, j in samples[k]] for k in range(nodes)}
    if fast:
        behind(result, timeline, infos_end, [k for k in range(nodes) if k != 0], fail, bool(cut_off))
    return result


def behind(result: dict, timeline: list, infos: dict, watched: list[int], fail, gate: bool) -> None:
    """Each second while every rank logs: now minus the wall time of each watched node's newest record at
    the Hub (none yet: minus its first record's time); p50/p95, over the whole span and the steady window."""
    begin = max(infos[k]["start_at"] for k in infos)
    end = min(infos[k].get("close_at", infos[k].get("signalled_at", begin)) for k in watched)
    ages, steady = [], []
    t = begin
    while t <= end:
        per = {}
        for when, held in timeline:
            if when > t:
                break
            per = held
        row = [t - (per[k][1] if k in per else infos[k]["start_at"]) for k in watched]
        ages.extend(row)
        if all(k in per for k in watched):
            steady.extend(row)
        t += 1.0
    result["behind"] = {"span_s": end - begin, "p50": statistics.median(ages) if ages else None,
                        "p95": quantile(ages, 0.95), "max": max(ages, default=None),
                        "steady_p50": statistics.median(steady) if steady else None,
                        "steady_p95": quantile(steady, 0.95), "steady_samples": len(steady), "samples": len(ages)}
    if gate and not result["behind"]["p95"] <= BEHIND_BOUND_S:
        fail(f"the other nodes' records were {result['behind']['p95']:.0f} s behind at p95 (bound {BEHIND_BOUND_S:.0f} s)")


def _info(base: Path, k: int) -> dict:
    try:
        return json.loads((base / f"node-{k}" / f"rank-{k}.json").read_text())
    except (OSError, ValueError):
        return {}


def _logdir_of(proc) -> str:
    try:
        cmd = proc.cmdline()
        return next((c for c in cmd if "/logs" in c), "?")
    except Exception:
        return "?"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--runs", nargs="+", default=["kill-store", "leader-cut-off", "leader-cut-mid", "healthy"],
                        choices=["kill-store", "leader-cut-off", "leader-cut-mid", "healthy", "normal-end"])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=75.0, help="seconds each rank logs (default 75)")
    parser.add_argument("--kill-at", type=float, default=30.0,
                        help="kill-store, leader-cut-mid: seconds into the logging (default 30)")
    parser.add_argument("--workdir", type=Path, help="keep every node's logdir, logs and output here (default: a "
                        "temporary directory, deleted)")
    parser.add_argument("--others-delay", type=float, default=5.0,
                        help="leader-cut-off, leader-cut-mid, healthy: nodes 1.. create their writers this much later "
                        "(default 5)")
    parser.add_argument("--commit-every-s", type=float, default=6.0, help="the ranks' commit_every (default 6)")
    parser.add_argument("--no-hub-limits", action="store_true", help="the test Hub without the free account's limits")
    parser.add_argument("--json", type=Path, help="write every run's result here")
    parser.add_argument("--rank", nargs=5, metavar=("LOGDIR", "REPO", "SECONDS", "EVERY", "DELAY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank:
        logdir, repo, seconds, every, delay = args.rank
        return rank_main(logdir, repo, float(seconds), float(every), float(delay))
    if os.geteuid() != 0:
        raise SystemExit("simulated nodes need root (unshare --uts)")
    sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests"), str(ROOT)]

    def interrupted(signum: int, _frame: object) -> None:  # unwinds: each run's ``finally`` ends its processes
        raise SystemExit(f"bench_node_faults: {signal.Signals(signum).name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    results = []
    with tempfile.TemporaryDirectory(prefix="node-faults-") as tmp:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.workdir)
        for kind in args.runs:
            began = time.monotonic()
            result = run(kind, args.nodes, args.seconds, args.kill_at, args.others_delay, args.commit_every_s, Path(tmp),
                         not args.no_hub_limits)
            result["wall_s"] = time.monotonic() - began
            results.append(result)
            print(summary(result), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str))
    failed = [f"{r['run']}: {f}" for r in results for f in r["failures"]]
    print("\n".join(["FAILED:", *failed]) if failed else "every bound met")
    return 1 if failed else 0


def summary(r: dict) -> str:
    lines = [f"== {r['run']}: {r['nodes']} nodes x 1 rank, {r['seconds']:g} s of logging ({r['wall_s']:.0f} s wall); "
             f"{r['commits']} commits at the Hub (limits hit: {r['hub_stats']['limits_hit']}); leaders: {r['leaders']}; "
             f"handed over: {r['handed_over']}; said store gone: {r['store_gone_said']}"]
    if "killed_node" in r:
        lines.append(f"killed node {r['killed_node']} ({r['killed_processes']} processes, store port {r['store_port']}) "
                     f"{r['killed_at_s']:.1f} s after every rank logged")
    for k, row in r["ranks"].items():
        land = row["land_after_end_s"]
        ret = row["close_returned_after_s"]
        at = "" if row["ended_at_s"] is None else f" {row['ended_at_s']:.1f} s after it began logging"
        lines.append(f"  rank {k}: ended by {row['ended_by']}{at}; wrote {row['wrote']}, landed {row['landed']}, missing "
                     f"{row['missing']}, twice {row['twice']}, extra {row['extra']}; last record at the Hub "
                     f"{'never' if land is None else f'{land:.1f} s'} after its end; close() returned after "
                     f"{'-' if ret is None else f'{ret:.1f} s'}; own-commit warnings {r['own_commit_warnings'][k]}")
    if "behind" in r:
        b = r["behind"]
        lines.append(f"  behind (nodes 1..): p50 {b['p50']:.1f} s, p95 {b['p95']:.1f} s, max {b['max']:.1f} s over "
                     f"{b['span_s']:.0f} s ({b['samples']} looks); steady window p50 "
                     f"{b['steady_p50'] if b['steady_p50'] is None else round(b['steady_p50'], 1)} s, p95 "
                     f"{b['steady_p95']:.1f} s ({b['steady_samples']} looks)")
    for key in ("status_node0_mid", "status_node0_after_close", "status_node0_late"):
        status = r.get(key)
        if status:
            lines.append(f"  {key}: up_to_date {status.get('up_to_date')}, pending {status.get('pending_bytes')} B, "
                         f"last_error {status.get('last_error')!r}, job {json.dumps((status.get('uploader') or {}).get('job'))}")
    for k, status in r.get("status", {}).items():
        job = (status.get("uploader") or {}).get("job")
        lines.append(f"  node {k} status: up_to_date {status.get('up_to_date')}, pending {status.get('pending_bytes')} B, "
                     f"last_error {status.get('last_error')!r}, uploader {'running' if status.get('uploader') else 'gone'}"
                     f"{'' if job is None else ', job ' + json.dumps(job)}; exits: {r['exits'][k]}")
    lines.append(f"  commits whole and only growing: {r.get('commits_whole')}; processes left at the end: {r['left_killed']}")
    lines += [f"  FAIL {f}" for f in r["failures"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
