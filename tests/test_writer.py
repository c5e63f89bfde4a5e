"""``hf_mpwriter.SummaryWriter``: what it writes, where, and what survives crashes and restarts.

Every check reads the event files back with TensorBoard's own code (see ``helpers``): its
checksumming record reader, its ``EventAccumulator`` (which implements ``purge_step``) and its
multiplexer (which decides what a run is). Child processes are real OS processes; a crash is a
real SIGKILL.
"""

from __future__ import annotations

import io
import math
import os
import random
import signal
import stat
import struct
import threading
import time
from pathlib import Path

import helpers as H
import numpy as np
import pytest
from tensorboard.compat.proto.event_pb2 import Event as TbEvent
from tensorboard.compat.proto.summary_pb2 import Summary as TbSummary
from tensorboard.util import tensor_util
from tensorboardX import summary as tbx_summary
from tensorboardX.proto.event_pb2 import Event as TbxEvent

from hf_mpwriter import SummaryWriter
from hf_mpwriter.errors import ConfigurationError
from hf_mpwriter.events.encoding import scalar_event

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
F32_MAX = float(np.finfo(np.float32).max)


def f32(value) -> float:
    """What a ``simple_value`` (a float32) holds after logging ``value``."""
    return float(np.float32(float(value)))


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    """Tests decide the rank environment themselves (the suite may run under SLURM or torchrun)."""
    for name in H.LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logdir(tmp_path) -> Path:
    return tmp_path / "logs"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ================================================================================================
# What each add_* method writes, read back with TensorBoard
# ================================================================================================
def _scalar_inputs():
    values = [("float", 0.25), ("int", 7), ("np_float32", np.float32(1.5)), ("np_float64", np.float64(-2.75)),
              ("np_int64", np.int64(42)), ("np_0d_array", np.array(3.0)), ("np_float16", np.float16(0.5)),
              ("np_int32", np.int32(-6)), ("np_uint8", np.uint8(3))]
    if torch is not None:
        values += [("torch_0d_f32", torch.tensor(0.125)), ("torch_0d_f64", torch.tensor(-8.5, dtype=torch.float64)),
                   ("torch_0d_int", torch.tensor(9)), ("torch_1elem", torch.tensor([4.0]))]
    return values


def test_scalars_of_every_input_type_read_back_exactly(logdir):
    inputs = _scalar_inputs()
    with SummaryWriter(logdir) as writer:
        for step in range(5):
            for name, value in inputs:
                writer.add_scalar(f"scalars/{name}", value * (step + 1), step)
        writer.add_scalar("no_step", 1.0)  # no global_step: TensorBoard shows step 0
        writer.add_scalar("walltime", 2.0, 3, walltime=1234.5)

    acc = H.accumulator(logdir)
    expected_tags = {f"scalars/{name}" for name, _ in inputs} | {"no_step", "walltime"}
    assert set(acc.Tags()["scalars"]) == expected_tags
    for name, value in inputs:
        got = [(e.step, e.value) for e in acc.Scalars(f"scalars/{name}")]
        want = [(step, f32(value * (step + 1))) for step in range(5)]
        assert got == want, name
    assert [(e.step, e.value) for e in acc.Scalars("no_step")] == [(0, 1.0)]
    [point] = acc.Scalars("walltime")
    assert (point.wall_time, point.step, point.value) == (1234.5, 3, 2.0)


def test_scalar_with_step_types_and_metadata_options(logdir):
    with SummaryWriter(logdir) as writer:
        writer.add_scalar("s", 1.0, np.int64(5))
        if torch is not None:
            writer.add_scalar("s", 2.0, torch.tensor(6))
        writer.add_scalar("described", 3.0, 1, display_name="Nice", summary_description="what it is")
        writer.add_scalar("new_style", 0.5, 2, new_style=True)
        writer.add_scalar("double", 1 / 3, 3, double_precision=True)
        with writer.use_metadata(global_step=11):
            writer.add_scalar("meta", 4.0)

    steps = [e.step for e in H.accumulator(logdir).Scalars("s")]
    assert steps == ([5, 6] if torch is not None else [5])
    acc = H.plugin_accumulator(logdir)
    assert acc.SummaryMetadata("described").display_name == "Nice"
    assert acc.SummaryMetadata("described").summary_description == "what it is"
    [new] = acc.Tensors("new_style")
    assert acc.SummaryMetadata("new_style").plugin_data.plugin_name == "scalars"
    assert (new.step, float(tensor_util.make_ndarray(new.tensor_proto))) == (2, 0.5)
    [dbl] = acc.Tensors("double")
    assert dbl.tensor_proto.dtype == 2  # DT_DOUBLE: the value is not rounded to float32
    assert float(tensor_util.make_ndarray(dbl.tensor_proto)) == 1 / 3
    assert [(e.step, e.value) for e in H.accumulator(logdir).Scalars("meta")] == [(11, 4.0)]


def _tensorflow_bins():
    """tensorboardX's default ``bins="tensorflow"`` edges (its ``SummaryWriter.default_bins``)."""
    v, pos = 1e-12, []
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    return [-x for x in reversed(pos)] + [0] + pos


