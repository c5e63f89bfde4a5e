"""The Hub targets' audit (``differences``) against the test Hub, through the real client: what the
target holds is asked in batches (one paths-info call per ``PATHS_PER_CALL`` files), and each file
that is missing, of another size or of other content is found, in whichever batch it falls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from upload_helpers import TOKEN

from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
from hf_mpwriter.state.piece import Piece
from hf_mpwriter.targets import BucketTarget, HubTarget

_ROUTE = {"repo": "paths_info", "bucket": "bucket_paths_info"}
_SAME_SIZE = {"repo": "same size, different content (git oid)", "bucket": "same size, different content (Xet hash)"}


def _piece(root: Path, name: str, data: bytes) -> Piece:
    path = root / name
    path.write_bytes(data)
    return Piece(name, len(data), hashlib.sha256(data).hexdigest(), str(path))


@pytest.mark.parametrize("kind", ["repo", "bucket"])
def test_differences_asks_in_batches_and_finds_each_wrong_file(hub, tmp_path, kind):
    target = (HubTarget("me/audit", prefix="tb", token=TOKEN, endpoint=hub.endpoint) if kind == "repo"
              else BucketTarget("me/audit", prefix="tb", token=TOKEN, endpoint=hub.endpoint))
    target.paths_per_call = 2
    target.prepare()
    sent = [_piece(tmp_path, f"f{i}.txt", f"file {i}\n".encode() * 3) for i in range(5)]
    target.commit(sent, "five files")

    local = list(sent)
    local[1] = _piece(tmp_path, "f1.txt", b"file 1 grew\n" * 4)  # another size
    local[3] = _piece(tmp_path, "f3.txt", b"FILE 3\n" * 3)  # same size, other bytes
    local.append(_piece(tmp_path, "new.txt", b"never sent\n"))  # the 6th: third batch
    assert local[3].size == sent[3].size and local[1].size != sent[1].size
    calls_before = hub.stats["requests"].get(_ROUTE[kind], 0)

    wrong = target.differences(local)

    assert hub.stats["requests"][_ROUTE[kind]] - calls_before == 3  # 6 files, 2 per call: batched
    assert wrong == {
        "f1.txt": f"holds {sent[1].size} bytes, {local[1].size} expected",
        "f3.txt": _SAME_SIZE[kind],
        "new.txt": "missing",
    }
    assert target.differences(sent[:1] + sent[2:3] + sent[4:]) == {}  # the others match


@pytest.mark.skipif(hub_version() < BUCKETS_VERSION, reason="Storage Buckets need huggingface_hub>=1.5")
def test_a_bucket_audit_hashes_only_the_files_changed_since_the_last_one(hub, tmp_path, monkeypatch):
    """A bucket's audit compares Xet hashes computed from the local bytes: every file once, then only
    a file changed since (issue 31: every audit re-read and re-hashed every file ever committed, so
    its cost grew with the run's length)."""
    hf_xet = pytest.importorskip("hf_xet", reason="the local Xet hash needs hf_xet")
    target = BucketTarget("me/audit", prefix="tb", token=TOKEN, endpoint=hub.endpoint)
    target.prepare()
    pieces = [_piece(tmp_path, f"f{i}.txt", f"file {i}\n".encode() * 3) for i in range(5)]
    target.commit(pieces, "five files")
    hashed: list[str] = []
    real_hash_files = hf_xet.hash_files

    def counting_hash_files(paths):  # the real hash, counted
        hashed.extend(paths)
        return real_hash_files(paths)

    monkeypatch.setattr(hf_xet, "hash_files", counting_hash_files)

    assert target.local_reads(pieces) == sum(p.size for p in pieces)  # what the uploader bounds the call for
    assert target.differences(pieces) == {}
    assert sorted(hashed) == sorted(p.source for p in pieces)  # the first audit: every file
    hashed.clear()
    assert target.local_reads(pieces) == 0
    assert target.differences(pieces) == {}
    assert hashed == [], "the second audit hashed files unchanged since the first"

    changed = _piece(tmp_path, "f3.txt", b"FILE 3\n" * 3)  # same size, other bytes
    assert changed.size == pieces[3].size
    assert target.local_reads(pieces) == changed.size
    assert target.differences(pieces) == {"f3.txt": _SAME_SIZE["bucket"]}
    assert hashed == [changed.source], "only the changed file is hashed again"


def test_an_audit_is_given_time_for_the_bytes_it_hashes(tmp_path):
    """A new uploader (a restart, a replaced process) knows no digest: its first audit reads every file
    the target should hold, and its call to the target is bounded for those bytes; the audit after it
    reads nothing, and is bounded as a call with nothing to read (issue 31: a logdir too large to hash
    within the bound of a call with nothing to send was abandoned, the replaced uploader audited again
    from the start, and never committed)."""
    from upload_helpers import local_target_files

    from hf_mpwriter import HFSummaryWriter
    from hf_mpwriter.config import load
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.commit_cycle import Committer

    logdir = tmp_path / "logs"
    for rank in (0, 1):
        with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=rank, uploader="none") as w:
            for step in range(50):
                w.add_scalar("loss", float(step), step)
    config = load(logdir)
    first = Committer(logdir, config, target_for(config), None, call=lambda what, fn, *a, nbytes=0: fn(*a))
    first.cycle()
    first.close()
    copies = local_target_files(tmp_path / "target", config.prefix)
    assert len(copies) == 2, copies  # the scenario: both files committed
    calls: list[tuple[str, int]] = []

    def recording(what, fn, *args, nbytes=0):
        calls.append((what, nbytes))
        return fn(*args)

    restarted = Committer(logdir, config, target_for(config), None, call=recording)
    assert restarted.audit() == {} and restarted.audit() == {}
    restarted.close()
    assert calls == [("audit", sum(len(data) for data in copies.values())), ("audit", 0)]
