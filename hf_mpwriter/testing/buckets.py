"""Storage Bucket routes of the test Hub: create/info/delete/list, batch writes, tree, paths-info, resolve.

Buckets (huggingface_hub 2.x) hold files by path with no git history: each write applies at once,
per file, with no commits, no parent and no commit rate (their requests do spend the API window).
Content always goes through Xet: the client uploads xorbs and a shard to the CAS (write token from
``/api/buckets/{id}/xet-write-token``), then names each file by its Xet hash in a batch. What the client sends
(its paths told apart in :mod:`.routing`):

* ``POST /api/buckets/{ns}/{name}`` ``{visibility?}`` -> ``{url}`` (``ns`` = ``me`` means the caller;
  409 with ``url`` if it exists), ``GET`` -> ``{id, private, createdAt, size, totalFiles}``,
  ``DELETE``; ``GET /api/buckets/{ns}`` lists a namespace.
* ``POST /api/buckets/{id}/batch``, NDJSON lines ``{type: addFile|copyFile, path, xetHash, mtime (ms),
  contentType?}`` or ``{type: deleteFile, path}`` -> ``{failed: [{path, error}]}`` (200, or 422 when
  every operation failed), which the client raises as ``BucketBatchError``. ``addFile`` may name only
  a Xet hash uploaded *to this bucket* (a shard sent with its write token) or held by one of its
  files; ``copyFile`` (with ``sourceRepoType``, ``sourceRepoId``) one that the source holds. Any
  other hash, one the CAS holds for another repository or bucket included, fails that operation:
  knowing a hash gives no access to another repository's content.
* ``GET /api/buckets/{id}/tree[/{prefix}]?recursive=`` -> files ``{type: file, path, size, xetHash,
  mtime, uploadedAt}`` and, when not recursive, the direct sub-directories ``{type: directory, path}``,
  1,000 a page in path order with a ``Link: <...?cursor=...>; rel="next"`` while entries are left;
  ``POST /api/buckets/{id}/paths-info`` ``{paths}`` -> the files among them.
* ``HEAD``/``GET /buckets/{id}/resolve/{path}``: content (``Range`` honoured) with ``X-Xet-Hash`` and
  ``Link: <.../api/buckets/{id}/xet-read-token>; rel="xet-auth"``.

A missing bucket answers 404 with ``X-Error-Code: RepoNotFound``, which the client turns into
``BucketNotFoundError``. An addition that would take a folder over ``limits.entries_per_folder``
entries fails (the Hub publishes no bucket limit; this server applies its repositories' one, see
:mod:`.limits`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

from .httpd import HubError, Request, Response, Route, json_response
from .hub_state import HubState
from .limits import FolderEntries, folders_holding, too_many_bucket_entries
from .repos import content_response
from .storage import Bucket, BucketFile, XetFile, cas_scope, iso
from .tree_index import TREE_PAGE

logger = logging.getLogger("hf_mpwriter.testing.hub_server")


class BucketRoutes(HubState):
    """Handlers of the Storage Bucket routes (``_h_bucket_*``)."""

    def _bucket_info_json(self, bucket: Bucket) -> dict[str, Any]:
        return {
            "id": bucket.bucket_id,
            "private": bucket.private,
            "createdAt": iso(bucket.created_at),
            "size": sum(f.size for f in bucket.files.values()),
            "totalFiles": len(bucket.files),
        }

    @staticmethod
    def _bucket_file_json(path: str, f: BucketFile) -> dict[str, Any]:
        return {
            "type": "file",
            "path": path,
            "size": f.size,
            "xetHash": f.xet_hash,
            "mtime": iso(f.mtime),
            "uploadedAt": iso(f.uploaded_at),
        }

    def _h_bucket_create(self, request: Request, route: Route) -> Response:
        payload = request.json()
        bucket_id = route.repo_id or ""
        url = f"{request.base_url}/buckets/{bucket_id}"
        with self._lock:
            if bucket_id in self._buckets:
                raise HubError(409, "You already created this bucket", extra={"url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self._buckets[bucket_id] = Bucket(bucket_id, private, time.time())
        logger.info("created bucket %s", bucket_id)
        return json_response({"url": url, "id": bucket_id, "name": bucket_id.split("/", 1)[-1]})

    def _h_bucket_info(self, request: Request, route: Route) -> Response:
        with self._lock:
            return json_response(self._bucket_info_json(self._bucket_by(route.repo_id)))

    def _h_bucket_list(self, request: Request, route: Route) -> Response:
        prefix = f"{route.repo_id}/"
        with self._lock:
            return json_response([self._bucket_info_json(b) for i, b in sorted(self._buckets.items()) if i.startswith(prefix)])

    def _h_bucket_delete(self, request: Request, route: Route) -> Response:
        with self._lock:
            if self._buckets.pop(route.repo_id or "", None) is None:
                raise HubError(404, "Bucket not found", error_code="RepoNotFound")
            self._forget_scope(cas_scope("bucket", route.repo_id))
        logger.info("deleted bucket %s", route.repo_id)
        return Response(200)

    def _holds(self, scope: str, xet_hash: str) -> XetFile | None:
        """The Xet file ``xet_hash`` if the repository or bucket ``scope`` holds it: uploaded to it, or in one of its files."""
        found = self._xet_file_in(scope, xet_hash)
        if found is not None:
            return found
        kind, _, name = scope.partition(":")
        if kind == "bucket":
            source = self._buckets.get(name)
            held = source is not None and any(f.xet_hash == xet_hash for f in source.files.values())
        else:
            repo = self._repos.get((kind, name))
            held = repo is not None and any(e.xet_hash == xet_hash for c in repo.commits.values() for e in c.tree.values())
        return self._cas.files.get(xet_hash) if held else None

    def _xet_source(self, bucket: Bucket, op: dict[str, Any]) -> tuple[XetFile | None, str]:
        """The content an ``addFile``/``copyFile`` names, or None and the reason it cannot be used."""
        xet_hash = str(op.get("xetHash"))
        if op.get("type") == "copyFile":
            source = cas_scope(op.get("sourceRepoType"), op.get("sourceRepoId"))
            where = f"{op.get('sourceRepoType')} {op.get('sourceRepoId')}"
        else:
            source, where = cas_scope("bucket", bucket.bucket_id), f"bucket {bucket.bucket_id}"
        xf = self._holds(source, xet_hash)
        if xf is None:
            return None, f"Xet hash {xet_hash} not found in {where}: upload the file to it through Xet first"
        return xf, ""

    def _h_bucket_batch(self, request: Request, route: Route) -> Response:
        try:
            ops = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as exc:
            raise HubError(400, f"Invalid NDJSON batch payload: {exc}") from exc
        failed: list[dict[str, str]] = []
        applied = 0
        now = time.time()
        written: list[str] = []
        with self._lock:
            bucket = self._bucket_by(route.repo_id)
            entries = self._bucket_entries(bucket, ops)
            for op in ops:
                kind, path = op.get("type"), op.get("path")
                if not isinstance(path, str) or not path.strip("/"):
                    failed.append({"path": str(path), "error": "missing path"})
                    continue
                path = path.strip("/")
                if kind in ("addFile", "copyFile"):
                    new = path not in bucket.files
                    xf, error = self._xet_source(bucket, op)
                    if xf is not None and new and entries is not None:
                        error = self._crowding(entries, path)
                    if xf is None or error:
                        failed.append({"path": path, "error": error})
                        continue
                    mtime = op.get("mtime")
                    bucket.files[path] = BucketFile(
                        xet_hash=xf.hash,
                        size=xf.size,
                        mtime=float(mtime) / 1000 if isinstance(mtime, (int, float)) else now,
                        uploaded_at=now,
                        content_type=op.get("contentType"),
                    )
                    if new and entries is not None:
                        entries.add(path)
                    written.append(path)
                elif kind == "deleteFile":
                    if bucket.files.pop(path, None) is None:
                        failed.append({"path": path, "error": "file not found"})
                        continue
                    if entries is not None:
                        entries.remove(path)
                else:
                    failed.append({"path": path, "error": f"unknown operation type {kind!r}"})
                    continue
                applied += 1
        if applied:
            with self._lock:
                bucket.batches.append({"time": now, "paths": written, "sizes": {p: bucket.files[p].size for p in written}})
            with self._meta_lock:
                self._stats["bucket_writes"] += 1
                self._stats["bucket_ops"] += applied
        logger.info("bucket batch on %s: %d applied, %d failed", route.repo_id, applied, len(failed))
        return json_response({"failed": failed}, status=422 if ops and not applied else 200)

    def _bucket_entries(self, bucket: Bucket, ops: list[dict[str, Any]]) -> FolderEntries | None:
        """The entries of the folders a batch adds to, or None where ``limits.entries_per_folder``
        cannot be reached (off, or fewer files than the limit even with every addition)."""
        limit = self._quotas.limits.entries_per_folder
        adds = [str(op.get("path")).strip("/") for op in ops if op.get("type") in ("addFile", "copyFile")]
        if limit is None or len(bucket.files) + len(adds) <= limit:
            return None
        return FolderEntries(bucket.files, folders_holding(adds))

    def _crowding(self, entries: FolderEntries, path: str) -> str:
        """Why adding ``path`` fails for ``limits.entries_per_folder`` (counted), or "" if it fits."""
        limit = self._quotas.limits.entries_per_folder
        crowded = entries.would_crowd(path, limit) if limit is not None else []
        if not crowded:
            return ""
        self._bump("limits_hit", sub="entries_per_folder")
        return too_many_bucket_entries(limit or 0, crowded)

    def _h_bucket_tree(self, request: Request, route: Route) -> Response:
        """One page of a folder's listing (:data:`~.tree_index.TREE_PAGE` entries, in path order), and the next
        page's URL in ``Link`` while entries are left. A bucket changes between pages: the cursor is the last path
        served, not a position, so a page never repeats or skips an entry that stayed."""
        recursive = request.qbool("recursive")
        base = (route.path_in_repo or "").strip("/")
        after = (request.query.get("cursor") or [""])[-1]
        with self._lock:
            bucket = self._bucket_by(route.repo_id)
            files = dict(bucket.files)
        if base in files:  # listing a file gives that file
            return json_response([self._bucket_file_json(base, files[base])])
        prefix = base + "/" if base else ""
        under = {p: f for p, f in files.items() if p.startswith(prefix)}
        if recursive:
            entries = {p: self._bucket_file_json(p, f) for p, f in under.items()}
        else:
            newest: dict[str, float] = {}  # each folder right under ``base``: its newest file (one pass)
            for path, f in under.items():
                head, slash, _ = path[len(prefix):].partition("/")
                if slash:
                    newest[prefix + head] = max(newest.get(prefix + head, f.uploaded_at), f.uploaded_at)
            entries = {d: {"type": "directory", "path": d, "uploadedAt": iso(at)} for d, at in newest.items()}
            entries.update({p: self._bucket_file_json(p, f) for p, f in under.items() if "/" not in p[len(prefix):]})
        listing = sorted(p for p in entries if p > after)
        page = listing[:TREE_PAGE]
        headers = {}
        if len(listing) > TREE_PAGE:
            query = {**request.query, "cursor": [page[-1]]}
            headers["Link"] = f'<{request.base_url}{request.path}?{urlencode(query, doseq=True)}>; rel="next"'
        return json_response([entries[p] for p in page], headers=headers)

    def _h_bucket_paths_info(self, request: Request, route: Route) -> Response:
        paths = request.json().get("paths") or []
        if isinstance(paths, str):
            paths = [paths]
        with self._lock:
            bucket = self._bucket_by(route.repo_id)
            out = [
                self._bucket_file_json(p, bucket.files[p]) for p in (str(raw).strip("/") for raw in paths) if p in bucket.files
            ]
        return json_response(out)

    def _h_bucket_resolve(self, request: Request, route: Route) -> Response:
        path = (route.path_in_repo or "").strip("/")
        with self._lock:
            bucket = self._bucket_by(route.repo_id)
            entry = bucket.files.get(path)
            data = self._cas.files[entry.xet_hash].data if entry is not None else b""
        if entry is None:
            raise HubError(404, "Entry not found", error_code="EntryNotFound")
        token_url = f"{request.base_url}/api/buckets/{bucket.bucket_id}/xet-read-token"
        headers = {
            "ETag": f'"{entry.xet_hash}"',
            "X-Linked-Size": str(entry.size),
            "X-Xet-Hash": entry.xet_hash,
            "X-Xet-Refresh-Route": token_url,
            "Link": f'<{token_url}>; rel="xet-auth"',
        }
        if entry.content_type:
            headers["Content-Type"] = entry.content_type
        return content_response(request, data, headers, path.rsplit("/", 1)[-1])