def test_histogram_reads_back_as_tensorboardx_computes_it(logdir):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=1000) * (i + 1) for i in range(3)]
    with SummaryWriter(logdir) as writer:
        for step, values in enumerate(batches):
            writer.add_histogram("weights", values, step)
        writer.add_histogram("ints", np.arange(100), 7, bins="auto")

    acc = H.accumulator(logdir)
    assert set(acc.Tags()["histograms"]) == {"weights", "ints"}
    got = acc.Histograms("weights")
    assert [h.step for h in got] == [0, 1, 2]
    for h, values in zip(got, batches):
        want = tbx_summary.histogram("weights", values, _tensorflow_bins()).value[0].histo
        v = h.histogram_value
        assert (v.min, v.max, v.num, v.sum, v.sum_squares) == (want.min, want.max, want.num, want.sum, want.sum_squares)
        assert list(v.bucket_limit) == list(want.bucket_limit)
        assert list(v.bucket) == list(want.bucket)
        assert v.num == 1000 and v.min == values.min() and v.max == values.max()
    [ints] = acc.Histograms("ints")
    assert (ints.step, ints.histogram_value.num, sum(ints.histogram_value.bucket)) == (7, 100, 100)


def test_image_pixels_read_back(logdir):
    from PIL import Image

    rng = np.random.default_rng(1)
    chw = rng.integers(0, 256, size=(3, 20, 30), dtype=np.uint8)
    hwc = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    with SummaryWriter(logdir) as writer:
        writer.add_image("img/chw", chw, 4)
        writer.add_image("img/hwc", hwc, 5, dataformats="HWC")
        writer.add_images("img/batch", np.stack([chw, chw[:, ::-1]]), 6)

    acc = H.accumulator(logdir)
    assert set(acc.Tags()["images"]) == {"img/chw", "img/hwc", "img/batch"}
    [a] = acc.Images("img/chw")
    assert (a.step, a.width, a.height) == (4, 30, 20)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a.encoded_image_string))), chw.transpose(1, 2, 0))
    [b] = acc.Images("img/hwc")
    assert (b.step, b.width, b.height) == (5, 12, 10)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(b.encoded_image_string))), hwc)
    [c] = acc.Images("img/batch")
    assert c.step == 6 and c.encoded_image_string.startswith(b"\x89PNG")


def test_text_reads_back(logdir):
    with SummaryWriter(logdir) as writer:
        writer.add_text("notes", "hello *world*", 3)
        writer.add_text("notes", "ünïcödé 日本", 4)

    acc = H.plugin_accumulator(logdir)
    assert acc.SummaryMetadata("notes/text_summary").plugin_data.plugin_name == "text"
    got = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors("notes/text_summary")]
    assert got == [(3, b"hello *world*"), (4, "ünïcödé 日本".encode())]


def test_pr_curve_reads_back_as_tensorboardx_computes_it(logdir):
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    preds = np.array([0.9, 0.1, 0.8, 0.4, 0.3, 0.65, 0.55, 0.2])
    with SummaryWriter(logdir) as writer:
        writer.add_pr_curve("pr", labels, preds, 4, num_thresholds=11)

    acc = H.plugin_accumulator(logdir)
    assert acc.SummaryMetadata("pr").plugin_data.plugin_name == "pr_curves"
    [e] = acc.Tensors("pr")
    # What tensorboardX computes for these inputs, parsed with TensorBoard's protos:
    expected = TbSummary.FromString(tbx_summary.pr_curve("pr", labels, preds, num_thresholds=11).SerializeToString())
    want = tensor_util.make_ndarray(expected.value[0].tensor)
    got = tensor_util.make_ndarray(e.tensor_proto)
    assert e.step == 4 and got.shape == (6, 11)
    assert np.array_equal(got, want)
    assert got[0, 0] == 4 and got[1, 0] == 4  # true and false positives at threshold 0


