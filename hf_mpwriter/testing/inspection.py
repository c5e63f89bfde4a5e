"""What a test reads of the test Hub's stored state, and the setup shortcuts that skip a client round trip.

A mixin of :class:`~.hub_server.HubServer`: files, commits and heads of repositories, files and
batches of buckets, read under the server's lock; ``create_repo`` and ``create_bucket`` for test
setup. Apart from the protocol modules because no request reaches these: they are the test's view.
"""

from __future__ import annotations

import time
from typing import Any

from .hub_state import HubState
from .storage import Bucket, Commit


class Inspection(HubState):
    """Reads of the stored Hub for tests (``KeyError`` for what does not exist), and direct creation."""

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def _get_commit(self, repo_id: str, repo_type: str, revision: str) -> Commit:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        commit = repo.resolve(revision)
        if commit is None:
            raise KeyError(f"no revision {revision!r} in {repo_type} repo {repo_id!r}")
        return commit

    def list_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[str]:
        """Sorted file paths at ``revision`` (including the ``.gitattributes`` of the initial commit)."""
        with self._lock:
            return sorted(self._get_commit(repo_id, repo_type, revision).tree)

    def read_file(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        with self._lock:
            tree = self._get_commit(repo_id, repo_type, revision).tree
            if path not in tree:
                raise KeyError(f"no file {path!r} at {revision!r} in {repo_type} repo {repo_id!r}")
            return tree[path].data

    def file_storage(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> str:
        """How a file's content reached the Hub: ``"regular"`` (in the commit), ``"lfs"`` or ``"xet"``."""
        with self._lock:
            tree = self._get_commit(repo_id, repo_type, revision).tree
            if path not in tree:
                raise KeyError(f"no file {path!r} at {revision!r} in {repo_type} repo {repo_id!r}")
            entry = tree[path]
            return "xet" if entry.xet_hash else "lfs" if entry.lfs_sha256 else "regular"

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[dict[str, Any]]:
        """History of ``branch``, newest first (like ``list_repo_commits``), initial commit included."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r}")
            head = self._get_commit(repo_id, repo_type, branch).oid
            return [c.as_dict() for c in repo.history(head)]

    def head(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> str:
        """Commit oid at the tip of ``branch``."""
        with self._lock:
            return self._get_commit(repo_id, repo_type, branch).oid

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> None:
        """Create a repo directly (test setup without a client round trip); no-op if it exists."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self._new_repo(repo_type, repo_id, private=private, sdk=None)

    def bucket_exists(self, bucket_id: str) -> bool:
        with self._lock:
            return bucket_id in self._buckets

    def create_bucket(self, bucket_id: str, private: bool = False) -> None:
        """Create a bucket directly (test setup without a client round trip); no-op if it exists."""
        with self._lock:
            self._buckets.setdefault(bucket_id, Bucket(bucket_id, private, time.time()))

    def bucket_files(self, bucket_id: str) -> dict[str, bytes]:
        """Every file of a bucket: path -> content."""
        with self._lock:
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                raise KeyError(f"no bucket {bucket_id!r}")
            return {path: self._cas.files[f.xet_hash].data for path, f in sorted(bucket.files.items())}

    def bucket_batches(self, bucket_id: str) -> list[dict[str, Any]]:
        """Every batch that applied to a bucket, oldest first: ``{"time": wall time, "paths": files written,
        "sizes": {path: bytes}}`` (a bucket keeps no history; the test Hub does, for the tests)."""
        with self._lock:
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                raise KeyError(f"no bucket {bucket_id!r}")
            return [dict(batch) for batch in bucket.batches]

    def read_bucket_file(self, bucket_id: str, path: str) -> bytes:
        files = self.bucket_files(bucket_id)
        if path not in files:
            raise KeyError(f"no file {path!r} in bucket {bucket_id!r}")
        return files[path]
