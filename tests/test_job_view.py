"""The job run (``<logdir>/job/``): every scalar's statistics across the ranks, read back from the target
with TensorBoard's reader and compared with the same statistics recomputed (numpy) from the per-rank
runs read back from the same target."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from helpers import accumulator, plugin_accumulator, read_line
from proc_writer import weights
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboardX import SummaryWriter as TBXWriter
from tensorboardX import summary as tbx_summary
from tensorboardX.proto import summary_pb2, tensor_pb2, types_pb2
from upload_helpers import TOKEN, finish, hub_env, materialise, start_writer, uploader_pid, wait_for

from hf_mpwriter.cli.status import collect
from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
from hf_mpwriter.events.decoding import scalars
from hf_mpwriter.events.encoding import layout_event, scalar_event, scalars_event, text_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.events.records import iter_records
from hf_mpwriter.uploader.jobrun.bounds import ViewBounds
from hf_mpwriter.uploader.jobrun.percentiles import PERCENTILES
from hf_mpwriter.uploader.jobrun.runfile import STATS, stat_tag
from hf_mpwriter.uploader.jobrun.stats import Stats
from hf_mpwriter.uploader.jobrun.view import STATE_FILE, JobView

REPO = "tester/job-view"
PREFIX = "tensorboard/logs/"


def _remote(hub) -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(PREFIX)}


def _recomputed(copy: Path, tag: str) -> dict[int, dict[str, float]]:
    """Each step's statistics, recomputed with numpy from the ranks' runs as TensorBoard reads them."""
    by_step: dict[int, dict[int, float]] = defaultdict(dict)
    for run in sorted(copy.glob("rank-*")):
        for event in accumulator(run).Scalars(tag):
            by_step[event.step][int(run.name.split("-")[1])] = event.value
    out = {}
    for step, by_rank in by_step.items():
        ranks = sorted(by_rank)
        values = np.array([by_rank[r] for r in ranks], dtype=np.float64)
        out[step] = {"mean": values.mean(), "min": values.min(), "max": values.max(), "std": values.std(),
                     "min_rank": ranks[int(values.argmin())], "max_rank": ranks[int(values.argmax())],
                     "ranks": len(ranks), **_nearest_rank(values)}
    return out


def _nearest_rank(values: Iterable[float]) -> dict[str, float]:
    """p50, p90, p99 as the job run defines them: of the m non-NaN values sorted, the one at 0-based index
    ceil(p * m / 100) - 1."""
    ordered = sorted(float(v) for v in values if not math.isnan(v))
    return {name: ordered[math.ceil(p * len(ordered) / 100) - 1] for name, p in PERCENTILES}


def _job_points(copy: Path, tag: str) -> dict[int, dict[str, float]]:
    """The job run's statistics of ``tag`` by step, as TensorBoard reads them: its scalars, and the min and
    max ranks from the step's ``job/extreme_ranks`` text."""
    acc = accumulator(copy / "job")
    points: dict[int, dict[str, float]] = defaultdict(dict)
    for name in (*STATS, *(name for name, _ in PERCENTILES)):
        for event in acc.Scalars(stat_tag(tag, name)):
            assert name not in points[event.step], f"{stat_tag(tag, name)}: step {event.step} twice"
            points[event.step][name] = event.value
    texts = plugin_accumulator(copy / "job")
    if "~job/extreme_ranks/text_summary" in texts.Tags()["tensors"]:
        for event in texts.Tensors("~job/extreme_ranks/text_summary"):
            for line in event.tensor_proto.string_val[0].decode().split("  \n"):
                name, _, ranks = line.rpartition(": min rank ")
                if name == tag and event.step in points:
                    low, _, high = ranks.partition(", max rank ")
                    points[event.step].update(min_rank=float(low), max_rank=float(high.split(",")[0]))
    return points


