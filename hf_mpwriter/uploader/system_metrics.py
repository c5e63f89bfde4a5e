"""Per-node system metrics: the node's uploader samples CPU, memory, disk, network and GPUs into a
TensorBoard run of its own, ``<logdir>/system/<host>/`` (past node rank 8999:
``<logdir>/system/nodes-9000-17999/<host>/``, :func:`host_run_name`), uploaded like any other run.

Why the uploader: it already runs exactly once per node and logdir, in its own process, so the
training processes pay nothing (no thread, no import, no call on their hot path) and a node's series
are written once, not once per rank. Why its own run per host: TensorBoard then overlays the nodes of
a job on one chart (``system/node-0``, ``system/node-1``), next to the ranks' runs.

Opt-in (``HFSummaryWriter(..., system_metrics=True)``, or a period in seconds), recorded in the
logdir's upload settings (:class:`~hf_mpwriter.config.UploadConfig.system_metrics`) so that whichever
uploader runs (a fail-over, ``hf-mpwriter sync --watch``) samples the same way.

What is sampled, every ``period`` seconds (default 10 s), with the step set to the Unix time in
seconds (the same step is the same moment on every node, and an uploader that replaces another
continues the series instead of restarting it at 0):

- ``cpu/percent`` (all cores, 0-100), ``cpu/load_1m``;
- ``memory/used_GiB`` (total minus available), ``memory/available_GiB``, ``memory/percent``,
  ``memory/swap_percent``;
- ``disk/used_GiB``, ``disk/free_GiB``, ``disk/percent`` of the logdir's file system, and
  ``disk/read_MiB_per_s``, ``disk/write_MiB_per_s`` of its block device (all disks if it has none,
  e.g. an overlay or network file system);
- ``network/recv_MiB_per_s``, ``network/sent_MiB_per_s`` (every interface but loopback);
- with ``nvidia-ml-py`` installed and an NVIDIA driver present, for each GPU ``i`` the node has:
  ``gpu/<i>/utilization_percent``, ``gpu/<i>/memory_used_GiB``, ``gpu/<i>/memory_percent``,
  ``gpu/<i>/temperature_C``, ``gpu/<i>/power_W``. Read through NVML only: NVML asks the driver and
  creates no CUDA context, so no GPU memory is taken from training (``torch.cuda`` calls would
  create one, hundreds of MiB per process).

Sampling pauses while no writer of the logdir is alive, so that the uploader's final commit holds
every sample and the run ends with the training. The sampler never raises into the uploader: any
error is logged once and that source is left out.

Example:
    >>> from hf_mpwriter.uploader.system_metrics import SystemMetrics
    >>> sampler = SystemMetrics("runs/exp1", period=10.0)  # doctest: +SKIP
    >>> sampler.start()  # doctest: +SKIP
    >>> sampler.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from ..events.encoding import scalar_event, text_event
from ..state.liveness import host_file_name
from ..state.run_dirs import HUB_ENTRIES_PER_FOLDER, in_block
from ..timing import SYSTEM_METRICS_FIRST_SAMPLE_S, SYSTEM_METRICS_PERIOD_S

logger = logging.getLogger(__name__)

#: The runs of the nodes' system metrics live in ``<logdir>/<RUN_DIR>/<host>``.
RUN_DIR = "system"
_GIB = float(1 << 30)
_MIB = float(1 << 20)


def host_run_name(host: str | None = None, node_rank: int = 0, entries_per_folder: int = HUB_ENTRIES_PER_FOLDER) -> str:
    """``system/<host>``: the run directory of this host's series (a safe file name).

    Past the hosts one folder holds (node rank 9,000 and up), ``system/nodes-9000-17999/<host>``
    (:mod:`hf_mpwriter.state.run_dirs`): ``system/`` stays within the Hub's entries per folder on
    the largest machines too. The node rank places it, the host name names it: a host whose node
    rank changes across elastic restarts keeps its run below 9,000 nodes.
    """
    return f"{RUN_DIR}/" + in_block(node_rank, host_file_name(host or None), "nodes", entries_per_folder)


class _Rates:
    """Per-second rates of growing counters, between two readings (a reset or wrap gives no value)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._at: float | None = None

    def update(self, counters: Mapping[str, float], now: float) -> dict[str, float]:
        rates: dict[str, float] = {}
        if self._at is not None and now > self._at:
            for name, value in counters.items():
                before = self._last.get(name)
                if before is not None and value >= before:
                    rates[name] = (value - before) / (now - self._at)
        self._last, self._at = dict(counters), now
        return rates


def _block_device(path: Path) -> str | None:
    """Name of the block device holding ``path`` as ``/proc/diskstats`` (and psutil) call it, or
    ``None`` (overlay, tmpfs, network file systems have no block device: major number 0)."""
    try:
        dev = os.stat(path).st_dev
        if os.major(dev) == 0:
            return None
        return os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
    except (OSError, AttributeError):
        return None


