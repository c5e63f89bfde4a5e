"""The interface every target implements, and what the uploader relies on."""

from __future__ import annotations

import abc
from typing import Optional, Sequence

from ..snapshot import Piece


class Target(abc.ABC):
    """A place that holds a copy of the logdir under ``prefix``.

    Contract the uploader relies on:

    - :meth:`commit` is atomic per file (a file is replaced by a whole new version, never left
      half-written) and idempotent: committing content the target already holds is harmless;
    - :meth:`holds` tells whether the target already has exactly these pieces, which resolves a
      commit whose outcome is unknown (crash or lost response) without sending it twice;
    - failures raise :class:`~hf_mpwriter.errors.TargetError`, ``transient`` or not.
    """

    #: Identity of the target for the queue: committed offsets are per target.
    key: str
    #: For people: where the logs go.
    description: str
    #: Seconds between commits the target tolerates; commits asked for by closing writers are spaced
    #: at least this much (the Hub accepts about 128 commits per hour per repository).
    min_interval: float = 0.0

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.strip("/")

    def remote_path(self, piece: Piece) -> str:
        return f"{self.prefix}/{piece.path}" if self.prefix else piece.path

    def prepare(self) -> None:
        """Create what must exist before the first commit (repository, model card). Idempotent."""

    @abc.abstractmethod
    def commit(self, pieces: Sequence[Piece], message: str) -> Optional[str]:
        """Make the target hold ``pieces``; return a commit id."""

    @abc.abstractmethod
    def holds(self, pieces: Sequence[Piece]) -> bool:
        """Whether the target already holds exactly these pieces."""

    def read(self, path: str) -> bytes:
        """Content of a remote file (relative to ``prefix``): for verification."""
        raise NotImplementedError