def _assert_equal(job: dict[int, dict[str, float]], want: dict[int, dict[str, float]], world: int) -> None:
    assert sorted(job) == sorted(want)
    for step, stats in want.items():
        got = job[step]
        for name in ("mean", "min", "max", "std", *(name for name, _ in PERCENTILES)):  # float32 in the event file
            assert got[name] == pytest.approx(stats[name], rel=1e-6, abs=1e-6), (step, name, got, stats)
        for name in ("min_rank", "max_rank", "ranks"):
            assert got[name] == stats[name], (step, name, got, stats)
        assert got["missing"] == world - stats["ranks"], (step, got)


def _assert_histogram(got, values: np.ndarray) -> None:
    """``got`` (TensorBoard's ``HistogramValue``) is tensorboardX's histogram of ``values`` (default buckets)."""
    want = tbx_summary.histogram("h", values, bins=_default_bins()).value[0].histo
    assert (got.min, got.max, got.num) == (want.min, want.max, want.num)
    assert got.sum == pytest.approx(want.sum, rel=1e-12, abs=1e-9)
    assert got.sum_squares == pytest.approx(want.sum_squares, rel=1e-12)
    assert (list(got.bucket_limit), list(got.bucket)) == (list(want.bucket_limit), list(want.bucket))


def _default_bins() -> list[float]:
    """tensorboardX's default buckets (``bins="tensorflow"``), as its writer makes them."""
    writer = TBXWriter(write_to_disk=False)
    try:
        return writer.default_bins
    finally:
        writer.close()


def _bucket_files(hub) -> dict[str, bytes]:
    """The bucket's files as a user reads them: through the real client (``HfFileSystem``, Xet download)."""
    from hf_mpwriter.targets.bucket import BucketTarget

    target = BucketTarget(REPO, prefix=PREFIX.rstrip("/"), token=TOKEN, endpoint=hub.endpoint)
    return {p[len(PREFIX):]: target.read(p[len(PREFIX):]) for p in hub.bucket_files(REPO) if p.startswith(PREFIX)}


@pytest.mark.parametrize("kind", ["repository", "bucket"])
def test_four_ranks_job_run_equals_the_statistics_of_their_runs_read_back_from_the_hub(hub, tmp_path, kind):
    """Four real writer processes of one job (``WORLD_SIZE=4``), a repository or a Storage Bucket on the
    test Hub: the job run read back from the target holds, for both tags and every step, exactly the
    statistics of the four ranks' runs read back from the same target, and a margin chart per tag."""
    if kind == "bucket" and hub_version() < BUCKETS_VERSION:
        pytest.skip("Storage Buckets need huggingface_hub>=1.5")
    target = REPO if kind == "repository" else f"hf://buckets/{REPO}"
    logdir, world, steps, go = tmp_path / "logs", 4, 120, tmp_path / "all-logged"
    procs = [start_writer({"logdir": str(logdir), "repo_id": target, "commit_every_s": 1.0, "steps": steps,
                           "sleep": 0.01, "step_time": True, "histogram": 1, "close_timeout": 90,
                           "close_after": str(go)},
                          hub_env(hub, tmp_path, RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r)))
             for r in range(world)]
    for proc in procs:  # the ranks of one job live together (none ends before another starts)
        read_line(proc, f"flushed {steps - 1}")
    go.touch()
    for proc in procs:
        finish(proc)
    wait_for(lambda: uploader_pid(logdir) is None, 90, "the uploader to commit the job run's last points and exit")
    assert collect(logdir)["up_to_date"] and collect(logdir)["target"]["kind"] == ("hub" if kind == "repository" else kind)
    copy = materialise(_remote(hub) if kind == "repository" else _bucket_files(hub), tmp_path / "remote")
    assert sorted(p.name for p in copy.iterdir()) == ["job", "rank-000", "rank-001", "rank-002", "rank-003"]
    for tag in ("loss", "step_time"):
        want = _recomputed(copy, tag)
        assert sorted(want) == list(range(steps)) and {s["ranks"] for s in want.values()} == {world}
        # The scenario: the extremes move between ranks (step_time), so the min/max ranks are really read.
        assert tag == "loss" or len({s["max_rank"] for s in want.values()}) == world
        _assert_equal(_job_points(copy, tag), want, world)
    layout = plugin_accumulator(copy / "job").Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0]
    charts = layout_pb2.Layout.FromString(layout).category[0].chart
    assert {c.title: (c.margin.series[0].value, c.margin.series[0].lower, c.margin.series[0].upper)
            for c in charts if c.HasField("margin")} == {t: (t, f"~job/{t}/min", f"~job/{t}/max") for t in ("loss", "step_time")}
    lines = {c.title: list(c.multiline.tag) for c in charts if c.HasField("multiline")}
    assert set(lines) == {f"{t}: mean, p50, p90, p99" for t in ("loss", "step_time")}
    tags = accumulator(copy / "job").Tags()["scalars"]
    for title, (regex,) in lines.items():  # each multiline chart's regex picks the tag's mean and percentiles alone
        tag = title.split(":")[0]
        assert sorted(t for t in tags if re.search(regex, t)) == sorted([tag, *(f"~job/{tag}/p{p}" for p in (50, 90, 99))])
    # Each step's histogram of the four ranks' weights, merged, is tensorboardX's histogram of all their values.
    merged = {e.step: e.histogram_value for e in accumulator(copy / "job").Histograms("weights")}
    assert sorted(merged) == list(range(steps))
    for step, got in merged.items():
        _assert_histogram(got, np.concatenate([weights(r, step) for r in range(world)]))
    status = collect(logdir)["job_view"]
    assert status["world_size"] == world and status["missing_ranks"] == [] and status["late"] == 0
    assert status["newest_step"] == {str(r): steps - 1 for r in range(world)}


