#!/usr/bin/env python
"""What TensorBoard shows after each way a job is resumed after a preemption (issue 51), measured with
real processes against the project's test Hub (:class:`hf_mpwriter.testing.HubServer`, in this process).

Each row runs a 2-rank job (the Trainer's: rank 0 logs, as ``TensorBoardCallback`` does), SIGKILLs it
whole a few steps past its step-30 checkpoint (the launcher, every process it started, listed before
the kill, and the node's uploader: a lost node), relaunches it the way its framework resumes, and once
the relaunch ended waits up to 60 s for the uploads (no ``hf-mpwriter sync``). Then it reads what the
test Hub holds with TensorBoard's two readers (the Python one, ``--load_fast=false``, and the default
one, the Rust data server) and prints, per run: the points of ``train/attempt`` (every step logs the
attempt that logged it, 1 or 2), steps shown twice, steps missing, which attempt shows at the steps
both attempts logged (the overlap), and for each job run (``job``: the ranks' mean under the same tag)
how many steps differ from the mean of the rank runs as that reader shows them. It also compares the
killed attempt's event files as they were on local disk after the kill with the Hub's copy.

    row                how it is launched and resumed
    trainer            torchrun --standalone, 2 ranks, Trainer + HFMPWriterCallback(repo_id=...), default logdir
                       (<output_dir>/runs/<date>_<host>); resumed with train(resume_from_checkpoint=True)
    trainer-logdir     the same with HFMPWriterCallback(..., logdir="logs/trainer")
    lightning          python script.py (Lightning's own launcher, DDP, 2 ranks on CPU), HFMPWriterLogger("logs",
                       name="demo"), ModelCheckpoint(save_last=True, every_n_train_steps=10); fit(ckpt_path="last")
    lightning-version  the same with version="exp1"
    torchrun-default   torchrun --standalone, a plain script: HFSummaryWriter(repo_id=...) with the default logdir
                       (runs/torchrun-<rdzv id>, a new one at each launch), a checkpoint file per rank every 10
                       steps; relaunched, it resumes from its checkpoint without purge_step
    plain-purge        the same script with logdir="runs/exp" and purge_step=<checkpoint step> on resume

``--code PATH``: the checkout whose ``hf_mpwriter`` the launched processes import (first on their
``PYTHONPATH``; the test Hub always runs from this checkout). A checkout whose Lightning logger does not
continue an unfinished version (before 0b6a7fe) gets an explicit ``ModelCheckpoint(dirpath=...)``, the
same at both launches, for the ``lightning`` row, or ``ckpt_path="last"`` could not be found at all
(``--lightning-dirpath`` to choose).

    python scripts/resume_rows.py          # every row, this checkout (~4 min on 2 CPUs; ~6 min at 999e128: 60 s waits)
    git worktree add /tmp/old999 999e128
    python scripts/resume_rows.py --code /tmp/old999 --rows trainer lightning
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import resume_workers  # noqa: E402  (the tests' jobs: the trainer and lightning rows run them)
from helpers import kill_all, processes_naming, read_file_events, summary_values, whole_records  # noqa: E402
from tb_readers import Scalars, default_reader_scalars, python_reader_scalars  # noqa: E402
from upload_helpers import materialise  # noqa: E402

TOKEN = "hf_resumeRowsToken0123456789"
SAVE_EVERY = resume_workers.SAVE_EVERY  # steps between checkpoints (10)
KILL_AT = 35  # the step whose "step N" line triggers the kill (checkpoint-30 is there by then)
STEP_SLEEP = "0.15"  # seconds a step (the children's STEP_SLEEP)
UPLOAD_WAIT_S = 60.0
TAGS = ("train/attempt", "train/loss")
#: What tells a process its rank or its job (cleared: each launcher sets its own).
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                 "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID", "PMIX_NAMESPACE", "OMPI_COMM_WORLD_RANK",
                 "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE")


# ------------------------------------------------------------------------------------------------
# the jobs (``resume_rows.py --worker KIND OUT ATTEMPT OPTIONS``): tests/resume_workers.py's, and a plain one
# ------------------------------------------------------------------------------------------------
def _say_code() -> None:
    import hf_mpwriter

    print(f"hf_mpwriter {Path(hf_mpwriter.__file__).resolve().parent.parent}", flush=True)


def worker_plain(out: Path, attempt: int, opts: dict) -> None:
    """A plain torchrun script: every rank an HFSummaryWriter, its own checkpoint file every 10 steps."""
    import torch
    import torch.distributed as dist

    from hf_mpwriter import HFSummaryWriter

    dist.init_process_group("gloo")
    rank, steps = dist.get_rank(), opts["steps"]
    ckpt = out / "ckpt" / f"rank-{rank:03d}.pt"
    start = torch.load(ckpt, weights_only=True)["step"] if ckpt.exists() else 0
    newest = torch.tensor([start])
    dist.all_reduce(newest, op=dist.ReduceOp.MIN)  # the newest checkpoint every rank has
    start = int(newest.item())
    kwargs: dict[str, Any] = {}
    if opts["mode"] == "purge":  # README's "Restarts": a fixed logdir, purge_step at the checkpoint's step
        kwargs["logdir"] = "runs/exp"
        if start:
            kwargs["purge_step"] = start
    writer = HFSummaryWriter(repo_id=os.environ["REPO"], token=os.environ["TEST_TOKEN"], commit_every=1,
                             close_timeout=90, **kwargs)
    if rank == 0:
        print(f"logdir {writer.logdir} resumed at {start} {kwargs}", flush=True)
    for step in range(start, steps):
        if step % SAVE_EVERY == 0 and step > start:  # the state before `step`
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"step": step}, ckpt.with_suffix(".tmp"))
            os.replace(ckpt.with_suffix(".tmp"), ckpt)
        writer.add_scalar("train/loss", 1.0 / (1 + step) + 0.1 * rank, step)  # deterministic: the same at a resume
        writer.add_scalar("train/attempt", float(attempt), step)
        dist.barrier()
        if rank == 0:
            print(f"step {step}", flush=True)
        time.sleep(float(os.environ.get("STEP_SLEEP", STEP_SLEEP)))
    writer.close()
    dist.destroy_process_group()


def worker_main(argv: list[str]) -> None:
    kind, out, attempt, opts = argv[0], Path(argv[1]), int(argv[2]), json.loads(argv[3])
    _say_code()
    if kind == "trainer":
        resume_workers.trainer(out, attempt, **opts)
    elif kind == "lightning":
        resume_workers.lightning(out, attempt, logs="logs", **opts)  # HFMPWriterLogger("logs"): the row's folder
    else:
        worker_plain(out, attempt, opts)


# ------------------------------------------------------------------------------------------------
# TensorBoard's two readers (tests/tb_readers.py)
# ------------------------------------------------------------------------------------------------
READERS = {"python": python_reader_scalars, "rust": default_reader_scalars}


# ------------------------------------------------------------------------------------------------
# event files: framing, and the points each attempt logged (read raw, no reader's semantics)
# ------------------------------------------------------------------------------------------------
def raw_points(path: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` in one event file, as written (simple values or scalar tensors)."""
    from tensorboard.util import tensor_util

    points = []
    for step, value in summary_values(read_file_events(path)):
        if value.tag != tag:
            continue
        if value.WhichOneof("value") == "simple_value":
            points.append((step, float(value.simple_value)))
        elif value.HasField("tensor"):
            points.append((step, float(tensor_util.make_ndarray(value.tensor).item())))
    return points


