"""The test Hub's shared state: the locks, the stored objects, the counters, and the lookups every protocol uses.

:class:`HubState` is the base of every route mixin (``repos``, ``commits``, ``lfs``, ``xet``,
``buckets``, and the test's controls and inspection): one object owns what the Hub stores
(:mod:`.storage`), so a handler in any module sees the same Hub. Apart from :mod:`.storage` because
that module holds plain data; this one holds who may touch it, and how.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
import threading
import time
from typing import Any, NoReturn

from .faults import Fault
from .httpd import HubError
from .limits import Quotas
from .storage import GITATTRIBUTES, URL_PREFIX, Bucket, CasStore, Commit, FileEntry, Repo, XetFile


def empty_stats() -> dict[str, Any]:
    return {
        "commits": 0,
        "commits_per_repo": {},
        "squashes": 0,
        "bytes_received": 0,
        "lfs_bytes_received": 0,
        "lfs_uploads": 0,
        "xorb_bytes_received": 0,
        "xorbs_received": 0,
        "xet_chunks": 0,
        "xet_files": 0,
        "shards_received": 0,
        "xet_bytes_served": 0,
        "bucket_writes": 0,
        "bucket_ops": 0,
        "connections": 0,
        "requests": {},
        "faults_triggered": {},
        "limits_hit": {},
    }


class HubState:
    """Stored objects, locks and counters, shared by every protocol module's handlers.

    Lock order: ``_lock`` (repositories, buckets, CAS, pending uploads) may be held while taking
    ``_meta_lock`` (stats, faults, down flag, connections), never the other way round.
    """

    username: str
    tokens: set[str] | None
    read_only_tokens: set[str]
    _quotas: Quotas  # the Hub limits the server enforces, and their counters

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._buckets: dict[str, Bucket] = {}
        self._cas = CasStore()
        self._uploads: dict[str, tuple[tuple[str, str], str, int]] = {}  # LFS upload id -> (repo key, sha256, size)
        self._oid_counter = 0

        self._meta_lock = threading.Lock()
        self._stats = empty_stats()
        self._faults: list[Fault] = []
        self._down = False

    # -- counters -------------------------------------------------------------------------------

    def _bump(self, key: str, amount: int = 1, sub: str | None = None) -> None:
        with self._meta_lock:
            if sub is None:
                self._stats[key] += amount
            else:
                self._stats[key][sub] = self._stats[key].get(sub, 0) + amount

    def _refuse(self, limit: str, error: HubError) -> NoReturn:
        """Answer ``error`` for a request over one of the Hub's limits, counted in ``stats["limits_hit"]``."""
        self._bump("limits_hit", sub=limit)
        raise error

    def _stats_copy(self) -> dict[str, Any]:
        with self._meta_lock:
            return copy.deepcopy(self._stats)

    # -- lookups used by several protocols ------------------------------------------------------

    def _repo_by(self, repo_type: str | None, repo_id: str | None) -> Repo:
        repo = self._repos.get((repo_type or "", repo_id or ""))
        if repo is None:
            raise HubError(404, "Repository not found", error_code="RepoNotFound")
        return repo

    def _bucket_by(self, bucket_id: str | None) -> Bucket:
        bucket = self._buckets.get(bucket_id or "")
        if bucket is None:
            raise HubError(404, "Bucket not found", error_code="RepoNotFound")
        return bucket

    # -- Xet content, by the repository or bucket it was uploaded for ---------------------------

    def _grant_xet_files(self, cas_token: str | None, file_hashes: list[str]) -> None:
        """Record that a shard uploaded with ``cas_token`` registered ``file_hashes`` for the token's scope.

        Why: the Hub lets a commit (or a bucket batch) name only content uploaded *to that
        repository or bucket*: knowing a hash is no right to another repository's file, and the
        client copies across repositories through a server-side duplicate call first. The CAS
        itself stays global (dedup across repositories is real), only what may be named is scoped.
        """
        entry = self._cas.tokens.get(cas_token or "")
        if entry is not None and file_hashes:
            self._cas.scopes.setdefault(entry.scope, set()).update(file_hashes)

    def _xet_file_in(self, scope: str, xet_hash: str) -> XetFile | None:
        """The Xet file ``xet_hash`` if it was uploaded for ``scope``, else None."""
        if xet_hash in self._cas.scopes.get(scope, ()):
            return self._cas.files.get(xet_hash)
        return None

    def _xet_file_by_sha256(self, scope: str, sha256: str) -> XetFile | None:
        """The Xet file with content ``sha256`` uploaded for ``scope``, else None."""
        found = self._xet_file_in(scope, self._cas.by_sha256.get(sha256, ""))
        if found is None:  # the same content registered under another file hash (not seen with hf_xet)
            hashes = self._cas.scopes.get(scope, ())
            found = next((self._cas.files[h] for h in hashes if self._cas.files[h].sha256 == sha256), None)
        return found

    def _forget_scope(self, scope: str) -> None:
        """A deleted repository or bucket takes its uploads along: one re-created under its name starts empty."""
        self._cas.scopes.pop(scope, None)

    @staticmethod
    def _commit_at(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return commit

    def _new_oid(self, *parts: str) -> str:
        self._oid_counter += 1
        text = "\n".join((*parts, str(time.time()), str(self._oid_counter), secrets.token_hex(4)))
        return hashlib.sha1(text.encode()).hexdigest()

    def _new_repo(self, repo_type: str, repo_id: str, private: bool, sdk: str | None) -> Repo:
        now = time.time()
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now, sdk=sdk)
        tree = {".gitattributes": FileEntry.regular(GITATTRIBUTES)}
        oid = self._new_oid("initial", repo_type, repo_id)
        repo.commits[oid] = Commit(oid, None, tree, "initial commit", "", now, added=[".gitattributes"])
        repo.branches["main"] = oid
        self._repos[(repo_type, repo_id)] = repo
        return repo

    @staticmethod
    def _repo_url(base: str, repo_type: str, repo_id: str) -> str:
        return f"{base}/{URL_PREFIX[repo_type]}{repo_id}"
