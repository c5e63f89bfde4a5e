"""The commit route of the test Hub: an NDJSON commit parsed, checked against the Hub's limits, applied to a branch.

``POST /api/{T}/{id}/commit/{rev}`` NDJSON: ``header{summary, description, parentCommit?}``, then
``file{path, content, encoding}``, ``lfsFile{path, algo, oid=sha256, size}``, ``deletedFile``,
``deletedFolder``. A stale ``parentCommit`` gets 412. An ``lfsFile`` must name content uploaded
*to this repository* (a legacy LFS PUT, or a Xet shard sent with this repository's write token);
otherwise 400 with the Hub's own words, every offending path listed (:data:`DANGLING_LFS`), which
the client raises as ``BadRequestError`` ("Bad request for commit endpoint"). Content uploaded to
another repository, or to a deleted one of the same name, counts as missing, as on the Hub (it
copies across repositories through ``lfs-files/duplicate`` first). The client does not retry
``/commit``. Apart from :mod:`.repos` because a commit is the one write with rules of its own: the
payload, the parent, the limits (:mod:`.limits`), the operations.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from .httpd import HubError, Request, Response, Route, json_response
from .hub_state import HubState
from .limits import FolderEntries, folders_holding, too_many_entries
from .storage import Commit, FileEntry, Repo, cas_scope

logger = logging.getLogger("hf_mpwriter.testing.hub_server")

#: The Hub's answer (400) to a commit whose ``lfsFile`` names content it does not hold for the
#: repository, as huggingface_hub users quote it (huggingface_hub issue #3829), offending paths appended.
DANGLING_LFS = (
    "Your push was rejected because an LFS pointer pointed to a file that does not exist. For instance, "
    "this can happen if you used git push --no-verify to push your changes. Offending file: {paths}"
)


@dataclass(frozen=True)
class CommitPayload:
    """What an NDJSON commit sends: its header (with a non-empty ``summary``) and its operation lines."""

    header: dict[str, Any]
    operations: list[dict[str, Any]]

    @property
    def summary(self) -> str:
        return self.header.get("summary") or ""


def parse_commit_payload(body: bytes) -> CommitPayload:
    """The header and operations of an NDJSON commit body; 400 if it is no JSON, has no header or no summary."""
    try:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError as exc:
        raise HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "The commit payload must start with a header line")
    header = lines[0].get("value") or {}
    summary = header.get("summary") or ""
    if not summary:
        raise HubError(400, "Commit summary is required")
    return CommitPayload(header, lines[1:])


def file_content(path: str, value: dict[str, Any]) -> bytes:
    """The bytes a ``file`` operation carries (base64 unless its ``encoding`` says otherwise); 400 if not base64."""
    content = value.get("content", "")
    if value.get("encoding", "base64") == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except ValueError as exc:
            raise HubError(400, f"Invalid base64 content for {path}") from exc
    return str(content).encode()


def branch_head(repo: Repo, branch: str, parent: Any) -> Commit:
    """The head a commit on ``branch`` applies to: 400/404 if ``branch`` is no branch, 412 if ``parent`` is stale."""
    if branch not in repo.branches:
        if repo.resolve(branch) is not None:
            raise HubError(400, f"Invalid rev id: {branch} is not a branch")
        raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
    head = repo.commits[repo.branches[branch]]
    if parent and not head.oid.startswith(str(parent).lower()):
        raise HubError(412, "A commit has happened since. Please refresh and try again.")
    return head


def delete_folder(tree: dict[str, FileEntry], path: str) -> list[str]:
    """Remove every file under folder ``path`` from ``tree`` and return their paths; 404 if there is none."""
    prefix = path.rstrip("/") + "/"
    gone = [p for p in tree if p.startswith(prefix)]
    if not gone:
        raise HubError(404, f"A folder with this name doesn't exist: {path}", error_code="EntryNotFound")
    for p in gone:
        del tree[p]
    return gone


class CommitRoutes(HubState):
    """Handler of the commit route (``_h_commit``) and the checks a commit passes before it applies."""

    def _h_commit(self, request: Request, route: Route) -> Response:
        if request.qbool("create_pr"):
            raise HubError(400, "Pull requests are not supported by HubServer")
        payload = parse_commit_payload(request.body)
        branch = route.revision or "main"
        self._check_files_per_commit(len(payload.operations))
        with self._lock:
            repo = self._repo_by(route.repo_type, route.repo_id)
            key = f"{repo.repo_type}:{repo.repo_id}"
            refusal = self._quotas.commit_refusal(key)
            if refusal is not None:
                self._refuse("commits", refusal)
            head = branch_head(repo, branch, payload.header.get("parentCommit"))
            tree = dict(head.tree)
            added, deleted = self._apply_operations(repo, tree, payload.operations)
            self._check_entries(tree, added, branch)
            oid = self._new_oid("commit", head.oid, payload.summary, *added, *deleted)
            description = payload.header.get("description") or ""
            repo.commits[oid] = Commit(oid, head.oid, tree, payload.summary, description, time.time(), added, deleted)
            repo.branches[branch] = oid
            self._quotas.commit_applied(key)
        with self._meta_lock:
            self._stats["commits"] += 1
            self._stats["commits_per_repo"][key] = self._stats["commits_per_repo"].get(key, 0) + 1
        logger.info("commit %s on %s@%s: +%d -%d", oid[:8], key, branch, len(added), len(deleted))
        return json_response(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self._repo_url(request.base_url, repo.repo_type, repo.repo_id)}/commit/{oid}",
                "pullRequestUrl": None,
            }
        )

    def _apply_operations(
        self, repo: Repo, tree: dict[str, FileEntry], operations: list[dict[str, Any]]
    ) -> tuple[list[str], list[str]]:
        """Apply a commit's operations to ``tree`` (a copy of the head's); the paths added and deleted.

        Every ``lfsFile`` naming content not uploaded to ``repo`` is collected, then refused at once (400).
        """
        added: list[str] = []
        deleted: list[str] = []
        dangling: list[str] = []  # lfsFile paths whose content was not uploaded to this repository
        for line in operations:
            kind, value = line.get("key"), line.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or not path:
                raise HubError(400, f"Operation {kind!r} needs a path")
            if kind == "file":
                tree[path] = FileEntry.regular(file_content(path, value))
                added.append(path)
            elif kind == "lfsFile":
                entry = self._large_file(repo, path, value)
                if entry is None:
                    dangling.append(path)
                    continue
                tree[path] = entry
                added.append(path)
            elif kind == "deletedFile":
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", error_code="EntryNotFound")
                del tree[path]
                deleted.append(path)
            elif kind == "deletedFolder":
                deleted.extend(delete_folder(tree, path))
            else:
                raise HubError(400, f"Unknown commit operation {kind!r}")
        if dangling:
            raise HubError(400, DANGLING_LFS.format(paths=" ".join(f"- {p}" for p in dangling)))
        return added, deleted

    def _large_file(self, repo: Repo, path: str, value: dict[str, Any]) -> FileEntry | None:
        """The content an ``lfsFile`` operation names, if it was uploaded to ``repo``; None if not.

        Legacy LFS objects belong to the repository they were PUT for; Xet files to the scope of the
        write token their shard came with (:meth:`~.hub_state.HubState._grant_xet_files`).
        """
        oid = value.get("oid")
        if not isinstance(oid, str):
            raise HubError(400, f"lfsFile {path} needs an oid (sha256)")
        oid = oid.lower()
        xet_hash: str | None = None
        data = repo.lfs_objects.get(oid)
        if data is None:
            xf = self._xet_file_by_sha256(cas_scope(repo.repo_type, repo.repo_id), oid)
            if xf is None:
                return None
            data, xet_hash = xf.data, xf.hash
        if "size" in value and value["size"] != len(data):
            raise HubError(400, f"LFS size mismatch for {path}: {value['size']} != {len(data)}")
        return FileEntry.lfs(data, oid, xet_hash=xet_hash)

    def _check_files_per_commit(self, operations: int) -> None:
        """400 for a commit of more file operations than ``limits.files_per_commit`` (the Hub has no
        such count, only a 60 s commit timeout: this is the test Hub's own stand-in, off by default)."""
        limit = self._quotas.limits.files_per_commit
        if limit is not None and operations > limit:
            message = (
                f"This commit has {operations} file operations, more than the {limit} this server allows "
                "(HubLimits.files_per_commit; the Hub recommends 50-100 files per commit)"
            )
            self._refuse("files_per_commit", HubError(400, message))

    def _check_entries(self, tree: dict[str, FileEntry], added: list[str], branch: str) -> None:
        """The Hub's 400 for a commit that takes a folder over ``limits.entries_per_folder`` entries."""
        limit = self._quotas.limits.entries_per_folder
        if limit is None or len(tree) <= limit:  # a folder has no more entries than files under it
            return
        crowded = FolderEntries(tree, folders_holding(added)).crowded(limit)
        if crowded:
            self._refuse("entries_per_folder", HubError(400, too_many_entries(limit, crowded, branch)))
