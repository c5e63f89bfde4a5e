"""Per-node system metrics (:mod:`hf_mpwriter.uploader.system_metrics`).

- Two nodes for real (UTS namespaces: ``unshare --uts`` + ``hostname node-k``), two writer
  processes each with ``system_metrics=1``, node-local logdirs, one bucket on the test Hub: each
  node's uploader puts ``system/node-k`` next to the ranks' runs, with every series and sane values
  (checked against what this machine reports), read back with TensorBoard's reader; the training
  processes run no sampler; the last commit holds every sample.
- The README's example, as written.
- The sampler alone: its readings, sources that fail, pausing, and the GPU path. There is no GPU on
  this machine: NVML is replaced by a stand-in there (and the real ``nvidia-ml-py``, if installed,
  must find no driver and leave GPUs out without an error).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import accumulator, block_device_dir, run, scalars, tensorboard_runs, wait_for
from test_launchers import examples, run_example, wait_up_to_date
from upload_helpers import TOKEN, local_target_files, materialise, writer_env

from hf_mpwriter.config import UploadConfig
from hf_mpwriter.errors import ConfigurationError
from hf_mpwriter.timing import SYSTEM_METRICS_PERIOD_S as DEFAULT_PERIOD_S
from hf_mpwriter.upload_args import period_seconds
from hf_mpwriter.uploader.system_metrics import SystemMetrics, start_for

#: Every series of a machine without GPUs.
SERIES = {
    "cpu/percent", "cpu/load_1m", "memory/used_GiB", "memory/available_GiB", "memory/percent", "memory/swap_percent",
    "disk/used_GiB", "disk/free_GiB", "disk/percent", "disk/read_MiB_per_s", "disk/write_MiB_per_s",
    "network/recv_MiB_per_s", "network/sent_MiB_per_s",
}
GIB = float(1 << 30)

#: A rank: logs for ``seconds``, and on until its node's system run holds 3 samples (the node's uploader
#: may start late on a loaded machine; it samples only while a writer is alive), then closes.
WRITER = """
import json, os, socket, sys, threading, time
from pathlib import Path
from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.events.records import iter_records

cfg = json.loads(sys.argv[1])
writer = HFSummaryWriter(cfg["repo_id"], logdir=cfg["logdir"], rank=cfg["rank"], commit_every=1 / 60,
                         system_metrics=1, token=os.environ["TEST_TOKEN"], close_timeout=60)
system_run = Path(cfg["logdir"], "system", socket.gethostname())

def samples():
    records = 0
    for path in system_run.glob("*tfevents*"):
        with open(path, "rb") as f:
            records += sum(1 for _ in iter_records(f))
    return (records - 2) // 13  # file version and info records; 13 series a sample

started, step = time.monotonic(), 0
while time.monotonic() < started + cfg["seconds"] or (samples() < 3 and time.monotonic() < started + 90):
    writer.add_scalar("loss", float(step), step)
    step += 1
    time.sleep(0.01)
