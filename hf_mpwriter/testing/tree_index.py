"""One commit's tree arranged for listing, built in one pass, and the cursors of the paginated tree listing.

Why: the Hub lists a folder of thousands of entries page by page (``GET /api/{T}/{id}/tree/{rev}/{path}``:
at most 1,000 entries a page, 50 with ``expand``, and a ``Link: <...?cursor=...>; rel="next"`` header to the
next page, which huggingface_hub's ``paginate`` follows). TensorBoard reading ``hf://`` lists every run folder,
so a test Hub that listed by scanning the whole tree for each request (and hashed every directory over the
whole tree again) took time quadratic in a job's runs. A commit's tree never changes once stored, so its
index is built once (children per folder, every directory's oid) and each page is a slice of it.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

from .httpd import HubError
from .storage import Commit

#: Entries per page of a tree listing, as the Hub serves them (huggingface_hub's ``list_repo_tree``).
TREE_PAGE = 1000
#: Entries per page when the listing is expanded (each entry's last commit: costlier for the Hub).
TREE_PAGE_EXPANDED = 50
#: Commits whose index is kept (the heads being listed; a listing's pages all read one commit).
KEPT_INDEXES = 8


@dataclass(frozen=True)
class TreeIndex:
    """A commit's directories and files as listings read them: each folder's children in order, every
    folder's oid, and every directory and file of the tree in order (for recursive listings)."""

    child_dirs: dict[str, list[str]]
    child_files: dict[str, list[str]]
    dir_oids: dict[str, str]
    all_dirs: list[str]
    all_files: list[str]

    @classmethod
    def of(cls, commit: Commit) -> TreeIndex:
        """One pass over the tree in path order: each file hashed into each folder above it, so a
        folder's oid is what hashing its files' lines (``path\\0oid``, in path order) gives."""
        hashers: dict[str, hashlib._Hash] = {}
        child_dirs: dict[str, list[str]] = {"": []}
        child_files: dict[str, list[str]] = {"": []}
        files = sorted(commit.tree)
        for path in files:
            line = f"{path}\0{commit.tree[path].oid}\n".encode()
            parent, cut = "", path.find("/")
            while cut != -1:
                folder = path[:cut]
                if folder not in hashers:
                    hashers[folder] = hashlib.sha1(b"tree\0")
                    child_dirs[parent].append(folder)
                    child_dirs[folder], child_files[folder] = [], []
                hashers[folder].update(line)
                parent, cut = folder, path.find("/", cut + 1)
            child_files[parent].append(path)
        for names in child_dirs.values():
            names.sort()  # a folder first seen through a later path can sort before an earlier one
        oids = {folder: hasher.hexdigest() for folder, hasher in hashers.items()}
        return cls(child_dirs, child_files, oids, sorted(oids), files)

    def listing(self, folder: str, recursive: bool) -> list[tuple[str, bool]]:
        """``(path, is_dir)`` of what ``folder`` (``""``: the root) holds, directories first, each in path
        order; with ``recursive``, everything under it."""
        if not recursive:
            return [(d, True) for d in self.child_dirs.get(folder, ())] + [(f, False) for f in self.child_files.get(folder, ())]
        prefix = folder + "/" if folder else ""
        return [(d, True) for d in _under(self.all_dirs, prefix)] + [(f, False) for f in _under(self.all_files, prefix)]


def _under(paths: list[str], prefix: str) -> list[str]:
    """The paths of sorted ``paths`` that start with ``prefix``: one contiguous slice."""
    if not prefix:
        return paths
    start = bisect.bisect_left(paths, prefix)
    end = bisect.bisect_left(paths, prefix[:-1] + chr(ord(prefix[-1]) + 1), start)
    return paths[start:end]


class TreeIndexes:
    """The indexes of the last :data:`KEPT_INDEXES` commits listed (callers hold the server's lock)."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, TreeIndex] = OrderedDict()

    def of(self, commit: Commit) -> TreeIndex:
        index = self._kept.get(commit.oid)
        if index is None:
            index = self._kept[commit.oid] = TreeIndex.of(commit)
            while len(self._kept) > KEPT_INDEXES:
                self._kept.popitem(last=False)
        self._kept.move_to_end(commit.oid)
        return index


def make_cursor(commit_oid: str, offset: int) -> str:
    """The ``cursor`` of the next page: the commit the listing reads (its pages stay one listing while the
    branch moves on) and where the page starts. Opaque to the client, as the Hub's are."""
    raw = json.dumps([commit_oid, offset]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(cursor: str) -> tuple[str, int]:
    """``(commit oid, offset)`` of a :func:`make_cursor` value; 400 for anything else."""
    try:
        oid, offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(oid, str) and isinstance(offset, int) and offset >= 0:
            return oid, offset
    except (ValueError, TypeError):
        pass
    raise HubError(400, f"Invalid cursor {cursor!r}")