class _Nvml:
    """Each GPU's utilisation, memory, temperature and power through NVML (``nvidia-ml-py``).

    NVML reads the driver's counters: no CUDA context, no GPU memory. Absent package, absent driver
    or no GPU: :meth:`open` returns ``False`` and nothing is logged above debug level.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []

    def open(self) -> bool:
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            logger.debug("nvidia-ml-py is not installed: no GPU metrics")
            return False
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver here
            logger.debug("NVML unavailable (%s): no GPU metrics", exc)
            return False
        try:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:
            logger.warning("NVML found no usable GPU (%s): no GPU metrics", exc)
            self._shutdown(pynvml)
            return False
        self._nvml = pynvml
        return bool(self._handles)

    def names(self) -> list[str]:
        out = []
        for handle in self._handles:
            try:
                name = self._nvml.nvmlDeviceGetName(handle)
                out.append(name.decode() if isinstance(name, bytes) else str(name))
            except Exception:
                out.append("?")
        return out

    def read(self) -> dict[str, float]:
        nvml, values = self._nvml, {}
        for i, handle in enumerate(self._handles):
            values[f"gpu/{i}/utilization_percent"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"gpu/{i}/memory_used_GiB"] = memory.used / _GIB
            values[f"gpu/{i}/memory_percent"] = 100.0 * memory.used / memory.total if memory.total else 0.0
            values[f"gpu/{i}/temperature_C"] = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            try:  # not every board reports power
                values[f"gpu/{i}/power_W"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception:
                pass
        return values

    def close(self) -> None:
        if self._nvml is not None:
            self._shutdown(self._nvml)
            self._nvml, self._handles = None, []

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


class SystemMetrics:
    """Samples this node's CPU, memory, disk, network and GPUs into ``<logdir>/system/<host>/``.

    A daemon thread; :meth:`start` and :meth:`stop` never raise. Each sample is one ``write`` of a
    few hundred bytes with this project's event-file writer (:mod:`hf_mpwriter.events.event_file`).

    Args:
        logdir: the logdir the uploader commits; its file system is the one whose use is reported.
        period: seconds between samples.
        host: the run's host name (default: this machine's).
        node_rank: the node's rank in its job (places the run past 9,000 nodes: :func:`host_run_name`).
        active: called before each sample; sampling pauses while it returns ``False`` (the
            uploader passes "is a writer of the logdir alive").
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        period: float = SYSTEM_METRICS_PERIOD_S,
        *,
        host: str | None = None,
        node_rank: int = 0,
        active: Callable[[], bool] | None = None,
    ) -> None:
        self.logdir = Path(logdir)
        self.period = float(period)
        self.run_dir = self.logdir / host_run_name(host, node_rank)
        self._active = active
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: Any = None
        self._device = _block_device(self.logdir)
        self._io = _Rates()
        self._cpu_last: Any = None
        self._gpu = _Nvml()
        self._gpu_on = False
        self._failed: set[str] = set()
        self.samples = 0  # readings, the first one (rates need two) included
        self.written = 0  # samples written (none while no writer is alive)
        self._step = 0
        #: CPU seconds the sampling thread has used (what sampling costs the uploader) ...
        self.cpu_seconds = 0.0
        #: ... of which the first reading and the first written sample (imports, opening the run's file).
        self.first_cpu_seconds = 0.0

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sampling thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hf_mpwriter-system-metrics", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling and close the run's event file (it is complete)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            later = self.cpu_seconds - self.first_cpu_seconds
            logger.info("system metrics: %d samples, %.1f ms of CPU in all (%.1f ms for the first: imports, the "
                        "run's file; then %.2f ms per sample)", self.written, self.cpu_seconds * 1e3,
                        self.first_cpu_seconds * 1e3, later * 1e3 / (self.written - 1) if self.written > 1 else 0.0)
        try:
            if self._writer is not None:
                self._writer.close(retry_secs=0)
        except Exception:
            logger.exception("could not close the system metrics of %s", self.run_dir)
        self._gpu.close()
        self._gpu_on = False

    def _run(self) -> None:
        started = time.thread_time()
        try:
            self._gpu_on = self._gpu.open()
            self.sample()  # first readings: CPU times and counters, rates need two
        except Exception:
            logger.exception("system metrics: the first reading failed")
        self.cpu_seconds += time.thread_time() - started
        wait = min(SYSTEM_METRICS_FIRST_SAMPLE_S, self.period)
        while not self._stop.wait(wait):
            started = time.thread_time()
            try:
                if self._active is None or self._active():
                    self._write(self.sample())
            except Exception:  # never into the uploader; say it once
                if "loop" not in self._failed:
                    self._failed.add("loop")
                    logger.exception("system metrics of %s: a sample failed; continuing", self.run_dir)
            self.cpu_seconds += time.thread_time() - started
            if not self.first_cpu_seconds and self._writer is not None:
                self.first_cpu_seconds = self.cpu_seconds
            wait = self.period

    # -- readings ----------------------------------------------------------------------------
    def sample(self) -> dict[str, float]:
        """One reading of every source (rates since the previous reading). A source that fails is
        left out of this and every later sample, and said once."""
        now = time.monotonic()
        values: dict[str, float] = {}
        counters: dict[str, float] = {}
        for name, read in (("cpu", self._cpu), ("memory", self._memory), ("disk", self._disk),
                           ("network", self._network), ("gpu", self._gpu_values)):
            if name in self._failed:
                continue
            try:
                read(values, counters)
            except Exception as exc:
                self._failed.add(name)
                logger.warning("system metrics: cannot read %s (%s); left out from now on", name, exc)
        for name, rate in self._io.update(counters, now).items():
            values[name] = rate / _MIB
        self.samples += 1
        return values

    def _cpu(self, values: dict[str, float], counters: dict[str, float]) -> None:
        times = psutil.cpu_times()
        last, self._cpu_last = self._cpu_last, times
        if last is not None:
            total = sum(times) - sum(last)
            idle = (times.idle + getattr(times, "iowait", 0.0)) - (last.idle + getattr(last, "iowait", 0.0))
            if total > 0:
                values["cpu/percent"] = max(0.0, min(100.0, 100.0 * (1.0 - idle / total)))
        values["cpu/load_1m"] = os.getloadavg()[0]

    def _memory(self, values: dict[str, float], counters: dict[str, float]) -> None:
        memory = psutil.virtual_memory()
        values["memory/used_GiB"] = (memory.total - memory.available) / _GIB
        values["memory/available_GiB"] = memory.available / _GIB
        values["memory/percent"] = float(memory.percent)
        values["memory/swap_percent"] = float(psutil.swap_memory().percent)

    def _disk(self, values: dict[str, float], counters: dict[str, float]) -> None:
        usage = psutil.disk_usage(str(self.logdir))
        values["disk/used_GiB"] = usage.used / _GIB
        values["disk/free_GiB"] = usage.free / _GIB
        values["disk/percent"] = float(usage.percent)
        io = None
        if self._device is not None:
            io = (psutil.disk_io_counters(perdisk=True) or {}).get(self._device)
        if io is None:
            io = psutil.disk_io_counters(perdisk=False)
        if io is not None:
            counters["disk/read_MiB_per_s"] = float(io.read_bytes)
            counters["disk/write_MiB_per_s"] = float(io.write_bytes)

    def _network(self, values: dict[str, float], counters: dict[str, float]) -> None:
        nics = psutil.net_io_counters(pernic=True) or {}
        external = [c for name, c in nics.items() if name != "lo" and not name.startswith("lo:")]
        counters["network/recv_MiB_per_s"] = float(sum(c.bytes_recv for c in external))
        counters["network/sent_MiB_per_s"] = float(sum(c.bytes_sent for c in external))

    def _gpu_values(self, values: dict[str, float], counters: dict[str, float]) -> None:
        if self._gpu_on:
            values.update(self._gpu.read())

    # -- writing -----------------------------------------------------------------------------
    def _write(self, values: Mapping[str, float]) -> None:
        if not values:
            return
        writer = self._writer or self._open()
        now = time.time()
        step = self._step = max(int(now), self._step + 1)  # strictly increasing, even if the clock steps back
        for tag in sorted(values):
            writer.add_serialized(scalar_event(tag, values[tag], step, now))
        writer.flush()  # one write per sample; never raises (a full disk keeps the records in memory)
        self.written += 1

    def _open(self) -> Any:
        from ..events.event_file import EventFileWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(self.run_dir, max_queue=10_000, flush_secs=max(self.period, 2.0))
        info = [f"host: {socket.gethostname()}", f"CPUs: {psutil.cpu_count()}",
                f"memory: {psutil.virtual_memory().total / _GIB:.1f} GiB",
                f"disk I/O of: {self._device or 'all disks (the logdir has no block device of its own)'}",
                f"period: {self.period:g} s"]
        if self._gpu_on:
            info.append("GPUs: " + ", ".join(f"{i}: {name}" for i, name in enumerate(self._gpu.names())))
        self._writer.add_serialized(text_event("system/info", "  \n".join(info), int(time.time()), time.time()))
        logger.info("system metrics of %s every %g s into %s", socket.gethostname(), self.period, self.run_dir)
        return self._writer


def start_for(logdir: Path, config: Any) -> SystemMetrics | None:
    """Start the sampler the logdir's upload settings ask for (``config.system_metrics`` seconds);
    ``None`` when off. Never raises: the uploader's work comes first."""
    try:
        period = float(getattr(config, "system_metrics", 0.0) or 0.0)
        if period <= 0:
            return None
        from ..state.registry import live_writers

        node_rank = int(getattr(config, "node_rank", 0) or 0)
        sampler = SystemMetrics(logdir, period, node_rank=node_rank, active=lambda: bool(live_writers(logdir)))
        sampler.start()
        return sampler
    except Exception:
        logger.exception("could not start the system metrics of %s", logdir)
        return None
