"""A local directory as the target: offline, air-gapped and demo use, with the Hub's guarantees.

Each file is replaced atomically (written to a temporary name, fsynced, renamed), and each commit
is appended to ``<directory>/.hf_mpwriter-commits.jsonl`` with its id, time and files, so the
directory has a history like a repository's.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import describe_target, target_key
from ..errors import TargetError
from ..state.piece import DigestCache, Piece, open_nofollow, sha256_prefix
from .base import Target, synthetic_commit_id

COMMIT_LOG = ".hf_mpwriter-commits.jsonl"


class LocalTarget(Target):
    """Commits into ``directory/<prefix>/``."""

    def __init__(self, directory: str | os.PathLike, prefix: str = "") -> None:
        super().__init__(prefix)
        self.directory = Path(directory).expanduser().resolve()
        self.key = target_key("local", repo_id=None, repo_type="", revision="", directory=str(self.directory),
                              prefix=self.prefix)
        self.description = describe_target("local", repo_id=None, repo_type="", directory=str(self.directory),
                                           prefix=self.prefix, endpoint="")
        self.reader_url = str(self.directory / self.prefix)
        self._digests = DigestCache()  # the copies' sha256, read once while they stay unchanged

    def prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot create target directory {self.directory}: {exc}", transient=False) from None

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        commit_id = synthetic_commit_id(pieces)
        try:
            for piece in pieces:
                self._replace(piece)
            with open(self.directory / COMMIT_LOG, "a") as log:
                entry = {"id": commit_id, "time": time.time(), "message": message,
                         "files": {self.remote_path(p): p.size for p in pieces}}
                log.write(json.dumps(entry) + "\n")
        except OSError as exc:
            raise TargetError(f"cannot write to {self.directory}: {exc}", transient=True) from None
        return commit_id

    def _dest(self, piece: Piece) -> Path:
        """Where ``piece`` goes: always inside the directory, whatever symlinks it contains."""
        dest = self.directory / self.remote_path(piece)
        dest.parent.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(dest.parent)
        if os.path.commonpath([real, str(self.directory)]) != str(self.directory):
            raise TargetError(
                f"cannot write {piece.path}: {dest.parent} resolves to {real}, outside the target directory "
                f"{self.directory} (a symlink?); remove the link, then run `hf-mpwriter sync LOGDIR`",
                transient=False,
            )
        return dest

    def _replace(self, piece: Piece) -> None:
        dest = self._dest(piece)
        # No "tfevents" in the name: TensorBoard reads every such file, so a partial copy (mid-commit,
        # or left by a crash) would show as duplicated, truncated data.
        tmp = dest.with_name(f".hf_mpwriter-partial.{os.getpid()}.tmp")
        with open_nofollow(piece.local_path) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.truncate(piece.size)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        self._digests.forget(str(dest))

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """Compare sizes and sha256 with the files on disk.

        A file hashed before and unchanged since (same size, mtime and inode) is not hashed again
        (:class:`~hf_mpwriter.state.piece.DigestCache`): an audit of a long run then costs a ``stat``
        per file, not a read of every byte.
        """
        wrong = {}
        for piece in pieces:
            dest = self.directory / self.remote_path(piece)
            try:
                st = os.lstat(dest)
                if not stat.S_ISREG(st.st_mode):
                    wrong[piece.path] = "not a regular file"
                    continue
                if st.st_size != piece.size:
                    wrong[piece.path] = f"holds {st.st_size} bytes, {piece.size} expected"
                    continue
                digest = self._digests.digest(str(dest), st, functools.partial(sha256_prefix, dest, piece.size))
                if digest != piece.sha256:
                    wrong[piece.path] = "same size, different content (sha256)"
            except OSError:
                wrong[piece.path] = "missing"
        return wrong

    def local_reads(self, pieces: Sequence[Piece]) -> int:
        """The size of each copy :meth:`differences` would hash: of the right size, not hashed since it changed."""
        unread = 0
        for piece in pieces:
            dest = str(self.directory / self.remote_path(piece))
            try:
                st = os.lstat(dest)
            except OSError:
                continue
            if st.st_size == piece.size and not self._digests.knows(dest, st):
                unread += piece.size
        return unread

    def read(self, path: str) -> bytes:
        return (self.directory / self.prefix / path).read_bytes()

    def listing(self, folder: str) -> list[str]:
        root = self.directory / self.prefix
        return sorted(p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file())
