"""Screenshots of a big job as its users see it in stock TensorBoard (headless Chromium), for the docs.

1. ``job-view-default.png``: ``hf-mpwriter view`` on a big job's copy at the test Hub, as it opens by default:
   the job run alone. The job is laid out and committed as ``scripts/bench_view.py``'s (``--view-ranks`` rank runs,
   default 1,024 nodes x 8 ranks = 8,192, of small real event files, and a job run of each step's mean: see
   :func:`big_job`), to an in-process ``HubServer``; ``view``
   runs as a user runs it (``hf-mpwriter view hf://bench/view/tensorboard/job --port P``, TensorBoard reading
   ``hf://`` through huggingface_hub), and its page is shot once the job run's scalars are served.
2. ``job-run-percentiles.png``: the job run's Custom Scalars tab (each tag's mean in its min-max band, and the
   mean, p50, p90 and p99 across ranks as four lines) for a job of ``--ranks`` (default 32) real writer
   processes (``HFSummaryWriter``, ``WORLD_SIZE``/``RANK``, a local target) whose uploader writes the job run;
   rank ``--diverging`` diverges from step ``--diverge-at`` on. Viewed with ``hf-mpwriter view <logdir>``.
3. ``job-run-extreme-ranks.png``: the same job run's Text tab, ``~job/extreme_ranks``: each step's min and max
   rank and, from 100 ranks on (below, p99 is the max itself), the ranks above p99.

Run: ``python scripts/screenshots.py [--out docs/images] [--view-ranks 8192] [--ranks 32] [--steps 120]``
(``--only view`` or ``--only percentiles`` for one part). Needs Chromium at ``/usr/bin/chromium`` (Debian:
``apt-get install chromium``; ``--chromium PATH`` otherwise) and Pillow. Every process it starts (the ranks,
their uploader, TensorBoard, Chromium) is ended by its pid before it returns. Not a test: nothing imports it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

TAGS = ("loss", "grad_norm")


# -- the ranks of the percentiles' job (this file, run as a worker) ---------------------------------------
def value(tag: str, rank: int, step: int, diverging: int, diverge_at: int) -> float:
    """A rank's ``tag`` at ``step``: a decaying curve with lognormal noise across ranks; rank ``diverging``
    grows away from the others from ``diverge_at`` on."""
    noise = random.Random(f"{tag}/{rank}/{step}").lognormvariate(0.0, 0.12)
    if tag == "loss":
        base = 0.4 + 2.0 * math.exp(-step / 30)
    else:
        base = 1.0 + 4.0 * math.exp(-step / 20)
    if rank == diverging and step >= diverge_at:
        base *= 1.0 + 0.05 * (step - diverge_at)
    return base * noise


def worker(cfg: dict) -> int:
    """One rank: logs every tag for ``steps`` steps, prints ``logged``, stays a live writer until ``go``
    exists (the ranks of one job live together), closes (its uploader commits) and prints ``closed``."""
    from hf_mpwriter import HFSummaryWriter

    rank = int(os.environ["RANK"])
    writer = HFSummaryWriter(logdir=cfg["logdir"], target_dir=cfg["target"], commit_every=2 / 60, close_timeout=180)
    for step in range(cfg["steps"]):
        for tag in TAGS:
            writer.add_scalar(tag, value(tag, rank, step, cfg["diverging"], cfg["diverge_at"]), step)
        if step % 20 == 19:
            writer.flush()
    writer.flush()
    print("logged", flush=True)
    while not os.path.exists(cfg["go"]):
        time.sleep(0.2)
    writer.close()
    print("closed", flush=True)
    return 0


# -- processes, TensorBoard and Chromium -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end(proc: subprocess.Popen) -> None:
    """End ``proc`` and its process group (started with ``start_new_session``: it is its own group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wait_served(port: int, ready, what: str, timeout: float = 300) -> float:
    """Seconds until ``ready(port)`` is true of the TensorBoard at ``port`` (polled)."""
    began, logged = time.monotonic(), False
    while time.monotonic() - began < timeout:
        try:
            if ready(port):
                return time.monotonic() - began
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() - began > 60 and not logged:
            logged = True
            print(f"(still waiting for {what} after 60 s)", flush=True)
        time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not serve {what} within {timeout:.0f} s")


def job_scalars(port: int, tag: str = "loss") -> bool:
    """Whether TensorBoard serves ``tag`` of the job run (named ``job/.`` by ``--logdir_spec job:<path>``)."""
    tags = get_json(f"http://localhost:{port}/data/plugin/scalars/tags")
    return any(tag in run_tags for run, run_tags in tags.items() if run.split("/")[0] == "job")


def custom_layout(port: int) -> bool:
    layout = get_json(f"http://localhost:{port}/data/plugin/custom_scalars/layout")
    return bool(layout.get("category"))


def screenshot(chromium: str, url: str, out: Path, size: tuple[int, int], budget_ms: int = 20000) -> None:
    """Headless Chromium's picture of ``url`` after ``budget_ms`` of virtual time (TensorBoard is a JS app)."""
    with tempfile.TemporaryDirectory(prefix="chromium_") as profile:
        proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}",
             f"--screenshot={out}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(180)
        except subprocess.TimeoutExpired:
            pass
        finally:
            end(proc)
    if not out.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {url}")


