"""The unit that flows from snapshot to queue to target: a :class:`Piece`, and how to read one safely.

A piece names immutable data: "file F up to offset O, cut at a whole-record boundary, with sha256
S". The scanner makes pieces, the queue stores them, the targets send and check them; none of those
needs the others, so the piece lives here, beside nothing but the state directory's file helpers.

Reading is always ``O_NOFOLLOW`` and of regular files only: nothing outside the logdir is ever read,
even if a symlink is put where an event file was.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from .statedir import private_open

_CHUNK = 1 << 20


@dataclass
class Piece:
    """A prefix of one file, ready to commit (``path`` is relative to the logdir, POSIX style)."""

    path: str
    size: int
    sha256: str
    source: str  # the file in the logdir
    staged: str | None = None  # immutable copy of the first ``size`` bytes, if the file is open
    complete: bool = False  # the writer closed the file: nothing will be added to it

    @property
    def local_path(self) -> str:
        """A file whose whole content is this piece."""
        return self.staged or self.source

    def to_dict(self) -> dict:
        return asdict(self)


def open_nofollow(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading, refusing a symlink (``O_NOFOLLOW``) or anything not regular.

    Why: nothing outside the logdir may be uploaded. A symlink named like an event file (or any
    file with ``repo_allow_patterns=None``) would otherwise send the content of its target.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file; it is not uploaded")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_prefix(path: str | os.PathLike, size: int, copy_to: Path | None = None) -> str:
    """sha256 of the first ``size`` bytes of ``path``; also copies them to ``copy_to`` if given."""
    digest = hashlib.sha256()
    remaining = size
    out = os.fdopen(private_open(copy_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") if copy_to else None
    try:
        with open_nofollow(path) as src:
            while remaining:
                chunk = src.read(min(_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{path} is shorter than {size} bytes: it was truncated")
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
                remaining -= len(chunk)
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest()


class DigestCache:
    """Digests of files, each kept while its file keeps the same size, mtime and inode.

    Why: the audit compares every file ever committed, every few minutes; reading each of them again
    every time made its cost grow with the run's length. A file written since (rewritten in place,
    replaced, appended to) has another ``stat``, and is read again. Used by every target whose audit
    reads local bytes (a local directory's copies, a bucket's Xet hashes)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[int, int, int], str]] = {}

    def digest(self, path: str, st: os.stat_result, compute: Callable[[], str | None]) -> str | None:
        """``compute()``, the digest of the file at ``path`` whose ``stat`` is ``st`` (taken before the
        read: a write during it changes the ``stat`` again), or the one kept from an earlier read of the
        same file. ``None`` (could not be computed) is not kept."""
        kept = self._kept.get(path)
        if kept is not None and kept[0] == _identity(st):
            return kept[1]
        value = compute()
        if value is None:
            self._kept.pop(path, None)
        else:
            self._kept[path] = (_identity(st), value)
        return value

    def knows(self, path: str, st: os.stat_result) -> bool:
        """Whether :meth:`digest` would answer for this file without reading it."""
        kept = self._kept.get(path)
        return kept is not None and kept[0] == _identity(st)

    def forget(self, path: str) -> None:
        """Drop what is kept for ``path`` (replaced on purpose: no need to keep its old digest)."""
        self._kept.pop(path, None)


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino
