"""A Hub-compatible HTTP server for tests and benchmarks.

Why this exists: hf_mpwriter's uploader drives the *real* ``huggingface_hub.HfApi`` client. To test
retries, rate limits, lost responses and restarts without the network (and without burning the real
Hub's ~128 commits/hour budget), the client is pointed at this server through ``HF_ENDPOINT``. The
server speaks the subset of the Hub HTTP API that huggingface_hub 2.x uses for the legacy (non-Xet)
upload path and for downloads, stores repositories for real (in memory), and can inject faults on
demand.

Protocol notes (checked against huggingface_hub 2.4.0, see ``/work/shared/DESIGN.md`` section 3):

* The client must run with ``HF_HUB_DISABLE_XET=1``; otherwise "lfs" files go through Xet, which this
  server does not implement. :meth:`HubServer.env` returns everything a client process needs.
* Error classes are chosen by the client from ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``). Over plain http the client does not map a bare 401 to
  ``RepositoryNotFoundError``, so 401s for a *missing* token carry ``X-Error-Code: RepoNotFound``
  explicitly. A 401 for an *invalid* token carries ``X-Error-Message: Invalid credentials in
  Authorization header`` like the real Hub, which the client surfaces as a plain 401
  ``HfHubHTTPError`` with that message.
* Every response carries ``Content-Length`` and the server speaks HTTP/1.1, so httpx keep-alive
  connections are reused, as against the real Hub.

Standard library only: it must run in any test environment.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import copy
import fnmatch
import hashlib
import json
import logging
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space")
_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

#: Route names accepted by :meth:`HubServer.inject` ("any" matches every route).
FAULT_ROUTES = (
    "commit",
    "preupload",
    "lfs_batch",
    "lfs_upload",
    "lfs_verify",
    "create_repo",
    "delete_repo",
    "repo_info",
    "tree",
    "paths_info",
    "resolve",
    "squash",
    "whoami",
    "validate_yaml",
    "list_commits",
    "refs",
    "branch",
    "any",
)
FAULT_KINDS = ("status", "rate_limit", "lost_response", "drop", "latency")

#: Routes that modify state: a read-only token gets 403 on them.
_WRITE_ROUTES = frozenset(
    {"create_repo", "delete_repo", "commit", "preupload", "lfs_batch", "lfs_verify", "squash", "branch"}
)

#: Path segments that follow a repo id in ``/api/{type}s/{id}/...`` URLs.
_API_ACTIONS = frozenset(
    {"revision", "preupload", "commit", "tree", "paths-info", "super-squash", "commits", "refs", "branch"}
)

#: Above this size a file is always stored as LFS (the real Hub rejects larger regular files).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

#: Patterns of the Hub's default ``.gitattributes``: matching files are stored as LFS.
_DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
)  # fmt: skip
_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _DEFAULT_LFS_PATTERNS).encode()

_DEFAULT_USER = "test-user"


# --------------------------------------------------------------------------------------------------
# Storage model
# --------------------------------------------------------------------------------------------------


def git_blob_oid(data: bytes) -> str:
    """Git blob sha1 of ``data``: what the Hub reports (and the client compares) for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class _FileEntry:
    """One file of a commit's tree. Immutable, so trees can share entries between commits."""

    data: bytes
    oid: str  # git blob sha1 (of the pointer file for LFS files), like the Hub's tree "oid"
    lfs_sha256: Optional[str] = None  # set for LFS files
    pointer_size: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """Download ETag: sha256 for LFS files, git blob oid for regular files (as on the Hub)."""
        return self.lfs_sha256 or self.oid

    @property
    def remote_oid(self) -> str:
        """The oid ``preupload`` returns, compared by the client with its local oid to drop no-ops."""
        return self.lfs_sha256 or self.oid

    @classmethod
    def regular(cls, data: bytes) -> "_FileEntry":
        return cls(data=data, oid=git_blob_oid(data))

    @classmethod
    def lfs(cls, data: bytes, sha256: str) -> "_FileEntry":
        pointer = _lfs_pointer(sha256, len(data))
        return cls(data=data, oid=git_blob_oid(pointer), lfs_sha256=sha256, pointer_size=len(pointer))


@dataclass
class _Commit:
    oid: str
    parent: Optional[str]
    tree: dict[str, _FileEntry]
    summary: str
    description: str
    date: float
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "oid": self.oid,
            "parent": self.parent,
            "summary": self.summary,
            "description": self.description,
            "date": _iso(self.date),
            "added": list(self.added),
            "deleted": list(self.deleted),
            "files_changed": sorted(set(self.added) | set(self.deleted)),
        }


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: float
    sdk: Optional[str] = None
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content

    def resolve(self, revision: str) -> Optional[_Commit]:
        """Branch name, full commit oid or an unambiguous oid prefix (>= 7 hex) -> commit."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        rev = revision.lower()
        if rev in self.commits:
            return self.commits[rev]
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev):
            found = [c for oid, c in self.commits.items() if oid.startswith(rev)]
            if len(found) == 1:
                return found[0]
        return None

    def history(self, head: str) -> list[_Commit]:
        out = []
        oid: Optional[str] = head
        while oid is not None:
            commit = self.commits[oid]
            out.append(commit)
            oid = commit.parent
        return out


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """An injected fault. ``remaining`` is None for "until cleared"; ``hits`` counts applications."""

    kind: str
    route: str
    remaining: Optional[int]
    params: dict[str, Any]
    hits: int = 0

    def matches(self, route: str) -> bool:
        return (self.remaining is None or self.remaining > 0) and self.route in ("any", route)


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _HubError(Exception):
    """Raised by route handlers to answer with an error the client understands."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        extra: Optional[dict[str, Any]] = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(obj: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> _Response:
    hdrs = {"Content-Type": "application/json; charset=utf-8"}
    hdrs.update(headers or {})
    return _Response(status, json.dumps(obj).encode(), hdrs)


def _error_response(err: _HubError) -> _Response:
    headers = {"X-Error-Message": err.message}
    if err.error_code:
        headers["X-Error-Code"] = err.error_code
    headers.update(err.headers)
    return _json_response({"error": err.message, **err.extra}, err.status, headers)


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-quoted) path, without query
    query: dict[str, list[str]]
    headers: Any  # email.message.Message
    body: bytes
    base_url: str  # scheme://host:port as the client addressed us, for URLs we hand back

    def qbool(self, name: str) -> bool:
        values = self.query.get(name)
        return bool(values) and values[-1].lower() in ("1", "true", "yes")

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise _HubError(400, f"Invalid JSON body: {exc}") from exc