print(json.dumps({"threads": [t.name for t in threading.enumerate()], "steps": step}), flush=True)
writer.close()
"""


def _in_node(k: int, argv: list[str]) -> list[str]:
    """``argv`` run as node ``k``: its own host name (UTS namespace), as in test_multinode.py."""
    return ["unshare", "--uts", "sh", "-c", f'hostname node-{k} && exec "$@"', "node", *argv]


def check_sane(values: dict[str, list[float]], disk_path: Path) -> None:
    """Values a real machine can have, compared with what psutil says about this one now."""
    for tag, series in values.items():
        assert series and all(math.isfinite(v) and v >= 0 for v in series), (tag, series)
    assert all(v <= 100 for tag in ("cpu/percent", "memory/percent", "memory/swap_percent", "disk/percent")
               for v in values[tag])
    total = psutil.virtual_memory().total / GIB
    for used, available in zip(values["memory/used_GiB"], values["memory/available_GiB"]):
        assert abs(used + available - total) < 0.01 * total, (used, available, total)
    disk = shutil.disk_usage(disk_path)
    for used, free in zip(values["disk/used_GiB"], values["disk/free_GiB"]):
        assert used + free <= disk.total / GIB * 1.001 and abs(free - disk.free / GIB) < 5, (used, free)
    assert max(values["cpu/percent"]) > 0, "two CPU-bound nodes on this machine"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="simulated nodes need root and unshare (UTS namespaces)")
def test_two_nodes_each_upload_their_own_system_run(tmp_path, hub):
    env = writer_env({**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN})
    env.pop("HF_TOKEN", None)
    started = time.time()
    procs = []
    for node in range(2):
        node_env = {**env, "SLURM_NODEID": str(node), "SLURM_NNODES": "2"}
        for local in range(2):
            cfg = {"logdir": str(tmp_path / f"node-{node}" / "logs"), "repo_id": "hf://buckets/tester/sys",
                   "rank": 2 * node + local, "seconds": 4.0}
            argv = _in_node(node, [sys.executable, "-c", WRITER, json.dumps(cfg)])
            procs.append(subprocess.Popen(argv, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert not [t for t in report["threads"] if "system" in t], f"a training process samples: {report['threads']}"
    ended = time.time()
    for node in range(2):
        wait_up_to_date(tmp_path / f"node-{node}" / "logs")
    files = {p[len("tensorboard/logs/"):]: d for p, d in hub.bucket_files("tester/sys").items()
             if p.startswith("tensorboard/logs/")}
    copy = materialise(files, tmp_path / "copy")
    runs = sorted(tensorboard_runs(copy))
    assert runs == ["rank-000", "rank-001", "rank-002", "rank-003", "system/node-0", "system/node-1"], runs
    for node in range(2):
        logdir = tmp_path / f"node-{node}" / "logs"
        run_dir = copy / "system" / f"node-{node}"
        acc = accumulator(run_dir)
        assert set(acc.Tags()["scalars"]) == SERIES, acc.Tags()["scalars"]  # no GPU here: no gpu/ series
        values = {tag: [e.value for e in acc.Scalars(tag)] for tag in SERIES}
        steps = [e.step for e in acc.Scalars("memory/percent")]
        assert len(steps) >= 3 and steps == sorted(set(steps)), steps  # one sample a second, 4 s of training
        assert int(started) - 1 <= steps[0] and steps[-1] <= ended + 1, (started, steps, ended)  # Unix seconds
        check_sane(values, tmp_path)
        info = acc.Tensors("system/info/text_summary")[0].tensor_proto.string_val[0].decode()
        assert f"host: node-{node}" in info and "disk I/O of: " in info, info
        # Written by the node's uploader (the file name ends with the writing process's pid) ...
        local = {p.name: p.read_bytes() for p in (logdir / "system" / f"node-{node}").iterdir()}
        uploaders = re.findall(r"uploader (\d+) started", (logdir / ".hf_mpwriter" / "uploader.log").read_text())
        assert {name.rsplit(".", 1)[-1] for name in local} <= set(uploaders), (sorted(local), uploaders)
        # ... and its last commit holds every sample: sampling paused once the writers were gone.
        remote = {rel.rsplit("/", 1)[-1]: data for rel, data in files.items() if rel.startswith(f"system/node-{node}/")}
        assert remote == local


def test_readme_example(tmp_path):
    """The example as written, alongside another rank of the same job (a writer of this process) that
    lives until the example is done: the node's uploader is up before the example logs, whatever the
    machine's load (alone, a 5 s example may end before a slow uploader has started)."""
    from hf_mpwriter import HFSummaryWriter

    for i, example in enumerate(examples("system")):
        cwd = tmp_path / f"v{i}"
        logdir = cwd / "logs" / "sys"
        other_rank = HFSummaryWriter(repo_id=None, target_dir=cwd / "tb-mirror", logdir=logdir, rank=1, commit_every=1,
                                     system_metrics=2)
        wait_for(lambda logdir=logdir: (logdir / "system").is_dir(), 60, "the node's uploader to sample")
        run_example(example, cwd, timeout=120)
        other_rank.close()
        wait_up_to_date(logdir)
        remote = local_target_files(cwd / "tb-mirror", "tensorboard/sys")
        copy = materialise(remote, cwd / "remote")
        runs = tensorboard_runs(copy)
        (host_run,) = [run for run in runs if run.startswith("system/")]
        assert [step for step, _ in scalars(copy, "loss")] == list(range(500)), "the example's own run"
        acc = accumulator(copy / host_run)
        assert set(acc.Tags()["scalars"]) == SERIES
        check_sane({tag: [e.value for e in acc.Scalars(tag)] for tag in SERIES}, cwd)
        config = json.loads((logdir / ".hf_mpwriter" / "config.json").read_text())
        assert config["system_metrics"] == DEFAULT_PERIOD_S, "the example's system_metrics=True (saved after ours)"


# -- the sampler alone ---------------------------------------------------------------------------------
def test_period_setting():
    assert period_seconds(True) == DEFAULT_PERIOD_S == 10.0
    assert period_seconds(False) == period_seconds(None) == period_seconds(0) == 0.0
    assert period_seconds(2) == 2.0 and period_seconds(30.5) == 30.5
    for bad in (0.5, -1, math.inf, math.nan, "10", [10]):
        with pytest.raises(ConfigurationError, match="system_metrics"):
            period_seconds(bad)
    off = UploadConfig.for_local("/tmp/t", prefix="p", logdir=Path("/tmp/l"))
    assert off.system_metrics == 0.0 and start_for(Path("/tmp/l"), off) is None