def rank_files(row_dir: Path) -> dict[Path, bytes]:
    """Every ranks' event file under ``row_dir`` (not the job runs', not the state directories), whole records."""
    out = {}
    for path in sorted(row_dir.rglob("*tfevents*")):
        rel = path.relative_to(row_dir)
        if rel.parts[0] == "remote" or ".hf_mpwriter" in rel.parts or not re.fullmatch(r"rank-\d+", path.parent.name):
            continue
        data = path.read_bytes()
        out[path] = data[:whole_records(data)[1]]
    return out


def hub_files(hub: Any, repo: str) -> dict[str, bytes]:
    try:
        paths = hub.list_files(repo)
    except KeyError:  # no repository yet
        return {}
    return {p: hub.read_file(repo, p) for p in paths if "tfevents" in p}


def at_hub(local: dict[Path, bytes], remote: dict[str, bytes]) -> dict[Path, bytes]:
    """Each local file's copy at the Hub (matched by ``<run dir>/<file name>``; ``b""`` if none)."""
    by_key = {"/".join(p.split("/")[-2:]): data for p, data in remote.items()}
    return {path: by_key.get(f"{path.parent.name}/{path.name}", b"") for path in local}


def missing(local: dict[Path, bytes], remote: dict[Path, bytes]) -> dict[str, int]:
    """Bytes and records of ``local`` that the Hub's copies do not hold (a copy that is no prefix: all)."""
    out = {"files": len(local), "bytes": 0, "records": 0, "bytes_total": 0, "not_prefix": 0}
    for path, data in local.items():
        held = remote.get(path, b"")
        out["bytes_total"] += len(data)
        if not data.startswith(held):
            out["not_prefix"] += 1
            held = b""
        out["bytes"] += len(data) - len(held)
        out["records"] += whole_records(data)[0] - whole_records(held)[0]
    return out


