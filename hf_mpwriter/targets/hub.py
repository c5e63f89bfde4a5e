"""The Hugging Face Hub as the target, through the real ``huggingface_hub.HfApi`` client.

Files are given to ``create_commit`` as *paths* (staged copies or complete event files), never as
file objects: the client sends file objects through the legacy LFS path, paths can go through Xet
and its chunk de-duplication. The client itself drops files whose remote oid already matches, and
``holds`` asks the Hub (``get_paths_info``) what it has, which resolves commits whose response was
lost. Only the uploader talks to the Hub: it creates the repository once and adds the
``hf-summary-writer`` tag to the model card once, where ``huggingface_hub.HFSummaryWriter`` does
both in every process.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from ..errors import TargetError
from ..piece import Piece, open_nofollow
from .base import Target
from .hub_client import UsesHubApi, classify

logger = logging.getLogger(__name__)

#: ``get_paths_info`` batch size: one call per this many files when checking what the Hub holds.
PATHS_PER_CALL = 100


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


class HubTarget(UsesHubApi, Target):
    """Commits into ``repo_id`` at ``revision`` under ``prefix``."""

    min_interval = 3600 / 128  # the Hub accepts about 128 commits per hour per repository

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
    ) -> None:
        super().__init__(prefix)
        self.repo_id = repo_id
        self.repo_type = repo_type or "model"
        self.revision = revision or "main"
        self.private = private
        self.squash_history = squash_history
        self._token = token
        self._endpoint = endpoint
        self._api: Any = None
        self.key = f"hub:{self.repo_type}:{repo_id}@{self.revision}:{self.prefix}"

    @property
    def description(self) -> str:  # type: ignore[override]
        from huggingface_hub import constants

        kind = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"{(self._endpoint or constants.ENDPOINT).rstrip('/')}/{kind}{self.repo_id}"

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
        try:
            url = self.api.create_repo(
                self.repo_id, repo_type=self.repo_type, private=self.private, exist_ok=True,
                space_sdk="static" if self.repo_type == "space" else None,  # a Space needs an SDK to exist
            )
        except Exception as exc:
            raise self._error(exc, "create the repository") from None
        resolved = getattr(url, "repo_id", None)
        if resolved and resolved != self.repo_id:  # 'name' alone: the Hub put it in the token's namespace
            logger.info("repository %r is %r", self.repo_id, resolved)
            self.repo_id = resolved
        try:
            self.tag_model_card()
        except TargetError as exc:
            logger.warning("model card not tagged (tried again at the next start): %s", exc)

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
                card = ModelCard.load(local, repo_type=self.repo_type)
            except EntryNotFoundError:
                card = ModelCard("")
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

    def commit(self, pieces: Sequence[Piece], message: str) -> str | None:
        """One commit of ``pieces``, fenced: it names the head it was based on as ``parent_commit``.

        Why: a commit whose client died (SIGKILL, lost connection) may still be applied by the Hub
        later. Had it no parent, it would replace newer files with its older, shorter versions. With
        a parent, the Hub refuses it (412) once anything else was committed, and refuses ours (412)
        if it landed first; the uploader then reconciles against the new head and tries again.
        """
        from huggingface_hub import CommitOperationAdd

        try:
            operations = [CommitOperationAdd(self.remote_path(p), p.local_path) for p in pieces]
            parent = self.head()
            info = self.api.create_commit(
                self.repo_id,
                operations=operations,
                commit_message=message,
                repo_type=self.repo_type,
                revision=self.revision,
                parent_commit=parent,
            )
            if self.squash_history:
                self.api.super_squash_history(self.repo_id, branch=self.revision, repo_type=self.repo_type)
        except TargetError:
            raise
        except Exception as exc:
            raise self._error(exc, "commit") from None
        return getattr(info, "oid", None)

    def differences(self, pieces: Sequence[Piece]) -> dict[str, str]:
        """Compare sizes and hashes with ``get_paths_info``, one call per batch of files."""
        wrong: dict[str, str] = {}
        for start in range(0, len(pieces), PATHS_PER_CALL):
            batch = pieces[start:start + PATHS_PER_CALL]
            try:
                infos = self.api.get_paths_info(
                    self.repo_id, [self.remote_path(p) for p in batch], repo_type=self.repo_type,
                    revision=self.revision,
                )
            except Exception as exc:
                raise self._error(exc, "list remote files") from None
            remote = {info.path: info for info in infos}
            for piece in batch:
                problem = _compare(piece, remote.get(self.remote_path(piece)))
                if problem:
                    wrong[piece.path] = problem
        return wrong
    def read(self, path: str) -> bytes:
        local = self.api.hf_hub_download(
            self.repo_id, f"{self.prefix}/{path}" if self.prefix else path, repo_type=self.repo_type,
            revision=self.revision,
        )
        with open(local, "rb") as handle:
            return handle.read()

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
        if getattr(getattr(exc, "response", None), "status_code", None) == 412:
            return TargetError(
                f"cannot {doing} on {where}: the branch {self.revision!r} moved since this commit was prepared "
                f"(another commit landed first); reconciling against the new head and retrying",
                transient=True,
            )
        return classify(exc, doing, where, self._token, missing="the repository was not found",
                        fix_missing="Check repo_id and repo_type, and that the token can see it")
