"""A Hub Storage Bucket as the target, through the real ``huggingface_hub.HfApi`` bucket methods.

Buckets are mutable, non-versioned, Xet-backed object storage: no git commits, so no ~128 commits per
hour limit and no 409/412 between writers. Logs can be fresh within seconds, and every node of a job
can write its own files at the same time.

What is guaranteed, exactly (a bucket write is per file and not transactional):

- each file is replaced whole (the Hub stores a new version of it, by Xet hash), so a reader never
  sees a torn record: the uploader only ever sends files cut at a whole record;
- a "commit" is one ``batch_bucket_files`` call; if it fails half-way, some files are new and others
  old, each of them whole; the uploader retries the batch, which re-sends only changed chunks;
- :meth:`BucketTarget.differences` asks ``get_bucket_paths_info`` for sizes and Xet hashes, and
  compares them with the local bytes (the Xet hash is computed by ``hf_xet`` on this machine);
- a write that lands after a newer one (an uploader killed mid-request, its request finished later
  by the Hub) makes the file older, which means shorter (event files only grow): the audit finds it
  and the uploader sends the newer version again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..errors import TargetError
from ..piece import Piece
from .base import Target, synthetic_commit_id
from .hub_client import UsesHubApi, classify

logger = logging.getLogger(__name__)

#: ``get_bucket_paths_info`` batch size (the client batches by 1000 itself; one call per this many).
PATHS_PER_CALL = 1000


def parse_bucket_url(url: str) -> tuple[str, str] | None:
    """``hf://buckets/ns/name/some/prefix`` -> ``("ns/name", "some/prefix")``; ``None`` if not a bucket URL."""
    if not url.startswith("hf://buckets/"):
        return None
    parts = url[len("hf://buckets/"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def xet_hash(path: str, size: int) -> str | None:
    """The Xet hash of the file at ``path`` if it has exactly ``size`` bytes (``None`` otherwise)."""
    import os

    try:
        if os.path.getsize(path) != size:
            return None
        import hf_xet

        [info] = hf_xet.hash_files([path])
        return str(info.hash)
    except Exception:  # no hf_xet, an unreadable file: the size is all that can be compared
        return None


class BucketTarget(UsesHubApi, Target):
    """Writes into bucket ``bucket_id`` under ``prefix``."""

    #: No commit rate limit: closing writers get their files stored at once.
    min_interval = 0.0

    def __init__(
        self, bucket_id: str, *, prefix: str, private: bool | None = None, token: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(prefix)
        self.repo_id = bucket_id  # the name every target exposes for "where", completed by prepare()
        self.private = private
        self._token = token
        self._endpoint = endpoint
        self._api: Any = None
        self.key = f"bucket:{bucket_id}:{self.prefix}"

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"hf://buckets/{self.repo_id}" + (f"/{self.prefix}" if self.prefix else "")

    @property
    def reader_url(self) -> str:  # type: ignore[override]
        return self.description

    def prepare(self) -> None:
        """Create the bucket if needed (a name without namespace goes to the token's namespace)."""
        try:
            url = self.api.create_bucket(self.repo_id, private=self.private, exist_ok=True)
        except Exception as exc:
            raise self._error(exc, "create the bucket") from None
        resolved = getattr(url, "bucket_id", None) or getattr(url, "repo_id", None)
        if resolved and resolved != self.repo_id:
            logger.info("bucket %r is %r", self.repo_id, resolved)
            self.repo_id = resolved

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """One ``batch_bucket_files`` call: each file replaced whole (see the module docstring)."""
        try:
            self.api.batch_bucket_files(self.repo_id, add=[(p.local_path, self.remote_path(p)) for p in pieces])
        except Exception as exc:
            raise self._error(exc, "write") from None
        return synthetic_commit_id(pieces)

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        wrong: dict[str, str] = {}
        for start in range(0, len(pieces), PATHS_PER_CALL):
            batch = pieces[start:start + PATHS_PER_CALL]
            try:
                infos = list(self.api.get_bucket_paths_info(self.repo_id, [self.remote_path(p) for p in batch]))
            except Exception as exc:
                raise self._error(exc, "list remote files") from None
            remote = {info.path: info for info in infos}
            for piece in batch:
                info = remote.get(self.remote_path(piece))
                if info is None:
                    wrong[piece.path] = "missing"
                elif info.size != piece.size:
                    wrong[piece.path] = f"holds {info.size} bytes, {piece.size} expected"
                else:
                    local = xet_hash(piece.local_path, piece.size)
                    remote_hash = getattr(info, "xet_hash", None)
                    if local is not None and remote_hash and local != remote_hash:
                        wrong[piece.path] = "same size, different content (Xet hash)"
        return wrong

    def read(self, path: str) -> bytes:
        """A remote file's bytes, downloaded through the client (``HfFileSystem`` on ``hf://buckets``)."""
        from huggingface_hub import HfFileSystem

        remote = f"buckets/{self.repo_id}/{self.prefix}/{path}" if self.prefix else f"buckets/{self.repo_id}/{path}"
        fs = HfFileSystem(token=self._token, endpoint=self.api.endpoint)
        with self.api.scope(), fs.open(remote, "rb") as handle:
            return handle.read()

    def _error(self, exc: BaseException, doing: str) -> TargetError:
        return classify(exc, doing, f"bucket {self.repo_id!r}", self._token, missing="the bucket was not found",
                        fix_missing="Check the bucket id, and that the token can see it")
