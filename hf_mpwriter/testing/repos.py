"""Git-repository routes of the test Hub: create/delete, info, preupload, commit, tree, paths-info, resolve...

What huggingface_hub 2.x sends (``{T}`` = models|datasets|spaces; path segments arrive
percent-quoted and are unquoted one by one):

* ``POST /api/repos/create`` ``{name, organization, type, private?}`` -> ``{url}``; with ``exist_ok``
  the client accepts a 409 only if its body carries ``url``.
* ``POST /api/{T}/{id}/preupload/{rev}`` -> ``{files: [{path, uploadMode, shouldIgnore, oid?}]}``; an
  ``oid`` equal to the local one makes the client drop that file. (Whether an "lfs" file then goes
  through Xet or legacy LFS is the client's choice alone: Xet unless ``HF_HUB_DISABLE_XET=1``.)
* ``POST /api/{T}/{id}/commit/{rev}`` NDJSON: ``header{summary, description, parentCommit?}``, then
  ``file{path, content, encoding}``, ``lfsFile{path, algo, oid=sha256, size}``, ``deletedFile``,
  ``deletedFolder``. A stale ``parentCommit`` gets 412. An ``lfsFile`` must name content uploaded
  *to this repository* (a legacy LFS PUT, or a Xet shard sent with this repository's write token);
  otherwise 400 with the Hub's own words, every offending path listed (:data:`DANGLING_LFS`), which
  the client raises as ``BadRequestError`` ("Bad request for commit endpoint"). Content uploaded to
  another repository, or to a deleted one of the same name, counts as missing, as on the Hub (it
  copies across repositories through ``lfs-files/duplicate`` first). The client does not retry
  ``/commit``.
* ``GET /api/{T}/{id}/tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}``: entries
  ``{type, oid, size, path, lfs?, xetHash?}``.
* ``HEAD``/``GET /{id}/resolve/{rev}/{path}``: content with ``X-Repo-Commit`` and ``ETag``; files
  stored through Xet also carry ``X-Xet-Hash`` and a ``Link: <.../xet-read-token/{commit}>;
  rel="xet-auth"``, from which a Xet-enabled client downloads through the CAS.
* Errors name their class in ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
  A README.md in a commit makes the client call ``POST /api/validate-yaml``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from .httpd import HubError, Request, Response, Route, json_response, parse_range
from .limits import FolderEntries, folders_holding, too_many_entries
from .storage import (
    PLURAL_TO_TYPE,
    REPO_TYPES,
    Commit,
    FileEntry,
    HubState,
    Repo,
    cas_scope,
    dirs_of,
    is_lfs,
    iso,
)

logger = logging.getLogger("hf_mpwriter.testing.hub_server")

#: The Hub's answer (400) to a commit whose ``lfsFile`` names content it does not hold for the
#: repository, as huggingface_hub users quote it (huggingface_hub issue #3829), offending paths appended.
DANGLING_LFS = (
    "Your push was rejected because an LFS pointer pointed to a file that does not exist. For instance, "
    "this can happen if you used git push --no-verify to push your changes. Offending file: {paths}"
)

#: Path segments that follow a repo id in ``/api/{type}s/{id}/...`` URLs.
API_ACTIONS = frozenset(
    {
        "revision",
        "preupload",
        "commit",
        "tree",
        "paths-info",
        "super-squash",
        "commits",
        "refs",
        "branch",
        "xet-read-token",
        "xet-write-token",
    }
)


def route_repo_api(method: str, repo_type: str, segs: list[str], exists: Any) -> Route:
    """``/api/{T}/...`` after the type segment. ``exists(repo_type, repo_id)`` disambiguates ids.

    Repo ids are "name" or "namespace/name": prefer an existing two-segment repo, then treat a
    known action keyword in second position as the end of a one-segment id.
    """
    if len(segs) >= 2 and (exists(repo_type, f"{unquote(segs[0])}/{unquote(segs[1])}") or segs[1] not in API_ACTIONS):
        repo_id, rest = f"{unquote(segs[0])}/{unquote(segs[1])}", segs[2:]
    else:
        repo_id, rest = unquote(segs[0]), segs[1:]
    r = Route("unknown", repo_type=repo_type, repo_id=repo_id)
    if not rest:
        if method == "GET":
            r.name = "repo_info"
        return r
    action, args = rest[0], [unquote(s) for s in rest[1:]]
    if action == "revision" and len(args) == 1 and method == "GET":
        r.name, r.revision = "repo_info", args[0]
    elif action == "preupload" and len(args) == 1 and method == "POST":
        r.name, r.revision = "preupload", args[0]
    elif action == "commit" and len(args) == 1 and method == "POST":
        r.name, r.revision = "commit", args[0]
    elif action == "tree" and len(args) >= 1 and method == "GET":
        r.name, r.revision, r.path_in_repo = "tree", args[0], "/".join(args[1:])
    elif action == "paths-info" and len(args) == 1 and method == "POST":
        r.name, r.revision = "paths_info", args[0]
    elif action == "super-squash" and len(args) == 1 and method == "POST":
        r.name, r.revision = "squash", args[0]
    elif action == "commits" and len(args) == 1 and method == "GET":
        r.name, r.revision = "list_commits", args[0]
    elif action == "refs" and not args and method == "GET":
        r.name = "refs"
    elif action == "branch" and len(args) == 1 and method in ("POST", "DELETE"):
        r.name, r.revision = "branch", args[0]
    elif action in ("xet-read-token", "xet-write-token") and len(args) <= 1 and method in ("GET", "POST"):
        r.name, r.key = "xet_token", action[4:-6]  # "read" / "write"
        r.revision = args[0] if args else None
    return r


def route_repo_web(method: str, segs: list[str]) -> Route:
    """Non-API repo URLs: ``/{id}.git/info/lfs/objects/{batch,verify}`` and ``/{id}/resolve/{rev}/{path}``."""
    repo_type = "model"
    if segs and segs[0] in ("datasets", "spaces"):
        repo_type, segs = PLURAL_TO_TYPE[segs[0]], segs[1:]
    for i, seg in enumerate(segs[:2]):
        if seg.endswith(".git") and segs[i + 1 : i + 4] == ["info", "lfs", "objects"] and len(segs) == i + 5:
            repo_id = "/".join(unquote(s) for s in segs[:i] + [seg[: -len(".git")]])
            action = segs[i + 4]
            if method == "POST" and action in ("batch", "verify"):
                return Route(f"lfs_{action}", repo_type=repo_type, repo_id=repo_id)
    for i in (1, 2):
        if len(segs) > i + 2 and segs[i] == "resolve" and method in ("GET", "HEAD"):
            return Route(
                "resolve",
                repo_type=repo_type,
                repo_id="/".join(unquote(s) for s in segs[:i]),
                revision=unquote(segs[i + 1]),
                path_in_repo="/".join(unquote(s) for s in segs[i + 2 :]),
            )
    return Route("unknown")


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

    @staticmethod
    def _dir_oid(tree: dict[str, FileEntry], directory: str) -> str:
        prefix = directory + "/"
        listing = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(tree.items()) if p.startswith(prefix))
        return hashlib.sha1(b"tree\0" + listing.encode()).hexdigest()

    def _last_commit(self, repo: Repo, head: Commit, path: str, is_dir: bool) -> dict[str, str]:
        for commit in repo.history(head.oid):
            changed = commit.added + commit.deleted
            if any(p == path or (is_dir and p.startswith(path + "/")) for p in changed):
                return {"id": commit.oid, "title": commit.summary, "date": iso(commit.date)}
        return {"id": head.oid, "title": head.summary, "date": iso(head.date)}

    def _entry_json(self, repo: Repo, commit: Commit, path: str, expand: bool, entry: FileEntry | None = None) -> dict[str, Any]:
        if entry is not None:
            out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
            if entry.lfs_sha256:
                out["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            if entry.xet_hash:
                out["xetHash"] = entry.xet_hash
        else:
            out = {"type": "directory", "oid": self._dir_oid(commit.tree, path), "size": 0, "path": path}
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

    def _large_file(self, repo: Repo, path: str, value: dict[str, Any]) -> FileEntry | None:
        """The content an ``lfsFile`` operation names, if it was uploaded to ``repo``; None if not.

        Legacy LFS objects belong to the repository they were PUT for; Xet files to the scope of the
        write token their shard came with (:meth:`~.storage.HubState._grant_xet_files`).
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

    def _h_commit(self, request: Request, route: Route) -> Response:
        if request.qbool("create_pr"):
            raise HubError(400, "Pull requests are not supported by HubServer")
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as exc:
            raise HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0].get("value") or {}
        summary = header.get("summary") or ""
        if not summary:
            raise HubError(400, "Commit summary is required")
        branch = route.revision or "main"
        self._check_files_per_commit(len(lines) - 1)
        with self._lock:
            repo = self._repo(route)
            key = f"{repo.repo_type}:{repo.repo_id}"
            refusal = self._quotas.commit_refusal(key)
            if refusal is not None:
                self._refuse("commits", refusal)
            if branch not in repo.branches:
                if repo.resolve(branch) is not None:
                    raise HubError(400, f"Invalid rev id: {branch} is not a branch")
                raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(str(parent).lower()):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            added: list[str] = []
            deleted: list[str] = []
            dangling: list[str] = []  # lfsFile paths whose content was not uploaded to this repository
            for line in lines[1:]:
                kind, value = line.get("key"), line.get("value") or {}
                path = value.get("path")
                if not isinstance(path, str) or not path:
                    raise HubError(400, f"Operation {kind!r} needs a path")
                if kind == "file":
                    content = value.get("content", "")
                    if value.get("encoding", "base64") == "base64":
                        try:
                            data = base64.b64decode(content, validate=True)
                        except ValueError as exc:
                            raise HubError(400, f"Invalid base64 content for {path}") from exc
                    else:
                        data = str(content).encode()
                    tree[path] = FileEntry.regular(data)
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
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in tree if p.startswith(prefix)]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", error_code="EntryNotFound")
                    for p in gone:
                        del tree[p]
                    deleted.extend(gone)
                else:
                    raise HubError(400, f"Unknown commit operation {kind!r}")
            if dangling:
                raise HubError(400, DANGLING_LFS.format(paths=" ".join(f"- {p}" for p in dangling)))
            self._check_entries(tree, added, branch)
            oid = self._new_oid("commit", head.oid, summary, *added, *deleted)
            repo.commits[oid] = Commit(oid, head.oid, tree, summary, header.get("description") or "", time.time(), added, deleted)
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

    # -- listing --------------------------------------------------------------------------------

    def _h_tree(self, request: Request, route: Route) -> Response:
        recursive, expand = request.qbool("recursive"), request.qbool("expand")
        base = (route.path_in_repo or "").strip("/")
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            dirs = dirs_of(commit.tree)
            if base and base not in dirs:
                raise HubError(404, f"Folder not found: {base}", error_code="EntryNotFound")
            prefix = base + "/" if base else ""

            def wanted(path: str) -> bool:
                return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

            out = [self._entry_json(repo, commit, d, expand) for d in sorted(dirs) if wanted(d)]
            out += [self._entry_json(repo, commit, p, expand, e) for p, e in sorted(commit.tree.items()) if wanted(p)]
        return json_response(out)

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
            dirs = dirs_of(commit.tree)
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
