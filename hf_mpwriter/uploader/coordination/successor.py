"""The job's successor store: where its uploaders go on coordinating once the job's own store is gone.

Why: the job's store lives in the training job. When its host dies, each node commits its files itself: at a thousand
nodes on a repository, hours of the Hub's commit rate. So while the job's store lives, node 1's uploader serves a
small store of its own and publishes its address (``successor/1``), which the leader passes on in its answers. Its
host copies into it, every ``timing.successor_copy``, what a new leader takes up: the job run's word, and the count of
terms. A node that finds the job's store lost moves there once (:mod:`.moves`); where it does not answer, the node
commits itself. A drained host serves on while nodes that joined it have not left (:meth:`SuccessorHost.linger`). Only
the uploaders' coordination goes there, never the training's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .protocol import Malformed, Skipped, parse_counter, parse_members, parse_successor_value, successor_value
from .store import CoordinationStore, JobStore, StoreAddress, StoreError, raise_counter, serve

logger = logging.getLogger("hf_mpwriter.uploader")

#: Nodes that host a successor store: nodes 1 to this (node 0's host usually holds the job's store). One: two
#: stores have at most two leaders, which the budget's margin (twice the plan) holds.
SUCCESSORS = 1
#: What a new leader takes up, copied from the store in use into each successor's.
COPIED = ("view/held",)
#: The counter copied, raised to the store in use's: a new leader here draws a term above every earlier one.
COUNTED = "terms"


def successor_slot(node: int, nodes: int) -> int | None:
    """Which successor store ``node`` hosts (``successor/<slot>``), or ``None``."""
    return node if 1 <= node <= min(SUCCESSORS, nodes - 1) else None


class SuccessorHost:
    """A store this uploader serves for its job, kept a copy of what a new leader takes up, and published."""

    def __init__(self, store: CoordinationStore, slot: int, every: float, poll: float) -> None:
        """``store``: the node's view of the job's store (it follows the node's moves); ``every``, ``poll``:
        :meth:`tick`'s."""
        self.store, self.slot, self.every, self.poll = store, slot, every, poll
        self._copied = -math.inf  # (:meth:`tick`)
        self.server, self.address = serve(store.address)
        self.own: CoordinationStore = JobStore(self.address, store.prefix, server=self.server)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hf_mpwriter-job-successor", daemon=True)

    def start(self) -> None:
        logger.info("job %s: this node hosts successor store %d at %s:%d", self.address.job_id, self.slot,
                    self.address.host, self.address.port)
        self._thread.start()

    def stop(self, within: float) -> None:
        self._stop.set()
        self._thread.join(within)

    def linger(self, node: int, nodes: int, until: float, poll: float, stopped: Callable[[], bool]) -> None:
        """Serve this store on while another node that joined it has not left, until ``until`` (monotonic) or
        ``stopped()`` (a signal): a drained host must not take the job's coordination with it while other nodes still
        drain."""
        try:
            while time.monotonic() < until and not stopped():
                staying = [n for n in parse_members(self.own.get("members"), nodes) if n != node and not self._left(n)]
                if not staying:
                    return
                logger.debug("successor store %d: served on while node(s) %s use it", self.slot, staying)
                time.sleep(poll)
        except StoreError as exc:
            logger.debug("successor store %d: %s", self.slot, exc)

    def _left(self, node: int) -> bool:
        """Whether ``node``'s current uploader said here that it exited (``left/<n>``, its incarnation)."""
        try:
            current = parse_counter(self.own.get(f"incarnation/{node}"), "incarnation")
            return current > 0 and parse_counter(self.own.get(f"left/{node}"), "left") == current
        except Malformed:
            return False

    def _free(self) -> bool:
        """Whether no node moved here yet: once one did, this is the job's store, not copied over."""
        return not self.own.get("members")

    def _run(self) -> None:
        while True:
            try:
                self.tick(time.monotonic())
            except StoreError as exc:  # the store in use is gone or slow: the copy stays as it was
                logger.debug("successor store %d: not copied: %s", self.slot, exc)
            if self._stop.wait(self.poll):
                return

    def tick(self, now: float) -> None:
        """Copy (:meth:`copy`) every ``every``. :class:`StoreError` if the store in use fails."""
        if now - self._copied >= self.every:
            self.copy()
            self._copied = now

    def copy(self) -> None:
        """Copy the store in use's job run word and terms here, and say where this store is."""
        if self.store.address == self.address or not self._free():
            return
        values = {key: raw for key in COPIED if (raw := self.store.get(key))}
        terms = self.store.add(COUNTED, 0)
        if values:
            self.own.multi_set(values)
        raise_counter(self.own, COUNTED, terms)
        self.store.set(f"successor/{self.slot}", successor_value(self.address.host, self.address.port))


def published(store: CoordinationStore, malformed: Skipped) -> list[tuple[str, int]]:
    """The successor stores' addresses as their hosts published them in ``store`` (``successor/<i>``), in
    order; a malformed one is left out (counted). :class:`StoreError` if the store fails."""
    found = []
    for slot in range(1, SUCCESSORS + 1):
        raw = store.get(f"successor/{slot}")
        try:
            found += [parse_successor_value(raw)] if raw else []
        except Malformed as exc:
            malformed.count(f"successor/{slot}", exc)
    return found


def served_by(own: SuccessorHost | None, address: StoreAddress) -> Any:
    """The server of the store at ``address`` where this process serves it (``own``, its host), else ``None``."""
    return own.server if own is not None and own.address == address else None


def next_store(store: CoordinationStore, successors: list[StoreAddress], gone: set[StoreAddress],
               own: SuccessorHost | None) -> bool:
    """Move ``store`` (every view of the node's connection) to the first of ``successors`` not in ``gone`` that
    answers a call on a connection of its own; whether it moved. One where nothing listens any more is added to
    ``gone``; one that only did not answer is asked again at the next try."""
    for address in successors:
        if address in gone or address == store.address:
            continue
        server = served_by(own, address)
        probe = store.elsewhere(address)
        if server is None and not probe.answers():
            if probe.gone():
                gone.add(address)
            continue
        was = store.address
        store.move_to(address, server)
        logger.warning("the job's store at %s:%d is lost: this node goes on through successor store %s:%d",
                       was.host, was.port, address.host, address.port)
        return True
    return False
