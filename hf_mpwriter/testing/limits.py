"""The Hub's limits, enforced by the test Hub: entries per folder, the API request window, the commit rate.

Why: a design that overspends the Hub's budgets must fail against the test Hub, in a test or a
benchmark, not on huggingface.co at hour three of a training run. What the Hub documents (hub-docs
"Repository limitations and recommendations" and "Rate limits"; they change, re-read them) and how
the test Hub answers:

* **Entries per folder**: at most 10,000 (files and sub-folders: git tree entries), a hard limit. A
  commit that would take a folder over it gets 400 with the Hub's words (:func:`too_many_entries`, as
  users quote them in huggingface/datasets#7956), which huggingface_hub raises as ``BadRequestError``
  ("Bad request for commit endpoint"); nothing is applied. Storage Buckets have no published limit;
  the test Hub applies the repositories' one to each ``addFile``/``copyFile`` of a batch (that
  operation fails, the others apply: batches are per file), so a layout that passes here is one the
  Hub's repositories would take too.
* **API requests**: per user, in fixed 5-minute windows (500 anonymous per IP, 1,000 free, 2,500
  PRO, 3,000 Team, 6,000 Enterprise, 10,000 Enterprise Plus). Every Hub API answer carries
  ``RateLimit: "api";r=<remaining>;t=<seconds to reset>`` and ``RateLimit-Policy: "fixed
  window";"api";q=<quota>;w=<window seconds>``; over the budget, 429 with ``r=0`` and ``Retry-After``.
  huggingface_hub (1.x and later: ``utils.parse_ratelimit_headers``) reads them, names the limit in its
  error and waits ``t`` + 1 s where it retries. The test Hub has one user (every token is its), so it
  keeps one budget; anonymous requests share it. Which requests count: :func:`is_api_route`.
* **Commits**: about 128 per hour per repository, a quota separate from the API window (a commit 429
  can come with API budget left): 429 "rate limit for repository commits (128 per hour)". The test
  Hub counts the commits applied through ``/commit`` in a sliding window per repository.
* **Files per commit**: the Hub recommends 50-100 and gives a commit 60 s; it publishes no count
  limit, so over :attr:`HubLimits.files_per_commit` (off by default) the test Hub answers 400 with a
  message of its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

from .httpd import HubError

#: Routes that move content to or from storage (Xet CAS, legacy LFS PUTs, hf_xet telemetry): not Hub API requests.
STORAGE_ROUTES = frozenset(
    {
        "xorb_upload",
        "shard_upload",
        "chunk_query",
        "reconstruction",
        "xorb_download",
        "xet_telemetry",
        "cas_unsupported",
        "lfs_upload",
    }
)
#: Downloads through a ``/resolve/`` URL: the Hub's "Resolvers" bucket, with its own (highest) limits.
RESOLVER_ROUTES = frozenset({"resolve", "bucket_resolve"})


def is_api_route(route: str) -> bool:
    """Whether a request on ``route`` (a test Hub route name) spends the Hub's API budget.

    The one definition for the server's window and for counting requests in tests and benchmarks
    (``scripts/bench_requests.py``'s ``api_requests``): the Hub's "Hub APIs" bucket, i.e. everything
    but storage transfers and resolvers.
    """
    return route not in STORAGE_ROUTES and route not in RESOLVER_ROUTES


@dataclass(frozen=True)
class HubLimits:
    """Which of the Hub's limits a test Hub enforces (``HubServer(limits=...)``).

    Entries per folder is on by default, as the Hub always enforces it. The rates are off by default:
    tests and benchmarks compress hours into seconds, so the Hub's budgets would refuse what a real
    run spreads over hours (or, scaled down, would need the scenario's own numbers). A test or
    benchmark that checks a design's spending turns them on: :meth:`hub_free` gives the Hub's, or set
    small ones with short windows.

    Args:
        entries_per_folder: most files and sub-folders one folder may hold (None: no limit).
        api_requests_per_window: Hub API requests (:func:`is_api_route`) per window, for the server's
            one user (None: no limit).
        window_s: the API window, in seconds (fixed windows; the first request starts one).
        commits_per_hour: commits per repository per ``commit_window_s`` (None: no limit).
        commit_window_s: the commit window, in seconds (an hour; shorter to compress time).
        files_per_commit: most file operations in one commit (None: no limit).
    """

    entries_per_folder: int | None = 10_000
    api_requests_per_window: int | None = None
    window_s: float = 300.0
    commits_per_hour: int | None = None
    commit_window_s: float = 3600.0
    files_per_commit: int | None = None

    def __post_init__(self) -> None:
        for name in ("entries_per_folder", "api_requests_per_window", "commits_per_hour", "files_per_commit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"HubLimits.{name} must be a whole number >= 1 or None, not {value!r}")
        for name in ("window_s", "commit_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HubLimits.{name} must be > 0 seconds, not {getattr(self, name)!r}")

    @classmethod
    def hub_free(cls) -> HubLimits:
        """The Hub's limits for a free account: 1,000 API requests per 5 minutes, 128 commits per hour."""
        return cls(api_requests_per_window=1000, window_s=300.0, commits_per_hour=128)

    @classmethod
    def unlimited(cls) -> HubLimits:
        """No limit at all (e.g. a benchmark of a layout the Hub would refuse, on purpose)."""
        return cls(entries_per_folder=None)


# -- entries per folder ------------------------------------------------------------------------------


def folders_holding(paths: Iterable[str]) -> set[str]:
    """Every folder that holds one of ``paths`` as an entry, the root (``""``) included: ``a/b/c`` ->
    ``""`` (entry ``a``), ``a`` (entry ``b``), ``a/b`` (entry ``c``)."""
    folders: set[str] = set()
    for path in paths:
        parts = path.split("/")
        folders.update("/".join(parts[:i]) for i in range(len(parts)))
    return folders


class FolderEntries:
    """The entries (files and sub-folders) of chosen folders of a file tree, kept as files come and go.

    Why: the limit is checked on every commit and on each operation of a bucket batch; counting only
    the folders a write touches, in one pass, keeps that linear in the tree's size.
    """

    def __init__(self, paths: Iterable[str], folders: Iterable[str]) -> None:
        self._children: dict[str, Counter[str]] = {folder: Counter() for folder in folders}
        for path in paths:
            self.add(path)

    def _entries(self, path: str) -> Iterable[tuple[str, str]]:
        parts = path.split("/")
        for i in range(len(parts)):
            folder = "/".join(parts[:i])
            if folder in self._children:
                yield folder, parts[i]

    def add(self, path: str) -> None:
        for folder, child in self._entries(path):
            self._children[folder][child] += 1

    def remove(self, path: str) -> None:
        for folder, child in self._entries(path):
            counts = self._children[folder]
            counts[child] -= 1
            if counts[child] <= 0:
                del counts[child]

    def crowded(self, limit: int) -> list[str]:
        """The folders holding more than ``limit`` entries."""
        return sorted(folder for folder, children in self._children.items() if len(children) > limit)

    def would_crowd(self, path: str, limit: int) -> list[str]:
        """The folders that adding ``path`` would take over ``limit`` entries."""
        return sorted(
            folder
            for folder, child in self._entries(path)
            if child not in self._children[folder] and len(self._children[folder]) >= limit
        )


def _named(folders: Iterable[str]) -> str:
    return " ".join(f"/{folder}/" if folder else "/" for folder in folders)


def too_many_entries(limit: int, folders: Iterable[str], branch: str) -> str:
    """The Hub's refusal of a commit to ``branch`` that takes ``folders`` over ``limit`` entries
    (its words, as users quote them in huggingface/datasets#7956)."""
    return (
        "Your push was rejected because it contains too many files per directory. Each directory in your "
        f"git repo can only contain up to {limit} files. Offending reference: refs/heads/{branch} "
        f"Offending directories: {_named(folders)}"
    )


def too_many_bucket_entries(limit: int, folders: Iterable[str]) -> str:
    """Why a bucket addition fails for the entries limit (the test Hub's words: the Hub has none for buckets)."""
    return (
        f"Too many entries per directory: each directory can only contain up to {limit} files and "
        f"folders (HubLimits.entries_per_folder, the Hub's repository limit). Offending directories: {_named(folders)}"
    )


# -- rates ---------------------------------------------------------------------------------------------


def _whole_seconds(seconds: float) -> int:
    """Seconds as the headers carry them (whole, rounded up: waiting that long is always enough)."""
    return max(0, math.ceil(seconds))


class Quotas:
    """The counters behind a :class:`HubLimits`: the current API window, each repository's recent commits.

    Thread-safe (a lock of its own, taken under no other). ``clock`` is monotonic seconds.
    """

    def __init__(self, limits: HubLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._window_end = 0.0
        self._used = 0
        self._commits: dict[str, deque[float]] = {}

    def api_request(self) -> tuple[bool, dict[str, str]]:
        """Spend one Hub API request: whether it may go on, and the rate-limit headers of its answer
        (none when the window is off). A refused request spends nothing more than its place in the window."""
        quota = self.limits.api_requests_per_window
        if quota is None:
            return True, {}
        with self._lock:
            now = self._clock()
            if now >= self._window_end:  # fixed windows: the first request after one ended starts the next
                self._window_end, self._used = now + self.limits.window_s, 0
            self._used += 1
            allowed = self._used <= quota
            reset = _whole_seconds(self._window_end - now)
            remaining = max(quota - self._used, 0)
        headers = {
            "RateLimit": f'"api";r={remaining};t={reset}',
            "RateLimit-Policy": f'"fixed window";"api";q={quota};w={_whole_seconds(self.limits.window_s)}',
        }
        if not allowed:
            headers["Retry-After"] = str(reset)
        return allowed, headers

    def api_refusal(self, headers: dict[str, str]) -> HubError:
        """The 429 of a request over the API window."""
        quota, window = self.limits.api_requests_per_window, self.limits.window_s
        message = (
            f"You have exceeded the rate limit for Hub API requests ({quota} per {window:g} s); "
            f"retry after {headers.get('Retry-After')} s"
        )
        return HubError(429, message, headers=headers)

    def commit_refusal(self, repo_key: str) -> HubError | None:
        """The Hub's 429 if ``repo_key`` (``"{type}:{id}"``) has used its commits of the window, else None.

        Call it and :meth:`commit_applied` under one lock, so that racing commits cannot both pass."""
        quota = self.limits.commits_per_hour
        if quota is None:
            return None
        with self._lock:
            recent = self._recent_commits(repo_key)
            if len(recent) < quota:
                return None
            retry = _whole_seconds(recent[0] + self.limits.commit_window_s - self._clock())
        window = self.limits.commit_window_s
        per = "hour" if window == 3600 else f"{window:g} s"
        message = f"You have exceeded the rate limit for repository commits ({quota} per {per}); retry after {retry} s"
        return HubError(429, message, headers={"Retry-After": str(retry)})

    def commit_applied(self, repo_key: str) -> None:
        if self.limits.commits_per_hour is None:
            return
        with self._lock:
            self._recent_commits(repo_key).append(self._clock())

    def _recent_commits(self, repo_key: str) -> deque[float]:
        recent = self._commits.setdefault(repo_key, deque())
        start = self._clock() - self.limits.commit_window_s
        while recent and recent[0] <= start:
            recent.popleft()
        return recent
