"""Legacy git-LFS routes of the test Hub: the batch API, the upload PUT and the verify call.

``POST /{id}.git/info/lfs/objects/batch`` (models have no type prefix) is also where some clients
*negotiate* Xet: the request's ``transfers`` lists what the client can do, the answer's ``transfer``
is the server's choice. huggingface_hub 0.36 offers ``["basic", "multipart", "xet"]`` when
``hf_xet`` is usable and uploads through Xet only if the answer says ``"transfer": "xet"`` (like the
Hub for a Xet-enabled repository, which every repository here is); 0.34 asks ``repo_info(expand=
"xetEnabled")`` instead, and 1.x and later use Xet without asking. Clients that do not offer ``xet``
(``HF_HUB_DISABLE_XET=1``, no ``hf_xet``, file objects) get ``"basic"``: each object an ``upload``
action whose ``href`` is an unguessable ``/__lfs__/{id}`` URL on this server (the PUT of raw bytes
needs no token, like a presigned URL) and a ``verify`` action. The PUT body must match the announced
size and sha256; the object then belongs to the repository and a commit may name it in an
``lfsFile`` operation. With ``xet`` chosen, objects carry no actions: the content goes to the CAS.
"""

from __future__ import annotations

import hashlib
import secrets

from .httpd import HubError, Request, Response, Route, json_response
from .hub_state import HubState


class LfsRoutes(HubState):
    """Handlers of the legacy LFS routes (``_h_lfs_*``)."""

    def _h_lfs_batch(self, request: Request, route: Route) -> Response:
        payload = request.json()
        if payload.get("operation", "upload") != "upload":
            raise HubError(400, "HubServer only implements LFS uploads")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "Missing 'objects'")
        transfers = payload.get("transfers") or ["basic"]
        xet = isinstance(transfers, list) and "xet" in transfers
        out = []
        with self._lock:
            repo = self._repo_by(route.repo_type, route.repo_id)
            key = (repo.repo_type, repo.repo_id)
            git_url = f"{self._repo_url(request.base_url, repo.repo_type, repo.repo_id)}.git"
            for obj in objects:
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not isinstance(size, int):
                    raise HubError(400, "Each object needs 'oid' and 'size'")
                if xet or oid in repo.lfs_objects:
                    out.append({"oid": oid, "size": size})  # no actions: through Xet, or already stored
                    continue
                upload_id = secrets.token_urlsafe(16)
                self._uploads[upload_id] = (key, oid, size)
                out.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": f"{request.base_url}/__lfs__/{upload_id}", "header": {}},
                            "verify": {"href": f"{git_url}/info/lfs/objects/verify", "header": {}},
                        },
                    }
                )
        return json_response(
            {"transfer": "xet" if xet else "basic", "objects": out, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _h_lfs_upload(self, request: Request, route: Route) -> Response:
        with self._lock:
            pending = self._uploads.get(route.upload_id or "")
        if pending is None:
            raise HubError(404, "Unknown or expired upload URL")
        key, oid, size = pending
        if len(request.body) != size:
            raise HubError(400, f"Size mismatch: expected {size} bytes, got {len(request.body)}")
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch: uploaded content does not match the LFS oid")
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                raise HubError(404, "Repository not found", error_code="RepoNotFound")
            repo.lfs_objects[oid] = request.body
        with self._meta_lock:
            self._stats["lfs_bytes_received"] += len(request.body)
            self._stats["lfs_uploads"] += 1
        return Response(200, b"", {"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'})

    def _h_lfs_verify(self, request: Request, route: Route) -> Response:
        payload = request.json()
        with self._lock:
            repo = self._repo_by(route.repo_type, route.repo_id)
            data = repo.lfs_objects.get(payload.get("oid", ""))
        if data is None or ("size" in payload and len(data) != payload["size"]):
            raise HubError(404, "LFS object not found")
        return json_response({"success": True})
