"""Which Hub token a route needs: the open routes, the writes a read-only token may not make, the 401/403s.

The Hub API's side of authorisation (``Authorization: Bearer <Hub token>``); the CAS checks its
own short-lived access tokens (:meth:`~.xet.XetRoutes._check_cas_auth`). Apart from the server's
request path so that who may call what reads in one place.
"""

from __future__ import annotations

from .httpd import HubError, Request, Route

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


def check_hub_token(request: Request, route: Route, tokens: set[str] | None, read_only_tokens: set[str]) -> None:
    """Raise the Hub's 401 or 403 unless the request's token may call ``route``.

    ``tokens`` None: an open server, any token reads and writes, except a read-only one writing.
    """
    if route.name in _OPEN_ROUTES:  # the client sends validate-yaml without a token
        return
    writes = route.name in _WRITE_ROUTES or (route.name == "xet_token" and route.key == "write")
    token = request.bearer()
    if tokens is None:  # open server; read-only tokens still cannot write
        if token in read_only_tokens and writes:
            raise HubError(403, "You don't have write access with this (read-only) token")
        return
    if not token:
        # Plain-http 401s must name the error code, or the client raises a bare HfHubHTTPError.
        raise HubError(401, "Unauthorized: a token is required", error_code="RepoNotFound")
    if token not in tokens and token not in read_only_tokens:
        raise HubError(401, "Invalid credentials in Authorization header")
    if token in read_only_tokens and token not in tokens and writes:
        raise HubError(403, "You don't have write access with this (read-only) token")
