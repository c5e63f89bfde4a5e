"""The ``huggingface_hub`` client as the targets use it: timeouts, and each error classified by what
it is.

Why: the client's default HTTP session has no timeout (a server that accepts the connection and never
answers would block the uploader forever), and an uploader that retries an error only the user can
fix (a bad or missing token, a missing repository) or a programming error hides it for hours.
Only network and server errors (timeouts, dropped connections, Xet transfer failures, 408/409/412/
423/425/429 and 5xx) are transient.

The client is configured only through what huggingface_hub documents, and only where the uploader owns
the process (:func:`configure_process_client`). Where the uploader is a thread of the user's training
process, the user's client stays exactly as it is: calls get a ``timeout=`` where the ``HfApi`` method
takes one (:class:`TimedApi`), and the uploader bounds every call itself (``hf_mpwriter.uploader.target_calls``).
Nothing here assigns into a huggingface_hub module or object.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import re
import sys
import types
from typing import Any

from ..config import token_found
from ..errors import TargetError
from ..redaction import redact
from ..timing import HTTP_TIMEOUT_S

logger = logging.getLogger(__name__)

_TRANSIENT_STATUS = {408, 409, 412, 423, 425, 429}
#: Python's own programming errors: a call that raises one will raise it again, whatever the network does.
_PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    NotImplementedError, RecursionError, TypeError, AttributeError, NameError, LookupError, AssertionError,
    ArithmeticError, ValueError, RuntimeError, ImportError, SyntaxError,
)
#: How hf_xet (1.x) reports a CAS or token-endpoint answer: a ``ConnectionError`` whose message holds the
#: status (``... (404 Not Found)``, or after its own retries ``(status = 500 Internal Server Error``).
_XET_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3})\b|\(status = ([45]\d\d)\b")
#: hf_xet before 1.5 (1.1.3 is huggingface_hub 0.34's floor) raised every failed transfer as a plain
#: ``RuntimeError`` of this shape, which would otherwise read as a programming error (never retried).
#: Only its transfer failures: not its configuration, parse or hash-mismatch errors (bugs, not retried).
_OLD_XET_TRANSFER = re.compile(r"Data processing error: .*(?:Reqwest|HTTP status (?:client|server) error|"
                               r"error sending request|error decoding response body|timed out|\(status = [45]\d\d)")


def classify(
    exc: BaseException, doing: str, where: str, token: str | None, *, missing: str, fix_missing: str,
) -> TargetError:
    """A :class:`TargetError` for ``exc``: what failed, whether it is retried, and what to do."""
    status = _status(exc)
    name = type(exc).__name__
    detail = _detail(exc, token)
    if status in (401, 403) or name == "XetAuthenticationError":
        return _auth_error(doing, where, status or 401, token)
    if name in ("RepositoryNotFoundError", "GatedRepoError", "BucketNotFoundError") or status == 404:
        return TargetError(f"cannot {doing} on {where}: {missing} (HTTP {status}). {fix_missing}", transient=False)
    if status is not None and status not in _TRANSIENT_STATUS and not 500 <= status < 600:
        return TargetError(
            f"cannot {doing} on {where}: HTTP {status}: {detail}. This is not retried: fix the cause, then run "
            f"`hf-mpwriter sync LOGDIR`",
            transient=False,
        )
    if name == "OfflineModeIsEnabled":  # a ConnectionError, but no retry will ever get through
        return TargetError(
            f"cannot {doing} on {where}: HF_HUB_OFFLINE is set, so huggingface_hub makes no network call. Unset "
            f"it in the environment the uploader runs in, then run `hf-mpwriter sync LOGDIR`",
            transient=False,
        )
    if status is None and not is_network_error(exc):
        return _not_network_error(exc, doing, where, detail)
    response = getattr(exc, "response", None)
    return TargetError(
        f"cannot {doing} on {where} ({f'HTTP {status}' if status else name}: {detail}); will retry",
        transient=True,
        retry_after=retry_after(response),
        timed_out=status in (408, 504) or isinstance(exc, TimeoutError) or "Timeout" in name,
    )


def _auth_error(doing: str, where: str, status: int, token: str | None) -> TargetError:
    """A refused request: "no token at all" and "a token the Hub refused" need different fixes."""
    if not _has_token(token):
        return TargetError(
            f"cannot {doing} on {where}: no token was given (HTTP {status}): set HF_TOKEN, run `hf auth login`, "
            f"or pass token=... (a token with write access), then run `hf-mpwriter sync LOGDIR`",
            transient=False,
        )
    return TargetError(
        f"cannot {doing} on {where}: the Hub refused the token (HTTP {status}). Use a token with write "
        f"access (HF_TOKEN or `hf auth login`), then run `hf-mpwriter sync LOGDIR`",
        transient=False,
    )


def _has_token(token: str | None) -> bool:
    """Whether the client sent a token: ``token``, else the one huggingface_hub finds itself."""
    return token_found(token)


def _not_network_error(exc: BaseException, doing: str, where: str, detail: str) -> TargetError:
    """An error retrying cannot fix: a programming error (a bug to report), or something to fix locally."""
    name = type(exc).__name__
    if isinstance(exc, MemoryError):
        return TargetError(f"cannot {doing} on {where}: the uploader ran out of memory; will retry",
                           transient=True)  # memory comes back (training frees it); the call is not wrong
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return TargetError(
            f"cannot {doing} on {where}: {name}: {detail}. This is a bug in hf_mpwriter or huggingface_hub, not "
            f"a network error, and is not retried: please report it with LOGDIR/.hf_mpwriter/uploader.log "
            f"(nothing is lost: `hf-mpwriter sync LOGDIR` uploads the queue once it is fixed)",
            transient=False,
        )
    return TargetError(
        f"cannot {doing} on {where}: {name}: {detail}. This is not a network error and is not retried: "
        f"fix the cause, then run `hf-mpwriter sync LOGDIR`",
        transient=False,
    )


def retry_after(response: Any) -> float | None:
    """Seconds the server asks us to wait: ``Retry-After`` or the ``t=`` of a ``RateLimit`` header."""
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
    limit = headers.get("RateLimit") or ""
    match = re.search(r"\bt=(\d+(?:\.\d+)?)", limit)
    return float(match.group(1)) if match else None


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind ``exc``: its response's, or the one hf_xet writes into its ``ConnectionError``."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status
    if _is_xet_transfer_error(exc):
        found = _XET_STATUS.search(str(exc))
        if found:
            return int(found.group(1) or found.group(2))
    return None


def _is_xet_transfer_error(exc: BaseException) -> bool:
    """A failed hf_xet transfer: a ``ConnectionError`` (hf_xet 1.5+), or an older hf_xet's ``RuntimeError``."""
    return isinstance(exc, ConnectionError) or (type(exc) is RuntimeError and bool(_OLD_XET_TRANSFER.match(str(exc))))


