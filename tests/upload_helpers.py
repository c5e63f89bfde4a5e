"""Helpers for the upload tests: real writer processes, waiting on conditions, checking targets.

Targets are checked by materialising what the target holds into a directory and reading it with
TensorBoard's own reader: every rank's remote run must hold each logged step exactly once, with
its value, and every remote event file must be byte-identical to a whole-record prefix of the
local one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from helpers import (  # noqa: F401
    LAUNCHER_VARS,
    kill_and_collect,
    read_file_events,
    read_line,
    read_raw_records,
    scalar_points,
    wait_for,
)

TESTS = Path(__file__).resolve().parent
#: Tokens the test Hub (the ``hub`` fixture of conftest.py) accepts: read-write, and read-only.
TOKEN = "hf_goodTokenForTests0123456789"
READ_ONLY = "hf_readOnlyTokenForTests0123"


def hub_env(hub, tmp_path: Path, token: str = TOKEN, xet: bool = True, **extra: str) -> dict:
    """Environment of a writer process talking to the test Hub: its endpoint, its own ``HF_HOME``,
    and the token in ``TEST_TOKEN`` (passed as ``token=``, never in ``HF_TOKEN``)."""
    env = hub.env(xet=xet)
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": token, **extra})
    env.pop("HF_TOKEN", None)
    return env


def writer_env(extra: Mapping[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONPATH"] = str(TESTS.parent) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


#: Runs ``proc_writer.py`` with torch made unimportable: the writer logs floats, and tensorboardX would
#: import torch if it could (~1.5 s of CPU per process, the largest cost of a writer process).
_WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = None; del sys.argv[0]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")


def writer_argv(cfg: dict) -> list[str]:
    """The command line of a writer process running ``tests/proc_writer.py`` (without torch)."""
    return [sys.executable, "-c", _WITHOUT_TORCH, str(TESTS / "proc_writer.py"), json.dumps(cfg)]


def start_writer(cfg: dict, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """A real writer process running ``tests/proc_writer.py`` (without torch)."""
    return subprocess.Popen(writer_argv(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=writer_env(env))


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for a writer to exit 0 (killed and failed after ``timeout`` s); return its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = kill_and_collect(proc)
        raise AssertionError(f"writer still running after {timeout} s (killed)\nstdout:\n{out}\nstderr:\n{err}") from None
    assert proc.returncode == 0, f"writer failed ({proc.returncode}): {err}"
    return err


def uploader_pid(logdir: Path) -> int | None:
    from hf_mpwriter.state.election import uploader_info
    from hf_mpwriter.state.liveness import is_alive

    info = uploader_info(logdir)
    return int(info["pid"]) if info and is_alive(info) else None


def committed_and_checked(logdir: Path, timeout: float = 30) -> bool:
    """What a returned ``close()`` promises, at once: every whole record of ``logdir`` committed and
    nothing queued. Then ``up_to_date``, which also needs the uploader's check of the target: that
    check follows the commit, so it may land a moment after ``close()`` returned (waited for here)."""
    from hf_mpwriter.cli.status import collect

    info = collect(logdir)
    committed = info["pending_jobs"] == 0 and all(
        f["bytes_committed"] >= f["bytes_written"] - f["torn_tail_bytes"] for f in info["files"])
    if not committed:
        return False
    wait_for(lambda: collect(logdir)["up_to_date"], timeout, f"the uploader's check of {logdir}'s last commit")
    return True


def sigkill(pid: int) -> None:
    """SIGKILL ``pid`` and wait until it is gone (or a zombie)."""
    import psutil

    os.kill(pid, signal.SIGKILL)
    try:
        proc = psutil.Process(pid)
        wait_for(lambda: not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, 10, f"pid {pid} to die")
    except psutil.NoSuchProcess:
        pass


def local_event_files(logdir: Path) -> dict[str, bytes]:
    """``relative path -> bytes`` of the logdir's event files (state directory excluded)."""
    out = {}
    for path in sorted(logdir.rglob("*tfevents*")):
        if ".hf_mpwriter" not in path.parts:
            out[path.relative_to(logdir).as_posix()] = path.read_bytes()
    return out


