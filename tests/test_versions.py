"""The huggingface_hub versions users have (0.34 to the newest, ``requests`` and ``httpx`` stacks).

Runs on whatever stack is installed: ``.ci/run`` runs it on the newest versions and again on the oldest
supported stack (``.venv-old``). What it proves there:

- features the installed version lacks fail at construction, naming the version they need;
- the versions installed on the oldest stack are the floors setup.cfg declares.

How the client is configured (thread mode, process mode, timeouts) is tests/test_client.py's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.compat import BUCKETS_VERSION, hub_version, require_hub_version


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



def test_the_buckets_gate_matches_the_installed_client():
    """Buckets are refused below :data:`BUCKETS_VERSION` exactly where the installed client lacks the bucket API
    the target calls (on the newest stack: allowed and present; on the oldest: refused and absent)."""
    from huggingface_hub import HfApi

    assert (hub_version() >= BUCKETS_VERSION) == all(
        hasattr(HfApi, name) for name in ("create_bucket", "batch_bucket_files", "get_bucket_paths_info")
    )


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