def test_a_rank_killed_mid_run_is_counted_missing_and_named(tmp_path):
    """Three ranks (``WORLD_SIZE=3``), a local target; rank 2 is SIGKILLed mid-run. Its steps before the
    kill count 3 of 3; the later ones 2 of 3, with rank 2 named; every point equals the survivors' own
    statistics read back from the target."""
    logdir, target, world, steps = tmp_path / "logs", tmp_path / "target", 3, 300
    cfg = {"logdir": str(logdir), "target_dir": str(target), "commit_every_s": 1.0, "sleep": 0.01,
           "step_time": True, "close_timeout": 90}
    env, killed = {"WORLD_SIZE": str(world)}, tmp_path / "killed"
    # The survivors stay live writers until rank 2 is dead (the job goes on without it).
    survivors = [start_writer({**cfg, "steps": steps, "close_after": str(killed)},
                              {**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]
    victim = start_writer(cfg, {**env, "RANK": "2", "LOCAL_RANK": "2"})
    read_line(victim, "flushed 49")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    killed.touch()
    for proc in survivors:
        finish(proc)
    # The job run's last points are written when the uploader is about to exit, after the survivors'
    # close() returned (which waits for their own files only).
    wait_for(lambda: uploader_pid(logdir) is None, 90, "the uploader to write the job run's last points and exit")
    assert collect(logdir)["up_to_date"]
    copy = target / "tensorboard" / "logs"  # what the target holds
    died_at = 1 + max(e.step for e in accumulator(copy / "rank-002").Scalars("loss"))
    assert 50 <= died_at < steps, died_at  # the scenario: rank 2 died with the others' later steps still to come
    for tag in ("loss", "step_time"):
        job, want = _job_points(copy, tag), _recomputed(copy, tag)
        _assert_equal(job, want, world)
        assert {s: p["ranks"] for s, p in job.items()} == {s: 3 if s < died_at else 2 for s in range(steps)}
        named = plugin_accumulator(copy / "job").Tensors(f"~job/{tag}/missing_ranks/text_summary")
        assert [e.step for e in named] == list(range(died_at, steps))
        assert {e.tensor_proto.string_val[0].decode() for e in named} == {"missing: rank 2"}
    # status: rank 2 is behind by the steps it missed; the ranks most often step_time's max and min are
    # those the target's runs give.
    view = collect(logdir)["job_view"]
    assert view["behind"] == {"2": steps - died_at} and view["missing_ranks"] == []
    want = _recomputed(copy, "step_time")
    for side in ("min", "max"):
        counts = Counter(point[f"{side}_rank"] for point in want.values())
        listed = dict(view["extremes"]["step_time"][side])
        assert listed and all(times == counts[int(rank)] for rank, times in listed.items()), (listed, counts)
        assert min(listed.values()) >= max((c for r, c in counts.items() if r not in listed), default=0)
    for tag in ("step_time", "no-such-tag"):  # the text form runs, with a known tag and an unknown one
        shown = subprocess.run([sys.executable, "-m", "hf_mpwriter", "status", str(logdir), "--tag", tag],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr


# -- the rules, on a clock of the test's -------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _rank_writer(logdir: Path, rank: int) -> EventFileWriter:
    (logdir / f"rank-{rank:03d}").mkdir(parents=True)
    return EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1000, flush_secs=3600)


def _log(writer: EventFileWriter, step: int, value: float, tag: str = "loss") -> None:
    writer.add_serialized(scalar_event(tag, value, step, 1000.0 + step))
    writer.flush()


def _held(logdir: Path) -> dict[int, tuple[float, float]]:
    """step -> (mean, ranks) of the job run's ``loss``, as written."""
    found: dict[int, dict[str, float]] = defaultdict(dict)
    for path in sorted((logdir / "job").glob("*tfevents*")):
        with open(path, "rb") as handle:
            for _, record in iter_records(handle):
                for s in scalars(record):
                    if s.tag in ("loss", "~job/loss/ranks"):
                        assert s.tag not in found[s.step], f"{s.tag} at step {s.step} written twice"
                        found[s.step][s.tag] = s.value
    return {step: (v["loss"], v["~job/loss/ranks"]) for step, v in found.items()}


def test_a_step_waits_for_its_ranks_then_is_written_without_them_and_late_values_are_counted(tmp_path):
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(3)]
    view = JobView(logdir, 3, wait=30.0, clock=clock)
    _log(ranks[0], 0, 1.0)
    _log(ranks[1], 0, 2.0)
    assert view.update() == 0 and view.waiting == 1  # rank 2 not there yet: the step waits
    _log(ranks[2], 0, 6.0)
    assert view.update() == 1 and _held(logdir) == {0: (3.0, 3)}  # every rank: written at once
    _log(ranks[0], 1, 1.0)
    _log(ranks[1], 1, 3.0)
    assert view.update() == 0  # read at 0 s
    clock.now = 29.9
    assert view.update() == 0  # rank 2 has not reached step 1 and is alive: the step waits for it
    view.live = {0, 1}  # rank 2's writer is gone, as the uploader sees it
    assert view.update() == 0  # still within the wait
    clock.now = 30.0
    assert view.update() == 1 and _held(logdir)[1] == (2.0, 2)  # waited its time: written without rank 2
    _log(ranks[2], 1, 100.0)  # late: its point is written
    assert view.update() == 0 and view.late == 1 and _held(logdir)[1] == (2.0, 2)
    _log(ranks[0], 2, 5.0)
    assert view.update(final=True) == 1 and _held(logdir)[2] == (5.0, 1)  # the job ended: written as it is
    assert view.summary()["behind"] == {"1": 1, "2": 1}
    view.close()
    # A restarted uploader takes up where the last one stopped (its state file): nothing read again.
    _log(ranks[1], 2, 7.0)
    _log(ranks[1], 3, 8.0)
    again = JobView(logdir, 3, wait=30.0, clock=clock)
    assert again.update(final=True) == 1 and _held(logdir)[3] == (8.0, 1)
    assert _held(logdir)[2] == (5.0, 1)  # rank 1's step 2 came after the step was written: not rewritten
    assert again.late == view.late + 1  # that value, the one new late one
    again.close()
    # Without the state (lost): the ranks' files are read from their start; nothing written twice (``_held``
    # checks it), nothing counted late again.
    (logdir / ".hf_mpwriter" / STATE_FILE).unlink()
    _log(ranks[0], 4, 9.0)
    third = JobView(logdir, 3, wait=30.0, clock=clock)
    assert third.update(final=True) == 1 and _held(logdir)[4] == (9.0, 1) and third.late == 0
    third.close()
    for writer in ranks:
        writer.close()


def test_ties_name_the_lowest_rank(tmp_path):
    logdir = tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(4)]
    for rank, value in enumerate([2.0, 1.0, 2.0, 1.0]):
        _log(ranks[rank], 0, value)
    view = JobView(logdir, 4, wait=30.0)
    assert view.update() == 1
    assert {name: _job_points(logdir, "loss")[0][name] for name in ("min_rank", "max_rank")} == {"min_rank": 1.0,
                                                                                                   "max_rank": 0.0}
    view.close()
    for writer in ranks:
        writer.close()