def test_hparams_in_a_sub_run(logdir):
    from tensorboard.plugins.hparams import metadata as hp_metadata

    with SummaryWriter(logdir) as writer:
        writer.add_scalar("loss", 1.0, 0)
        writer.add_hparams({"lr": 0.1, "opt": "adam", "bs": 32, "nesterov": True}, {"hp/acc": 0.9}, name="trial1",
                           global_step=7)

    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {".", "trial1"}
    acc = H.plugin_accumulator(runs["trial1"])
    content = acc.PluginTagToContent("hparams")
    start = hp_metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"])
    assert start.hparams["lr"].number_value == 0.1
    assert start.hparams["opt"].string_value == "adam"
    assert start.hparams["bs"].number_value == 32
    assert start.hparams["nesterov"].bool_value is True
    experiment = hp_metadata.parse_experiment_plugin_data(content["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.metric_infos] == ["hp/acc"]
    assert H.scalars(runs["trial1"], "hp/acc") == [(7, f32(0.9))]
    assert H.scalars(runs["."], "loss") == [(0, 1.0)]


def test_add_scalars_matches_tensorboardx_layout(tmp_path):
    import tensorboardX

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    writers = [SummaryWriter(ours), tensorboardX.SummaryWriter(str(theirs))]
    for writer in writers:
        for step in range(10):
            writer.add_scalars("train", {"a": step * 1.0, "b": -step * 2.0}, step)
        writer.add_scalar("plain", 1.0, 0)
        writer.close()

    runs = H.tensorboard_runs(ours)
    assert set(runs) == set(H.tensorboard_runs(theirs)) == {".", "train/a", "train/b"}
    assert H.scalars(runs["train/a"], "train") == [(s, s * 1.0) for s in range(10)]
    assert H.scalars(runs["train/b"], "train") == [(s, -s * 2.0) for s in range(10)]
    assert H.accumulator(runs["."]).Tags()["scalars"] == ["plain"]


def test_embedding_files_read_back(logdir):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    mat = np.arange(12, dtype=np.float32).reshape(4, 3) / 8
    labels = ["a", "b", "c", "d"]
    with SummaryWriter(logdir) as writer:
        writer.add_embedding(mat, metadata=labels, global_step=3, tag="emb")

    config = text_format.Parse((logdir / "projector_config.pbtxt").read_text(),
                               projector_config_pb2.ProjectorConfig())
    [emb] = config.embeddings
    assert emb.tensor_name == "emb:00003"
    tensors = np.loadtxt(logdir / emb.tensor_path, delimiter="\t", ndmin=2)
    assert np.array_equal(tensors, mat)
    assert (logdir / emb.metadata_path).read_text().split() == labels


def test_figure_reads_back_as_an_image(logdir):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1.5), dpi=50)
    plt.plot([0, 1, 2], [2, 0, 1])
    with SummaryWriter(logdir) as writer:
        writer.add_figure("fig", fig, 2)

    [img] = H.accumulator(logdir).Images("fig")
    assert (img.step, img.width, img.height) == (2, 100, 75)
    assert img.encoded_image_string.startswith(b"\x89PNG")


def test_audio_reads_back(logdir):
    pytest.importorskip("soundfile", reason="tensorboardX's add_audio needs soundfile")
    samples = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    with SummaryWriter(logdir) as writer:
        writer.add_audio("snd", samples, 5, sample_rate=8000)

    [a] = H.accumulator(logdir).Audio("snd")
    assert (a.step, a.sample_rate, a.length_frames) == (5, 8000, 8000)


def test_video_reads_back(logdir):
    pytest.importorskip("moviepy", reason="tensorboardX's add_video needs moviepy")
    video = np.random.default_rng(2).integers(0, 256, size=(1, 4, 3, 16, 16), dtype=np.uint8)
    with SummaryWriter(logdir) as writer:
        writer.add_video("vid", video, 1, fps=4)

    [v] = H.accumulator(logdir).Images("vid")
    assert (v.step, v.width, v.height) == (1, 16, 16)


@needs_torch
def test_graph_reads_back(logdir):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return torch.relu(self.fc(x))

    with SummaryWriter(logdir) as writer:
        writer.add_graph(Net(), torch.zeros(1, 3))

    names = [node.name for node in H.accumulator(logdir).Graph().node]
    assert "input/x" in names
    assert any("Linear[fc]/weight" in name for name in names), names


# ================================================================================================
# The scalar fast path is byte-identical to tensorboardX
# ================================================================================================
_TAG_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./" + "éßλЖ损失日本ü"
_STEPS = [None, 0, 1, 127, 128, 16383, 16384, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1]
_SPECIAL_VALUES = [0.0, -0.0, 1.0, -1.0, F32_MAX, -F32_MAX, 1e-45, -1e-45, 1e-40, float("inf"), float("-inf"),
                   float("nan"), 2**24 + 1, 123456789, 0.1, 1 / 3]


def _random_cases(n: int, seed: int = 1234):
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        length = rng.choice([1, 2, 5, 12, 40, 127, 128, 300, 5000]) if i % 50 else rng.choice([1000, 20000])
        tag = "".join(rng.choice(_TAG_CHARS) for _ in range(length)).lstrip("/") or "t"
        if i % 3 == 0:
            tag = f"group{i % 5}/metric"  # repeated tags: the encoder's tag cache
        if i < len(_SPECIAL_VALUES):
            value = _SPECIAL_VALUES[i]
        elif i % 4 == 0:
            value = rng.randint(-(2**40), 2**40)
        else:
            value = rng.uniform(-1, 1) * 10.0 ** rng.randint(-44, 38)
        step = _STEPS[i % len(_STEPS)] if i % 2 else rng.randint(0, 2**62)
        walltime = rng.choice([time.time(), rng.uniform(1e-3, 4e9), 1.0])
        cases.append((tag, value, step, walltime))
    return cases


def _tbx_bytes(tag, value, step, walltime) -> bytes:
    event = TbxEvent(wall_time=walltime, summary=tbx_summary.scalar(tag, value))
    if step is not None:
        event.step = step
    return event.SerializeToString()


def test_scalar_encoding_is_byte_identical_to_tensorboardx():
    cases = _random_cases(3000)
    for tag, value, step, walltime in cases:
        want = _tbx_bytes(tag, value, step, walltime)
        got = scalar_event(tag, float(value), step, walltime)
        assert got == want, (tag[:40], value, step, walltime)


