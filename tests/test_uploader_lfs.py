"""The legacy LFS upload path (``HF_HUB_DISABLE_XET=1``), for users who set it: server faults and a
SIGKILL mid-upload lose and duplicate nothing, exactly as on the Xet path."""

from __future__ import annotations

import functools
from pathlib import Path

from upload_helpers import (
    check_remote,
    committed_and_checked,
    finish,
    hub_env,
    sigkill,
    start_writer,
    uploader_pid,
    wait_for,
)

from hf_mpwriter.testing import HubServer

REPO = "tester/lfs"
PREFIX = "tensorboard/logs/"


#: A writer's environment for the test Hub.
_env = functools.partial(hub_env, xet=False)


def _cfg(tmp_path: Path, rank: int, steps: int) -> dict:
    return {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "rank": rank, "commit_every_s": 1.0,
            "steps": steps, "sleep": 0.01, "close_timeout": 90}


def _remote(hub: HubServer) -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(PREFIX)}


def test_faults_and_a_sigkill_mid_upload_on_the_lfs_path(hub, tmp_path):
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    faults = [hub.inject("status", route="commit", status=503), hub.inject("lost_response", route="commit"),
              hub.inject("latency", route="lfs_upload", seconds=4.0)]
    procs = [start_writer(_cfg(tmp_path, r, 400), _env(hub, tmp_path)) for r in range(2)]
    wait_for(lambda: faults[2].hits, 30, "an LFS upload in flight")
    first = uploader_pid(logdir)
    sigkill(first)
    for proc in procs:
        finish(proc)
    assert all(f.hits == 1 for f in faults), [f.hits for f in faults]
    check_remote(logdir, _remote(hub), {r: range(400) for r in range(2)}, tmp_path / "remote")
    assert committed_and_checked(logdir)
    assert hub.stats["lfs_uploads"] > 0 and hub.stats["xorb_bytes_received"] == 0, "not the LFS path"
