"""The job-wide leader, node by node: two nodes' targets (:class:`JobTarget`) in this process, a real
``TCPStore`` hosted here as a job's rank 0 or torchrun agent would, the test Hub and the real client.

What each test proves happened before it checks the outcome: the commit that holds both nodes'
files (and the requests it cost), the lease changing hands, the offer taken back, the store gone.
The same path through real torchrun nodes is ``test_multinode.py``'s.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import closed_port
from upload_helpers import TOKEN, wait_for

from hf_mpwriter.cli.status_text import _committer_text
from hf_mpwriter.config import UploadConfig
from hf_mpwriter.errors import Deferred, TargetError
from hf_mpwriter.state.piece import Piece, sha256_prefix
from hf_mpwriter.targets.bucket import BucketTarget, batch_takes_xet_hashes
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.timing import LEASE_STALE_S, JobTiming
from hf_mpwriter.uploader.coordination.member import JobTarget, store_prefix
from hf_mpwriter.uploader.coordination.pacing import pacing
from hf_mpwriter.uploader.coordination.plan import Budget, make_budget
from hf_mpwriter.uploader.coordination.protocol import WITHDRAWN, Answer, Offer, claimer
from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress

dist = pytest.importorskip("torch.distributed")

REPO = "tester/job"


@pytest.fixture(autouse=True)
def _endpoint(hub_is_this_process_hub):
    """The test Hub as the process's Hub (conftest.py's ``hub_is_this_process_hub``)."""


#: A budget with room for a test's seconds: a node commits itself within a second or two of being left alone.
ROOMY = make_budget(commits_per_hour=36_000, requests_per_5min=100_000)


def _node(hub, port: int, node: int, wait: float = 10.0, budget: Budget = ROOMY, nodes: int = 2,
          commit_every: float = 300.0, leader_endpoint: str | None = None, prefix: str = "tb",
          job: str = "job-1", timing: JobTiming = JobTiming()) -> JobTarget:
    """Node ``node`` of a 2-node job: its own repository target, its leader's (at ``leader_endpoint``: the
    test Hub's by default), the store. Each node prepares its target itself (the repository exists: no node
    waits for node 0 to create it)."""
    address = StoreAddress("127.0.0.1", port, job)
    inner = HubTarget(REPO, prefix=prefix, token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
    leader = HubTarget(REPO, prefix=prefix, token=TOKEN, endpoint=leader_endpoint or hub.endpoint)
    return JobTarget(inner, leader, JobStore(address, store_prefix(address, inner.key)), node, nodes, wait=wait,
                     spacing=0.5, prepared_wait=0.0, budget=budget, commit_every=commit_every, timing=timing)


def _commit_when_due(node: JobTarget, pieces: list[Piece], message: str, limit: float = 30.0) -> tuple[str | None, list[float]]:
    """``node.commit`` as the uploader's queue drives it: a commit put off for the job's budget
    (:class:`Deferred`) is tried again when it says. The commit id, and each wait it was told."""
    waits: list[float] = []
    deadline = time.monotonic() + limit
    while True:
        try:
            return node.commit(pieces, message), waits
        except Deferred as exc:
            assert exc.retry_after is not None and time.monotonic() + exc.retry_after < deadline, (exc, waits)
            waits.append(exc.retry_after)
            time.sleep(exc.retry_after)


def _pieces(tmp_path: Path, rank: int, size: int) -> list[Piece]:
    """Rank ``rank``'s event file, grown to ``size`` bytes, as the scanner would queue it."""
    path = tmp_path / f"rank-{rank:03d}" / "events.out.tfevents.1.node"
    path.parent.mkdir(parents=True, exist_ok=True)
    have = path.stat().st_size if path.exists() else 0
    with open(path, "ab") as handle:
        handle.write(bytes((rank + i) % 256 for i in range(have, size)))
    rel = f"rank-{rank:03d}/{path.name}"
    return [Piece(path=rel, size=size, sha256=sha256_prefix(path, size), source=str(path))]


def _commit_together(targets: list[JobTarget], pieces: list[list[Piece]], when_due: bool = False) -> list[str | None]:
    """Every node commits at once, as at a round's wall-clock moment (``when_due``: each tried again when put
    off, :func:`_commit_when_due`)."""
    results: list = [None] * len(targets)

    def run(k: int) -> None:
        results[k] = (_commit_when_due(targets[k], pieces[k], "node commit")[0] if when_due
                      else targets[k].commit(pieces[k], "node commit"))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@contextmanager
def _leading(targets: list[JobTarget]) -> Iterator[JobTarget]:
    """Every node's uploader started (leader threads included) until the block ends; the one that leads."""
    for target in targets:
        target.start()
    try:
        wait_for(lambda: any(t.leader.leading for t in targets), 20, "a leader")
        yield next(t for t in targets if t.leader.leading)
    finally:
        for target in sorted(targets, key=lambda t: t.leader.leading):  # the leader last: its release hands over nothing
            target.stop()


def _start_with_node_0_leading(targets: list[JobTarget]) -> None:
    """Each node's target prepared; node 0's uploader started first, and leading, then the others'."""
    for target in targets:
        target.prepare()
    targets[0].start()
    wait_for(lambda: targets[0].leader.leading, 20, "node 0 to lead")
    for target in targets[1:]:
        target.start()


def _node_1_commits_while_a_commit_hangs(hub, node: JobTarget, tmp_path: Path) -> tuple:
    """The next commit to reach the Hub is held there (120 s); ``node`` commits a file meanwhile, in a thread,
    as its queue would. The hold, the list the thread's outcome lands in, and the thread."""
    hang = hub.inject("latency", route="commit", times=1, seconds=120)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(
        _commit_when_due(node, _pieces(tmp_path, 2, 3000), "node commit", limit=100.0)))
    thread.start()
    return hang, result, thread


def _log_commits(hub) -> list[dict]:
    return [c for c in hub.commits(REPO) if c["summary"] != "initial commit" and "README" not in str(c["added"])]


@pytest.mark.parametrize("path", ["xet-session", "xet-upload-files", "preupload"])
def test_two_nodes_one_commit(hub, store, tmp_path, monkeypatch, path):
    """Event files straight to Xet with a kept token: through hf_xet's ``XetSession`` (1.8+), or its
    ``upload_files`` (older hf_xet); else (``HF_HUB_DISABLE_XET`` for us) through the public
    ``preupload_lfs_files``, one ``preupload`` per node and round."""
    import hf_xet

    direct = path != "preupload"
    if path == "preupload":
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    calls = []
    if path == "xet-session" and not hasattr(hf_xet, "XetSession"):
        pytest.skip("hf_xet before 1.8 has no XetSession")
    if path == "xet-upload-files":  # as with an hf_xet before 1.8 (the real function, its calls counted)
        real = hf_xet.upload_files
        monkeypatch.delattr(hf_xet, "XetSession", raising=False)
        monkeypatch.setattr(hf_xet, "upload_files", lambda *a: calls.append(a) or real(*a))
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k) for k in range(2)]
    for target in targets:
        target.prepare()
        target.start()
    try:
        wait_for(lambda: any(t.leader.leading for t in targets), 20, "a leader")
        if direct:  # the leader shares one Xet write token for the job, in the store
            wait_for(lambda: targets[0].store.get("xet"), 20, "the job's Xet write token")
        for round_, size in enumerate((4096, 9000)):  # two rounds: the second builds on the head the first returned
            pieces = [_pieces(tmp_path, rank, size) for rank in (0, 2)]
            hub.reset_stats()
            oids = _commit_together(targets, pieces)
            requests = hub.stats["requests"]
            # The scenario: one commit, made by the leader, holding both nodes' files.
            assert oids[0] == oids[1] and oids[0] is not None, oids
            last = _log_commits(hub)[0]
            assert last["oid"] == oids[0] and "2 node(s)" in last["summary"], last
            assert sorted(last["added"]) == ["tb/rank-000/events.out.tfevents.1.node",
                                             "tb/rank-002/events.out.tfevents.1.node"]
            assert requests.get("commit") == 1, requests
            # The leader verifies for the job; before its first commit (a head not its own) it asks that head
            # whether it holds any offered event file longer (a node's own commit since: guarantees.md).
            assert requests.get("paths_info") == (2 if round_ == 0 else 1), requests
            if direct:  # each node's content straight to Xet (storage, not Hub API requests), with the
                # job's write token (the leader's, shared through the store): no preupload, no token of its own
                assert requests.get("xorb_upload") and requests.get("shard_upload") == 2, requests
                assert "preupload" not in requests, requests
                assert requests.get("xet_token", 0) == 0, requests
            else:
                assert requests.get("preupload") == 2, requests
            # What the leader verified needs no second look by the nodes...
            assert all(not t.differences(p) for t, p in zip(targets, pieces))
            assert hub.stats["requests"].get("paths_info") == requests.get("paths_info")
            for k in range(2):  # ... and the Hub holds each node's bytes
                assert hub.read_file(REPO, f"tb/{pieces[k][0].path}") == Path(pieces[k][0].source).read_bytes()[:size]
        assert len(_log_commits(hub)) == 2
        assert len(calls) == (4 if path == "xet-upload-files" else 0)  # the path taken: 2 nodes x 2 rounds
        # One token for the job (was one per node), as each node's status says it.
        assert sum(t.job_info()["xet_tokens"] for t in targets) == (1 if direct else 0)
    finally:
        for target in targets:
            target.stop()


BUCKET = "tester/job-logs"