def _detail(exc: BaseException, token: str | None) -> str:
    """What the server said (not only the request-id line the client puts first), redacted."""
    server = getattr(exc, "server_message", None)
    text = str(server or exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("(Request ID")]
    return redact(" ".join(lines)[:500].rstrip(". ") or type(exc).__name__, token)


def is_network_error(exc: BaseException) -> bool:
    """Network trouble, timeouts, a server's garbled answer, and Xet transfer failures: retrying can fix them.

    ``OSError`` covers the socket errors, ``requests``' whole family (0.x), and what hf_xet raises for a
    failed or refused transfer (``ConnectionError``; before 1.5 a ``RuntimeError``, see
    :func:`_is_xet_transfer_error`); httpx (1.x+) has its own transport errors."""
    if isinstance(exc, (OSError, json.JSONDecodeError)) or _is_xet_transfer_error(exc):
        return True
    return isinstance(exc, _transport_errors())


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of the HTTP libraries loaded in this process (none is imported for this)."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx", "httpcore"):
        module = sys.modules.get(name)
        for attr in ("TransportError", "DecodingError", "NetworkError", "TimeoutException", "ProtocolError",
                     "ProxyError"):
            kind = getattr(module, attr, None)
            if isinstance(kind, type) and issubclass(kind, BaseException):
                found.append(kind)
    urllib3 = sys.modules.get("urllib3.exceptions")
    if urllib3 is not None:
        found.append(urllib3.HTTPError)
    return tuple(found)


#: Seconds to connect, for every call of the uploader (the read timeout is a setting: ``UploadConfig.http_timeout``).
CONNECT_TIMEOUT_S = 10.0


# -- the API the targets use -----------------------------------------------------------------------
def hub_api(token: str | None, endpoint: str | None, timeout: float = HTTP_TIMEOUT_S) -> TimedApi:
    """A ``huggingface_hub.HfApi`` whose calls get a timeout where they take one (imported here:
    writers never need it). See :class:`TimedApi`."""
    from huggingface_hub import HfApi

    return TimedApi(HfApi(token=token, endpoint=endpoint), timeout)


class TimedApi:
    """``HfApi`` whose methods get ``timeout=`` where they take one (some pass ``timeout=None`` to the
    client explicitly, which would override a client's default).

    Generators are drained inside the call: their requests happen while iterating, and the uploader
    bounds the call, not what a caller does with its result later. The client is whatever
    huggingface_hub uses in this process: the user's own in thread mode (untouched), the one
    :func:`configure_process_client` set up where the uploader owns its process."""

    def __init__(self, api: Any, timeout: float) -> None:
        self._api = api
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        try:
            takes_timeout = "timeout" in inspect.signature(attr).parameters
        except (TypeError, ValueError):
            takes_timeout = False

        def call(*args: Any, **kwargs: Any) -> Any:
            if takes_timeout and kwargs.get("timeout") is None:
                kwargs["timeout"] = self._timeout
            result = attr(*args, **kwargs)
            return list(result) if isinstance(result, types.GeneratorType) else result

        return call


