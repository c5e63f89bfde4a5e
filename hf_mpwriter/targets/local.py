"""A local directory as the target: offline, air-gapped and demo use, with the Hub's guarantees.

Each file is replaced atomically (written to a temporary name, fsynced, renamed), and each commit
is appended to ``<directory>/.hf_mpwriter-commits.jsonl`` with its id, time and files, so the
directory has a history like a repository's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import TargetError
from ..snapshot import Piece, sha256_prefix
from .base import Target

COMMIT_LOG = ".hf_mpwriter-commits.jsonl"


class LocalTarget(Target):
    """Commits into ``directory/<prefix>/``."""

    def __init__(self, directory: str | os.PathLike, prefix: str = "") -> None:
        super().__init__(prefix)
        self.directory = Path(directory).expanduser().resolve()
        self.key = f"local:{self.directory}:{self.prefix}"
        self.description = str(self.directory)

    def prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot create target directory {self.directory}: {exc}", transient=False) from None

    def commit(self, pieces: Sequence[Piece], message: str) -> Optional[str]:
        commit_id = hashlib.sha1(
            json.dumps([(p.path, p.sha256) for p in pieces] + [time.time()]).encode()
        ).hexdigest()
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

    def _replace(self, piece: Piece) -> None:
        dest = self.directory / self.remote_path(piece)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # No "tfevents" in the name: TensorBoard reads every such file, so a partial copy (mid-commit,
        # or left by a crash) would show as duplicated, truncated data.
        tmp = dest.with_name(f".hf_mpwriter-partial.{os.getpid()}.tmp")
        with open(piece.local_path, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.truncate(piece.size)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)

    def holds(self, pieces: Sequence[Piece]) -> bool:
        for piece in pieces:
            dest = self.directory / self.remote_path(piece)
            try:
                if dest.stat().st_size != piece.size or sha256_prefix(dest, piece.size) != piece.sha256:
                    return False
            except OSError:
                return False
        return True

    def read(self, path: str) -> bytes:
        return (self.directory / self.prefix / path).read_bytes()