def test_a_node_lists_a_runs_folder_at_its_own_target_for_its_lost_steps(hub, store, tmp_path):
    """The look for a resumed run's lost steps (:mod:`hf_mpwriter.uploader.lost_steps`) lists the run's folder through
    the node's job target: the files of that folder at the repository, those of no other."""
    from huggingface_hub import HfApi

    hub.create_repo(REPO)
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    for path in ("tb/rank-003/events.out.tfevents.1.first", "tb/rank-004/events.out.tfevents.1.first"):
        api.upload_file(path_or_fileobj=b"x", path_in_repo=path, repo_id=REPO)
    assert _node(hub, store.port, 1).listing("rank-003") == ["rank-003/events.out.tfevents.1.first"]


@pytest.mark.skipif(not batch_takes_xet_hashes(), reason="a bucket's leader needs huggingface_hub 1.10+")
def test_two_nodes_one_bucket_batch(hub, store, tmp_path):
    """A bucket: each node sends its content straight to the bucket's Xet storage (a write token
    fetched once and kept), the leader writes both nodes' files in one batch that names them by Xet
    hash, and verifies them with one ``paths-info`` for the job; one more, before it, asks whether the bucket holds newer
    versions (a bucket has no head to fence with)."""
    hub.create_bucket(BUCKET)
    address = StoreAddress("127.0.0.1", store.port, "job-b")
    targets = []
    for k in range(2):
        inner = BucketTarget(BUCKET, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
        leader = BucketTarget(BUCKET, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
        targets.append(JobTarget(inner, leader, JobStore(address, store_prefix(address, inner.key)), k, 2,
                                 wait=10.0, spacing=0.0))
    for target in targets:
        target.prepare()
        target.start()
    try:
        wait_for(lambda: any(t.leader.leading for t in targets), 20, "a leader")
        wait_for(lambda: targets[0].store.get("xet"), 20, "the job's Xet write token")
        for size in (4096, 9000):
            pieces = [_pieces(tmp_path, rank, size) for rank in (0, 2)]
            hub.reset_stats()
            oids = _commit_together(targets, pieces)
            requests, ops = hub.stats["requests"], hub.stats["bucket_ops"]
            # The scenario: one batch, by the leader, of both nodes' files, content through Xet only.
            assert oids[0] == oids[1] and oids[0] is not None, oids
            assert requests.get("bucket_batch") == 1 and ops == 2, (requests, ops)
            assert requests.get("bucket_paths_info") == 2, requests  # the leader looks, and verifies, for the job
            assert requests.get("shard_upload") == 2, requests  # each node its own content
            assert requests.get("xet_token", 0) == 0, requests  # the job's token, the leader's
            assert all(t.mode == "job" for t in targets)
            assert all(not t.differences(p) for t, p in zip(targets, pieces))
            assert hub.stats["requests"].get("bucket_paths_info") == 2  # what the leader verified: no third look
            files = hub.bucket_files(BUCKET)
            for k in range(2):
                assert files[f"tb/{pieces[k][0].path}"] == Path(pieces[k][0].source).read_bytes()[:size]
        assert sum(t.job_info()["xet_tokens"] for t in targets) == 1  # one for the job (was one per node)
    finally:
        for target in targets:
            target.stop()


@pytest.mark.skipif(not batch_takes_xet_hashes(), reason="a bucket's leader needs huggingface_hub 1.10+")
def test_a_bucket_leader_writes_no_offer_older_than_the_bucket_until_its_node_offers_the_same_again(hub, store, tmp_path):
    """The bucket holds a longer version of node 1's file (node 1 wrote it itself, cut off from the store): the
    leader answers its older offer "offer again" and writes nothing. A node that then offers the same version again
    has none newer (a restored backup: its disk is the truth, as its audit would have it): written, not put off for
    ever. The same offer read again (the answer to it lost) is no offer again: put off again."""
    hub.create_bucket(BUCKET)
    own = BucketTarget(BUCKET, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
    own.prepare()
    older = own.preupload(_pieces(tmp_path, 1, 3000))
    assert older is not None
    own.commit(_pieces(tmp_path, 1, 5000), "node 1's own write")
    address = StoreAddress("127.0.0.1", store.port, "job-b2")
    shared = JobStore(address, store_prefix(address, own.key))
    nodes = [JobTarget(own, BucketTarget(BUCKET, prefix="tb", token=TOKEN, endpoint=hub.endpoint), shared, node, 2,
                       wait=10.0, spacing=0.0, budget=ROOMY) for node in range(2)]
    assert nodes[1]._announce()
    leader = nodes[0].leader
    leader.start()
    try:
        wait_for(lambda: leader.leading and not leader.store_gap, 20, "node 0 to lead")  # (an offer there before: unknown age)
        answers = []
        for seq in (1, 1, 2):  # (offer 1 twice: the second time as if the leader's answer to it was lost)
            shared.set("answer/1", b"{}")
            shared.set("offer/1", Offer(seq, nodes[1].incarnation, 20.0, 0.0, False, tuple(older)).encode())
            shared.add("offered", 1)
            answers.append(wait_for(lambda seq=seq: (a := Answer.decode(shared.get("answer/1") or b"{}")).seq == seq and a,
                                    30, f"the answer to offer {seq}"))
            sizes = [batch["sizes"].get(older[0].path) for batch in hub.bucket_batches(BUCKET)]
            if seq == 1:  # the scenario: the bucket held 5,000 bytes, and the leader wrote nothing of the offer
                assert answers[-1].retry_in == 0 and answers[-1].commit is None and sizes == [5000], (answers, sizes)
    finally:
        leader.stop()
    assert answers[2].commit is not None and sizes == [5000, 3000], (answers, sizes)


@pytest.mark.parametrize("value", [b'{"cas": "%s", "token": "refused-by-the-hub-0123456789", "exp": 4102444800}',
                                   b'{"cas": "%s", "token": "refused-by-the-hub-0123456789", "exp": "never"}'],
                         ids=["refused", "malformed"])
def test_a_node_whose_shared_xet_token_fails_fetches_its_own_and_says_no_token(hub, store, tmp_path, caplog, value):
    """The job's token in the store is one the Hub refuses (for this Hub's CAS, its expiry within the hour) or a
    malformed value: the node's upload with it fails once (a malformed one is not used), then it uploads
    with a token of its own, as without a job; the token never reaches a log line or an error."""
    caplog.set_level(logging.DEBUG)
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k) for k in range(2)]
    for target in targets:
        target.prepare()
    with _leading(targets) as leader:
        node = next(t for t in targets if t is not leader)  # (the leader's node's own token is the job's)
        wait_for(lambda: node.store.get("xet"), 20, "the job's Xet write token")
        cas = json.loads(node.store.get("xet"))["cas"]
        node.store.set("xet", value.replace(b"%s", cas.encode()).replace(b"4102444800", b"%d" % (time.time() + 3000)))
        pieces = _pieces(tmp_path, 2, 4096)
        hub.reset_stats()
        errors = []
        for _ in range(2):  # as the queue tries a failed commit again
            try:
                oid = node.commit(pieces, "node commit")
                break
            except TargetError as exc:
                errors.append(str(exc))
        # The scenario: a refused token failed an upload once at most (an hf_xet may ask its refresher for the
        # node's own within the same upload), a malformed one was skipped; then the node's own.
        assert len(errors) <= (1 if b'"exp": 4102444800' in value else 0), errors
        assert oid and hub.stats["requests"].get("xet_token") == 1, hub.stats["requests"]
        assert hub.read_file(REPO, f"tb/{pieces[0].path}") == Path(pieces[0].source).read_bytes()
        if b"never" in value:
            assert node.job_info()["malformed_kinds"] == {"xet": 1}
    said = "\n".join(errors + [r.getMessage() for r in caplog.records])
    assert "refused-by-the-hub" not in said


def test_the_leader_renews_the_jobs_xet_token_before_the_nodes_stop_using_it(hub, store, tmp_path, monkeypatch):
    """The Hub's Xet tokens made to last 4 s more than the leader keeps one (``XET_FRESH_S``): the leader
    publishes a new one each time the one in the store is due, one request each (not one a round), and a
    node's upload meanwhile uses the job's, fetching none of its own."""
    from hf_mpwriter.uploader.coordination.xet_share import XET_FRESH_S

    monkeypatch.setattr(hub, "xet_token_ttl", XET_FRESH_S + 4)  # (this server's tokens, for this test)
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k) for k in range(2)]
    for target in targets:
        target.prepare()
    with _leading(targets) as leader:
        node = next(t for t in targets if t is not leader)
        wait_for(lambda: node.store.get("xet"), 20, "the job's Xet write token")
        started, first = time.monotonic(), json.loads(node.store.get("xet"))["token"]
        wait_for(lambda: json.loads(node.store.get("xet"))["token"] != first, 20, "a renewed token")
        renewed = time.monotonic() - started
        assert 2 <= renewed <= 10, renewed  # (due 4 s after the first was issued)
        assert node.commit(_pieces(tmp_path, 2, 4096), "node commit")
        time.sleep(2)
        # The scenario: the leader renewed it; tokens at the Hub: one per renewal, all the leader's node's.
        requests = hub.stats["requests"].get("xet_token", 0)
        assert 2 <= requests <= 2 + (time.monotonic() - started) / 4 + 1, requests
        assert leader.job_info()["xet_tokens"] == requests and node.job_info()["xet_tokens"] == 0


