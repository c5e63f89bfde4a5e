"""The huggingface_hub versions users have (0.34 to the newest, ``requests`` and ``httpx`` stacks).

Runs on whatever stack is installed: ``.ci/run`` runs it on the newest versions and again on the oldest
supported stack (``.venv-old``). What it proves there:

- in thread mode (the uploader inside the training process) the process's own huggingface_hub client
  is the object it was before, configured as before (no timeout forced on it), and a slow answer to
  the user's own call is waited for, while the uploader's own calls do time out;
- the client of our own is built with or without the private factory names it prefers;
- features the installed version lacks fail at construction, naming the version they need.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import kill_and_collect
from upload_helpers import TOKEN, hub_env, writer_env

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.targets.hub_client import (
    BUCKET_FS_VERSION,
    BUCKETS_VERSION,
    OwnClient,
    ScopedApi,
    hub_version,
    require_hub_version,
)

REPO = "tester/versions"

#: A training process that uses huggingface_hub itself and runs the uploader as a thread. It prints
#: what its client looks like before the writer starts and after it closed, then, once told (a line on
#: stdin: the test injected latency on ``repo_info``), times one call of its own through that client.
_TRAINING = r'''
import json, os, sys, time
import huggingface_hub, huggingface_hub.utils as hub_utils
from huggingface_hub import HfApi

def describe(client):
    return {"id": id(client), "type": type(client).__name__, "timeout": repr(getattr(client, "timeout", None)),
            "hooks": repr(getattr(client, "event_hooks", None)), "adapters": sorted(getattr(client, "adapters", {}) or {}),
            "own_request": "request" in vars(client)}

def public_functions():  # each public function, or the library's own one it routes to (__wrapped__)
    return {f"{module.__name__}.{name}": id(getattr(getattr(module, name), "__wrapped__", getattr(module, name)))
            for module in (huggingface_hub, hub_utils)
            for name in ("get_session", "close_session", "reset_sessions", "configure_http_backend",
                         "set_client_factory") if hasattr(module, name)}

before, functions = describe(hub_utils.get_session()), public_functions()
from hf_mpwriter import HFSummaryWriter
writer = HFSummaryWriter(os.environ["REPO"], logdir=os.environ["LOGDIR"], commit_every=1 / 60, uploader="thread",
                         token=os.environ["TEST_TOKEN"], close_timeout=120)
for step in range(50):
    writer.add_scalar("loss", float(step), step)
writer.close()
after = describe(hub_utils.get_session())
assert huggingface_hub.get_session() is hub_utils.get_session()
print(json.dumps({"before": before, "after": after, "functions": [functions, public_functions()]}), flush=True)
sys.stdin.readline()
started = time.monotonic()
info = HfApi(token=os.environ["TEST_TOKEN"]).model_info(os.environ["REPO"])
print(json.dumps({"user_call_s": time.monotonic() - started, "sha": info.sha,
                  "same_client": id(hub_utils.get_session()) == before["id"]}), flush=True)
'''


def test_thread_mode_leaves_the_process_client_alone(hub, tmp_path):
    import json

    hub.create_repo(REPO)
    # The uploader's first commit gets no answer for 6 s: with its 2 s read timeout it gives up, the
    # late commit lands anyway (as on the real Hub), and the uploader reconciles. Not retried by the
    # client itself (it never retries /commit), so the timeout shows in the uploader's log.
    slow_commit = hub.inject("latency", route="commit", seconds=6)
    env = hub_env(hub, tmp_path, REPO=REPO, LOGDIR=str(tmp_path / "logs"), HF_MPWRITER_HTTP_TIMEOUT="2")
    proc = subprocess.Popen([sys.executable, "-c", _TRAINING], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=writer_env(env))
    try:
        first = json.loads(proc.stdout.readline() or "null")  # type: ignore[union-attr]
        assert first, kill_and_collect(proc)
        assert first["after"] == first["before"], "the training process's huggingface_hub client changed"
        assert first["functions"][0] == first["functions"][1], "huggingface_hub's public functions were replaced"
        assert slow_commit.hits == 1
        hub.inject("latency", route="repo_info", seconds=3)  # longer than our 2 s: the user's client must wait
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_and_collect(proc)
    assert proc.returncode == 0, err
    second = json.loads(out.strip().splitlines()[-1])
    assert second["user_call_s"] >= 2.9 and second["same_client"], second
    # Our own call (the first commit: the model card's) timed out and was retried: the uploader said so.
    assert re.search(r"cannot (commit|tag the model card) .*(Timeout|timed out).*will retry", err, re.IGNORECASE), err[-3000:]
    assert [c for c in hub.commits(REPO) if c["summary"].startswith("Upload TensorBoard logs")]


@pytest.mark.parametrize("factory_readable", [True, False], ids=["user-factory", "no-private-factory-name"])
def test_own_client_times_out_with_or_without_the_private_factory(hub, monkeypatch, factory_readable):
    """Our client is built from the user's factory (a private name) when readable, else from the default."""
    from huggingface_hub.utils import _http

    # The process's own client, as the user's code has it (made before the private name goes away:
    # huggingface_hub itself needs it to build one, and this test may be the first in its worker).
    process_client = _http.get_session()
    if not factory_readable:
        for name in ("_GLOBAL_CLIENT_FACTORY", "_GLOBAL_BACKEND_FACTORY"):
            monkeypatch.delattr(_http, name, raising=False)
    from huggingface_hub import HfApi

    hub.create_repo(REPO)
    before = (getattr(process_client, "timeout", None), "request" in vars(process_client))
    api = ScopedApi(HfApi(token=TOKEN, endpoint=hub.endpoint), OwnClient(connect=2.0, read=1.0))
    assert api.get_paths_info(REPO, ["README.md"]) == []  # works
    # get_paths_info takes no timeout= (repo_info does, and gets ours per call): the client's own applies.
    slow = hub.inject("latency", route="paths_info", seconds=4)
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        api.get_paths_info(REPO, ["README.md"])
    assert time.monotonic() - started < 3.5 and slow.hits == 1
    assert "timeout" in type(caught.value).__name__.lower() or "timed out" in str(caught.value).lower()
    # huggingface_hub's own client (what the user's code gets) is the same, and was given no timeout.
    assert _http.get_session() is process_client
    assert (getattr(process_client, "timeout", None), "request" in vars(process_client)) == before


