"""Tests of the Hub-compatible test server against the real huggingface_hub client.

huggingface_hub reads HF_ENDPOINT at import time, so each client runs in a fresh subprocess with
``server.env()``. A client script prints one ``RESULT <json>`` line; assertions are made on that
and on the server's stored state.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from hf_mpwriter.testing import HubServer

GOOD, READ_ONLY = "hf_good", "hf_read"

_PRELUDE = """
import json, os, time
import httpx2
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
        "headers": dict(resp.headers) if resp is not None else {},
        "message": str(exc),
    }
"""


@pytest.fixture
def server() -> Iterator[HubServer]:
    with HubServer(tokens={GOOD}, read_only_tokens={READ_ONLY}) as srv:
        yield srv


def run_client(server: HubServer, tmp_path: Path, code: str, token: Optional[str] = GOOD) -> dict[str, Any]:
    """Run `code` (after _PRELUDE) in a fresh interpreter pointed at `server`; return its `out`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(server.env(), HF_HOME=str(tmp_path / "hf_home"), WORK=str(tmp_path))
    if token is not None:
        env["HF_TOKEN"] = token
    script = _PRELUDE + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_upload_list_download_squash(server: HubServer, tmp_path: Path) -> None:
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
    assert res["missing"]["type"] == "RemoteEntryNotFoundError"
    assert res["after_squash"] == 1
    assert server.list_files("ns/run") == [".gitattributes", "logs/a.txt", "logs/big.bin"]
    assert server.read_file("ns/run", "logs/big.bin") == big
    assert len(server.commits("ns/run")) == 1
    assert server.read_file("ns/data", "d.bin", repo_type="dataset") == big
    stats = server.stats
    assert stats["lfs_uploads"] == 2 and stats["lfs_bytes_received"] == 2 * len(big)
    assert stats["bytes_received"] > 2 * len(big)
    assert stats["squashes"] == 1 and stats["commits_per_repo"] == {"model:ns/run": 1, "dataset:ns/data": 1}


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
    dropped_put = server.inject("drop", route="lfs_upload")  # retried by the client's http_backoff
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
        out["lfs"] = api.upload_file(path_or_fileobj=os.urandom(4096), path_in_repo="blob.bin", repo_id="ns/f").oid
        """,
    )
    assert res["s503"]["hf"] and res["s503"]["status"] == 503
    assert res["s429"]["status"] == 429 and res["s429"]["headers"]["retry-after"] == "7"
    assert "rate limit" in res["s429"]["message"]
    assert not res["lost"]["hf"] and res["lost"]["type"] == "RemoteProtocolError"
    assert not res["drop"]["hf"] and res["drop"]["type"] == "RemoteProtocolError"
    assert res["latency"]["ok"] and res["latency"]["elapsed"] >= 0.3 and latency.hits == 1
    assert dropped_put.hits == 1 and res["lfs"] == server.head("ns/f")
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


def test_inject_validation_and_reset(server: HubServer) -> None:
    with pytest.raises(ValueError):
        server.inject("explode")
    with pytest.raises(ValueError):
        server.inject("status", route="nowhere")
    with pytest.raises(ValueError):
        server.inject("latency")
    server.inject("status", route="any", times=None, status=500)
    server.clear_faults()
    server.reset_stats()
    assert server.stats["commits"] == 0 and server.stats["requests"] == {}
