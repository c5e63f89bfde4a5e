"""Every folder the library writes holds at most the Hub's 10,000 entries, at any world size.

The Hub refuses a commit that leaves more than 10,000 files and sub-folders in one folder, and the
test Hub refuses it as the Hub does (``HubLimits.entries_per_folder``). Rank ``r`` writes its own run
directory and each node's uploader one in ``system/``: a job of 12,000 ranks or nodes must still be
committed, a rank must find its run directory again when it restarts (whatever the world size then),
and jobs of ordinary size keep ``rank-000`` ... exactly.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from helpers import LAUNCHER_VARS, tensorboard_runs
from upload_helpers import TOKEN, hub_env, writer_env

from hf_mpwriter import SummaryWriter
from hf_mpwriter.events.encoding import file_version_event, scalar_event
from hf_mpwriter.events.records import frame
from hf_mpwriter.state.run_dirs import HUB_ENTRIES_PER_FOLDER, capacity, flat_share
from hf_mpwriter.state.statedir import state_dir
from hf_mpwriter.testing import HubLimits, HubServer
from hf_mpwriter.testing.limits import FolderEntries, folders_holding
from hf_mpwriter.uploader.system_metrics import host_run_name
from hf_mpwriter.writer.ranks import RankInfo, detect

EVENTS = "events.out.tfevents.1700000000.host"


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch) -> None:
    """The tests name their ranks themselves: none of the suite's own launcher variables leaks in."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


def _rank_runs(world: int, limit: int | None = None) -> list[str]:
    """Each rank's run directory, in a folder layout for ``limit`` entries (default: the Hub's)."""
    kwargs = {} if limit is None else {"entries_per_folder": limit}
    return [str(RankInfo(rank, world, "torchrun").run_name(**kwargs)) for rank in range(world)]


def _node_runs(nodes: int, limit: int = HUB_ENTRIES_PER_FOLDER) -> list[str]:
    return [host_run_name(f"gpu{node:05d}", node, entries_per_folder=limit) for node in range(nodes)]


def _most_entries(paths: Iterable[str]) -> tuple[int, str]:
    """The most entries one folder of the tree of ``paths`` holds, and that folder."""
    children: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        for i in range(len(parts)):
            children.setdefault("/".join(parts[:i]), set()).add(parts[i])
    return max((len(names), folder) for folder, names in children.items())


# -- the layout ---------------------------------------------------------------------------------------
def test_every_folder_of_a_12000_rank_job_stays_within_the_hubs_limit() -> None:
    """12,000 ranks (1,500 nodes of 8), each with its event file and its ``hparams`` run: no folder
    of the logdir holds more than 10,000 entries, and every rank has a run directory of its own."""
    runs = _rank_runs(12_000)
    assert len(set(runs)) == 12_000
    files = [f"{run}/{EVENTS}" for run in runs] + [f"{run}/hparams/{EVENTS}" for run in runs]
    system = [f"{host_run_name(f'gpu{node:05d}')}/{EVENTS}" for node in range(1_500)]  # beside the ranks: system/
    most, folder = _most_entries(files + system)
    assert most <= HUB_ENTRIES_PER_FOLDER, f"/{folder} holds {most} entries"


def test_every_folder_of_system_metrics_of_12000_nodes_stays_within_the_hubs_limit() -> None:
    """A node's uploader writes ``system/<host>``: 12,000 nodes (more than the largest machines have)
    keep ``system/`` within the limit, next to 12,000 ranks."""
    nodes = _node_runs(12_000)
    assert len(set(nodes)) == 12_000 and all(run.startswith("system/") for run in nodes)
    most, folder = _most_entries([f"{run}/{EVENTS}" for run in nodes + _rank_runs(12_000)])
    assert most <= HUB_ENTRIES_PER_FOLDER, f"/{folder} holds {most} entries"


def test_the_layout_holds_up_to_its_capacity() -> None:
    """Up to :func:`capacity` ranks (millions), the logdir holds its flat runs and its block folders
    within the limit, with room for ``system/`` and more; each block holds ``flat_share`` ranks."""
    share, last = flat_share(), capacity() - 1
    assert last > 8_000_000
    top = {str(RankInfo(rank, last + 1, "torchrun").run_name()).split("/")[0]
           for rank in [*range(share), *range(share, last + 1, share), last]}
    assert share + 1 < len(top) <= HUB_ENTRIES_PER_FOLDER - 10
    block = RankInfo(last, last + 1, "torchrun").run_name()
    assert block == f"ranks-{last // share * share}-{last}/rank-{last}"
    same_block = {str(RankInfo(rank, last + 1, "torchrun").run_name()).split("/")[0] for rank in (last - share + 1, last)}
    assert len(same_block) == 1


def test_ordinary_jobs_keep_todays_layout() -> None:
    """Ranks and node ranks below 9,000 are where they always were: ``rank-000``, ``system/<host>``."""
    assert _rank_runs(9_000) == [f"rank-{rank:03d}" for rank in range(9_000)]
    assert _node_runs(9_000) == [f"system/gpu{node:05d}" for node in range(9_000)]
    assert host_run_name("a/b") == "system/a_b"
    assert RankInfo(None, 1, "none").run_name() is None  # a single process: the plain layout