# -- encoding and decoding -----------------------------------------------------------------------------
def test_the_layout_is_tensorboardx_s_own_event(tmp_path):
    writer = TBXWriter(str(tmp_path / "tbx"))
    writer.add_custom_scalars({"job": {"loss": ["Margin", ["loss/mean", "loss/min", "loss/max"]],
                                       "loss: p": ["Multiline", ["^loss$", "^loss/p50$"]]}})
    writer.close()
    (path,) = (tmp_path / "tbx").glob("*tfevents*")
    with open(path, "rb") as handle:
        records = [data for _, data in iter_records(handle)]
    ours = layout_event("job", [("loss", "loss/mean", "loss/min", "loss/max"), ("loss: p", ["^loss$", "^loss/p50$"])], 0.0)
    theirs = records[1]
    assert ours[9:] == theirs[9:]  # all but the wall time (field 1, 8 bytes after its key)


def test_scalars_are_read_back_as_tensorboardx_and_tensorflow_2_write_them(tmp_path):
    writer = TBXWriter(str(tmp_path / "tbx"))
    writer.add_scalar("a", 1.5, 3)
    # TensorFlow 2's scalars: a one-element float or double tensor of the scalars plugin.
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    for tag, step, tensor in [("b", 4, tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[2.5])),
                              ("c", 5, tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[3.5])),
                              ("d", 6, tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                                              tensor_content=np.float32([4.5]).tobytes()))]:
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)
        writer.file_writer.add_summary(summary_pb2.Summary(value=[value]), step)
    writer.add_histogram("h", np.arange(10), 7)  # not a scalar: skipped
    writer.add_text("t", "text", 8)
    writer.close()
    (path,) = (tmp_path / "tbx").glob("*tfevents*")
    with open(path, "rb") as handle:
        found = [(s.tag, s.step, s.value) for _, data in iter_records(handle) for s in scalars(data)]
    assert found == [("a", 3, 1.5), ("b", 4, 2.5), ("c", 5, 3.5), ("d", 6, 4.5)]
    many = scalars_event([("x/mean", 1.25), ("x/ranks", 4.0)], 9, 12.5)
    assert [(s.tag, s.step, s.wall_time, s.value) for s in scalars(many)] == [("x/mean", 9, 12.5, 1.25),
                                                                              ("x/ranks", 9, 12.5, 4.0)]
    assert scalars(b"\xff\xff") == []  # a record that does not parse: nothing, no error