# ------------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------------
class Job:
    """A launched attempt: its stdout lines (kept, and in a log file) and a way to wait for one."""

    def __init__(self, argv: list[str], cwd: Path, env: dict, log: Path) -> None:
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self.output.append(line.rstrip("\n"))
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, text: str, timeout: float) -> bool:
        """Until a line equal to ``text`` (True), or the job's end or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            if line.strip() == text:
                return True

    def finish(self, timeout: float) -> int:
        """The exit status, once every line it wrote is read (``TimeoutExpired`` after ``timeout``)."""
        status = self.proc.wait(timeout)
        self.pump.join(10)
        return status

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.output[-n:])

    def said(self, prefix: str) -> list[str]:
        return [line[len(prefix):].strip() for line in self.output if line.startswith(prefix)]


def uploaders_of(row_dir: Path) -> list[Any]:
    """The live uploaders of the row's logdirs (``python -m hf_mpwriter.uploader <logdir>``)."""
    return [p for p in processes_naming(row_dir) if "hf_mpwriter.uploader" in (p.info["cmdline"] or [])]


def kill_whole(job: Job, row_dir: Path) -> str:
    """SIGKILL as a lost node does it: the launcher, every process it started (listed before the first kill:
    torchrun's ranks are in sessions of their own), the node's uploaders."""
    import psutil

    launcher = psutil.Process(job.proc.pid)
    children = launcher.children(recursive=True)
    uploaders = uploaders_of(row_dir)
    kill_all(list({p.pid: p for p in [launcher, *children, *uploaders]}.values()))
    job.finish(10)
    others = len({c.pid for c in children} - {u.pid for u in uploaders})
    return f"the launcher, {others} process(es) it started, {len(uploaders)} uploader(s)"


def end_processes(path: Path) -> int:
    """SIGKILL every process left whose command line names ``path`` (uploaders still draining, a rank)."""
    left = processes_naming(path)
    kill_all(left)
    return len(left)


# ------------------------------------------------------------------------------------------------
# the rows
# ------------------------------------------------------------------------------------------------
ROWS: dict[str, dict[str, Any]] = {
    "trainer": {"kind": "trainer", "launch": "torchrun", "steps": 40, "first": 1, "opts": {}},
    "trainer-logdir": {"kind": "trainer", "launch": "torchrun", "steps": 40, "first": 1, "opts": {"logdir": "logs/trainer"}},
    "lightning": {"kind": "lightning", "launch": "python", "steps": 40, "first": 0, "opts": {}},
    "lightning-version": {"kind": "lightning", "launch": "python", "steps": 40, "first": 0, "opts": {"version": "exp1"}},
    "torchrun-default": {"kind": "plain", "launch": "torchrun", "steps": 40, "first": 0, "opts": {"mode": "default"}},
    "plain-purge": {"kind": "plain", "launch": "torchrun", "steps": 40, "first": 0, "opts": {"mode": "purge"}},
}


def continues_versions(code: Path) -> bool:
    """Whether ``code``'s Lightning logger continues a version whose attempt did not end (0b6a7fe on)."""
    source = code / "hf_mpwriter" / "integrations" / "lightning.py"
    return source.is_file() and "ENDED_FILE" in source.read_text()


