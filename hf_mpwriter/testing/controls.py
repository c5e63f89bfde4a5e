"""What a test turns and reads on a running test Hub: injected faults, the down switch, the counters.

A mixin of :class:`~.hub_server.HubServer` (its public ``inject``, ``clear_faults``, ``set_down``,
``active_requests``, ``stats``, ``reset_stats``, ``commit_count``); the fault kinds themselves are
:mod:`.faults`, and where a taken fault acts on a request is ``HubServer.handle``. Apart from the server's
lifecycle and request path because these are the test's knobs, not the Hub's behaviour.
"""

from __future__ import annotations

from typing import Any

from .faults import Fault, new_fault
from .hub_state import HubState, empty_stats


class ServerControls(HubState):
    """Fault injection, availability and counters of a running server (the test's side of it)."""

    _active: int  # requests being handled right now: counted by HubServer.handle

    # -- faults and availability ---------------------------------------------------------------

    def inject(self, fault: str, *, route: str = "commit", times: int | None = 1, **params: Any) -> Fault:
        """Make the next ``times`` requests on ``route`` misbehave (``times=None``: until cleared).

        Faults on one route are consumed in injection order, one per matching request; ``route``
        is one of :data:`~.faults.FAULT_ROUTES` (``"any"`` matches every route). Kinds:

        * ``"status"``: answer ``status`` (default 500) with optional ``headers``, ``message``, ``body``;
        * ``"rate_limit"``: 429 with ``Retry-After`` and ``RateLimit`` headers (``retry_after=1``);
        * ``"lost_response"``: process the request (e.g. apply the commit), then close the connection
          without an answer;
        * ``"drop"``: close the connection without processing nor answering;
        * ``"latency"``: sleep ``seconds``, then serve normally;
        * ``"hold"`` (routes ``"commit"`` and ``"bucket_batch"``): receive the write, hold it
          ``seconds``, then apply it *even if the client has gone away* — a zombie write, as the
          real Hub does with a commit whose client was killed or timed out. A held commit checks its
          ``parentCommit`` against the branch head at the moment it applies: a stale parent means
          412 and nothing applied. Bucket batches have no parent and always apply late.

        Returns the :class:`Fault`: ``hits`` counts the requests it hit; for "latency" and "hold",
        ``done`` counts the delayed requests whose handling finished and ``outcomes`` their
        statuses (``[200]`` applied, ``[412]`` refused for a stale parent), so a test can poll for
        the late outcome instead of sleeping; ``release()`` ends the delay of a "latency" or "hold"
        fault at once (``seconds`` is then only a bound).
        """
        entry = new_fault(fault, route, times, params)
        with self._meta_lock:
            self._faults.append(entry)
        return entry

    def clear_faults(self) -> None:
        with self._meta_lock:
            self._faults.clear()

    def set_down(self, down: bool = True) -> None:
        """While down, every request gets 503 (the socket stays open, unlike :meth:`stop`)."""
        with self._meta_lock:
            self._down = down

    @property
    def active_requests(self) -> int:
        """Requests being handled right now, held or delayed ones included (0: the server is idle)."""
        with self._meta_lock:
            return self._active

    def _take_fault(self, route: str) -> Fault | None:
        with self._meta_lock:
            for entry in self._faults:
                if entry.matches(route):
                    if entry.remaining is not None:
                        entry.remaining -= 1
                    entry.hits += 1
                    self._stats["faults_triggered"][entry.kind] = self._stats["faults_triggered"].get(entry.kind, 0) + 1
                    return entry
        return None

    # -- statistics -----------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """Snapshot of the counters.

        ``commits``: commits applied through ``/commit``; ``commits_per_repo``: same, keyed
        ``"{repo_type}:{repo_id}"``; ``squashes``; ``bytes_received``: all request bodies;
        ``lfs_bytes_received`` and ``lfs_uploads``: legacy LFS PUTs; ``xorb_bytes_received``: xorb
        upload bodies as they came on the wire (duplicates included); ``xorbs_received``: new xorbs
        stored; ``xet_chunks``: chunks in those xorbs; ``shards_received``; ``xet_files``: files
        registered by shards; ``xet_bytes_served``: xorb bytes downloaded; ``bucket_writes``: bucket
        batches that applied at least one operation; ``bucket_ops``: operations applied;
        ``connections``: TCP connections accepted (keep-alive reuse keeps it low); ``requests``: by
        route name (Hub API requests: those whose route :func:`~.limits.is_api_route` names);
        ``faults_triggered``: by kind; ``limits_hit``: requests and operations refused by
        :attr:`limits`, by limit (``api_requests``, ``commits``, ``entries_per_folder``,
        ``files_per_commit``).
        """
        return self._stats_copy()

    def reset_stats(self) -> None:
        with self._meta_lock:
            self._stats = empty_stats()

    def commit_count(self, repo_id: str, repo_type: str = "model") -> int:
        """Commits applied through ``/commit`` to one repo since the last :meth:`reset_stats`."""
        with self._meta_lock:
            return self._stats["commits_per_repo"].get(f"{repo_type}:{repo_id}", 0)
