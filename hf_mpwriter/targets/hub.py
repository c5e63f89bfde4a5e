"""The Hugging Face Hub as the target, through the real ``huggingface_hub.HfApi`` client.

Files are given to ``create_commit`` as *paths* (staged copies or complete event files), never as
file objects: the client sends file objects through the legacy LFS path, paths can go through Xet
and its chunk de-duplication. The client itself drops files whose remote oid already matches, and
``holds`` asks the Hub (``get_paths_info``) what it has, which resolves commits whose response was
lost. Only the uploader talks to the Hub: it creates the repository once and adds the
``hf-summary-writer`` tag to the model card once, where ``huggingface_hub.HFSummaryWriter`` does
both in every process.

Requests per commit, in steady state: ``preupload`` (the Hub says how each file is stored; the
client asks it in every ``create_commit``), the Xet write token (huggingface_hub 0.34-1.1 and 1.19+
ask one per upload; 1.2-1.18 keep it until it expires), ``commit``, and one ``paths_info`` per 500
files to verify it. The branch head, which every commit names as its parent, is the one the last
commit returned: it is read (``repo_info``) only at start, after a commit that failed, for a while
after the Hub refused one because the branch moved (:data:`SHARED_BRANCH_S`), and before every commit
where the nodes of a job commit to the branch each on its own (``shared_branch``). Neither preupload nor the token
can be skipped through huggingface_hub's public API: ``create_commit`` asks both, and takes no token.
"""

from __future__ import annotations

import hashlib
import logging
import math
import posixpath
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..config import describe_target, target_key
from ..errors import TargetError
from ..state.piece import Piece, open_nofollow
from ..timing import HTTP_TIMEOUT_S, HUB_COMMIT_SPACING_S, SHARED_BRANCH_S
from .base import Target, UploadedFile, as_pieces
from .batching import batched_differences, held_longer
from .hub_client import UsesHubApi, classify
from .xet_content import Connection, SharesXetToken, XetContent, XetUnavailable, event_files_only, xet_usable

logger = logging.getLogger(__name__)

#: ``get_paths_info`` batch size: one call per this many files when checking what the Hub holds. The Hub
#: answers at most 1,000 paths per call (413 "too many parameters" beyond); huggingface_hub asks 500.
PATHS_PER_CALL = 500


def git_blob_sha1(path: str, size: int) -> str:
    """The git object id of the first ``size`` bytes of a file: how the Hub names regular files."""
    digest = hashlib.sha1(b"blob %d\0" % size)
    remaining = size
    with open_nofollow(path) as handle:
        while remaining:
            chunk = handle.read(min(1 << 20, remaining))
            if not chunk:
                raise OSError(f"{path} is shorter than {size} bytes")
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _branch_moved(exc: BaseException) -> bool:
    """The Hub refused a commit because its ``parent_commit`` is no longer the branch head (412)."""
    return getattr(getattr(exc, "response", None), "status_code", None) == 412


def _compare(piece: Piece, info: Any) -> str | None:
    """What is wrong with the remote file ``info`` for ``piece``, or ``None`` if it matches."""
    if info is None:
        return "missing"
    size = getattr(info, "size", None)
    if size != piece.size:
        return f"holds {size} bytes, {piece.size} expected"
    lfs = getattr(info, "lfs", None)
    if lfs is not None:
        return None if lfs.sha256 == piece.sha256 else "same size, different content (sha256)"
    try:
        local = git_blob_sha1(piece.local_path, piece.size)
    except OSError:
        return None  # the local copy is gone: the size is all that can be compared
    return None if getattr(info, "blob_id", None) == local else "same size, different content (git oid)"


