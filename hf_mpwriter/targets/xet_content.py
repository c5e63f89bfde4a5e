"""Content straight to a repository's or bucket's Xet storage, with one write token kept until it expires.

Why: huggingface_hub sends content only inside ``create_commit``/``preupload_lfs_files`` (a bucket:
``batch_bucket_files``), which ask the Hub how each file is stored (``preupload``) and, in most
versions, a fresh Xet write token, at every call: two Hub API requests per commit, as many as the
commit and its verification. So the uploader sends content the way huggingface_hub itself does
underneath: an upload commit of hf_xet's ``XetSession`` (what huggingface_hub 2.x uses; where hf_xet
is older than 1.8, ``hf_xet.upload_files``, what 0.34-1.x use), seeded with a write token from the
documented endpoint (``GET /api/{type}s/{id}/xet-write-token[/{revision}]``), fetched through
huggingface_hub's own HTTP session and headers, and kept until it nears expiry. Then the commit (a
bucket: the batch) names the content by sha256 (by Xet hash): see ``HubTarget.commit_uploaded`` and
``BucketTarget.commit_uploaded``, also what a multi-node job's leader sends for every node
(:mod:`hf_mpwriter.uploader.coordination.member`).

A bucket sends every file this way (it holds everything in Xet), with huggingface_hub 1.10+. For a
repository, only event files (``*tfevents*``: the Hub's default ``.gitattributes`` stores them in
LFS/Xet); anything else, ``HF_HUB_DISABLE_XET``, no ``hf_xet``, or a repository whose token endpoint
refuses (no Xet): ``create_commit`` or ``preupload_lfs_files`` as is.

In a multi-node job the write token can come from the job (``shared``: the leader fetches one and
publishes it through the job's store, :mod:`hf_mpwriter.uploader.coordination.member`): a thousand nodes
then cost the Hub one token request, not one each. A shared token that an upload fails with is not used
again: the node fetches its own, as without a job. Nor is one whose CAS the node cannot check: a shared token
is used only where its CAS URL's origin (scheme, host, port) is one this node's own Hub names
(:meth:`XetContent.trusts`), since anyone who reaches the job's store can write there.

The token request has the uploader's read timeout (in thread mode the client is the user's, with no
timeout of its own) and holds no lock while it runs: a request the Hub never answers ends the upload
that made it, not every later one; :meth:`XetContent.reset` (after an abandoned call) starts afresh.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..timing import HTTP_TIMEOUT_S

logger = logging.getLogger(__name__)

#: A token is fetched again this long before it expires (an upload may take that long).
REFRESH_BEFORE_S = 300.0


#: A Xet write connection: (CAS url, access token, expiry in unix seconds).
Connection = tuple[str, str, int]

#: The CAS the public Hub's token answers name, by the Hub's origin (another host than the Hub's own): known
#: here, so that a job's nodes on the public Hub can check the job's shared token without a request each.
HUB_CAS: dict[str, tuple[str, ...]] = {"https://huggingface.co": ("https://cas-server.xethub.hf.co",)}


#: A URL this module reads the host of the way every client does: no user info, backslash, space or control
#: character (Python's ``urlsplit`` and hf_xet's WHATWG parser read ``https://a\@b`` as two different hosts).
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:%/-]*)?", re.IGNORECASE)


def origin(url: str) -> str:
    """``scheme://host:port`` of a plain http(s) URL (:data:`_PLAIN_URL`), lower-cased, the port explicit; ``""``
    where it is none."""
    if not _PLAIN_URL.fullmatch(url):
        return ""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # (a port out of range)
        return ""
    if not parts.hostname:
        return ""
    scheme = parts.scheme.lower()
    return f"{scheme}://{parts.hostname}:{port or (443 if scheme == 'https' else 80)}"


def hub_cas_origins(endpoint: str) -> set[str]:
    """The CAS origins a Hub at ``endpoint`` names before any token is fetched: its own, and the known ones."""
    known = {origin(cas) for hub, named in HUB_CAS.items() if origin(hub) == origin(endpoint) for cas in named}
    return {origin(endpoint)} | known


class XetUnavailable(Exception):
    """This repository, or this installation, does not take content through Xet."""


def xet_usable() -> bool:
    """``hf_xet`` is installed and huggingface_hub is not told to leave it alone."""
    if os.environ.get("HF_HUB_DISABLE_XET", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        import hf_xet  # noqa: F401
    except ImportError:
        return False
    return True


def event_files_only(paths: Sequence[str]) -> bool:
    """Whether every path is an event file (stored in LFS/Xet by the Hub's default ``.gitattributes``)."""
    return bool(paths) and all("tfevents" in os.path.basename(p) for p in paths)


class XetContent:
    """Uploads files to one repository's Xet storage; the write token is kept while it is good."""

    def __init__(self, endpoint: str, repo_id: str, repo_type: str, revision: str | None, token: str | None,
                 timeout: float = HTTP_TIMEOUT_S, shared: Callable[[], Connection | None] | None = None) -> None:
        self.endpoint, self.repo_id, self.repo_type, self.revision = endpoint.rstrip("/"), repo_id, repo_type, revision
        self._token = token
        self._shared = shared  # the job's token, if it has one now (never raises)
        self._refused: str | None = None  # a shared token an upload failed with: not used again
        #: The CAS origins this node's own Hub names (:meth:`trusts`); a token it fetches adds its own.
        self._cas_origins = hub_cas_origins(self.endpoint)
        self.fetched = 0  # write tokens this object asked the Hub for (``status``: the job's saving shows)
        self._timeout = timeout  # the token request's read timeout: the target's (UploadConfig.http_timeout)
        self._lock = threading.Lock()  # guards the session; never held across a network call
        self._connection: tuple[str, str, int] | None = None  # (cas url, access token, expiry: unix seconds)
        self._session: Any = None  # hf_xet.XetSession, where hf_xet has it
        self._session_pid = 0

    def reset(self) -> None:
        """Forget the session and the token after a call was abandoned: the stuck call keeps what it
        holds, the next one starts on a new session with a new token. Takes no lock: the uploader's
        loop calls it, and must not wait on anything the stuck call holds."""
        self._session, self._connection = None, None

    def upload(self, paths: Sequence[str], sha256s: Sequence[str]) -> list[tuple[str, int]]:
        """Send the files' content (chunked, de-duplicated against what the storage holds), each with
        the sha256 of its content (what a repository's commit names it by); the Xet hash and size of
        each file, in order (what a bucket's batch names it by).

        hf_xet 1.8+: an upload commit of its ``XetSession`` (what huggingface_hub 2.x uses), seeded
        with the kept token; older hf_xet: ``upload_files`` (what huggingface_hub 0.34-1.x uses)."""
        import hf_xet

        (cas_url, access, expiry), shared = self._current()
        try:
            if hasattr(hf_xet, "XetSession"):
                return self._upload_in_session(hf_xet, paths, sha256s, cas_url, access, expiry)
            results = hf_xet.upload_files(list(paths), cas_url, (access, expiry), self._refresh, None, self.repo_type)
        except Exception:
            if shared:  # not that one again: this node's own from now on (a new one, if it was its own too)
                self._refused = access
            raise
        return [(str(r.hash), int(getattr(r, "file_size", None) or r.filesize)) for r in results]

    def _upload_in_session(self, hf_xet: Any, paths: Sequence[str], sha256s: Sequence[str], cas_url: str,
                           access: str, expiry: int) -> list[tuple[str, int]]:
        from huggingface_hub.utils import build_hf_headers

        with self._lock:
            if self._session is None or self._session_pid != os.getpid():  # a session does not survive a fork
                self._session, self._session_pid = hf_xet.XetSession(), os.getpid()
            session = self._session
        with session.new_upload_commit(
            endpoint=cas_url, token=access, token_expiry_unix_secs=expiry, token_refresh_url=self._url(),
            token_refresh_headers=build_hf_headers(token=self._token),
        ) as commit:
            handles = [commit.start_upload_file(path, sha256=sha) for path, sha in zip(paths, sha256s)]
        infos = [handle.result().xet_info for handle in handles]
        return [(str(info.hash), int(info.file_size)) for info in infos]

    def trusts(self, cas_url: str) -> bool:
        """Whether ``cas_url`` is at a CAS this node's own Hub names: the Hub's origin, a known CAS of the public
        Hub (:data:`HUB_CAS`), or the CAS of a token this object fetched itself."""
        found = origin(cas_url)
        return bool(found) and found in self._cas_origins

    def _current(self) -> tuple[Connection, bool]:
        """The job's token while it is good and its CAS one this node trusts (``True``: the job's), else this
        process's own."""
        shared = self._shared() if self._shared is not None else None
        if (shared is not None and shared[1] != self._refused and shared[2] - REFRESH_BEFORE_S >= time.time()
                and self.trusts(shared[0])):
            return shared, True
        return self.own(), False

    def own(self, fresh_for: float = REFRESH_BEFORE_S) -> Connection:
        """This process's own token: the kept one while it is good for ``fresh_for`` seconds more and no
        upload failed with it as the job's, else a new one (two threads may both fetch one: harmless).
        A job's leader shares it, asking for one fresh for longer than the nodes keep using it."""
        connection = self._connection
        if connection is None or connection[2] - fresh_for < time.time() or connection[1] == self._refused:
            connection = self._connection = self._fetch()
        return connection

    def _refresh(self) -> tuple[str, int]:
        """hf_xet's token refresher: a new token of this process's own when the one it holds expired or
        was refused mid-upload (the job's, if it held that one: not used again)."""
        shared = self._shared() if self._shared is not None else None
        if shared is not None:
            self._refused = shared[1]
        connection = self._connection = self._fetch()
        return connection[1], connection[2]

    def _url(self) -> str:
        url = f"{self.endpoint}/api/{self.repo_type}s/{self.repo_id}/xet-write-token"
        if self.revision is not None:  # a bucket has no revision (huggingface_hub's own URL has none either)
            url += f"/{self.revision}"
        return url

    def _fetch(self) -> Connection:
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        self.fetched += 1
        response = get_session().get(self._url(), headers=build_hf_headers(token=self._token),
                                     timeout=self._timeout)
        if response.status_code in (400, 404, 501):  # a repository (or Hub) without Xet
            raise XetUnavailable(f"no Xet write token for {self.repo_id} (HTTP {response.status_code})")
        hf_raise_for_status(response)
        answer = response.json()
        try:
            connection = str(answer["casUrl"]), str(answer["accessToken"]), int(answer["exp"])
        except (KeyError, TypeError, ValueError):
            raise XetUnavailable(f"the Xet write token answer for {self.repo_id} lacks casUrl/accessToken/exp") from None
        self._cas_origins.add(origin(connection[0]))  # (its own Hub named it)
        return connection


class SharesXetToken:
    """What a target with Xet content (a repository, a bucket) tells a multi-node job of its write token."""

    _xet: XetContent | None = None

    @property
    def xet_tokens(self) -> int:
        """Xet write tokens this target asked the Hub for (``status``)."""
        xet = self._xet  # (once: an upload may drop it meanwhile)
        return xet.fetched if xet is not None else 0

    def xet_write_token(self, fresh_for: float) -> Connection | None:
        """This process's own Xet write token for this target, good for ``fresh_for`` seconds more (what a
        job's leader shares); ``None`` without Xet (or not prepared yet). Raises what the Hub's answer
        raises (:class:`XetUnavailable`: no Xet here)."""
        xet = self._xet
        return xet.own(fresh_for) if xet is not None else None

    def trusts_cas(self, cas_url: str) -> bool:
        """Whether a shared token for ``cas_url`` may be used here (:meth:`XetContent.trusts`); ``False`` without Xet
        (or not prepared yet)."""
        xet = self._xet
        return xet is not None and xet.trusts(cas_url)
