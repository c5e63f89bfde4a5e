"""Which journal the queue's file system allows: SQLite's WAL, or only a rollback journal.

Why: WAL keeps its index in memory that every process maps (the ``-shm`` file), so "WAL does not
work over a network filesystem" (sqlite.org/wal.html): processes of two hosts each see their own
memory, and a writer's ``close()`` on another node reads a stale queue, or fails. The README supports
a logdir shared by every node (Lustre, NFSv4, GPFS): there the queue uses a rollback journal
(``journal_mode=DELETE``), which needs only the POSIX locks such a file system provides to all
nodes (the uploader's election needs them too). Elsewhere WAL stays: readers never wait on the uploader.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import psutil

from .. import environment

logger = logging.getLogger(__name__)

#: File system types (as the mount table names them) whose files processes of other hosts open:
#: NFS, Lustre, GPFS (Spectrum Scale), SMB, Ceph, BeeGFS, GlusterFS, 9p, AFS, shared-disk GFS2 and
#: OCFS2, and the rest of the usual cluster file systems. Any FUSE file system (``fuse.sshfs``,
#: ``fuse.s3fs``...) counts too: its daemon may be remote, and a rollback journal works on a local one.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "ceph", "beegfs", "glusterfs", "9p", "afs",
    "gfs2", "ocfs2", "panfs", "wekafs", "pvfs2", "orangefs", "vxfs", "davfs", "webdav", "afpfs", "fuse",
})


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the file system ``path`` is on (``path`` need not exist yet), from the mount table:
    the mount with the longest mount point above it, the later one where two share a point (the one
    on top). ``None`` where the table cannot be read."""
    where = os.path.realpath(path)
    try:
        mounts = psutil.disk_partitions(all=True)
    except (OSError, psutil.Error) as exc:
        logger.debug("cannot read the mount table (%s)", exc)
        return None
    found, longest = None, -1
    for mount in mounts:
        point = mount.mountpoint
        inside = where == point or where.startswith(point.rstrip(os.sep) + os.sep)
        if inside and len(point) >= longest:
            found, longest = mount.fstype, len(point)
    return found


def is_network(kind: str) -> bool:
    """Whether file system type ``kind`` is one that processes of other hosts may share."""
    extra = environment.read().network_fs  # HF_MPWRITER_NETWORK_FS: types the list above lacks
    kind = kind.lower()
    return kind in NETWORK_FILESYSTEMS or kind in extra or kind.startswith("fuse.")


def network_filesystem(path: str | os.PathLike) -> str | None:
    """The type of ``path``'s file system if it is a network one, else ``None``."""
    kind = filesystem_type(path)
    return kind if kind and is_network(kind) else None


def set_journal(db: sqlite3.Connection, path: Path) -> str:
    """Put the queue ``path`` (open as ``db``) in the journal mode its file system allows; the mode.

    Switching an existing queue between WAL and a rollback journal needs it to itself. On a network
    file system, while another process has it open, this raises ``sqlite3.OperationalError`` (the
    uploader's loop retries it); elsewhere a queue that cannot switch keeps its rollback journal,
    which works anywhere, until the next open."""
    network = network_filesystem(path.parent)
    try:
        mode = str(db.execute(f"PRAGMA journal_mode={'delete' if network else 'wal'}").fetchone()[0]).lower()
    except sqlite3.OperationalError as exc:  # in the other mode, and open elsewhere
        mode = f"unchanged ({exc})" if network else str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if network and mode != "delete":
        raise sqlite3.OperationalError(
            f"cannot switch the queue {path} from WAL to a rollback journal ({network} is a network file system): "
            f"journal mode {mode}; the switch needs the queue to itself, and other processes read it now")
    db.execute("PRAGMA synchronous=NORMAL" if mode == "wal" else "PRAGMA synchronous=FULL")
    if network:
        logger.info("the queue %s is on a network file system (%s): it uses a rollback journal, not WAL", path, network)
    return mode


def queue_advice(db: Path) -> str:
    """What to check when the queue ``db`` keeps failing: its file system, and what that needs."""
    kind = filesystem_type(db.parent) or "a file system of unknown type"
    if Path(f"{db}-journal").exists():  # SQLite's rollback journal of a write that was interrupted
        return (f"a write to the queue was interrupted ({db.name}-journal is there; read-only readers cannot undo it): "
                f"the next uploader start, or `hf-mpwriter sync`, rolls it back")
    if is_network(kind):
        return (f"{db.parent} is on {kind}, a network file system: SQLite needs POSIX locks that work there "
                f"(NFS without `nolock`, Lustre mounted with `flock`); a node-local logdir needs none")
    return f"{db.parent} is on {kind}: check its free space, its permissions and that it is mounted read-write"