def test_a_token_renewal_the_hub_never_answers_holds_up_no_commit_and_no_hand_over(hub, store, tmp_path, monkeypatch):
    """The leader's renewal of the job's Xet token hangs (the Hub never answers it): its own thread waits,
    the rounds go on, both nodes' files are committed together with the shared token still good, and the
    lease stays where it was."""
    from hf_mpwriter.uploader.coordination.xet_share import XET_FRESH_S

    monkeypatch.setattr(hub, "xet_token_ttl", XET_FRESH_S + 8)  # renewed 8 s after it was issued; good for 5 min more
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k) for k in range(2)]
    for target in targets:
        target.prepare()
    hang = None
    try:
        targets[0].start()
        wait_for(lambda: targets[0].leader.leading, 20, "node 0 to lead")
        targets[1].start()
        wait_for(lambda: targets[0].store.get("xet"), 20, "the job's Xet write token")
        for target in targets:  # each node's upload takes the job's token (read once, kept while good)
            assert target.xet() is not None
        hang = hub.inject("latency", route="xet_token", seconds=3600)
        wait_for(lambda: hang.hits == 1, 30, "the leader's renewal to be held")
        oids = _commit_together(targets, [_pieces(tmp_path, rank, 4000) for rank in (0, 2)])
        assert hang.hits == 1 and hang.done == 0  # the scenario: the renewal still held, nothing else asked
        assert oids[0] == oids[1] and oids[0] is not None, oids
        assert "2 node(s)" in _log_commits(hub)[0]["summary"]
        assert [t.job_info()["leases"] for t in targets] == [1, 0]
    finally:
        if hang is not None:
            hang.release()
        for target in reversed(targets):
            target.stop()


def test_a_leader_that_stops_renewing_is_replaced(hub, store, tmp_path):
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k) for k in range(2)]
    _start_with_node_0_leading(targets)
    # Node 0's leader dies as a SIGKILL would leave it: its lease stays in the store, unrenewed.
    targets[0].leader._stop.set()
    targets[0].leader._thread.join(10)
    wait_for(lambda: targets[1].leader.leading, LEASE_STALE_S + 15, "node 1 to take the lease over")
    try:
        oids = _commit_together(targets, [_pieces(tmp_path, rank, 5000) for rank in (0, 2)])
        assert oids[0] == oids[1] and "2 node(s)" in _log_commits(hub)[0]["summary"]
    finally:
        targets[1].stop()


def test_a_node_left_without_answers_commits_itself_at_its_slot_though_its_wait_is_long(hub, store, tmp_path):
    """The store answers, no leader does; the node's wait for an answer (3 s) is a good part of its own
    cycle (8 s: two nodes, one own commit per 4 s for the job), as production's 30 s wait is of its
    minutes: the node still commits itself at its slot. (Its slot is a due time it keeps: looking at it
    only after each wait, a window of a second after the slot would never be met.)"""
    hub.create_repo(REPO)
    budget = Budget(commits_per_hour=10, requests_per_5min=100_000, files_per_commit=1000, commit_window_s=36.0)
    node = _node(hub, store.port, 1, wait=3.0, budget=budget)  # no leader runs anywhere
    node.prepare()
    assert node.plan_now(1).own_every() == pytest.approx(8.0)  # 36 s / 10 commits / PLAN_SLACK, times 2 nodes
    started = time.monotonic()
    oid, waits = _commit_when_due(node, _pieces(tmp_path, 2, 3000), "node commit", limit=60.0)
    took = time.monotonic() - started
    assert node.mode == "node" and node.store.get("offer/1") == WITHDRAWN  # the path: offered, taken back
    assert waits, waits  # ... and put off to its slot at least once
    assert _log_commits(hub)[0]["oid"] == oid and _log_commits(hub)[0]["summary"] == "node commit"
    # A cycle or two and the waits, plus the polls: not "never", as with a window after the slot (the bound has
    # room for a busy machine: 19.1 s against one cycle's 19 s was seen beside a CPU-heavy process).
    assert took < 2 * node.plan_now(1).own_every() + 2 * node.wait + 5.0, (took, waits)


def test_a_leader_that_cannot_reach_the_hub_hands_over_and_the_jobs_commits_resume(hub, store, tmp_path):
    """Node 0 leads, but its route to the Hub is gone (its leader's calls are refused); node 1 offers.
    Node 0's writes fail for one interval of the plan (10 s here: the lease's staleness), then it hands
    the lease over (and says so in its ``status``) and does not take it back; node 1 leads and the job's
    commits go through it again."""
    hub.create_repo(REPO)
    cut_off = f"http://127.0.0.1:{closed_port()}"
    nodes = [_node(hub, store.port, 0, commit_every=4.0, leader_endpoint=cut_off),
             _node(hub, store.port, 1, commit_every=4.0, wait=5.0)]
    _start_with_node_0_leading(nodes)
    try:
        handover_after = nodes[0].leader.handover_after()
        assert handover_after == LEASE_STALE_S  # one interval of the plan (4 s), at least the lease's staleness
        result: list = []
        thread = threading.Thread(target=lambda: result.append(
            _commit_when_due(nodes[1], _pieces(tmp_path, 2, 3000), "node commit", limit=90.0)))
        thread.start()  # node 1 offers to node 0, which cannot write
        started = time.monotonic()
        wait_for(lambda: nodes[1].leader.leading, 2 * handover_after + LEASE_STALE_S, "node 1 to take over")
        assert nodes[0].leader._head_failures >= 1  # the scenario: node 0 tried, and failed, to reach the Hub
        handed_over = time.monotonic() - started
        thread.join(90)
        assert result, "node 1's files did not land"
        info = nodes[0].job_info()
        assert not info["leading"] and "failed" in (info["handed_over"] or ""), info  # what its status says
        oid = nodes[1].commit(_pieces(tmp_path, 2, 5000), "node commit")  # the next round: the new leader's
        assert nodes[1].mode == "job" and _log_commits(hub)[0]["oid"] == oid, _log_commits(hub)
        assert "from 1 node(s)" in _log_commits(hub)[0]["summary"]
        time.sleep(LEASE_STALE_S / 2)
        assert nodes[1].leader.leading and not nodes[0].leader.leading  # node 0 does not take it back
        assert handed_over < 2 * handover_after + LEASE_STALE_S
    finally:
        for target in nodes:
            target.stop()


def test_a_leader_whose_commit_hangs_hands_over_and_the_offers_it_took_go_to_the_next(hub, store, tmp_path):
    """Node 0's route to the Hub goes silent mid-commit (the Hub holds its commit). It had claimed node
    1's offer, so node 1 cannot take it back; once node 0 has been stuck past its commit grace (10 s here, 30 s
    by default: its plan's interval and the lease's staleness are not longer) it stops leading, node 1 leads,
    finds that the leader that took its files no longer leads, and offers them again: they land through node 1
    while node 0's commit still hangs, and that late commit, once it reaches the Hub, is refused (its parent is
    no longer the head)."""
    hub.create_repo(REPO)
    timing = JobTiming(commit_grace=10.0)
    nodes = [_node(hub, store.port, k, wait=15.0, commit_every=4.0, timing=timing) for k in range(2)]
    _start_with_node_0_leading(nodes)
    hang, result, thread = _node_1_commits_while_a_commit_hangs(hub, nodes[1], tmp_path)
    try:
        wait_for(lambda: hang.hits >= 1, 20, "node 0's commit to reach the Hub")  # the scenario: it hangs there
        assert claimer(nodes[1].store.get("offer/1"), nodes[1].offers.seq) == (0, nodes[0].leader.term)  # node 0 took it
        thread.join(100)
        assert result, "node 1's files did not land"
        oid, waits = result[0]
        assert hang.done == 0 and _log_commits(hub)[0]["oid"] == oid  # landed while node 0's commit hangs
        assert nodes[1].leader.leading and "has not ended" in (nodes[0].leader.handed_over or ""), nodes[0].leader.handed_over
        hang.release()
        wait_for(lambda: hang.done >= 1, 30, "node 0's held commit to reach the Hub")
        assert hang.outcomes == [412], hang.outcomes  # fenced: nothing older lands over node 1's commit
        assert not nodes[1].inner.differences(_pieces(tmp_path, 2, 3000))
    finally:
        hang.release()
        thread.join(10)
        for target in nodes:
            target.stop()