def shrink(path: Path, crop: tuple[int, int, int, int] | None = None) -> None:
    """Crop (left, top, right, bottom) and store ``path`` as a small palette PNG."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    if crop:
        image = image.crop(crop)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def start_view(target: str, port: int, env: dict, log: Path) -> subprocess.Popen:
    """``hf-mpwriter view TARGET --port PORT`` as a user runs it (it becomes TensorBoard: ``os.execv``)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "hf_mpwriter", "view", target, "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))


# -- 1. the job's view of a big job at the test Hub -------------------------------------------------------
def big_job(ranks_total: int, steps: int) -> dict[str, bytes]:
    """``bench_view.simulated_job``'s copy of a job (each rank's run in the writer's layout, a job run naming a
    few ranks the slowest), its ``loss`` the decaying curve of :func:`value` (no rank diverging) in place of
    ``rank * 1000 + step``, and the job run's ``loss`` each step's mean of the ranks'."""
    from bench_view import WALL, _event_file, rank_run

    from hf_mpwriter.events.encoding import scalar_event, text_event

    files, sums = {}, [0.0] * steps
    for rank in range(ranks_total):
        values = [value("loss", rank, step, -1, 0) for step in range(steps)]
        sums = [a + b for a, b in zip(sums, values)]
        records = [scalar_event("loss", v, step, WALL + step) for step, v in enumerate(values)]
        files[f"{rank_run(rank)}/events.out.tfevents.{int(WALL)}.node{rank // 8}.{rank}"] = _event_file(records)
    records = [scalar_event("loss", total / ranks_total, step, WALL + step) for step, total in enumerate(sums)]
    records += [text_event("~job/slowest_rank", f"rank {(step * 977) % ranks_total}, 2.0 s after the first rank", step,
                           WALL + step) for step in range(steps)]
    files[f"job/events.out.tfevents.{int(WALL)}.leader.0"] = _event_file(records)
    return files


def shoot_view(args: argparse.Namespace, out: Path, tmp: Path) -> None:
    from bench_view import PREFIX, REPO, TOKEN, client_env, seed

    from hf_mpwriter.testing import HubServer

    with HubServer(tokens={TOKEN}) as server:
        began = time.monotonic()
        files = big_job(args.view_ranks, args.view_steps)
        commits = seed(server.endpoint, REPO, PREFIX, files)
        print(f"view: seeded {len(files)} files ({args.view_ranks} rank runs and a job run) in {commits} commits "
              f"in {time.monotonic() - began:.1f} s", flush=True)
        env = client_env(server.env(), str(tmp / "hf_home"))
        port, log = free_port(), tmp / "view.log"
        target = f"hf://{REPO}/{PREFIX}"
        view = start_view(target, port, env, log)
        try:
            took = wait_served(port, job_scalars, "the job run's scalars")
            print(f"view: `hf-mpwriter view {target} --port {port}` served the job run's scalars in {took:.1f} s; "
                  f"it printed:\n{log.read_text().strip()}", flush=True)
            runs = get_json(f"http://localhost:{port}/data/runs")
            print(f"view: TensorBoard's runs: {runs}", flush=True)
            path = out / "job-view-default.png"
            screenshot(args.chromium, f"http://localhost:{port}/#scalars", path, (1400, 760))
            shrink(path, crop=(0, 0, 1400, 580))  # (a window that short folds the sidebar's axis buttons)
            print(f"view: wrote {path} ({path.stat().st_size} bytes)", flush=True)
        finally:
            end(view)


