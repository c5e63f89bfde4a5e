"""Time to the first chart of ``hf-mpwriter view`` on a big job's remote copy, and the Hub requests it costs.

A job of ``--ranks-total`` rank runs (default 1,024 nodes x 8 ranks = 8,192: small real event files, one run
folder per rank as the writer lays them out, and a job run naming a few ranks behind) is committed to the
test Hub (in-process, in a few big commits). Then, in one run, for each way of viewing it:

* **before**: today's command for it, ``hf-mpwriter view <repo> --print --ranks all`` (``--logdir`` on the whole
  folder: every rank's run);
* **after**: the job's view, ``hf-mpwriter view <repo> --print`` (``--logdir_spec`` with the job run alone), and
  ``--slowest K`` (the job run and the K ranks it names behind most often);

the production entry point prints TensorBoard's command, and a fresh process runs TensorBoard's own loader
(``EventMultiplexer``, as TensorBoard's data ingester drives it: every path's ``AddRunsFromDirectory``, then
``Reload``) on exactly the runs that command names, through ``hf://`` and the real huggingface_hub client,
until the job run's first scalar is readable: TensorBoard's first chart. Counted by the test Hub: every Hub API
request (its 5-minute window's, ``hf_mpwriter.testing.limits.is_api_route``), tree listings among them, of the
``view`` command and of the loader. A view not done within ``--timeout`` is reported "not done in N s", with
what it had spent by then.

The Hub is made a distant one: every request waits ``--latency-ms`` (the test Hub's ``latency`` fault, on every
route) and the Hub API's window is a free account's (1,000 requests per 5 minutes; ``--api-window none``: no
window), a fresh one for each view (the server's clock moves a window on between views): over the window the
client gets 429 and waits for the next, as against huggingface.co.

Run: ``python scripts/bench_view.py [--ranks-total 8192] [--steps 20] [--slowest 8] [--timeout 300]
[--latency-ms 100] [--api-window free|none]``.
``tests/test_view.py`` drives the same pieces on a small job.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hf_mpwriter.events.encoding import file_version_event, scalar_event, text_event  # noqa: E402
from hf_mpwriter.events.records import frame  # noqa: E402
from hf_mpwriter.state.run_dirs import in_block  # noqa: E402
from hf_mpwriter.testing.limits import is_api_route  # noqa: E402

TOKEN = "hf_benchViewToken0000"
REPO = "bench/view"
PREFIX = "tensorboard/job"
WALL = 1_700_000_000.0
#: The loader, in a fresh process (huggingface_hub reads ``HF_ENDPOINT`` at import): TensorBoard's data
#: ingester's first reload (``data_ingester.LocalDataIngester.start``), polled for the job run's first scalar.
LOADER = r"""
import json, sys, threading, time
t0 = time.monotonic()
from tensorboard.backend.event_processing import data_ingester, plugin_event_multiplexer
argv, tag = json.loads(sys.argv[1]), sys.argv[2]
if "--logdir" in argv:
    paths = {argv[argv.index("--logdir") + 1]: None}
else:
    paths = data_ingester._parse_event_files_spec(argv[argv.index("--logdir_spec") + 1])
mux = plugin_event_multiplexer.EventMultiplexer(size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
                                                tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE)
def reload():
    for path, name in paths.items():
        mux.AddRunsFromDirectory(path, name)
    print(json.dumps({"listed_s": time.monotonic() - t0, "runs": sorted(mux.Runs())}), flush=True)
    mux.Reload()
threading.Thread(target=reload, daemon=True).start()
while True:
    for run in list(mux.Runs()):
        if run.split("/")[0] == "job":
            try:
                points = mux.Tensors(run, tag)
            except KeyError:
                continue
            if points:
                print(json.dumps({"first_chart_s": time.monotonic() - t0, "step": points[0].step}), flush=True)
                sys.exit(0)
    time.sleep(0.05)