def test_a_tags_steps_are_written_in_order_even_when_a_later_step_is_complete_first(tmp_path):
    """Rank 1 skips step 0 of ``loss``: step 1 is complete first, and is written with step 0 before it
    (TensorBoard drops a tag's later points when an earlier step comes after them)."""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(2)]
    view = JobView(logdir, 2, wait=30.0, clock=clock)
    _log(ranks[0], 0, 1.0)
    _log(ranks[0], 1, 2.0)
    _log(ranks[1], 1, 4.0)
    assert view.update() == 2  # step 1 is complete; step 0 (rank 1 missing) goes with it, first
    assert _held(logdir) == {0: (1.0, 1), 1: (3.0, 2)}
    acc = accumulator(logdir / "job")
    assert [e.step for e in acc.Scalars("loss")] == [0, 1]  # TensorBoard keeps both
    view.close()
    for writer in ranks:
        writer.close()


def test_a_multi_node_logdir_writes_once_it_has_seen_every_rank_and_keeps_nothing_before(tmp_path):
    """``whole_world``: a node-local logdir of a 4-rank job (ranks 0 and 1 here) writes no job run and
    keeps no value once due; when the logdir turns out shared (ranks 2 and 3 appear), it writes."""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(4)]
    view = JobView(logdir, 4, wait=30.0, whole_world=True, clock=clock)
    for rank in (0, 1):
        _log(ranks[rank], 0, float(rank))
    assert view.update() == 0 and view.waiting == 1
    clock.now = 30.0
    assert view.update() == 0 and view.waiting == 0  # due, not this node's to write: dropped
    assert not (logdir / "job").exists()
    for rank in range(4):
        _log(ranks[rank], 1, float(rank))
    assert view.update() == 1 and _held(logdir) == {1: (1.5, 4)}
    view.close()
    for writer in ranks:
        writer.close()


