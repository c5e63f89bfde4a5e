"""The interface every target implements, and what the uploader relies on."""

from __future__ import annotations

import abc
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..state.piece import Piece
from ..upload_args import check_remote_path


@dataclass(frozen=True)
class UploadedFile:
    """A file whose content is in the Hub's storage, ready to be committed by anyone (a job's leader):
    its full path in the repository or bucket, the sha256 and size of its content, and its Xet hash
    (what a bucket's batch names content by; a repository's commit names it by sha256)."""

    path: str
    sha256: str
    size: int
    xet_hash: str | None = None


def as_pieces(files: Sequence[UploadedFile]) -> list[Piece]:
    """Uploaded files as pieces to compare with what the target holds (full paths in it)."""
    return [Piece(path=f.path, size=f.size, sha256=f.sha256, source="") for f in files]


def synthetic_commit_id(pieces: Sequence[Piece]) -> str:
    """A commit id for a target without commits (a local directory, a bucket): unique per write,
    40 hex digits like a git oid, so the queue and ``status`` treat every target alike."""
    return hashlib.sha1(json.dumps([[p.path, p.sha256] for p in pieces] + [time.time()]).encode()).hexdigest()


class Target(abc.ABC):
    """A place that holds a copy of the logdir under ``prefix``.

    Contract the uploader relies on:

    - :meth:`commit` is atomic per file (a file is replaced by a whole new version, never left
      half-written) and idempotent: committing content the target already holds is harmless;
    - :meth:`differences` says which pieces the target does *not* hold exactly (missing, shorter,
      different): it resolves a commit whose outcome is unknown (crash or lost response) without
      sending it twice, and it is how the uploader audits what it believes committed;
    - failures raise :class:`~hf_mpwriter.errors.TargetError`, ``transient`` or not.
    """

    #: Identity of the target for the queue: committed offsets are per target.
    key: str
    #: For people: where the logs go.
    description: str
    #: Where a reader finds the copy: an ``hf://`` URL (``huggingface_hub.HfFileSystem``, which
    #: TensorBoard reads through fsspec) or a local path. What ``hf-mpwriter view`` opens.
    reader_url: str
    #: Seconds between commits the target tolerates; commits asked for by closing writers are spaced
    #: at least this much (the Hub accepts about 128 commits per hour per repository).
    min_interval: float = 0.0

    def __init__(self, prefix: str) -> None:
        self.prefix = check_remote_path(prefix.strip("/"), "the target prefix (path_in_repo)")

    def remote_path(self, piece: Piece) -> str:
        path = check_remote_path(piece.path, "a queued file path")
        return f"{self.prefix}/{path}" if self.prefix else path

    def reset_client(self) -> None:  # noqa: B027 - optional hook: targets without a client need nothing
        """Drop the client after a call was abandoned (it may still hold it): the next call starts afresh."""

    def prepare(self) -> None:  # noqa: B027 - optional hook: most targets need nothing
        """Create what must exist before the first commit (repository, model card). Idempotent."""

    @abc.abstractmethod
    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """Make the target hold ``pieces``; return a commit id."""

    def holds(self, pieces: Sequence[Piece]) -> bool:
        """Whether the target already holds exactly these pieces."""
        return not self.differences(pieces)

    @abc.abstractmethod
    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """``piece.path -> what is wrong`` for every piece the target does not hold exactly."""

    def audit_every(self, seconds: float) -> float:
        """Seconds until this target's next periodic audit, given the settings' ``audit_every``."""
        return seconds

    def local_reads(self, pieces: Sequence[Piece]) -> int:
        """Bytes :meth:`differences` of ``pieces`` reads from this machine's disk (what it hashes): the
        uploader bounds that call for them too, so a large logdir's first audit is not abandoned."""
        return 0

    def read(self, path: str) -> bytes:
        """Content of a remote file (relative to ``prefix``): for verification."""
        raise NotImplementedError

    def listing(self, folder: str) -> list[str]:
        """The remote files under ``folder`` (relative to ``prefix``; ``.``: all), paths relative to ``prefix``:
        what a resumed run's earlier attempt left there (:mod:`hf_mpwriter.uploader.lost_steps`)."""
        raise NotImplementedError