# -- 2. the percentiles of a job with a diverging rank ----------------------------------------------------
def make_job(args: argparse.Namespace, tmp: Path) -> Path:
    """The job's ranks, each a real writer process of one job (``WORLD_SIZE``); their uploader writes the job
    run to a local target. Returns the logdir once the uploader has committed everything and exited."""
    from hf_mpwriter.state.election import uploader_info
    from hf_mpwriter.state.liveness import is_alive

    logdir, go = tmp / "runs" / "diverging", tmp / "go"
    cfg = {"logdir": str(logdir), "target": str(tmp / "target"), "steps": args.steps, "go": str(go),
           "diverging": args.diverging, "diverge_at": args.diverge_at}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "RANK", "LOCAL_", "WORLD_", "MASTER_"))}
    base_env["PYTHONPATH"] = str(ROOT)
    procs = []
    began = time.monotonic()
    try:
        for rank in range(args.ranks):
            env = {**base_env, "RANK": str(rank), "WORLD_SIZE": str(args.ranks), "LOCAL_RANK": str(rank),
                   "LOCAL_WORLD_SIZE": str(args.ranks)}
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        for proc in procs:
            line = proc.stdout.readline()
            if line.strip() != "logged":
                raise RuntimeError(f"a rank failed: {line}{proc.stderr.read()[-3000:]}")
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            if proc.returncode != 0:
                raise RuntimeError(f"a rank failed ({proc.returncode}): {err[-3000:]}")
    finally:
        for proc in procs:
            end(proc)
    deadline = time.monotonic() + 240
    while (info := uploader_info(logdir)) and is_alive(info):
        if time.monotonic() > deadline:
            raise TimeoutError("the uploader did not finish within 240 s")
        time.sleep(0.5)
    print(f"percentiles: {args.ranks} ranks of {args.steps} steps (rank {args.diverging} diverging from step "
          f"{args.diverge_at}) logged and committed in {time.monotonic() - began:.1f} s", flush=True)
    return logdir


def shoot_percentiles(args: argparse.Namespace, out: Path, tmp: Path) -> None:
    logdir = make_job(args, tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["PYTHONPATH"] = str(ROOT)
    port, log = free_port(), tmp / "view-local.log"
    view = start_view(str(logdir), port, env, log)
    try:
        took = wait_served(port, lambda p: custom_layout(p) and job_scalars(p, f"~job/{TAGS[0]}/p99"),
                           "the job run's layout and percentiles")
        print(f"percentiles: `hf-mpwriter view {logdir} --port {port}` served the layout in {took:.1f} s; "
              f"it printed:\n{log.read_text().strip()}", flush=True)
        path = out / "job-run-percentiles.png"
        screenshot(args.chromium, f"http://localhost:{port}/#custom_scalars", path, (1400, 780))
        shrink(path)
        print(f"percentiles: wrote {path} ({path.stat().st_size} bytes)", flush=True)
        path = out / "job-run-extreme-ranks.png"
        screenshot(args.chromium, f"http://localhost:{port}/#text&tagFilter=extreme_ranks", path, (1400, 720))
        shrink(path)
        print(f"percentiles: wrote {path} ({path.stat().st_size} bytes)", flush=True)
    finally:
        end(view)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="where the PNGs go")
    parser.add_argument("--only", choices=("view", "percentiles"), help="one part alone")
    parser.add_argument("--view-ranks", type=int, default=8192, help="rank runs of the big job at the test Hub")
    parser.add_argument("--view-steps", type=int, default=60, help="steps of each of its runs")
    parser.add_argument("--ranks", type=int, default=32, help="writer processes of the percentiles' job")
    parser.add_argument("--steps", type=int, default=120, help="steps each of them logs")
    parser.add_argument("--diverging", type=int, default=13, help="the rank that diverges")
    parser.add_argument("--diverge-at", type=int, default=60, help="the step it diverges from")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--keep", help="a new folder to keep the job's logdir, target and logs in (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots_") as tmp:
        if args.keep:
            os.makedirs(args.keep)
            tmp = args.keep
        if args.only in (None, "percentiles"):
            shoot_percentiles(args, out, Path(tmp))
        if args.only in (None, "view"):
            shoot_view(args, out, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