"""


def rank_run(rank: int) -> str:
    """The writer's layout for rank ``rank``'s run (``rank-003``, ``ranks-9000-17999/rank-9000``)."""
    return in_block(rank, f"rank-{rank:03d}", "ranks")


def _event_file(records: list[bytes]) -> bytes:
    return frame(file_version_event(WALL)) + b"".join(frame(r) for r in records)


def simulated_job(ranks_total: int, steps: int, behind: Mapping[int, int], missing: Mapping[int, int] | None = None,
                  job_run: bool = True) -> dict[str, bytes]:
    """A job's logdir as its remote copy holds it: ``path -> content``. Each rank logs ``loss`` = rank * 1000 +
    step for ``steps`` steps; the job run (where ``job_run``) holds each step's mean and names, at ``behind[rank]``
    steps each, that rank the step's slowest (``~job/slowest_rank``, as the uploader's job run writes it), and at
    ``missing[rank]`` steps each, that rank missing (``~job/loss/missing_ranks``)."""
    files = {}
    for rank in range(ranks_total):
        records = [scalar_event("loss", rank * 1000.0 + step, step, WALL + step) for step in range(steps)]
        files[f"{rank_run(rank)}/events.out.tfevents.{int(WALL)}.node{rank // 8}.{rank}"] = _event_file(records)
    mean = (ranks_total - 1) * 500.0
    records = [scalar_event("loss", mean + step, step, WALL + step) for step in range(steps)]
    named = [rank for rank, count in behind.items() for _ in range(count)]
    for step, rank in enumerate(named):
        records.append(text_event("~job/slowest_rank", f"rank {rank}, 2.0 s after the first rank", step, WALL + step))
    for step in range(max((missing or {}).values(), default=0)):
        late = [rank for rank, count in (missing or {}).items() if step < count]
        records.append(text_event("~job/loss/missing_ranks", "missing: rank " + ", ".join(map(str, late)), step, WALL))
    if job_run:
        files[f"job/events.out.tfevents.{int(WALL)}.leader.0"] = _event_file(records)
    return files


def seed(endpoint: str, repo: str, prefix: str, files: Mapping[str, bytes], per_commit: int = 2048) -> int:
    """Commit ``files`` under ``prefix`` of model repo ``repo`` (created first), ``per_commit`` a commit, through the
    Hub's commit API (regular files): a job's copy in a few commits, not the thousands its uploaders made."""
    import urllib.request

    def call(method: str, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(endpoint + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()

    namespace, name = repo.split("/")
    call("POST", "/api/repos/create", json.dumps({"name": name, "organization": namespace, "type": "model"}).encode(),
         "application/json")
    items, commits = sorted(files.items()), 0
    for start in range(0, len(items), per_commit):
        lines = [{"key": "header", "value": {"summary": f"seed {start}", "description": ""}}]
        lines += [{"key": "file", "value": {"path": f"{prefix}/{path}", "content": base64.b64encode(data).decode(),
                                             "encoding": "base64"}} for path, data in items[start:start + per_commit]]
        call("POST", f"/api/models/{repo}/commit/main", b"\n".join(json.dumps(line).encode() for line in lines),
             "application/x-ndjson")
        commits += 1
    return commits


def client_env(endpoint_env: Mapping[str, str], home: str) -> dict[str, str]:
    """A client process's environment: the test Hub's, its own ``HF_HOME``, the bench's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(endpoint_env, HF_HOME=home, HF_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    return env