def test_readings(tmp_path):
    """Against psutil's own numbers over the same interval, with known work in between (one core busy)."""
    sampler = SystemMetrics(tmp_path, period=1.0)
    psutil.cpu_percent(None)
    first = sampler.sample()
    assert "cpu/percent" not in first and "disk/read_MiB_per_s" not in first  # need two readings
    sum(i * i for i in range(3_000_000))  # one core busy
    second = sampler.sample()
    reference = psutil.cpu_percent(None)
    assert set(second) == SERIES
    check_sane({tag: [v] for tag, v in second.items()}, tmp_path)
    assert abs(second["cpu/percent"] - reference) < 15, (second["cpu/percent"], reference)


def test_disk_writes_to_the_logdirs_block_device_are_counted(tmp_path):
    """32 MiB written and fsynced into the logdir: its block device counts them, and so does the sampler.

    On a block device only: a tmpfs ``tmp_path`` (the usual CI set-up) writes to no disk, so the
    directory is taken where one is (:func:`helpers.block_device_dir`), and the test is skipped
    where none is writable."""
    logdir = block_device_dir(tmp_path)
    if logdir is None:
        pytest.skip("no writable directory on a block device: nothing here could count the writes")
    try:
        sampler = SystemMetrics(logdir, period=1.0)
        sampler.sample()
        before = psutil.disk_io_counters(perdisk=False).write_bytes
        started = time.monotonic()
        with open(logdir / "blob", "wb") as f:
            f.write(os.urandom(32 << 20))
            f.flush()
            os.fsync(f.fileno())
        second = sampler.sample()
        elapsed = time.monotonic() - started
        # The scenario: the kernel counted the writes on a disk (not only in the page cache).
        written = psutil.disk_io_counters(perdisk=False).write_bytes - before
        assert written >= 30 << 20, f"{logdir}: only {written} bytes reached a disk"
        assert second["disk/write_MiB_per_s"] * elapsed >= 30, (second["disk/write_MiB_per_s"], elapsed)
    finally:
        if logdir != tmp_path:
            shutil.rmtree(logdir, ignore_errors=True)


