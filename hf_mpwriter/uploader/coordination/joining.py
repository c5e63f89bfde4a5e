"""A node's entry into its job's store, and what the nodes share there at the start.

Why apart from the commits (:mod:`.member`): these are the few calls a node makes once (again after a store
failure or a move), not at every interval: its uploader's number, the keys the leader reads in one batch,
the folder it logs to, the target node 0 prepared, and the job's Xet write token the leader shares.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ...targets.xet_content import REFRESH_BEFORE_S, Connection
from .protocol import WITHDRAWN, Malformed, Skipped, parse_prepared, parse_xet_token
from .store import MAX_VALUE_BYTES, JobStore, StoreError

logger = logging.getLogger("hf_mpwriter.uploader")


def announce(store: JobStore, node: int, incarnation: int) -> int:
    """Say in the store that this node's uploader ``incarnation`` (0: none yet) is its current one, and make
    its keys; the incarnation (one more than any uploader of this node before, where it was 0). Never over a
    newer uploader's: one that was stopped and woke up again must not make its successor's offers look stale.
    :class:`StoreError` if the store fails."""
    key = f"incarnation/{node}"
    if incarnation == 0:  # the store counts
        incarnation = count_up(store, key)
    elif (current := store.add(key, 0)) < incarnation:  # a store that came back empty (a new host process)
        store.compare_set(key, str(current).encode(), str(incarnation).encode())
    # The node's keys exist from now on (created if missing, else left as they are): the leader reads every
    # member's keys in one batch, and a batch waits for a missing key.
    store.compare_set(f"offer/{node}", b"", WITHDRAWN)
    store.compare_set(f"answer/{node}", b"", b"{}")
    store.compare_set(f"view/{node}", b"", b"{}")  # its job run points (:mod:`..jobrun.exchange`)
    store.append("members", f"{node},".encode())
    return incarnation


def count_up(store: JobStore, key: str) -> int:
    """The counter ``key`` plus one, set with ``compare_set`` (a call abandoned that lands late changes
    nothing: an ``add`` would count twice, and every offer of ours would look older than the count)."""
    while True:
        current = store.add(key, 0)
        if store.compare_set(key, str(current).encode(), str(current + 1).encode()):
            return current + 1


def other_folders(job: JobStore, node: int, key_hash: str, folder: str) -> str | None:
    """Where this job's other nodes log, where none of them logs with this node (node-local logdirs named
    differently: ``logs-node0``, ``logs-node1``): each folder would get a leader of its own and the job's
    runs would be split. ``job``: the job's own keys (not one target's), so that each node sees the others'
    (the one that starts last says it). ``None``: every node logs where this one does, as far as is known."""
    job.append("targets", f"{node}:{key_hash},".encode())
    job.set(f"target/{key_hash}", folder.encode()[:MAX_VALUE_BYTES])
    listed = (job.get("targets") or b"").decode()
    nodes_of: dict[str, set[int]] = {}
    for entry in filter(None, listed.split(",")):
        other, _, key = entry.partition(":")
        nodes_of.setdefault(key, set()).add(int(other))
    mine = nodes_of.get(key_hash, set())
    apart = sorted(key for key, nodes in nodes_of.items() if key != key_hash and not nodes & mine)
    if not apart:
        return None
    return f"node(s) {sorted(nodes_of[apart[0]])} log to {(job.get(f'target/{apart[0]}') or b'?').decode()}"


def prepared_by_node_0(store: JobStore, wait: float, poll: float, malformed: Skipped) -> str | None:
    """The id node 0 resolved for the target, once it says it (a round trip every ``poll`` at most), or
    ``None`` after ``wait``, on a store failure, or where its value is malformed (counted)."""
    started = time.monotonic()
    while time.monotonic() < store.until(started, wait):
        try:
            resolved = store.get("prepared")
        except StoreError:
            return None
        if resolved:
            try:
                return parse_prepared(resolved)
            except Malformed as exc:  # (prepared by this node, then: the Hub says what it is)
                malformed.count("prepared", exc)
                return None
        time.sleep(poll)
    return None


class SharedXetToken:
    """The Xet write token the job's leader shares (``xet``), as a node's uploads take it: read from the store
    when the one held nears its expiry, so that the node asks the Hub for no token of its own. At the
    uploader's first upload it is waited for (the leader shares it at its first round)."""

    def __init__(self, store: JobStore, usable: Callable[[], bool], first_wait: float, poll: float,
                 malformed: Skipped) -> None:
        """``usable``: whether the store may be asked now (the node's, :meth:`~.member.JobTarget.store_usable`)."""
        self.store, self.usable, self.first_wait, self.poll, self.malformed = store, usable, first_wait, poll, malformed
        self._held: Connection | None = None
        self._waited = False

    def __call__(self) -> Connection | None:
        """The token, or ``None`` (the node fetches its own) where the store has none, cannot be asked now,
        or holds a malformed one."""
        if self._held is not None and self._held[2] - 2 * REFRESH_BEFORE_S > time.time():
            return self._held
        raw = self._read(self.first_wait if self._held is None and not self._waited else 0.0)
        self._waited = True
        if not raw:
            return None
        try:
            self._held = parse_xet_token(raw)
        except Malformed as exc:
            self.malformed.count("xet", exc)
            return None
        return self._held

    def _read(self, wait: float) -> bytes | None:
        started = time.monotonic()
        while self.usable():
            try:
                raw = self.store.get("xet")
            except StoreError:  # (the token is an extra: the offer, next, finds out what the store does)
                return None
            if raw or time.monotonic() + self.poll > self.store.until(started, wait):
                return raw
            time.sleep(self.poll)
        return None