#: Tags tensorboardX's scalar() rewrites (characters outside ``[-/\w.]`` become ``_``, leading
#: slashes go): the encoder restates that rule instead of importing tensorboardX (which imports torch).
_ODD_TAGS = ["a b", "loss:train", "/lead", "//x/y", "/", "a\tb\nc", "x%y!z", "ünï côdé/λ", "emoji ⚡ tag", "a,b;c=d",
             "[bracket](x)", "back\\slash", "trailing/", "dots..ok", "tab\t/"]


def test_scalar_encoding_cleans_tags_as_tensorboardx_does():
    for tag in _ODD_TAGS:
        for step in (None, 0, 5):
            assert scalar_event(tag, 1.5, step, 1700000000.5) == _tbx_bytes(tag, 1.5, step, 1700000000.5), tag


def test_other_events_are_tensorboardx_bytes():
    """Every event file's version record and the system metrics' text event: one encoder, the same bytes."""
    from tensorboardX.summary import text

    from hf_mpwriter.events.encoding import file_version_event, text_event

    for wall_time in (1.0, 1700000000.123456, 4e9):  # (a wall time of 0 is written; protobuf would omit it)
        assert file_version_event(wall_time) == TbxEvent(wall_time=wall_time, file_version="brain.Event:2").SerializeToString()
        for step in (0, 1, 2**40):
            for tag, body in (("system/info", "host: n  \nCPUs: 2 ü"), ("t", ""), ("x" * 200, "y" * 300)):
                want = TbxEvent(wall_time=wall_time, step=step, summary=text(tag, body)).SerializeToString()
                assert text_event(tag, body, step, wall_time) == want, (tag, step)


def test_files_named_after_the_host_follow_one_rule(logdir):
    """Event files, writer registrations, the uploader candidate and the system-metrics run name the
    host one way; an ordinary host name is kept as it is (names on users' disks do not change)."""
    from hf_mpwriter.state import election, registry
    from hf_mpwriter.state.liveness import host_file_name
    from hf_mpwriter.uploader.system_metrics import host_run_name

    for ordinary in ("node-1", "gpu07.cluster.example.org", "ip-10-0-0-1", "Node_A", "vm"):
        assert host_file_name(ordinary) == ordinary
    for odd, safe in (("a/b", "a_b"), ("node 1:x", "node_1_x"), ("nœud", "n_ud"), ("", "localhost"), ("..", "localhost"),
                      (".n.", "n")):
        assert host_file_name(odd) == safe, odd
    assert host_run_name("a/b") == "system/a_b"

    host = host_file_name()
    with SummaryWriter(logdir) as writer:
        writer.add_scalar("x", 1.0, 1)
    [path] = H.event_files(logdir)
    assert path.name.endswith(f".{host}.{os.getpid()}"), path.name
    assert registry.register_writer(logdir, logdir).name.startswith(f"{host}-{os.getpid()}-")
    election.note_candidate(logdir, os.getpid())
    assert (logdir / ".hf_mpwriter" / f"spawned-{host}.json").is_file()


def test_writer_records_are_byte_identical_to_tensorboardx(logdir):
    cases = _random_cases(1500, seed=99)
    extra = []
    for name, value in _scalar_inputs():  # numpy and torch inputs through the writer's fast path
        extra.append((f"typed/{name}", value, 3, 1700000000.25))
    with SummaryWriter(logdir, rotate_bytes=1 << 30) as writer:
        for tag, value, step, walltime in cases + extra:
            writer.add_scalar(tag, value, step, walltime=walltime)

    [path] = H.event_files(logdir)
    records = H.read_raw_records(path)
    assert TbEvent.FromString(records[0]).file_version == "brain.Event:2"
    want = [_tbx_bytes(tag, value, step, walltime) for tag, value, step, walltime in cases + extra]
    assert len(records) - 1 == len(want)
    for i, (got, expected) in enumerate(zip(records[1:], want)):
        assert got == expected, (i, (cases + extra)[i][1:])


def test_fast_path_cleans_tags_like_tensorboardx(logdir):
    tags = ["loss train", "/leading/slash", "acc (val)", "emoji🙂", "a:b", ""]
    with SummaryWriter(logdir) as writer:
        for tag in tags:
            writer.add_scalar(tag, 1.0, 1, walltime=5.0)
    records = H.read_raw_records(H.event_files(logdir)[0])[1:]
    assert records == [_tbx_bytes(tag, 1.0, 1, 5.0) for tag in tags]


def test_values_beyond_float32_are_logged_as_infinity_like_tensorboardx(logdir):
    with SummaryWriter(logdir) as writer:
        writer.add_scalar("diverged", 1e39, 1)  # a float64 loss that blew up must not crash training
        writer.add_scalar("diverged", -1e300, 2)
    assert H.scalars(logdir, "diverged") == [(1, math.inf), (2, -math.inf)]


