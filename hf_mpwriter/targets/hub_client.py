"""The ``huggingface_hub`` client as the targets use it: a timeout on every call, and each error
classified by what retrying can fix.

Why: the client's default HTTP session has no timeout (a server that accepts the connection and never
answers would block the uploader forever), and an uploader that retries an error only the user can
fix (a bad token, a missing repository, a programming error inside the client) hides it for hours.
Only network errors, timeouts, 408/409/412/423/425/429 and 5xx are transient.
"""

from __future__ import annotations

import os
import re
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
    """A ``huggingface_hub.HfApi`` whose every call has a timeout (imported here: writers never need it)."""
    from huggingface_hub import HfApi

    install_timeouts()
    return HfApi(token=token, endpoint=endpoint)


def install_timeouts(connect: float = 10.0, read: float | None = None) -> None:
    """Give ``huggingface_hub``'s HTTP client timeouts (its default has none: a server that accepts the
    connection and never answers would block the uploader forever). A factory the user installed is
    kept. ``read`` defaults to ``HF_MPWRITER_HTTP_TIMEOUT`` or 60 s."""
    from huggingface_hub.utils import _http

    if read is None:
        read = float(os.environ.get("HF_MPWRITER_HTTP_TIMEOUT") or 60.0)

    if _http._GLOBAL_CLIENT_FACTORY is not _http.default_client_factory:
        return

    def with_timeouts() -> Any:
        import httpx2

        client = _http.default_client_factory()
        client.timeout = httpx2.Timeout(read, connect=connect)
        return client

    _http.set_client_factory(with_timeouts)
