"""Fault injection for the test Hub: the fault kinds, the routes they can target, validation, error answers.

:meth:`HubServer.inject` creates a :class:`Fault`; ``HubServer.handle`` takes the first matching
fault of a request's route and applies it (see :data:`FAULT_KINDS`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from .httpd import HubError, Response, error_response

#: Route names accepted by :meth:`HubServer.inject` ("any" matches every route).
FAULT_ROUTES = (
    # git repositories
    "commit",
    "preupload",
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
    # legacy LFS
    "lfs_batch",
    "lfs_upload",
    "lfs_verify",
    # Xet: token endpoints (repos and buckets) and the CAS
    "xet_token",
    "xorb_upload",
    "shard_upload",
    "reconstruction",
    "xorb_download",
    "chunk_query",
    # Storage Buckets
    "bucket_create",
    "bucket_info",
    "bucket_delete",
    "bucket_list",
    "bucket_batch",
    "bucket_tree",
    "bucket_paths_info",
    "bucket_resolve",
    "any",
)

#: ``status``, ``rate_limit``, ``lost_response``, ``drop``, ``latency``, ``hold`` (see HubServer.inject).
FAULT_KINDS = ("status", "rate_limit", "lost_response", "drop", "latency", "hold")

#: Routes a "hold" fault may target: the writes a real Hub applies even after the client left.
HOLD_ROUTES = ("commit", "bucket_batch")


@dataclass
class Fault:
    """An injected fault. ``remaining`` is None for "until cleared"; ``hits`` counts the requests it hit.

    For "latency" and "hold" faults, ``done`` counts the delayed requests whose handling has
    finished, and ``outcomes`` lists their HTTP statuses (e.g. ``[200]`` for an applied commit,
    ``[412]`` for a held commit whose parent went stale in the meantime). :meth:`release` ends their
    delay at once: a test sets a generous ``seconds`` (a bound) and releases the requests as soon as
    its scenario is in place, instead of waiting the bound out.
    """

    kind: str
    route: str
    remaining: int | None
    params: dict[str, Any]
    hits: int = 0
    done: int = 0
    outcomes: list[int] = field(default_factory=list)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    def delay(self) -> None:
        """Sleep ``seconds`` (in the request's own server thread), or until :meth:`release`."""
        self._released.wait(float(self.params["seconds"]))

    def release(self) -> None:
        """Let every request this fault delays (now or later) go on at once."""
        self._released.set()

    def matches(self, route: str) -> bool:
        return (self.remaining is None or self.remaining > 0) and self.route in ("any", route)


def new_fault(kind: str, route: str, times: int | None, params: dict[str, Any]) -> Fault:
    """Validate :meth:`HubServer.inject` arguments and build the fault (ValueError if they make no sense)."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS}")
    if route not in FAULT_ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {FAULT_ROUTES}")
    if times is not None and times < 1:
        raise ValueError("times must be >= 1 (or None for 'until clear_faults()')")
    params = dict(params)
    if kind == "status":
        params.setdefault("status", 500)
        if not 400 <= int(params["status"]) <= 599:
            raise ValueError("status must be an HTTP error status (4xx/5xx)")
    elif kind == "rate_limit":
        params.setdefault("retry_after", 1)
    elif kind in ("latency", "hold"):
        if "seconds" not in params:
            raise ValueError(f"{kind} fault needs seconds=...")
        if float(params["seconds"]) < 0:
            raise ValueError("seconds must be >= 0")
        if kind == "hold" and route not in HOLD_ROUTES:
            raise ValueError(f"hold faults target one of {HOLD_ROUTES}, not {route!r}")
    return Fault(kind=kind, route=route, remaining=times, params=params)


def fault_error_response(fault: Fault) -> Response:
    """The answer of a "status" or "rate_limit" fault."""
    if fault.kind == "rate_limit":
        n = int(fault.params["retry_after"])
        return error_response(
            HubError(
                429,
                "Too Many Requests (injected)",
                headers={
                    "Retry-After": str(n),
                    "RateLimit": f'"api";r=0;t={n}',
                    "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
                },
            )
        )
    status = int(fault.params["status"])
    message = fault.params.get("message", f"Injected HTTP {status}")
    response = error_response(HubError(status, message, headers=dict(fault.params.get("headers") or {})))
    if "body" in fault.params:
        body = fault.params["body"]
        response.body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return response