def child_env(code: Path, hub: Any, row_dir: Path, repo: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(hub.env())
    env.update(HF_HOME=str(row_dir / "hf_home"), XDG_CACHE_HOME=str(row_dir / ".cache"), TEST_TOKEN=TOKEN, REPO=repo,
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", STEP_SLEEP=STEP_SLEEP,
               PYTHONPATH=str(code) + os.pathsep + env.get("PYTHONPATH", ""))
    env.pop("HF_TOKEN", None)  # the token goes as token=, from TEST_TOKEN
    return env


def launch(row: dict, row_dir: Path, env: dict, attempt: int, opts: dict) -> Job:
    worker = [str(Path(__file__).resolve()), "--worker", row["kind"], str(row_dir / "out"), str(attempt), json.dumps(opts)]
    if row["launch"] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *worker]
    else:
        argv = [sys.executable, *worker]
    return Job(argv, row_dir, env, row_dir / f"attempt-{attempt}.log")


def run_row(name: str, code: Path, hub: Any, base: Path, lightning_dirpath: str) -> dict:
    row = ROWS[name]
    row_dir = base / name
    (row_dir / "out").mkdir(parents=True)
    repo = f"user/rows-{name}"
    env = child_env(code, hub, row_dir, repo)
    opts = {**row["opts"], "steps": row["steps"]}
    notes = []
    if row["kind"] == "lightning" and not opts.get("version"):
        fixed = lightning_dirpath == "fixed" or (lightning_dirpath == "auto" and not continues_versions(code))
        if fixed:
            opts["dirpath"] = str(row_dir / "checkpoints")
            notes.append(f"ModelCheckpoint(dirpath={opts['dirpath']!r}) at both launches: this code's logger starts a "
                         "new version_N at each launch, so the default dirpath (<version>/checkpoints) would not hold "
                         "'last' (and rank 1 raises there, reading the version before the process group: "
                         "--lightning-dirpath default shows it)")
        else:
            notes.append("ModelCheckpoint's default dirpath (<version>/checkpoints)")
    result: dict[str, Any] = {"name": name, "notes": notes, "row": row}
    t0 = time.monotonic()
    try:
        first = launch(row, row_dir, env, 1, opts)
        result["jobs"] = [first]
        if not first.wait_line(f"step {KILL_AT}", timeout=300):
            raise RuntimeError(f"attempt 1 never reached step {KILL_AT} (exit {first.proc.poll()}):\n{first.tail()}")
        result["killed"] = kill_whole(first, row_dir)
        result["checkpoint"] = checkpoint_at_kill(row, row_dir, opts)
        result["killed_files"] = rank_files(row_dir)  # what the killed attempt had on disk
        second = launch(row, row_dir, env, 2, opts)
        result["jobs"].append(second)
        try:
            result["exit"] = second.finish(timeout=400)
        except subprocess.TimeoutExpired:
            kill_whole(second, row_dir)
            result["exit"] = "killed after 400 s"
        result["attempt_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        while True:  # the uploads: every rank file whole at the Hub and no uploader left, or 60 s
            done = missing(rank_files(row_dir), at_hub(rank_files(row_dir), hub_files(hub, repo)))["bytes"] == 0
            if (done and not uploaders_of(row_dir)) or time.monotonic() - t1 > UPLOAD_WAIT_S:
                break
            time.sleep(1)
        result["upload_wait_s"] = time.monotonic() - t1
        result["uploaders_left"] = len(uploaders_of(row_dir))
    finally:
        result["left_killed"] = end_processes(row_dir)
    remote = hub_files(hub, repo)
    result["missing_killed"] = missing(result["killed_files"], at_hub(result["killed_files"], remote))
    final = rank_files(row_dir)
    result["missing_all"] = missing(final, at_hub(final, remote))
    result["local_logdirs"] = sorted({str(p.parent.parent.relative_to(row_dir)) for p in final})
    result["attempts"] = logged_by_attempt(final)
    copy = materialise(remote, row_dir / "remote")
    root = copy / "tensorboard" if (copy / "tensorboard").is_dir() else copy
    result["readers"] = {}
    for reader, read in READERS.items():
        try:
            result["readers"][reader] = read(root) if copy.is_dir() else {}
        except Exception as exc:  # said in the table
            result["readers"][reader] = exc
    result["row_s"] = time.monotonic() - t0
    return result


def checkpoint_at_kill(row: dict, row_dir: Path, opts: dict) -> str:
    step = KILL_AT // SAVE_EVERY * SAVE_EVERY
    if row["kind"] == "trainer":
        found = sorted(p.name for p in (row_dir / "out").glob("checkpoint-*"))
    elif row["kind"] == "lightning":
        found = sorted(str(p.relative_to(row_dir)) for p in row_dir.rglob("*.ckpt"))
    else:
        found = sorted(str(p.relative_to(row_dir)) for p in (row_dir / "out" / "ckpt").glob("*.pt"))
    ok = any(f"-{step}" in f or f"={step}" in f for f in found) or row["kind"] == "plain"
    return ("" if ok else f"NO checkpoint of step {step}! ") + ", ".join(found)


def logged_by_attempt(files: dict[Path, bytes]) -> dict[int, dict[int, set[int]]]:
    """``{rank: {attempt: steps}}`` from the ranks' local event files, read raw (whatever any reader hides)."""
    out: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for path in files:
        rank = int(path.parent.name.split("-")[1])
        for step, value in raw_points(path, "train/attempt"):
            out[rank][int(value)].add(step)
    return {rank: dict(by) for rank, by in out.items()}


# ------------------------------------------------------------------------------------------------
# what a reader shows
# ------------------------------------------------------------------------------------------------
def spans(steps: Iterable[int]) -> str:
    """``1-5, 8`` (``–`` for none)."""
    steps = sorted(set(steps))
    if not steps:
        return "–"
    parts, start, prev = [], steps[0], steps[0]
    for s in steps[1:] + [None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(parts)


def _rank_of(run: str) -> int | None:
    match = re.fullmatch(r"rank-(\d+)", run.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def analyse(result: dict, runs: Scalars) -> list[dict]:
    """One entry per rank run and job run: points, steps twice, steps missing, the overlap, the job's mean."""
    row = result["row"]
    expected = set(range(row["first"], row["first"] + row["steps"]))
    overlap = {rank: by.get(1, set()) & by.get(2, set()) for rank, by in result["attempts"].items()}
    entries = []
    for run in sorted(runs):
        rank, is_job = _rank_of(run), run.rsplit("/", 1)[-1] == "job"
        if rank is None and not is_job:
            continue
        points = runs[run].get("train/attempt", [])
        counts = Counter(step for step, _ in points)
        entry = {"run": run, "kind": "job" if is_job else f"rank {rank}", "points": len(points),
                 "twice": sorted(s for s, n in counts.items() if n > 1), "missing": sorted(expected - set(counts))}
        over = set().union(*overlap.values()) if is_job else overlap.get(rank, set())
        entry["overlap_steps"] = over
        entry["overlap"] = overlap_shows(points, over)
        if is_job:
            parent = run.rsplit("/", 1)[0] if "/" in run else ""
            ranks = [r for r in runs if _rank_of(r) is not None and (r.rsplit("/", 1)[0] if "/" in r else "") == parent]
            entry["job"] = {tag: job_mismatch(runs[run].get(tag, []), [runs[r].get(tag, []) for r in ranks])
                            for tag in TAGS}
        entries.append(entry)
    return entries


def overlap_shows(points: list[tuple[int, float]], steps: set[int]) -> str:
    """Which attempt's value the run shows at ``steps`` (the steps both attempts logged)."""
    if not steps:
        return "no overlap"
    shown: dict[int, list[float]] = defaultdict(list)
    for step, value in points:
        if step in steps:
            shown[step].append(value)
    kinds = Counter()
    for step in steps:
        values = shown.get(step)
        if not values:
            kinds["not shown"] += 1
        elif len(values) > 1:
            kinds["both: " + ", then ".join(f"{v:g}" for v in values)] += 1
        else:
            kinds[f"attempt {values[0]:g}"] += 1
    return "; ".join(f"{k} ({n}/{len(steps)})" for k, n in sorted(kinds.items()))


def job_mismatch(job: list[tuple[int, float]], ranks: list[list[tuple[int, float]]]) -> dict[str, int]:
    """The job run against the mean of the rank runs as the reader shows them, over every step either shows:
    ``differ`` (each shows the step once, the job's value is not the ranks' mean), ``absent`` (the job or a
    rank does not show it), ``twice`` (a rank or the job shows it more than once; ``twice_last`` of them: the
    job's last value is the mean of the ranks' last values there), ``steps``."""
    out = {"differ": 0, "absent": 0, "twice": 0, "twice_last": 0, "steps": 0}
    shown = [defaultdict(list) for _ in ranks]
    for by, points in zip(shown, ranks):
        for step, value in points:
            by[step].append(value)
    own: dict[int, list[float]] = defaultdict(list)
    for step, value in job:
        own[step].append(value)
    for step in set(own).union(*[set(by) for by in shown]):
        out["steps"] += 1
        values = [by.get(step, []) for by in shown]
        if not own.get(step) or not all(values):
            out["absent"] += 1
            continue
        mean = sum(v[-1] for v in values) / len(values)
        if len(own[step]) > 1 or any(len(v) > 1 for v in values):
            out["twice"] += 1
            out["twice_last"] += _close(own[step][-1], mean)
        elif not _close(own[step][0], mean):
            out["differ"] += 1
    return out


def fmt_job(m: dict[str, int]) -> str:
    text = f"differ {m['differ']}/{m['steps']}"
    if m["absent"]:
        text += f", absent {m['absent']}"
    if m["twice"]:
        text += f", shown twice {m['twice']} (last values: mean at {m['twice_last']})"
    return text


def fmt_bytes(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def report(result: dict, label: str) -> str:
    name, lines = result["name"], []
    lines.append(f"### {name} ({label})")
    lines.append("")
    for note in result["notes"]:
        lines.append(f"- setup: {note}")
    jobs = result.get("jobs", [])
    if jobs:
        code = sorted(set(jobs[0].said("hf_mpwriter ")))
        lines.append(f"- hf_mpwriter imported by the job: {', '.join(code) or '?'}")
    killed = result.get("killed")
    if killed:
        lines.append(f"- killed at step {KILL_AT} (SIGKILL): {killed}; checkpoints then: {result['checkpoint']}")
    for i, job in enumerate(jobs, 1):
        said = job.said("logdir ") + [f"version {v}" for v in job.said("version ")]
        if said:
            lines.append(f"- attempt {i} said: {'; '.join(sorted(set(said)))}")
    lines.append(f"- attempt 2 exit: {result.get('exit')}" + ("" if result.get("exit") == 0 else
                                                            f"\n\n```\n{jobs[-1].tail() if jobs else ''}\n```\n"))
    for rank, by in sorted(result.get("attempts", {}).items()):
        logged = "; ".join(f"attempt {a}: {spans(s)}" for a, s in sorted(by.items()))
        lines.append(f"- rank {rank} logged (local files, raw): {logged}")
    lines.append(f"- local logdirs: {', '.join(result.get('local_logdirs', []))}")
    mk, ma = result["missing_killed"], result["missing_all"]
    lines.append(f"- the killed attempt's rank records on local disk after the kill: {mk['records'] and 'NOT all' or 'all'} "
                 f"at the Hub: missing {mk['records']} records, {fmt_bytes(mk['bytes'])} of {fmt_bytes(mk['bytes_total'])} "
                 f"({mk['files']} files{', ' + str(mk['not_prefix']) + ' not a prefix' if mk['not_prefix'] else ''}); "
                 f"all local rank files at the end: missing {ma['records']} records, {fmt_bytes(ma['bytes'])}")
    lines.append(f"- waited {result.get('upload_wait_s', 0):.0f} s for uploads (uploaders still alive then: "
                 f"{result.get('uploaders_left')}; processes ended at the row's end: {result.get('left_killed')})")
    lines.append("")
    headers = ["reader", "run", "points (train/attempt)", "steps twice", "steps missing", "at the overlap steps",
               "job run vs the mean of the rank runs shown (steps)"]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    for reader, runs in result["readers"].items():
        if isinstance(runs, Exception):
            lines.append(f"| {reader} | error: {runs} | | | | | |")
            continue
        entries = analyse(result, runs)
        if not entries:
            lines.append(f"| {reader} | (no run) | | | | | |")
        others = sorted(r for r in runs if _rank_of(r) is None and r.rsplit("/", 1)[-1] != "job")
        for e in entries:
            job = "; ".join(f"{tag}: {fmt_job(m)}" for tag, m in e["job"].items()) if "job" in e else "–"
            over = f"{spans(e['overlap_steps'])}: {e['overlap']}" if e["overlap_steps"] else e["overlap"]
            lines.append(f"| {reader} | `{e['run']}` | {e['points']} | {spans(e['twice'])} | {spans(e['missing'])} | "
                         f"{over} | {job} |")
        if others:
            lines.append(f"| {reader} | other runs: {', '.join(f'`{r}`' for r in others)} | | | | | |")
    return "\n".join(lines)


def summary(result: dict, label: str) -> str:
    parts = []
    for reader, runs in result["readers"].items():
        if isinstance(runs, Exception):
            parts.append(f"{reader}: error")
            continue
        entries = analyse(result, runs)
        ranks = [e for e in entries if e["kind"] != "job"]
        jobs = [e for e in entries if e["kind"] == "job"]
        over = Counter()
        for e in ranks:
            for piece in e["overlap"].split("; "):
                over[re.sub(r" \(\d+/\d+\)", "", piece)] += 1
        bad = Counter()
        for e in jobs:
            bad.update({k: v for k, v in e["job"]["train/attempt"].items() if k != "steps"})
        job = (f", job runs {len(jobs)} (train/attempt steps not the ranks' mean: differ {bad['differ']}, absent "
               f"{bad['absent']}, shown twice {bad['twice']})") if jobs else ""
        parts.append(f"{reader}: {len(ranks)} rank run(s) in {len({e['run'].rsplit('/', 1)[0] for e in ranks})} "
                     f"folder(s), steps twice {sum(len(e['twice']) for e in ranks)}, steps missing "
                     f"{sum(len(e['missing']) for e in ranks)}, overlap shows [{', '.join(sorted(over))}]{job}")
    mk = result["missing_killed"]
    return (f"**{result['name']}** ({label}): " + " | ".join(parts) +
            f" | killed attempt's records not at the Hub: {mk['records']} ({fmt_bytes(mk['bytes'])})"
            + ("" if result.get("exit") == 0 else f" | attempt 2 exit {result.get('exit')}"))


# ------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose hf_mpwriter the jobs import")
    parser.add_argument("--lightning-dirpath", choices=["auto", "default", "fixed"], default="auto",
                        help="the lightning row's ModelCheckpoint dirpath (auto: fixed where the code starts a new "
                             "version at each launch)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    args = parser.parse_args()
    code = args.code.resolve()
    if not (code / "hf_mpwriter" / "__init__.py").is_file():
        parser.error(f"{code} holds no hf_mpwriter package")
    sys.path.insert(0, str(ROOT))
    from hf_mpwriter.testing import HubServer

    rev = subprocess.run(["git", "-C", str(code), "log", "-1", "--format=%h"], capture_output=True, text=True)
    label = f"{code} @ {rev.stdout.strip() or '?'}"
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # the Python reader's notes on purged events
    base = Path(tempfile.mkdtemp(prefix="resume_rows_"))
    hub = HubServer(tokens={TOKEN}).start()
    print(f"# resume rows: {label}\n\nHub: HubServer at {hub.endpoint} (from {ROOT}); work in {base}; "
          f"{os.cpu_count()} CPUs; kill at step {KILL_AT}, checkpoints every {SAVE_EVERY} steps, "
          f"STEP_SLEEP={STEP_SLEEP} s, up to {UPLOAD_WAIT_S:.0f} s for uploads after the relaunch (no sync)\n", flush=True)
    t0 = time.monotonic()
    summaries = []
    try:
        for name in args.rows:
            try:
                result = run_row(name, code, hub, base, args.lightning_dirpath)
            except Exception as exc:  # one row failing does not hide the others
                print(f"### {name} ({label})\n\nFAILED: {exc}\n", flush=True)
                summaries.append(f"**{name}** ({label}): FAILED: {str(exc).splitlines()[0]}")
                continue
            print(report(result, label), flush=True)
            print(f"\n(row {result['row_s']:.0f} s: attempts {result['attempt_s']:.0f} s, uploads "
                  f"{result['upload_wait_s']:.0f} s)\n", flush=True)
            summaries.append(summary(result, label))
    finally:
        end_processes(base)
        hub.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("## summary\n")
    for line in summaries:
        print(f"- {line}")
    print(f"\ntotal {time.monotonic() - t0:.0f} s" + (f"; kept {base}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
