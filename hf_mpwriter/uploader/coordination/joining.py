"""A node's entry into its job's store: its uploader's number, its keys, the folder it logs to, the target node 0
prepared.

Apart from the commits (:mod:`.member`): these calls are made once (again after a store failure or a move), not at
every interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .protocol import (
    WITHDRAWN,
    Malformed,
    Skipped,
    counter_value,
    folder_value,
    member_entry,
    parse_folder,
    parse_prepared,
    parse_targets,
    target_entry,
)
from .store import CoordinationStore, StoreError

logger = logging.getLogger("hf_mpwriter.uploader")


def announce(store: CoordinationStore, node: int, incarnation: int, counted: bool) -> None:
    """Say in the store that this node's uploader ``incarnation`` (``counted``: just now by :func:`count_up`) is its
    current one, and make its keys. Never over a newer uploader's: one that was stopped and woke up again must not make
    its successor's offers look stale. :class:`StoreError` if the store fails."""
    key = f"incarnation/{node}"
    if not counted and (current := store.add(key, 0)) < incarnation:  # a store that came back empty (a new host)
        store.compare_set(key, counter_value(current), counter_value(incarnation))
    # Created if missing: the leader reads every member's keys in one batch, and a batch waits for a missing key.
    store.compare_set(f"offer/{node}", b"", WITHDRAWN)
    store.compare_set(f"answer/{node}", b"", b"{}")
    store.compare_set(f"view/{node}", b"", b"{}")  # its job run points (:mod:`..jobrun.exchange`)
    store.append("members", member_entry(node))


def count_up(store: CoordinationStore, key: str) -> int:
    """The counter ``key`` plus one, set with ``compare_set`` (a call abandoned that lands late changes
    nothing: an ``add`` would count twice, and every offer of ours would look older than the count)."""
    while True:
        current = store.add(key, 0)
        if store.compare_set(key, counter_value(current), counter_value(current + 1)):
            return current + 1


def other_folders(job: CoordinationStore, node: int, key_hash: str, folder: str) -> str | None:
    """Where this job's other nodes log, where none of them logs with this node (node-local logdirs named differently:
    each folder would get a leader and a run of its own); ``None``: every node logs where this one does, as far as is
    known. ``job``: the job's own keys, not one target's, so that each node sees the others' (the last to start says
    it)."""
    job.append("targets", target_entry(node, key_hash))
    job.set(f"target/{key_hash}", folder_value(folder))
    nodes_of = parse_targets(job.get("targets"))
    mine = nodes_of.get(key_hash, set())
    apart = sorted(key for key, nodes in nodes_of.items() if key != key_hash and not nodes & mine)
    if not apart:
        return None
    return f"node(s) {sorted(nodes_of[apart[0]])} log to {parse_folder(job.get(f'target/{apart[0]}'))}"


def prepared_by_node_0(store: CoordinationStore, wait: float, poll: float, malformed: Skipped, configured: str,
                       namespace: Callable[[], str | None]) -> str | None:
    """The id node 0 resolved for the target, once it says it (a round trip every ``poll`` at most), or
    ``None`` after ``wait``, on a store failure, or where its value is malformed or names another repository
    or bucket than ``configured`` (:func:`same_target`; counted)."""
    started = time.monotonic()
    while time.monotonic() < store.until(started, wait):
        try:
            resolved = store.get("prepared")
        except StoreError:
            return None
        if resolved:
            try:
                return same_target(parse_prepared(resolved), configured, namespace)
            except Malformed as exc:  # (prepared by this node, then: the Hub says what it is)
                malformed.count("prepared", exc)
                return None
        time.sleep(poll)
    return None


def same_target(prepared: str, configured: str, namespace: Callable[[], str | None]) -> str:
    """``prepared`` where it is the repository or bucket this node's configuration names: ``configured`` itself,
    or, for a name without namespace, that name in ``namespace()`` (the node's own token's, asked only then;
    ``None``: not known). Else :class:`Malformed`: a value from the store never chooses where a node writes."""
    if "/" in configured:
        if prepared == configured:
            return prepared
    else:
        owner, _, name = prepared.partition("/")
        if name == configured and owner == namespace():
            return prepared
    raise Malformed(f"prepared: {prepared!r} is not the configured {configured!r}")
