"""The job run's histograms: the ranks' histograms of a tag and step merged into one (``job_histogram``),
exactly tensorboardX's histogram of every rank's values where their bucket limits agree, in any order
and grouping (a node's ranks, then the nodes), and none where they do not; written by the job view,
read back as TensorBoard reads it. (Through a multi-node job's store: ``test_job_merge.py``.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import accumulator
from tensorboardX import summary as tbx_summary
from tensorboardX.proto.event_pb2 import Event
from test_job_view import _assert_histogram, _default_bins

from hf_mpwriter.cli.status import collect
from hf_mpwriter.events.decoding import summaries
from hf_mpwriter.events.encoding import histogram_event, summary_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.uploader.jobrun.histogram import Buckets, merge_buckets
from hf_mpwriter.uploader.jobrun.view import STATE_FILE, JobView

BINS = _default_bins()


def _histogram(values: np.ndarray, bins=BINS, max_bins: int | None = None) -> Buckets:
    """tensorboardX's histogram of ``values``, as the job view reads it from an event file."""
    event = Event(wall_time=5.0, step=1, summary=tbx_summary.histogram("w", values, bins, max_bins))
    (found,) = summaries(event.SerializeToString())[1]
    return Buckets.read(found)


def _as_proto(merged: Buckets) -> object:
    """A merged histogram as TensorBoard reads it back (through the event's bytes)."""
    stats = (merged.min, merged.max, merged.num, merged.sum, merged.sum_squares)
    event = Event.FromString(histogram_event("w", stats, list(merged.limits), list(merged.counts), 1, 5.0))
    return event.summary.value[0].histo


def _nonzero(histo) -> dict[float, float]:
    return {limit: count for limit, count in zip(histo.bucket_limit, histo.bucket) if count}