def test_an_offer_claimed_by_a_leader_whose_uploader_replaced_itself_goes_to_its_successor(hub, store, tmp_path):
    """Issue 52: a leader was ``(node, pid)``, and an uploader that replaces itself (an ``exec`` after an
    abandoned transfer) keeps its pid: a node whose offer the old one claimed saw the new one as the same
    leader and waited out its whole wait for a claimed offer (``Offers.taken_wait``) before offering
    again. Here node 0's commit hangs at the Hub with node 1's offer claimed, and node 0's next uploader (the
    same pid: this process) takes the lease over: once node 1's wait for an answer ran out (15 s here) it finds,
    within half a lease's staleness, that the leader that took its offer no longer leads, offers again, and
    its files land through the new leader's commit (before: after its wait and a claimed offer's).
    (Node 1 does not lead: it stays out of the lease.)"""
    hub.create_repo(REPO)
    nodes = [_node(hub, store.port, k, wait=15.0, commit_every=4.0) for k in range(2)]
    nodes[1].leader._abstain_until = float("inf")  # node 1's uploader never takes the lease (a node of many)
    _start_with_node_0_leading(nodes)
    hang, result, thread = _node_1_commits_while_a_commit_hangs(hub, nodes[1], tmp_path)
    offered = time.monotonic()
    successor = None
    try:
        wait_for(lambda: hang.hits >= 1, 20, "node 0's commit to reach the Hub")  # the scenario: it hangs there
        first = nodes[0].leader.term
        assert claimer(nodes[1].store.get("offer/1"), nodes[1].offers.seq) == (0, first)  # claimed by node 0's uploader
        nodes[0].leader._stop.set()  # its process replaced itself: the lease is no longer renewed...
        successor = _node(hub, store.port, 0, wait=15.0, commit_every=4.0)  # ... and its next one starts, same pid
        successor.prepare()
        successor.start()
        wait_for(lambda: successor.leader.leading, LEASE_STALE_S + 15, "node 0's next uploader to lead")
        assert successor.leader.term > first  # a new holder, though the same node and pid
        thread.join(nodes[1].wait + LEASE_STALE_S)
        assert result, "node 1's files did not land"
        oid, _ = result[0]
        assert _log_commits(hub)[0]["oid"] == oid and successor.leader.commits == 1  # through the new leader
        assert time.monotonic() - offered < nodes[1].wait + LEASE_STALE_S, "node 1 waited on the old uploader's claim"
    finally:
        hang.release()
        thread.join(10)
        for target in [nodes[1], nodes[0], *([successor] if successor else [])]:
            target.stop()


def test_a_leader_whose_renewal_met_a_store_error_keeps_its_term(hub, store, tmp_path):
    """A renewal that raised (the store's answer lost, a moment's outage) stops the leader from leading until
    its next look at the lease: finding its own value there, it renews it under the same term. (It took it
    again under a new term, once stale: the nodes whose offers it had claimed offered them again.)"""
    hub.create_repo(REPO)
    node = _node(hub, store.port, 0, nodes=1)
    node.prepare()
    node.start()
    try:
        wait_for(lambda: node.leader.leading, 20, "node 0 to lead")
        term = node.leader.term
        node.leader.leading = False  # what the lease thread does when a renewal raises StoreError
        wait_for(lambda: node.leader.leading, 5, "its lease renewed")
        assert (node.leader.term, node.leader.leases) == (term, 1)
        assert json.loads(node.store.get("lease"))["term"] == term
    finally:
        node.stop()


def test_a_leader_stopped_mid_commit_leaves_its_lease_to_go_stale(hub, store, tmp_path):
    """The leader's commit is under way (the Hub is slow to answer) when its uploader stops: ``stop`` does
    not release the lease under that running round (another leader could commit the same offers); it
    goes stale unrenewed instead, and the round's commit still lands and is answered."""
    hub.create_repo(REPO)
    nodes = [_node(hub, store.port, k, wait=30.0) for k in range(2)]
    for target in nodes:
        target.prepare()
    nodes[0].start()
    wait_for(lambda: nodes[0].leader.leading, 20, "node 0 to lead")
    slow = hub.inject("latency", route="commit", times=1, seconds=30)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(nodes[1].commit(_pieces(tmp_path, 2, 3000), "node commit")))
    thread.start()
    try:
        wait_for(lambda: slow.hits >= 1, 20, "the leader's commit to reach the Hub")  # the scenario: mid-commit
        nodes[0].leader.stop()  # joins its threads for 10 s: the round is still in its commit
        lease = nodes[1].store.get("lease")
        assert lease and json.loads(lease)["node"] == 0, lease  # not released under the running round
        slow.release()
        thread.join(60)
        assert result and result[0] == _log_commits(hub)[0]["oid"], result  # the round's commit landed, answered
    finally:
        slow.release()
        for target in nodes:
            target.stop()


def test_a_signalled_leader_stops_by_its_preemption_deadline_though_its_round_hangs(hub, store, tmp_path):
    """Issue 52, D4: the leader's commit hangs at the Hub when its uploader is signalled with 1 s left before
    its preemption deadline: ``stop`` returns by then (it joined its threads 10 s each, whatever the deadline)."""
    hub.create_repo(REPO)
    nodes = [_node(hub, store.port, k, wait=3.0) for k in range(2)]  # (node 1 waits 3 s for its answer)
    for target in nodes:
        target.prepare()
    nodes[0].start()
    wait_for(lambda: nodes[0].leader.leading, 20, "node 0 to lead")
    hang = hub.inject("latency", route="commit", times=1, seconds=60)
    outcome: list = []

    def commit() -> None:  # (node 1's offer: the leader took it, then hangs; what node 1 meets is not this test's)
        try:
            outcome.append(nodes[1].commit(_pieces(tmp_path, 2, 3000), "node commit"))
        except (TargetError, Deferred) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=commit, daemon=True)
    thread.start()
    try:
        wait_for(lambda: hang.hits >= 1, 20, "the leader's commit to reach the Hub")  # the scenario: its round hangs
        started = time.monotonic()
        nodes[0].store.hurry(started + 1.0)  # what the uploader's SIGTERM does
        nodes[0].leader.stop()
        assert time.monotonic() - started < 2.0, time.monotonic() - started
        assert nodes[0].leader._thread is not None and nodes[0].leader._thread.is_alive()  # (still in its commit)
    finally:
        hang.release()
        thread.join(30)
        for target in nodes:
            target.stop()


def test_a_leader_whose_clock_reads_an_hour_ahead_changes_nothing(hub, store, tmp_path):
    """No wall clock is compared across hosts: the leaders' host reads an hour ahead of the nodes'. Node
    1's offer does not look an hour old to the leader (it commits it; before, offers expired by the
    node's wall time), and the slot the leader gives is the same moment on the node's own clock."""
    skew = 3601.5  # an hour and a bit: not a whole number of the plan's 4 s intervals
    hub.create_repo(REPO)
    nodes = [_node(hub, store.port, k, commit_every=4.0) for k in range(2)]
    for target in nodes:  # the leader threads' wall clock only (handed in); the nodes' is this host's
        target.leader.wall = lambda: time.time() + skew
    for target in nodes:
        target.prepare()
    with _leading(nodes):
        oid, waits = _commit_when_due(nodes[1], _pieces(tmp_path, 2, 3000), "node commit")
        assert nodes[1].mode == "job" and not waits and "from 1 node(s)" in _log_commits(hub)[0]["summary"]
        plan = nodes[1].plan
        assert plan is not None and nodes[1]._phases is not None
        interval, leaders_phase = plan.pacing(1)  # on the leader's clock
        mine = pacing(nodes[1].situation(UploadConfig.for_hub(REPO, prefix="tb", commit_every=4)))[:2][1]  # on the node's
        assert abs(((mine - (leaders_phase - skew)) + interval / 2) % interval - interval / 2) < 0.5, (mine, leaders_phase)


def test_nodes_that_log_to_different_folders_hear_it_at_start(hub, store):
    """Node-local logdirs named differently (``logs-node0`` on node 0, ``logs-node1`` on node 1): one job,
    two remote folders, a leader each. The node that starts second finds the other's folder in the job's
    own keys and says so (``status``: ``split_from``); two nodes logging to one folder hear nothing."""
    hub.create_repo(REPO)
    split = [_node(hub, store.port, k, prefix=f"tb/logs-node{k}", job="job-split") for k in range(2)]
    together = [_node(hub, store.port, k, prefix="tb/logs", job="job-together") for k in range(2)]
    try:
        for target in (*split, *together):
            target.start()
        assert split[0].split_from is None  # alone when it started
        assert split[1].split_from is not None and "[0]" in split[1].split_from and "logs-node0" in split[1].split_from
        assert split[1].job_info()["split_from"] == split[1].split_from  # what ``status`` shows
        assert together[0].split_from is None and together[1].split_from is None
    finally:
        for target in (*split, *together):
            target.stop()


def test_a_node_whose_offer_nobody_commits_takes_it_back_and_commits_itself(hub, store, tmp_path):
    hub.create_repo(REPO)
    node = _node(hub, store.port, 1, wait=1.0)  # no leader runs anywhere
    node.prepare()
    pieces = _pieces(tmp_path, 2, 3000)
    oid, waits = _commit_when_due(node, pieces, "node commit")
    assert node.mode == "node"
    assert node.store.get("offer/1") == WITHDRAWN  # the path taken: the offer was taken back first
    assert all(wait <= node.plan_now(1).own_every() for wait in waits), waits  # at its own slot, no later
    assert _log_commits(hub)[0]["oid"] == oid and _log_commits(hub)[0]["summary"] == "node commit"
    assert not node.differences(pieces)


def test_after_a_termination_signal_a_node_waits_for_the_leader_only_while_it_can_still_commit_itself(hub, store, tmp_path):
    """Preemption: the uploader must be gone within its deadline (20 s by default), and the leader
    may be going too. Once signalled, a node waits for an answer a third of what is left, takes its
    offer back and commits itself: not the 10 s (here) it would wait otherwise."""
    hub.create_repo(REPO)
    node = _node(hub, store.port, 1, wait=10.0)  # no leader runs anywhere
    node.prepare()
    node.hurry(time.monotonic() + 3.0)  # what the uploader's loop does at SIGTERM
    pieces = _pieces(tmp_path, 2, 3000)
    started = time.monotonic()
    oid = node.commit(pieces, "node commit")
    took = time.monotonic() - started
    assert node.store.get("offer/1") == WITHDRAWN and node.mode == "node"  # the path taken: offered, taken back
    assert _log_commits(hub)[0]["oid"] == oid and not node.differences(pieces)
    assert took < 3.0, f"the node waited {took:.1f} s for a leader: past its deadline"


