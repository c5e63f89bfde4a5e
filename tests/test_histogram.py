"""``add_histogram`` of numpy arrays, lists and CPU tensors: what tensorboardX stores, bucket for bucket.

The writer bins these values itself (:mod:`hf_mpwriter.writer.histogram`) and encodes the summary by
hand; every case here checks first that it did (not tensorboardX's path, which would make the
comparison trivial), then that the file TensorBoard reads back holds tensorboardX's histogram:
min, max, num, sum, sum of squares, bucket limits and buckets, and the same serialized event.
The accelerator path is run on CPU tensors (``on_device=True``): same buckets, one copy to the host.
"""

from __future__ import annotations

import math
from pathlib import Path

import helpers as H
import numpy as np
import pytest
import tensorboardX
from tensorboardX import summary as tbx_summary

from hf_mpwriter import SummaryWriter
from hf_mpwriter.writer import histogram_buckets
from hf_mpwriter.writer.histogram import histogram_summary, histogram_summary_bytes
from hf_mpwriter.writer.histogram_buckets import default_bins

torch = pytest.importorskip("torch")

FIELDS = ("min", "max", "num", "sum", "sum_squares", "bucket_limit", "bucket")


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    for name in H.LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


def _inputs() -> dict:
    """Values the writer bins itself: numpy dtypes, a list, CPU tensors and edge cases."""
    rng = np.random.default_rng(40)
    edges = np.asarray(default_bins())
    return {
        "float32": rng.standard_normal(1000).astype(np.float32),
        "float64": rng.standard_normal(1000),
        "float64_many_chunks": rng.standard_normal(150_000) * 1e3,  # past the table's chunk size
        "float16": (rng.standard_normal(500) * 100).astype(np.float16),
        "int64": rng.integers(-10**12, 10**12, 1000),
        "int32": rng.integers(-1000, 1000, 777).astype(np.int32),
        "uint8": rng.integers(0, 256, 300).astype(np.uint8),
        "bool": rng.random(200) > 0.5,
        "2d_transposed": rng.standard_normal((40, 25)).T,
        "list": [0.5, -1.25, 3.0, 3.0, 1e-13],
        "torch_float32": torch.randn(1000),
        "torch_float64": torch.randn(33, 31, dtype=torch.float64),
        "constant": np.full(64, 2.5),
        "one_value": np.array([7.0]),
        "zeros": np.zeros(10),
        "negative_zero": np.array([-0.0, -0.0]),
        "on_edges": np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]),
        "wide_float32": (rng.standard_normal(2000) * 10.0 ** rng.integers(-40, 38, 2000)).astype(np.float32),
        "infinities": np.array([1.0, np.inf, -np.inf, 0.0, 1e30, -1e30]),
    }


OPTIONS = [("tensorflow", None), ("tensorflow", 30), (12, None), ([-1.0, 0.0, 0.5, 2.0, 1e6], None),
           (np.linspace(1.0, 1.001, 40), None)]  # the last: edges too dense for the lookup table


def _tbx(values, bins, max_bins):
    return tbx_summary.histogram("h", values, default_bins() if isinstance(bins, str) else bins, max_bins=max_bins)


