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

import functools
import logging
import os
import posixpath
from collections.abc import Callable, Sequence
from typing import Any

from ..config import describe_target, target_key
from ..errors import TargetError
from ..state.piece import DigestCache, Piece
from ..timing import HTTP_TIMEOUT_S
from .base import Target, UploadedFile, as_pieces, synthetic_commit_id
from .batching import batched_differences, held_longer
from .hub_client import UsesHubApi, classify
from .xet_content import Connection, SharesXetToken, XetContent, XetUnavailable, event_files_only, xet_usable

logger = logging.getLogger(__name__)

#: ``get_bucket_paths_info`` batch size (the client batches by 1000 itself; one call per this many).
PATHS_PER_CALL = 1000


def xet_hash(path: str, size: int, digests: DigestCache | None = None) -> str | None:
    """The Xet hash of the file at ``path`` if it has exactly ``size`` bytes (``None`` otherwise); the
    one ``digests`` kept if the file is unchanged since it was hashed."""
    try:
        st = os.stat(path)
        if st.st_size != size:
            return None
        return digests.digest(path, st, functools.partial(_hash_file, path)) if digests else _hash_file(path)
    except Exception:  # no hf_xet, an unreadable file: the size is all that can be compared
        return None


def _hash_file(path: str) -> str:
    import hf_xet

    [info] = hf_xet.hash_files([path])
    return str(info.hash)


def _compare(digests: DigestCache, piece: Piece, info: Any) -> str | None:
    """What is wrong with the remote file ``info`` for ``piece``, or ``None`` if it matches. The Xet hash
    of a file of the logdir is kept in ``digests``; a staged copy's is not (it is deleted after the
    commit's check: its name would only pile up there)."""
    if info is None:
        return "missing"
    if info.size != piece.size:
        return f"holds {info.size} bytes, {piece.size} expected"
    local = xet_hash(piece.local_path, piece.size, digests if piece.staged is None else None)
    remote_hash = getattr(info, "xet_hash", None)
    if local is not None and remote_hash and local != remote_hash:
        return "same size, different content (Xet hash)"
    return None


def batch_takes_xet_hashes() -> bool:
    """Whether this huggingface_hub's ``batch_bucket_files`` adds files named by Xet hash alone (what a
    job's leader sends for content the nodes uploaded): 1.10 and later take its ``_BucketAddFile``
    with ``xet_hash`` set and send it as is; 1.5-1.9 accept only ``(local file, path)`` pairs."""
    try:
        import huggingface_hub
        from huggingface_hub._buckets import _BucketAddFile
    except ImportError:
        return False
    major, minor = (int(part) for part in huggingface_hub.__version__.split(".")[:2])
    return (major, minor) >= (1, 10) and "xet_hash" in getattr(_BucketAddFile, "__dataclass_fields__", {})