def test_at_preemption_with_the_store_alive_the_leader_makes_one_last_commit_for_both_nodes(hub, store, tmp_path):
    """SIGTERM to every node of a job whose store outlives the ranks (an ``env://`` store, a launcher
    that stays): each node's uploader is signalled (its wait for the leader cut to a third of what is
    left), both offer their last records at once, and the leader, still running in its own signalled
    uploader, commits both in one commit well before the deadline; no node commits itself."""
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k, wait=30.0) for k in range(2)]
    for target in targets:
        target.prepare()
    with _leading(targets):
        deadline = time.monotonic() + 20.0  # the default preemption deadline
        for target in targets:
            target.hurry(deadline)  # what each uploader's loop does at SIGTERM
        pieces = [_pieces(tmp_path, rank, 6000) for rank in (0, 2)]
        oids = _commit_together(targets, pieces)
        assert time.monotonic() < deadline
        assert oids[0] == oids[1] and oids[0] is not None, oids
        last = _log_commits(hub)[0]
        assert last["oid"] == oids[0] and "2 node(s)" in last["summary"], last  # the leader's, for both
        assert all(t.mode == "job" for t in targets) and len(_log_commits(hub)) == 1


def test_with_the_store_gone_a_node_commits_itself_at_once_whatever_the_budget(hub, tmp_path):
    """The store's host died (its node failed, the job was cancelled), with the default budget (32 commits
    an hour, a node's own slot up to minutes away): nothing coordinates the nodes any more, so the node
    commits its files itself at once, and from then on at its own slots (the Hub's 429s pace them too)."""
    hub.create_repo(REPO)
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    node = _node(hub, server.port, 1, budget=make_budget(), commit_every=6)
    node.prepare()
    node.start()  # as its uploader does: the node joins the job's store
    try:
        config = dataclasses.replace(UploadConfig.for_hub(REPO, prefix="tb", commit_every=6), nodes=2, node_rank=1)
        assert pacing(node.situation(config))[:2] == (6, 0.0)  # before the leader plans: every node at the same moments
        assert node.store_seen and node.store.get("members") == b"1,"
        assert node.plan_now(1).own_every() > 120  # the scenario: the default budget's own slots are minutes apart
        del server  # the store's host is gone: nothing listens on its port any more
        pieces = _pieces(tmp_path, 2, 2000)
        oid, waits = _commit_when_due(node, pieces, "node commit")
        assert waits == [] and node.mode == "node" and node.store_gone, waits  # at once, not at its slot
        assert _log_commits(hub)[0]["oid"] == oid and _log_commits(hub)[0]["summary"] == "node commit"
        assert not node.differences(pieces)
        assert pacing(node.situation(config))[:2] == node.plan_now(1).own_pacing(1, node.commit_every)  # its own slots
        assert node.job_info()["store_gone"] is True  # what ``status`` shows
    finally:
        node.stop()


def test_a_node_whose_offer_is_stuck_in_a_frozen_store_waits_out_its_claim_window_exactly(hub, tmp_path, store_process):
    """The store's host freezes (SIGSTOP) while this node waits for the leader's answer: its offer cannot be taken
    back, and a leader may have claimed it just before (its commit still on the way), so the node commits its files
    itself only once no leader takes that offer any more. It is told exactly when (put off, not an error: an error's
    growing backoff overshot the window by 42 s once, where the store's host died under load), and then commits."""
    proc, port = store_process
    hub.create_repo(REPO)
    node = _node(hub, port, 1, wait=3.0)  # (no leader runs: none answers)
    node.prepare()
    pieces = _pieces(tmp_path, 1, 2000)
    outcome: list = []

    def commit() -> None:
        try:
            outcome.append(node.commit(pieces, "node commit"))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=commit)
    thread.start()
    wait_for(lambda: node.offers.pending_since is not None, 10, "the node to offer and wait for an answer")
    os.kill(proc.pid, signal.SIGSTOP)  # (the fixture thaws it at the end)
    thread.join(60)
    window = node.wait + node.timing.claim_margin
    assert len(outcome) == 1 and isinstance(outcome[0], Deferred), outcome  # put off, not failed
    assert 0 < outcome[0].retry_after <= window and node.offers.pending_since is not None, outcome[0].retry_after
    put_off = time.monotonic()
    oid, waits = _commit_when_due(node, pieces, "node commit")
    assert time.monotonic() - put_off <= outcome[0].retry_after + 5, waits  # at the window's end, not later
    assert node.mode == "node" and _log_commits(hub)[0]["oid"] == oid and not node.differences(pieces)


def _commit_until_successors_known(nodes: list[JobTarget], tmp_path: Path) -> int:
    """Every node commits together until the leader's answers list the successor store; the rounds it took."""
    round_ = 0
    while not all(len(node.successors) == 1 for node in nodes):
        round_ += 1
        assert round_ <= 3, [node.successors for node in nodes]
        oids = _commit_together(nodes, [_pieces(tmp_path / f"node-{k}", k, 1000 * round_) for k in range(3)])
        assert len(set(oids)) == 1 and oids[0] is not None, oids
    return round_


def _leader_took_up_the_job(nodes: list[JobTarget], terms: int) -> bool:
    """Whether exactly one node leads, in a term above ``terms``."""
    leaders = [node.leader for node in nodes if node.leading]
    return len(leaders) == 1 and leaders[0].term > terms


def test_with_the_jobs_store_gone_the_nodes_go_on_through_the_successor_store(hub, tmp_path):
    """Three nodes; node 1 hosts the successor store. The job's store dies (its host process gone): the nodes move
    to node 1's successor store, where one leader commits every node's files in one commit, its term above the
    job's. No node commits its files itself."""
    hub.create_repo(REPO)
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    timing = JobTiming(successor_copy=0.5)
    nodes = [_node(hub, server.port, k, nodes=3, timing=timing) for k in range(3)]
    _start_with_node_0_leading(nodes)
    try:
        _commit_until_successors_known(nodes, tmp_path)
        copy = nodes[1].successor
        assert copy is not None and nodes[2].successor is None
        terms = nodes[0].store.add("terms", 0)
        wait_for(lambda: copy.own.add("terms", 0) >= terms, 10, "the successor store to hold the job's terms")
        del server
        assert nodes[0].store.gone()
        oids = _commit_together(nodes, [_pieces(tmp_path / f"node-{k}", k, 5000) for k in range(3)], when_due=True)
        assert len(set(oids)) == 1 and oids[0] is not None, oids
        assert _log_commits(hub)[0]["oid"] == oids[0] and "3 node(s)" in _log_commits(hub)[0]["summary"]
        assert all(node.store.address == copy.address and node.moves == 1 for node in nodes)
        assert _leader_took_up_the_job(nodes, terms)
        assert all(node.own.made == 0 and not node.store_gone for node in nodes)
        assert nodes[1].job_info()["hosts_successor"] == 1 and nodes[0].job_info()["moves"] == 1  # what ``status`` shows
        assert f":{copy.address.port}" in _committer_text(nodes[0].job_info(), None)  # and says
    finally:
        for node in nodes:
            node.stop()


def test_with_the_jobs_store_frozen_the_nodes_move_to_the_successor_and_stay_there(hub, tmp_path, store_process):
    """1. The job's store stops answering (its host frozen: as for a machine down or cut off, nothing refuses
    and nothing answers). Once it answered none of a node's calls for ``timing.store_lost``, the node moves to
    the first successor store that answers, and one leader commits every node's files there. Before, only a
    store where nothing listened was left: each node committed its files itself. 2. The uploader of node 1,
    which hosts the successor store in use, exits (its own files drained): its store is served on while nodes
    0 and 2 use it, so they commit together there again. Before, it ended with the uploader, and the nodes moved
    again (past the last successor, each alone). 3. The frozen host runs again: nodes 0 and 2 stay on the successor
    (a node goes forward once, never back) and commit together there; once both left, the successor ends."""
    proc, port = store_process
    hub.create_repo(REPO)
    timing = JobTiming(successor_copy=0.5, store_lost=3.0, lease_stale=4.0)
    nodes = [_node(hub, port, k, nodes=3, timing=timing) for k in range(3)]
    _start_with_node_0_leading(nodes)
    try:
        _commit_until_successors_known(nodes, tmp_path)
        first = nodes[1].successor
        assert first is not None
        home = nodes[0].store.elsewhere(nodes[0].store.address)
        terms = nodes[0].store.add("terms", 0)
        wait_for(lambda: first.own.add("terms", 0) >= terms, 10, "the successor store to hold the job's terms")
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: all(node.store.silent_for() >= timing.store_lost for node in nodes), 90,
                 "every node's calls to have failed for a while")  # (their leader threads keep asking)
        assert not nodes[0].store.gone()  # the scenario: something listens there, nothing answers
        oids = _commit_together(nodes, [_pieces(tmp_path / f"node-{k}", k, 5000) for k in range(3)], when_due=True)
        assert len(set(oids)) == 1 and oids[0] is not None, oids
        assert _log_commits(hub)[0]["oid"] == oids[0] and "3 node(s)" in _log_commits(hub)[0]["summary"]
        assert all(node.store.address == first.address and node.moves == 1 for node in nodes)
        assert all(node.own.made == 0 for node in nodes)
        # 2. Node 1's uploader exits; its store lives as long as that process (here: the host object) does.
        hosts = [nodes.pop(1)]
        hosts[0].stop()

        def exits() -> None:
            hosts[0].linger(lambda: False)
            hosts.clear()  # the process ends: its store with it
            gc.collect()

        first = None
        lingering = threading.Thread(target=exits)
        lingering.start()
        oids = _commit_together(nodes, [_pieces(tmp_path / f"node-{k}", k, 9000) for k in (0, 2)], when_due=True)
        assert len(set(oids)) == 1 and oids[0] is not None and "2 node(s)" in _log_commits(hub)[0]["summary"], oids
        assert all(node.moves == 1 for node in nodes) and lingering.is_alive()  # no second move: still served
        # 3. The job's store runs again: the nodes stay on the successor and commit together there.
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(home.answers, 10, "the job's store to answer again")
        oids = _commit_together(nodes, [_pieces(tmp_path / f"node-{k}", k, 13000) for k in (0, 2)], when_due=True)
        assert len(set(oids)) == 1 and oids[0] is not None and "2 node(s)" in _log_commits(hub)[0]["summary"], oids
        assert all(node.moves == 1 and node.store.address != home.address for node in nodes)
        for node in nodes:
            node.stop()  # (each says it left: the successor's host serves it no longer)
        lingering.join(3 * timing.lease_stale)  # (its polls every half a staleness, each a store call: under load, more)
        assert not lingering.is_alive()  # both left it: it ended with its process
    finally:
        for node in nodes:
            node.stop()


