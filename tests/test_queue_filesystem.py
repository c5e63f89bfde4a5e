"""The queue on the logdir's own file system: a rollback journal where WAL cannot work (a network file
system shared by every node), and a queue that cannot be read said, not waited out in silence.

No network file system can be mounted on the test machines (no nfs/lustre/cifs in the kernel, no FUSE
daemon installed): the logdir sits on a real tmpfs mount, and ``HF_MPWRITER_NETWORK_FS=tmpfs`` makes
the detector count that real mount as a network one. The mount table, the detection, SQLite and the
processes are all real; only the type's name is declared.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_data_safety import small_disk  # noqa: F401  (a fixture: a real tmpfs)
from upload_helpers import local_target_files, wait_for

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.state import filesystem
from hf_mpwriter.state.election import last_uploader_info
from hf_mpwriter.state.jobqueue import JobQueue
from hf_mpwriter.state.piece import Piece
from hf_mpwriter.state.queue_readers import read_failure
from hf_mpwriter.timing import LOCAL_RETRY_S, READ_FAILING_S

#: The variable that names more network file system types (the README's name for it).
NETWORK_FS_ENV = "HF_MPWRITER_NETWORK_FS"


def _journal(db: Path) -> str:
    """The journal mode SQLite's own file header records (byte 18: 1 rollback, 2 WAL)."""
    return {1: "rollback", 2: "wal"}[db.read_bytes()[18]]


def _mounted(point: Path) -> str | None:
    """The type the kernel's mount table gives ``point`` (read here, not through the code under test)."""
    with open("/proc/self/mounts") as table:
        types = [line.split()[2] for line in table if line.split()[1] == str(point)]
    return types[-1] if types else None


@pytest.fixture
def network_disk(small_disk, monkeypatch):  # noqa: F811
    """A real tmpfs mount that the detector counts as a network file system (see the module's docstring)."""
    assert _mounted(small_disk) == "tmpfs"  # the scenario: a mount of its own, not the test's directory
    monkeypatch.setenv(NETWORK_FS_ENV, "tmpfs")  # the uploader process inherits it
    return small_disk


def test_the_mount_table_names_the_file_system_of_a_path(small_disk, monkeypatch):  # noqa: F811
    monkeypatch.delenv(NETWORK_FS_ENV, raising=False)
    deep = small_disk / "logs" / ".hf_mpwriter" / "queue.db"  # not created: the mount is what counts
    assert filesystem.filesystem_type(deep) == "tmpfs"
    assert filesystem.filesystem_type(Path("/proc/self")) == "proc"  # the longest mount point wins
    assert filesystem.network_filesystem(deep) is None  # a local tmpfs keeps WAL
    for kind in ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "ceph", "fuse.sshfs", "9p", "beegfs"):
        assert filesystem.is_network(kind), kind
    for kind in ("ext4", "xfs", "btrfs", "tmpfs", "overlay", "fuseblk"):
        assert not filesystem.is_network(kind), kind
    monkeypatch.setenv(NETWORK_FS_ENV, "tmpfs, wekafs")
    assert filesystem.network_filesystem(deep) == "tmpfs" and filesystem.is_network("wekafs")


def test_a_queue_on_a_network_file_system_uses_a_rollback_journal(network_disk, tmp_path):
    """Writer, uploader process and close() on a logdir every node would share: the queue is never in
    WAL mode there (its ``-shm`` index is memory of one host), and close() sees the commit."""
    logdir = network_disk / "logs"
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, commit_every=1,
                             close_timeout=60)
    writer.add_scalar("loss", 1.0, 0)
    started = time.monotonic()
    writer.close()
    took = time.monotonic() - started
    queue = logdir / ".hf_mpwriter" / "queue.db"
    assert _journal(queue) == "rollback"
    assert not (queue.parent / "queue.db-wal").exists() and not (queue.parent / "queue.db-shm").exists()
    # close() read the queue (no read of it kept failing) and saw the commit before its close_timeout.
    assert read_failure(queue) is None and took < writer.close_timeout, (read_failure(queue), took)
    assert local_target_files(tmp_path / "target", "tensorboard/logs")  # it landed
    # The uploader may still be writing the queue (its audit) when close() returns: on a rollback journal a
    # read-only reader can meet that write and fail once (seen once in CI under load); status says so then.
    wait_for(lambda: collect(logdir)["up_to_date"], 10, "status to read the queue and find everything committed")