def test_a_multi_node_job_of_unknown_world_size_gets_no_job_run(tmp_path):
    """Ranks given with ``rank=`` on 2 nodes and no world size: node 0 (ranks 0 and 1) cannot tell its
    ranks from the job's, so no view is made (test_system_metrics' two nodes check it at the target)."""
    from types import SimpleNamespace

    from hf_mpwriter.uploader.jobrun.view import start_for

    config = SimpleNamespace(allow_patterns=None, ignore_patterns=None, commit_every=30.0, nodes=2, world_size=1)
    assert start_for(tmp_path, config) is None
    config.world_size = 4
    assert start_for(tmp_path, config).whole_world
    config.nodes, config.world_size = 1, 1  # one node: the ranks seen are the job's
    assert not start_for(tmp_path, config).whole_world


def test_non_finite_values_neither_stop_the_job_run_nor_hide_a_rank(tmp_path):
    """+inf with -inf (math.fsum refuses them), squares past a double, and NaN: each step is written;
    a NaN is left out of min and max, makes mean and std NaN, and its rank is named."""
    logdir = tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(3)]
    for rank, values in enumerate([(math.inf, 3e38, math.nan), (-math.inf, -3e38, 2.0), (1.0, 0.0, 3.0)]):
        for step, value in enumerate(values):
            ranks[rank].add_serialized(scalar_event("loss", value, step, 1000.0 + step))
        ranks[rank].flush()
    view = JobView(logdir, 3, wait=30.0)
    assert view.update() == 3
    acc = accumulator(logdir / "job")
    stat = {name: [e.value for e in acc.Scalars(stat_tag("loss", name))] for name in STATS}
    assert math.isnan(stat["mean"][0]) and stat["min"][0] == -math.inf and stat["max"][0] == math.inf
    assert stat["mean"][1] == 0.0 and stat["std"][1] == pytest.approx(math.sqrt(2 / 3) * 3e38, rel=1e-6)
    assert math.isnan(stat["mean"][2]) and (stat["min"][2], stat["max"][2]) == (2.0, 3.0)
    extremes = _job_points(logdir, "loss")[2]
    assert (extremes["min_rank"], extremes["max_rank"], stat["ranks"][2]) == (1.0, 2.0, 3.0)
    named = plugin_accumulator(logdir / "job").Tensors("~job/loss/nan_ranks/text_summary")
    assert [(e.step, e.tensor_proto.string_val[0].decode()) for e in named] == [(2, "NaN: rank 0")]
    view.close()
    for writer in ranks:
        writer.close()
    # Doubles (TensorFlow 2 logs them) whose squares overflow: an infinite std, not an error.
    huge = Stats.of({0: 1e200, 1: -1e200})
    assert (huge.mean, huge.std) == (0.0, math.inf)