def test_a_node_no_leader_answered_yet_still_finds_the_successor_stores_when_the_store_dies(
        hub, tmp_path, store_process):
    """The successor stores reach a node in its leader's answers; a node that no leader answered yet (here:
    none leads; at a job's start, or during a hand-over) reads them in the store itself, before it offers.
    So when the store dies before any answer, the node moves to successor store 1, as the others do. Before,
    it knew of none and committed its files itself (past the last successor, each node alone)."""
    proc, port = store_process
    hub.create_repo(REPO)
    timing = JobTiming(successor_copy=0.5)
    node = _node(hub, port, 0, wait=2.0, nodes=3, timing=timing)
    hosts = [_node(hub, port, k, nodes=3, timing=timing) for k in (1, 2)]  # (node 1 hosts the successor)
    try:
        for target in hosts:
            target.prepare()
            target.start()
            target.leader.stop()  # nobody leads: no offer is answered
        node.prepare()
        assert node._announce()
        wait_for(lambda: node.store.get("successor/1") is not None, 10, "node 1 to publish its store")
        oid, _ = _commit_when_due(node, _pieces(tmp_path, 0, 1000), "node commit")
        assert oid is not None and node.through_leader == 0 and node.own.made == 1  # the scenario: no answer
        assert [(a.host, a.port) for a in node.successors] == [
            (h.successor.address.host, h.successor.address.port) for h in hosts if h.successor is not None]
        proc.kill()
        proc.wait(10)
        wait_for(lambda: node.store.gone(), 10, "the job's store to be gone")
        _commit_when_due(node, _pieces(tmp_path, 0, 2000), "node commit")
        first = hosts[0].successor
        assert first is not None and node.moves == 1 and node.store.address == first.address
        assert first.own.get("incarnation/0") is not None  # it announced itself there
    finally:
        for target in [node, *hosts]:
            target.stop()


def test_a_store_too_busy_to_answer_at_first_then_gone_is_gone(hub, tmp_path):
    """The store's host listens but does not answer in time when this node's uploader starts (a loaded
    node), then dies before this node ever got an answer: the store existed, so nothing listening now
    means gone, and the node commits at once (the default budget's own slot is minutes away), not at
    its slot as for a store that is not there yet."""
    import socket

    hub.create_repo(REPO)
    busy = socket.socket()  # the store's port: connections accepted, nothing answered
    busy.bind(("127.0.0.1", 0))
    busy.listen(16)
    node = _node(hub, busy.getsockname()[1], 1, budget=make_budget())
    node.prepare()
    pieces = _pieces(tmp_path, 2, 2000)
    try:
        with pytest.raises(Deferred):  # the path: the store did not answer; its own slot is minutes away
            node.commit(pieces, "node commit")
        assert node.store_seen and not node.store_gone and node.mode == "node"
    finally:
        busy.close()  # the host dies: nothing listens any more
    oid, waits = _commit_when_due(node, pieces, "node commit")
    assert waits == [] and node.store_gone and _log_commits(hub)[0]["oid"] == oid
    node.stop()


@pytest.mark.parametrize("node_rank,at_once", [(1, True), (15, True), (16, False)])
def test_a_node_that_never_reached_the_store_commits_its_last_records_at_once_once_its_writers_closed(
        hub, tmp_path, node_rank, at_once):
    """The store's host died before this node's uploader first reached it (nothing ever listened): while its
    writers live, the node commits itself at its own slot of the job's budget (minutes away by default); once
    they have all closed, its last records go at once, where its number is within the burst the budget's margin
    allows at the job's end (:meth:`~.own_commits.OwnCommits.turn`), else at that slot still."""
    hub.create_repo(REPO)
    node = _node(hub, closed_port(), node_rank, budget=make_budget(), nodes=32, commit_every=6)
    node.prepare()
    node.start()  # as its uploader does: the store refuses the connection
    try:
        assert not node.store_seen and node.plan_now(1).own_every() > 600  # the scenario: never reached, slots far
        pieces = _pieces(tmp_path, 2, 2000)
        with pytest.raises(Deferred):  # its writers live: its own slot of the budget
            node.commit(pieces, "node commit")
        assert _log_commits(hub) == []
        node.closing = True  # (the uploader's loop: every writer of the node is gone)
        if not at_once:
            with pytest.raises(Deferred):  # beyond the burst: its own slot still
                node.commit(pieces, "node commit")
            return
        oid = node.commit(pieces, "node commit")
        assert node.mode == "node" and [c["oid"] for c in _log_commits(hub)] == [oid]
        assert not node.differences(pieces)
    finally:
        node.stop()


def test_a_store_that_starts_after_the_uploader_is_joined_when_it_answers(hub, tmp_path, monkeypatch):
    """An ``env://`` job whose rank 0 creates its store after the first writer started the node's
    uploader: the node commits itself meanwhile (in its turn, and ``status`` says why), asks the store
    again :data:`STORE_RETRY_S` later (2 s here), and from then on its files go through the job's leader."""
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.coordination import factory as job_commit

    port = closed_port()  # the store's, later
    hub.create_repo(REPO)
    config = dataclasses.replace(UploadConfig.for_hub(REPO, prefix="tb", commit_every=6), nodes=2, node_rank=0,
                                 endpoint=hub.endpoint, store=f"127.0.0.1:{port}", job_id="torchrun-job-late")
    config = dataclasses.replace(config, commits_per_hour=36_000, api_requests=100_000)  # ROOMY: seconds, not hours
    node = job_commit.for_job(config, target_for(config, TOKEN), TOKEN, call_bound=60, timing=JobTiming(store_retry=2.0))
    assert isinstance(node, JobTarget) and node.mode == "node" and "nothing listens" in (node.why or "")
    info = node.job_info()
    assert info["mode"] == "node" and info["own_every"] > 0 and "node 0 of 2" in _committer_text(info, config)
    node.prepare()
    node.start()
    server = None
    try:
        oid, _ = _commit_when_due(node, _pieces(tmp_path, 0, 2000), "node commit")  # the store not asked: it rests
        assert [c["oid"] for c in _log_commits(hub) if c["summary"] == "node commit"] == [oid]
        server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
        wait_for(lambda: node.leader.leading, 20, "the node's leader thread to find the store and take the lease")
        wait_for(lambda: time.monotonic() >= node._store_rests_until, 5, "the node's pause to end")
        pieces = _pieces(tmp_path, 0, 4000)
        oid = node.commit(pieces, "node commit")
        assert node.mode == "job" and node.why is None
        (last,) = [c for c in _log_commits(hub) if c["oid"] == oid]
        assert "from 1 node(s)" in last["summary"], last  # the leader's commit, not the node's own
        assert not node.differences(pieces)
        assert node.job_info()["mode"] == "job" and "2 nodes" in _committer_text(node.job_info(), config)
    finally:
        node.stop()
        del server


def test_a_leader_that_cannot_read_the_head_asks_again_ever_later(hub, store, tmp_path):
    """The Hub refuses every ``repo_info``: the leader's rounds find the head unreadable and pause,
    longer each time (0.5 s doubling), instead of asking twice a second while a node's offer waits."""
    hub.create_repo(REPO)
    leader_node, node = _node(hub, store.port, 0), _node(hub, store.port, 1, wait=8.0)
    for target in (leader_node, node):
        target.prepare()
    leader_node.start()
    wait_for(lambda: leader_node.leader.leading, 20, "node 0 to lead")
    refused = hub.inject("status", route="repo_info", times=None, status=500)
    errors: list = []
    thread = threading.Thread(target=lambda: errors.append(_commit_or_error(node, _pieces(tmp_path, 2, 3000))))
    try:
        thread.start()  # node 1 offers, waits 8 s for an answer, then commits itself (its head read refused too)
        thread.join(30)
        # The scenario: the leader tried, and failed, to read the head (a round was due).
        assert leader_node.leader._head_failures >= 2, leader_node.leader._head_failures
        # Asked at about 2, 3, 5 s (then 9 s) of the 8 s wait, plus the node's own read: not ~13 times.
        assert refused.hits <= 5, f"the head was asked {refused.hits} times in 8 s"
        assert errors and isinstance(errors[0], TargetError), errors  # nothing committed: its own turn, or the head
    finally:
        hub.clear_faults()
        leader_node.stop()
        node.stop()


