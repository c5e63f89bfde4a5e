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
from hf_mpwriter.targets import bucket as bucket_target
from hf_mpwriter.targets import hub as hub_target

_ROUTE = {"repo": "paths_info", "bucket": "bucket_paths_info"}
_SAME_SIZE = {"repo": "same size, different content (git oid)", "bucket": "same size, different content (Xet hash)"}


def _piece(root: Path, name: str, data: bytes) -> Piece:
    path = root / name
    path.write_bytes(data)
    return Piece(name, len(data), hashlib.sha256(data).hexdigest(), str(path))


@pytest.mark.parametrize("kind", ["repo", "bucket"])
def test_differences_asks_in_batches_and_finds_each_wrong_file(hub, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(hub_target if kind == "repo" else bucket_target, "PATHS_PER_CALL", 2)
    target = (HubTarget("me/audit", prefix="tb", token=TOKEN, endpoint=hub.endpoint) if kind == "repo"
              else BucketTarget("me/audit", prefix="tb", token=TOKEN, endpoint=hub.endpoint))
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

    assert target.differences(pieces) == {}
    assert sorted(hashed) == sorted(p.source for p in pieces)  # the first audit: every file
    hashed.clear()
    assert target.differences(pieces) == {}
    assert hashed == [], "the second audit hashed files unchanged since the first"

    changed = _piece(tmp_path, "f3.txt", b"FILE 3\n" * 3)  # same size, other bytes
    assert changed.size == pieces[3].size
    assert target.differences(pieces) == {"f3.txt": _SAME_SIZE["bucket"]}
    assert hashed == [changed.source], "only the changed file is hashed again"