def test_a_backlog_is_read_in_bounded_steps_with_the_heartbeat_and_finished_before_the_last_points(tmp_path):
    """Rank files far longer than one read (a restart without state, ``sync`` of an offline logdir): a
    cycle with no time to spare reads one step of each; the job's end reads the rest before writing
    its last points; the uploader's heartbeat is called throughout."""
    logdir, steps = tmp_path / "logs", 2000
    ranks = [_rank_writer(logdir, r) for r in range(2)]
    for step in range(steps):
        for rank, writer in enumerate(ranks):
            writer.add_serialized(scalar_event("loss", float(rank + step), step, 1000.0 + step))
        ranks[1].add_serialized(scalar_event("lr", 0.1, step, 1000.0 + step))  # rank 1's file is read behind rank 0's
    for writer in ranks:
        writer.flush()
    assert min(p.stat().st_size for p in logdir.glob("rank-*/*tfevents*")) > 10 * 4096  # the scenario
    beats = []
    view = JobView(logdir, 2, wait=30.0, beat=lambda: beats.append(1), bounds=ViewBounds(read_bytes=4096, beat_every=50))
    first = view.update(budget=0)
    assert view.backlog and 0 < first < steps  # one step each: the complete points written
    assert view.update(final=True) == 2 * steps - first and not view.pending  # every loss point, and lr (rank 1 alone)
    assert sorted(_held(logdir)) == list(range(steps)) and len(beats) >= 2 * steps // 100  # every ~50 records
    assert {ranks for _, ranks in _held(logdir).values()} == {2}  # no point written before rank 1's file was read
    view.close()
    for writer in ranks:
        writer.close()


def test_values_of_one_rank_alone_are_not_kept_and_a_job_run_entry_it_cannot_read_does_not_stop_it(tmp_path):
    """Two rank folders, scalars from rank 0 only (rank 1 logs text): nothing to reduce, and nothing
    kept once due. A directory named like an event file in ``job/`` is passed over."""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(2)]
    (logdir / "job" / "events.out.tfevents.0.a-directory").mkdir(parents=True)
    ranks[1].add_serialized(text_event("note", "text only", 0, 1000.0))
    ranks[1].flush()
    view = JobView(logdir, 2, wait=30.0, clock=clock)
    for step in range(100):
        _log(ranks[0], step, float(step))
    assert view.update() == 0 and view.waiting == 100
    clock.now = 30.0
    assert view.update() == 0 and view.waiting == 0
    view.close()
    for writer in ranks:
        writer.close()


def test_the_stragglers_series_goes_forward_when_a_tag_of_earlier_steps_comes_late(tmp_path):
    """``train/loss`` at step 100 is written first, ``epoch/loss`` at step 1 after: ``job/lag_s``
    is not written at step 1 after step 100 (TensorBoard would drop its later points)."""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(2)]
    view = JobView(logdir, 2, wait=30.0, clock=clock)
    for writer in ranks:
        _log(writer, 100, 1.0, tag="train/loss")
    assert view.update() == 1
    for writer in ranks:
        _log(writer, 1, 1.0, tag="epoch/loss")
    assert view.update() == 1
    steps = []
    for path in sorted((logdir / "job").glob("*tfevents*")):
        with open(path, "rb") as handle:
            steps += [s.step for _, record in iter_records(handle) for s in scalars(record) if s.tag == "~job/lag_s"]
    assert steps == [100]
    view.close()
    for writer in ranks:
        writer.close()


