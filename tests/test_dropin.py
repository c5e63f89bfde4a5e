"""Drop-in gaps: what tensorboardX and ``torch.utils.tensorboard`` accept must work here, with their output.

One test per gap (bfloat16 and other dtypes; URL logdirs; ``export_scalars_to_json``; torch's
``add_tensor`` / ``add_hparams``; helpful ``add_scalar`` errors; histograms computed where the tensor
lives). Everything written is read back with TensorBoard's own reader (see ``helpers``), and compared
byte for byte with what tensorboardX or torch write for the same call.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import helpers as H
import numpy as np
import pytest
from tensorboardX import summary as tbx_summary

from hf_mpwriter import SummaryWriter
from hf_mpwriter.errors import ConfigurationError
from hf_mpwriter.writer.histogram import histogram_summary
from hf_mpwriter.writer.histogram_buckets import default_bins

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    for name in H.LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logdir(tmp_path) -> Path:
    return tmp_path / "logs"


def _histo_bytes(summary) -> bytes:
    return summary.value[0].histo.SerializeToString()


# ================================================================================================
# 1. bfloat16 (and every dtype torch's writer takes) in add_histogram, add_image, add_embedding
# ================================================================================================
def test_bfloat16_and_other_dtypes_in_histogram_image_and_embedding(logdir):
    from PIL import Image

    weights = torch.randn(64, 8, requires_grad=True)  # a parameter: needs detach
    image = torch.rand(3, 6, 5)
    dtypes = [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int8, torch.uint8, torch.int16,
              torch.int32, torch.int64, torch.bool]
    with SummaryWriter(logdir) as writer:
        for dt in dtypes:
            writer.add_histogram(f"h/{dt}", (weights * 10).to(dt), 1)
        writer.add_image("img/bf16", image.to(torch.bfloat16), 2)
        writer.add_image("img/fp16", image.half(), 2)
        writer.add_embedding(weights.to(torch.bfloat16), metadata=list(range(64)), global_step=3, tag="emb")

    acc = H.accumulator(logdir)
    for dt in dtypes:
        [h] = acc.Histograms(f"h/{dt}")
        src = (weights * 10).detach().to(dt)
        want = tbx_summary.histogram("x", src.float() if dt == torch.bfloat16 else src, default_bins()).value[0].histo
        got = h.histogram_value
        assert (got.num, got.min, got.max, list(got.bucket)) == (want.num, want.min, want.max, list(want.bucket)), dt
    # bf16 widened exactly: the pixels are those of the same image in float32 (tensorboardX's own path)
    [img] = acc.Images("img/bf16")
    want = tbx_summary.image("x", image.to(torch.bfloat16).float()).value[0].image.encoded_image_string
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(img.encoded_image_string))),
                          np.asarray(Image.open(io.BytesIO(want))))
    assert acc.Images("img/fp16")[0].width == 5
    tsv = Path(logdir) / "00003" / "emb" / "tensors.tsv"
    rows = [list(map(float, line.split("\t"))) for line in tsv.read_text().splitlines()]
    assert np.allclose(rows, weights.detach().to(torch.bfloat16).float().numpy(), rtol=1e-6)


# ================================================================================================
# 2. URL logdirs are refused, and a refused constructor creates nothing
# ================================================================================================
@pytest.mark.parametrize("url", ["s3://bucket/runs/exp1", "gs://bucket/exp", "hdfs://namenode/x", "file:///tmp/x"])
def test_url_logdir_is_refused_without_creating_anything(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        SummaryWriter(url)
    message = str(info.value)
    assert url in message and "local" in message and "Hub" in message and "tensorboardX.SummaryWriter" in message
    with pytest.raises(ConfigurationError):
        SummaryWriter(log_dir=url, write_to_disk=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [
    {"purge_step": -1}, {"rotate_bytes": 10}, {"flush_secs": "soon"}, {"max_queue": "many"},
    {"filename_suffix": "a/b"}, {"rank": -3},
])
def test_rejected_arguments_leave_no_logdir(tmp_path, bad):
    logdir = tmp_path / "new" / "logs"
    with pytest.raises(ConfigurationError):
        SummaryWriter(logdir, **bad)
    assert not (tmp_path / "new").exists()


# ================================================================================================
# 3. export_scalars_to_json: tensorboardX's JSON, read back from the event files
# ================================================================================================
def test_export_scalars_to_json_matches_tensorboardx(tmp_path):
    import tensorboardX

    def log(writer, steps):
        for step in steps:
            writer.add_scalars("loss", {"train": 0.5 * step, "val": 0.25 + step}, step, walltime=1000.0 + step)
            writer.add_scalar("lr", 0.125, step)  # not part of tensorboardX's export
        writer.add_scalars("acc/top", {"k1": 0.75}, 9, walltime=2000.5)

    exports = {}
    for name, cls in (("ours", SummaryWriter), ("tbx", tensorboardX.SummaryWriter)):
        root = tmp_path / name
        writer = cls(str(root))
        log(writer, range(3))
        writer.export_scalars_to_json(str(tmp_path / f"{name}1.json"))
        log(writer, range(3, 5))
        writer.export_scalars_to_json(str(tmp_path / f"{name}2.json"))
        writer.close()
        exports[name] = [json.loads((tmp_path / f"{name}{i}.json").read_text().replace(str(root), "<run>"))
                         for i in (1, 2)]

    assert exports["ours"] == exports["tbx"]
    first = exports["ours"][0]
    assert list(first) == ["<run>/loss/train", "<run>/loss/val", "<run>/acc/top/k1"]
    assert first["<run>/loss/val"] == [[1000.0, 0, 0.25], [1001.0, 1, 1.25], [1002.0, 2, 2.25]]
    assert [p[1] for p in exports["ours"][1]["<run>/loss/train"]] == [3, 4]  # each export: what is new


# ================================================================================================
# 4. torch's add_tensor and add_hparams signatures
# ================================================================================================
def test_add_tensor_and_both_add_hparams_spellings(logdir):
    from tensorboard.plugins.hparams import metadata as hp_metadata
    from torch.utils.tensorboard.summary import tensor_proto

    tensors = {
        "f32": torch.randn(2, 3), "f64": torch.randn(4, dtype=torch.float64), "f16": torch.randn(3).half(),
        "bf16": torch.randn(3).bfloat16(), "i64": torch.arange(5), "i32": torch.arange(3, dtype=torch.int32),
        "u8": torch.arange(4, dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "grad": torch.ones(2, requires_grad=True) * 2,
    }
    hp = {"lr": 0.1, "opt": "adam"}
    domain = {"opt": ["adam", "sgd"], "lr": [0.1, 0.01]}
    with SummaryWriter(logdir) as writer:
        for name, t in tensors.items():
            writer.add_tensor(f"t/{name}", t, 5)
        writer.add_hparams(hp, {"m/a": 1.0}, domain, "torch_positional", 3)           # torch, positional
        writer.add_hparams(hp, {"m/b": 2.0}, hparam_domain_discrete=domain, run_name="torch_kw", global_step=4)
        writer.add_hparams(hp, {"m/c": 3.0}, "tbx_positional", 6)                      # tensorboardX
        writer.add_hparams(hp, {"m/d": 4.0}, name="tbx_kw")

    by_tag = {v.tag: (e.step, v) for e in H.read_run_events(logdir) if e.HasField("summary") for v in e.summary.value}
    for name, t in tensors.items():
        step, value = by_tag[f"t/{name}"]
        assert (step, value.SerializeToString()) == (5, tensor_proto(f"t/{name}", t.detach()).value[0].SerializeToString())

    runs = H.tensorboard_runs(logdir)
    assert {"torch_positional", "torch_kw", "tbx_positional", "tbx_kw"} <= set(runs)
    for run, metric, value, step, has_domain in (
        ("torch_positional", "m/a", 1.0, 3, True), ("torch_kw", "m/b", 2.0, 4, True),
        ("tbx_positional", "m/c", 3.0, 6, False), ("tbx_kw", "m/d", 4.0, 0, False),
    ):
        acc = H.plugin_accumulator(runs[run])
        experiment = hp_metadata.parse_experiment_plugin_data(acc.PluginTagToContent("hparams")["_hparams_/experiment"])
        infos = {i.name: i for i in experiment.hparam_infos}
        got = {k: [v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for v in i.domain_discrete.values]
               for k, i in infos.items()}
        assert got == (domain if has_domain else {"lr": [], "opt": []}), run
        assert H.scalars(runs[run], metric) == [(step, value)], run
    with pytest.raises(TypeError, match="hparam_domain_discrete"):
        with SummaryWriter(logdir / "bad") as writer:
            writer.add_hparams(hp, {"m": 1.0}, {"lr": ["x"]})


# ================================================================================================
# 5. add_scalar says which tag and what it got
# ================================================================================================
def test_add_scalar_errors_name_the_tag_and_the_value(logdir):
    with SummaryWriter(logdir) as writer:
        writer.add_scalar("warm", 1.0, 0)  # the fast path is set up
        with pytest.raises(TypeError, match=r"add_scalar\('loss'\): scalar_value must be a number .* got str 'abc'"):
            writer.add_scalar("loss", "abc", 1)
        with pytest.raises(ValueError, match=r"add_scalar\('vec'\): .* got Tensor of shape \(3,\)"):
            writer.add_scalar("vec", torch.ones(3), 1)
        with pytest.raises(TypeError, match=r"add_scalar\('loss'\): global_step must be an integer, got str 'x'"):
            writer.add_scalar("loss", 1.0, "x")
        with pytest.raises(TypeError, match=r"add_scalar\('meta'\): scalar_value"):
            writer.add_scalar("meta", None, 1, display_name="shown")  # the slow path says the same
        with pytest.raises(TypeError, match=r"add_scalars\('group/a'\): scalar_value"):
            writer.add_scalars("group", {"a": [1, 2]}, 1)
        writer.add_scalar("after", torch.tensor(2.5, dtype=torch.bfloat16), 2)
    assert H.scalars(logdir, "after") == [(2, 2.5)]
    assert "loss" not in H.accumulator(logdir).Tags()["scalars"]


# ================================================================================================
# 6. histograms computed where the tensor lives: tensorboardX's bytes
# ================================================================================================
def _histogram_inputs() -> dict:
    rng = np.random.default_rng(7)
    edges = np.asarray(default_bins())
    e32 = edges.astype(np.float32)
    wide = rng.standard_normal(3000) * 10.0 ** rng.integers(-40, 38, 3000)
    return {
        "randn": torch.randn(10_001),
        "randn_f64_3d": torch.randn(7, 11, 13, dtype=torch.float64).transpose(0, 2),
        "f16": (torch.randn(2049) * 100).half(),
        "bf16": (torch.randn(2049) * 1e5).bfloat16(),
        "int8": torch.randint(-128, 128, (999,), dtype=torch.int8),
        "int32": torch.randint(-2**31, 2**31 - 1, (999,), dtype=torch.int32),
        "int64": torch.randint(-2**62, 2**62, (999,), dtype=torch.int64),
        "bool": torch.rand(300) > 0.3,
        "on_edges_f64": torch.from_numpy(edges.copy()),
        "on_edges_f32": torch.from_numpy(np.concatenate([e32, np.nextafter(e32, np.float32(np.inf)),
                                                         np.nextafter(e32, np.float32(-np.inf))])),
        "wide_f32": torch.from_numpy(wide.astype(np.float32)),
        "wide_f64": torch.from_numpy(rng.standard_normal(3000) * 10.0 ** rng.integers(-300, 300, 3000)),
        "inf": torch.tensor([1.0, math.inf, -math.inf, 2.0, 0.0, -0.0, 1e30, -1e30]),
        "nan": torch.tensor([1.0, math.nan, 3.0]),
        "zeros": torch.zeros(10),
        "scalar": torch.tensor(3.5),
        "denormals": torch.tensor([1e-45, -1e-45, 1e-40, -1e-39, 0.0, 1e-12, 1.0000001e-12]),
    }


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_histograms_are_tensorboardx_bytes_for_every_dtype_shape_and_edge_case(logdir):
    inputs = _histogram_inputs()
    options = [("tensorflow", None), ("tensorflow", 25), (10, None), (1, None), ([-1.0, 0.0, 0.5, 2.0], None)]
    checked = 0
    for name, t in inputs.items():
        ref = t.float() if t.dtype == torch.bfloat16 else t
        for bins, max_bins in options:
            tbx_bins = default_bins() if bins == "tensorflow" else bins
            try:
                want = tbx_summary.histogram("h", ref, tbx_bins, max_bins=max_bins)
            except ValueError as exc:  # e.g. bins=10 on a non-finite range, or no value inside the edges
                try:  # the same error, or None: the writer then takes tensorboardX's path, which raises it
                    assert histogram_summary("h", t, bins, max_bins) is None, (name, bins)
                except ValueError as ours_exc:
                    assert str(ours_exc) == str(exc)
                continue
            ours = histogram_summary("h", t, bins, max_bins, on_device=False)
            assert ours is not None, (name, bins)
            assert ours.SerializeToString() == want.SerializeToString(), (name, bins, max_bins)
            # The accelerator path (run here on CPU): same buckets and edges; sums equal to rounding.
            dev = histogram_summary("h", t, bins, max_bins, on_device=True).value[0].histo
            w = want.value[0].histo
            assert (list(dev.bucket), list(dev.bucket_limit), dev.num) == (list(w.bucket), list(w.bucket_limit), w.num)
            scale = float(ref.double().abs().sum())  # the sum may cancel: its rounding scales with sum |x|
            for a, b, tol in ((dev.min, w.min, 0), (dev.max, w.max, 0), (dev.sum, w.sum, 1e-12 * scale),
                              (dev.sum_squares, w.sum_squares, 0)):
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=tol), (name, bins)
            checked += 1
    assert checked > 60

    # Through the writer, read back by TensorBoard: what tensorboardX's writer wrote, byte for byte.
    import tensorboardX

    with SummaryWriter(logdir / "ours") as ours, tensorboardX.SummaryWriter(str(logdir / "tbx")) as theirs:
        for step, name in enumerate(["randn", "randn_f64_3d", "f16", "int64", "bool", "on_edges_f32"]):
            ours.add_histogram(name, inputs[name], step, walltime=5.0)
            theirs.add_histogram(name, inputs[name], step, walltime=5.0)
    got = [e.SerializeToString() for e in H.read_run_events(logdir / "ours") if e.HasField("summary")]
    want = [e.SerializeToString() for e in H.read_run_events(logdir / "tbx") if e.HasField("summary")]
    assert got == want and len(got) == 6
    with pytest.raises(ValueError, match="not finite"):
        with SummaryWriter(logdir / "raises") as writer:
            writer.add_histogram("nan", inputs["nan"], 0, bins=10)  # tensorboardX's own error
