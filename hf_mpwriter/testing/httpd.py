"""HTTP plumbing of the test Hub: request/response types, Hub-style errors, the threaded HTTP/1.1 server.

Nothing here knows the Hub's routes: the handler hands each request to its :class:`App` (the
``HubServer``) and writes back the :class:`Response` it returns (or closes the connection when it
returns None). :class:`App` is all this module knows of the server.
Every response carries ``Content-Length`` and the server speaks HTTP/1.1, so httpx keep-alive
connections are reused, as against the real Hub.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger("hf_mpwriter.testing.hub_server")


class HubError(Exception):
    """Raised by route handlers to answer with an error the client understands.

    ``error_code`` becomes ``X-Error-Code`` (the client picks its exception class from it:
    ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``); ``message`` becomes
    ``X-Error-Message`` and the JSON body's ``error``; ``extra`` is merged into the JSON body.
    ``expected``: an answer the client asks for as a matter of course (a Xet de-duplication query for a
    chunk the server does not hold, a CAS route it does not implement): logged at debug, not info.
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        expected: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}
        self.expected = expected


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"Content-Type": "application/json; charset=utf-8"}
    hdrs.update(headers or {})
    return Response(status, json.dumps(obj).encode(), hdrs)


def error_response(err: HubError) -> Response:
    headers = {"X-Error-Message": err.message}
    if err.error_code:
        headers["X-Error-Code"] = err.error_code
    headers.update(err.headers)
    return json_response({"error": err.message, **err.extra}, err.status, headers)


@dataclass
class Request:
    method: str
    path: str  # raw (still percent-quoted) path, without query
    query: dict[str, list[str]]
    headers: Any  # email.message.Message
    body: bytes
    base_url: str  # scheme://host:port as the client addressed us, for URLs we hand back

    def qbool(self, name: str) -> bool:
        values = self.query.get(name) or []
        return bool(values) and values[-1].lower() in ("1", "true", "yes")

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from exc

    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None


@dataclass
class Route:
    """What a request is: a route name (``_h_{name}`` handles it, faults target it) and its arguments."""

    name: str
    repo_type: str | None = None  # "model", "dataset", "space" or "bucket"
    repo_id: str | None = None
    revision: str | None = None
    path_in_repo: str | None = None
    upload_id: str | None = None
    key: str | None = None  # xet: xorb / file / chunk hash, or "read"/"write" for token routes
    api: str | None = None  # xet CAS API version ("v1", "v2") where the route has several


def parse_range(value: str, total: int) -> tuple[int, int]:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (start, end) within ``total`` bytes, else 416."""
    spec = value.strip()
    if not spec.lower().startswith("bytes=") or "," in spec:
        raise HubError(416, f"Unsupported range {value!r}", headers={"Content-Range": f"bytes */{total}"})
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
        raise HubError(416, f"Range not satisfiable {value!r}", headers={"Content-Range": f"bytes */{total}"})
    return start, end


class App(Protocol):
    """What the HTTP layer needs of the server behind it (``HubServer`` is one)."""

    host: str

    @property
    def port(self) -> int: ...

    @property
    def stopping(self) -> bool:
        """Shutting down: answer nothing more, close the connection."""
        ...

    def connection_opened(self, conn: socket.socket) -> None: ...

    def connection_closed(self, conn: socket.socket) -> None: ...

    def handle(self, request: Request) -> Response | None:
        """The answer to ``request``; ``None``: close the connection without answering."""
        ...


class Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :meth:`App.handle` calls; owns nothing but the socket."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.hub.connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub.connection_closed(self.connection)

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
        if hub.stopping:
            self.close_connection = True
            return
        body = self._read_body()
        split = urlsplit(self.path)
        host = self.headers.get("Host") or f"{hub.host}:{hub.port}"
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            base_url=f"http://{host}",
        )
        response = hub.handle(request)
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
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if self.command != "HEAD" and response.body:
            self._headers_buffer.append(response.body)  # type: ignore[attr-defined]
        self.flush_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: App) -> None:
        self.hub = hub
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections reset by clients or by stop() are expected; keep test output clean.
        logger.debug("error while serving %s", client_address, exc_info=True)
