"""Hub API requests per commit, counted by the test Hub, with a real uploader and the real client.

A writer (``uploader="none"``) and its logdir's uploader run in a child process driven one commit at a
time (``scripts/bench_requests.py``'s :class:`Driven`), so each commit's requests are known exactly.
Storage transfers (Xet CAS, LFS PUTs) are not Hub API requests and are left out. In steady state a
repository commit makes no ``repo_info`` (the head is the one the last commit returned), and one
``paths_info`` verifies it; after the Hub refused a commit because the branch moved (412), the next
commit reads the head and lands.

Content costs no Hub API request in steady state: hf_mpwriter sends event files straight to Xet with a
write token kept until it nears expiry (``targets/xet_content.py``), then the commit (a bucket: the
batch) names them. What huggingface_hub would make itself to send them (read in each version's
``_commit_api.py``, ``hf_api.py`` and ``utils/_xet.py``; measured with 0.34, 0.36, 1.10 and 2.4):
``preupload``; whether to use Xet (0.34-0.35 ``repo_info(expand="xetEnabled")``, 0.36-1.19
``lfs_batch``); a Xet write token per upload (0.34-1.1 and 1.19+). (0.34-0.35 still ask
``repo_info(expand="xetEnabled")`` inside ``create_commit``, with nothing to upload.) A bucket with huggingface_hub
1.5-1.9 (whose batch takes no Xet hash) goes through ``batch_bucket_files``, which keeps its token.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from upload_helpers import TOKEN, check_remote

from hf_mpwriter.compat import BUCKETS_VERSION, hub_version

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_requests import Driven, child_env  # noqa: E402

REPO = "tester/requests"
BUCKET = "tester/requests"
COMMITS = 4


def _library_repo_info() -> Counter:
    """The ``repo_info`` huggingface_hub 0.34-0.35's ``create_commit`` asks at every commit (``expand=
    "xetEnabled"``, in ``preupload_lfs_files``), even with nothing left to upload: not the head's."""
    return +Counter({"repo_info": 1 if hub_version() < (0, 36) else 0})


def _driven(hub, tmp_path: Path, repo_id: str, shared_branch_s: float | None = None, **env: str) -> Driven:
    return Driven(hub, repo_id, tmp_path / "logs", {**child_env(hub, tmp_path / "hf_home", TOKEN), **env}, shared_branch_s)


def _remote_repo(hub, prefix: str) -> dict[str, bytes]:
    return {p[len(prefix) + 1:]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(prefix + "/")}


def _landed(answer: dict) -> bool:
    return answer["commits"] == 1 and not answer["error"]


def _steady(child: Driven) -> list[Counter]:
    """The requests of ``COMMITS`` commits after the first (the start: creation, the model card)."""
    first, _ = child.commit()
    assert _landed(first), first
    per_commit = []
    for _ in range(COMMITS):
        answer, requests = child.commit()
        assert _landed(answer), answer
        per_commit.append(requests)
    return per_commit


def test_a_repository_commit_reads_no_head_and_verifies_in_one_call(hub, tmp_path):
    with _driven(hub, tmp_path, REPO) as child:
        per_commit = _steady(child)

    expected = Counter({"commit": 1, "paths_info": 1}) + _library_repo_info()
    assert per_commit == [expected] * COMMITS, per_commit
    assert hub.commit_count(REPO) == 1 + 1 + COMMITS  # the card, the first commit, the steady ones
    check_remote(tmp_path / "logs", _remote_repo(hub, child.prefix), {0: range(1 + COMMITS)}, tmp_path / "remote")


@pytest.mark.skipif(hub_version() < BUCKETS_VERSION, reason="Storage Buckets need huggingface_hub>=1.5")
def test_a_bucket_write_costs_its_batch_its_token_and_one_verification(hub, tmp_path):
    with _driven(hub, tmp_path, f"hf://buckets/{BUCKET}") as child:
        per_commit = _steady(child)

    expected = Counter({"bucket_batch": 1, "bucket_paths_info": 1})
    assert per_commit == [expected] * COMMITS, per_commit
    remote = {p[len(child.prefix) + 1:]: data for p, data in hub.bucket_files(BUCKET).items()}
    check_remote(tmp_path / "logs", remote, {0: range(1 + COMMITS)}, tmp_path / "remote")


@pytest.mark.parametrize("window", [600.0, 0.0], ids=["shared-window", "no-window"])
def test_a_commit_refused_because_the_branch_moved_reads_the_head_and_lands(hub, tmp_path, window):
    """``window``: ``HubTarget.shared_branch_s``, how long the head is read before each commit after a 412."""
    with _driven(hub, tmp_path, REPO, shared_branch_s=window) as child:
        _steady(child)
        child.push()  # someone else commits to the branch (the job's checkpoint push): the remembered head is stale
        moved_to = hub.head(REPO)

        refused, requests = child.commit()
        # The scenario happened: the commit named the old head, read no head first, and the Hub refused it (a race
        # that the retry resolves: not an error, commit_cycle.RACES_SAID_AFTER).
        assert refused["commits"] == 0 and refused["error"] is None, refused
        assert requests["commit"] == 1 and not (requests - _library_repo_info())["repo_info"], requests
        assert hub.head(REPO) == moved_to

        landed, requests = child.cycle()  # the retry: reconciled (not held), the head read, committed
        assert _landed(landed), landed
        assert (requests - _library_repo_info())["repo_info"] == 1, requests
        assert hub.commits(REPO)[1]["id"] == moved_to  # on top of the other commit

        after, requests = child.commit()  # inside the window the head is read again; after it, remembered
        assert _landed(after), after
        assert (requests - _library_repo_info())["repo_info"] == (1 if float(window) else 0), requests

    assert hub.read_file(REPO, "checkpoint.txt") == b"checkpoint 1\n"  # nothing of theirs lost
    check_remote(tmp_path / "logs", _remote_repo(hub, child.prefix), {0: range(after["steps"])}, tmp_path / "remote")


def test_where_the_nodes_of_a_job_take_turns_each_commit_reads_the_head(hub, tmp_path):
    """Node turns: the other nodes' uploaders commit between two of this node's, so a remembered head would
    be refused every time; the head is read before each commit instead (no 412, no retry)."""
    with _driven(hub, tmp_path, REPO, SLURM_NODEID="0", SLURM_NNODES="2") as child:
        first, _ = child.commit()
        assert _landed(first), first
        for _ in range(2):
            before = hub.head(REPO)
            child.push()  # the other node's turn
            assert hub.head(REPO) != before  # the branch moved
            answer, requests = child.commit()
            assert _landed(answer), answer  # not refused: the head was read
            assert (requests - _library_repo_info())["repo_info"] == 1 and requests["commit"] == 1, requests
    assert hub.read_file(REPO, "checkpoint.txt") == b"checkpoint 2\n"
    check_remote(tmp_path / "logs", _remote_repo(hub, child.prefix), {0: range(answer["steps"])}, tmp_path / "remote")
