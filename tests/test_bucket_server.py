"""The test Hub's Storage Buckets, through the real huggingface_hub 2.x client (HfApi and HfFileSystem).

Clients run in subprocesses (see ``run_client`` in test_hub_server.py): huggingface_hub reads
HF_ENDPOINT at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hub_server import GOOD, READ_ONLY, http, run_client, start_client, wait_for

from hf_mpwriter.testing import HubServer


@pytest.fixture
def server() -> Iterator[HubServer]:
    with HubServer(tokens={GOOD}, read_only_tokens={READ_ONLY}) as srv:
        yield srv


def test_bucket_lifecycle_through_the_client(server: HubServer, tmp_path: Path) -> None:
    big = os.urandom(700_000)
    (tmp_path / "events.out.tfevents.1").write_bytes(big)
    res = run_client(
        server,
        tmp_path,
        """
        from huggingface_hub import HfFileSystem
        from huggingface_hub.errors import BucketNotFoundError
        W = os.environ["WORK"]
        out["url"] = api.create_bucket("ns/logs").url
        out["again"] = api.create_bucket("ns/logs", exist_ok=True).url
        api.batch_bucket_files("ns/logs", add=[(os.path.join(W, "events.out.tfevents.1"), "run1/tb/events.out.tfevents.1"),
                                               (b"hello\\n", "README.txt")])
        info = api.bucket_info("ns/logs")
        out["info"] = [info.id, info.size, info.total_files]
        out["top"] = sorted((e.type, e.path) for e in api.list_bucket_tree("ns/logs"))
        out["all"] = sorted(e.path for e in api.list_bucket_tree("ns/logs", recursive=True))
        out["sub"] = sorted(e.path for e in api.list_bucket_tree("ns/logs", prefix="run1", recursive=True))
        out["paths"] = {f.path: [f.size, len(f.xet_hash)] for f in api.get_bucket_paths_info("ns/logs", ["README.txt", "nope"])}
        fs = HfFileSystem()
        out["ls"] = sorted(fs.ls("buckets/ns/logs/run1/tb", detail=False))
        out["cat"] = fs.cat_file("hf://buckets/ns/logs/README.txt").decode()
        with fs.open("hf://buckets/ns/logs/run1/tb/events.out.tfevents.1", "rb") as f:
            f.seek(500_000)
            out["slice"] = f.read(8).hex()
        fs.get_file("hf://buckets/ns/logs/run1/tb/events.out.tfevents.1", os.path.join(W, "copy.bin"))  # Xet download
        with open(os.path.join(W, "copy.bin"), "rb") as a, open(os.path.join(W, "events.out.tfevents.1"), "rb") as b:
            out["copy_ok"] = a.read() == b.read()
        api.batch_bucket_files("ns/logs", delete=["README.txt"])
        out["after_delete"] = sorted(e.path for e in api.list_bucket_tree("ns/logs", recursive=True))
        api.delete_bucket("ns/logs")
        try:
            api.bucket_info("ns/logs")
        except BucketNotFoundError as e:
            out["gone"] = describe(e)
        """,
    )
    assert res["url"] == f"{server.endpoint}/buckets/ns/logs" == res["again"]
    assert res["info"] == ["ns/logs", len(big) + 6, 2]
    assert res["top"] == [["directory", "run1"], ["file", "README.txt"]]
    assert res["all"] == ["README.txt", "run1/tb/events.out.tfevents.1"] and res["sub"] == res["all"][1:]
    assert res["paths"] == {"README.txt": [6, 64]}
    assert res["ls"] == ["buckets/ns/logs/run1/tb/events.out.tfevents.1"]
    assert res["cat"] == "hello\n" and bytes.fromhex(res["slice"]) == big[500_000:500_008] and res["copy_ok"]
    assert res["after_delete"] == ["run1/tb/events.out.tfevents.1"]
    assert res["gone"]["status"] == 404 and not server.bucket_exists("ns/logs")
    stats = server.stats
    assert stats["bucket_writes"] == 2 and stats["bucket_ops"] == 3 and stats["commits"] == 0
    assert stats["xet_files"] == 2 and stats["xorb_bytes_received"] >= len(big)
    assert stats["xet_bytes_served"] >= len(big)  # get_file downloaded through the CAS


def test_bucket_inspection_and_failed_operations(server: HubServer, tmp_path: Path) -> None:
    server.create_bucket("ns/b")
    run_client(server, tmp_path, "api.batch_bucket_files('ns/b', add=[(b'x' * 100, 'a/x.txt'), (b'y', 'y.txt')])\n")
    assert server.bucket_files("ns/b") == {"a/x.txt": b"x" * 100, "y.txt": b"y"}
    assert server.read_bucket_file("ns/b", "y.txt") == b"y"
    with pytest.raises(KeyError):
        server.read_bucket_file("ns/b", "nope")
    # Naming content the CAS does not hold fails that operation (422 when all of them fail).
    unknown = json.dumps({"type": "addFile", "path": "z.bin", "xetHash": "00" * 32, "mtime": 0}).encode()
    status, _, body = http(server, "POST", "/api/buckets/ns/b/batch", unknown, **{"Content-Type": "application/x-ndjson"})
    assert status == 422 and json.loads(body)["failed"][0]["path"] == "z.bin"
    delete = json.dumps({"type": "deleteFile", "path": "y.txt"}).encode()
    assert http(server, "POST", "/api/buckets/ns/b/batch", unknown + b"\n" + delete)[0] == 200
    assert sorted(server.bucket_files("ns/b")) == ["a/x.txt"]
    # Read-only tokens read but do not write; missing buckets are 404 RepoNotFound.
    assert http(server, "GET", "/api/buckets/ns/b", token=READ_ONLY)[0] == 200
    assert http(server, "POST", "/api/buckets/ns/b/batch", delete, token=READ_ONLY)[0] == 403
    assert http(server, "GET", "/api/buckets/ns/b/xet-write-token", token=READ_ONLY)[0] == 403
    status, headers, _ = http(server, "GET", "/api/buckets/ns/missing")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"


def test_held_bucket_batch_applies_after_its_client_is_gone(server: HubServer, tmp_path: Path) -> None:
    server.create_bucket("ns/held")
    hold = server.inject("hold", route="bucket_batch", seconds=1.0)
    proc = start_client(server, tmp_path, "api.batch_bucket_files('ns/held', add=[(b'late', 'late.txt')])\n")
    try:
        wait_for(lambda: hold.hits, 30, "the batch to reach the server")
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert server.bucket_files("ns/held") == {}  # still held
    wait_for(lambda: hold.done, 30, "the held batch to be applied")
    assert hold.outcomes == [200] and server.bucket_files("ns/held") == {"late.txt": b"late"}
    wait_for(lambda: server.active_requests == 0, 10, "the server to be idle")


def test_bucket_batch_names_only_content_uploaded_to_the_bucket(server: HubServer, tmp_path: Path) -> None:
    """``addFile`` may name a Xet hash only if it was uploaded to this bucket; ``copyFile`` one its source holds.

    Knowing a hash gives no access to another repository's or bucket's content (the client copies
    with ``copyFile``, naming the source, for that). A committer that names a hash nobody uploaded
    to the bucket gets the client's BucketBatchError here, and nothing of that operation applies.
    """
    server.create_bucket("ns/b")
    server.create_bucket("ns/other")
    server.create_repo("ns/repo")
    res = run_client(
        server,
        tmp_path,
        """
        from huggingface_hub._buckets import _BucketAddFile
        from huggingface_hub.errors import BucketBatchError
        def named(xet_hash, dest):  # what a committer sends for another process's upload: a hash, no upload
            return _BucketAddFile(source=b"", destination=dest, xet_hash=xet_hash)
        def attempt(name, **ops):
            try:
                api.batch_bucket_files("ns/b", **ops)
                out[name] = "ok"
            except BucketBatchError as e:
                out[name] = {"status": e.response.status_code, "failures": e.failures, "message": str(e)}
        api.batch_bucket_files("ns/b", add=[(os.urandom(20_000), "mine.bin")])  # the normal upload
        api.batch_bucket_files("ns/other", add=[(os.urandom(20_000), "o.bin")])
        api.upload_file(path_or_fileobj=os.urandom(20_000), path_in_repo="r.bin", repo_id="ns/repo")
        [mine] = api.get_bucket_paths_info("ns/b", ["mine.bin"])
        [other] = api.get_bucket_paths_info("ns/other", ["o.bin"])
        [in_repo] = [f for f in api.list_repo_tree("ns/repo") if f.path == "r.bin"]
        out["hashes"] = [mine.xet_hash, other.xet_hash, in_repo.xet_hash]
        attempt("unknown", add=[named("00" * 32, "u.bin")])
        attempt("foreign", add=[named(other.xet_hash, "f1.bin"), named(in_repo.xet_hash, "f2.bin"),
                                named(mine.xet_hash, "again.bin")])
        attempt("copy", copy=[("bucket", "ns/other", other.xet_hash, "c1.bin"), ("model", "ns/repo", in_repo.xet_hash, "c2.bin")])
        attempt("bad_copy", copy=[("bucket", "ns/other", in_repo.xet_hash, "c3.bin")])
        """,
    )
    mine, other, in_repo = res["hashes"]
    assert len({mine, other, in_repo}) == 3 and all(len(h) == 64 for h in res["hashes"])
    assert res["unknown"]["status"] == 422 and [f["path"] for f in res["unknown"]["failures"]] == ["u.bin"]
    assert "Failed to apply 1 out of 1 operation(s) on bucket 'ns/b'" in res["unknown"]["message"]
    # Hashes the CAS holds, for another bucket or a repository: refused in a partial failure (200).
    assert res["foreign"] != "ok", "another bucket's and a repository's hashes were accepted"
    assert res["foreign"]["status"] == 200 and [f["path"] for f in res["foreign"]["failures"]] == ["f1.bin", "f2.bin"]
    assert all("not found in bucket ns/b" in f["error"] for f in res["foreign"]["failures"])
    # The same hashes copied from where they live are accepted; from elsewhere they are not.
    assert res["copy"] == "ok" and res["bad_copy"]["status"] == 422
    files = server.bucket_files("ns/b")
    assert sorted(files) == ["again.bin", "c1.bin", "c2.bin", "mine.bin"]
    assert files["again.bin"] == files["mine.bin"] and files["c1.bin"] == server.read_bucket_file("ns/other", "o.bin")
    assert files["c2.bin"] == server.read_file("ns/repo", "r.bin")


def test_a_bucket_folder_of_thousands_is_listed_page_by_page(server: HubServer, tmp_path: Path) -> None:
    """2,500 rank folders and a file in one bucket folder: the real client's ``list_bucket_tree`` (flat and
    recursive) and ``HfFileSystem.ls`` get every entry once, over several pages (``Link`` to the next, a cursor
    that is the last path served), as for a repository's tree."""
    from hf_mpwriter.testing.storage import BucketFile

    server.create_bucket("ns/many")
    with server._lock:  # (test setup: 2,501 files without 2,501 uploads)
        files = server._buckets["ns/many"].files
        files.update({f"logs/rank-{r:04d}/events": BucketFile("0" * 64, 1, 1.7e9, 1.7e9) for r in range(2500)})
        files["logs/top.txt"] = BucketFile("0" * 64, 1, 1.7e9, 1.7e9)
    status, headers, body = http(server, "GET", "/api/buckets/ns/many/tree/logs")
    assert status == 200 and len(json.loads(body)) == 1000 and 'rel="next"' in headers["Link"]
    server.reset_stats()
    res = run_client(server, tmp_path, """
        from huggingface_hub import HfFileSystem
        out["flat"] = [(e.type, e.path) for e in api.list_bucket_tree("ns/many", prefix="logs")]
        out["deep"] = [e.path for e in api.list_bucket_tree("ns/many", prefix="logs", recursive=True)]
        out["fs"] = HfFileSystem().ls("buckets/ns/many/logs", detail=False)
    """)
    ranks = [f"logs/rank-{r:04d}" for r in range(2500)]
    assert res["flat"] == [["directory", p] for p in ranks] + [["file", "logs/top.txt"]]
    assert res["deep"] == [*(f"{p}/events" for p in ranks), "logs/top.txt"]
    assert sorted(res["fs"]) == sorted(f"buckets/ns/many/{p}" for p in [*ranks, "logs/top.txt"])
    assert server.stats["requests"]["bucket_tree"] == 3 + 3 + 3, server.stats["requests"]  # 2,501 entries: 3 pages each
