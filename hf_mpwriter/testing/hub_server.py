"""The test Hub server: lifecycle, client environment, routing, auth, fault injection, counters, inspection.

Why this exists: hf_mpwriter's uploader drives the *real* ``huggingface_hub.HfApi`` client. To test
retries, rate limits, lost responses, zombie commits and restarts without the network (and without
burning the real Hub's ~128 commits/hour budget), the client is pointed at this server through
``HF_ENDPOINT``. The server speaks the subset of the Hub HTTP API that huggingface_hub 2.x uses,
stores everything for real (in memory) and can inject faults on demand. One module per protocol:

* :mod:`.repos` — git repositories: create, info, preupload, commit (NDJSON, ``parentCommit`` -> 412),
  tree, paths-info, resolve/download, branches, super-squash;
* :mod:`.lfs` — the legacy git-LFS upload path (clients with ``HF_HUB_DISABLE_XET=1``), and the
  LFS batch call where huggingface_hub 0.36 negotiates Xet (``"transfer": "xet"``);
* :mod:`.xet` — Xet: token endpoints and a CAS (xorbs, shards, reconstructions, dedup). ``hf_xet``
  is a required dependency of huggingface_hub, which then uploads every "lfs" file through Xet;
* :mod:`.buckets` — Storage Buckets (per-file, no history);
* :mod:`.limits` — the Hub's limits (entries per folder, the API window, the commit rate), :class:`HubLimits`;
* :mod:`.storage` (what is stored), :mod:`.faults` (fault injection), :mod:`.httpd` (HTTP plumbing).

Client facts this server relies on (huggingface_hub 2.4):

* ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` are read at import time, so clients usually run in a
  subprocess; :meth:`HubServer.env` returns what such a process needs.
* Error classes are chosen by the client from ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``). Over plain http the client does not map a bare 401 to
  ``RepositoryNotFoundError``, so 401s for a *missing* token carry ``X-Error-Code: RepoNotFound``
  explicitly. A 401 for an *invalid* token carries ``X-Error-Message: Invalid credentials in
  Authorization header`` like the real Hub, which the client surfaces as a plain 401
  ``HfHubHTTPError`` with that message.
* The client retries preupload, LFS, tree and Xet calls on 408/429/5xx, but not ``/commit``,
  ``create_repo`` or ``repo_info``. Its default HTTP client has no timeout.

Standard library only, except ``lz4`` to decompress Xet chunks (imported when a xorb arrives).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import signal
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable

from .buckets import BucketRoutes, route_bucket_api, route_bucket_web
from .extra import require_testing_extra
from .faults import FAULT_KINDS, FAULT_ROUTES, HOLD_ROUTES, Fault, fault_error_response, new_fault
from .httpd import HTTPServer, HubError, Request, Response, Route, error_response
from .lfs import LfsRoutes
from .limits import HubLimits, Quotas, is_api_route
from .repos import RepoRoutes, route_repo_api, route_repo_web
from .storage import DEFAULT_USER, GITATTRIBUTES, PLURAL_TO_TYPE, REPO_TYPES, Bucket, Commit, empty_stats, git_blob_oid
from .xet import CAS_ROUTES, XetRoutes, route_cas

__all__ = [
    "FAULT_KINDS",
    "FAULT_ROUTES",
    "GITATTRIBUTES",
    "HOLD_ROUTES",
    "REPO_TYPES",
    "Fault",
    "HubLimits",
    "HubServer",
    "git_blob_oid",
    "main",
    "shell_exports",
]

logger = logging.getLogger(__name__)

#: Routes that modify state: a read-only token gets 403 on them (plus ``xet_token`` for write tokens).
_WRITE_ROUTES = frozenset(
    {
        "create_repo",
        "delete_repo",
        "commit",
        "preupload",
        "lfs_batch",
        "lfs_verify",
        "squash",
        "branch",
        "bucket_create",
        "bucket_delete",
        "bucket_batch",
    }
)
#: Routes that need no Hub token: authorised by an unguessable URL, or sent without a token by the client.
_OPEN_ROUTES = frozenset({"lfs_upload", "unknown", "validate_yaml", "xet_telemetry"})


class HubServer(RepoRoutes, LfsRoutes, XetRoutes, BucketRoutes):
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
        tokens: if set, every Hub request (except LFS uploads, authorised by their unguessable URL)
            needs ``Authorization: Bearer <token>`` with one of these or of ``read_only_tokens``.
            ``None`` accepts anything. CAS requests always need an access token from a
            ``xet-*-token`` endpoint.
        read_only_tokens: tokens that may read but get 403 on writes (create, commit, preupload,
            LFS, squash, branches, bucket writes, Xet write tokens).
        username: the user ``whoami`` reports and the namespace of repos created without one.
        limits: the Hub's limits to enforce (:class:`~.limits.HubLimits`): by default 10,000 entries
            per folder, as the Hub always does, and no rate limit (tests compress time);
            ``HubLimits.hub_free()`` adds the Hub's API window and commit rate. Refusals are counted
            in :attr:`stats` ``["limits_hit"]``.
        clock: the monotonic seconds the limits' windows count in (default ``time.monotonic``): a test
            that moves its client's clock by hand moves the server's windows with it, and sleeps never.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] | None = None,
        read_only_tokens: Iterable[str] | None = None,
        username: str = DEFAULT_USER,
        limits: HubLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._quotas = Quotas(limits if limits is not None else HubLimits(), clock)
        self.host = host
        self._port = port
        self.tokens = set(tokens) if tokens is not None else None
        self.read_only_tokens = set(read_only_tokens or ())
        self.username = username

        self._connections: set[socket.socket] = set()
        self._active = 0  # requests being handled right now (held ones included)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def limits(self) -> HubLimits:
        """The Hub limits this server enforces (fixed at construction: the windows count from then)."""
        return self._quotas.limits

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> HubServer:
        """Open the listening socket (same port and same data after a :meth:`stop`). Without the
        ``testing`` extra this says how to get it, rather than failing at the first Xet upload."""
        if self._httpd is not None:
            return self
        require_testing_extra()
        self._stopping = False
        httpd = HTTPServer((self.host, self._port), self)
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
        Requests already being handled (e.g. a held commit) still complete and apply.
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

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def env(self, xet: bool = True) -> dict[str, str]:
        """Environment variables a client process needs to talk to this server (and only to it).

        With ``xet=True`` (the default, what every user with ``hf_xet`` installed gets) "lfs" files
        go through this server's Xet CAS; ``xet=False`` sets ``HF_HUB_DISABLE_XET=1`` and the client
        uses the legacy LFS upload path and plain downloads instead.
        """
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_XET": "0" if xet else "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    # -- what the HTTP layer (:mod:`.httpd`) calls: the :class:`~.httpd.App` interface -----------

    @property
    def stopping(self) -> bool:
        """:meth:`stop` has begun: requests still arriving get no answer (their connection is closed)."""
        return self._stopping

    def connection_opened(self, conn: socket.socket) -> None:
        """A client connected: counted (:attr:`stats` ``["connections"]``), and shut down by :meth:`stop`."""
        with self._meta_lock:
            self._connections.add(conn)
        self._bump("connections")

    def connection_closed(self, conn: socket.socket) -> None:
        with self._meta_lock:
            self._connections.discard(conn)

    # -- faults and availability ---------------------------------------------------------------

    def inject(self, fault: str, *, route: str = "commit", times: int | None = 1, **params: Any) -> Fault:
        """Make the next ``times`` requests on ``route`` misbehave (``times=None``: until cleared).

        Faults on one route are consumed in injection order, one per matching request; ``route``
        is one of :data:`FAULT_ROUTES` (``"any"`` matches every route). Kinds:

        * ``"status"``: answer ``status`` (default 500) with optional ``headers``, ``message``, ``body``;
        * ``"rate_limit"``: 429 with ``Retry-After`` and ``RateLimit`` headers (``retry_after=1``);
        * ``"lost_response"``: process the request (e.g. apply the commit), then close the connection
          without an answer;
        * ``"drop"``: close the connection without processing nor answering;
        * ``"latency"``: sleep ``seconds``, then serve normally;
        * ``"hold"`` (routes ``"commit"`` and ``"bucket_batch"``): receive the write, hold it
          ``seconds``, then apply it *even if the client has gone away* — a zombie write, as the
          real Hub does with a commit whose client was killed or timed out. A held commit checks its
          ``parentCommit`` against the branch head at the moment it applies: a stale parent means
          412 and nothing applied. Bucket batches have no parent and always apply late.

        Returns the :class:`Fault`: ``hits`` counts the requests it hit; for "latency" and "hold",
        ``done`` counts the delayed requests whose handling finished and ``outcomes`` their
        statuses (``[200]`` applied, ``[412]`` refused for a stale parent), so a test can poll for
        the late outcome instead of sleeping; ``release()`` ends the delay of a "latency" or "hold"
        fault at once (``seconds`` is then only a bound).
        """
        entry = new_fault(fault, route, times, params)
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

    @property
    def active_requests(self) -> int:
        """Requests being handled right now, held or delayed ones included (0: the server is idle)."""
        with self._meta_lock:
            return self._active

    def _take_fault(self, route: str) -> Fault | None:
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

    @property
    def stats(self) -> dict[str, Any]:
        """Snapshot of the counters.

        ``commits``: commits applied through ``/commit``; ``commits_per_repo``: same, keyed
        ``"{repo_type}:{repo_id}"``; ``squashes``; ``bytes_received``: all request bodies;
        ``lfs_bytes_received`` and ``lfs_uploads``: legacy LFS PUTs; ``xorb_bytes_received``: xorb
        upload bodies as they came on the wire (duplicates included); ``xorbs_received``: new xorbs
        stored; ``xet_chunks``: chunks in those xorbs; ``shards_received``; ``xet_files``: files
        registered by shards; ``xet_bytes_served``: xorb bytes downloaded; ``bucket_writes``: bucket
        batches that applied at least one operation; ``bucket_ops``: operations applied;
        ``connections``: TCP connections accepted (keep-alive reuse keeps it low); ``requests``: by
        route name (Hub API requests: those whose route :func:`~.limits.is_api_route` names);
        ``faults_triggered``: by kind; ``limits_hit``: requests and operations refused by
        :attr:`limits`, by limit (``api_requests``, ``commits``, ``entries_per_folder``,
        ``files_per_commit``).
        """
        return self._stats_copy()

    def reset_stats(self) -> None:
        with self._meta_lock:
            self._stats = empty_stats()

    def commit_count(self, repo_id: str, repo_type: str = "model") -> int:
        """Commits applied through ``/commit`` to one repo since the last :meth:`reset_stats`."""
        with self._meta_lock:
            return self._stats["commits_per_repo"].get(f"{repo_type}:{repo_id}", 0)

    # -- inspection for tests -------------------------------------------------------------------

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def _get_commit(self, repo_id: str, repo_type: str, revision: str) -> Commit:
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

    def file_storage(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> str:
        """How a file's content reached the Hub: ``"regular"`` (in the commit), ``"lfs"`` or ``"xet"``."""
        with self._lock:
            tree = self._get_commit(repo_id, repo_type, revision).tree
            if path not in tree:
                raise KeyError(f"no file {path!r} at {revision!r} in {repo_type} repo {repo_id!r}")
            entry = tree[path]
            return "xet" if entry.xet_hash else "lfs" if entry.lfs_sha256 else "regular"

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

    def bucket_exists(self, bucket_id: str) -> bool:
        with self._lock:
            return bucket_id in self._buckets

    def create_bucket(self, bucket_id: str, private: bool = False) -> None:
        """Create a bucket directly (test setup without a client round trip); no-op if it exists."""
        with self._lock:
            self._buckets.setdefault(bucket_id, Bucket(bucket_id, private, time.time()))

    def bucket_files(self, bucket_id: str) -> dict[str, bytes]:
        """Every file of a bucket: path -> content."""
        with self._lock:
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                raise KeyError(f"no bucket {bucket_id!r}")
            return {path: self._cas.files[f.xet_hash].data for path, f in sorted(bucket.files.items())}

    def bucket_batches(self, bucket_id: str) -> list[dict[str, Any]]:
        """Every batch that applied to a bucket, oldest first: ``{"time": wall time, "paths": files written}``
        (a bucket keeps no history; the test Hub does, for the tests)."""
        with self._lock:
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                raise KeyError(f"no bucket {bucket_id!r}")
            return [dict(batch) for batch in bucket.batches]

    def read_bucket_file(self, bucket_id: str, path: str) -> bytes:
        files = self.bucket_files(bucket_id)
        if path not in files:
            raise KeyError(f"no file {path!r} in bucket {bucket_id!r}")
        return files[path]

    # -- request handling -----------------------------------------------------------------------

    def _route(self, method: str, raw_path: str) -> Route:
        segs = raw_path.strip("/").split("/") if raw_path.strip("/") else []
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return Route("whoami")
            if rest == ["validate-yaml"] and method == "POST":
                return Route("validate_yaml")
            if rest == ["repos", "create"] and method == "POST":
                return Route("create_repo")
            if rest == ["repos", "delete"] and method == "DELETE":
                return Route("delete_repo")
            if rest[:1] == ["buckets"]:
                return route_bucket_api(method, rest[1:], self.username)
            if len(rest) >= 2 and rest[0] in PLURAL_TO_TYPE:
                return route_repo_api(method, PLURAL_TO_TYPE[rest[0]], rest[1:], self._exists)
            return Route("unknown")
        if segs == ["v1", "telemetry"] and method == "POST":  # hf_xet telemetry, at the CAS host's root
            return Route("xet_telemetry")
        if len(segs) == 2 and segs[0] == "__lfs__" and method == "PUT":
            return Route("lfs_upload", upload_id=segs[1])
        route = Route("unknown")
        if segs[:1] == ["cas"]:  # the casUrl names this store's instance (see CasStore.instance)
            route = route_cas(method, segs[2:] if segs[1:2] == [self._cas.instance] else segs[1:])
        elif segs[:1] == ["buckets"]:
            route = route_bucket_web(method, segs[1:])
        return route if route.name != "unknown" else route_repo_web(method, segs)

    def _exists(self, repo_type: str, repo_id: str) -> bool:
        return (repo_type, repo_id) in self._repos

    def handle(self, request: Request) -> Response | None:
        """Route, count, spend the API window, apply faults and auth, run the handler. None means: close, no answer."""
        with self._meta_lock:
            self._active += 1
        try:
            return self._handle_counted(request)
        finally:
            with self._meta_lock:
                self._active -= 1

    def _handle_counted(self, request: Request) -> Response | None:
        route = self._route(request.method, request.path)
        with self._meta_lock:
            self._stats["bytes_received"] += len(request.body)
            self._stats["requests"][route.name] = self._stats["requests"].get(route.name, 0) + 1
            down = self._down
        logger.debug("%s %s -> route %s", request.method, request.path, route.name)
        if down:
            return error_response(HubError(503, "Service Unavailable (HubServer.set_down)"))
        rate_headers: dict[str, str] = {}
        if is_api_route(route.name):
            allowed, rate_headers = self._quotas.api_request()
            if not allowed:
                self._bump("limits_hit", sub="api_requests")
                logger.info("%s %s -> 429 (API window spent)", request.method, request.path)
                return error_response(self._quotas.api_refusal(rate_headers))
        response = self._respond(request, route)
        if response is not None:  # the Hub sets them on every API answer; an injected 429 keeps its own
            for name, value in rate_headers.items():
                response.headers.setdefault(name, value)
        return response

    def _respond(self, request: Request, route: Route) -> Response | None:
        """Faults, auth and the route's handler."""
        lost_response = False
        delayed: Fault | None = None
        fault = self._take_fault(route.name)
        if fault is not None:
            logger.info("injecting %s on %s %s", fault.kind, request.method, request.path)
            if fault.kind == "drop":
                return None
            if fault.kind in ("latency", "hold"):
                # The handler thread sleeps, then applies: whether the client is still connected
                # does not matter (a held write lands even after its client was killed).
                fault.delay()
                delayed = fault
            elif fault.kind == "lost_response":
                lost_response = True
            else:
                return fault_error_response(fault)

        try:
            self._check_auth(request, route)
            handler: Callable[[Request, Route], Response] = getattr(self, f"_h_{route.name}")
            response = handler(request, route)
        except HubError as err:
            logger.log(logging.DEBUG if err.expected else logging.INFO, "%s %s -> %d %s", request.method, request.path,
                       err.status, err.message)
            response = error_response(err)
        except Exception as exc:  # a bug here must surface as a 500, not a hung client
            logger.exception("HubServer handler %s failed", route.name)
            response = error_response(HubError(500, f"Internal error: {exc!r}"))
        if delayed is not None:
            with self._meta_lock:
                delayed.done += 1
                delayed.outcomes.append(response.status)
            logger.info("%s %s after %s: %d", request.method, request.path, delayed.kind, response.status)
        return None if lost_response else response

    def _check_auth(self, request: Request, route: Route) -> None:
        if route.name in CAS_ROUTES or route.name == "xorb_download":
            self._check_cas_auth(request, route)
            return
        if route.name in _OPEN_ROUTES:  # the client sends validate-yaml without a token
            return
        writes = route.name in _WRITE_ROUTES or (route.name == "xet_token" and route.key == "write")
        token = request.bearer()
        if self.tokens is None:  # open server; read-only tokens still cannot write
            if token in self.read_only_tokens and writes:
                raise HubError(403, "You don't have write access with this (read-only) token")
            return
        if not token:
            # Plain-http 401s must name the error code, or the client raises a bare HfHubHTTPError.
            raise HubError(401, "Unauthorized: a token is required", error_code="RepoNotFound")
        if token not in self.tokens and token not in self.read_only_tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        if token in self.read_only_tokens and token not in self.tokens and writes:
            raise HubError(403, "You don't have write access with this (read-only) token")


