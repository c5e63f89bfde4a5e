"""Which route a request is: every URL the test Hub answers, to a handler name and what the path names.

The server's one URL table (:func:`route_request`), and under it one parser per family of paths:
repositories' API (``/api/{T}/{id}/...``) and web URLs (``resolve``, ``.git/info/lfs``), Storage
Buckets' (``/api/buckets/...``, ``/buckets/.../resolve``) and the CAS's (``/cas/...``). Apart from the
protocol modules, whose handlers answer these routes, so that the whole map reads in one place.
Path segments arrive percent-quoted and are unquoted one by one.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import unquote

from .httpd import Route
from .storage import PLURAL_TO_TYPE


def route_request(method: str, raw_path: str, username: str, exists: Callable[[str, str], bool], cas_instance: str) -> Route:
    """The route of a request: its handler's name (``_h_{name}``) and what the path names.

    ``username`` stands for ``me`` in bucket paths, ``exists(repo_type, repo_id)`` tells repo ids
    apart, ``cas_instance`` is this server's segment in the ``casUrl`` (see ``CasStore.instance``).
    """
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
            return route_bucket_api(method, rest[1:], username)
        if len(rest) >= 2 and rest[0] in PLURAL_TO_TYPE:
            return route_repo_api(method, PLURAL_TO_TYPE[rest[0]], rest[1:], exists)
        return Route("unknown")
    if segs == ["v1", "telemetry"] and method == "POST":  # hf_xet telemetry, at the CAS host's root
        return Route("xet_telemetry")
    if len(segs) == 2 and segs[0] == "__lfs__" and method == "PUT":
        return Route("lfs_upload", upload_id=segs[1])
    route = Route("unknown")
    if segs[:1] == ["cas"]:  # the casUrl names this store's instance (see CasStore.instance)
        route = route_cas(method, segs[2:] if segs[1:2] == [cas_instance] else segs[1:])
    elif segs[:1] == ["buckets"]:
        route = route_bucket_web(method, segs[1:])
    return route if route.name != "unknown" else route_repo_web(method, segs)


#: Path segments that follow a repo id in ``/api/{type}s/{id}/...`` URLs.
API_ACTIONS = frozenset(
    {
        "revision",
        "preupload",
        "commit",
        "tree",
        "paths-info",
        "super-squash",
        "commits",
        "refs",
        "branch",
        "xet-read-token",
        "xet-write-token",
    }
)


#: ``/api/{T}/{id}/{action}/{revision}``: the route each action and method names.
_ONE_REVISION = {
    ("revision", "GET"): "repo_info",
    ("preupload", "POST"): "preupload",
    ("commit", "POST"): "commit",
    ("paths-info", "POST"): "paths_info",
    ("super-squash", "POST"): "squash",
    ("commits", "GET"): "list_commits",
    ("branch", "POST"): "branch",
    ("branch", "DELETE"): "branch",
}


def route_repo_api(method: str, repo_type: str, segs: list[str], exists: Any) -> Route:
    """``/api/{T}/...`` after the type segment. ``exists(repo_type, repo_id)`` disambiguates ids.

    Repo ids are "name" or "namespace/name": prefer an existing two-segment repo, then treat a
    known action keyword in second position as the end of a one-segment id.
    """
    if len(segs) >= 2 and (exists(repo_type, f"{unquote(segs[0])}/{unquote(segs[1])}") or segs[1] not in API_ACTIONS):
        repo_id, rest = f"{unquote(segs[0])}/{unquote(segs[1])}", segs[2:]
    else:
        repo_id, rest = unquote(segs[0]), segs[1:]
    r = Route("unknown", repo_type=repo_type, repo_id=repo_id)
    if not rest:
        if method == "GET":
            r.name = "repo_info"
        return r
    action, args = rest[0], [unquote(s) for s in rest[1:]]
    one_revision = _ONE_REVISION.get((action, method))
    if one_revision is not None and len(args) == 1:
        r.name, r.revision = one_revision, args[0]
    elif action == "tree" and len(args) >= 1 and method == "GET":
        r.name, r.revision, r.path_in_repo = "tree", args[0], "/".join(args[1:])
    elif action == "refs" and not args and method == "GET":
        r.name = "refs"
    elif action in ("xet-read-token", "xet-write-token") and len(args) <= 1 and method in ("GET", "POST"):
        r.name, r.key = "xet_token", action[4:-6]  # "read" / "write"
        r.revision = args[0] if args else None
    return r


def route_repo_web(method: str, segs: list[str]) -> Route:
    """Non-API repo URLs: ``/{id}.git/info/lfs/objects/{batch,verify}`` and ``/{id}/resolve/{rev}/{path}``."""
    repo_type = "model"
    if segs and segs[0] in ("datasets", "spaces"):
        repo_type, segs = PLURAL_TO_TYPE[segs[0]], segs[1:]
    for i, seg in enumerate(segs[:2]):
        if seg.endswith(".git") and segs[i + 1 : i + 4] == ["info", "lfs", "objects"] and len(segs) == i + 5:
            repo_id = "/".join(unquote(s) for s in segs[:i] + [seg[: -len(".git")]])
            action = segs[i + 4]
            if method == "POST" and action in ("batch", "verify"):
                return Route(f"lfs_{action}", repo_type=repo_type, repo_id=repo_id)
    for i in (1, 2):
        if len(segs) > i + 2 and segs[i] == "resolve" and method in ("GET", "HEAD"):
            return Route(
                "resolve",
                repo_type=repo_type,
                repo_id="/".join(unquote(s) for s in segs[:i]),
                revision=unquote(segs[i + 1]),
                path_in_repo="/".join(unquote(s) for s in segs[i + 2 :]),
            )
    return Route("unknown")


def route_bucket_api(method: str, segs: list[str], username: str) -> Route:
    """``/api/buckets/...`` after the ``buckets`` segment."""
    if not segs:
        return Route("unknown")
    namespace = unquote(segs[0])
    if namespace == "me":
        namespace = username
    if len(segs) == 1:
        return Route("bucket_list" if method == "GET" else "unknown", repo_type="bucket", repo_id=namespace)
    r = Route("unknown", repo_type="bucket", repo_id=f"{namespace}/{unquote(segs[1])}")
    rest = segs[2:]
    if not rest:
        r.name = {"POST": "bucket_create", "GET": "bucket_info", "DELETE": "bucket_delete"}.get(method, "unknown")
    elif rest == ["batch"] and method == "POST":
        r.name = "bucket_batch"
    elif rest[0] == "tree" and method == "GET":
        r.name, r.path_in_repo = "bucket_tree", "/".join(unquote(s) for s in rest[1:])
    elif rest == ["paths-info"] and method == "POST":
        r.name = "bucket_paths_info"
    elif len(rest) == 1 and rest[0] in ("xet-read-token", "xet-write-token") and method in ("GET", "POST"):
        r.name, r.key = "xet_token", rest[0][4:-6]
    return r


def route_bucket_web(method: str, segs: list[str]) -> Route:
    """``/buckets/{ns}/{name}/resolve/{path}`` (the path may be quoted as one segment)."""
    if len(segs) >= 4 and segs[2] == "resolve" and method in ("GET", "HEAD"):
        return Route(
            "bucket_resolve",
            repo_type="bucket",
            repo_id=f"{unquote(segs[0])}/{unquote(segs[1])}",
            path_in_repo="/".join(unquote(s) for s in segs[3:]),
        )
    return Route("unknown")


def route_cas(method: str, segs: list[str]) -> Route:
    """Paths under ``/cas`` (the ``casUrl`` the token endpoints hand out)."""
    if segs[:1] == ["shard"] and len(segs) == 3:  # hf_xet before 1.2: POST /shard/{prefix}/{hash}
        segs = ["v1", "shards"]
    elif segs[:1] in (["xorb"], ["chunk"], ["reconstruction"]):  # hf_xet before 1.2: singular names, no version
        segs = ["v1", segs[0] + "s", *segs[1:]]
    elif segs[:1] in (["xorbs"], ["shards"], ["reconstructions"]):  # hf_xet 1.2-1.4: no version
        segs = ["v1", *segs]
    n = len(segs)
    if n == 4 and segs[:2] == ["v1", "xorbs"] and method == "POST":
        return Route("xorb_upload", key=unquote(segs[3]))
    if n == 2 and segs[1] == "shards" and segs[0] in ("v1", "v2") and method == "POST":
        return Route("shard_upload", api=segs[0])
    if n == 3 and segs[1] == "reconstructions" and segs[0] in ("v1", "v2") and method == "GET":
        return Route("reconstruction", key=unquote(segs[2]), api=segs[0])
    if n == 2 and segs == ["v1", "reconstructions"] and method == "POST":
        return Route("reconstruction", api="batch")
    if n == 4 and segs[:2] == ["v1", "chunks"] and method == "GET":
        return Route("chunk_query", key=unquote(segs[3]))
    if n == 3 and segs[0] == "xorb-data" and method in ("GET", "HEAD"):
        return Route("xorb_download", key=unquote(segs[2]))
    if segs == ["v1", "telemetry"] and method == "POST":
        return Route("xet_telemetry")
    if segs[:2] in (["v1", "xorb-grants"], ["v1", "xorb-commits"], ["v2", "file-chunk-hashes"]):
        return Route("cas_unsupported")
    return Route("unknown")
