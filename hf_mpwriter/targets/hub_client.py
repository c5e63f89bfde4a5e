"""The ``huggingface_hub`` client as the targets use it: a timeout on every call, and each error
classified by what retrying can fix.

Why: the client's default HTTP session has no timeout (a server that accepts the connection and never
answers would block the uploader forever), and an uploader that retries an error only the user can
fix (a bad token, a missing repository, a programming error inside the client) hides it for hours.
Only network errors, timeouts, 408/409/412/423/425/429 and 5xx are transient.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import TargetError
from ..redaction import redact

_TRANSIENT_STATUS = {408, 409, 412, 423, 425, 429}


def classify(
    exc: BaseException, doing: str, where: str, token: str | None, *, missing: str, fix_missing: str,
) -> TargetError:
    """A :class:`TargetError` for ``exc``: what failed, whether it is retried, and what to do."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    name = type(exc).__name__
    detail = _detail(exc, token)
    if status in (401, 403) or name == "XetAuthenticationError":
        return TargetError(
            f"cannot {doing} on {where}: the Hub refused the token (HTTP {status or 401}). Use a token with write "
            f"access (HF_TOKEN or `hf auth login`), then run `hf-mpwriter sync LOGDIR`",
            transient=False,
        )
    if name in ("RepositoryNotFoundError", "GatedRepoError", "BucketNotFoundError") or status == 404:
        return TargetError(f"cannot {doing} on {where}: {missing} (HTTP {status}). {fix_missing}", transient=False)
    if status is not None and status not in _TRANSIENT_STATUS and not 500 <= status < 600:
        return TargetError(
            f"cannot {doing} on {where}: HTTP {status}: {detail}. This is not retried: fix the cause, then run "
            f"`hf-mpwriter sync LOGDIR`",
            transient=False,
        )
    if status is None and not _is_network_error(exc):
        return TargetError(
            f"cannot {doing} on {where}: {name}: {detail}. This is not a network error and is not retried: "
            f"fix the cause, then run `hf-mpwriter sync LOGDIR`",
            transient=False,
        )
    return TargetError(
        f"cannot {doing} on {where} ({f'HTTP {status}' if status else name}: {detail}); will retry",
        transient=True,
        retry_after=retry_after(response),
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


def _detail(exc: BaseException, token: str | None) -> str:
    """What the server said (not only the request-id line the client puts first), redacted."""
    server = getattr(exc, "server_message", None)
    text = str(server or exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("(Request ID")]
    return redact(" ".join(lines)[:500] or type(exc).__name__, token)


def _is_network_error(exc: BaseException) -> bool:
    """Network trouble, timeouts, and Xet transfer failures: retrying can fix them."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    if type(exc).__name__ == "XetAuthenticationError":
        return False
    module = type(exc).__module__ or ""
    # httpx2's TransportError family (connect/read/write/pool timeouts, protocol errors) and hf_xet's
    # transfer errors (surfaced as RuntimeError or its own classes).
    return module.startswith(("httpx", "httpcore", "hf_xet")) or isinstance(exc, RuntimeError)


def hub_api(token: str | None, endpoint: str | None) -> Any:
    """A ``huggingface_hub.HfApi`` whose every call has a timeout and goes through a client of our own
    (imported here: writers never need it). See :class:`ScopedApi`."""
    from huggingface_hub import HfApi

    return ScopedApi(HfApi(token=token, endpoint=endpoint), OwnClient())


def http_timeouts() -> tuple[float, float]:
    """``(connect, read)`` seconds for the uploader's calls: ``HF_MPWRITER_HTTP_TIMEOUT`` (read) or 60 s."""
    return 10.0, float(os.environ.get("HF_MPWRITER_HTTP_TIMEOUT") or 60.0)


# -- a client of our own ----------------------------------------------------------------------------
#
# Why: huggingface_hub's default HTTP client has no timeout (0.x: a ``requests.Session`` per thread,
# 1.x and later: one shared ``httpx`` client), and no version takes a client per ``HfApi``. Replacing the
# process-global factory (``set_client_factory`` / ``configure_http_backend``) would give our timeouts to
# the user's own calls too when the uploader runs as a thread of the training process. Instead, every
# call of the uploader runs with :data:`_SCOPE` set, and huggingface_hub's internal ``get_session`` (and
# the ``close_session`` / ``reset_sessions`` it calls after a connection error) answer with *our* client
# inside that scope and with the library's own, untouched, everywhere else. The user's code (any other
# thread or context) gets exactly the client it had, the same object, configured as it was.

_SCOPE: contextvars.ContextVar[OwnClient | None] = contextvars.ContextVar("hf_mpwriter_http_client", default=None)
_LOCK = threading.Lock()
_ROUTED: dict[str, int] = {}  # module name -> id(module) whose get_session we route
#: The library's own functions, captured once (what the routing falls back to outside our scope).
_ORIGINAL: dict[str, Callable[..., Any]] = {}
_ROUTED_NAMES = ("get_session", "close_session", "reset_sessions")
#: The public namespaces keep the library's own functions: what users import stays what it was.
_PUBLIC = ("huggingface_hub", "huggingface_hub.utils")


class OwnClient:
    """The HTTP client (1.x+: ``httpx``) or session (0.x: ``requests``) only the uploader's calls use.

    Built by the factory the user installed, when the installed version lets us read it (so proxies and
    certificates the user configured apply to us too), else by the library's default factory; then
    given timeouts on *our* instance. Created lazily, in the thread that uses it."""

    def __init__(self, connect: float | None = None, read: float | None = None) -> None:
        default_connect, default_read = http_timeouts()
        self.connect = default_connect if connect is None else connect
        self.read = default_read if read is None else read
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _with_timeouts(_new_library_client(), self.connect, self.read)
        return self._client

    def reset(self) -> None:
        """Drop the client (what the library does to its own after a connection error)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken client is dropped anyway
                pass

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """huggingface_hub calls made in this block (this thread or context only) use this client."""
        route_library_sessions()
        token = _SCOPE.set(self)
        try:
            yield
        finally:
            _SCOPE.reset(token)


class ScopedApi:
    """``HfApi`` whose methods run inside :meth:`OwnClient.scope`, with a ``timeout=`` where the method
    takes one (some calls pass ``timeout=None`` to the client explicitly, which would override the
    client's default). Generators are drained inside the scope (their requests happen while iterating)."""

    def __init__(self, api: Any, own: OwnClient) -> None:
        self._api = api
        self._own = own

    @property
    def raw(self) -> Any:
        """The ``HfApi`` itself (its calls outside :meth:`scope` use the user's client)."""
        return self._api

    def scope(self) -> contextlib.AbstractContextManager[None]:
        """For module-level huggingface_hub functions (``ModelCard.load``, ``hf_hub_download``)."""
        return self._own.scope()

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
                kwargs["timeout"] = self._own.read
            with self._own.scope():
                result = attr(*args, **kwargs)
                if isinstance(result, types.GeneratorType):
                    result = list(result)
                return result

        return call


def route_library_sessions() -> None:
    """Make huggingface_hub's internal ``get_session`` (and ``close_session`` / ``reset_sessions``)
    scope-aware: our client inside :meth:`OwnClient.scope`, the library's own outside it.

    Idempotent and cheap; run before each scoped call so that modules huggingface_hub imports lazily
    (``hf_file_system``, ``repocard``) are routed too. A version whose layout differs (a module without
    these names) is simply not routed: its calls use the user's client, without our timeouts."""
    with _LOCK:
        modules = [(n, m) for n, m in list(sys.modules.items())
                   if m is not None and (n == "huggingface_hub" or n.startswith("huggingface_hub."))]
        if not _ORIGINAL:
            http = sys.modules.get("huggingface_hub.utils._http")
            if http is None:
                return
            for fname in _ROUTED_NAMES:
                if callable(getattr(http, fname, None)):
                    _ORIGINAL[fname] = getattr(http, fname)
                    # Looks like the library's own (name, docs, ``__wrapped__``): it is, outside our scope.
                    functools.update_wrapper(_ROUTERS[fname], _ORIGINAL[fname])
        for name, module in modules:
            if name in _PUBLIC or _ROUTED.get(name) == id(module):
                continue
            namespace = vars(module)
            for fname, original in _ORIGINAL.items():
                if namespace.get(fname) is original:
                    namespace[fname] = _ROUTERS[fname]
            _ROUTED[name] = id(module)


def _route_get_session() -> Any:
    own = _SCOPE.get()
    return own.client if own is not None else _ORIGINAL["get_session"]()


def _route_close_session() -> None:
    own = _SCOPE.get()
    own.reset() if own is not None else _ORIGINAL["close_session"]()


def _route_reset_sessions() -> None:
    own = _SCOPE.get()
    own.reset() if own is not None else _ORIGINAL["reset_sessions"]()


_ROUTERS: dict[str, Callable[..., Any]] = {
    "get_session": _route_get_session, "close_session": _route_close_session, "reset_sessions": _route_reset_sessions,
}


def _new_library_client() -> Any:
    """A new client made the way the library makes its own: the user's factory where it can be read
    (a private name, ``_GLOBAL_CLIENT_FACTORY`` in 1.x+ and ``_GLOBAL_BACKEND_FACTORY`` in 0.x, each
    with a fallback), else the library's default factory, else a plain client."""
    from huggingface_hub.utils import _http

    for factory_name in ("_GLOBAL_CLIENT_FACTORY", "default_client_factory",  # 1.x and later: httpx
                         "_GLOBAL_BACKEND_FACTORY", "_default_backend_factory"):  # 0.x: requests
        factory = getattr(_http, factory_name, None)
        if callable(factory):
            return factory()
    if hasattr(_http, "set_client_factory"):
        import httpx  # a 1.x+ whose factories moved: a plain client that follows redirects

        return httpx.Client(follow_redirects=True)
    import requests

    return requests.Session()


def _with_timeouts(client: Any, connect: float, read: float) -> Any:
    """Give *our* client timeouts for every request that has none (the library's own is never touched)."""
    if hasattr(client, "event_hooks") and hasattr(client, "timeout"):  # httpx (or httpx2)
        limits = {"connect": connect, "read": read, "write": read, "pool": read}

        def add_timeouts(request: Any) -> None:
            current = dict(request.extensions.get("timeout") or {})
            request.extensions["timeout"] = {k: current.get(k) if current.get(k) is not None else v
                                             for k, v in limits.items()}

        hooks = dict(client.event_hooks)
        hooks["request"] = [*hooks.get("request", []), add_timeouts]
        client.event_hooks = hooks
        return client
    send = client.request  # requests.Session: every verb goes through request()

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (connect, read)
        return send(method, url, *args, **kwargs)

    client.request = request
    return client


# -- versions ---------------------------------------------------------------------------------------
#: The first huggingface_hub release with each feature that needs more than the floor in setup.cfg.
BUCKETS_VERSION = (1, 5)  # HfApi.create_bucket, batch_bucket_files, get_bucket_paths_info
BUCKET_FS_VERSION = (1, 6)  # HfFileSystem reads hf://buckets/... (what `hf-mpwriter view` of a bucket needs)


def hub_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed huggingface_hub (``(0, 0)`` if it cannot be read)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = re.match(r"(\d+)\.(\d+)", version("huggingface_hub"))
    except PackageNotFoundError:
        return (0, 0)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def require_hub_version(minimum: tuple[int, int], feature: str) -> None:
    """A :class:`~hf_mpwriter.errors.ConfigurationError` naming the version ``feature`` needs, if the
    installed huggingface_hub is older: at construction, not hours later in the uploader."""
    from ..errors import ConfigurationError

    installed = hub_version()
    if installed < minimum:
        from importlib.metadata import version

        needed = ".".join(map(str, minimum))
        raise ConfigurationError(
            f"{feature}: requires huggingface_hub>={needed}; this environment has huggingface_hub "
            f"{version('huggingface_hub')}. "
            f"Upgrade it (pip install -U 'huggingface_hub>={needed}'; transformers 4.x pins huggingface_hub<1.0: "
            f"transformers>=5 lifts that), or use a Hub repository (repo_id='me/run') instead"
        )


class UsesHubApi:
    """The lazy ``HfApi`` of a Hub-backed target (a repository, a bucket): built on first use, so
    only the uploader ever builds one (writers construct targets only to name them)."""

    _token: str | None
    _endpoint: str | None
    _api: Any = None

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = hub_api(self._token, self._endpoint)
        return self._api
