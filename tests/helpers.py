"""Shared test helpers: read event files back with TensorBoard's own reader, run child processes.

Everything read back here goes through TensorBoard's code (its record reader, which checks the
framing and both crc32c checksums in pure Python, independently of the ``crc32c`` package the
writer uses; its ``EventAccumulator``, which implements ``purge_step``; its multiplexer, which
decides what a "run" is). The writer is never asked to read its own files.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Callable

from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader, RawEventFileLoader
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Environment variables through which launchers tell a process its rank (cleared for tests).
LAUNCHER_VARS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
    "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK",
)

#: "Keep everything" for TensorBoard's reservoirs (the defaults sample).
ALL = {
    event_accumulator.SCALARS: 0,
    event_accumulator.HISTOGRAMS: 0,
    event_accumulator.COMPRESSED_HISTOGRAMS: 0,
    event_accumulator.IMAGES: 0,
    event_accumulator.AUDIO: 0,
    event_accumulator.TENSORS: 0,
    event_accumulator.GRAPH: 0,
}


# -- reading back ------------------------------------------------------------------------------
def event_files(run_dir: os.PathLike | str) -> list[Path]:
    """The event files directly in ``run_dir``, in TensorBoard's read order (by name)."""
    run_dir = Path(run_dir)
    return sorted((p for p in run_dir.iterdir() if "tfevents" in p.name and p.is_file()), key=lambda p: p.name)


def read_file_events(path: os.PathLike | str) -> list:
    """Every event TensorBoard's record reader gets out of one file (stops at a torn tail)."""
    return list(LegacyEventFileLoader(str(path)).Load())


def read_raw_records(path: os.PathLike | str) -> list[bytes]:
    """The serialized events of one file, as TensorBoard's record reader returns them."""
    return list(RawEventFileLoader(str(path)).Load())


def read_run_events(run_dir: os.PathLike | str) -> list:
    """Every event of a run directory, files in name order (what TensorBoard reads)."""
    events = []
    for path in event_files(run_dir):
        events.extend(read_file_events(path))
    return events


def summary_values(events: Iterable) -> list[tuple[int, object]]:
    """``(step, Summary.Value)`` for every summary value in ``events``."""
    return [(e.step, v) for e in events if e.HasField("summary") for v in e.summary.value]


def scalar_points(events: Iterable, tag: str | None = None) -> list[tuple[int, float]]:
    """``(step, simple_value)`` of every scalar (optionally only ``tag``) in ``events``."""
    return [
        (step, v.simple_value)
        for step, v in summary_values(events)
        if v.WhichOneof("value") == "simple_value" and (tag is None or v.tag == tag)
    ]


def accumulator(path: os.PathLike | str, purge: bool = True) -> event_accumulator.EventAccumulator:
    """TensorBoard's ``EventAccumulator`` on a run directory (or one file), everything kept."""
    acc = event_accumulator.EventAccumulator(str(path), size_guidance=ALL, purge_orphaned_data=purge)
    return acc.Reload()


def plugin_accumulator(path: os.PathLike | str, purge: bool = True) -> plugin_event_accumulator.EventAccumulator:
    """TensorBoard's plugin ``EventAccumulator`` (everything as tensors, as the plugins see it)."""
    acc = plugin_event_accumulator.EventAccumulator(
        str(path), size_guidance=ALL, tensor_size_guidance={}, purge_orphaned_data=purge
    )
    return acc.Reload()


