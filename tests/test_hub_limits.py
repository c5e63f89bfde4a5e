"""The test Hub enforces the Hub's limits (``hf_mpwriter.testing.limits``), seen through the real client.

Each limit is set small, a real ``huggingface_hub.HfApi`` (``endpoint=hub.endpoint``, in this process:
nothing here depends on what the client reads at import) runs into it, and the tests check what the
client raised, what it parsed from the answer, that nothing was applied, and the server's count of
refusals (``stats["limits_hit"]``): a design that overspends fails here, not on huggingface.co.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import BadRequestError, HfHubHTTPError

from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
from hf_mpwriter.testing import HubLimits, HubServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_requests import api_requests  # noqa: E402

TOKEN = "hf_limits"
REPO = "ns/run"


@pytest.fixture
def start() -> Iterator[Any]:
    """``start(**limits)``: a test Hub enforcing ``HubLimits(**limits)``, stopped after the test."""
    servers: list[HubServer] = []

    def _start(**limits: Any) -> HubServer:
        servers.append(HubServer(tokens={TOKEN}, limits=HubLimits(**limits)).start())
        return servers[-1]

    yield _start
    for server in servers:
        server.stop()


def _api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


def _adds(folder: str, names: range) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(f"{folder}/{i}.txt", f"file {i}\n".encode()) for i in names]


def _parse_ratelimit(headers: Any) -> Any:
    """huggingface_hub's own reading of the rate-limit headers (the client that waits on them)."""
    utils = pytest.importorskip("huggingface_hub.utils")
    if not hasattr(utils, "parse_ratelimit_headers"):
        pytest.skip(f"huggingface_hub {hub_version()} does not parse RateLimit headers")
    return utils.parse_ratelimit_headers(headers)


def test_a_commit_that_overfills_a_folder_is_refused_as_the_hub_refuses_it(start) -> None:
    """At most ``entries_per_folder`` files and sub-folders per folder: a commit past it gets the Hub's
    400 (``BadRequestError``, its words), applies nothing; commits within it, replacements and a delete
    that makes room pass."""
    hub = start(entries_per_folder=5)
    hub.create_repo(REPO)
    api = _api(hub)
    api.create_commit(REPO, _adds("logs", range(4)), commit_message="four")
    head, files = hub.head(REPO), hub.list_files(REPO)

    with pytest.raises(BadRequestError) as refused:
        api.create_commit(REPO, _adds("logs", range(4, 6)), commit_message="six: one too many")
    assert "too many files per directory" in str(refused.value) and "Offending directories: /logs/" in str(refused.value)
    assert hub.head(REPO) == head and hub.list_files(REPO) == files  # nothing applied
    with pytest.raises(BadRequestError, match="Offending directories: /logs/"):  # a sub-folder is an entry too
        api.create_commit(REPO, [*_adds("logs", range(4, 5)), CommitOperationAdd("logs/sub/x.txt", b"x")], commit_message="sub")
    assert hub.stats["limits_hit"] == {"entries_per_folder": 2}

    api.create_commit(REPO, _adds("logs", range(4, 5)), commit_message="five: full")
    api.create_commit(REPO, _adds("logs", range(5)), commit_message="replacing is no new entry")
    api.create_commit(REPO, [CommitOperationDelete("logs/0.txt"), *_adds("logs", range(5, 6))], commit_message="room")
    assert sorted(p for p in hub.list_files(REPO) if p.startswith("logs/")) == [f"logs/{i}.txt" for i in range(1, 6)]
    assert hub.stats["limits_hit"] == {"entries_per_folder": 2}


def test_a_commit_of_more_files_than_files_per_commit_is_refused(start) -> None:
    """``files_per_commit`` (off by default; the Hub only recommends 50-100): past it, 400 and nothing applied."""
    hub = start(files_per_commit=3)
    hub.create_repo(REPO)
    api = _api(hub)
    with pytest.raises(BadRequestError, match="4 file operations, more than the 3"):
        api.create_commit(REPO, _adds("logs", range(4)), commit_message="four")
    api.create_commit(REPO, _adds("logs", range(3)), commit_message="three")
    assert hub.commit_count(REPO) == 1 and hub.stats["limits_hit"] == {"files_per_commit": 1}


@pytest.mark.skipif(hub_version() < BUCKETS_VERSION, reason="Storage Buckets need huggingface_hub >= 1.5")
def test_a_bucket_batch_cannot_overfill_a_folder_either(start) -> None:
    """A bucket applies a batch file by file: the additions past the limit fail (``BucketBatchError``
    lists them), the rest land; a delete makes room."""
    from huggingface_hub.errors import BucketBatchError

    hub = start(entries_per_folder=5)
    hub.create_bucket("ns/b")
    api = _api(hub)
    with pytest.raises(BucketBatchError) as refused:
        api.batch_bucket_files("ns/b", add=[(f"file {i}".encode(), f"f/{i}.txt") for i in range(7)])
    failed = refused.value.failures
    assert len(failed) == 2 and all("Offending directories: /f/" in f["error"] for f in failed), failed
    assert len(hub.bucket_files("ns/b")) == 5
    assert hub.stats["limits_hit"] == {"entries_per_folder": 2}

    api.batch_bucket_files("ns/b", delete=["f/0.txt"])  # the client sends a batch's additions first
    api.batch_bucket_files("ns/b", add=[(b"again", failed[0]["path"])])
    assert sorted(hub.bucket_files("ns/b")) == sorted({f"f/{i}.txt" for i in range(1, 5)} | {failed[0]["path"]})


