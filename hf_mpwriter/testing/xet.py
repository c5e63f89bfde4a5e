"""Xet routes of the test Hub: token endpoints and a CAS server (xorbs, shards, reconstructions, dedup).

Follows the public *Xet Protocol Specification* (CAS API, xorb and shard formats, download
protocol), as spoken by ``hf_xet`` (xet-core) under huggingface_hub 2.x:

* Tokens, on the Hub API: ``GET|POST /api/{T}/{id}/xet-{read,write}-token/{rev}`` for repos and
  ``/api/buckets/{id}/xet-{read,write}-token`` for buckets. The answer carries ``casUrl``,
  ``accessToken`` and ``exp`` both as JSON (what hf_xet reads) and as ``X-Xet-Cas-Url``,
  ``X-Xet-Access-Token``, ``X-Xet-Token-Expiration`` headers (what huggingface_hub reads). A write
  token needs a Hub token with write access. ``casUrl`` is ``{endpoint}/cas/{instance}`` on this same
  server (``instance``: this server's store; ``/cas`` alone is the same CAS).
* CAS (``Authorization: Bearer <access token>``; uploads need a write token):
  ``POST /v1/xorbs/default/{hash}`` (a serialized xorb: chunks of ``[version u8, compressed size
  u24, scheme u8, uncompressed size u24]`` + data, scheme 0 = none, 1 = LZ4 frame, 2 = 4-byte
  grouping then LZ4 frame; an optional ``XorbObjectInfo`` footer is ignored), ``POST /v1/shards`` and
  ``/v2/shards`` (a shard without footer: file-info section, each file a list of
  ``(xorb, chunk range, unpacked bytes)`` terms + optional sha256 metadata, then the CAS-info section
  listing the new xorbs and their chunk hashes), ``GET /v1/reconstructions/{file}`` and
  ``/v2/reconstructions/{file}`` (with an optional ``Range``) and ``POST /v1/reconstructions``
  (batch), ``GET /v1/chunks/{prefix}/{chunk hash}`` (global dedup: a shard naming the xorb that holds
  the chunk, else 404). Hashes in URLs use the spec's string form (each 8-byte group reversed).
  ``/v1/xorb-grants/...``, ``/v1/xorb-commits/...`` and ``/v2/file-chunk-hashes/...`` (newer hf_xet
  calls, outside the spec) answer 404: hf_xet 1.8 then falls back to direct xorb uploads, as the
  spec describes them. Dedup answers carry the footer lookup tables xet-core reads.
* Xorb bytes are downloaded from the signed URLs a reconstruction hands out:
  ``GET /cas/xorb-data/default/{hash}?sig=...`` with ``Range: bytes=a-b``.

What the server checks: every chunk decompresses to its announced size; a shard may only name
uploaded xorbs, existing chunk ranges and matching unpacked lengths; each file is reassembled from
its chunks and its sha256 computed (and compared with the shard's sha256 metadata when present;
xet-core writes that digest in the byte order of its other hashes, so it is decoded like them). A
commit's ``lfsFile`` (oid = sha256) then finds the content by sha256. Chunk and xorb *hashes* (keyed
BLAKE3) are not recomputed: the standard library has no BLAKE3, and the sha256 of the reassembled
content is what a commit is checked against. The formats are read and written in
:mod:`.xet_formats`, the URLs above told apart in :mod:`.routing`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

from .httpd import HubError, Request, Response, Route, json_response, parse_range
from .hub_state import HubState
from .storage import CasToken, XetFile, XetTerm, Xorb
from .xet_formats import dedup_shard, is_hash_str, parse_shard, parse_xorb

logger = logging.getLogger("hf_mpwriter.testing.hub_server")

#: Routes under ``/cas`` that need a CAS access token (``xorb_download`` is authorised by its signature).
CAS_ROUTES = frozenset({"xorb_upload", "shard_upload", "reconstruction", "chunk_query", "cas_unsupported"})
#: CAS routes that need a *write* access token.
CAS_WRITE_ROUTES = frozenset({"xorb_upload", "shard_upload"})

#: Lifetime of the access tokens the token endpoints hand out.
XET_TOKEN_TTL = 3600.0


class XetRoutes(HubState):
    """Handlers of the Xet token endpoints and of the CAS."""

    #: Seconds the access tokens it hands out last (a server's own setting: a test of token renewal shortens it).
    xet_token_ttl: float = XET_TOKEN_TTL

    def _xorb_signature(self, xorb_hash: str) -> str:
        return hmac.new(self._cas.url_secret.encode(), xorb_hash.encode(), hashlib.sha256).hexdigest()[:32]

    def _check_cas_auth(self, request: Request, route: Route) -> None:
        if route.name == "xorb_download":
            sig = (request.query.get("sig") or [""])[-1]
            if not hmac.compare_digest(sig, self._xorb_signature(route.key or "")):
                raise HubError(403, "Invalid or missing signature on the xorb URL")
            return
        token = request.bearer()
        with self._lock:
            entry = self._cas.tokens.get(token or "")
        if entry is None or entry.expires <= time.time():
            raise HubError(401, "Missing, unknown or expired Xet access token")
        if route.name in CAS_WRITE_ROUTES and not entry.write:
            raise HubError(403, "This Xet access token is read-only")

    # -- tokens (Hub API) -----------------------------------------------------------------------

    def _h_xet_token(self, request: Request, route: Route) -> Response:
        write = route.key == "write"
        now = time.time()
        with self._lock:
            if route.repo_type == "bucket":
                self._bucket_by(route.repo_id)
            else:
                self._repo_by(route.repo_type, route.repo_id)
            for stale in [t for t, e in self._cas.tokens.items() if e.expires <= now]:
                del self._cas.tokens[stale]
            entry = CasToken(
                token=f"xet_{secrets.token_urlsafe(24)}",
                write=write,
                expires=now + self.xet_token_ttl,
                scope=f"{route.repo_type}:{route.repo_id}",
            )
            self._cas.tokens[entry.token] = entry
        cas_url = f"{request.base_url}/cas/{self._cas.instance}"
        exp = int(entry.expires)
        return json_response(
            {"accessToken": entry.token, "exp": exp, "casUrl": cas_url},
            headers={"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": entry.token, "X-Xet-Token-Expiration": str(exp)},
        )

    # -- uploads --------------------------------------------------------------------------------

    def _h_xorb_upload(self, request: Request, route: Route) -> Response:
        xorb_hash = route.key or ""
        if not is_hash_str(xorb_hash):
            raise HubError(400, f"Malformed xorb hash {xorb_hash!r}")
        self._bump("xorb_bytes_received", len(request.body))
        with self._lock:
            if xorb_hash in self._cas.xorbs:
                return json_response({"was_inserted": False})
        try:
            chunks, offsets = parse_xorb(request.body)
        except ValueError as exc:
            raise HubError(400, f"Invalid xorb {xorb_hash}: {exc}") from exc
        xorb = Xorb(xorb_hash, request.body, tuple(chunks), tuple(offsets))
        with self._lock:
            inserted = self._cas.xorbs.setdefault(xorb_hash, xorb) is xorb
        if inserted:
            with self._meta_lock:
                self._stats["xorbs_received"] += 1
                self._stats["xet_chunks"] += len(chunks)
        logger.info("xorb %s: %d chunks, %d bytes", xorb_hash[:8], len(chunks), len(request.body))
        return json_response({"was_inserted": inserted})

    def _h_shard_upload(self, request: Request, route: Route) -> Response:
        try:
            files, listed = parse_shard(request.body)
        except ValueError as exc:
            raise HubError(400, f"Invalid shard: {exc}") from exc
        registered: list[XetFile] = []
        with self._lock:
            xorbs = self._cas.xorbs
            for block in listed:
                xorb = xorbs.get(block.hash)
                if xorb is None:
                    raise HubError(400, f"Shard lists xorb {block.hash} which was not uploaded")
                if list(block.chunk_sizes) != [len(c) for c in xorb.chunks]:
                    raise HubError(400, f"Shard's chunk listing of xorb {block.hash} does not match its content")
            for f in files:
                parts = []
                for term in f.terms:
                    xorb = xorbs.get(term.xorb)
                    if xorb is None:
                        raise HubError(400, f"File {f.hash} references xorb {term.xorb} which was not uploaded")
                    if term.end > len(xorb.chunks):
                        raise HubError(400, f"File {f.hash}: chunks [{term.start}, {term.end}) beyond xorb {term.xorb}")
                    data = b"".join(xorb.chunks[term.start : term.end])
                    if len(data) != term.unpacked:
                        raise HubError(400, f"File {f.hash}: term of {term.unpacked} bytes reassembles to {len(data)}")
                    parts.append(data)
                content = b"".join(parts)
                sha256 = hashlib.sha256(content).hexdigest()
                if f.sha256 is not None and f.sha256 != sha256:
                    raise HubError(400, f"File {f.hash}: sha256 {f.sha256} does not match its content ({sha256})")
                registered.append(XetFile(f.hash, f.terms, content, sha256))
            for block in listed:
                self._cas.xorb_chunk_hashes[block.hash] = block.chunk_hashes
                for i, chunk_hash in enumerate(block.chunk_hashes):
                    self._cas.chunks.setdefault(chunk_hash, (block.hash, i))
            for xf in registered:
                self._cas.files.setdefault(xf.hash, xf)
                self._cas.by_sha256.setdefault(xf.sha256, xf.hash)
            self._grant_xet_files(request.bearer(), [xf.hash for xf in registered])  # what a commit/batch may name
        with self._meta_lock:
            self._stats["shards_received"] += 1
            self._stats["xet_files"] += len(registered)
        logger.info("shard: %d files, %d new xorbs", len(registered), len(listed))
        if route.api == "v2":  # NDJSON progress stream, ending with a terminal "result" frame
            return Response(200, b'{"type":"result"}\n', {"Content-Type": "application/x-ndjson"})
        return json_response({"result": 1})

    # -- downloads ------------------------------------------------------------------------------

    def _xorb_url(self, request: Request, xorb_hash: str) -> str:
        return f"{request.base_url}/cas/xorb-data/default/{xorb_hash}?sig={self._xorb_signature(xorb_hash)}"

    def _plan(self, xf: XetFile, range_header: str | None) -> tuple[int, list[XetTerm]]:
        """``offset_into_first_range`` and the terms (trimmed to whole chunks) covering the range."""
        if range_header:
            first, last = parse_range(range_header, xf.size)
        else:
            first, last = 0, xf.size - 1
        pos = 0
        picked: list[tuple[int, str, int, int, int]] = []  # (term index, xorb, chunk index, size, file offset)
        for t_index, term in enumerate(xf.terms):
            chunks = self._cas.xorbs[term.xorb].chunks
            for index in range(term.start, term.end):
                size = len(chunks[index])
                if pos <= last and pos + size > first:
                    picked.append((t_index, term.xorb, index, size, pos))
                pos += size
        terms: list[XetTerm] = []
        previous = -1
        for t_index, xorb, index, size, _ in picked:
            if terms and t_index == previous:
                last_term = terms[-1]
                terms[-1] = XetTerm(xorb, last_term.start, index + 1, last_term.unpacked + size)
            else:
                terms.append(XetTerm(xorb, index, index + 1, size))
            previous = t_index
        return (first - picked[0][4] if picked else 0), terms

    def _file_for(self, file_hash: str) -> XetFile:
        if not is_hash_str(file_hash):
            raise HubError(400, f"Malformed file hash {file_hash!r}")
        xf = self._cas.files.get(file_hash)
        if xf is None:
            raise HubError(404, f"File {file_hash} not found")
        return xf

    def _fetch_info(self, request: Request, terms: list[XetTerm]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for term in terms:
            start, end = self._cas.xorbs[term.xorb].byte_range(term.start, term.end)
            item = {
                "range": {"start": term.start, "end": term.end},
                "url": self._xorb_url(request, term.xorb),
                "url_range": {"start": start, "end": end},
            }
            if item not in out.setdefault(term.xorb, []):
                out[term.xorb].append(item)
        return out

    @staticmethod
    def _terms_json(terms: list[XetTerm]) -> list[dict[str, Any]]:
        return [{"hash": t.xorb, "unpacked_length": t.unpacked, "range": {"start": t.start, "end": t.end}} for t in terms]

    def _h_reconstruction(self, request: Request, route: Route) -> Response:
        with self._lock:
            if route.api == "batch":
                keys = request.json()
                if not isinstance(keys, list):
                    raise HubError(400, "Expected a JSON list of {prefix, hash} keys")
                files: dict[str, Any] = {}
                all_terms: list[XetTerm] = []
                for key in keys:
                    file_hash = key.get("hash", "") if isinstance(key, dict) else str(key)
                    _, terms = self._plan(self._file_for(file_hash), None)
                    files[file_hash] = self._terms_json(terms)
                    all_terms += terms
                return json_response({"files": files, "fetch_info": self._fetch_info(request, all_terms)})
            xf = self._file_for(route.key or "")
            offset, terms = self._plan(xf, request.headers.get("Range"))
            if route.api == "v1":
                return json_response(
                    {
                        "offset_into_first_range": offset,
                        "terms": self._terms_json(terms),
                        "fetch_info": self._fetch_info(request, terms),
                    }
                )
            xorbs = {
                xorb: [{"url": i["url"], "ranges": [{"chunks": i["range"], "bytes": i["url_range"]}]} for i in items]
                for xorb, items in self._fetch_info(request, terms).items()
            }
            return json_response({"offset_into_first_range": offset, "terms": self._terms_json(terms), "xorbs": xorbs})

    def _h_xorb_download(self, request: Request, route: Route) -> Response:
        with self._lock:
            xorb = self._cas.xorbs.get(route.key or "")
        if xorb is None:
            raise HubError(404, "Xorb not found")
        data, status, headers = xorb.serialized, 200, {"Content-Type": "application/octet-stream"}
        range_header = request.headers.get("Range")
        if range_header:
            start, end = parse_range(range_header, len(data))
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        if request.method == "GET":
            self._bump("xet_bytes_served", len(data))
        return Response(status, data, headers)

    def _h_chunk_query(self, request: Request, route: Route) -> Response:
        with self._lock:
            found = self._cas.chunks.get(route.key or "")
            if found is None:
                raise HubError(404, "Chunk not tracked by global deduplication", expected=True)
            xorb = self._cas.xorbs[found[0]]
            body = dedup_shard(xorb, self._cas.xorb_chunk_hashes[xorb.hash], time.time())
        return Response(200, body, {"Content-Type": "application/octet-stream"})

    def _h_cas_unsupported(self, request: Request, route: Route) -> Response:
        raise HubError(404, f"Not implemented by HubServer's CAS: {request.method} {request.path}", expected=True)

    def _h_xet_telemetry(self, request: Request, route: Route) -> Response:
        return json_response({})