def test_a_wal_queue_already_there_is_switched_once_nobody_reads_it(small_disk, monkeypatch):  # noqa: F811
    """A queue made in WAL mode (by an older version, or before the logdir was moved) is switched to a
    rollback journal; that needs the database to itself, so while a reader holds it open the
    uploader's open fails with a message (retried by its loop) and the queue is kept as it is."""
    monkeypatch.delenv(NETWORK_FS_ENV, raising=False)
    db = small_disk / "queue.db"
    queue = JobQueue(db)
    queue.add("target", [Piece(path="run/a.tfevents", size=10, sha256="0" * 64, source="run/a.tfevents")])
    queue.close()
    assert _journal(db) == "wal"  # the scenario: a WAL queue, as the unmodified code makes everywhere
    monkeypatch.setenv(NETWORK_FS_ENV, "tmpfs")
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # a writer's close() reading it
    reader.execute("SELECT COUNT(*) FROM jobs").fetchone()
    try:
        with pytest.raises(sqlite3.OperationalError, match="rollback journal"):
            JobQueue(db)
    finally:
        reader.close()
    assert not list(small_disk.glob("queue.db.corrupt-*")), "a healthy queue was set aside"
    queue = JobQueue(db)
    try:
        assert queue.unfinished("target") is not None  # the job survived the switch
    finally:
        queue.close()
    assert _journal(db) == "rollback" and not (small_disk / "queue.db-wal").exists()


def test_a_queue_nobody_can_read_is_said_not_waited_out_in_silence(tmp_path, caplog):
    """The writer's close(), ``status`` and the uploader each say that the queue cannot be read, and
    what to check, instead of waiting out close_timeout, claiming a rebuild, or retrying without a word."""
    caplog.set_level(logging.WARNING, logger="hf_mpwriter")
    logdir = tmp_path / "logs"
    state = logdir / ".hf_mpwriter"
    state.mkdir(parents=True)
    (state / "queue.db").mkdir()  # SQLite cannot open it, now or later: every read fails alike
    with pytest.raises(sqlite3.OperationalError) as met:  # the scenario: a real, lasting OperationalError
        sqlite3.connect(f"file:{state / 'queue.db'}?mode=ro", uri=True).execute("SELECT 1 FROM jobs")
    writer = HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, commit_every=1,
                             close_timeout=READ_FAILING_S + 5)
    writer.add_scalar("loss", 1.0, 0)
    writer.close()
    # This process saw its reads fail for READ_FAILING_S (what close() reports from), and said the error.
    assert read_failure(state / "queue.db") == str(met.value)
    assert [r for r in caplog.records if r.levelno == logging.WARNING and str(met.value) in r.getMessage()], caplog.text
    status = collect(logdir)
    assert status["last_error_kind"] == "queue" and status["pending_jobs"] == 0, status  # said, not rebuilt

    def failed_tries() -> list[float]:  # when the uploader's tries failed on the queue, as status shows them
        uploader = collect(logdir)["uploader"] or last_uploader_info(logdir)  # (the latter: once it exited)
        return (uploader or {}).get("local_error_times") or []

    wait_for(lambda: len(failed_tries()) >= 2, 20 + 2 * LOCAL_RETRY_S, "the uploader to retry")  # it retried...
    tries = failed_tries()
    assert min(b - a for a, b in zip(tries, tries[1:])) > LOCAL_RETRY_S / 2, tries  # ...every LOCAL_RETRY_S, not every poll
    assert os.path.isdir(state / "queue.db")  # nothing set aside or rebuilt over it


_KILLED_MID_WRITE = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")  # pages go to the file (and the journal) before the commit
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE jobs SET pieces = pieces || zeroblob(20000)")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_write_interrupted_on_a_network_file_system_is_rolled_back_by_the_next_uploader(network_disk, tmp_path):
    """A rollback journal left by an uploader killed mid-write stops read-only readers (they cannot undo
    it): ``status`` says so and that the next uploader start rolls it back, which it does."""
    logdir = network_disk / "logs"
    with HFSummaryWriter(logdir=str(logdir), target_dir=str(tmp_path / "target"), rank=0, uploader="none") as writer:
        writer.add_scalar("loss", 1.0, 0)
    db = logdir / ".hf_mpwriter" / "queue.db"
    queue = JobQueue(db)
    job = queue.add("target", [Piece(path="run/a.tfevents", size=10, sha256="0" * 64, source="run/a.tfevents")])
    queue.close()
    subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(db)], timeout=60)
    assert Path(f"{db}-journal").stat().st_size > 0  # the scenario: a hot journal, in rollback mode
    assert collect(logdir)["last_error_kind"] == "queue"  # status cannot read it, and says so
    queue = JobQueue(db)  # what the next uploader does first
    try:
        assert queue.unfinished("target").pieces == job.pieces  # rolled back: the job as it was committed
    finally:
        queue.close()
    assert collect(logdir)["last_error"] is None