@pytest.mark.parametrize("delay", [0.0, 0.05, 5.0])
def test_a_straggler_is_named_by_the_ranks_own_clocks_and_ranks_in_lockstep_show_none(tmp_path, delay):
    """Four ranks log every step at the same moments (lockstep: an ``all_reduce`` each step) but rank 2,
    which logs each step ``delay`` seconds after the others by its own clock. The view reads rank 2's file
    first and the others' much later (when the uploader heard of them says nothing): ``job/lag_s`` is the
    delay at every step, and rank 2 is named with it only where it is a straggler's (1 s or more)."""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(4)]
    view = JobView(logdir, 4, wait=30.0, clock=clock)
    view.live = set(range(4))
    for step in range(20):
        ranks[2].add_serialized(scalar_event("loss", 1.0, step, 1000.0 + step + delay))
    ranks[2].flush()
    view.update()
    clock.now = 20.0
    for rank in (0, 1, 3):
        for step in range(20):
            ranks[rank].add_serialized(scalar_event("loss", 1.0, step, 1000.0 + step))
        ranks[rank].flush()
    assert view.update() == 20  # every step complete
    view.close()
    lags = {e.step: e.value for e in accumulator(logdir / "job").Scalars("~job/lag_s")}
    assert sorted(lags) == list(range(20)) and all(lag == pytest.approx(delay, abs=1e-3) for lag in lags.values())
    named = [e for e in plugin_accumulator(logdir / "job").Tensors("~job/slowest_rank/text_summary")] if delay >= 1 else []
    assert [e.step for e in named] == (list(range(20)) if delay >= 1 else [])
    assert all(e.tensor_proto.string_val[0].decode().startswith("rank 2,") for e in named)
    assert view.summary()["slowest"] == {"rank": 2 if delay else 0, "lag_s": pytest.approx(delay, abs=1e-3)}
    for writer in ranks:
        writer.close()


def test_a_rank_that_logs_after_another_finished_still_counts(tmp_path):
    """World size unknown (``rank=``): rank 0 has logged every step while rank 1's file holds nothing yet.
    Rank 0's values wait for their time (not "complete" because rank 0 is all it has seen); rank 1's
    values then complete them. (Seen under load: the job run held rank 1 alone.)"""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(2)]
    ranks[1].flush()  # its file exists, with its first record only
    view = JobView(logdir, 0, wait=30.0, clock=clock)
    for step in range(3):
        _log(ranks[0], step, float(step))
    assert view.update() == 0 and view.waiting == 3
    clock.now = 10.0
    for step in range(3):
        _log(ranks[1], step, float(step + 2))
    assert view.update() == 3 and _held(logdir) == {s: (s + 1.0, 2) for s in range(3)}
    view.close()
    for writer in ranks:
        writer.close()


def test_the_job_run_reads_well_one_chart_per_tag_and_rank_ids_as_text(tmp_path):
    """In TensorBoard's Scalars tab a job run adds one chart to a tag's group, the tag itself (its mean,
    drawn beside the ranks' lines), and puts its other statistics in one ``job`` group; rank ids are text
    (``job/extreme_ranks``, one a step), never a chart that smooths them into fractions. Rank 2 is the
    max at steps 0-2, rank 1 from step 3 on; ``status`` counts who is most often each."""
    logdir = tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(3)]
    for step in range(10):
        top = 2 if step < 3 else 1
        for rank in range(3):
            _log(ranks[rank], step, 0.0 if rank == 0 else (9.0 if rank == top else 5.0))
            _log(ranks[rank], step, float(rank), tag="train/acc")
    view = JobView(logdir, 3, wait=30.0)
    assert view.update() == 20
    tags = accumulator(logdir / "job").Tags()["scalars"]
    groups: dict[str, list[str]] = defaultdict(list)
    for tag in tags:
        groups[tag.split("/")[0]].append(tag)
    assert groups["loss"] == ["loss"] and groups["train"] == ["train/acc"]  # one chart in each of the user's groups
    assert set(groups) == {"loss", "train", "~job"} and max(groups) == "~job"  # the rest in one group, sorted last
    assert not [tag for tag in tags if tag.endswith("_rank")]  # no rank id as a number
    points = _job_points(logdir, "loss")
    assert [points[s]["max_rank"] for s in range(10)] == [2.0] * 3 + [1.0] * 7
    assert view.summary()["extremes"]["loss"]["max"][0] == [1, 7]  # status: rank 1, 7 times the max
    view.close()
    for writer in ranks:
        writer.close()