@pytest.mark.parametrize("rank", [0, 8_999, 9_000, 12_345, 1_000_000])
def test_a_rank_finds_its_run_directory_again_whatever_the_world_size(rank) -> None:
    """The run directory depends on the rank alone: a restart with the same world size, an elastic
    restart with another, and ``rank=`` without any world size all give the same one. (A world of one
    is the plain layout, as it always was: a process alone writes into the logdir itself.)"""
    worlds = (max(rank + 1, 2), 12_000, 2 * rank + 2, 10_000_000)
    names = {detect(env={"RANK": str(rank), "WORLD_SIZE": str(world)}).run_name() for world in worlds if world > rank}
    names.add(detect(rank=rank, env={}).run_name())
    assert len(names) == 1, names


# -- a writer, and TensorBoard --------------------------------------------------------------------------
def test_a_writer_of_rank_12345_writes_into_its_block_and_finds_it_again(tmp_path) -> None:
    """Rank 12,345 writes ``ranks-9000-17999/rank-12345``; a second live writer of that rank gets a
    sibling in the same block; a restarted one finds the first again; TensorBoard shows both as runs."""
    logdir = tmp_path / "logs"
    block = logdir / "ranks-9000-17999"
    with SummaryWriter(logdir, rank=12_345) as first:
        assert Path(first.get_logdir()) == block / "rank-12345"
        first.add_scalar("loss", 1.0, 0)
        with SummaryWriter(logdir, rank=12_345) as second:
            assert Path(second.get_logdir()) == block / "rank-12345.1"
            second.add_scalar("loss", 2.0, 0)
    with SummaryWriter(logdir, rank=12_345, purge_step=1) as restarted:
        assert Path(restarted.get_logdir()) == block / "rank-12345"
        restarted.add_scalar("loss", 3.0, 1)
    runs = tensorboard_runs(logdir)
    assert set(runs) == {"ranks-9000-17999/rank-12345", "ranks-9000-17999/rank-12345.1"}
    assert sorted(p.name for p in logdir.iterdir() if not p.name.startswith(".")) == ["ranks-9000-17999"]


def test_the_uploader_places_its_nodes_system_run_by_the_node_rank_of_its_settings(tmp_path) -> None:
    """The uploader's sampler takes the node rank from the logdir's upload settings (as its schedule
    does): node 12,000 samples into ``system/nodes-9000-17999/<host>``, node 3 into ``system/<host>``."""
    from types import SimpleNamespace

    from hf_mpwriter.uploader.system_metrics import start_for

    for node, folder in ((12_000, "system/nodes-9000-17999"), (3, "system")):
        sampler = start_for(tmp_path, SimpleNamespace(system_metrics=60.0, node_rank=node))
        assert sampler is not None
        try:
            assert sampler.run_dir.parent == tmp_path / folder  # named by this machine's host name
        finally:
            sampler.stop()
        assert host_run_name("gpu12000", node) == f"{folder}/gpu12000"


# -- a real commit through the test Hub ---------------------------------------------------------------
def _write_run(logdir: Path, run: str, value: float) -> Path:
    """One small event file in run directory ``run``, as a writer leaves it."""
    path = logdir / run / EVENTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frame(file_version_event(1.0)) + frame(scalar_event("loss", value, 0, 1.0)))
    return path


def test_a_commit_of_every_run_of_a_large_world_passes_the_hubs_folder_limit(tmp_path) -> None:
    """A world of 2.5x the folder limit (scaled down: a limit of 40 entries and 100 ranks on 100 nodes,
    with system metrics and the job run: the logdir's root holds 36 ranks, 2 blocks, ``system/`` and
    ``job/``) is committed by ``hf-mpwriter sync`` through the real client to a test Hub enforcing
    that limit: nothing refused, every file there, every folder within the limit. The same world laid
    out flat would be refused."""
    limit, world = 40, 100
    runs = _rank_runs(world, limit) + _node_runs(world, limit)
    flat = [f"rank-{rank:03d}/{EVENTS}" for rank in range(world)]
    assert FolderEntries(flat, folders_holding(flat)).crowded(limit) == [""]  # the scenario: flat is too many

    logdir = tmp_path / "logs"
    state_dir(logdir)  # a logdir hf_mpwriter writers used
    local = {run: _write_run(logdir, run, float(i)).read_bytes() for i, run in enumerate(runs)}
    hub = HubServer(tokens={TOKEN}, limits=HubLimits(entries_per_folder=limit)).start()
    try:
        env = {**hub_env(hub, tmp_path), "HF_TOKEN": TOKEN}
        result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--repo-id", "tester/big",
                                 "--quiet"], env=writer_env(env), capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not hub.stats["limits_hit"], hub.stats["limits_hit"]
        remote = hub.list_files("tester/big")
        prefix = "tensorboard/logs/"
        files = {p[len(prefix):] for p in remote if p.startswith(prefix)}
        assert {f for f in files if not f.startswith("job/")} == {f"{run}/{EVENTS}" for run in runs}
        assert any(f.startswith("job/") for f in files)  # the job run, in the root folder too
        assert FolderEntries(remote, folders_holding(remote)).crowded(limit) == []
        assert all(hub.read_file("tester/big", f"{prefix}{run}/{EVENTS}") == data for run, data in local.items())
    finally:
        hub.stop()
    assert set(tensorboard_runs(logdir)) == {*runs, "job"}  # TensorBoard shows every rank and node as a run, and the job
    share = flat_share(limit)  # the scenario: flat runs, runs in blocks, and system runs in blocks
    assert Counter(run.count("/") for run in runs) == {0: share, 1: world, 2: world - share}