def materialise(files: Mapping[str, bytes], into: Path) -> Path:
    for rel, data in files.items():
        dest = into / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return into


def check_remote(logdir: Path, remote: Mapping[str, bytes], expected: Mapping[int, range], tmp: Path) -> None:
    """The target holds every expected step of every rank exactly once; its files are prefixes of
    the local ones ending at whole records (TensorBoard's reader consumes them entirely)."""
    local = local_event_files(logdir)
    assert set(remote) == set(local), f"remote files {sorted(remote)} != local {sorted(local)}"
    copy = materialise(remote, tmp)
    for rel, data in remote.items():
        assert local[rel].startswith(data), f"{rel}: remote is not a prefix of local"
        consumed = sum(16 + len(r) for r in read_raw_records(copy / rel))
        assert consumed == len(data), f"{rel}: remote file ends mid-record ({consumed} != {len(data)})"
    for rank, steps in expected.items():
        points = Counter()
        for rel in remote:
            if rel.startswith(f"rank-{rank:03d}/"):
                points.update(scalar_points(read_file_events(copy / rel), "loss"))
        want = Counter({(s, float(rank * 100000 + s)): 1 for s in steps})
        missing = want - points
        assert not missing, f"rank {rank}: {len(missing)} records missing remotely, e.g. {sorted(missing)[:5]}"
        dupes = {k: n for k, n in points.items() if n > 1}
        assert not dupes, f"rank {rank}: records duplicated remotely: {sorted(dupes)[:5]}"


def local_target_files(target: Path, prefix: str) -> dict[str, bytes]:
    root = target / prefix
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*tfevents*")) if p.is_file()}


def commit_time(commit: dict) -> float:
    """When the test Hub applied ``commit`` (its ``date``, as ``list_repo_commits`` gives it), as a wall time."""
    return datetime.fromisoformat(commit["date"].replace("Z", "+00:00")).timestamp()


def local_commits(target: Path) -> list[dict]:
    log = target / ".hf_mpwriter-commits.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def uploader_log_times(logdir: Path, message: str) -> list[float]:
    """Unix times of the ``uploader.log`` lines that contain ``message`` (``"committed "``: the commits),
    in order: what the uploader did and when, read from its own log (to the millisecond)."""
    path = logdir / ".hf_mpwriter" / "uploader.log"
    times = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if message in line:
            stamp = " ".join(line.split()[:2])  # "2026-01-02 03:04:05,678", logging's asctime
            times.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return times


def every_applied_commit_is_whole_and_only_grows(hub, repo: str, tmp_path: Path) -> int:
    """Every commit the Hub applied to ``repo`` (not only the last) holds event files cut at whole
    records, and no commit replaces a file with a shorter or different one (a late commit of a killed
    or abandoned uploader, a record sent twice). Returns the number of commits."""
    seen: dict[str, bytes] = {}
    commits = hub.commits(repo)
    for n, commit in enumerate(reversed(commits)):  # oldest first
        for path in hub.list_files(repo, revision=commit["oid"]):
            if "tfevents" not in path:
                continue
            data = hub.read_file(repo, path, revision=commit["oid"])
            copy = tmp_path / "history" / str(n) / path
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
            assert sum(16 + len(r) for r in read_raw_records(copy)) == len(data), f"{path} ends mid-record in {commit['oid']}"
            assert data.startswith(seen.get(path, b"")), f"{path} regressed in {commit['oid']}"
            seen[path] = data
    return len(commits)


def as_process_hub(hub, monkeypatch) -> None:
    """Make ``hub`` this process's Hub, as ``HF_ENDPOINT`` makes it for an uploader (huggingface_hub 0.x
    parses a commit's URL against it, whatever endpoint the client was given).

    huggingface_hub 0.x's ``file_download`` copies the URL template when it is first imported: it is
    imported here before the patch, or a later test of this pytest worker would download from this
    test's (by then stopped) Hub (CI saw test_preemption's reads refused on 0.34)."""
    import huggingface_hub.file_download
    import huggingface_hub.hf_api  # noqa: F401  (imported before the patch, for the same reason)
    from huggingface_hub import constants

    template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(huggingface_hub.file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template, raising=False)