def scalars(path: os.PathLike | str, tag: str, purge: bool = True) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` as TensorBoard's accumulator shows it."""
    return [(e.step, e.value) for e in accumulator(path, purge).Scalars(tag)]


def tensorboard_runs(logdir: os.PathLike | str) -> dict[str, Path]:
    """The runs TensorBoard's multiplexer finds under ``logdir``: ``{run name: directory}``."""
    mux = EventMultiplexer(size_guidance=ALL)
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return {run: Path(mux.RunPaths()[run]) for run in mux.Runs()}


def record_spans(path: os.PathLike | str) -> tuple[int, int]:
    """``(whole records, bytes they cover)`` from the length fields alone (no checksums).

    An independent framing walk: compared with what TensorBoard's checksumming reader yields, it
    shows that every whole record in a file is also a valid one.
    """
    return whole_records(Path(path).read_bytes())


def whole_records(data: bytes) -> tuple[int, int]:
    """``(whole records, bytes they cover)`` at the start of ``data`` (an event file's bytes, a remote copy's)."""
    offset = count = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):
            break
        offset, count = end, count + 1
    return count, offset


@contextlib.contextmanager
def served_store() -> Iterator[tuple[subprocess.Popen, int]]:
    """A TCPStore served by a process of its own (its host can be frozen with SIGSTOP, or killed); the process and
    its port. Ended on leaving (thawed first, where a test froze it)."""
    port = closed_port()
    code = ("import sys, time, datetime; from torch.distributed import TCPStore; "
            f"s = TCPStore('127.0.0.1', {port}, is_master=True, wait_for_workers=False, "
            "timeout=datetime.timedelta(seconds=30)); print('up', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield proc, port
    finally:
        if proc.poll() is None:  # (a test may have killed it)
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)


def closed_port() -> int:
    """A loopback port nothing listens on (yet): where a store starts later, or a server out of reach."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- waiting and child processes ----------------------------------------------------------------
def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


#: Children do not import torch (tensorboardX imports it if it can, ~1.5 s per process): the
#: process tests are about files and locks, not tensors.
_PREAMBLE = """\
import sys
if {no_torch}:
    sys.modules["torch"] = None
sys.path.insert(0, {root!r})
"""


def child_env(**extra: str) -> dict[str, str]:
    """This environment without launcher variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def child_code(code: str, torch: bool = False) -> str:
    return _PREAMBLE.format(no_torch=not torch, root=str(REPO_ROOT)) + textwrap.dedent(code)


def spawn(code: str, env: dict | None = None, torch: bool = False, **popen) -> subprocess.Popen:
    """Start ``python -c code`` (stdout/stderr piped, text mode)."""
    return subprocess.Popen(
        [sys.executable, "-c", child_code(code, torch)],
        env=env if env is not None else child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _unread(proc: subprocess.Popen) -> bytearray:
    """Bytes of ``proc``'s stdout that :func:`read_line` read past the line it returned."""
    if not hasattr(proc, "_unread_stdout"):
        proc._unread_stdout = bytearray()  # type: ignore[attr-defined]
    return proc._unread_stdout  # type: ignore[attr-defined]


def stacks(pids: Iterable[int]) -> str:
    """Every thread's Python stack of each of ``pids`` (``py-spy dump``, native frames too), for a test
    that timed out to say where its children waited; a line saying why where one cannot be read."""
    import shutil

    import psutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    parts = []
    for pid in pids:
        try:
            name = " ".join(psutil.Process(pid).cmdline())[:200]
            dump = subprocess.run([spy, "dump", "--native", "--pid", str(pid)], capture_output=True, text=True,
                                  timeout=30)
            parts.append(f"--- pid {pid}: {name}\n{dump.stdout}{dump.stderr}")
        except (psutil.Error, OSError, subprocess.TimeoutExpired) as exc:
            parts.append(f"--- pid {pid}: no stack ({exc!r})")
    return "\n".join(parts)


def process_tree(proc: subprocess.Popen) -> list[int]:
    """``proc`` and every process below it (those in sessions of their own included)."""
    import psutil

    try:
        return [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.Error:
        return [proc.pid]


def kill_and_collect(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGKILL ``proc``; whatever is left of its stdout and stderr (never blocks for long). Where it had
    not ended, its process tree's stacks come first in the stderr returned: where it waited."""
    evidence = stacks(process_tree(proc)) if proc.poll() is None else ""
    proc.kill()
    try:
        out, err = proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        out, err = "", "(stderr unreadable)"
    if evidence:
        err = f"stacks of the process tree before the kill:\n{evidence}\n--- its stderr:\n{err or ''}"
    return _unread(proc).decode(errors="replace") + (out or ""), err or ""


def read_line(proc: subprocess.Popen, prefix: str = "", timeout: float = 120.0) -> str:
    """Next stdout line of ``proc`` that starts with ``prefix`` (stripped), waiting at most ``timeout``
    seconds: a child that hangs or dies first fails the test (and is killed), it never hangs it.

    Reads the pipe's file descriptor directly (``select`` + ``os.read``), so the deadline can fire
    while the child prints nothing; bytes read past the line are kept for the next call and for
    :func:`finish`. Do not mix with ``proc.stdout.readline()`` on the same process.
    """
    assert proc.stdout is not None, "read_line needs stdout=PIPE"
    fd = proc.stdout.fileno()
    pending = _unread(proc)
    deadline = time.monotonic() + timeout
    while True:
        end = pending.find(b"\n")
        if end >= 0:
            line = pending[: end + 1].decode(errors="replace")
            del pending[: end + 1]
            if line.startswith(prefix):
                return line.strip()
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            out, err = kill_and_collect(proc)
            raise AssertionError(f"no {prefix!r} line within {timeout} s (child killed)\nstdout:\n{out}\nstderr:\n{err}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:  # EOF: the child closed its stdout (it exited)
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = "still running"
            out, err = kill_and_collect(proc)
            raise AssertionError(f"process exited ({code}) before printing {prefix!r}\nstdout:\n{out}\nstderr:\n{err}")
        pending += chunk


def finish(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """Wait for ``proc``; fail with its stderr unless it exited 0. Returns its stdout (what
    :func:`read_line` did not consume)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = kill_and_collect(proc)
        raise AssertionError(f"child timed out after {timeout} s\nstdout:\n{out}\nstderr:\n{err}") from None
    out = _unread(proc).decode(errors="replace") + (out or "")
    assert proc.returncode == 0, f"child exited with {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def run(code: str, env: dict | None = None, timeout: float = 30.0, torch: bool = False) -> str:
    """Run ``python -c code`` to completion; its stdout."""
    return finish(spawn(code, env, torch), timeout)


# -- file systems ------------------------------------------------------------------------------
def on_block_device(path: os.PathLike | str) -> bool:
    """Whether ``path``'s file system sits on a block device, whose I/O counters (``/proc/diskstats``)
    see what is written there: tmpfs, overlay and network file systems have none (major number 0)."""
    return os.major(os.stat(path).st_dev) != 0


def block_device_dir(tmp_path: Path) -> Path | None:
    """A fresh directory on a block device: ``tmp_path`` if it is on one, else one made under
    ``/var/tmp``, the home directory or the checkout (whichever is on one and writable; the caller
    removes it), else ``None``. For tests of disk I/O counters, which a tmpfs ``tmp_path`` never moves."""
    if on_block_device(tmp_path):
        return tmp_path
    import tempfile

    for parent in (Path("/var/tmp"), Path.home(), REPO_ROOT):
        try:
            if parent.is_dir() and on_block_device(parent):
                return Path(tempfile.mkdtemp(prefix="hf_mpwriter-test-", dir=parent))
        except OSError:
            continue
    return None


# -- processes a test (or a script) started ------------------------------------------------------------
def processes_naming(path: os.PathLike | str) -> list:
    """Live processes (other than this one) whose command line names ``path`` or a path under it: the
    uploaders of a test's logdir. ``.../test_x1`` does not match ``.../test_x10`` (nor ``popen-gw1``
    ``popen-gw10``). Each has ``info["cmdline"]``."""
    import psutil

    named = re.compile(re.escape(str(path).rstrip(os.sep)) + r"(?![^/\s\"',\]}])")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and named.search(" ".join(proc.info["cmdline"] or [])):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def kill_all(procs: list) -> None:
    """SIGKILL each of ``procs`` (one already gone is passed over) and wait up to 10 s for them to go."""
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the benches' own code, driven by a test)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module
