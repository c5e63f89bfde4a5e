"""Git-repository routes of the test Hub: create/delete, info, preupload, tree, paths-info, history, resolve...

What huggingface_hub 2.x sends (``{T}`` = models|datasets|spaces; path segments arrive
percent-quoted and are unquoted one by one, in :mod:`.routing`):

* ``POST /api/repos/create`` ``{name, organization, type, private?}`` -> ``{url}``; with ``exist_ok``
  the client accepts a 409 only if its body carries ``url``.
* ``POST /api/{T}/{id}/preupload/{rev}`` -> ``{files: [{path, uploadMode, shouldIgnore, oid?}]}``; an
  ``oid`` equal to the local one makes the client drop that file. (Whether an "lfs" file then goes
  through Xet or legacy LFS is the client's choice alone: Xet unless ``HF_HUB_DISABLE_XET=1``.)
* ``POST /api/{T}/{id}/commit/{rev}``: NDJSON, parsed and applied in :mod:`.commits`.
* ``GET /api/{T}/{id}/tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}``: entries
  ``{type, oid, size, path, lfs?, xetHash?}``. The tree comes in pages as the Hub's does: at most 1,000
  entries (50 with ``expand``), then ``Link: <same URL with ?cursor=...>; rel="next"``, which the client
  follows (:mod:`.tree_index`: each page a slice of the commit's index, built once).
* ``HEAD``/``GET /{id}/resolve/{rev}/{path}``: content with ``X-Repo-Commit`` and ``ETag``; files
  stored through Xet also carry ``X-Xet-Hash`` and a ``Link: <.../xet-read-token/{commit}>;
  rel="xet-auth"``, from which a Xet-enabled client downloads through the CAS.
* Errors name their class in ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
  A README.md in a commit makes the client call ``POST /api/validate-yaml``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from .httpd import HubError, Request, Response, Route, json_response, parse_range
from .hub_state import HubState
from .storage import (
    REPO_TYPES,
    Commit,
    FileEntry,
    Repo,
    cas_scope,
    is_lfs,
    iso,
)
from .tree_index import TREE_PAGE, TREE_PAGE_EXPANDED, TreeIndex, TreeIndexes, make_cursor, read_cursor

logger = logging.getLogger("hf_mpwriter.testing.hub_server")


def content_response(request: Request, data: bytes, headers: dict[str, str], name: str) -> Response:
    """A file download answer: whole content, or the ``Range`` the client asked for (206)."""
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
        **headers,
    }
    status = 200
    range_header = request.headers.get("Range")
    if range_header:
        start, end = parse_range(range_header, len(data))
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data, status = data[start : end + 1], 206
    return Response(status, data, headers)


class RepoRoutes(HubState):
    """Handlers of the git-repository routes (``_h_{route name}``)."""

    def _repo(self, route: Route) -> Repo:
        return self._repo_by(route.repo_type, route.repo_id)

    #: The tree indexes of the commits listed last (made on first use: the mixin has no ``__init__`` of its own).
    _tree_indexes: TreeIndexes | None = None

    def _tree_index(self, commit: Commit) -> TreeIndex:
        """``commit``'s tree arranged for listing (callers hold ``_lock``)."""
        if self._tree_indexes is None:
            self._tree_indexes = TreeIndexes()
        return self._tree_indexes.of(commit)

    def _last_commit(self, repo: Repo, head: Commit, path: str, is_dir: bool) -> dict[str, str]:
        for commit in repo.history(head.oid):
            changed = commit.added + commit.deleted
            if any(p == path or (is_dir and p.startswith(path + "/")) for p in changed):
                return {"id": commit.oid, "title": commit.summary, "date": iso(commit.date)}
        return {"id": head.oid, "title": head.summary, "date": iso(head.date)}

    def _entry_json(self, repo: Repo, commit: Commit, path: str, expand: bool, entry: FileEntry | None = None) -> dict[str, Any]:
        """One tree / paths-info entry: a file (``entry``) or the directory ``path``."""
        if entry is not None:
            out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
            if entry.lfs_sha256:
                out["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            if entry.xet_hash:
                out["xetHash"] = entry.xet_hash
        else:
            out = {"type": "directory", "oid": self._tree_index(commit).dir_oids[path], "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit(repo, commit, path, is_dir=entry is None)
        return out

    # -- account --------------------------------------------------------------------------------

    def _h_unknown(self, request: Request, route: Route) -> Response:
        """A path this Hub does not serve: 404, as the Hub answers one."""
        raise HubError(404, f"Not found: {request.method} {request.path}")

    def _h_whoami(self, request: Request, route: Route) -> Response:
        token = request.bearer()
        if not token:
            raise HubError(401, "Invalid credentials in Authorization header")
        read_only = token in self.read_only_tokens and (self.tokens is None or token not in self.tokens)
        role = "read" if read_only else "write"
        return json_response(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.username,
                "fullname": self.username,
                "email": f"{self.username}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            }
        )

    def _h_validate_yaml(self, request: Request, route: Route) -> Response:
        return json_response({"errors": [], "warnings": []})

    # -- repositories ---------------------------------------------------------------------------

    def _h_create_repo(self, request: Request, route: Route) -> Response:
        payload = request.json()
        name = payload.get("name")
        if not isinstance(name, str) or not name:
            raise HubError(400, "Missing repo name")
        organization = payload.get("organization") or self.username
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Unsupported repo type {repo_type!r}")
        repo_id = f"{organization}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") in ("private", "protected")
        url = self._repo_url(request.base_url, repo_type, repo_id)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                # With exist_ok the client accepts a 409 only if the body carries the url.
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            self._new_repo(repo_type, repo_id, private=private, sdk=payload.get("sdk"))
        logger.info("created %s repo %s", repo_type, repo_id)
        return json_response({"url": url, "name": repo_id, "id": repo_id})

    def _h_delete_repo(self, request: Request, route: Route) -> Response:
        payload = request.json()
        organization = payload.get("organization") or self.username
        key = (payload.get("type") or "model", f"{organization}/{payload.get('name')}")
        with self._lock:
            if self._repos.pop(key, None) is None:
                raise HubError(404, "Repository not found", error_code="RepoNotFound")
            self._forget_scope(cas_scope(*key))
        return Response(200)

    def _h_repo_info(self, request: Request, route: Route) -> Response:
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            blobs = request.qbool("blobs")
            siblings = []
            for path, entry in sorted(commit.tree.items()):
                sib: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sib.update(size=entry.size, blobId=entry.oid)
                    if entry.lfs_sha256:
                        sib["lfs"] = {"size": entry.size, "sha256": entry.lfs_sha256, "pointerSize": entry.pointer_size}
                siblings.append(sib)
            author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
            info: dict[str, Any] = {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": author,
                "sha": commit.oid,
                "lastModified": iso(commit.date),
                "createdAt": iso(repo.created_at),
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "xetEnabled": True,
                "usedStorage": sum(e.size for e in commit.tree.values() if e.lfs_sha256),
            }
            if repo.repo_type == "model":
                info["modelId"] = repo.repo_id
            if repo.repo_type == "space":
                info["sdk"] = repo.sdk
            return json_response(info)

    # -- upload ---------------------------------------------------------------------------------

    def _h_preupload(self, request: Request, route: Route) -> Response:
        payload = request.json()
        files = payload.get("files")
        if not isinstance(files, list):
            raise HubError(400, "Missing 'files'")
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            out = []
            for f in files:
                path = f.get("path")
                if not isinstance(path, str):
                    raise HubError(400, "Each file needs a 'path'")
                try:
                    sample = base64.b64decode(f.get("sample") or "")
                except ValueError as exc:
                    raise HubError(400, f"Invalid sample for {path}: {exc}") from exc
                mode = "lfs" if is_lfs(path, int(f.get("size") or 0), sample) else "regular"
                item: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
                existing = commit.tree.get(path)
                if existing is not None:
                    item["oid"] = existing.remote_oid
                out.append(item)
            return json_response({"files": out, "commitOid": commit.oid})

    # -- listing --------------------------------------------------------------------------------

    def _h_tree(self, request: Request, route: Route) -> Response:
        """One page of a folder's listing, and the next page's URL in ``Link`` while entries are left."""
        recursive, expand = request.qbool("recursive"), request.qbool("expand")
        base = (route.path_in_repo or "").strip("/")
        cursor = (request.query.get("cursor") or [""])[-1]
        with self._lock:
            repo = self._repo(route)
            revision, start = read_cursor(cursor) if cursor else (route.revision or "main", 0)
            commit = self._commit_at(repo, revision)
            index = self._tree_index(commit)
            if base and base not in index.dir_oids:
                raise HubError(404, f"Folder not found: {base}", error_code="EntryNotFound")
            listing = index.listing(base, recursive)
            end = start + (TREE_PAGE_EXPANDED if expand else TREE_PAGE)
            out = [self._entry_json(repo, commit, path, expand, None if is_dir else commit.tree[path])
                   for path, is_dir in listing[start:end]]
        headers = {}
        if end < len(listing):
            query = {**request.query, "cursor": [make_cursor(commit.oid, end)]}
            headers["Link"] = f'<{request.base_url}{request.path}?{urlencode(query, doseq=True)}>; rel="next"'
        return json_response(out, headers=headers)

    def _h_paths_info(self, request: Request, route: Route) -> Response:
        content_type = (request.headers.get("Content-Type") or "").lower()
        if "json" in content_type:
            payload = request.json()
            paths = payload.get("paths") or []
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(request.body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[-1].lower() in ("1", "true")
        if isinstance(paths, str):
            paths = [paths]
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            dirs = self._tree_index(commit).dir_oids
            out = []
            for raw in paths:
                path = str(raw).strip("/")
                if path in commit.tree:
                    out.append(self._entry_json(repo, commit, path, expand, commit.tree[path]))
                elif path in dirs:
                    out.append(self._entry_json(repo, commit, path, expand))
        return json_response(out)

    # -- history and branches -------------------------------------------------------------------

    def _h_squash(self, request: Request, route: Route) -> Response:
        branch = route.revision or "main"
        message = request.json().get("message") or f"Super-squash branch '{branch}'"
        with self._lock:
            repo = self._repo(route)
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            oid = self._new_oid("squash", head.oid, message)
            repo.commits[oid] = Commit(oid, None, dict(head.tree), message, "", time.time(), sorted(head.tree), [])
            repo.branches[branch] = oid
        self._bump("squashes")
        logger.info("super-squashed %s:%s@%s into %s", repo.repo_type, repo.repo_id, branch, oid[:8])
        return json_response({"commitId": oid})

    def _h_list_commits(self, request: Request, route: Route) -> Response:
        with self._lock:
            repo = self._repo(route)
            head = self._commit_at(repo, route.revision or "main")
            out = [
                {
                    "id": c.oid,
                    "title": c.summary,
                    "message": c.description,
                    "date": iso(c.date),
                    "authors": [{"user": self.username}],
                }
                for c in repo.history(head.oid)
            ]
        return json_response(out)

    def _h_refs(self, request: Request, route: Route) -> Response:
        with self._lock:
            repo = self._repo(route)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid} for name, oid in sorted(repo.branches.items())
            ]
        return json_response({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _h_branch(self, request: Request, route: Route) -> Response:
        branch = route.revision or ""
        with self._lock:
            repo = self._repo(route)
            if request.method == "DELETE":
                if branch not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del repo.branches[branch]
                return Response(200)
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            start = self._commit_at(repo, request.json().get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return Response(200)

    # -- download -------------------------------------------------------------------------------

    def _h_resolve(self, request: Request, route: Route) -> Response:
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            entry = commit.tree.get(route.path_in_repo or "")
        if entry is None:
            raise HubError(404, "Entry not found", error_code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {"ETag": f'"{entry.etag}"', "X-Repo-Commit": commit.oid}
        if entry.lfs_sha256:
            headers["X-Linked-Etag"] = f'"{entry.lfs_sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        if entry.xet_hash:
            # What the Hub sends for Xet-stored files: the client then fetches a read token from the
            # "xet-auth" link and downloads through the CAS (reconstruction + xorb ranges).
            plural = f"{repo.repo_type}s"
            token_url = f"{request.base_url}/api/{plural}/{repo.repo_id}/xet-read-token/{commit.oid}"
            headers["X-Xet-Hash"] = entry.xet_hash
            headers["X-Xet-Refresh-Route"] = token_url
            headers["Link"] = f'<{token_url}>; rel="xet-auth"'
        name = (route.path_in_repo or "").rsplit("/", 1)[-1]
        return content_response(request, entry.data, headers, name)
