"""What the test Hub stores: repositories, commits, files, buckets and Xet CAS objects, as plain data.

Everything lives in memory. The one object that holds them, with its locks and counters, is
:class:`~.hub_state.HubState`.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

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