@dataclass
class _Route:
    name: str
    repo_type: Optional[str] = None
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    path_in_repo: Optional[str] = None
    upload_id: Optional[str] = None


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :meth:`HubServer._handle` calls; owns nothing but the socket."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        self.server.hub._track_connection(self.connection, add=True)
        self.server.hub._bump("connections")

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s - %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub = self.server.hub
        if hub._stopping:
            self.close_connection = True
            return
        body = self._read_body()
        split = urlsplit(self.path)
        host = self.headers.get("Host") or f"{hub.host}:{hub.port}"
        request = _Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            base_url=f"http://{host}",
        )
        response = hub._handle(request)
        if response is None:  # injected "drop" / "lost_response": close without answering
            self.close_connection = True
            return
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # Headers and body in one write (what end_headers() + wfile.write() would send in two).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD" and response.body:
            self._headers_buffer.append(response.body)
        self.flush_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: "HubServer"):
        self.hub = hub
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections reset by clients or by stop() are expected; keep test output clean.
        logger.debug("error while serving %s", client_address, exc_info=True)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class HubServer:
    """A Hub-compatible server on 127.0.0.1 that the real ``huggingface_hub`` client talks to.

    Usage::

        with HubServer(tokens={"hf_good"}) as server:
            env = {**os.environ, **server.env(), "HF_TOKEN": "hf_good", "HF_HOME": tmp}
            subprocess.run([sys.executable, "client.py"], env=env)   # uses HfApi()
            assert server.list_files("user/repo") == [...]

    huggingface_hub reads ``HF_ENDPOINT`` at import time, so clients usually run in a subprocess.

    Args:
        host: interface to listen on.
        port: 0 picks a free port once; :meth:`stop`/:meth:`start` then keep that port.
        tokens: if set, every request (except LFS uploads, authorised by their unguessable URL)
            needs ``Authorization: Bearer <token>`` with one of these or of ``read_only_tokens``.
            ``None`` accepts anything.
        read_only_tokens: tokens that may read but get 403 on writes (create, commit, preupload,
            LFS, squash, branches).
        username: the user ``whoami`` reports and the namespace of repos created without one.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Optional[Iterable[str]] = None,
        read_only_tokens: Optional[Iterable[str]] = None,
        username: str = _DEFAULT_USER,
    ) -> None:
        self.host = host
        self._port = port
        self.tokens: Optional[set[str]] = set(tokens) if tokens is not None else None
        self.read_only_tokens: set[str] = set(read_only_tokens or ())
        self.username = username

        self._lock = threading.RLock()  # repositories, commits, LFS objects, pending uploads
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._uploads: dict[str, tuple[tuple[str, str], str, int]] = {}  # id -> (repo key, sha256, size)
        self._oid_counter = 0

        self._meta_lock = threading.Lock()  # stats, faults, down flag, connections
        self._stats = self._empty_stats()
        self._faults: list[Fault] = []
        self._down = False
        self._connections: set[socket.socket] = set()

        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> "HubServer":
        """Open the listening socket (same port and same data after a :meth:`stop`)."""
        if self._httpd is not None:
            return self
        self._stopping = False
        httpd = _HTTPServer((self.host, self._port), self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"HubServer:{self._port}", daemon=True
        )
        self._thread.start()
        logger.info("HubServer listening on %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: clients then get connection errors.

        Stored repositories are kept, so :meth:`start` brings the same Hub back on the same port.
        """
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping = True
        httpd.shutdown()
        httpd.server_close()
        with self._meta_lock:
            connections = list(self._connections)
        for conn in connections:  # keep-alive connections would otherwise keep being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        logger.info("HubServer on port %d stopped", self._port)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment variables a client process needs to talk to this server (and only to it)."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def _track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._meta_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- faults and availability ---------------------------------------------------------------

    def inject(self, fault: str, *, route: str = "commit", times: Optional[int] = 1, **params: Any) -> Fault:
        """Make the next ``times`` requests on ``route`` fail (``times=None``: until cleared).

        Faults: ``"status"`` (``status=500``, optional ``headers``, ``message``, ``body``),
        ``"rate_limit"`` (429 with ``Retry-After`` and ``RateLimit`` headers, ``retry_after=1``),
        ``"lost_response"`` (the request is processed, e.g. the commit applied, then the connection
        is closed without an answer), ``"drop"`` (closed without processing nor answer),
        ``"latency"`` (``seconds``; sleep, then serve normally). Returns the :class:`Fault`, whose
        ``hits`` counts how many requests it hit.
        """
        if fault not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULT_KINDS}")
        if route not in FAULT_ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {FAULT_ROUTES}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for 'until clear_faults()')")
        if fault == "status":
            params.setdefault("status", 500)
            if not 400 <= int(params["status"]) <= 599:
                raise ValueError("status must be an HTTP error status (4xx/5xx)")
        elif fault == "rate_limit":
            params.setdefault("retry_after", 1)
        elif fault == "latency":
            if "seconds" not in params:
                raise ValueError("latency fault needs seconds=...")
        entry = Fault(kind=fault, route=route, remaining=times, params=dict(params))
        with self._meta_lock:
            self._faults.append(entry)
        return entry

    def clear_faults(self) -> None:
        with self._meta_lock:
            self._faults.clear()

    def set_down(self, down: bool = True) -> None:
        """While down, every request gets 503 (the socket stays open, unlike :meth:`stop`)."""
        with self._meta_lock:
            self._down = down

    def _take_fault(self, route: str) -> Optional[Fault]:
        with self._meta_lock:
            for entry in self._faults:
                if entry.matches(route):
                    if entry.remaining is not None:
                        entry.remaining -= 1
                    entry.hits += 1
                    self._stats["faults_triggered"][entry.kind] = self._stats["faults_triggered"].get(entry.kind, 0) + 1
                    return entry
        return None

    # -- statistics -----------------------------------------------------------------------------

    @staticmethod
    def _empty_stats() -> dict[str, Any]:
        return {
            "commits": 0,
            "commits_per_repo": {},
            "squashes": 0,
            "bytes_received": 0,
            "lfs_bytes_received": 0,
            "lfs_uploads": 0,
            "connections": 0,
            "requests": {},
            "faults_triggered": {},
        }

    @property
    def stats(self) -> dict[str, Any]:
        """Snapshot of the counters.

        ``commits``: commits applied through ``/commit``; ``commits_per_repo``: same, keyed
        ``"{repo_type}:{repo_id}"``; ``bytes_received``: all request bodies; ``lfs_bytes_received``
        and ``lfs_uploads``: LFS PUTs; ``connections``: TCP connections accepted (keep-alive reuse
        keeps it low); ``requests``: by route name; ``faults_triggered``: by kind.
        """
        with self._meta_lock:
            return copy.deepcopy(self._stats)

    def reset_stats(self) -> None:
        with self._meta_lock:
            self._stats = self._empty_stats()

    def commit_count(self, repo_id: str, repo_type: str = "model") -> int:
        """Commits applied through ``/commit`` to one repo since the last :meth:`reset_stats`."""
        with self._meta_lock:
            return self._stats["commits_per_repo"].get(f"{repo_type}:{repo_id}", 0)

    def _bump(self, key: str, amount: int = 1, sub: Optional[str] = None) -> None:
        with self._meta_lock:
            if sub is None:
                self._stats[key] += amount
            else:
                self._stats[key][sub] = self._stats[key].get(sub, 0) + amount

    # -- inspection for tests -------------------------------------------------------------------

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def _get_commit(self, repo_id: str, repo_type: str, revision: str) -> _Commit:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        commit = repo.resolve(revision)
        if commit is None:
            raise KeyError(f"no revision {revision!r} in {repo_type} repo {repo_id!r}")
        return commit

    def list_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[str]:
        """Sorted file paths at ``revision`` (including the ``.gitattributes`` of the initial commit)."""
        with self._lock:
            return sorted(self._get_commit(repo_id, repo_type, revision).tree)

    def read_file(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        with self._lock:
            tree = self._get_commit(repo_id, repo_type, revision).tree
            if path not in tree:
                raise KeyError(f"no file {path!r} at {revision!r} in {repo_type} repo {repo_id!r}")
            return tree[path].data

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[dict[str, Any]]:
        """History of ``branch``, newest first (like ``list_repo_commits``), initial commit included."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r}")
            head = self._get_commit(repo_id, repo_type, branch).oid
            return [c.as_dict() for c in repo.history(head)]

    def head(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> str:
        """Commit oid at the tip of ``branch``."""
        with self._lock:
            return self._get_commit(repo_id, repo_type, branch).oid

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> None:
        """Create a repo directly (test setup without a client round trip); no-op if it exists."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self._new_repo(repo_type, repo_id, private=private, sdk=None)

    # -- request handling -----------------------------------------------------------------------

    def _route(self, method: str, raw_path: str) -> _Route:
        segs = raw_path.strip("/").split("/") if raw_path.strip("/") else []
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return _Route("whoami")
            if rest == ["validate-yaml"] and method == "POST":
                return _Route("validate_yaml")
            if rest == ["repos", "create"] and method == "POST":
                return _Route("create_repo")
            if rest == ["repos", "delete"] and method == "DELETE":
                return _Route("delete_repo")
            if len(rest) >= 2 and rest[0] in _PLURAL_TO_TYPE:
                return self._route_api_repo(method, _PLURAL_TO_TYPE[rest[0]], rest[1:])
            return _Route("unknown")
        if len(segs) == 2 and segs[0] == "__lfs__" and method == "PUT":
            return _Route("lfs_upload", upload_id=segs[1])
        repo_type = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            repo_type, segs = _PLURAL_TO_TYPE[segs[0]], segs[1:]
        for i, seg in enumerate(segs[:2]):
            if seg.endswith(".git") and segs[i + 1 : i + 4] == ["info", "lfs", "objects"] and len(segs) == i + 5:
                repo_id = "/".join(unquote(s) for s in segs[:i] + [seg[: -len(".git")]])
                action = segs[i + 4]
                if method == "POST" and action in ("batch", "verify"):
                    return _Route(f"lfs_{action}", repo_type=repo_type, repo_id=repo_id)
        for i in (1, 2):
            if len(segs) > i + 2 and segs[i] == "resolve" and method in ("GET", "HEAD"):
                return _Route(
                    "resolve",
                    repo_type=repo_type,
                    repo_id="/".join(unquote(s) for s in segs[:i]),
                    revision=unquote(segs[i + 1]),
                    path_in_repo="/".join(unquote(s) for s in segs[i + 2 :]),
                )
        return _Route("unknown")

    def _route_api_repo(self, method: str, repo_type: str, segs: list[str]) -> _Route:
        # Repo ids are "name" or "namespace/name": prefer an existing two-segment repo, then treat
        # a known action keyword in second position as the end of a one-segment id.
        if len(segs) >= 2 and (
            (repo_type, f"{unquote(segs[0])}/{unquote(segs[1])}") in self._repos or segs[1] not in _API_ACTIONS
        ):
            repo_id, rest = f"{unquote(segs[0])}/{unquote(segs[1])}", segs[2:]
        else:
            repo_id, rest = unquote(segs[0]), segs[1:]
        r = _Route("unknown", repo_type=repo_type, repo_id=repo_id)
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
        return r

    def _handle(self, request: _Request) -> Optional[_Response]:
        """Route, count, apply faults and auth, run the handler. None means: close, no answer."""
        route = self._route(request.method, request.path)
        with self._meta_lock:
            self._stats["bytes_received"] += len(request.body)
            self._stats["requests"][route.name] = self._stats["requests"].get(route.name, 0) + 1
            down = self._down
        logger.debug("%s %s -> route %s", request.method, request.path, route.name)
        if down:
            return _error_response(_HubError(503, "Service Unavailable (HubServer.set_down)"))

        lost_response = False
        fault = self._take_fault(route.name)
        if fault is not None:
            logger.info("injecting %s on %s %s", fault.kind, request.method, request.path)
            if fault.kind == "drop":
                return None
            if fault.kind == "latency":
                time.sleep(float(fault.params["seconds"]))
            elif fault.kind == "lost_response":
                lost_response = True
            elif fault.kind == "rate_limit":
                n = int(fault.params["retry_after"])
                return _error_response(
                    _HubError(
                        429,
                        "Too Many Requests (injected)",
                        headers={
                            "Retry-After": str(n),
                            "RateLimit": f'"api";r=0;t={n}',
                            "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
                        },
                    )
                )
            elif fault.kind == "status":
                status = int(fault.params["status"])
                message = fault.params.get("message", f"Injected HTTP {status}")
                response = _error_response(_HubError(status, message, headers=dict(fault.params.get("headers") or {})))
                if "body" in fault.params:
                    body = fault.params["body"]
                    response.body = body if isinstance(body, bytes) else json.dumps(body).encode()
                return response

        try:
            self._check_auth(request, route)
            handler: Callable[[_Request, _Route], _Response] = getattr(self, f"_h_{route.name}")
            response = handler(request, route)
        except _HubError as err:
            response = _error_response(err)
        except Exception as exc:  # a bug here must surface as a 500, not a hung client
            logger.exception("HubServer handler %s failed", route.name)
            response = _error_response(_HubError(500, f"Internal error: {exc!r}"))
        return None if lost_response else response

    def _check_auth(self, request: _Request, route: _Route) -> None:
        if route.name in ("lfs_upload", "unknown", "validate_yaml"):  # the client sends validate-yaml without a token
            return
        auth = request.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if self.tokens is None:  # open server; read-only tokens still cannot write
            if token in self.read_only_tokens and route.name in _WRITE_ROUTES:
                raise _HubError(403, "You don't have write access with this (read-only) token")
            return
        if not token:
            # Plain-http 401s must name the error code, or the client raises a bare HfHubHTTPError.
            raise _HubError(401, "Unauthorized: a token is required", error_code="RepoNotFound")
        if token not in self.tokens and token not in self.read_only_tokens:
            raise _HubError(401, "Invalid credentials in Authorization header")
        if token in self.read_only_tokens and token not in self.tokens and route.name in _WRITE_ROUTES:
            raise _HubError(403, "You don't have write access with this (read-only) token")

    # -- helpers --------------------------------------------------------------------------------

    def _repo(self, route: _Route) -> _Repo:
        assert route.repo_type is not None and route.repo_id is not None
        repo = self._repos.get((route.repo_type, route.repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", error_code="RepoNotFound")
        return repo

    @staticmethod
    def _commit_at(repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return commit

    def _new_oid(self, *parts: str) -> str:
        self._oid_counter += 1
        text = "\n".join((*parts, str(time.time()), str(self._oid_counter), secrets.token_hex(4)))
        return hashlib.sha1(text.encode()).hexdigest()

    def _new_repo(self, repo_type: str, repo_id: str, private: bool, sdk: Optional[str]) -> _Repo:
        now = time.time()
        repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now, sdk=sdk)
        tree = {".gitattributes": _FileEntry.regular(_GITATTRIBUTES)}
        oid = self._new_oid("initial", repo_type, repo_id)
        repo.commits[oid] = _Commit(oid, None, tree, "initial commit", "", now, added=[".gitattributes"])
        repo.branches["main"] = oid
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def _repo_url(self, base: str, repo_type: str, repo_id: str) -> str:
        return f"{base}/{_URL_PREFIX[repo_type]}{repo_id}"

    @staticmethod
    def _is_lfs(path: str, size: int, sample: bytes) -> bool:
        """Roughly the Hub's rule: big, binary-looking or matched by the default .gitattributes."""
        if size == 0:
            return False
        if size > LFS_SIZE_THRESHOLD:
            return True
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatchcase(name, p) for p in _DEFAULT_LFS_PATTERNS):
            return True
        if b"\0" in sample:
            return True
        try:  # incremental: a sample may end in the middle of a multi-byte character
            codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        except UnicodeDecodeError:
            return True
        return False

    @staticmethod
    def _dirs_of(tree: dict[str, _FileEntry]) -> set[str]:
        dirs: set[str] = set()
        for path in tree:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    @staticmethod
    def _dir_oid(tree: dict[str, _FileEntry], directory: str) -> str:
        prefix = directory + "/"
        listing = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(tree.items()) if p.startswith(prefix))
        return hashlib.sha1(b"tree\0" + listing.encode()).hexdigest()

    def _last_commit(self, repo: _Repo, head: _Commit, path: str, is_dir: bool) -> dict[str, str]:
        for commit in repo.history(head.oid):
            changed = commit.added + commit.deleted
            if any(p == path or (is_dir and p.startswith(path + "/")) for p in changed):
                return {"id": commit.oid, "title": commit.summary, "date": _iso(commit.date)}
        return {"id": head.oid, "title": head.summary, "date": _iso(head.date)}

    def _entry_json(
        self, repo: _Repo, commit: _Commit, path: str, expand: bool, entry: Optional[_FileEntry] = None
    ) -> dict[str, Any]:
        if entry is not None:
            out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
            if entry.lfs_sha256:
                out["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        else:
            out = {"type": "directory", "oid": self._dir_oid(commit.tree, path), "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit(repo, commit, path, is_dir=entry is None)
        return out

    # -- route handlers -------------------------------------------------------------------------

    def _h_unknown(self, request: _Request, route: _Route) -> _Response:
        raise _HubError(404, f"Not found: {request.method} {request.path} (not implemented by HubServer)")

    def _h_whoami(self, request: _Request, route: _Route) -> _Response:
        auth = request.headers.get("Authorization") or ""
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise _HubError(401, "Invalid credentials in Authorization header")
        token = auth[7:].strip()
        read_only = token in self.read_only_tokens and (self.tokens is None or token not in self.tokens)
        role = "read" if read_only else "write"
        return _json_response(
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

    def _h_validate_yaml(self, request: _Request, route: _Route) -> _Response:
        return _json_response({"errors": [], "warnings": []})

    def _h_create_repo(self, request: _Request, route: _Route) -> _Response:
        payload = request.json()
        name = payload.get("name")
        if not isinstance(name, str) or not name:
            raise _HubError(400, "Missing repo name")
        organization = payload.get("organization") or self.username
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise _HubError(400, f"Unsupported repo type {repo_type!r}")
        repo_id = f"{organization}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") in ("private", "protected")
        url = self._repo_url(request.base_url, repo_type, repo_id)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                # With exist_ok the client accepts a 409 only if the body carries the url.
                raise _HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            self._new_repo(repo_type, repo_id, private=private, sdk=payload.get("sdk"))
        logger.info("created %s repo %s", repo_type, repo_id)
        return _json_response({"url": url, "name": repo_id, "id": repo_id})

    def _h_delete_repo(self, request: _Request, route: _Route) -> _Response:
        payload = request.json()
        organization = payload.get("organization") or self.username
        key = (payload.get("type") or "model", f"{organization}/{payload.get('name')}")
        with self._lock:
            if self._repos.pop(key, None) is None:
                raise _HubError(404, "Repository not found", error_code="RepoNotFound")
        return _Response(200)

    def _h_repo_info(self, request: _Request, route: _Route) -> _Response:
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
                "lastModified": _iso(commit.date),
                "createdAt": _iso(repo.created_at),
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(len(b) for b in repo.lfs_objects.values()),
            }
            if repo.repo_type == "model":
                info["modelId"] = repo.repo_id
            if repo.repo_type == "space":
                info["sdk"] = repo.sdk
            return _json_response(info)

    def _h_preupload(self, request: _Request, route: _Route) -> _Response:
        payload = request.json()
        files = payload.get("files")
        if not isinstance(files, list):
            raise _HubError(400, "Missing 'files'")
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            out = []
            for f in files:
                path = f.get("path")
                if not isinstance(path, str):
                    raise _HubError(400, "Each file needs a 'path'")
                try:
                    sample = base64.b64decode(f.get("sample") or "")
                except ValueError as exc:
                    raise _HubError(400, f"Invalid sample for {path}: {exc}") from exc
                mode = "lfs" if self._is_lfs(path, int(f.get("size") or 0), sample) else "regular"
                item: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
                existing = commit.tree.get(path)
                if existing is not None:
                    item["oid"] = existing.remote_oid
                out.append(item)
            return _json_response({"files": out, "commitOid": commit.oid})

    def _h_lfs_batch(self, request: _Request, route: _Route) -> _Response:
        payload = request.json()
        if payload.get("operation", "upload") != "upload":
            raise _HubError(400, "HubServer only implements LFS uploads")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise _HubError(400, "Missing 'objects'")
        out = []
        with self._lock:
            repo = self._repo(route)
            key = (repo.repo_type, repo.repo_id)
            git_url = f"{self._repo_url(request.base_url, repo.repo_type, repo.repo_id)}.git"
            for obj in objects:
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not isinstance(size, int):
                    raise _HubError(400, "Each object needs 'oid' and 'size'")
                if oid in repo.lfs_objects:
                    out.append({"oid": oid, "size": size})  # no actions: already stored
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
        return _json_response(
            {"transfer": "basic", "objects": out, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _h_lfs_upload(self, request: _Request, route: _Route) -> _Response:
        with self._lock:
            pending = self._uploads.get(route.upload_id or "")
        if pending is None:
            raise _HubError(404, "Unknown or expired upload URL")
        key, oid, size = pending
        if len(request.body) != size:
            raise _HubError(400, f"Size mismatch: expected {size} bytes, got {len(request.body)}")
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise _HubError(400, "sha256 mismatch: uploaded content does not match the LFS oid")
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                raise _HubError(404, "Repository not found", error_code="RepoNotFound")
            repo.lfs_objects[oid] = request.body
        with self._meta_lock:
            self._stats["lfs_bytes_received"] += len(request.body)
            self._stats["lfs_uploads"] += 1
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'})

    def _h_lfs_verify(self, request: _Request, route: _Route) -> _Response:
        payload = request.json()
        with self._lock:
            repo = self._repo(route)
            data = repo.lfs_objects.get(payload.get("oid", ""))
        if data is None or ("size" in payload and len(data) != payload["size"]):
            raise _HubError(404, "LFS object not found")
        return _json_response({"success": True})

    def _h_commit(self, request: _Request, route: _Route) -> _Response:
        if request.qbool("create_pr"):
            raise _HubError(400, "Pull requests are not supported by HubServer")
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as exc:
            raise _HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "The commit payload must start with a header line")
        header = lines[0].get("value") or {}
        summary = header.get("summary") or ""
        if not summary:
            raise _HubError(400, "Commit summary is required")
        branch = route.revision or "main"
        with self._lock:
            repo = self._repo(route)
            if branch not in repo.branches:
                if repo.resolve(branch) is not None:
                    raise _HubError(400, f"Invalid rev id: {branch} is not a branch")
                raise _HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(str(parent).lower()):
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            added: list[str] = []
            deleted: list[str] = []
            for line in lines[1:]:
                kind, value = line.get("key"), line.get("value") or {}
                path = value.get("path")
                if not isinstance(path, str) or not path:
                    raise _HubError(400, f"Operation {kind!r} needs a path")
                if kind == "file":
                    content = value.get("content", "")
                    if value.get("encoding", "base64") == "base64":
                        try:
                            data = base64.b64decode(content, validate=True)
                        except ValueError as exc:
                            raise _HubError(400, f"Invalid base64 content for {path}") from exc
                    else:
                        data = str(content).encode()
                    tree[path] = _FileEntry.regular(data)
                    added.append(path)
                elif kind == "lfsFile":
                    oid = value.get("oid")
                    data = repo.lfs_objects.get(oid) if isinstance(oid, str) else None
                    if data is None:
                        raise _HubError(
                            400,
                            f"Your push was rejected because an LFS pointer pointed to a file that does not exist"
                            f" ({path}, oid {oid})",
                        )
                    if "size" in value and value["size"] != len(data):
                        raise _HubError(400, f"LFS size mismatch for {path}")
                    tree[path] = _FileEntry.lfs(data, oid)
                    added.append(path)
                elif kind == "deletedFile":
                    if path not in tree:
                        raise _HubError(
                            404, f"A file with this name doesn't exist: {path}", error_code="EntryNotFound"
                        )
                    del tree[path]
                    deleted.append(path)
                elif kind == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in tree if p.startswith(prefix)]
                    if not gone:
                        raise _HubError(
                            404, f"A folder with this name doesn't exist: {path}", error_code="EntryNotFound"
                        )
                    for p in gone:
                        del tree[p]
                    deleted.extend(gone)
                else:
                    raise _HubError(400, f"Unknown commit operation {kind!r}")
            oid = self._new_oid("commit", head.oid, summary, *added, *deleted)
            repo.commits[oid] = _Commit(
                oid, head.oid, tree, summary, header.get("description") or "", time.time(), added, deleted
            )
            repo.branches[branch] = oid
            key = f"{repo.repo_type}:{repo.repo_id}"
        with self._meta_lock:
            self._stats["commits"] += 1
            self._stats["commits_per_repo"][key] = self._stats["commits_per_repo"].get(key, 0) + 1
        logger.info("commit %s on %s@%s: +%d -%d", oid[:8], key, branch, len(added), len(deleted))
        return _json_response(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self._repo_url(request.base_url, repo.repo_type, repo.repo_id)}/commit/{oid}",
                "pullRequestUrl": None,
            }
        )

    def _h_tree(self, request: _Request, route: _Route) -> _Response:
        recursive, expand = request.qbool("recursive"), request.qbool("expand")
        base = (route.path_in_repo or "").strip("/")
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            dirs = self._dirs_of(commit.tree)
            if base and base not in dirs:
                raise _HubError(404, f"Folder not found: {base}", error_code="EntryNotFound")
            prefix = base + "/" if base else ""

            def wanted(path: str) -> bool:
                return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

            out = [self._entry_json(repo, commit, d, expand) for d in sorted(dirs) if wanted(d)]
            out += [self._entry_json(repo, commit, p, expand, e) for p, e in sorted(commit.tree.items()) if wanted(p)]
        return _json_response(out)

    def _h_paths_info(self, request: _Request, route: _Route) -> _Response:
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
            dirs = self._dirs_of(commit.tree)
            out = []
            for raw in paths:
                path = str(raw).strip("/")
                if path in commit.tree:
                    out.append(self._entry_json(repo, commit, path, expand, commit.tree[path]))
                elif path in dirs:
                    out.append(self._entry_json(repo, commit, path, expand))
        return _json_response(out)

    def _h_squash(self, request: _Request, route: _Route) -> _Response:
        branch = route.revision or "main"
        message = request.json().get("message") or f"Super-squash branch '{branch}'"
        with self._lock:
            repo = self._repo(route)
            if branch not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            oid = self._new_oid("squash", head.oid, message)
            repo.commits[oid] = _Commit(oid, None, dict(head.tree), message, "", time.time(), sorted(head.tree), [])
            repo.branches[branch] = oid
        self._bump("squashes")
        logger.info("super-squashed %s:%s@%s into %s", repo.repo_type, repo.repo_id, branch, oid[:8])
        return _json_response({"commitId": oid})

    def _h_list_commits(self, request: _Request, route: _Route) -> _Response:
        with self._lock:
            repo = self._repo(route)
            head = self._commit_at(repo, route.revision or "main")
            out = [
                {
                    "id": c.oid,
                    "title": c.summary,
                    "message": c.description,
                    "date": _iso(c.date),
                    "authors": [{"user": self.username}],
                }
                for c in repo.history(head.oid)
            ]
        return _json_response(out)

    def _h_refs(self, request: _Request, route: _Route) -> _Response:
        with self._lock:
            repo = self._repo(route)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in sorted(repo.branches.items())
            ]
        return _json_response({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _h_branch(self, request: _Request, route: _Route) -> _Response:
        branch = route.revision or ""
        with self._lock:
            repo = self._repo(route)
            if request.method == "DELETE":
                if branch not in repo.branches:
                    raise _HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
                if branch == "main":
                    raise _HubError(403, "Cannot delete the default branch")
                del repo.branches[branch]
                return _Response(200)
            if branch in repo.branches:
                raise _HubError(409, f"Branch {branch} already exists")
            start = self._commit_at(repo, request.json().get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return _Response(200)

    def _h_resolve(self, request: _Request, route: _Route) -> _Response:
        with self._lock:
            repo = self._repo(route)
            commit = self._commit_at(repo, route.revision or "main")
            entry = commit.tree.get(route.path_in_repo or "")
        if entry is None:
            raise _HubError(
                404, "Entry not found", error_code="EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        name = (route.path_in_repo or "").rsplit("/", 1)[-1]
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{entry.etag}"',
            "X-Repo-Commit": commit.oid,
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
        }
        if entry.lfs_sha256:
            headers["X-Linked-Etag"] = f'"{entry.lfs_sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        data, status = entry.data, 200
        range_header = request.headers.get("Range")
        if range_header:
            start, end = self._parse_range(range_header, len(data))
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return _Response(status, data, headers)

    @staticmethod
    def _parse_range(value: str, total: int) -> tuple[int, int]:
        spec = value.strip()
        if not spec.lower().startswith("bytes=") or "," in spec:
            raise _HubError(416, f"Unsupported range {value!r}", headers={"Content-Range": f"bytes */{total}"})
        first, _, last = spec[6:].strip().partition("-")
        try:
            if first == "":
                start, end = max(total - int(last), 0), total - 1
            else:
                start = int(first)
                end = min(int(last), total - 1) if last else total - 1
        except ValueError:
            start, end = total, 0
        if start >= total or start > end:
            raise _HubError(416, f"Range not satisfiable {value!r}", headers={"Content-Range": f"bytes */{total}"})
        return start, end


def main(argv: Optional[list[str]] = None) -> None:
    """Run a HubServer in the foreground for demos and benchmarks."""
    parser = argparse.ArgumentParser(description="Hub-compatible test server for huggingface_hub clients.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", help="accepted write token (repeatable); default: any")
    parser.add_argument("--read-only-token", action="append", help="accepted read-only token (repeatable)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = HubServer(host=args.host, port=args.port, tokens=args.token, read_only_tokens=args.read_only_token)
    # SIGTERM (e.g. from a benchmark harness) ends the server like Ctrl-C, so the stats get printed.
    def _on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    server.start()
    print(f"HubServer listening on {server.endpoint}", flush=True)
    print("client environment: " + " ".join(f"{k}={v}" for k, v in server.env().items() if k != "no_proxy"), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(json.dumps(server.stats, indent=2), flush=True)


if __name__ == "__main__":
    main()