def test_past_the_api_window_a_request_gets_429_with_headers_the_client_reads(start) -> None:
    """5 Hub API requests per 3 s window: the 6th gets 429 with ``RateLimit`` (r=0, t=seconds to the
    reset), ``RateLimit-Policy`` and ``Retry-After``, which huggingface_hub parses and names in its
    error; once the window is over, requests pass again."""
    hub = start(api_requests_per_window=5, window_s=3)
    hub.create_repo(REPO)  # directly: no request
    api = _api(hub)
    for _ in range(5):
        api.repo_info(REPO)
    with pytest.raises(HfHubHTTPError) as refused:
        api.repo_info(REPO)
    response = refused.value.response
    info = _parse_ratelimit(response.headers)
    assert response.status_code == 429 and info is not None, response.headers
    assert (info.resource_type, info.remaining, info.limit, info.window_seconds) == ("api", 0, 5, 3)
    assert 1 <= info.reset_in_seconds <= 3 and response.headers["Retry-After"] == str(info.reset_in_seconds)
    assert "you have reached your 'api' rate limit" in str(refused.value)  # the client's words, from the headers
    assert hub.stats["limits_hit"] == {"api_requests": 1}

    deadline = time.monotonic() + 3 + 10
    while True:  # the refused polls spend nothing: the next window opens on time
        try:
            api.repo_info(REPO)
            break
        except HfHubHTTPError as exc:
            assert exc.response.status_code == 429 and time.monotonic() < deadline, exc
            time.sleep(0.1)


def test_past_the_commit_rate_a_commit_gets_the_hubs_429_with_api_budget_left(start) -> None:
    """``commits_per_hour`` per repository, apart from the API window: the commit past it gets 429
    with the Hub's words while the API budget is not spent (the client does not blame the API
    window); nothing is applied; another repository still commits."""
    hub = start(commits_per_hour=2, api_requests_per_window=1000)
    hub.create_repo(REPO)  # its initial commit is no /commit
    hub.create_repo("ns/other")
    api = _api(hub)
    for n in range(2):
        api.create_commit(REPO, _adds("logs", range(n, n + 1)), commit_message=f"commit {n}")
    head = hub.head(REPO)
    with pytest.raises(HfHubHTTPError) as refused:
        api.create_commit(REPO, _adds("logs", range(2, 3)), commit_message="one too many")
    response = refused.value.response
    assert response.status_code == 429 and "rate limit for repository commits (2 per hour)" in str(refused.value)
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    info = _parse_ratelimit(response.headers)
    assert info is not None and info.remaining > 0 and "'api' rate limit" not in str(refused.value)
    assert hub.head(REPO) == head and hub.commit_count(REPO) == 2
    assert hub.stats["limits_hit"] == {"commits": 1}

    api.create_commit("ns/other", _adds("logs", range(1)), commit_message="per repository")
    assert hub.commit_count("ns/other") == 1


def test_the_api_window_counts_what_the_benchmarks_count(start, tmp_path: Path) -> None:
    """One definition of a Hub API request: the window spends exactly the requests ``api_requests``
    (``scripts/bench_requests.py``) counts, and neither Xet CAS transfers nor ``/resolve/`` downloads."""
    hub = start(api_requests_per_window=1000)
    api = _api(hub)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=os.urandom(20_000), path_in_repo="weights.bin", repo_id=REPO)
    path = hf_hub_download(REPO, "weights.bin", endpoint=hub.endpoint, token=TOKEN, cache_dir=str(tmp_path / "cache"))
    assert Path(path).stat().st_size == 20_000
    requests = hub.stats["requests"]
    assert requests.get("xorb_upload") and requests.get("resolve"), requests  # storage and resolver traffic happened

    request = urllib.request.Request(f"{hub.endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        info = _parse_ratelimit(answer.headers)  # every API answer carries the window's state
    counted = api_requests(hub.stats)
    assert not {"resolve", "xorb_upload", "shard_upload", "reconstruction"} & set(counted), counted
    assert info is not None and info.remaining == 1000 - sum(counted.values()), (info, hub.stats["requests"])


def _whoami(endpoint: str) -> int:
    request = urllib.request.Request(f"{endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_command_line_server_takes_the_limits_as_flags() -> None:
    """``python -m hf_mpwriter.testing.hub_server --api-requests 2 --window-s 60``: the 3rd request gets
    429, and the stats it prints at exit count it; a bad value is a usage error."""
    code = "import sys; from hf_mpwriter.testing.hub_server import main; main(sys.argv[1:])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    argv = [sys.executable, "-c", code, "--port", "0", "--token", TOKEN, "--log-level", "WARNING"]
    bad = subprocess.run([*argv, "--api-requests", "-1"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "api_requests_per_window must be" in bad.stderr, bad.stderr
    server = subprocess.Popen([*argv, "--api-requests", "2", "--window-s", "60"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # "# HubServer listening on http://127.0.0.1:PORT (...)"
        assert "listening on" in first, first + (server.stderr.read() if server.stderr else "")
        endpoint = first.split("listening on ", 1)[1].split()[0]
        assert [_whoami(endpoint) for _ in range(3)] == [200, 200, 429]
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    stats = json.loads(out[out.index("{"):])  # after the export lines (which the first readline may have buffered)
    assert stats["limits_hit"] == {"api_requests": 1}, stats