def _commit_or_error(node: JobTarget, pieces: list[Piece]) -> object:
    try:
        return node.commit(pieces, "node commit")
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc


def test_a_store_that_comes_back_empty_is_told_the_nodes_incarnation_again(hub, tmp_path, monkeypatch):
    """The job's store is replaced by an empty one on the same address (an ``env://`` job's rank 0
    restarted): the node's next offer, after the failure, first writes its incarnation again, so that
    the offers of an uploader it replaced stay ignored. A stopped uploader that wakes up never writes
    its older incarnation over its successor's."""

    hub.create_repo(REPO)
    first = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    port = first.port
    retry_at_once = JobTiming(store_retry=0.0)
    predecessor = _node(hub, port, 1, wait=1.0, timing=retry_at_once)  # an uploader of this node that was replaced
    assert predecessor._announce()
    node = _node(hub, port, 1, wait=1.0, timing=retry_at_once)  # no leader runs anywhere: each offer is taken back
    node.prepare()
    assert node._announce()  # what its start does (without starting its leader thread)
    assert node.incarnation > predecessor.incarnation  # numbered by the store, whatever the clocks
    key = node.store.prefix + "incarnation/1"
    try:
        assert first.get(key) == str(node.incarnation).encode()
        del first  # gone: the next commit is the node's own
        node.commit(_pieces(tmp_path, 2, 2000), "node commit")
        assert node.mode == "node" and f"127.0.0.1:{port}" in (node.why or "")  # the path taken: the store failed
        second = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
        assert not second.check([key])  # a new store: empty
        node.commit(_pieces(tmp_path, 2, 4000), "node commit")  # offered (no leader: taken back, its own)
        assert second.get(node.store.prefix + "offer/1") == WITHDRAWN  # it did offer, through the new store
        assert second.check([key]) and second.get(key) == str(node.incarnation).encode()
        # An older uploader of this node (stopped, woken up) does not overwrite it.
        woken = _node(hub, port, 1, wait=1.0, timing=retry_at_once)  # the predecessor wakes up, connects again and announces
        woken.incarnation = predecessor.incarnation
        assert woken._announce() and second.get(key) == str(node.incarnation).encode()
    finally:
        node.stop()


def test_the_running_uploader_publishes_how_its_commits_go_when_that_changes(hub, tmp_path, monkeypatch):
    """What ``status`` reads (``uploader.json``'s ``job``) is rewritten by the uploader's own loop when
    the way its commits go changes: this node itself while the job's store is not there, the job's
    leader once it is (an ``env://`` store rank 0 creates late)."""
    import json

    from hf_mpwriter import HFSummaryWriter
    from hf_mpwriter.config import load
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.coordination import factory as job_commit
    from hf_mpwriter.uploader.loop import Uploader

    monkeypatch.setenv("HF_MPWRITER_COMMITS_PER_HOUR", "3600")  # commits 1 s apart
    port = closed_port()  # the store's, later
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": "job-pub"}.items():
        monkeypatch.setenv(name, value)
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(REPO, logdir=str(logdir), uploader="none", rank=0, token=TOKEN, commit_every=1 / 60)
    config = dataclasses.replace(load(logdir), nodes=2, node_rank=0, endpoint=hub.endpoint)
    node = job_commit.for_job(config, target_for(config, TOKEN), TOKEN, call_bound=60, timing=JobTiming(store_retry=1.0))
    uploader = Uploader(logdir, config=config, token=TOKEN, target=node)

    def published() -> dict:
        return json.loads((logdir / ".hf_mpwriter" / "uploader.json").read_text())["job"]

    stop, server = threading.Event(), None
    thread = threading.Thread(target=uploader.run, kwargs={"stop": stop, "watch": True})
    try:
        thread.start()
        wait_for(lambda: (logdir / ".hf_mpwriter" / "uploader.json").exists(), 10, "the uploader to be elected")
        assert published()["mode"] == "node" and "nothing listens" in published()["why"]
        writer.add_scalar("loss", 1.0, 0)
        writer.flush()
        wait_for(lambda: any(c["summary"] != "initial commit" for c in hub.commits(REPO)), 30, "the node's own commit")
        server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
        for step in range(1, 40):  # the node logs on; its commits move to the job's leader
            writer.add_scalar("loss", 1.0, step)
            writer.flush()
            if published()["mode"] == "job":
                break
            time.sleep(0.5)
        assert published() == {**published(), "mode": "job", "why": None}
        assert any("from 1 node(s)" in c["summary"] for c in hub.commits(REPO))  # the path taken: the leader's
    finally:
        stop.set()
        thread.join(30)
        writer.close()
        del server


def test_a_round_longer_than_the_lease_never_gives_the_job_two_leaders(hub, store, tmp_path):
    """A commit that takes longer than :data:`LEASE_STALE_S` (a big one, a slow Hub): the leader's lease
    is renewed on its own schedule meanwhile, so no other node takes over and commits the same offers."""
    hub.create_repo(REPO)
    targets = [_node(hub, store.port, k, wait=LEASE_STALE_S + 20) for k in range(2)]
    _start_with_node_0_leading(targets)
    slow = hub.inject("latency", route="commit", seconds=LEASE_STALE_S + 2)
    try:
        oids = _commit_together(targets, [_pieces(tmp_path, rank, 4000) for rank in (0, 2)])
    finally:
        for target in reversed(targets):  # node 1 first: node 0's release of the lease must not hand it over
            target.stop()
    assert slow.done == 1  # the scenario: the round's commit took longer than the lease lasts
    # One leader all along: node 0 took the job's lease once (before the round), node 1 never.
    assert [t.job_info()["leases"] for t in targets] == [1, 0], [t.job_info() for t in targets]
    commits = _log_commits(hub)
    assert len(commits) == 1 and "2 node(s)" in commits[0]["summary"], [c["summary"] for c in commits]
    assert oids[0] == oids[1] == commits[0]["oid"], oids


@pytest.mark.parametrize("nodes", [8, 256])
def test_reading_the_offers_costs_the_store_the_same_at_any_job_size(hub, store, nodes):
    """The leader reads every node's offer, answer and incarnation: a few round trips whatever the node
    count (batched), not three ``check``+``get`` per node (at 1,024 nodes: 6,144 round trips a read)."""
    address = StoreAddress("127.0.0.1", store.port, "job-1")
    leader_target = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
    shared = JobStore(address, store_prefix(address, leader_target.key))  # one client for the simulated nodes
    offering = [JobTarget(leader_target, leader_target, shared, node, nodes, wait=1.0, spacing=0.5)
                for node in range(0, nodes, 2)]  # half the nodes have an uploader; the others never came
    for node in offering:
        assert node._announce()
        node.store.set(f"offer/{node.node}", json.dumps(
            {"seq": 1, "incarnation": node.incarnation, "wait": 1.0, "files": [[f"rank-{node.node}/f", "0" * 64, 1, None]]}
        ).encode())
    leader = offering[0].leader
    before = leader.store.round_trips
    offers = leader._offers()
    assert sorted(offers) == [node.node for node in offering]  # the scenario: every offer found, none invented
    assert leader.store.round_trips - before <= 4, leader.store.round_trips - before


def test_only_one_node_creates_the_repository_and_tags_its_card(hub, store, tmp_path):
    """At a job's start every node's uploader prepares its target: one of them (node 0) creates the
    repository and tags the model card, the others take the id it resolved from the job's store (a
    thousand nodes would otherwise spend thousands of Hub API requests before the first commit)."""
    address = StoreAddress("127.0.0.1", store.port, "job-1")
    targets = []
    for node in range(3):
        inner = HubTarget("job-run", prefix="tb", token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
        leader = HubTarget("job-run", prefix="tb", token=TOKEN, endpoint=hub.endpoint)
        targets.append(JobTarget(inner, leader, JobStore(address, store_prefix(address, inner.key)), node, 3,
                                 wait=10.0, spacing=0.5))
    before = hub.stats["requests"]
    threads = [threading.Thread(target=t.prepare) for t in reversed(targets)]  # the others first: they wait
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    spent = {route: n - before.get(route, 0) for route, n in hub.stats["requests"].items() if n - before.get(route, 0)}
    assert hub.repo_exists("test-user/job-run")  # the scenario: a name without namespace, resolved by the Hub
    assert [t.inner.repo_id for t in targets] == ["test-user/job-run"] * 3
    assert [t.repo_id for t in targets] == ["test-user/job-run"] * 3  # what target.json records: view works on every node
    assert [t.leader.target.repo_id for t in targets] == ["test-user/job-run"] * 3
    assert spent.get("create_repo") == 1, spent


def _offers_before_a_leader(targets: list[JobTarget], tmp_path: Path) -> tuple[dict, dict]:
    """Each node commits a file in a thread, as its queue would; once all have offered (no leader yet), every node
    starts, and the one that takes the lease finds the offers waiting. Their offers as made, and each node's
    ``(commit id, waits it was told)``."""
    results: dict[int, tuple] = {}
    threads = [threading.Thread(target=lambda k=k: results.update({k: _commit_when_due(
        targets[k], _pieces(tmp_path, k, 3000 + k), "node commit")})) for k in range(len(targets))]

    def offered() -> dict[int, dict]:
        raw = {k: targets[0].store.get(f"offer/{k}") for k in range(len(targets))}
        return {k: json.loads(v) for k, v in raw.items() if v and v != WITHDRAWN}

    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(offered()) == len(targets), 30, "every node to offer")
        offers = offered()
        for target in targets:
            target.start()
        for thread in threads:
            thread.join(60)
    finally:
        for target in targets:
            target.stop()
    return offers, results


