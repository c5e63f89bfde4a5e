"""Tests of the Hub-compatible test server against the real huggingface_hub client.

huggingface_hub reads HF_ENDPOINT at import time, so each client runs in a fresh subprocess with
``server.env()``. A client script prints one ``RESULT <json>`` line; assertions are made on that
and on the server's stored state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from hf_mpwriter.compat import hub_version
from hf_mpwriter.testing import HubServer

GOOD, READ_ONLY = "hf_good", "hf_read"

_PRELUDE = """
import json, os, time
from huggingface_hub import HfApi, CommitOperationAdd, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
api = HfApi()
out = {}
def describe(exc):
    resp = getattr(exc, "response", None)
    return {
        "type": type(exc).__name__,
        "hf": isinstance(exc, HfHubHTTPError),
        "status": resp.status_code if resp is not None else None,
        "headers": {k.lower(): v for k, v in resp.headers.items()} if resp is not None else {},  # 0.x keeps the case
        "message": str(exc),
    }
"""


@pytest.fixture
def server() -> Iterator[HubServer]:
    with HubServer(tokens={GOOD}, read_only_tokens={READ_ONLY}) as srv:
        yield srv


def run_client(server: HubServer, tmp_path: Path, code: str, token: str | None = GOOD, xet: bool = True) -> dict[str, Any]:
    """Run `code` (after _PRELUDE) in a fresh interpreter pointed at `server`; return its `out`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(server.env(xet=xet), HF_HOME=str(tmp_path / "hf_home"), WORK=str(tmp_path))
    if token is not None:
        env["HF_TOKEN"] = token
    script = _PRELUDE + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def http(
    server: HubServer, method: str, path: str, body: bytes | None = None, token: str | None = GOOD, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One raw request to the server from this process: (status, headers, body)."""
    req = urllib.request.Request(server.endpoint + path, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for key, value in headers.items():
        req.add_header(key.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def ndjson_commit(*ops: dict[str, Any], summary: str = "raw", parent: str | None = None) -> bytes:
    header: dict[str, Any] = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    lines = [{"key": "header", "value": header}, *ops]
    return b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def start_client(server: HubServer, tmp_path: Path, code: str, token: str = GOOD) -> subprocess.Popen[str]:
    """Like run_client, without waiting: the caller kills it or reads its RESULT line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(server.env(), HF_HOME=str(tmp_path / "hf_home"), WORK=str(tmp_path), HF_TOKEN=token)
    script = _PRELUDE + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(out))\n"
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_legacy_lfs_upload_list_download_squash(server: HubServer, tmp_path: Path) -> None:
    """The legacy path (HF_HUB_DISABLE_XET=1): LFS batch + PUT, plain downloads."""
    big = os.urandom(2 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(big)
    res = run_client(
        server,
        tmp_path,
        """
        W = os.environ["WORK"]
        out["url"] = str(api.create_repo("ns/run"))
        out["url2"] = str(api.create_repo("ns/run", exist_ok=True))
        try:
            api.create_repo("ns/run")
        except HfHubHTTPError as e:
            out["dup"] = describe(e)
        def ops():
            return [CommitOperationAdd("logs/a.txt", b"hello\\n"),
                    CommitOperationAdd("logs/big.bin", os.path.join(W, "big.bin"))]
        out["c1"] = api.create_commit("ns/run", ops(), commit_message="first").oid
        out["c2"] = api.create_commit("ns/run", ops(), commit_message="same again").oid
        out["tree"] = [
            {"path": f.path, "lfs": getattr(f, "lfs", None) and dict(f.lfs), "blob_id": getattr(f, "blob_id", None)}
            for f in api.list_repo_tree("ns/run", recursive=True)
        ]
        out["paths"] = [
            {"path": f.path, "lfs": getattr(f, "lfs", None) and dict(f.lfs)}
            for f in api.get_paths_info("ns/run", ["logs/a.txt", "logs/big.bin", "logs", "missing"])
        ]
        out["a"] = open(hf_hub_download("ns/run", "logs/a.txt"), "rb").read().decode()
        big = open(os.path.join(W, "big.bin"), "rb").read()
        out["big_ok"] = open(hf_hub_download("ns/run", "logs/big.bin"), "rb").read() == big
        try:
            hf_hub_download("ns/run", "nope.txt")
        except Exception as e:
            out["missing"] = describe(e)
        api.super_squash_history("ns/run")
        out["after_squash"] = len(api.list_repo_commits("ns/run"))
        api.create_repo("ns/data", repo_type="dataset")
        api.upload_file(path_or_fileobj=os.path.join(W, "big.bin"), path_in_repo="d.bin", repo_id="ns/data",
                        repo_type="dataset")
        out["ds_ok"] = open(hf_hub_download("ns/data", "d.bin", repo_type="dataset"), "rb").read() == big
        """,
        xet=False,
    )
    assert res["url"].endswith("/ns/run") and res["url2"] == res["url"]
    assert res["dup"]["status"] == 409
    # The identical second commit is dropped by the client: same oid, no new commit on the server.
    assert res["c1"] == res["c2"]
    assert server.commit_count("ns/run") == 1
    tree = {t["path"]: t for t in res["tree"]}
    sha = hashlib.sha256(big).hexdigest()
    assert tree["logs/big.bin"]["lfs"]["sha256"] == sha
    assert tree["logs/big.bin"]["lfs"]["size"] == len(big)
    assert tree["logs/a.txt"]["lfs"] is None
    paths = {p["path"]: p for p in res["paths"]}
    assert set(paths) == {"logs/a.txt", "logs/big.bin", "logs"}
    assert paths["logs/big.bin"]["lfs"]["sha256"] == sha
    assert res["a"] == "hello\n" and res["big_ok"] and res["ds_ok"]
    assert res["missing"]["type"] in ("RemoteEntryNotFoundError", "EntryNotFoundError")  # 1.x+, 0.x
    assert res["after_squash"] == 1
    assert server.list_files("ns/run") == [".gitattributes", "logs/a.txt", "logs/big.bin"]
    assert server.read_file("ns/run", "logs/big.bin") == big
    assert len(server.commits("ns/run")) == 1
    assert server.read_file("ns/data", "d.bin", repo_type="dataset") == big
    stats = server.stats
    assert stats["lfs_uploads"] == 2 and stats["lfs_bytes_received"] == 2 * len(big)
    assert stats["bytes_received"] > 2 * len(big)
    assert stats["squashes"] == 1 and stats["commits_per_repo"] == {"model:ns/run": 1, "dataset:ns/data": 1}


@pytest.mark.parametrize("xet", [True, False], ids=["xet", "legacy-lfs"])
def test_commit_naming_content_not_uploaded_to_the_repo_is_refused(server: HubServer, tmp_path: Path, xet: bool) -> None:
    """A commit may name (by sha256) only content uploaded to that repository, as on the Hub.

    The Hub answers 400 "Your push was rejected because an LFS pointer pointed to a file that does
    not exist ... Offending file: - <path>" (huggingface_hub issue #3829, a re-created repository),
    which the client raises as BadRequestError. A design whose committer names content another
    process has not uploaded (yet, or to this repository) must fail here as it would there. The
    client's own path for that: an addition marked uploaded, which ``create_commit`` does not upload.
    """
    res = run_client(
        server,
        tmp_path,
        """
        api.create_repo("ns/run")
        api.create_repo("ns/other")
        def claimed(path, content):  # what a committer builds from another process's report: no upload
            op = CommitOperationAdd(path, content)
            op._upload_mode, op._is_uploaded = "lfs", True
            return op
        def attempt(name, repo, ops):
            try:
                out[name] = api.create_commit(repo, ops, commit_message=name).oid
            except HfHubHTTPError as e:
                out[name] = describe(e)
        never, elsewhere, mine = os.urandom(30_000), os.urandom(30_000), os.urandom(30_000)
        import hashlib
        out["sha_elsewhere"] = hashlib.sha256(elsewhere).hexdigest()
        out["normal"] = api.upload_file(path_or_fileobj=mine, path_in_repo="mine.bin", repo_id="ns/run").oid
        api.upload_file(path_or_fileobj=elsewhere, path_in_repo="e.bin", repo_id="ns/other")
        attempt("refused", "ns/run", [claimed("never.bin", never), claimed("elsewhere.bin", elsewhere),
                                      CommitOperationAdd("ok.txt", b"ok")])
        attempt("this_repo", "ns/run", [claimed("again.bin", mine)])
        attempt("its_repo", "ns/other", [claimed("e2.bin", elsewhere)])
        api.delete_repo("ns/other")
        api.create_repo("ns/other")
        attempt("recreated", "ns/other", [claimed("e3.bin", elsewhere)])
        out["uploaded_here"] = api.upload_file(path_or_fileobj=elsewhere, path_in_repo="e.bin", repo_id="ns/run").oid
        """,
        xet=xet,
    )
    # The uploads went the way asked, and the content named in "refused" exists on this Hub (in ns/other).
    assert server.file_storage("ns/run", "mine.bin") == ("xet" if xet else "lfs")
    assert all(isinstance(res[k], str) and len(res[k]) == 40 for k in ("normal", "its_repo", "this_repo")), res
    refused = res["refused"]
    assert refused["type"] == "BadRequestError" and refused["status"] == 400, refused
    assert "Bad request for commit endpoint" in refused["message"]
    assert "LFS pointer pointed to a file that does not exist" in refused["message"]
    assert "Offending file: - never.bin - elsewhere.bin" in refused["message"]
    assert isinstance(res["recreated"], dict), f"commit applied in a re-created repository: {res['recreated']}"
    assert res["recreated"]["type"] == "BadRequestError" and "Offending file: - e3.bin" in res["recreated"]["message"]
    # Nothing of a refused commit applies; content uploaded to the repository itself is accepted.
    assert server.list_files("ns/run") == [".gitattributes", "again.bin", "e.bin", "mine.bin"]
    assert server.list_files("ns/other") == [".gitattributes"]
    assert res["uploaded_here"] == server.head("ns/run")
    assert hashlib.sha256(server.read_file("ns/run", "e.bin")).hexdigest() == res["sha_elsewhere"]
    assert server.read_file("ns/run", "again.bin") == server.read_file("ns/run", "mine.bin")


def test_stale_parent_commit_gets_412(server: HubServer, tmp_path: Path) -> None:
    server.create_repo("ns/p")
    old = server.head("ns/p")
    res = run_client(
        server,
        tmp_path,
        f"""
        api.upload_file(path_or_fileobj=b"1", path_in_repo="x.txt", repo_id="ns/p")
        try:
            api.create_commit("ns/p", [CommitOperationAdd("y.txt", b"2")], commit_message="m", parent_commit="{old}")
        except HfHubHTTPError as e:
            out["err"] = describe(e)
        out["ok"] = api.create_commit("ns/p", [CommitOperationAdd("y.txt", b"2")], commit_message="m",
                                      parent_commit=api.model_info("ns/p").sha).oid
        """,
    )
    assert res["err"]["status"] == 412
    assert res["ok"] == server.head("ns/p")
    assert server.list_files("ns/p") == [".gitattributes", "x.txt", "y.txt"]


def test_auth_errors(server: HubServer, tmp_path: Path) -> None:
    server.create_repo("ns/auth")
    code = """
    for name, fn in [("create", lambda: api.create_repo("ns/new")),
                     ("info", lambda: api.model_info("ns/auth")),
                     ("commit", lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="ns/auth"))]:
        try:
            fn()
            out[name] = "ok"
        except Exception as e:
            out[name] = describe(e)
    """
    bad = run_client(server, tmp_path, code, token="hf_bad")
    assert bad["create"]["hf"] and bad["create"]["status"] == 401
    assert "Invalid credentials" in bad["create"]["message"]
    missing = run_client(server, tmp_path, code, token=None)
    assert missing["info"]["type"] == "RepositoryNotFoundError" and missing["info"]["status"] == 401
    ro = run_client(server, tmp_path, code, token=READ_ONLY)
    assert ro["info"] == "ok"
    assert ro["create"]["status"] == 403 and ro["commit"]["status"] == 403
    assert not server.repo_exists("ns/new") and server.list_files("ns/auth") == [".gitattributes"]


def test_faults(server: HubServer, tmp_path: Path) -> None:
    server.create_repo("ns/f")
    # Faults on one route are consumed in injection order, one per matching request.
    server.inject("status", route="commit", status=503)
    server.inject("rate_limit", route="commit", retry_after=7)
    server.inject("lost_response", route="commit")
    server.inject("drop", route="commit")
    latency = server.inject("latency", route="commit", seconds=0.3)
    dropped_put = server.inject("drop", route="lfs_upload")  # 0.x and 2.x retry it (http_backoff), 1.8 raises
    res = run_client(
        server,
        tmp_path,
        """
        for i, name in enumerate(["s503", "s429", "lost", "drop", "latency"]):
            t0 = time.monotonic()
            try:
                api.create_commit("ns/f", [CommitOperationAdd(f"{name}.txt", name.encode())], commit_message=name)
                out[name] = {"ok": True, "elapsed": time.monotonic() - t0}
            except Exception as e:
                out[name] = describe(e)
        for attempt in range(2):  # huggingface_hub 1.8 (the newest on Python 3.9) does not retry a dropped PUT
            try:
                out["lfs"] = api.upload_file(path_or_fileobj=os.urandom(4096), path_in_repo="blob.bin", repo_id="ns/f").oid
                break
            except Exception as e:
                out["lfs_error"] = describe(e)
        """,
        xet=False,
    )
    assert res["s503"]["hf"] and res["s503"]["status"] == 503
    assert res["s429"]["status"] == 429 and res["s429"]["headers"]["retry-after"] == "7"
    assert re.search("rate limit|too many requests", res["s429"]["message"], re.IGNORECASE)  # 1.2+ names it
    # httpx (1.x+) and requests (0.x) name a connection closed without an answer differently.
    assert not res["lost"]["hf"] and res["lost"]["type"] in ("RemoteProtocolError", "ConnectionError")
    assert not res["drop"]["hf"] and res["drop"]["type"] in ("RemoteProtocolError", "ConnectionError")
    assert res["latency"]["ok"] and res["latency"]["elapsed"] >= 0.3 and latency.hits == 1
    assert dropped_put.hits == 1 and res["lfs"] == server.head("ns/f")
    assert "lfs_error" not in res or (1, 0) <= hub_version() < (2, 0), res["lfs_error"]  # 0.x, 2.x: retried
    # lost_response applied its commit; 503, 429 and drop did not.
    assert server.list_files("ns/f") == [".gitattributes", "blob.bin", "latency.txt", "lost.txt"]
    assert server.stats["faults_triggered"] == {
        "status": 1, "rate_limit": 1, "lost_response": 1, "drop": 2, "latency": 1
    }  # fmt: skip


def test_down_stop_start_keep_data(server: HubServer, tmp_path: Path) -> None:
    server.create_repo("ns/s")
    server.set_down(True)
    down = run_client(
        server,
        tmp_path,
        """
        try:
            api.model_info("ns/s")
        except Exception as e:
            out["e"] = describe(e)
        """,
    )
    assert down["e"]["status"] == 503
    server.set_down(False)
    port = server.port
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.start()
    assert server.port == port
    res = run_client(server, tmp_path, "out['files'] = api.list_repo_files('ns/s')\n")
    assert res["files"] == [".gitattributes"]


def test_a_keep_alive_connection_is_counted_once_and_shut_down_by_stop(server: HubServer) -> None:
    """What the HTTP layer tells the server (connection opened / closed) is what stats and stop() use."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/api/whoami-v2", headers={"Authorization": f"Bearer {GOOD}"})
        assert conn.getresponse().read() and conn.sock is not None  # answered, connection kept open
    stats = server.stats
    assert stats["requests"]["whoami"] == 3 and stats["connections"] == 1, stats
    server.stop()
    conn.sock.settimeout(2)
    assert conn.sock.recv(1) == b""  # the server shut the idle keep-alive connection down, unasked
    conn.close()


def test_inject_validation_and_reset(server: HubServer) -> None:
    with pytest.raises(ValueError):
        server.inject("explode")
    with pytest.raises(ValueError):
        server.inject("status", route="nowhere")
    with pytest.raises(ValueError):
        server.inject("latency")
    with pytest.raises(ValueError):
        server.inject("hold", route="commit")  # needs seconds
    with pytest.raises(ValueError):
        server.inject("hold", route="tree", seconds=1)  # only writes can be held
    server.inject("status", route="any", times=None, status=500)
    server.clear_faults()
    server.reset_stats()
    assert server.stats["commits"] == 0 and server.stats["requests"] == {}


_HELD_COMMIT = """
try:
    out["oid"] = api.create_commit("ns/h", [CommitOperationAdd("{path}", b"{path}")], commit_message="{path}",
                                   parent_commit="{parent}").oid
except HfHubHTTPError as e:
    out["err"] = describe(e)
"""


def test_held_commit_applies_after_its_client_is_gone(server: HubServer, tmp_path: Path) -> None:
    """A zombie commit: the client is killed while the Hub works on its commit, which lands anyway."""
    server.create_repo("ns/h")
    hold = server.inject("hold", route="commit", seconds=1.0)
    proc = start_client(server, tmp_path, _HELD_COMMIT.format(path="zombie.txt", parent=server.head("ns/h")))
    try:
        wait_for(lambda: hold.hits, 30, "the commit to reach the server")
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert server.list_files("ns/h") == [".gitattributes"] and server.active_requests == 1  # still held
    wait_for(lambda: hold.done, 30, "the held commit to be applied")
    assert hold.outcomes == [200]
    assert server.read_file("ns/h", "zombie.txt") == b"zombie.txt" and server.commit_count("ns/h") == 1
    wait_for(lambda: server.active_requests == 0, 10, "the server to be idle")


def test_held_commit_with_a_stale_parent_is_not_applied(server: HubServer, tmp_path: Path) -> None:
    """The parent is checked when the held commit applies, not when it arrived: a newer commit wins."""
    server.create_repo("ns/h")
    parent = server.head("ns/h")
    hold = server.inject("hold", route="commit", seconds=1.0)
    proc = start_client(server, tmp_path, _HELD_COMMIT.format(path="old.txt", parent=parent))
    try:
        wait_for(lambda: hold.hits, 30, "the commit to reach the server")
        # Meanwhile another writer commits (the hold fault is used up: this one is not held).
        op = {"key": "file", "value": {"path": "new.txt", "content": "bmV3", "encoding": "base64"}}
        assert http(server, "POST", "/api/models/ns/h/commit/main", ndjson_commit(op, parent=parent))[0] == 200
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert hold.done == 1 and hold.outcomes == [412]
    res = json.loads([ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT ") :])
    assert res["err"]["status"] == 412, stderr
    assert server.list_files("ns/h") == [".gitattributes", "new.txt"] and server.commit_count("ns/h") == 1
    assert server.stats["faults_triggered"] == {"hold": 1}


def test_a_folder_of_thousands_is_listed_page_by_page_as_the_hub_does(server: HubServer, tmp_path: Path) -> None:
    """3,000 entries in one folder (and one more folder deeper): the real client's ``list_repo_tree`` and
    ``HfFileSystem.ls`` each get every entry, over several pages the server served (a ``Link`` to the next)."""
    server.create_repo("ns/many")
    ops = [{"key": "file", "value": {"path": f"logs/rank-{r:04d}/events", "content": "eA==", "encoding": "base64"}}
           for r in range(3000)]
    ops.append({"key": "file", "value": {"path": "logs/top.txt", "content": "eA==", "encoding": "base64"}})
    assert http(server, "POST", "/api/models/ns/many/commit/main", ndjson_commit(*ops))[0] == 200
    status, headers, body = http(server, "GET", "/api/models/ns/many/tree/main/logs")
    assert status == 200 and len(json.loads(body)) == 1000 and 'rel="next"' in headers["Link"]  # the Hub's page size
    server.reset_stats()
    res = run_client(server, tmp_path, """
        from huggingface_hub import HfFileSystem
        out["api"] = [(f.path, type(f).__name__) for f in api.list_repo_tree("ns/many", "logs")]
        out["fs"] = HfFileSystem().ls("ns/many/logs", detail=False)
        out["deep"] = sorted(f.path for f in api.list_repo_tree("ns/many", "logs", recursive=True))
    """)
    ranks = [f"logs/rank-{r:04d}" for r in range(3000)]
    assert res["api"] == [[p, "RepoFolder"] for p in ranks] + [["logs/top.txt", "RepoFile"]]
    assert sorted(res["fs"]) == sorted(f"ns/many/{p}" for p in [*ranks, "logs/top.txt"])
    assert res["deep"] == sorted([*ranks, *(f"{p}/events" for p in ranks), "logs/top.txt"])
    # 3,001 entries: 4 pages for each flat listing, 7 for the recursive one (which the client did not split)
    assert server.stats["requests"]["tree"] == 4 + 4 + 7, server.stats["requests"]