def test_a_failing_source_is_left_out_and_the_thread_goes_on(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError("no /proc/net/dev here")

    monkeypatch.setattr(psutil, "net_io_counters", broken)
    sampler = SystemMetrics(tmp_path, period=0.05)
    with caplog.at_level(logging.WARNING, logger="hf_mpwriter.system_metrics"):
        sampler.start()
        wait_for(lambda: sampler.samples >= 5, 10, "5 samples")
        sampler.stop()
    assert not sampler._thread.is_alive()
    said = [r.getMessage() for r in caplog.records if "network" in r.getMessage()]
    assert len(said) == 1 and "no /proc/net/dev here" in said[0], said  # once, not every sample
    tags = accumulator(sampler.run_dir).Tags()["scalars"]
    assert set(tags) == SERIES - {"network/recv_MiB_per_s", "network/sent_MiB_per_s"}


def test_an_unwritable_run_dir_never_reaches_the_uploader(tmp_path, caplog):
    (tmp_path / "system").write_text("a file where the directory should be")
    sampler = SystemMetrics(tmp_path, period=0.05)
    with caplog.at_level(logging.ERROR, logger="hf_mpwriter.system_metrics"):
        sampler.start()
        wait_for(lambda: sampler.samples >= 4, 10, "4 samples")
        assert sampler._thread.is_alive()
        sampler.stop()
    assert len([r for r in caplog.records if "a sample failed" in r.getMessage()]) == 1


def test_paused_while_no_writer_is_alive(tmp_path):
    alive = {"value": False}
    asked = []  # each time the sampler asked whether a writer is alive, what it was told

    def active() -> bool:
        asked.append(alive["value"])
        return alive["value"]

    sampler = SystemMetrics(tmp_path, period=0.05, active=active)
    sampler.start()
    # The scenario: the sampler took its first reading, then looked five times and found no writer.
    wait_for(lambda: asked.count(False) >= 5, 10, "the sampler to find no writer five times")
    assert sampler.samples == 1 and sampler.written == 0 and not (tmp_path / "system").exists()
    alive["value"] = True
    wait_for(lambda: sampler.written >= 2, 10, "samples once a writer is alive")
    sampler.stop()
    assert len(accumulator(sampler.run_dir).Scalars("memory/percent")) >= 2


FAKE_NVML = """
import json, sys, time, types
from collections import namedtuple

calls = []
nvml = types.ModuleType("pynvml")
nvml.NVML_TEMPERATURE_GPU = 0
def record(name, value):
    def call(*args):
        calls.append(name)
        return value(*args) if callable(value) else value
    return call
nvml.nvmlInit = record("init", None)
nvml.nvmlShutdown = record("shutdown", None)
nvml.nvmlDeviceGetCount = record("count", 2)
nvml.nvmlDeviceGetHandleByIndex = record("handle", lambda i: i)
nvml.nvmlDeviceGetName = record("name", lambda h: b"Stand-in H100")
nvml.nvmlDeviceGetUtilizationRates = record("util", lambda h: namedtuple("U", "gpu memory")(37 + h, 5))
nvml.nvmlDeviceGetMemoryInfo = record("memory", lambda h: namedtuple("M", "total free used")(80 << 30, 60 << 30, 20 << 30))
nvml.nvmlDeviceGetTemperature = record("temperature", lambda h, sensor: 61)
def power(h):
    if h == 1:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
    return 312_000
nvml.nvmlDeviceGetPowerUsage = record("power", power)
sys.modules["pynvml"] = nvml

from hf_mpwriter.uploader.system_metrics import SystemMetrics
sampler = SystemMetrics({logdir!r}, period=0.05)
sampler.start()
while sampler.samples < 3:
    time.sleep(0.01)
sampler.stop()
print(json.dumps({{"calls": sorted(set(calls)), "shutdown": calls.count("shutdown"),
                  "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
"""


def test_gpus_through_nvml_only(tmp_path):
    """A stand-in for NVML (no GPU on this machine); torch cannot even be imported in the child."""
    out = json.loads(run(FAKE_NVML.format(logdir=str(tmp_path)), timeout=60).strip().splitlines()[-1])
    assert out["shutdown"] == 1 and not out["torch"], out
    assert "init" in out["calls"] and "memory" in out["calls"]
    acc = accumulator(next((tmp_path / "system").iterdir()))
    gpu = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("gpu/")}
    assert gpu == {
        "gpu/0/utilization_percent": 37.0, "gpu/0/memory_used_GiB": 20.0, "gpu/0/memory_percent": 25.0,
        "gpu/0/temperature_C": 61.0, "gpu/0/power_W": 312.0,
        "gpu/1/utilization_percent": 38.0, "gpu/1/memory_used_GiB": 20.0, "gpu/1/memory_percent": 25.0,
        "gpu/1/temperature_C": 61.0,  # a board without power readings: the rest still comes
    }
    assert set(acc.Tags()["scalars"]) - set(gpu) == SERIES
    info = acc.Tensors("system/info/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "GPUs: 0: Stand-in H100, 1: Stand-in H100" in info


def test_real_nvml_without_a_driver_leaves_gpus_out(tmp_path):
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a machine with a driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver: the no-driver path cannot be checked here")
    sampler = SystemMetrics(tmp_path, period=0.05)
    sampler.start()
    wait_for(lambda: sampler.samples >= 2, 10, "2 samples")
    sampler.stop()
    assert set(accumulator(sampler.run_dir).Tags()["scalars"]) == SERIES


def test_events_are_tensorboardx_bytes_and_sampling_loads_no_torch(tmp_path):
    """The sampler encodes its events itself: byte for byte what tensorboardX writes, without
    importing tensorboardX, which imports torch (~200 MiB and ~1 s in every node's uploader)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar, text

    from hf_mpwriter.events.event_file import file_version_event
    from hf_mpwriter.uploader.system_metrics import scalar_event, text_event

    now = time.time()
    assert scalar_event("gpu/0/temperature_C", 61.5, 1795360000, now) == \
        Event(wall_time=now, step=1795360000, summary=scalar("gpu/0/temperature_C", 61.5)).SerializeToString()
    assert text_event("system/info", "host: n  \nCPUs: 2 ü", 7, now) == \
        Event(wall_time=now, step=7, summary=text("system/info", "host: n  \nCPUs: 2 ü")).SerializeToString()
    assert file_version_event(now) == Event(wall_time=now, file_version="brain.Event:2").SerializeToString()
    code = f"""
        import sys, time
        import hf_mpwriter.uploader
        from hf_mpwriter.uploader.system_metrics import SystemMetrics
        sampler = SystemMetrics({str(tmp_path)!r}, period=0.05)
        sampler.start()
        while sampler.samples < 3:
            time.sleep(0.01)
        sampler.stop()
        print(sorted(m for m in ("torch", "tensorboardX") if m in sys.modules))
    """
    assert run(code, torch=True, timeout=60).strip().splitlines()[-1] == "[]"  # torch is installed: not loaded
    assert len(accumulator(next((tmp_path / "system").iterdir())).Scalars("memory/percent")) >= 2
