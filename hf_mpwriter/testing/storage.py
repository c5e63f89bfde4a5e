"""What the test Hub stores: repositories, commits, files, buckets, Xet CAS objects, and the shared state.

Everything lives in memory. :class:`HubState` is the base of every protocol module's route mixin
(``repos``, ``lfs``, ``xet``, ``buckets``): it owns the locks, the stored objects and the counters,
so a handler in any module sees the same Hub.
"""

from __future__ import annotations

import codecs
import copy
import fnmatch
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NoReturn

from .faults import Fault
from .httpd import HubError
from .limits import Quotas

REPO_TYPES = ("model", "dataset", "space")
PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

#: Above this size a file is always stored as LFS (the real Hub rejects larger regular files).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

#: Patterns of the Hub's default ``.gitattributes``: matching files are stored as LFS.
DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
)  # fmt: skip
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()

DEFAULT_USER = "test-user"


def git_blob_oid(data: bytes) -> str:
    """Git blob sha1 of ``data``: what the Hub reports (and the client compares) for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def iso(ts: float) -> str:
    """Hub-style UTC timestamp with milliseconds: ``2026-11-22T10:00:00.000Z``."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    """Roughly the Hub's rule: big, binary-looking or matched by the default .gitattributes."""
    if size == 0:
        return False
    if size > LFS_SIZE_THRESHOLD:
        return True
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatchcase(name, p) for p in DEFAULT_LFS_PATTERNS):
        return True
    if b"\0" in sample:
        return True
    try:  # incremental: a sample may end in the middle of a multi-byte character
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return True
    return False


def dirs_of(paths: Any) -> set[str]:
    """Every directory that holds one of ``paths`` (``a/b/c.txt`` -> ``a``, ``a/b``)."""
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


# --------------------------------------------------------------------------------------------------
# Git repositories
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit's tree. Immutable, so trees can share entries between commits."""

    data: bytes
    oid: str  # git blob sha1 (of the pointer file for LFS files), like the Hub's tree "oid"
    lfs_sha256: str | None = None  # set for LFS files (legacy LFS or Xet)
    pointer_size: int = 0
    xet_hash: str | None = None  # set for files whose content the client uploaded through Xet

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """Download ETag: sha256 for LFS files, git blob oid for regular files (as on the Hub)."""
        return self.lfs_sha256 or self.oid

    @property
    def remote_oid(self) -> str:
        """The oid ``preupload`` returns, compared by the client with its local oid to drop no-ops."""
        return self.lfs_sha256 or self.oid

    @classmethod
    def regular(cls, data: bytes) -> FileEntry:
        return cls(data=data, oid=git_blob_oid(data))

    @classmethod
    def lfs(cls, data: bytes, sha256: str, xet_hash: str | None = None) -> FileEntry:
        pointer = lfs_pointer(sha256, len(data))
        return cls(data=data, oid=git_blob_oid(pointer), lfs_sha256=sha256, pointer_size=len(pointer), xet_hash=xet_hash)


@dataclass
class Commit:
    oid: str
    parent: str | None
    tree: dict[str, FileEntry]
    summary: str
    description: str
    date: float
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "oid": self.oid,
            "id": self.oid,  # the name list_repo_commits uses
            "parent": self.parent,
            "summary": self.summary,
            "description": self.description,
            "date": iso(self.date),
            "added": list(self.added),
            "deleted": list(self.deleted),
            "files_changed": sorted(set(self.added) | set(self.deleted)),
        }


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: float
    sdk: str | None = None
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content (legacy LFS uploads)

    def resolve(self, revision: str) -> Commit | None:
        """Branch name, full commit oid or an unambiguous oid prefix (>= 7 hex) -> commit."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        rev = revision.lower()
        if rev in self.commits:
            return self.commits[rev]
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev):
            found = [c for oid, c in self.commits.items() if oid.startswith(rev)]
            if len(found) == 1:
                return found[0]
        return None

    def history(self, head: str) -> list[Commit]:
        out = []
        oid: str | None = head
        while oid is not None:
            commit = self.commits[oid]
            out.append(commit)
            oid = commit.parent
        return out


# --------------------------------------------------------------------------------------------------
# Storage Buckets: per-file, no history
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketFile:
    xet_hash: str
    size: int
    mtime: float  # seconds since the epoch, as the client reported it (milliseconds on the wire)
    uploaded_at: float
    content_type: str | None = None


@dataclass
class Bucket:
    bucket_id: str
    private: bool
    created_at: float
    files: dict[str, BucketFile] = field(default_factory=dict)
    #: Every batch that applied, as the test sees it (a bucket keeps no history): ``{"time", "paths"}``.
    batches: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Xet CAS: xorbs (compressed chunk containers) and file reconstructions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Xorb:
    """An uploaded xorb: its bytes as received, and each chunk decompressed."""

    hash: str
    serialized: bytes
    chunks: tuple[bytes, ...]
    offsets: tuple[int, ...]  # byte offset of each chunk header in ``serialized``, then the end of the last chunk

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """Inclusive byte range of ``serialized`` holding chunks ``[start, end)``."""
        return self.offsets[start], self.offsets[end] - 1


@dataclass(frozen=True)
class XetTerm:
    """Chunks ``[start, end)`` of xorb ``xorb``: ``unpacked`` bytes of a file."""

    xorb: str
    start: int
    end: int
    unpacked: int


@dataclass(frozen=True)
class XetFile:
    """A file the CAS can reconstruct (registered by a shard upload); ``data`` is verified content."""

    hash: str
    terms: tuple[XetTerm, ...]
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def cas_scope(repo_type: str | None, repo_id: str | None) -> str:
    """The scope a Xet token, and the files uploaded with it, belong to: ``"model:ns/name"``, ``"bucket:ns/name"``."""
    return f"{repo_type}:{repo_id}"


@dataclass(frozen=True)
class CasToken:
    """A short-lived CAS access token handed out by a ``xet-{read,write}-token`` endpoint."""

    token: str
    write: bool
    expires: float
    scope: str  # "model:ns/name", "bucket:ns/name"...


@dataclass
class CasStore:
    xorbs: dict[str, Xorb] = field(default_factory=dict)
    files: dict[str, XetFile] = field(default_factory=dict)  # xet file hash -> file
    by_sha256: dict[str, str] = field(default_factory=dict)  # sha256 -> xet file hash
    # scope ("model:ns/name", "bucket:ns/name"...) -> xet file hashes that shards registered for it
    scopes: dict[str, set[str]] = field(default_factory=dict)
    chunks: dict[str, tuple[str, int]] = field(default_factory=dict)  # chunk hash -> (xorb, index), from shards
    xorb_chunk_hashes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # xorb -> its chunk hashes
    tokens: dict[str, CasToken] = field(default_factory=dict)
    url_secret: str = field(default_factory=lambda: secrets.token_hex(16))  # signs xorb download URLs
    # In the casUrl handed out: hf_xet keeps a local shard cache per CAS URL and deduplicates new uploads
    # against it, so a new server on a port an earlier one used (same URL) would be sent references
    # to xorbs it never received. Each store is its own CAS, as each real Hub has its own.
    instance: str = field(default_factory=lambda: secrets.token_hex(4))


# --------------------------------------------------------------------------------------------------
# Shared state
# --------------------------------------------------------------------------------------------------


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