def view_command(env: Mapping[str, str], target: str, *options: str, timeout: float = 300) -> list[str]:
    """What ``hf-mpwriter view TARGET OPTIONS --print`` prints: TensorBoard's command line (production's entry point)."""
    proc = subprocess.run([sys.executable, "-m", "hf_mpwriter", "view", target, "--print", *options], env=dict(env),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"view failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.split()


def load(env: Mapping[str, str], command: list[str], timeout: float, tag: str = "loss") -> dict[str, Any]:
    """TensorBoard's loader on ``command``'s runs until the job run's first ``tag`` point: ``first_chart_s``
    (from the loader's start, imports included), ``listed_s`` and ``runs`` (once every path was walked);
    ``timed_out`` where it was not done within ``timeout`` seconds."""
    out: dict[str, Any] = {"timed_out": False}
    with subprocess.Popen([sys.executable, "-c", LOADER, json.dumps(command), tag], env=dict(env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            out["timed_out"] = True
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    if not out["timed_out"] and "first_chart_s" not in out:
        raise RuntimeError(f"the loader ended without the job run's first scalar: {stderr.strip()[-2000:]}")
    return out


def api_requests(after: Mapping[str, Any], before: Mapping[str, Any]) -> Counter:
    """Hub API requests per route between two snapshots of the test Hub's ``stats``."""
    count = Counter({k: v for k, v in after["requests"].items() if is_api_route(k)})
    count.subtract({k: v for k, v in before["requests"].items() if is_api_route(k)})
    return +count


def measure(server: Any, env: Mapping[str, str], target: str, options: list[str], timeout: float) -> dict[str, Any]:
    """One way of viewing: the ``view`` command's requests, then the loader's, and its times."""
    start = server.stats
    command = view_command(env, target, *options)
    printed = server.stats
    loaded = load(env, command, timeout)
    end = server.stats
    view_calls, loader_calls = api_requests(printed, start), api_requests(end, printed)
    return {"command": command, "view_api": sum(view_calls.values()), "loader_api": sum(loader_calls.values()),
            "loader_tree": loader_calls["tree"], **loaded}


def scenarios(slowest: int) -> Iterator[tuple[str, list[str]]]:
    yield "before: every run (`--ranks all`, today's `--logdir`)", ["--ranks", "all"]
    yield "after: the job's view (default: the job run alone)", []
    if slowest:
        yield f"after: the job run + `--slowest {slowest}`", ["--slowest", str(slowest)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks-total", type=int, default=8192, help="rank runs of the job (default: 1,024 x 8)")
    parser.add_argument("--steps", type=int, default=20, help="steps each rank logged")
    parser.add_argument("--slowest", type=int, default=8, help="K of the --slowest row (0: no such row)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each view may take to its first chart")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="each request's wait at the Hub (a distant Hub)")
    parser.add_argument("--api-window", choices=("free", "none"), default="free",
                        help="the Hub API window: a free account's (1,000 requests / 5 min), or none")
    args = parser.parse_args(argv)

    from _bench_common import header, table

    from hf_mpwriter.testing import HubLimits, HubServer

    moved = [0.0]  # seconds the server's clock is moved on: a fresh API window for each view
    limits = HubLimits.hub_free() if args.api_window == "free" else HubLimits()

    behind = {r: 1 + r % 5 for r in range(3, args.ranks_total, max(1, args.ranks_total // 12))}  # a few ranks behind
    print(header(f"{args.ranks_total} rank runs of {args.steps} steps; each view's first chart within {args.timeout:.0f} s; "
                 f"{args.latency_ms:.0f} ms a request; API window: {args.api_window}"))
    with (tempfile.TemporaryDirectory(prefix="bench_view_") as tmp,
          HubServer(tokens={TOKEN}, limits=limits, clock=lambda: time.monotonic() + moved[0]) as server):
        began = time.monotonic()
        files = simulated_job(args.ranks_total, args.steps, behind)
        commits = seed(server.endpoint, REPO, PREFIX, files)
        print(f"seeded {len(files)} files in {commits} commits in {time.monotonic() - began:.1f} s", flush=True)
        env = client_env(server.env(), os.path.join(tmp, "hf_home"))
        if args.latency_ms > 0:
            server.inject("latency", route="any", times=None, seconds=args.latency_ms / 1000)
        rows = []
        for name, options in scenarios(args.slowest):
            moved[0] += limits.window_s
            refused_before = server.stats["limits_hit"].get("api_requests", 0)
            result = measure(server, env, f"hf://{REPO}/{PREFIX}", options, args.timeout)
            done = f"not done in {args.timeout:.0f} s" if result["timed_out"] else f"{result['first_chart_s']:.1f} s"
            runs = len(result["runs"]) if "runs" in result else "(still listing)"
            refused = server.stats["limits_hit"].get("api_requests", 0) - refused_before
            rows.append([name, runs, done, result["view_api"], result["loader_api"], result["loader_tree"], refused])
            print(f"  {name}: {done}, runs {runs}, API requests {result['view_api']} + {result['loader_api']}", flush=True)
    print(table(["view", "runs loaded", "first chart (job run's first scalar)", "API requests: view --print",
                 "API requests: TensorBoard's loader", "of which tree listings", "refused (429, window spent)"], rows))


if __name__ == "__main__":
    main()
