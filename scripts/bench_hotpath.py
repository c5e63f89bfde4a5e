#!/usr/bin/env python
"""Hot-path cost of ``add_scalar`` / ``add_histogram``: hf_mpwriter vs tensorboardX vs torch.

Measures, in one process and one run, the median over ``--repeats`` repeats of the mean time per
call of ``N`` consecutive calls (the time the *training loop* spends in the call), for each writer:

- ``hf_mpwriter.SummaryWriter``
- ``tensorboardX.SummaryWriter``
- ``torch.utils.tensorboard.SummaryWriter`` (if torch and tensorboard are importable)

and, separately, the time of the final ``flush()`` + ``close()`` (where writers that queue events
for a background thread pay for what the loop did not). Repeats of the libraries are interleaved
(rotating order) so that machine noise hits them alike. Each writer runs with its library's default
settings in a fresh temporary directory. Prints markdown tables; nothing passes or fails.

    python scripts/bench_hotpath.py            # full run (~2 min)
    python scripts/bench_hotpath.py --quick    # a few seconds

With torch, it also times ``add_histogram`` of a 1,000-element CPU tensor and of 1M- and
10M-element float32 CPU tensors (:mod:`hf_mpwriter.writer.histogram`; ``--quick`` runs the 1M one
only). With a CUDA device, it times ``add_histogram`` of CUDA tensors too (float32 1M and 10M,
bfloat16 1M, each call followed by ``torch.cuda.synchronize()``) and ``torch.histc`` of the same
tensor, the device's own floor; without one it says so. tensorboardX refuses bfloat16: the bfloat16
row gives tensorboardX and torch the tensor's ``.float()`` (their users' only way), hf_mpwriter the
bfloat16 tensor itself.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import tensorboardX  # noqa: E402

import hf_mpwriter  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

try:
    from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter
except Exception:  # torch missing, or the tensorboard package it needs
    TorchSummaryWriter = None

LIBRARIES: dict[str, Callable[[str], Any]] = {
    "hf_mpwriter": lambda d: hf_mpwriter.SummaryWriter(d),
    "tensorboardX": lambda d: tensorboardX.SummaryWriter(d),
}
if TorchSummaryWriter is not None:
    LIBRARIES["torch.utils.tensorboard"] = lambda d: TorchSummaryWriter(d)


def operations(hist_values: np.ndarray) -> list[tuple[str, Callable[[Any, int], None], bool]]:
    """``(name, call(writer, step), is_histogram)``."""
    ops = [
        ("add_scalar(python float)", lambda w, s: w.add_scalar("loss/train", 0.125, s), False),
        ("add_scalar(np.float32)", lambda w, s, v=np.float32(0.125): w.add_scalar("loss/train", v, s), False),
    ]
    if torch is not None:
        tensor = torch.tensor(0.125)
        ops.append(("add_scalar(0-d torch tensor)", lambda w, s, v=tensor: w.add_scalar("loss/train", v, s), False))
    ops.append(("add_histogram(1000 values)", lambda w, s, v=hist_values: w.add_histogram("weights", v, s), True))
    if torch is not None:
        small = torch.from_numpy(hist_values.astype(np.float32))
        ops.append(("add_histogram(1000-element CPU tensor)",
                    lambda w, s, v=small: w.add_histogram("weights", v, s), True))
    return ops


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else str(size)


def cuda_available() -> bool:
    return torch is not None and torch.cuda.is_available()


def cuda_histogram_ops(sizes: list[int], bf16: bool) -> list[tuple[tuple[str, Callable[[Any, int], None], bool], int]]:
    """``add_histogram`` of CUDA tensors, synchronised after each call (empty without a CUDA device)."""
    if not cuda_available():
        return []
    gen = torch.Generator(device="cuda").manual_seed(0)
    ops = []

    def synced(tensor: Any, widen: bool) -> Callable[[Any, int], None]:
        def call(w: Any, s: int) -> None:
            ours = isinstance(w, hf_mpwriter.SummaryWriter)
            w.add_histogram("weights", tensor if ours or not widen else tensor.float(), s)
            torch.cuda.synchronize()
        return call

    for size in sizes:
        tensor = torch.randn(size, generator=gen, device="cuda")
        ops.append(((f"add_histogram({_label(size)} CUDA float32)", synced(tensor, False), True), size))
    if bf16 and sizes:
        tensor = torch.randn(sizes[0], generator=gen, device="cuda").bfloat16()
        ops.append(((f"add_histogram({_label(sizes[0])} CUDA bfloat16)", synced(tensor, True), True), sizes[0]))
    return ops


def histc_floor_ms(sizes: list[int], repeats: int) -> dict[int, float]:
    """Median ms of ``torch.histc`` (640 bins) of a CUDA float32 tensor of each size, synchronised."""
    floor = {}
    for size in sizes:
        tensor = torch.randn(size, device="cuda")
        times = []
        for _ in range(repeats + 2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            torch.histc(tensor, bins=640, min=-5, max=5)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        floor[size] = statistics.median(times[2:])
    return floor


def tensor_histogram_ops(sizes: list[int]) -> list[tuple[str, Callable[[Any, int], None], bool]]:
    """``add_histogram`` of large torch tensors (empty without torch)."""
    if torch is None:
        return []
    gen = torch.Generator().manual_seed(0)
    ops = []
    for size in sizes:
        tensor = torch.randn(size, generator=gen)
        ops.append((f"add_histogram({_label(size)}-element torch tensor)",
                    lambda w, s, v=tensor: w.add_histogram("weights", v, s), True))
    return ops


def bench(n_scalar: int, n_hist: int, repeats: int, root: Path, big: list[int], cuda: list[int]) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    n_big = {size: max(2, min(n_hist, 20_000_000 // size)) for size in big + cuda}
    sized = [(op, None) for op in operations(rng.normal(size=1000))] + list(zip(tensor_histogram_ops(big), big))
    sized += cuda_histogram_ops(cuda, bf16=bool(cuda))
    for (op_name, call, is_hist), size in sized:
        n = n_big[size] if size else (n_hist if is_hist else n_scalar)
        writers = {lib: make(str(root / f"{lib}-{len(rows)}")) for lib, make in LIBRARIES.items()}
        steps = dict.fromkeys(writers, 0)
        per_call: dict[str, list[float]] = {lib: [] for lib in writers}
        for lib, writer in writers.items():  # warm-up: first file, caches, lazy imports
            for _ in range(max(2 if n < 10 else 10, n // 10)):
                call(writer, steps[lib])
                steps[lib] += 1
        libs = list(writers)
        for r in range(repeats):
            order = libs[r % len(libs):] + libs[: r % len(libs)]
            for lib in order:
                writer, step0 = writers[lib], steps[lib]
                gc.collect()
                start = time.perf_counter()
                for step in range(step0, step0 + n):
                    call(writer, step)
                elapsed = time.perf_counter() - start
                steps[lib] = step0 + n
                per_call[lib].append(elapsed / n * 1e6)
        closes = {}
        for lib, writer in writers.items():
            start = time.perf_counter()
            writer.flush()
            writer.close()
            closes[lib] = (time.perf_counter() - start) * 1e3
        rows.append({
            "op": op_name,
            "n": n,
            "us": {lib: statistics.median(v) for lib, v in per_call.items()},
            "spread": {lib: (min(v), max(v)) for lib, v in per_call.items()},
            "close_ms": closes,
            "events": {lib: steps[lib] for lib in writers},
        })
    return rows


def table(rows: list[dict]) -> str:
    libs = list(LIBRARIES)
    others = [lib for lib in libs if lib != "tensorboardX"]
    head = ["operation", "N/repeat"] + [f"{lib} µs/call" for lib in libs] + [f"{lib} / tensorboardX" for lib in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        base = row["us"]["tensorboardX"]
        cells = [row["op"], str(row["n"])]
        cells += [f"{row['us'][lib]:.2f} ({row['spread'][lib][0]:.2f}–{row['spread'][lib][1]:.2f})" for lib in libs]
        cells += [f"{row['us'][lib] / base:.2f}×" for lib in others]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Final `flush()` + `close()` after the run (ms; includes draining any background queue):", ""]
    head = ["operation", "events written"] + [f"{lib} ms" for lib in libs]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["op"], str(row["events"][libs[0]])] + [f"{row['close_ms'][lib]:.1f}" for lib in libs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (smaller N, 3 repeats)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--n-scalar", type=int, default=None, help="add_scalar calls per repeat")
    parser.add_argument("--n-hist", type=int, default=None, help="add_histogram calls per repeat")
    parser.add_argument("--no-big", action="store_true", help="skip the 1M / 10M-element tensor histograms")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    n_scalar = args.n_scalar or (2_000 if args.quick else 20_000)
    n_hist = args.n_hist or (100 if args.quick else 500)

    root = Path(tempfile.mkdtemp(prefix="bench_hotpath_"))
    big = [] if args.no_big else ([1_000_000] if args.quick else [1_000_000, 10_000_000])
    cuda = big if cuda_available() else []
    try:
        rows = bench(n_scalar, n_hist, repeats, root, big, cuda)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    versions = [f"python {platform.python_version()}", f"hf_mpwriter {hf_mpwriter.__version__}",
                f"tensorboardX {tensorboardX.__version__}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__}")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {', '.join(versions)}; median of {repeats} repeats "
          f"(min–max in parentheses), default settings of each writer\n")
    print(table(rows))
    print()
    if not cuda_available():
        print("CUDA: no CUDA device present here (torch.cuda.is_available() is False): no CUDA rows.")
    elif cuda:
        floor = histc_floor_ms(cuda, repeats)
        print(f"CUDA: {torch.cuda.get_device_name()}; device floor, torch.histc (640 bins) of the same float32 tensor: "
              + ", ".join(f"{_label(size)} {ms:.3f} ms" for size, ms in floor.items()))


if __name__ == "__main__":
    main()
