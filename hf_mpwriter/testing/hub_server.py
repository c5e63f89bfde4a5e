"""The test Hub server: lifecycle, client environment, the way of a request (count, API window, faults, auth), CLI.

Why this exists: hf_mpwriter's uploader drives the *real* ``huggingface_hub.HfApi`` client. To test
retries, rate limits, lost responses, zombie commits and restarts without the network (and without
burning the real Hub's ~128 commits/hour budget), the client is pointed at this server through
``HF_ENDPOINT``. The server speaks the subset of the Hub HTTP API that huggingface_hub 2.x uses,
stores everything for real (in memory) and can inject faults on demand. One module per protocol:

* :mod:`.repos` — git repositories: create, info, preupload, tree, paths-info, resolve/download,
  branches, super-squash; :mod:`.commits` — the commit (NDJSON, ``parentCommit`` -> 412);
* :mod:`.lfs` — the legacy git-LFS upload path (clients with ``HF_HUB_DISABLE_XET=1``), and the
  LFS batch call where huggingface_hub 0.36 negotiates Xet (``"transfer": "xet"``);
* :mod:`.xet` — Xet: token endpoints and a CAS (xorbs, shards, reconstructions, dedup; formats in :mod:`.xet_formats`).
  ``hf_xet`` is a required dependency of huggingface_hub, which then uploads every "lfs" file through Xet;
* :mod:`.buckets` — Storage Buckets (per-file, no history);
* :mod:`.limits` — the Hub's limits (entries per folder, the API window, the commit rate), :class:`HubLimits`;
* :mod:`.routing` (which route a URL is), :mod:`.auth` (which token a route needs), :mod:`.storage` and
  :mod:`.hub_state` (what is stored, who holds it), :mod:`.faults` and :mod:`.controls` (fault injection, the
  test's knobs), :mod:`.inspection` (what tests read), :mod:`.httpd` (HTTP), :mod:`.limit_flags` (CLI flags).

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
import json
import logging
import shlex
import signal
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable

from .auth import check_hub_token
from .buckets import BucketRoutes
from .commits import CommitRoutes
from .controls import ServerControls
from .extra import require_testing_extra
from .faults import FAULT_KINDS, FAULT_ROUTES, HOLD_ROUTES, Fault, fault_error_response
from .httpd import HTTPServer, HubError, Request, Response, Route, error_response
from .inspection import Inspection
from .lfs import LfsRoutes
from .limit_flags import add_limit_flags, limits_from
from .limits import HubLimits, Quotas, is_api_route
from .repos import RepoRoutes
from .routing import route_request
from .storage import DEFAULT_USER, GITATTRIBUTES, REPO_TYPES, git_blob_oid
from .xet import CAS_ROUTES, XetRoutes

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


class HubServer(ServerControls, Inspection, RepoRoutes, CommitRoutes, LfsRoutes, XetRoutes, BucketRoutes):
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

    # -- request handling -----------------------------------------------------------------------

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
        route = route_request(request.method, request.path, self.username, self._exists, self._cas.instance)
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
        """The CAS's access token on CAS routes, the Hub token (:mod:`.auth`) on every other."""
        if route.name in CAS_ROUTES or route.name == "xorb_download":
            self._check_cas_auth(request, route)
            return
        check_hub_token(request, route, self.tokens, self.read_only_tokens)


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


def main(argv: list[str] | None = None) -> None:
    """Run a HubServer in the foreground for demos, benchmarks and offline work."""

    parser = argparse.ArgumentParser(description="Hub-compatible test server for huggingface_hub clients.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0: a free one (default: 8765)")
    parser.add_argument("--token", action="append", help="accepted write token (repeatable); default: any")
    parser.add_argument("--read-only-token", action="append", help="accepted read-only token (repeatable)")
    parser.add_argument("--no-xet", action="store_true", help="print a client environment without Xet")
    parser.add_argument("--log-level", default="INFO", help="the server's log level: DEBUG, INFO, WARNING... (default: INFO)")
    add_limit_flags(parser)
    args = parser.parse_args(argv)
    limits = limits_from(parser, args)
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