# ================================================================================================
# Where each process writes: ranks and run directories
# ================================================================================================
def test_single_process_uses_the_plain_layout(logdir):
    with SummaryWriter(logdir) as writer:
        assert writer.get_logdir() == str(logdir)
        writer.add_scalar("loss", 1.0, 0)
    assert len(H.event_files(logdir)) == 1
    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {"."}
    assert H.scalars(runs["."], "loss") == [(0, 1.0)]


@pytest.mark.parametrize(
    "env, kwargs, run",
    [
        ({"RANK": "1", "WORLD_SIZE": "4"}, {}, "rank-001"),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, {}, "rank-003"),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}, {}, "rank-002"),
        ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"}, {}, "rank-003"),
        ({}, {"rank": 5}, "rank-005"),
        ({}, {"rank": 0}, "rank-000"),
        ({"RANK": "1", "WORLD_SIZE": "4"}, {"rank": 2}, "rank-002"),  # rank= overrides the launcher
        ({"RANK": "0", "WORLD_SIZE": "1"}, {}, "."),  # a world of one is the plain layout
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, {}, "."),
    ],
)
def test_rank_run_directories(logdir, monkeypatch, env, kwargs, run):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with SummaryWriter(logdir, **kwargs) as writer:
        expected = logdir if run == "." else logdir / run
        assert Path(writer.get_logdir()) == expected
        writer.add_scalar("loss", 2.5, 10)
    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {run}
    assert H.scalars(runs[run], "loss") == [(10, 2.5)]
    if run != ".":
        assert H.event_files(logdir) == []  # nothing directly in the logdir


@pytest.mark.parametrize("bad", [-1, "3", True, 1.5])
def test_bad_rank_fails_at_construction(logdir, bad):
    with pytest.raises(ConfigurationError, match="rank") as info:
        SummaryWriter(logdir, rank=bad)
    assert repr(bad) in str(info.value)
    assert not logdir.exists()  # nothing written before the error