class HubTarget(UsesHubApi, SharesXetToken, Target):
    """Commits into ``repo_id`` at ``revision`` under ``prefix``.

    ``shared_branch``: others commit to the branch all along (the uploaders of the other nodes of a job,
    each at its own slot): the head is read before every commit, since the last commit's would be refused."""

    min_interval = HUB_COMMIT_SPACING_S  # the Hub accepts about 128 commits per hour per repository
    kind = "hub"  # (the job's budget: commits an hour, and API requests)
    #: After a 412, the head is read before every commit for this long (:data:`SHARED_BRANCH_S`).
    shared_branch_s = SHARED_BRANCH_S
    paths_per_call = PATHS_PER_CALL  # (the audit's batches: per target, a test makes them small)

    def __init__(
        self,
        repo_id: str,
        *,
        prefix: str,
        repo_type: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        squash_history: bool = False,
        token: str | None = None,
        endpoint: str | None = None,
        shared_branch: bool = False,
        http_timeout: float = HTTP_TIMEOUT_S,
    ) -> None:
        super().__init__(prefix)
        self.http_timeout = http_timeout
        self.repo_id = repo_id
        self.repo_type = repo_type or "model"
        self.revision = revision or "main"
        self.private = private
        self.squash_history = squash_history
        self._token = token
        self._endpoint = endpoint
        self._api: Any = None
        self._xet: XetContent | None = None  # set by use_xet_content()
        #: Where a multi-node job's shared Xet write token comes from (set by the job's member before prepare).
        self.job_xet_token: Callable[[], Connection | None] | None = None
        #: The branch head after this target's last successful commit (``None``: unknown, read it).
        self._known_head: str | None = None
        #: Until then (``time.monotonic()``) the head is read before every commit (see :data:`SHARED_BRANCH_S`).
        self._shared_until = math.inf if shared_branch else 0.0
        self.key = target_key("hub", repo_id=repo_id, repo_type=self.repo_type, revision=self.revision,
                              directory=None, prefix=self.prefix)

    @property
    def description(self) -> str:  # type: ignore[override]
        from huggingface_hub import constants

        return describe_target("hub", repo_id=self.repo_id, repo_type=self.repo_type, directory=None, prefix=self.prefix,
                               endpoint=self._endpoint or constants.ENDPOINT)

    @property
    def reader_url(self) -> str:  # type: ignore[override]
        kind = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        revision = "" if self.revision == "main" else f"@{self.revision}"
        return f"hf://{kind}{self.repo_id}{revision}" + (f"/{self.prefix}" if self.prefix else "")

    # -- the interface -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the repository if needed and tag its model card, once per uploader start.

        Only the uploader does this (``huggingface_hub.HFSummaryWriter`` does both in every
        process). The card is pushed only if it lacks the tag, so restarts add no commits; a card
        that cannot be tagged is not worth holding the logs back: it is logged and tried next start.
        """
        self._known_head = None  # a start trusts no head it did not read (the card's commit moves it, too)
        try:
            url = self.api.create_repo(
                self.repo_id, repo_type=self.repo_type, private=self.private, exist_ok=True,
                space_sdk="static" if self.repo_type == "space" else None,  # a Space needs an SDK to exist
            )
        except Exception as exc:
            raise self._error(exc, "create the repository") from None
        resolved = getattr(url, "repo_id", None)
        if resolved and "/" not in self.repo_id:  # 'name' alone: the Hub put it in the token's namespace
            # (huggingface_hub 0.x parses the URL against HF_ENDPOINT, not the client's endpoint: with
            # another endpoint its repo_id is the whole URL, whose last two parts are the id)
            resolved = "/".join(str(resolved).rstrip("/").split("/")[-2:])
            logger.info("repository %r is %r", self.repo_id, resolved)
            self.repo_id = resolved
        self.use_xet_content()
        try:
            self.tag_model_card()
        except TargetError as exc:
            logger.warning("model card not tagged (tried again at the next start): %s", exc)

    def prepared_elsewhere(self, repo_id: str) -> None:
        """Another node of the job prepared this repository (:meth:`prepare`), and the Hub named it ``repo_id``."""
        self._known_head = None
        self.repo_id = repo_id
        self.use_xet_content()

    def tag_model_card(self) -> None:
        """Add the ``hf-summary-writer`` tag to the model card, as ``HFSummaryWriter`` does.

        Read and written through our ``HfApi`` (its endpoint, its client, its timeouts), not with
        ``ModelCard.load``/``push_to_hub``: huggingface_hub 0.x validates a card by posting it to
        ``https://huggingface.co`` whatever the endpoint; ``create_commit`` has the Hub the repository
        lives on validate it, in every version.
        """
        from huggingface_hub import ModelCard
        from huggingface_hub.errors import EntryNotFoundError

        try:
            try:
                local = self.api.hf_hub_download(self.repo_id, "README.md", repo_type=self.repo_type)
                with open(local, encoding="utf-8-sig", newline="") as file:  # as ModelCard.load: line ends kept
                    text = file.read()
            except EntryNotFoundError:
                text = ""
            if not text.lstrip().startswith("---"):  # no metadata block: an empty one, said here, not by
                text = "---\n\n---\n" + text  # huggingface_hub's warning in the user's output (sync, thread mode)
            card = ModelCard(text)
            tags = card.data.get("tags") or []
            if "hf-summary-writer" not in tags:
                tags.append("hf-summary-writer")
                card.data["tags"] = tags
                self.api.upload_file(
                    path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id=self.repo_id,
                    repo_type=self.repo_type, commit_message="Tag the model card: hf-summary-writer",
                )
        except Exception as exc:
            raise self._error(exc, "tag the model card") from None

    def head(self) -> str:
        """The commit the branch points to now: what the next commit must name as its parent."""
        info = self.api.repo_info(self.repo_id, repo_type=self.repo_type, revision=self.revision)
        return str(info.sha)

    def parent(self) -> str:
        """The parent the next commit names: the head the last commit returned, else the head read now.

        Remembering it saves a ``repo_info`` per commit, and weakens nothing: a commit lands only if its
        parent is still the head, so a stale parent costs a refused commit (412), never a wrong one; and
        a parent known since the last commit fences a paused uploader better than one read just before.
        """
        if self._known_head is not None and time.monotonic() >= self._shared_until:
            return self._known_head
        try:
            return self.head()
        except Exception as exc:
            raise self._error(exc, "read the branch head") from None

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """One commit of ``pieces``, fenced: it names the head it was based on as ``parent_commit``.

        Why: a commit whose client died (SIGKILL, lost connection) may still be applied by the Hub
        later. Had it no parent, it would replace newer files with its older, shorter versions. With
        a parent, the Hub refuses it (412) once anything else was committed, and refuses ours (412)
        if it landed first; the uploader then reconciles against the new head and tries again.
        The head it returns is the next commit's parent (:meth:`parent`); any failure forgets it.

        Event files go straight to Xet with a kept write token, then the commit names them
        (:meth:`preupload`, :meth:`commit_uploaded`): two Hub API requests fewer per commit than
        ``create_commit`` sending them itself (its ``preupload`` and Xet token; see
        :mod:`hf_mpwriter.targets.xet_content`). Anything else, or Xet off: ``create_commit`` as is.
        """
        from huggingface_hub import CommitOperationAdd

        if self._xet is not None and event_files_only([p.path for p in pieces]):
            uploaded = self.preupload(pieces)
            if uploaded is not None:
                return self.commit_uploaded(uploaded, message)
        try:
            operations = [CommitOperationAdd(self.remote_path(p), p.local_path) for p in pieces]
        except Exception as exc:
            raise self._error(exc, "commit") from None
        return self._create_commit(operations, message)

    def _create_commit(self, operations: list[Any], message: str, parent: str | None = None) -> str | None:
        try:
            parent = parent or self.parent()
            self._known_head = None  # until this commit answers, the head is unknown
            info = self.api.create_commit(
                self.repo_id,
                operations=operations,
                commit_message=message,
                repo_type=self.repo_type,
                revision=self.revision,
                parent_commit=parent,
            )
            if self.squash_history:  # a new root commit: the head is read again before the next commit
                self.api.super_squash_history(self.repo_id, branch=self.revision, repo_type=self.repo_type)
        except TargetError:
            raise
        except Exception as exc:
            if _branch_moved(exc):  # someone else commits to this branch too
                window = self.shared_branch_s
                self._shared_until = time.monotonic() + window
                logger.info("branch %r of %s moved since commit %s; its head is read before each commit for "
                            "the next %.0f s", self.revision, self.repo_id, parent, window)
            raise self._error(exc, "commit") from None
        oid = getattr(info, "oid", None)
        if oid and not self.squash_history:
            self._known_head = str(oid)
        return oid

    # -- a job's leader commits what the nodes uploaded (hf_mpwriter.uploader.coordination.member) -----------
    def preupload(self, pieces: Sequence[Piece]) -> list[UploadedFile] | None:
        """Send the content of ``pieces`` to the Hub's storage (Xet or LFS), not commit it: what another
        process can then commit by sha256 (:meth:`commit_uploaded`). ``None`` if the Hub stores one of
        them as a regular file (its bytes travel in the commit itself: only this node can commit it).

        Event files go straight to Xet with a kept token (:mod:`hf_mpwriter.targets.xet_content`: no
        Hub API request while the token lasts); anything else, or a repository without Xet, through
        the public ``HfApi.preupload_lfs_files`` (the ``preupload`` request, the Xet token or the LFS
        batch, and the transfers).
        """
        from huggingface_hub import CommitOperationAdd

        if self._xet is not None and event_files_only([p.path for p in pieces]):
            try:
                self._xet.upload([p.local_path for p in pieces], [p.sha256 for p in pieces])
                return [UploadedFile(self.remote_path(p), p.sha256, p.size) for p in pieces]
            except XetUnavailable as exc:
                logger.info("%s; content goes through preupload_lfs_files", exc)
                self._xet = None
            except Exception as exc:
                raise self._error(exc, "upload content to Xet") from None
        try:
            operations = [CommitOperationAdd(self.remote_path(p), p.local_path) for p in pieces]
            self.api.preupload_lfs_files(self.repo_id, additions=operations, repo_type=self.repo_type,
                                         revision=self.revision)
        except Exception as exc:
            raise self._error(exc, "upload content") from None
        if any(op._upload_mode != "lfs" for op in operations):
            return None
        return [UploadedFile(op.path_in_repo, op.upload_info.sha256.hex(), op.upload_info.size) for op in operations]

    def use_xet_content(self) -> None:
        """Send event files straight to Xet in :meth:`preupload` (see :mod:`hf_mpwriter.targets.xet_content`)."""
        from huggingface_hub import constants

        if xet_usable():
            self._xet = XetContent(self._endpoint or constants.ENDPOINT, self.repo_id, self.repo_type, self.revision,
                                   self._token, self.http_timeout, self.job_xet_token)

    def commit_uploaded(self, files: Sequence[UploadedFile], message: str, parent: str | None = None) -> str | None:
        """One commit of files whose content is already in the Hub's storage (:meth:`preupload`,
        maybe by another process), fenced by the parent like :meth:`commit`.

        huggingface_hub has no public way to commit content it did not hash itself:
        ``CommitOperationAdd`` computes ``upload_info`` from local bytes. The smallest step through
        its own commit path: an empty operation given the uploaded content's ``upload_info``, marked
        uploaded in LFS mode, so that ``create_commit`` sends only the commit (the Hub checks that the
        content exists, and refuses the commit otherwise). Tested on every supported version.
        """
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.lfs import UploadInfo

        operations = []
        for file in files:
            operation = CommitOperationAdd(file.path, b"")
            operation.upload_info = UploadInfo(sha256=bytes.fromhex(file.sha256), size=file.size, sample=b"")
            operation._upload_mode = "lfs"
            operation._is_uploaded = True
            operations.append(operation)
        return self._create_commit(operations, message, parent)

    def verify_uploaded(self, files: Sequence[UploadedFile]) -> dict[str, str]:
        """``path -> what is wrong`` for each of ``files`` (full paths in the repository) the branch
        does not hold with that size and sha256: one ``paths_info`` call per :data:`PATHS_PER_CALL` files."""
        return batched_differences(as_pieces(files), remote_path=lambda p: p.path, fetch=self._paths_info,
                                   per_call=self.paths_per_call, compare=_compare)

    def behind(self, files: Sequence[UploadedFile], revision: str | None) -> dict[str, str]:
        """``path -> what is wrong`` for each event file of ``files`` that commit ``revision`` holds longer: an
        event file only grows, so those are older than a commit made since (another process's). One
        ``paths_info`` call per :data:`PATHS_PER_CALL` event files."""
        pieces = as_pieces([f for f in files if event_files_only([f.path])])
        return batched_differences(pieces, remote_path=lambda p: p.path, per_call=self.paths_per_call,
                                   compare=held_longer((revision or "the head")[:12]),
                                   fetch=lambda paths: self._paths_info(paths, revision))

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """Compare sizes and hashes with ``get_paths_info``, one call per batch of files."""
        return batched_differences(pieces, remote_path=self.remote_path, fetch=self._paths_info,
                                   per_call=self.paths_per_call, compare=_compare)

    def _paths_info(self, paths: list[str], revision: str | None = None) -> list[Any]:
        try:
            return list(self.api.get_paths_info(self.repo_id, paths, repo_type=self.repo_type,
                                                revision=revision or self.revision))
        except Exception as exc:
            raise self._error(exc, "list remote files") from None

    def read(self, path: str) -> bytes:
        local = self.api.hf_hub_download(
            self.repo_id, f"{self.prefix}/{path}" if self.prefix else path, repo_type=self.repo_type,
            revision=self.revision,
        )
        with open(local, "rb") as handle:
            return handle.read()

    def listing(self, folder: str) -> list[str]:
        from huggingface_hub.errors import EntryNotFoundError

        where = posixpath.normpath(posixpath.join(self.prefix, folder)) if self.prefix else folder
        try:
            entries = self.api.list_repo_tree(self.repo_id, path_in_repo=where, recursive=True, repo_type=self.repo_type,
                                              revision=self.revision)
            paths = [entry.path for entry in entries if type(entry).__name__ == "RepoFile"]
        except EntryNotFoundError:
            return []
        except Exception as exc:
            raise self._error(exc, "list files") from None
        return sorted(posixpath.relpath(path, self.prefix) if self.prefix else path for path in paths)

    # -- errors --------------------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> TargetError:
        """A :class:`TargetError` that says what failed, whether it will be retried, what to do."""
        where = f"{self.repo_type} repo {self.repo_id!r}"
        if type(exc).__name__ == "RevisionNotFoundError":
            return TargetError(
                f"cannot {doing} on {where}: revision {self.revision!r} does not exist. Create the branch "
                f"(`hf repo branch create {self.repo_id} {self.revision}`) or use repo_revision='main'",
                transient=False,
            )
        if _branch_moved(exc):
            return TargetError(
                f"cannot {doing} on {where}: the branch {self.revision!r} moved since this commit was prepared "
                f"(another commit landed first); reconciling against the new head and retrying",
                transient=True, raced=True,
            )
        return classify(exc, doing, where, self._token, missing="the repository was not found",
                        fix_missing="Check repo_id and repo_type, and that the token can see it")