def shell_exports(server: HubServer, token: str, xet: bool = True) -> list[str]:
    """``export NAME=value`` lines that point a shell's clients at ``server`` with ``token``.

    Why: a person starts the server in one shell and the script in another; lines they can paste
    (the token included: the client sends none otherwise, and the server then answers 401) beat a
    list of variables to retype.
    """
    client = server.env(xet=xet)
    client.pop("no_proxy", None)  # NO_PROXY says the same; the client reads either
    env = {"HF_ENDPOINT": client.pop("HF_ENDPOINT"), "HF_TOKEN": token, **client}
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The :class:`HubLimits` flags (0 turns a limit off); ``--hub-free`` starts from the Hub's free-account rates."""
    group = parser.add_argument_group("the Hub's limits (HubLimits; 0 turns one off)")
    group.add_argument("--hub-free", action="store_true",
                       help="the Hub's free-account rates: 1000 API requests per 300 s, 128 commits per hour per repository")
    group.add_argument("--entries-per-folder", type=int, metavar="N",
                       help="most files and sub-folders in one folder (default: 10000, as the Hub)")
    group.add_argument("--api-requests", type=int, metavar="N",
                       help="Hub API requests per window, for the server's one user (default: no limit)")
    group.add_argument("--window-s", type=float, metavar="SECONDS", help="the API window, in seconds (default: 300)")
    group.add_argument("--commits-per-hour", type=int, metavar="N",
                       help="commits per repository per commit window (default: no limit)")
    group.add_argument("--commit-window-s", type=float, metavar="SECONDS",
                       help="the commit window, in seconds (default: 3600)")
    group.add_argument("--files-per-commit", type=int, metavar="N",
                       help="most file operations in one commit (default: no limit)")