@pytest.mark.parametrize(
    "env, words",
    [
        ({"RANK": "abc", "WORLD_SIZE": "2"}, ["RANK", "abc"]),
        ({"RANK": "5", "WORLD_SIZE": "2"}, ["RANK=5", "WORLD_SIZE=2"]),
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "x"}, ["SLURM_NTASKS", "x"]),
        ({"OMPI_COMM_WORLD_RANK": "-1", "OMPI_COMM_WORLD_SIZE": "4"}, ["OMPI_COMM_WORLD_RANK=-1"]),
    ],
)
def test_bad_launcher_env_fails_at_construction(logdir, monkeypatch, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        SummaryWriter(logdir)
    for word in words:
        assert word in str(info.value)
    assert not logdir.exists()


def test_logdir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory") as info:
        SummaryWriter(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        SummaryWriter(path / "below")
    assert str(path / "below") in str(info.value)
    assert path.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_logdir(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    existing = parent / "exists"
    existing.mkdir()
    os.chmod(existing, 0o500)
    os.chmod(parent, 0o500)
    try:
        for path in (parent / "new", existing):
            with pytest.raises(ConfigurationError) as info:
                SummaryWriter(path)
            assert str(path) in str(info.value)
    finally:
        os.chmod(parent, 0o700)
        os.chmod(existing, 0o700)


def test_second_writer_in_a_process_gets_its_own_run_dir(logdir):
    first = SummaryWriter(logdir)
    second = SummaryWriter(logdir)
    try:
        assert Path(first.get_logdir()) == logdir
        assert Path(second.get_logdir()) == logdir / "proc-001"
        for step in range(20):
            first.add_scalar("loss", float(step), step)
            second.add_scalar("loss", -float(step), step)
    finally:
        first.close()
        second.close()
    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {".", "proc-001"}
    assert H.scalars(runs["."], "loss") == [(s, float(s)) for s in range(20)]
    assert H.scalars(runs["proc-001"], "loss") == [(s, -float(s)) for s in range(20)]


def test_second_writer_of_a_rank_gets_its_own_run_dir(logdir):
    with SummaryWriter(logdir, rank=1) as first, SummaryWriter(logdir, rank=1) as second:
        assert Path(first.get_logdir()) == logdir / "rank-001"
        assert Path(second.get_logdir()) != logdir / "rank-001"
        first.add_scalar("x", 1.0, 1)
        second.add_scalar("x", 2.0, 1)
        second_dir = Path(second.get_logdir())
    assert H.scalars(logdir / "rank-001", "x") == [(1, 1.0)]
    assert H.scalars(second_dir, "x") == [(1, 2.0)]


def test_restarted_writer_lands_in_the_same_run_dir(logdir, monkeypatch):
    for attempt in range(2):
        with SummaryWriter(logdir) as writer:
            assert Path(writer.get_logdir()) == logdir
            writer.add_scalar("attempt", float(attempt), attempt)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for attempt in range(2):
        with SummaryWriter(logdir) as writer:
            assert Path(writer.get_logdir()) == logdir / "rank-001"
            writer.add_scalar("attempt", float(attempt), attempt)
    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {".", "rank-001"}
    for run in runs.values():
        assert H.scalars(run, "attempt") == [(0, 0.0), (1, 1.0)]
        assert len(H.event_files(run)) == 2


# ================================================================================================
# Real processes
# ================================================================================================
_RENDEZVOUS = """
import os, sys, time
from pathlib import Path
_barrier, _ident, _n = Path(os.environ["T_BARRIER"]), os.environ["T_ID"], int(os.environ["T_N"])


def rendezvous(name):
    \"\"\"Wait until all T_N processes got here (a barrier made of files).\"\"\"
    (_barrier / f"{name}-{_ident}").touch()
    deadline = time.monotonic() + 20
    while sum((_barrier / f"{name}-{i}").exists() for i in range(_n)) < _n:
        if time.monotonic() > deadline:
            sys.exit(f"rendezvous {name!r}: the other processes did not arrive within 20 s")
        time.sleep(0.0005)
"""


def _run_together(tmp_path, envs, body: str) -> list[str]:
    """Run ``body`` in ``len(envs)`` processes at once; their stdouts."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [H.spawn(_RENDEZVOUS + body, H.child_env(T_BARRIER=barrier, T_ID=i, T_N=len(envs), **env))
             for i, env in enumerate(envs)]
    try:
        return [H.finish(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# All processes open their writers at the same moment, and all are still open when each has logged
# everything: they overlap for their whole life.
_LOG_200 = """
from hf_mpwriter import SummaryWriter
kwargs = {"rank": int(os.environ["T_RANK"])} if "T_RANK" in os.environ else {}
ident = int(os.environ["T_ID"])
rendezvous("start")
with SummaryWriter(os.environ["T_LOGDIR"], **kwargs) as w:
    print(w.get_logdir(), flush=True)
    for step in range(200):
        w.add_scalar("loss", ident * 1000.0 + step, step)
        if step % 50 == 0:
            w.add_histogram("h", [float(ident)] * 3, step)
    rendezvous("logged")
"""


def test_two_processes_without_rank_info_keep_all_their_data(tmp_path, logdir):
    outs = _run_together(tmp_path, [{"T_LOGDIR": logdir}] * 2, _LOG_200)
    dirs = sorted(Path(out.strip()) for out in outs)
    assert dirs == [logdir, logdir / "proc-001"]
    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {".", "proc-001"}
    seen = set()
    for run_dir in runs.values():
        points = H.scalars(run_dir, "loss")
        ident = int(points[0][1] // 1000)
        assert points == [(s, ident * 1000.0 + s) for s in range(200)]
        assert [h.step for h in H.accumulator(run_dir).Histograms("h")] == [0, 50, 100, 150]
        seen.add(ident)
    assert seen == {0, 1}


def test_four_ranks_each_in_their_own_run_dir(tmp_path, logdir):
    envs = [{"T_LOGDIR": logdir, "T_RANK": r} for r in range(4)]
    outs = _run_together(tmp_path, envs, _LOG_200)
    assert [Path(out.strip()) for out in outs] == [logdir / f"rank-{r:03d}" for r in range(4)]
    runs = H.tensorboard_runs(logdir)
    assert set(runs) == {f"rank-{r:03d}" for r in range(4)}
    for r in range(4):
        assert H.scalars(runs[f"rank-{r:03d}"], "loss") == [(s, r * 1000.0 + s) for s in range(200)]
    assert H.event_files(logdir) == []


def _one_torn_record(tail: bytes) -> bool:
    """Whether ``tail`` (the bytes after the last whole record) is the start of one record, cut short by the
    kill (a ~5 KB histogram record can be cut anywhere in it), not more."""
    if len(tail) < 8:
        return True
    (length,) = struct.unpack_from("<Q", tail)
    return len(tail) < 12 + length + 4 <= 64 * 1024


_LOG_FOREVER = """
import os, numpy as np
from hf_mpwriter import SummaryWriter
# Only explicit flushes hand data to the OS: what was reported flushed is all that must survive.
w = SummaryWriter(os.environ["T_LOGDIR"], max_queue=10**9, flush_secs=3600)
print("RUN", w.get_logdir(), flush=True)
step = 0
while True:
    w.add_scalar("loss", float(step), step)
    if step % 10 == 0:
        w.add_histogram("h", np.arange(step % 7 + 1, dtype=float), step)
    if step % 25 == 24:
        w.flush()
        print("FLUSHED", step, flush=True)
    step += 1
"""

_RESUME = """
import os
from hf_mpwriter import SummaryWriter
start = int(os.environ["T_PURGE"])
with SummaryWriter(os.environ["T_LOGDIR"], purge_step=start) as w:
    print(w.get_logdir(), flush=True)
    for step in range(start, start + int(os.environ["T_COUNT"])):
        w.add_scalar("loss", -float(step), step)
"""


def test_sigkilled_process_keeps_every_flushed_record_and_resumes(logdir):
    env = H.child_env(T_LOGDIR=logdir, RANK=1, WORLD_SIZE=2)
    proc = H.spawn(_LOG_FOREVER, env)
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        run_line = proc.stdout.readline()
        assert run_line.startswith("RUN "), run_line + proc.stderr.read()
        run_dir = Path(run_line.split(" ", 1)[1].strip())
        assert run_dir == logdir / "rank-001"
        flushed = -1
        while flushed < 1000:
            line = proc.stdout.readline()
            assert line.startswith("FLUSHED "), line + proc.stderr.read()
            flushed = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: the child keeps logging until the signal lands
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    files = H.event_files(run_dir)
    assert files
    for path in files:
        events = H.read_file_events(path)
        whole, covered = H.record_spans(path)
        assert len(events) == whole, f"{path.name}: a whole record failed TensorBoard's checksums"
        assert _one_torn_record(path.read_bytes()[covered:]), "more than a torn tail after the last whole record"
        assert events[0].file_version == "brain.Event:2"
    points = H.scalar_points(H.read_run_events(run_dir), "loss")
    last = points[-1][0]
    assert last >= flushed
    assert points == [(s, float(s)) for s in range(last + 1)]  # in order, nothing missing

    # A restarted rank (after SIGKILL the OS released its claim) continues the same run.
    resume = flushed - 500
    out = H.run(_RESUME, H.child_env(T_LOGDIR=logdir, RANK=1, WORLD_SIZE=2, T_PURGE=resume, T_COUNT=100))
    assert Path(out.strip()) == run_dir
    assert set(H.tensorboard_runs(logdir)) == {"rank-001"}
    assert H.scalars(run_dir, "loss") == [(s, float(s)) for s in range(resume)] + [
        (s, -float(s)) for s in range(resume, resume + 100)
    ]


# ================================================================================================
# Files: rotation, purge_step, reopen, flushing
# ================================================================================================
def test_rotation(logdir):
    n = 3000
    writer = SummaryWriter(logdir, rotate_bytes=4096)
    try:
        for step in range(n):
            writer.add_scalar("loss", step / 7, step)
        writer.flush()
        created = [p.name for p in writer.file_writer.event_writer.files]
        files = H.event_files(logdir)
        assert len(files) >= 5
        assert [p.name for p in files] == created  # name order == creation order
        for path in files[:-1]:
            assert mode(path) == 0o444, path.name  # closed files are complete and read-only
            assert path.stat().st_size <= 4096 + 1024  # rotation happens promptly past the limit
    finally:
        writer.close()
    files = H.event_files(logdir)
    assert all(mode(path) == 0o444 for path in files)
    first_steps = []
    for path in files:
        events = H.read_file_events(path)
        assert events[0].file_version == "brain.Event:2"  # every file stands on its own
        first_steps.append(H.scalar_points(events)[0][0])
    assert first_steps == sorted(first_steps) and len(set(first_steps)) == len(files)
    want = [(s, f32(s / 7)) for s in range(n)]
    assert H.scalar_points(H.read_run_events(logdir), "loss") == want
    assert H.scalars(logdir, "loss") == want


def _purge_expectation(old, new_start, new_count):
    return [(s, old(s)) for s in range(new_start)] + [(s, -float(s)) for s in range(new_start, new_start + new_count)]


def test_purge_step_resume_hides_the_old_steps(logdir):
    with SummaryWriter(logdir) as writer:
        for step in range(100):
            writer.add_scalar("loss", float(step), step)
        first_dir = writer.get_logdir()
    with SummaryWriter(logdir, purge_step=50) as writer:
        assert writer.get_logdir() == first_dir
        for step in range(50, 80):
            writer.add_scalar("loss", -float(step), step)

    assert len(H.event_files(logdir)) == 2
    assert H.scalars(logdir, "loss") == _purge_expectation(float, 50, 30)
    # Without TensorBoard's purge the old steps 50..99 are all still in the files:
    assert len(H.scalars(logdir, "loss", purge=False)) == 130


def test_purge_step_resume_of_a_rank_in_real_processes(logdir):
    env = dict(T_LOGDIR=logdir, RANK=2, WORLD_SIZE=4, T_COUNT=100)
    out1 = H.run(_RESUME.replace("-float(step)", "float(step)"), H.child_env(T_PURGE=0, **env))
    out2 = H.run(_RESUME, H.child_env(**{**env, "T_PURGE": 50, "T_COUNT": 30}))
    assert Path(out1.strip()) == Path(out2.strip()) == logdir / "rank-002"
    assert set(H.tensorboard_runs(logdir)) == {"rank-002"}
    assert H.scalars(logdir / "rank-002", "loss") == _purge_expectation(float, 50, 30)


def test_purge_is_not_repeated_after_reopen(logdir):
    with SummaryWriter(logdir) as writer:
        for step in range(10):
            writer.add_scalar("loss", float(step), step)
    writer = SummaryWriter(logdir, purge_step=5)
    writer.add_scalar("loss", -5.0, 5)
    writer.add_scalar("loss", -6.0, 6)
    writer.close()
    writer.add_scalar("loss", -7.0, 7)  # logging after close continues in a new file
    writer.close()
    assert H.scalars(logdir, "loss") == [(s, float(s)) for s in range(5)] + [(5, -5.0), (6, -6.0), (7, -7.0)]


def test_logging_after_close_continues_in_a_new_file(logdir):
    writer = SummaryWriter(logdir)
    for step in range(10):
        writer.add_scalar("loss", float(step), step)
    writer.close()
    [first] = H.event_files(logdir)
    snapshot = first.read_bytes()
    assert mode(first) == 0o444
    for step in range(10, 20):
        writer.add_scalar("loss", float(step), step)
    writer.add_text("t", "after reopen", 20)
    writer.close()
    files = H.event_files(logdir)
    assert len(files) == 2 and files[0] == first
    assert first.read_bytes() == snapshot  # the closed file was not touched
    assert all(mode(path) == 0o444 for path in files)
    assert H.scalars(logdir, "loss") == [(s, float(s)) for s in range(20)]
    assert Path(writer.get_logdir()) == logdir
    writer.close()  # closing twice is harmless


def test_a_closed_event_file_writer_says_to_create_a_new_writer(logdir):
    """The SummaryWriter continues after close() on its own; its closed file writer, held directly, is done."""
    from hf_mpwriter.events.event_file import EventFileWriter

    logdir.mkdir(parents=True)
    events = EventFileWriter(logdir)
    events.close()
    with pytest.raises(RuntimeError, match="closed; create a new writer"):
        events.add_serialized(scalar_event("x", 1.0, 1, 1.0))
    # tensorboardX's FileWriter.reopen() (broken there) says the same instead of an AttributeError.
    from hf_mpwriter.writer.file_writer import FileWriter

    files = FileWriter(logdir / "fw")
    files.close()
    with pytest.raises(RuntimeError, match="closed; create a new writer"):
        files.reopen()


def test_with_block_closes_even_on_error(logdir):
    with pytest.raises(KeyError):
        with SummaryWriter(logdir, flush_secs=3600) as writer:
            writer.add_scalar("loss", 1.0, 1)
            raise KeyError("boom")
    [path] = H.event_files(logdir)
    assert mode(path) == 0o444
    assert H.scalars(logdir, "loss") == [(1, 1.0)]
    assert writer.file_writer is None


def test_flush_and_periodic_flush_hand_data_to_the_os(logdir):
    with SummaryWriter(logdir, flush_secs=3600) as writer:
        writer.add_scalar("loss", 1.0, 1)
        writer.flush()
        assert H.scalar_points(H.read_run_events(logdir)) == [(1, 1.0)]
    other = logdir / "periodic"
    with SummaryWriter(other, flush_secs=0.3) as writer:
        writer.add_scalar("loss", 2.0, 2)  # fewer than max_queue events: only the timer flushes it
        H.wait_for(lambda: H.scalar_points(H.read_run_events(other)) == [(2, 2.0)], timeout=10,
                   what="the periodic flush")


def test_events_buffered_at_normal_exit_are_not_lost(logdir):
    H.run("""
import os
from hf_mpwriter import SummaryWriter
w = SummaryWriter(os.environ["T_LOGDIR"], flush_secs=3600)
for step in range(5):
    w.add_scalar("loss", float(step), step)
""", H.child_env(T_LOGDIR=logdir))
    assert H.scalar_points(H.read_run_events(logdir)) == [(s, float(s)) for s in range(5)]
    assert all(mode(path) == 0o444 for path in H.event_files(logdir))  # closed at exit: complete


def test_write_to_disk_false_writes_nothing(logdir):
    writer = SummaryWriter(logdir, write_to_disk=False)
    writer.add_scalar("loss", 1.0, 1)
    writer.add_scalars("grp", {"a": 1.0}, 1)
    writer.add_hparams({"lr": 0.1}, {"acc": 1.0})
    writer.close()
    assert not logdir.exists() or not any(logdir.rglob("*tfevents*"))


def test_write_error_keeps_data_until_the_disk_accepts_it_again(logdir):
    """Disk full, simulated with RLIMIT_FSIZE: nothing is lost or duplicated, the file stays valid."""
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("needs RLIMIT_FSIZE")
    out = H.run("""
import os, resource, signal, logging
logging.disable(logging.CRITICAL)
from hf_mpwriter import SummaryWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
w = SummaryWriter(os.environ["T_LOGDIR"], max_queue=10**9, flush_secs=3600)
ev = w.file_writer.event_writer
for step in range(100):
    w.add_scalar("loss", float(step), step)
w.flush()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.fstat(ev._fd).st_size + 100, hard))
def flush():  # flush() never raises: it returns; what waits in memory is unwritten_bytes
    w.flush()
    return "ok" if w.unwritten_bytes == 0 else "kept"
for step in range(100, 300):
    w.add_scalar("loss", float(step), step)
print("error1", flush(), ev.pending_error is not None)
for step in range(300, 400):
    w.add_scalar("loss", float(step), step)
print("error2", flush(), ev.pending_error is not None)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print("error3", flush(), ev.pending_error is not None)
w.close()
""", H.child_env(T_LOGDIR=logdir))
    assert out.split() == ["error1", "kept", "True", "error2", "kept", "True", "error3", "ok", "False"]
    [path] = H.event_files(logdir)
    whole, covered = H.record_spans(path)
    assert covered == path.stat().st_size and len(H.read_file_events(path)) == whole
    assert H.scalars(logdir, "loss") == [(s, float(s)) for s in range(400)]