class BucketTarget(UsesHubApi, SharesXetToken, Target):
    """Writes into bucket ``bucket_id`` under ``prefix``."""

    #: No commit rate limit: closing writers get their files stored at once.
    min_interval = 0.0
    kind = "bucket"  # (the job's budget: API requests only)
    paths_per_call = PATHS_PER_CALL  # (the audit's batches: per target, a test makes them small)

    def __init__(
        self, bucket_id: str, *, prefix: str, private: bool | None = None, token: str | None = None,
        endpoint: str | None = None, http_timeout: float = HTTP_TIMEOUT_S,
    ) -> None:
        super().__init__(prefix)
        self.http_timeout = http_timeout
        self.repo_id = bucket_id  # the name every target exposes for "where", completed by prepare()
        self.private = private
        self._token = token
        self._endpoint = endpoint
        self._api: Any = None
        self._xet: XetContent | None = None  # set by use_xet_content()
        #: Where a multi-node job's shared Xet write token comes from (set by the job's member before prepare).
        self.job_xet_token: Callable[[], Connection | None] | None = None
        self._digests = DigestCache()  # the local files' Xet hashes, computed once while they stay unchanged
        self.key = target_key("bucket", repo_id=bucket_id, repo_type="bucket", revision="main", directory=None,
                              prefix=self.prefix)

    @property
    def description(self) -> str:  # type: ignore[override]
        return describe_target("bucket", repo_id=self.repo_id, repo_type="bucket", directory=None, prefix=self.prefix,
                               endpoint="")

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
        self.use_xet_content()

    def prepared_elsewhere(self, bucket_id: str) -> None:
        """Another node of the job created this bucket (:meth:`prepare`), and the Hub named it ``bucket_id``."""
        self.repo_id = bucket_id
        self.use_xet_content()

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """One ``batch_bucket_files`` call: each file replaced whole (see the module docstring).

        With hf_xet and huggingface_hub 1.10+ the content goes to Xet with a kept write token first and
        the batch names it by hash (:meth:`preupload`, :meth:`commit_uploaded`): no token request per
        write, which ``batch_bucket_files`` sending the files itself makes."""
        uploaded = self.preupload(pieces)
        if uploaded is not None:
            return self.commit_uploaded(uploaded, message)
        try:
            self.api.batch_bucket_files(self.repo_id, add=[(p.local_path, self.remote_path(p)) for p in pieces])
        except Exception as exc:
            raise self._error(exc, "write") from None
        return synthetic_commit_id(pieces)

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """Compare sizes and Xet hashes with ``get_bucket_paths_info``, one call per batch of files. A local
        file unchanged since the last audit is not hashed again: an audit costs what changed since."""
        return batched_differences(pieces, remote_path=self.remote_path, fetch=self._paths_info,
                                   per_call=self.paths_per_call, compare=functools.partial(_compare, self._digests))

    def local_reads(self, pieces: Sequence[Piece]) -> int:
        """The size of each local file :meth:`differences` would hash (of the right size, not hashed
        since it changed; a staged copy always)."""
        unread = 0
        for piece in pieces:
            try:
                st = os.stat(piece.local_path)
            except OSError:
                continue
            if st.st_size == piece.size and (piece.staged is not None or not self._digests.knows(piece.local_path, st)):
                unread += piece.size
        return unread

    # -- a job's leader writes what the nodes uploaded (hf_mpwriter.uploader.coordination.member) ------------
    def use_xet_content(self) -> None:
        """Send content straight to the bucket's Xet storage in :meth:`preupload`, with a kept token."""
        from huggingface_hub import constants

        if xet_usable() and batch_takes_xet_hashes():
            self._xet = XetContent(self._endpoint or constants.ENDPOINT, self.repo_id, "bucket", None, self._token,
                                   self.http_timeout, self.job_xet_token)

    def preupload(self, pieces: Sequence[Piece]) -> list[UploadedFile] | None:
        """Send the content of ``pieces`` to the bucket's Xet storage, not write the files: what another
        process can then write by Xet hash (:meth:`commit_uploaded`). ``None`` where that cannot be done
        here (no hf_xet, a huggingface_hub whose batch takes no Xet hash): only this node can write them."""
        if self._xet is None:
            return None
        try:
            hashes = self._xet.upload([p.local_path for p in pieces], [p.sha256 for p in pieces])
        except XetUnavailable as exc:
            logger.info("%s; this node writes its files itself", exc)
            self._xet = None
            return None
        except Exception as exc:
            raise self._error(exc, "upload content to Xet") from None
        return [UploadedFile(self.remote_path(p), p.sha256, size, xet_hash)
                for p, (xet_hash, size) in zip(pieces, hashes)]

    def parent(self) -> None:
        """A bucket has no history to fence against (see the module's docstring)."""
        return None

    def behind(self, files: Sequence[UploadedFile], revision: str | None = None) -> dict[str, str]:
        """``path -> what is wrong`` for each event file of ``files`` the bucket holds longer now (a bucket has one
        state: ``revision`` is not used): an event file only grows, so those are older than a write made since.
        One ``get_bucket_paths_info`` call per :data:`PATHS_PER_CALL` event files."""
        pieces = as_pieces([f for f in files if event_files_only([f.path])])
        return batched_differences(pieces, remote_path=lambda p: p.path, fetch=self._paths_info,
                                   per_call=self.paths_per_call, compare=held_longer("the bucket"))

    def commit_uploaded(self, files: Sequence[UploadedFile], message: str, parent: str | None = None) -> str | None:
        """One ``batch_bucket_files`` call naming each file by the Xet hash a node uploaded.

        The public call takes only local files to upload; ``_BucketAddFile`` with ``xet_hash`` set is
        how huggingface_hub itself names uploaded content in that same call (1.10+:
        :func:`batch_takes_xet_hashes`). The Hub refuses a hash not uploaded to this bucket."""
        from huggingface_hub._buckets import _BucketAddFile

        adds = [_BucketAddFile(source=b"", destination=f.path, xet_hash=f.xet_hash, size=f.size) for f in files]
        try:
            self.api.batch_bucket_files(self.repo_id, add=adds)
        except Exception as exc:
            raise self._error(exc, "write") from None
        return synthetic_commit_id(as_pieces(files))

    def verify_uploaded(self, files: Sequence[UploadedFile]) -> dict[str, str]:
        """``path -> what is wrong`` for each of ``files`` (full paths) the bucket does not hold with that
        size and Xet hash: one ``get_bucket_paths_info`` call per :data:`PATHS_PER_CALL` files."""
        expected = {f.path: f.xet_hash for f in files}

        def compare(piece: Piece, info: Any) -> str | None:
            if info is None:
                return "missing"
            if info.size != piece.size:
                return f"holds {info.size} bytes, {piece.size} expected"
            if getattr(info, "xet_hash", None) != expected[piece.path]:
                return "same size, different content (Xet hash)"
            return None

        return batched_differences(as_pieces(files), remote_path=lambda p: p.path, fetch=self._paths_info,
                                   per_call=self.paths_per_call, compare=compare)

    def _paths_info(self, paths: list[str]) -> list[Any]:
        try:
            return list(self.api.get_bucket_paths_info(self.repo_id, paths))
        except Exception as exc:
            raise self._error(exc, "list remote files") from None

    def read(self, path: str) -> bytes:
        """A remote file's bytes, downloaded through the client (``HfFileSystem`` on ``hf://buckets``)."""
        from huggingface_hub import HfFileSystem

        remote = f"buckets/{self.repo_id}/{self.prefix}/{path}" if self.prefix else f"buckets/{self.repo_id}/{path}"
        fs = HfFileSystem(token=self._token, endpoint=self.api.endpoint)
        with fs.open(remote, "rb") as handle:
            return handle.read()

    def listing(self, folder: str) -> list[str]:
        where = posixpath.normpath(posixpath.join(self.prefix, folder)) if self.prefix else folder
        try:
            entries = self.api.list_bucket_tree(self.repo_id, prefix=None if where == "." else where, recursive=True)
            paths = [entry.path for entry in entries if type(entry).__name__ == "BucketFile"]
        except Exception as exc:
            raise self._error(exc, "list files") from None
        return sorted(posixpath.relpath(path, self.prefix) if self.prefix else path for path in paths)

    def _error(self, exc: BaseException, doing: str) -> TargetError:
        return classify(exc, doing, f"bucket {self.repo_id!r}", self._token, missing="the bucket was not found",
                        fix_missing="Check the bucket id, and that the token can see it")
