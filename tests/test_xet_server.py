"""The test Hub's Xet support, through the real huggingface_hub + hf_xet client (no HF_HUB_DISABLE_XET).

Clients run in subprocesses (see ``run_client`` in test_hub_server.py); the CAS wire formats and
the server's checks are also exercised directly with handcrafted xorbs, shards and commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lz4.frame
import pytest
from test_hub_server import GOOD, READ_ONLY, http, ndjson_commit, run_client

from hf_mpwriter.testing import HubServer
from hf_mpwriter.testing.xet_formats import (
    SHARD_HEADER_TAG,
    dedup_shard,
    hash_to_str,
    parse_shard,
    parse_xorb,
    str_to_hash,
)


@pytest.fixture
def server() -> Iterator[HubServer]:
    with HubServer(tokens={GOOD}, read_only_tokens={READ_ONLY}) as srv:
        yield srv


def test_upload_and_download_through_xet(server: HubServer, tmp_path: Path) -> None:
    data = os.urandom(1_500_000) + b"tensorboard" * 50_000  # incompressible, then compressible
    (tmp_path / "events.out.tfevents.1").write_bytes(data)
    res = run_client(
        server,
        tmp_path,
        """
        from huggingface_hub import HfFileSystem
        W = os.environ["WORK"]
        api.create_repo("ns/xet")
        out["oid"] = api.upload_file(path_or_fileobj=os.path.join(W, "events.out.tfevents.1"),
                                     path_in_repo="tb/events.out.tfevents.1", repo_id="ns/xet").oid
        out["tree"] = [{"path": f.path, "xet_hash": getattr(f, "xet_hash", "(0.x: no such field)"),
                        "sha256": f.lfs.sha256 if getattr(f, "lfs", None) else None}
                       for f in api.list_repo_tree("ns/xet", recursive=True) if f.path.startswith("tb/")]
        path = hf_hub_download("ns/xet", "tb/events.out.tfevents.1")
        out["same"] = open(path, "rb").read() == open(os.path.join(W, "events.out.tfevents.1"), "rb").read()
        with HfFileSystem().open("ns/xet/tb/events.out.tfevents.1", "rb") as f:  # ranged reads of /resolve
            f.seek(1_000_000)
            out["slice"] = f.read(16).hex()
        """,
    )
    assert res["same"] and res["oid"] == server.head("ns/xet")
    assert bytes.fromhex(res["slice"]) == data[1_000_000:1_000_016]
    assert server.read_file("ns/xet", "tb/events.out.tfevents.1") == data
    assert server.file_storage("ns/xet", "tb/events.out.tfevents.1") == "xet"
    [entry] = res["tree"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    if entry["xet_hash"] == "(0.x: no such field)":  # huggingface_hub 0.x's RepoFile ignores the tree's xetHash
        [raw] = [f for f in json.loads(http(server, "GET", "/api/models/ns/xet/tree/main/tb")[2]) if f["type"] == "file"]
        entry["xet_hash"] = raw["xetHash"]
    assert len(entry["xet_hash"]) == 64
    stats = server.stats
    assert stats["lfs_uploads"] == 0 and stats["xet_files"] == 1 and stats["shards_received"] == 1
    assert len(data) * 0.5 < stats["xorb_bytes_received"] < len(data)  # the repeated tail compresses
    assert stats["xet_chunks"] >= len(data) // (128 * 1024)
    assert stats["requests"]["reconstruction"] >= 1 and stats["xet_bytes_served"] > 0


@pytest.mark.parametrize("same_home", [True, False], ids=["local-shard-cache", "global-dedup"])
def test_appended_file_sends_only_new_chunks(server: HubServer, tmp_path: Path, same_home: bool) -> None:
    old = os.urandom(2_000_000)
    new = old + os.urandom(300_000)
    (tmp_path / "v1").write_bytes(old)
    (tmp_path / "v2").write_bytes(new)
    code = (
        "api.upload_file(path_or_fileobj=os.path.join(os.environ['WORK'], '{}'), path_in_repo='ev.tfevents', repo_id='ns/grow')\n"
    )
    server.create_repo("ns/grow")
    run_client(server, tmp_path, code.format("v1"))
    first = server.stats["xorb_bytes_received"]
    # A fresh HF_HOME has no local shard cache: the client finds the old chunks through /v1/chunks.
    home = tmp_path if same_home else tmp_path / "other"
    home.mkdir(exist_ok=True)
    run_client(server, home, code.replace("os.environ['WORK']", repr(str(tmp_path))).format("v2"))
    second = server.stats["xorb_bytes_received"] - first
    assert len(old) <= first < len(old) * 1.01
    # Only the appended data (plus the re-cut last chunk of the old data, <= 128 KiB) goes on the wire.
    assert 300_000 <= second < 300_000 + 2 * 128 * 1024
    assert server.read_file("ns/grow", "ev.tfevents") == new
    assert server.stats["commits"] == 2 and server.stats["xet_files"] == 2


def test_commit_naming_unknown_content_is_refused(server: HubServer, tmp_path: Path) -> None:
    server.create_repo("ns/c")
    head = server.head("ns/c")
    bogus = hashlib.sha256(b"never uploaded").hexdigest()
    op = {"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": bogus, "size": 14}}
    status, headers, body = http(server, "POST", "/api/models/ns/c/commit/main", ndjson_commit(op))
    assert status == 400 and "does not exist" in json.loads(body)["error"]
    assert server.head("ns/c") == head and server.commit_count("ns/c") == 0

    # Content uploaded through Xet can be named by its sha256 in a later commit, e.g. under a new path.
    data = os.urandom(200_000)
    (tmp_path / "d.bin").write_bytes(data)
    upload = "api.upload_file(path_or_fileobj=os.environ['WORK'] + '/d.bin', path_in_repo='d.bin', repo_id='ns/c')\n"
    run_client(server, tmp_path, upload)
    sha = hashlib.sha256(data).hexdigest()
    op = {"key": "lfsFile", "value": {"path": "copy.bin", "algo": "sha256", "oid": sha, "size": len(data)}}
    assert http(server, "POST", "/api/models/ns/c/commit/main", ndjson_commit(op))[0] == 200
    assert server.read_file("ns/c", "copy.bin") == data and server.file_storage("ns/c", "copy.bin") == "xet"
    op["value"]["size"] = len(data) + 1
    assert http(server, "POST", "/api/models/ns/c/commit/main", ndjson_commit(op))[0] == 400


def _token(server: HubServer, kind: str, hub_token: str = GOOD) -> tuple[int, dict[str, Any]]:
    status, headers, body = http(server, "GET", f"/api/models/ns/t/xet-{kind}-token/main", token=hub_token)
    return status, {**json.loads(body), **{k.lower(): v for k, v in headers.items()}}


def _xorb(*chunks: tuple[int, bytes]) -> bytes:
    """Serialize (scheme, raw data) chunks the way the spec describes."""
    out = b""
    for scheme, raw in chunks:
        if scheme == 0:
            packed = raw
        elif scheme == 1:
            packed = lz4.frame.compress(raw)
        else:
            grouped = b"".join(raw[i::4] for i in range(4))
            packed = lz4.frame.compress(grouped)
        out += bytes([0]) + len(packed).to_bytes(3, "little") + bytes([scheme]) + len(raw).to_bytes(3, "little")
        out += packed
    return out


def _shard(files: list[tuple[str, list[tuple[str, int, int, int]], str | None]], xorbs: list[tuple[str, list[int]]]) -> bytes:
    """A shard without footer: files (hash, terms (xorb, start, end, unpacked), sha256) and xorb listings."""
    out = SHARD_HEADER_TAG + struct.pack("<QQ", 2, 0)
    for file_hash, terms, sha in files:
        flags = (1 << 30) if sha else 0
        out += struct.pack("<32sII8x", str_to_hash(file_hash), flags, len(terms))
        for xorb, start, end, unpacked in terms:
            out += struct.pack("<32sIIII", str_to_hash(xorb), 0, unpacked, start, end)
        if sha:
            out += struct.pack("<32s16x", str_to_hash(sha))
    out += b"\xff" * 32 + b"\0" * 16
    for xorb, sizes in xorbs:
        out += struct.pack("<32sIIII", str_to_hash(xorb), 0, len(sizes), sum(sizes), 0)
        for i, size in enumerate(sizes):
            out += struct.pack("<32sII8x", hashlib.sha256(b"%s/%d" % (xorb.encode(), i)).digest(), 0, size)
    return out + b"\xff" * 32 + b"\0" * 16


def test_cas_wire_formats_and_checks(server: HubServer) -> None:
    server.create_repo("ns/t")
    raw = [os.urandom(1000), bytes(range(256)) * 40, struct.pack("<2000f", *range(2000))]
    body = _xorb((0, raw[0]), (1, raw[1]), (2, raw[2]))
    chunks, offsets = parse_xorb(body)
    assert chunks == raw and offsets[-1] == len(body)
    h = "ab" * 32
    assert hash_to_str(str_to_hash(h)) == h and str_to_hash("0706050403020100" + "0" * 48)[:8] == bytes(range(8))

    # Tokens: a read-only Hub token gets read tokens only; the answer is JSON and headers.
    assert _token(server, "write", READ_ONLY)[0] == 403
    status, tok = _token(server, "write")
    assert status == 200 and tok["casUrl"].startswith(f"{server.endpoint}/cas/") and tok["casUrl"] == tok["x-xet-cas-url"]
    assert tok["accessToken"] == tok["x-xet-access-token"] and int(tok["x-xet-token-expiration"]) == tok["exp"]
    write = tok["accessToken"]
    read = _token(server, "read", READ_ONLY)[1]["accessToken"]
    assert http(server, "GET", "/api/models/ns/nope/xet-read-token/main")[0] == 404

    xorb = "12" * 32
    assert http(server, "POST", f"/cas/v1/xorbs/default/{xorb}", body, token=None)[0] == 401
    assert http(server, "POST", f"/cas/v1/xorbs/default/{xorb}", body, token=read)[0] == 403
    assert http(server, "POST", f"/cas/v1/xorbs/default/{'34' * 32}", b"\x07garbage", token=write)[0] == 400
    status, _, answer = http(server, "POST", f"/cas/v1/xorbs/default/{xorb}", body, token=write)
    assert status == 200 and json.loads(answer) == {"was_inserted": True}
    assert json.loads(http(server, "POST", f"/cas/v1/xorbs/default/{xorb}", body, token=write)[2])["was_inserted"] is False
    # Bytes on the wire: the refused garbage and the duplicate count too; chunks only once.
    assert server.stats["xorb_bytes_received"] == 2 * len(body) + 8 and server.stats["xet_chunks"] == 3

    content = b"".join(raw)
    sha = hashlib.sha256(content).hexdigest()
    sizes = [len(c) for c in raw]
    good = _shard([("cd" * 32, [(xorb, 0, 3, len(content))], sha)], [(xorb, sizes)])
    files, listed = parse_shard(good)
    assert files[0].sha256 == sha and listed[0].chunk_sizes == tuple(sizes)
    missing_xorb = _shard([("ce" * 32, [("99" * 32, 0, 1, 5)], None)], [])
    wrong_sha = _shard([("cf" * 32, [(xorb, 0, 3, len(content))], hashlib.sha256(b"x").hexdigest())], [])
    wrong_len = _shard([("d0" * 32, [(xorb, 0, 2, 999)], None)], [])
    for bad in (missing_xorb, wrong_sha, wrong_len, b"not a shard"):
        assert http(server, "POST", "/cas/v1/shards", bad, token=write)[0] == 400
    assert http(server, "POST", "/cas/v1/shards", good, token=read)[0] == 403
    status, _, answer = http(server, "POST", "/cas/v1/shards", good, token=write)
    assert status == 200 and json.loads(answer) == {"result": 1}
    assert server.stats["xet_files"] == 1

    # Reconstruction with a Range, reassembled as the download protocol says.
    status, _, answer = http(server, "GET", f"/cas/v1/reconstructions/{'cd' * 32}", token=read, Range="bytes=1500-12000")
    rec = json.loads(answer)
    # chunks are [0, 1000), [1000, 11240), [11240, 19240): the range needs chunks 1 and 2
    assert status == 200 and [t["range"] for t in rec["terms"]] == [{"start": 1, "end": 3}]
    assert rec["offset_into_first_range"] == 500
    got = b""
    for term in rec["terms"]:
        [fetch] = rec["fetch_info"][term["hash"]]
        url_range = f"bytes={fetch['url_range']['start']}-{fetch['url_range']['end']}"
        req = urllib.request.Request(fetch["url"], headers={"Range": url_range})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 206
            got += b"".join(parse_xorb(resp.read())[0])
    assert got[rec["offset_into_first_range"] :][: 12000 - 1500 + 1] == content[1500:12001]
    assert http(server, "GET", f"/cas/v1/reconstructions/{'cd' * 32}", token=read, Range=f"bytes={len(content)}-")[0] == 416
    assert http(server, "GET", f"/cas/v1/reconstructions/{'ef' * 32}", token=read)[0] == 404
    tampered = fetch["url"][len(server.endpoint) :].replace("sig=", "sig=0")
    assert http(server, "GET", tampered, token=None, Range="bytes=0-10")[0] == 403

    # The committed file is the verified content; global dedup finds the xorb of a listed chunk.
    op = {"key": "lfsFile", "value": {"path": "f.bin", "algo": "sha256", "oid": sha, "size": len(content)}}
    assert http(server, "POST", "/api/models/ns/t/commit/main", ndjson_commit(op))[0] == 200
    assert server.read_file("ns/t", "f.bin") == content
    chunk = hash_to_str(hashlib.sha256(b"%s/%d" % (xorb.encode(), 1)).digest())
    status, _, shard = http(server, "GET", f"/cas/v1/chunks/default-merkledb/{chunk}", token=read)
    assert status == 200 and shard.startswith(SHARD_HEADER_TAG)
    assert parse_shard(shard)[1][0].hash == xorb and len(shard) == len(dedup_shard(*_xorb_of(server, xorb)))
    assert http(server, "GET", f"/cas/v1/chunks/default-merkledb/{'00' * 32}", token=read)[0] == 404


def _xorb_of(server: HubServer, xorb: str) -> tuple[Any, tuple[str, ...], float]:
    return server._cas.xorbs[xorb], server._cas.xorb_chunk_hashes[xorb], 0.0


def test_lfs_batch_chooses_xet_only_when_offered(server: HubServer) -> None:
    # huggingface_hub 0.36 offers "xet" in the LFS batch call and uses Xet only if the answer chooses it.
    server.create_repo("ns/nego")
    oid, size = hashlib.sha256(b"x" * 10).hexdigest(), 10

    def batch(transfers: list[str]) -> dict[str, Any]:
        body = {"operation": "upload", "transfers": transfers, "objects": [{"oid": oid, "size": size}], "hash_algo": "sha256"}
        status, _, raw = http(server, "POST", "/ns/nego.git/info/lfs/objects/batch", json.dumps(body).encode())
        assert status == 200, raw
        return json.loads(raw)

    offered = batch(["basic", "multipart", "xet"])
    assert offered["transfer"] == "xet" and offered["objects"] == [{"oid": oid, "size": size}]  # no LFS actions
    legacy = batch(["basic", "multipart"])
    assert legacy["transfer"] == "basic" and "upload" in legacy["objects"][0]["actions"]


def test_env_without_xet_uses_legacy_lfs(server: HubServer, tmp_path: Path) -> None:
    assert server.env()["HF_HUB_DISABLE_XET"] == "0" and server.env(xet=False)["HF_HUB_DISABLE_XET"] == "1"
    server.create_repo("ns/legacy")
    upload = "api.upload_file(path_or_fileobj=os.urandom(50_000), path_in_repo='a.bin', repo_id='ns/legacy')\n"
    run_client(server, tmp_path, upload, xet=False)
    assert server.file_storage("ns/legacy", "a.bin") == "lfs"
    assert server.stats["lfs_uploads"] == 1 and server.stats["xorb_bytes_received"] == 0
    # A file stored through Xet is a plain download for a client without Xet.
    data = os.urandom(80_000)
    (tmp_path / "x.bin").write_bytes(data)
    run_client(server, tmp_path, upload.replace("os.urandom(50_000)", "os.environ['WORK'] + '/x.bin'").replace("a.bin", "x.bin"))
    assert server.file_storage("ns/legacy", "x.bin") == "xet"
    download = "out['data'] = open(hf_hub_download('ns/legacy', 'x.bin'), 'rb').read().hex()\n"
    assert bytes.fromhex(run_client(server, tmp_path, download, xet=False)["data"]) == data
    assert "reconstruction" not in server.stats["requests"]


def test_the_clients_expected_404s_are_logged_at_debug(server: HubServer, caplog) -> None:
    """hf_xet asks for chunks the server does not hold (global de-duplication) and for routes it does not
    implement as a matter of course: the 404s it gets are no news for the user's terminal."""
    server.create_repo("ns/t")
    write = _token(server, "write")[1]["accessToken"]
    caplog.set_level(logging.DEBUG, logger="hf_mpwriter.testing.hub_server")
    assert http(server, "GET", f"/cas/v1/chunks/default/{'ab' * 32}", token=write)[0] == 404
    assert http(server, "POST", f"/cas/v1/xorb-grants/default/{'cd' * 32}", token=write)[0] == 404
    answers = [r for r in caplog.records if "-> 404" in r.getMessage()]
    assert len(answers) == 2 and {r.levelno for r in answers} == {logging.DEBUG}, [r.getMessage() for r in answers]
    assert http(server, "GET", "/api/models/ns/nope/xet-read-token/main")[0] == 404  # a real miss: still said
    assert any(r.levelno == logging.INFO and "-> 404" in r.getMessage() for r in caplog.records)
