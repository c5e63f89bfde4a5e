"""A Hub repository holds fewer than 100,000 files: a job says so before its event files get there.

At start, rank 0 of a job whose world size alone fills a repository within a week (at the README's
typical rate) warns, with the numbers and a bucket (or a larger ``rotate_bytes``) instead; following
either advice silences it. The uploader warns once per share of the limit (80 %, 95 %) as the files
it committed near it. The numbers are asserted (the log record's arguments), not the wording.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from helpers import LAUNCHER_VARS
from upload_helpers import TOKEN

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.uploader.loop import Uploader

REPO = "tester/run"
LIMIT = 100_000
MIB = 1024 * 1024
#: The README's typical rate of a rank: 20 scalars a step (55-byte records), one step a second.
RATE = 20 * 55


@pytest.fixture
def world(monkeypatch):
    """Sets the job's rank and world size as torchrun does (and nothing else of a launcher)."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_world(rank: int, size: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(size))

    return set_world


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("hf_mpwriter")]


def _start(tmp_path: Path, **kwargs) -> None:
    if "repo_id" in kwargs:  # a token, as a user's: the missing-token warning is not what these tests look at
        kwargs.setdefault("token", "hf_fileLimitTestToken0123456789")
    with HFSummaryWriter(logdir=str(tmp_path / "logs"), uploader="none", **kwargs) as writer:
        writer.add_scalar("loss", 1.0, 0)


def test_rank_0_of_a_job_that_fills_a_repository_warns_at_start_with_the_numbers(world, tmp_path, caplog):
    world(0, 1024)
    caplog.set_level(logging.WARNING)
    _start(tmp_path, repo_id=REPO)
    found = [r for r in _warnings(caplog) if r.args and 1024 in r.args]
    assert len(found) == 1, [r.getMessage() for r in _warnings(caplog)]
    args = found[0].args
    rotations = math.ceil(LIMIT / 1024) - 1  # each rank's files past its first, when the job has 100,000
    assert LIMIT in args
    assert 1024 * (1 + (RATE * 86400) // (4 * MIB)) in args  # files a day: 23,552
    days = [a for a in args if isinstance(a, float)]
    assert days and math.isclose(days[0], rotations * 4 * MIB / (RATE * 86400), rel_tol=1e-9)  # 4.28 days
    assert any(isinstance(a, str) and "hf://buckets/tester/run" in a for a in args)
    assert 8 * MIB in args  # the rotation that would last past a week
    assert "tester/run" in found[0].getMessage()


@pytest.mark.parametrize("case", [
    pytest.param("bucket", marks=pytest.mark.skipif(hub_version() < BUCKETS_VERSION, reason="buckets: huggingface_hub 1.5+")),
    "rotate_bytes advised", "rank 1", "64 ranks", "local directory"])
def test_no_warning_at_start_for_a_bucket_a_small_job_or_the_advice_followed(world, tmp_path, caplog, case):
    world(1 if case == "rank 1" else 0, 64 if case == "64 ranks" else 1024)
    caplog.set_level(logging.WARNING)
    kwargs: dict = {"repo_id": REPO}
    if case == "bucket":
        kwargs = {"repo_id": "hf://buckets/tester/run"}  # what the warning advises
    elif case == "rotate_bytes advised":
        kwargs["rotate_bytes"] = 8 * MIB
    elif case == "local directory":
        kwargs = {"target_dir": str(tmp_path / "mirror")}
    _start(tmp_path, **kwargs)
    assert not _warnings(caplog), [r.getMessage() for r in _warnings(caplog)]


def test_a_job_too_big_for_any_rotation_is_advised_a_bucket_only(world, tmp_path, caplog):
    world(0, 60_000)  # two files a rank already pass 100,000
    caplog.set_level(logging.WARNING)
    _start(tmp_path, repo_id=REPO)
    found = [r for r in _warnings(caplog) if r.args and 60_000 in r.args]
    assert len(found) == 1
    assert not any(isinstance(a, int) and a > 4 * MIB and a % MIB == 0 for a in found[0].args)  # no rotate_bytes
    assert any(isinstance(a, str) and "hf://buckets/tester/run" in a for a in found[0].args)


def test_files_made_and_its_inverse():
    from hf_mpwriter.events.file_count import bytes_until_files, files_made

    assert files_made(8, 4 * MIB, 0) == 8
    assert files_made(8, 4 * MIB, 4 * MIB - 1) == 8 and files_made(8, 4 * MIB, 4 * MIB) == 16
    for ranks in (1, 8, 64, 1024, 8192, 50_000, 100_000, 200_000):
        room = bytes_until_files(LIMIT, ranks, 4 * MIB)
        assert files_made(ranks, 4 * MIB, room) >= LIMIT
        assert room == 0 or files_made(ranks, 4 * MIB, room - 1) < LIMIT


def _event_files(logdir: Path) -> list[Path]:
    return [p for p in (logdir / "rank-000").iterdir() if "tfevents" in p.name]


def _write_until(writer: HFSummaryWriter, logdir: Path, files: int) -> None:
    step = getattr(writer, "_test_step", 0)
    while len(_event_files(logdir)) < files:
        writer.add_scalar("loss", float(step), step)
        step += 1
        if step % 10 == 0:
            writer.flush()
    writer.flush()
    writer._test_step = step  # type: ignore[attr-defined]


def test_the_uploader_warns_once_per_share_of_the_limit_its_commits_pass(hub_is_this_process_hub, tmp_path, caplog,
                                                                         monkeypatch):
    """The real uploader and queue against the test Hub; the limit made 10 files to keep it small."""
    hub = hub_is_this_process_hub  # (huggingface_hub 0.x reads commit URLs against the process's Hub)
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    hub.create_repo(REPO)
    logdir = tmp_path / "logs"
    caplog.set_level(logging.INFO)

    def drain() -> list[logging.LogRecord]:
        caplog.clear()
        uploader = Uploader(logdir, token=TOKEN, target=HubTarget(REPO, prefix="tensorboard/logs", token=TOKEN,
                                                                  endpoint=hub.endpoint))
        uploader.file_limit.limit = 10
        assert uploader.drain(timeout=60)
        return [r for r in _warnings(caplog) if r.args and 10 in r.args]

    writer = HFSummaryWriter(logdir=str(logdir), repo_id=REPO, rank=0, uploader="none", rotate_bytes=4096)
    try:
        _write_until(writer, logdir, 7)
        assert drain() == []  # 7 of 10: below 80 %
        _write_until(writer, logdir, 8)
        said = drain()
        assert len(said) == 1 and 8 in said[0].args and 80.0 in said[0].args, [r.getMessage() for r in said]
        writer.add_scalar("loss", 0.5, 10**6)
        writer.flush()
        assert drain() == []  # still 8 files, a new commit: 80 % is not said again
        _write_until(writer, logdir, 10)
        said = drain()
        assert len(said) == 1 and 10 in said[0].args and 95.0 in said[0].args, [r.getMessage() for r in said]
        assert len([p for p in hub.list_files(REPO) if "tfevents" in p]) == 10  # what the uploader counted
    finally:
        writer.close()
