"""Shared plumbing of the side-by-side benchmarks (``scripts/bench_*.py``).

- :class:`Bench`: a temporary directory, the project's Hub-compatible test server
  (:class:`hf_mpwriter.testing.hub_server.HubServer`, in the bench process) and the worker
  processes started against it; :meth:`Bench.close` ends every process it started (workers, and
  the hf_mpwriter uploaders they spawned, by pid).
- Workers are subprocesses running this file (``python _bench_common.py '<json>'``): huggingface_hub
  reads ``HF_ENDPOINT`` at import time, so every client runs with ``server.env()``, its own
  ``HF_HOME`` and a dummy token. A worker creates one writer (``lib``):

  ``hf_mpwriter``  ``hf_mpwriter.HFSummaryWriter(repo_id, logdir=L, rank=r)`` -> ``L/rank-00r/``
  ``anchor``       ``huggingface_hub.HFSummaryWriter(repo_id, logdir=L/rank-00r)``: its best case,
                   a run directory of its own per process (a shared one would make every process
                   upload every rank's files, and tensorboardX may give two ranks the same file)
  ``tensorboardX`` ``tensorboardX.SummaryWriter(L/rank-00r)`` (local only)
  ``none``         no writer

  prints ``ready``, waits for a ``go`` line on stdin (so all workers start together), then loops:
  ``work`` iterations of a pure-Python loop, ``per_tick`` ``add_scalar`` calls (at step = the wall
  time in tenths of a second with ``step_clock``), a ``tick_s`` sleep; until ``duration_s`` /
  ``steps`` / a ``stop`` line. It prints ``logged``, waits for ``stop`` if ``hold``, closes (timed)
  and prints ``closed``. Events are JSON lines that :class:`Worker` reads.
- :func:`table` prints a markdown table; :func:`header` the machine and versions.

Every library runs with its own defaults except what a benchmark states (commit interval,
``rotate_bytes``).
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_benchmarktoken0000"
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                 "SLURM_LOCALID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE")
LOAD_AT_START = os.getloadavg()[0]  # others' work on the machine skews wall-clock results
LIB_LABELS = {"hf_mpwriter": "hf_mpwriter", "anchor": "huggingface_hub.HFSummaryWriter",
              "tensorboardX": "tensorboardX.SummaryWriter", "none": "no logger"}


# ------------------------------------------------------------------------------------------------
# bench side
# ------------------------------------------------------------------------------------------------
class Worker:
    """A worker process; its JSON stdout lines arrive in ``events``."""

    def __init__(self, proc: subprocess.Popen, cfg: dict) -> None:
        self.proc, self.cfg = proc, cfg
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: dict[str, dict] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.put(event)
        self.events.put({"event": "exit"})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, name: str, timeout: float = 120.0) -> dict:
        """The next ``name`` event (earlier ones are kept in ``seen``)."""
        if name in self.seen:
            return self.seen.pop(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                who = f"worker {self.cfg.get('rank')} ({self.cfg['lib']})"
                raise TimeoutError(f"{who}: no {name!r} in {timeout} s; see {self.cfg['stderr']}") from None
            if event["event"] == name:
                return event
            if event["event"] == "exit":
                raise RuntimeError(f"worker {self.cfg.get('rank')} ({self.cfg['lib']}) exited "
                                   f"({self.proc.wait()}) before {name!r}; see {self.cfg['stderr']}")
            self.seen[event["event"]] = event

    def send(self, command: str) -> None:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass


class Bench:
    """Temporary directory + HubServer + the processes started against it."""

    def __init__(self, name: str) -> None:
        from hf_mpwriter.testing.hub_server import HubServer

        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
        (self.tmp / "hf_home").mkdir()
        self.server = HubServer().start()
        self.workers: list[Worker] = []
        self.uploaders: dict[int, Any] = {}  # pid -> psutil.Process (guards against pid reuse)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is not None:  # the temporary directory goes away: show what the workers said
                for w in self.workers:
                    tail = Path(w.cfg["stderr"]).read_text(errors="replace").splitlines()[-15:]
                    if tail:
                        print(f"--- {w.cfg['stderr']} (last lines)\n" + "\n".join(tail), file=sys.stderr)
        finally:
            self.close()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
        env.update(self.server.env())
        env.update(HF_HOME=str(self.tmp / "hf_home"), HF_TOKEN=TOKEN, PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        return env

    def start(self, **cfg: Any) -> Worker:
        """Start a worker; see the module docstring for ``cfg``."""
        cfg.setdefault("rank", len(self.workers))
        cfg["stderr"] = str(self.tmp / f"worker-{len(self.workers)}-{cfg['lib']}.err")
        argv = [sys.executable, __file__, json.dumps(cfg)]
        if cfg.get("host") and os.geteuid() == 0 and shutil.which("unshare"):  # a simulated node of its own
            argv = ["unshare", "--uts", "sh", "-c", f'hostname {cfg["host"]} && exec "$@"', "node", *argv]
        env = self.env()
        env.update(cfg.get("env") or {})
        with open(cfg["stderr"], "w") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                    env=env)
        worker = Worker(proc, cfg)
        self.workers.append(worker)
        return worker

    def start_many(self, n: int, first_rank: int = 0, **cfg: Any) -> list[Worker]:
        """``n`` workers (ranks first_rank.. first_rank+n-1); returns once all are ready (writer created)."""
        workers = [self.start(**cfg, rank=first_rank + r) for r in range(n)]
        for w in workers:
            w.wait("ready", timeout=180)
        return workers

    def uploader_pid(self, logdir: Path) -> int | None:
        """The live hf_mpwriter uploader of ``logdir`` (remembered, so :meth:`close` can end it)."""
        import psutil

        from hf_mpwriter.state.election import uploader_info
        from hf_mpwriter.state.liveness import is_alive

        info = uploader_info(Path(logdir))
        if info and is_alive(info):
            pid = int(info["pid"])
            if pid not in self.uploaders:
                try:
                    self.uploaders[pid] = psutil.Process(pid)
                except psutil.Error:
                    return None
            return pid
        return None

    def wait_uploader_gone(self, logdir: Path, timeout: float = 60) -> None:
        """Wait for the uploader of ``logdir`` to exit on its own (it does once it is drained)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.uploader_pid(logdir) is not None:
            time.sleep(0.1)

    def finish(self, workers: Iterable[Worker], timeout: float = 180) -> None:
        for w in workers:
            try:
                w.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                w.proc.kill()

    def close(self) -> None:
        import psutil

        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        for proc in self.uploaders.values():  # uploaders our workers started; they exit once drained
            try:
                proc.wait(timeout=20)
            except psutil.TimeoutExpired:
                proc.kill()  # psutil checks it is still the same process
            except psutil.Error:
                pass
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class StatsSampler:
    """Polls the in-process server's counters (every ``interval`` s) in a thread.

    ``samples``: ``(monotonic time, commits on repo, bytes_received, lfs_bytes_received)``.
    """

    def __init__(self, server: Any, repo_id: str, interval: float = 0.02) -> None:
        self.server, self.repo_id, self.interval = server, repo_id, interval
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> tuple[float, int, int, int]:
        stats = self.server.stats
        s = (time.monotonic(), stats["commits_per_repo"].get(f"model:{self.repo_id}", 0),
             stats["bytes_received"], stats["lfs_bytes_received"])
        self.samples.append(s)
        return s

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def per_commit_bytes(self, since: float = 0.0) -> list[int]:
        """Bytes received before each commit (from the previous one; uploads precede their commit),
        for the commits after monotonic time ``since``."""
        samples = [s for s in self.samples if s[0] >= since] or self.samples[-1:]
        out, last_bytes, last_commits = [], samples[0][2], samples[0][1]
        for _, commits, nbytes, _ in samples:
            if commits > last_commits:
                n = commits - last_commits  # several commits between two samples share the bytes
                out += [(nbytes - last_bytes) // n] * n
                last_bytes, last_commits = nbytes, commits
        return out


def remote_coverage(server: Any, repo_id: str, logdir: Path) -> float:
    """Fraction of the local event-file bytes under ``logdir`` that the repo holds (matched by the
    path's last two components, ``<run dir>/<file>``)."""
    try:
        remote = {"/".join(p.split("/")[-2:]): p for p in server.list_files(repo_id)}
    except KeyError:
        return 0.0
    total = held = 0
    for path in Path(logdir).rglob("*tfevents*"):
        if ".hf_mpwriter" in path.parts:
            continue
        size = path.stat().st_size
        total += size
        key = "/".join(path.parts[-2:])
        if key in remote:
            held += min(size, len(server.read_file(repo_id, remote[key])))
    return held / total if total else 1.0


def free_port() -> int:
    """A loopback port nothing listens on now (for a store or a rendezvous the bench starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header(extra: str = "") -> str:
    import huggingface_hub
    import tensorboardX

    import hf_mpwriter

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
            f"hf_mpwriter {hf_mpwriter.__version__}, huggingface_hub {huggingface_hub.__version__}, "
            f"tensorboardX {tensorboardX.__version__}; Hub = hf_mpwriter.testing.HubServer on 127.0.0.1; "
            f"1-min load average {LOAD_AT_START:.1f} at the start" + (f"; {extra}" if extra else ""))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "–"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------------
def _emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def _make_writer(cfg: dict) -> tuple[Any, Callable[[], None]]:
    """``(writer, close)`` for ``cfg['lib']``."""
    lib, rank, logdir = cfg["lib"], cfg["rank"], Path(cfg["logdir"])
    every_min = None if cfg.get("default_interval") else cfg.get("commit_every_s", 2.0) / 60
    kwargs = cfg.get("kwargs") or {}
    if lib == "hf_mpwriter":
        import hf_mpwriter

        w = hf_mpwriter.HFSummaryWriter(cfg["repo_id"], logdir=logdir, rank=rank, commit_every=every_min,
                                        close_timeout=cfg.get("close_timeout", 120), **kwargs)
        return w, w.close
    if lib == "anchor":
        import huggingface_hub

        w = huggingface_hub.HFSummaryWriter(repo_id=cfg["repo_id"], logdir=str(logdir / f"rank-{rank:03d}"),
                                            commit_every=every_min, **kwargs)
        return w, lambda: w.__exit__(None, None, None)  # close + scheduler.trigger().result()
    if lib == "tensorboardX":
        import tensorboardX

        w = tensorboardX.SummaryWriter(str(logdir / f"rank-{rank:03d}"), **kwargs)
        return w, w.close
    if lib == "none":
        return None, lambda: None
    raise ValueError(f"unknown lib {lib!r}")


def worker_main(cfg: dict) -> None:
    go, stop = threading.Event(), threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            {"go": go, "stop": stop}.get(line.strip(), threading.Event()).set()
        stop.set()  # the bench went away

    threading.Thread(target=commands, daemon=True).start()
    store = None
    if cfg.get("host_store"):  # the job's store, hosted by rank 0 as an ``env://`` job's init_process_group does
        from datetime import timedelta

        from torch.distributed import TCPStore

        store = TCPStore("127.0.0.1", int(cfg["host_store"]), is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=30))
    writer, close = _make_writer(cfg)
    _emit("ready", pid=os.getpid())
    if cfg.get("wait_go", True):
        go.wait()
    work, per_tick, tick = int(cfg.get("work", 0)), int(cfg.get("per_tick", 1)), float(cfg.get("tick_s", 0.005))
    duration, steps = cfg.get("duration_s"), cfg.get("steps")
    record_steps = cfg.get("record_steps", False)
    tags = [f"bench/tag{i}" for i in range(per_tick)]
    step_times: list[float] = []
    step, scalars, sink = 0, 0, 0
    start = time.monotonic()
    while not stop.is_set():
        if duration is not None and time.monotonic() - start >= duration:
            break
        if steps is not None and step >= steps:
            break
        t0 = time.perf_counter()
        for i in range(work):  # fixed CPU work (a stand-in for a training step)
            sink += i * i % 7
        if writer is not None:
            at = int(time.time() * 10) if cfg.get("step_clock") else step  # the step says when it was logged
            for tag in tags:
                writer.add_scalar(tag, float(step % 1000) * 0.001, at)
            scalars += per_tick
        if record_steps:
            step_times.append(time.perf_counter() - t0)
        step += 1
        if tick:
            time.sleep(tick)
    _emit("logged", steps=step, scalars=scalars, seconds=time.monotonic() - start,
          step_times=step_times if record_steps else None)
    if cfg.get("hold"):  # keep the writer open until told to stop
        stop.wait()
    t0 = time.perf_counter()
    close()
    _emit("closed", close_s=time.perf_counter() - t0)
    del store  # the job's store lives as long as rank 0


if __name__ == "__main__":
    worker_main(json.loads(sys.argv[1]))
