"""The audit's loop over what a Hub target holds: remote file infos asked in batches, compared piece by piece.

Both Hub targets ask the Hub for the files a list of pieces should be (``get_paths_info`` for a
repository, ``get_bucket_paths_info`` for a bucket) and compare each answer with the local bytes;
only the call, the batch size and the comparison differ. A module of its own, not in one target
that the other imports: the two targets stay siblings, and neither loads the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..state.piece import Piece


def batched_differences(
    pieces: Sequence[Piece],
    *,
    remote_path: Callable[[Piece], str],
    fetch: Callable[[list[str]], Iterable[Any]],
    per_call: int,
    compare: Callable[[Piece, Any], str | None],
) -> dict[str, str]:
    """``{piece.path: what is wrong}`` for the pieces whose remote file does not match.

    ``fetch`` answers the infos (objects with a ``.path``) of the remote paths it is given, at most
    ``per_call`` of them per call; it raises the target's own error when the Hub cannot answer.
    ``compare(piece, info)`` says what is wrong with ``info`` (``None`` for a missing file), or
    ``None`` when it matches.
    """
    wrong: dict[str, str] = {}
    for start in range(0, len(pieces), per_call):
        batch = pieces[start:start + per_call]
        paths = [remote_path(piece) for piece in batch]
        remote = {info.path: info for info in fetch(paths)}
        for piece, path in zip(batch, paths):
            problem = compare(piece, remote.get(path))
            if problem:
                wrong[piece.path] = problem
    return wrong


def held_longer(where: str) -> Callable[[Piece, Any], str | None]:
    """A ``compare`` for :func:`batched_differences`: what is wrong where ``where`` (a revision, the bucket) holds a
    file longer than the piece (an event file only grows: the piece is older)."""

    def longer(piece: Piece, info: Any) -> str | None:
        size = getattr(info, "size", None)
        return f"{where} holds {size} bytes of it, newer" if isinstance(size, int) and size > piece.size else None

    return longer