def _same_histogram(got, want) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if name.startswith("bucket"):
            assert list(a) == list(b), name
        else:
            assert (math.isnan(a) and math.isnan(b)) or a == b, (name, a, b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_summaries_are_tensorboardx_bytes_for_numpy_lists_and_cpu_tensors():
    checked = 0
    for name, values in _inputs().items():
        for bins, max_bins in OPTIONS:
            try:
                want = _tbx(values, bins, max_bins)
            except ValueError as exc:  # no value inside the edges, or a non-finite range with bins=12
                try:
                    assert histogram_summary_bytes("h", values, bins, max_bins) is None, (name, bins)
                except ValueError as ours:
                    assert str(ours) == str(exc)
                continue
            ours = histogram_summary_bytes("h", values, bins, max_bins)
            assert ours is not None, (name, bins)  # binned here, not by tensorboardX
            assert ours == want.SerializeToString(), (name, bins, max_bins)
            checked += 1
    assert checked > 70


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_what_is_not_binned_here_is_left_to_tensorboardx():
    values = np.array([1.0, np.inf, -np.inf, 5.0])
    # An infinite edge's bucket holds the infinite values (np.histogram): left to tensorboardX.
    assert histogram_summary_bytes("h", values, [-np.inf, 0.0, np.inf]) is None
    for other in (np.array([], dtype=np.float32), np.array([1 + 2j]), np.array(["a"]), (1.0, 2.0)):
        assert histogram_summary_bytes("h", other) is None
    assert histogram_summary_bytes("h", np.ones(3), bins="auto") is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_stored_histograms_read_back_as_tensorboardx_stores_them(tmp_path: Path):
    inputs = _inputs()
    cases = [(name, bins, max_bins) for name in inputs for bins, max_bins in OPTIONS[:3]
             if name not in ("infinities", "on_edges") or bins != 12]
    with SummaryWriter(tmp_path / "ours") as ours, tensorboardX.SummaryWriter(str(tmp_path / "tbx")) as theirs:
        for step, (name, bins, max_bins) in enumerate(cases):
            tag = f"{name}/{bins}/{max_bins}"
            assert histogram_summary_bytes(tag, inputs[name], bins, max_bins) is not None, tag
            for writer in (ours, theirs):
                writer.add_histogram(tag, inputs[name], step, bins=bins, walltime=5.0, max_bins=max_bins)
        with pytest.raises(ValueError, match="no element"):  # tensorboardX's own error, from its path
            ours.add_histogram("empty", np.array([]), 0)

    got = H.accumulator(tmp_path / "ours")
    want = H.accumulator(tmp_path / "tbx")
    assert sorted(got.Tags()["histograms"]) == sorted(want.Tags()["histograms"])
    assert len(got.Tags()["histograms"]) == len(cases)
    for tag in want.Tags()["histograms"]:
        [a], [b] = got.Histograms(tag), want.Histograms(tag)
        assert a.step == b.step
        _same_histogram(a.histogram_value, b.histogram_value)
    ours_events = [e.SerializeToString() for e in H.read_run_events(tmp_path / "ours") if e.HasField("summary")]
    tbx_events = [e.SerializeToString() for e in H.read_run_events(tmp_path / "tbx") if e.HasField("summary")]
    assert ours_events == tbx_events


def test_steps_and_walltimes_as_tensorboardx_writes_them(tmp_path: Path):
    values = np.arange(10.0)
    calls = [(None, None), (0, 1.5), (3, None), (np.int64(7), 2.0), (torch.tensor(9), 3.0), (-2, 4.0)]
    with SummaryWriter(tmp_path / "ours") as ours, tensorboardX.SummaryWriter(str(tmp_path / "tbx")) as theirs:
        for step, walltime in calls:
            for writer in (ours, theirs):
                writer.add_histogram("h", values, step, walltime=walltime)
    got = [e for e in H.read_run_events(tmp_path / "ours") if e.HasField("summary")]
    want = [e for e in H.read_run_events(tmp_path / "tbx") if e.HasField("summary")]
    assert [e.step for e in got] == [0, 0, 3, 7, 9, -2]
    assert [e.summary.SerializeToString() for e in got] == [e.summary.SerializeToString() for e in want]
    given = [i for i, (_, walltime) in enumerate(calls) if walltime is not None]  # the others: time.time()
    assert [got[i].wall_time for i in given] == [want[i].wall_time for i in given] == [1.5, 2.0, 3.0, 4.0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_device_path_on_cpu_tensors_copies_to_the_host_once(monkeypatch):
    copies = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        copies.append(self.numel())
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    for name, values in _inputs().items():
        tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
        want = _tbx(tensor, "tensorflow", None).value[0].histo
        copies.clear()
        got = histogram_summary("h", tensor, on_device=True).value[0].histo
        # One copy of min, max, sum, sum of squares and the positions: never the tensor.
        assert copies == [4 + len(default_bins()) + 1], name
        assert (list(got.bucket), list(got.bucket_limit), got.num, got.min, got.max) == (
            list(want.bucket), list(want.bucket_limit), want.num, want.min, want.max), name
        scale = float(np.abs(np.asarray(tensor, dtype=np.float64)).sum())  # a sum may cancel: rounding scales with it
        assert math.isnan(want.sum) or got.sum == pytest.approx(want.sum, rel=1e-9, abs=1e-12 * scale), name


def test_default_thresholds_are_computed_once_per_process():
    first = histogram_buckets.edge_thresholds(histogram_buckets.default_edges(), np.float64)
    histogram_summary_bytes("h", np.arange(5.0))
    assert histogram_buckets.edge_thresholds(histogram_buckets.default_edges(), np.float64) is first
    assert histogram_buckets._cached_table(first) is histogram_buckets._cached_table(first)