def _limits_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> HubLimits:
    """The flags of :func:`_add_limit_flags` as a :class:`HubLimits` (a bad value: a usage error, exit 2)."""
    counts = {
        "entries_per_folder": args.entries_per_folder,
        "api_requests_per_window": args.api_requests,
        "commits_per_hour": args.commits_per_hour,
        "files_per_commit": args.files_per_commit,
    }
    changes: dict[str, Any] = {name: value or None for name, value in counts.items() if value is not None}
    for name, seconds in (("window_s", args.window_s), ("commit_window_s", args.commit_window_s)):
        if seconds is not None:
            changes[name] = seconds
    try:
        return dataclasses.replace(HubLimits.hub_free() if args.hub_free else HubLimits(), **changes)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> None:
    """Run a HubServer in the foreground for demos, benchmarks and offline work."""

    parser = argparse.ArgumentParser(description="Hub-compatible test server for huggingface_hub clients.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0: a free one (default: 8765)")
    parser.add_argument("--token", action="append", help="accepted write token (repeatable); default: any")
    parser.add_argument("--read-only-token", action="append", help="accepted read-only token (repeatable)")
    parser.add_argument("--no-xet", action="store_true", help="print a client environment without Xet")
    parser.add_argument("--log-level", default="INFO", help="the server's log level: DEBUG, INFO, WARNING... (default: INFO)")
    _add_limit_flags(parser)
    args = parser.parse_args(argv)
    limits = _limits_from(parser, args)
    try:
        require_testing_extra("python -m hf_mpwriter.testing.hub_server")
    except ValueError as exc:  # ConfigurationError: one line that says what to install, no traceback
        raise SystemExit(f"hub_server: error: {exc}") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = HubServer(
        host=args.host, port=args.port, tokens=args.token, read_only_tokens=args.read_only_token, limits=limits
    )

    # SIGTERM (e.g. from a benchmark harness) ends the server like Ctrl-C, so the stats get printed.
    def _on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.start()
    except OSError as exc:  # the port is taken (another test Hub?): one line, no traceback
        raise SystemExit(f"hub_server: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                         "stop what uses it, or pick another --port (0: a free one)") from None
    try:  # from here on, a SIGTERM (a KeyboardInterrupt) anywhere still prints the stats
        logger.info("enforcing %s", server.limits)
        # Without --token the server accepts any token: print one, so that the pasted shell sends one.
        token = (args.token or args.read_only_token or ["hf_test"])[0]
        # A comment line first: what the server prints until it stops can be sourced (`. hub.env`).
        print(f"# HubServer listening on {server.endpoint} (Ctrl-C to stop). In the shell that runs your script:",
              flush=True)
        print("\n".join(shell_exports(server, token, xet=not args.no_xet)), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(json.dumps(server.stats, indent=2), flush=True)


if __name__ == "__main__":
    main()