@pytest.mark.parametrize("seed", range(40))
def test_merged_histograms_are_tensorboardx_s_histogram_of_every_ranks_values(seed):
    """Ranks of 1 to 8, each its own spread and size (apart or overlapping, a constant, a sign's zero):
    the merge holds exactly the buckets tensorboardX's histogram of all their values holds, and its
    min, max and count; the sums to a double's rounding."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(rng.uniform(-1e3, 1e3) if seed % 3 == 0 else rng.uniform(-2, 2), rng.uniform(1e-3, 10),
                        rng.integers(1, 400)) for _ in range(rng.integers(1, 9))]
    if seed % 5 == 0:
        parts += [np.zeros(3), np.full(2, -0.0)]
    merged = merge_buckets(_histogram(part) for part in parts)
    assert merged is not None
    everything = np.concatenate(parts)
    want = tbx_summary.histogram("w", everything, BINS).value[0].histo
    got = _as_proto(merged)
    assert (got.min, got.max, got.num) == (want.min, want.max, want.num)
    assert got.sum == pytest.approx(want.sum, rel=1e-12, abs=1e-9)
    assert got.sum_squares == pytest.approx(want.sum_squares, rel=1e-12)
    assert _nonzero(got) == _nonzero(want)
    _assert_histogram(got, everything)  # (ranks far apart: the grid's empty buckets between them too)
    # Merged in groups first (a node's ranks, then the nodes; a tree's groups), in another order, and sent
    # through the store as a value (its compact form): the same.
    order = rng.permutation(len(parts))
    groups = [merge_buckets(_histogram(parts[i]) for i in order[k:k + 3]) for k in range(0, len(parts), 3)]
    sent = [Buckets.from_list(json.loads(json.dumps(group.to_list()))) for group in groups if group is not None]
    assert sent == groups and '"grid"' in json.dumps(sent[0].to_list())
    again = merge_buckets(sent)
    assert again is not None
    _assert_histogram(_as_proto(again), everything)


@pytest.mark.parametrize("values", [np.random.default_rng(0).normal(0, 1, 1000), np.zeros(5), np.array([-0.0, 1.0]),
                                    np.array([np.nan, 1.0])])
def test_a_merged_histogram_s_event_is_tensorboardx_s_own_bytes(values):
    """The job run writes the event tensorboardX writes for the same histogram (decoded and encoded back)."""
    want = Event(wall_time=12.5, step=7, summary=tbx_summary.histogram("a/b", values, BINS)).SerializeToString()
    (histogram,) = summaries(want)[1]
    stats = (histogram.min, histogram.max, histogram.num, histogram.sum, histogram.sum_squares)
    got = histogram_event("a/b", stats, list(histogram.limits), list(histogram.counts), 7, 12.5)
    assert got == want


def test_histograms_whose_bucket_limits_disagree_are_not_merged():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 500), rng.normal(0.3, 2, 500)
    # Each rank's own edges (numpy's "auto", or a count): another rank's limits fall inside its buckets.
    assert merge_buckets([_histogram(a, "auto"), _histogram(b, "auto")]) is None
    assert merge_buckets([_histogram(a, 30), _histogram(b, 30)]) is None
    # The default buckets, one of them merged down to max_bins: no longer one grid.
    assert merge_buckets([_histogram(a), _histogram(b, max_bins=20)]) is None
    # One rank's histogram alone, or with another on the same edges, merges.
    assert merge_buckets([_histogram(a, "auto")]) is not None
    edges = np.linspace(-10, 10, 41)
    assert merge_buckets([_histogram(a, edges), _histogram(b, edges)]) is not None
    # A first bucket with values in it (another writer than tensorboardX): its left edge is not said, so
    # another rank's limit below its values' min is fine, one above it is not.
    first = Buckets(2.5, 3.5, 2.0, 6.0, 18.5, (3.0, 4.0), (1.0, 1.0))
    below = Buckets(1.5, 1.5, 1.0, 1.5, 2.25, (1.0, 2.0), (0.0, 1.0))
    above = Buckets(2.0, 2.7, 2.0, 4.7, 11.29, (2.0, 2.7), (0.0, 2.0))
    assert merge_buckets([first, below]) is not None and merge_buckets([first, above]) is None
    assert merge_buckets([]) is None
    # Off the default grid, the limits travel as they are.
    off = merge_buckets([_histogram(a, edges)])
    assert off is not None and Buckets.from_list(json.loads(json.dumps(off.to_list()))) == off


def _rank_writer(logdir, rank: int) -> EventFileWriter:
    (logdir / f"rank-{rank:03d}").mkdir(parents=True)
    return EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1000, flush_secs=3600)


def _log(writer: EventFileWriter, tag: str, values: np.ndarray, step: int, bins=BINS) -> None:
    writer.add_serialized(summary_event(tbx_summary.histogram(tag, values, bins).SerializeToString(), step, 1000.0 + step))
    writer.flush()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_job_run_holds_each_steps_merged_histogram_names_a_missing_rank_and_counts_what_it_cannot_merge(tmp_path):
    """Three ranks' event files, the job view as the uploader runs it: a step waits for its ranks, then is
    written without the one that did not come (named); a tag binned per rank is counted, not written;
    a restarted view (its state file, or none) writes no step twice. Read back with TensorBoard's reader."""
    clock, logdir = _Clock(), tmp_path / "logs"
    ranks = [_rank_writer(logdir, r) for r in range(3)]
    values = {(r, s): np.random.default_rng(10 * r + s).normal(r, 1 + s, 300) for r in range(3) for s in range(4)}
    view = JobView(logdir, 3, wait=30.0, clock=clock)
    for r in range(3):
        _log(ranks[r], "w", values[(r, 0)], 0)
        _log(ranks[r], "auto", values[(r, 0)], 0, bins="auto")
    for r in range(2):
        _log(ranks[r], "w", values[(r, 1)], 1)
    assert view.update() == 2 and view.waiting == 1  # step 0 of both tags: every rank; step 1 waits for rank 2
    assert view.summary()["histograms_not_merged"] == 1  # "auto": the ranks' edges differ
    view.live = {0, 1}  # rank 2's writer is gone: the step is written after its wait, without it
    clock.now = 30.0
    assert view.update() == 1  # waited its time: written without rank 2
    view.close()
    # Restarted with its state, then without it: steps 0 and 1 are not written again, step 2 is.
    for r in range(3):
        _log(ranks[r], "w", values[(r, 2)], 2)
    again = JobView(logdir, 3, wait=30.0, clock=clock)
    assert again.update() == 1 and again.summary()["histograms_not_merged"] == 1
    again.close()
    (logdir / ".hf_mpwriter" / STATE_FILE).unlink()
    for r in range(3):
        _log(ranks[r], "w", values[(r, 3)], 3)
    third = JobView(logdir, 3, wait=30.0, clock=clock)  # ("auto"'s step 0, never written, is read again)
    assert third.update() == 2 and third.late == 0 and third.summary()["histograms_not_merged"] == 1
    third.close()
    for writer in ranks:
        writer.close()
    acc = accumulator(logdir / "job")
    assert "auto" not in acc.Tags()["histograms"]
    held = {e.step: e.histogram_value for e in acc.Histograms("w")}
    assert sorted(held) == [0, 1, 2, 3]  # each once (TensorBoard's reader would keep a second one too)
    for step, got in held.items():
        _assert_histogram(got, np.concatenate([values[(r, step)] for r in range(3 if step != 1 else 2)]))
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("~job/w/missing_ranks/text_summary")}
    assert texts == {1: "missing: rank 2"}
    assert collect(logdir)["job_view"]["histograms_not_merged"] == 1