class UsesHubApi:
    """The lazy ``HfApi`` of a Hub-backed target (a repository, a bucket): built on first use, so
    only the uploader ever builds one (writers construct targets only to name them)."""

    _token: str | None
    _endpoint: str | None
    _api: Any = None
    #: The read timeout of its calls (``UploadConfig.http_timeout``).
    http_timeout: float = HTTP_TIMEOUT_S
    _xet: Any = None  # the target's XetContent, if it sends content to Xet itself

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = hub_api(self._token, self._endpoint, self.http_timeout)
        return self._api

    def reset_client(self) -> None:
        """Drop the ``HfApi`` (the next call builds a fresh one) and the Xet session and token, after a
        call was abandoned.

        Where the uploader owns its process, the shared HTTP client is closed too (huggingface_hub opens
        a new one on the next call; an abandoned call still reading from it fails instead of hanging on).
        In thread mode the user's client is left as it is."""
        self._api = None
        if self._xet is not None:
            self._xet.reset()
        if _process_timeouts is not None:
            _close_library_client()


# -- process mode: configure the client the documented way ------------------------------------------
#: The ``(connect, read)`` timeouts :func:`configure_process_client` gave this process's client, if it ran.
_process_timeouts: tuple[float, float] | None = None


def configure_process_client(read_timeout: float = HTTP_TIMEOUT_S) -> None:
    """Give huggingface_hub's client in *this process* timeouts on every request, the way the installed
    version documents: ``set_client_factory`` (1.x and later, ``httpx``) or ``configure_http_backend``
    (0.x, ``requests``). The client is otherwise what the library's default factory makes (its request
    ids, redirects, offline check).

    Only for a process the uploader owns (``python -m hf_mpwriter.uploader``, ``hf-mpwriter sync``):
    this is process-wide, so a training process (thread mode) never calls it."""
    global _process_timeouts
    import huggingface_hub

    connect, read = CONNECT_TIMEOUT_S, read_timeout
    if hasattr(huggingface_hub, "set_client_factory"):
        huggingface_hub.set_client_factory(functools.partial(_timed_httpx_client, connect, read))
    else:
        huggingface_hub.configure_http_backend(backend_factory=functools.partial(_timed_requests_session, connect, read))
    _process_timeouts = (connect, read)
    logger.debug("huggingface_hub client: connect timeout %.0f s, read/write/pool timeout %.0f s", connect, read)


def _timed_httpx_client(connect: float, read: float) -> Any:
    """The library's default ``httpx`` client (1.x and later), with our timeouts on every request."""
    try:  # the factory huggingface_hub itself uses (a public name in its private module)
        from huggingface_hub.utils._http import default_client_factory

        client = default_client_factory()
    except ImportError:  # moved: a plain client that follows redirects, like the library's
        httpx = sys.modules.get("httpx2") or importlib.import_module("httpx")
        client = httpx.Client(follow_redirects=True)
    limits = {"connect": connect, "read": read, "write": read, "pool": read}
    client.timeout = (connect, read, read, read)

    def fill_timeouts(request: Any) -> None:
        """A request made with ``timeout=None`` (the library passes it explicitly) gets ours too."""
        current = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {k: v if current.get(k) is None else current[k] for k, v in limits.items()}

    hooks = dict(client.event_hooks)
    hooks["request"] = [*hooks.get("request", []), fill_timeouts]
    client.event_hooks = hooks
    return client


def _timed_requests_session(connect: float, read: float) -> Any:
    """The library's default ``requests`` session (0.x), with our timeouts on every request."""
    import requests
    from huggingface_hub import configure_http_backend

    # The library's default factory is the documented default of configure_http_backend's argument.
    default = inspect.signature(configure_http_backend).parameters["backend_factory"].default
    base = default() if callable(default) else requests.Session()

    class TimedSession(requests.Session):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = (connect, read)
            return super().request(method, url, *args, **kwargs)

    session = TimedSession()
    for prefix, adapter in base.adapters.items():  # the library's adapters: request ids, offline mode
        session.mount(prefix, adapter)
    return session


def _close_library_client() -> None:
    """Close huggingface_hub's shared client through its public names (a new one opens on the next call)."""
    import huggingface_hub

    try:
        if hasattr(huggingface_hub, "close_session"):
            huggingface_hub.close_session()
        else:
            from huggingface_hub.utils import reset_sessions

            reset_sessions()
    except Exception:  # a broken client is replaced anyway
        logger.debug("closing huggingface_hub's client failed", exc_info=True)