def test_the_leader_commits_at_most_max_files_at_once_oldest_data_first(hub, store, tmp_path):
    """The Hub takes commits of tens to hundreds of files (a 60 s server timeout; huggingface_hub's own
    upload_large_folder stops at 1,000): the leader commits at most ``max_files`` at once, the offers of
    the nodes whose data has waited longest first (node 2's: put off before, as its node says, though it
    offers last); the rest are told when to offer again (the next write the budget allows), and are
    committed then, still by the leader."""
    hub.create_repo(REPO)
    address = StoreAddress("127.0.0.1", store.port, "job-1")
    targets = []
    for node in range(3):
        inner = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
        leader = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
        targets.append(JobTarget(inner, leader, JobStore(address, store_prefix(address, inner.key)), node, 3,
                                 wait=30.0, spacing=0.5, prepared_wait=0.0, budget=ROOMY))
        targets[-1].leader.max_files = 2
    for target in targets:
        target.prepare()
    targets[2]._waiting_since = time.monotonic() - 100.0  # node 2's data has waited 100 s (put off before)
    # (the leader that takes the lease finds all three offers waiting, and asks them again: it cannot know how long
    # they waited)
    offered, outcomes = _offers_before_a_leader(targets, tmp_path)
    results = {k: commit for k, (commit, _) in outcomes.items()}
    waits = {k: told for k, (_, told) in outcomes.items()}
    oldest = max(offered, key=lambda k: offered[k]["waiting"])
    assert oldest == 2 and offered[2]["waiting"] >= 100.0, offered  # the scenario: node 2 says its data is oldest
    commits = _log_commits(hub)[::-1]  # oldest first
    summaries = [c["summary"] for c in commits]
    assert len(commits) == 2, summaries  # the scenario: more offers than one commit may hold
    # The path: the third offer put off once for the commit's size (the leader first asks again the offers it found
    # at its take-up, whose age it cannot know: "offer again" at once, a wait of 0).
    assert sorted(sum(1 for wait in w if wait > 0) for w in waits.values()) == [0, 0, 1], waits
    assert "2 file(s) from 2 node(s)" in summaries[0] and "1 file(s) from 1 node(s)" in summaries[1], summaries
    assert all(t.mode == "job" for t in targets)  # every node's files went through the leader
    assert results[oldest] == commits[0]["oid"], (oldest, results, commits)  # the oldest offer in the first commit
    assert sorted(results.values()) == sorted([commits[0]["oid"]] * 2 + [commits[1]["oid"]])

def test_a_new_leader_commits_the_last_offers_it_finds_at_its_take_up_in_one_commit(hub, store, tmp_path):
    """A new term asks again the offers it finds (it cannot know how long they waited), but not a node's last
    records: their files change no more, and a signalled node told to offer again would commit them itself. Here
    the nodes' writers are gone before any node leads: one commit of every node's files, none of a node's own."""
    hub.create_repo(REPO)
    nodes = [_node(hub, store.port, k, wait=30.0, nodes=3) for k in range(3)]
    for node in nodes:
        node.prepare()
        node.closing = True  # (every writer gone: these are its last records)
    offered, results = _offers_before_a_leader(nodes, tmp_path)
    assert all(offer["last"] for offer in offered.values())  # the scenario: last records, offered before any leader
    commits = _log_commits(hub)
    assert len(commits) == 1 and "3 file(s) from 3 node(s)" in commits[0]["summary"], [c["summary"] for c in commits]
    assert all(waits == [] for _, waits in results.values()), results  # none told to offer again
    assert all(node.own.made == 0 and node.through_leader == 1 for node in nodes)


def test_the_nodes_of_a_big_job_share_the_periodic_audits(hub, store, tmp_path):
    """A node's periodic audit costs a Hub API request per 500 files; a thousand nodes each auditing every
    interval would spend a free account's requests on audits alone. While the leader commits for the job
    (and verifies each commit), the job audits about as often as :data:`JOB_AUDITORS` nodes would."""
    from hf_mpwriter.uploader.commit_cycle import Committer
    from hf_mpwriter.uploader.coordination.member import JOB_AUDITORS

    hub.create_repo(REPO)
    address = StoreAddress("127.0.0.1", store.port, "job-1")
    config = UploadConfig.for_hub(REPO, prefix="tb")
    intervals = []
    for node in (0, 511, 1023):
        inner = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
        target = JobTarget(inner, inner, JobStore(address, store_prefix(address, inner.key)), node, 1024, wait=1.0,
                           spacing=0.5, prepared_wait=0.0)
        logdir = tmp_path / f"node-{node}"
        (logdir / ".hf_mpwriter").mkdir(parents=True)
        committer = Committer(logdir, config, target, TOKEN, call=lambda what, fn, *a, nbytes=0: fn(*a))
        committer.audit()  # the start's audit: nothing committed yet, nothing asked
        intervals.append(committer._next_audit - time.monotonic())
    audits_per_hour = sum(3600 / i for i in intervals) / len(intervals) * 1024
    assert min(intervals) > config.audit_every, intervals  # the scenario: each node audits less often
    assert audits_per_hour == pytest.approx(JOB_AUDITORS * 3600 / config.audit_every, rel=0.5), audits_per_hour


def test_a_connection_that_times_out_is_made_again_within_the_calls_deadline(store, monkeypatch):
    """torch's store client now and then waits out its whole connect timeout where connecting again at once
    succeeds (seen here on ~2 connects in 60, to a store of this process or another). Injected, since it
    cannot be made to happen: the first connection raises torch's own timeout error after its timeout.
    The call still lands in the real store, within its deadline."""
    real = dist.TCPStore
    timeouts: list[float] = []

    def first_times_out(*args, **kwargs):
        timeouts.append(kwargs["timeout"].total_seconds())
        if len(timeouts) == 1:
            time.sleep(timeouts[0])
            raise dist.DistNetworkError("The client socket has timed out while trying to connect (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(dist, "TCPStore", first_times_out)
    client = JobStore(StoreAddress("127.0.0.1", store.port, "job-1"), "p", deadline=6.0)
    started = time.monotonic()
    client.set("k", b"v")
    took = time.monotonic() - started
    assert len(timeouts) == 2  # the scenario: the first connection timed out, a second was made
    assert bytes(store.get("p/k")) == b"v" and took < 6.0, took
    assert timeouts[0] < 6.0  # each try has a share of the call's deadline, not all of it


def test_a_last_offer_left_over_from_a_full_commit_is_looked_at_against_the_head_too(hub, store, tmp_path):
    """Node 2 committed its newer file itself (cut off and signalled: guarantees.md) while its older offer, its last
    records, waits in the store beside node 1's. The leader's commit holds one file: node 1's (older data) goes in,
    node 2's is left over, and a node's last records are not put off but taken next round, when the head is the
    leader's own again. Every offer read is looked at against the head before the first commit, so node 2's is
    answered "offer again" and never committed: node 2's file never goes back at any commit the Hub applied."""
    hub.create_repo(REPO)
    own = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
    older = own.preupload(_pieces(tmp_path, 2, 3000))  # node 2's offered version
    assert older is not None
    newer = _pieces(tmp_path, 2, 5000)
    own.commit(newer, "node 2's own commit")  # its newest, committed itself
    address = StoreAddress("127.0.0.1", store.port, "job-1")
    shared = JobStore(address, store_prefix(address, own.key))
    nodes = [JobTarget(own, HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint), shared, node, 3, wait=10.0,
                       spacing=0.5, budget=ROOMY) for node in range(3)]
    node_1 = own.preupload(_pieces(tmp_path, 1, 2000))
    assert node_1 is not None
    for node, files, waiting in ((nodes[1], node_1, 100.0), (nodes[2], older, 0.0)):  # node 1's data waited longer
        assert node._announce()
        node.store.set(f"offer/{node.node}", json.dumps({
            "seq": 1, "incarnation": node.incarnation, "wait": 20.0, "waiting": waiting, "last": True,
            "files": [[f.path, f.sha256, f.size, f.xet_hash] for f in files]}).encode())
    leader = nodes[0].leader
    leader.max_files = 1
    before = len(hub.commits(REPO))
    leader.start()
    try:
        def answered() -> list[dict] | None:
            raws = [shared.get(f"answer/{k}") for k in (1, 2)]
            answers = [json.loads(raw) for raw in raws if raw]
            return answers if len(answers) == 2 and all(a.get("seq") == 1 for a in answers) else None

        answers = wait_for(answered, 30, "both offers answered")  # (node 2's: committed, or "offer again")
    finally:
        leader.stop()
    history = hub.commits(REPO)[:len(hub.commits(REPO)) - before + 1]  # node 2's own commit and every one since
    assert [len(hub.read_file(REPO, older[0].path, revision=c["id"])) for c in history] == [5000] * len(history)
    assert len(history) == 2, [c["summary"] for c in history]  # the scenario: the leader committed node 1's file
    assert answers[0].get("commit") and not answers[1].get("commit") and answers[1]["retry_in"] == 0, answers