@pytest.mark.skipif(hub_version() >= BUCKETS_VERSION, reason="this huggingface_hub has Storage Buckets")
@pytest.mark.parametrize("kwargs", [{"repo_id": "hf://buckets/me/runs"}, {"repo_id": "me/runs", "repo_type": "bucket"}],
                         ids=["url", "repo_type"])
def test_buckets_need_1_5_and_say_so_at_construction(tmp_path, kwargs):
    logdir = tmp_path / "logs"
    needs_1_5 = r"Storage Buckets: requires huggingface_hub>=1\.5; this environment has huggingface_hub 0\."
    with pytest.raises(ConfigurationError, match=needs_1_5):
        HFSummaryWriter(logdir=str(logdir), **kwargs)
    assert not logdir.exists(), "a constructor that rejects its arguments creates nothing"


def test_version_requirement_names_the_version():
    require_hub_version((0, 34), "anything")  # the floor: always met
    with pytest.raises(ConfigurationError, match=r"Time travel: requires huggingface_hub>=99\.1; this environment has"):
        require_hub_version((99, 1), "Time travel")
    assert BUCKETS_VERSION == (1, 5) and BUCKET_FS_VERSION == (1, 6)


def test_declared_floor_is_the_installed_floor_on_the_old_stack():
    """On the oldest stack (.ci/run sets HF_MPWRITER_OLD_STACK=1) the versions installed are the floors
    setup.cfg declares: the floors are what the tests ran on."""
    if not os.environ.get("HF_MPWRITER_OLD_STACK"):
        pytest.skip("only on the oldest supported stack (.ci/run's second run)")
    from importlib.metadata import version

    floors = dict(re.findall(r"^\s+([A-Za-z_]+)>=([\d.]+)", (Path(__file__).parent.parent / "setup.cfg").read_text(),
                             re.MULTILINE))
    for name in ("huggingface_hub", "tensorboardX", "tensorboard", "filelock", "psutil", "numpy"):
        assert version(name).startswith(floors[name]), (name, version(name), floors[name])
