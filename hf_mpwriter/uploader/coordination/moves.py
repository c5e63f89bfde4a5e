"""A node's one move: from the job's store, lost, to the successor store (:mod:`.successor`).

Forward only: a store that answers again after a hang is not gone back to. The nodes that never left it lead on there,
those that moved on the successor: at most two leaders, each within the plan, which the budget's margin
(docs/guarantees.md) holds. Records are safe either way (each commit names its parent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from ...timing import JobTiming
from .protocol import Skipped, parse_members
from .store import CoordinationStore, StoreAddress, StoreError
from .successor import SuccessorHost, next_store, published

logger = logging.getLogger("hf_mpwriter.uploader")


class Moves:
    """The successor stores a node knows, the one it hosts, and its move to one."""

    def __init__(self, store: CoordinationStore, node: int, nodes: int, timing: JobTiming, clock: Callable[[], float],
                 malformed: Skipped) -> None:
        self.store, self.node, self.nodes, self.timing, self.clock = store, node, nodes, timing, clock
        self.malformed = malformed
        self.home = store.address  # the job's store
        self.successors: list[StoreAddress] = []  # as the leader's last answer listed them, or the store held them
        self._gone: set[StoreAddress] = set()
        #: Monotonic: when this node last read them itself (:meth:`learn`); ``math.inf`` once an answer told it.
        self._read = -math.inf
        self.count = 0  # moves to a successor store (``status``)
        self.host: SuccessorHost | None = None  # the one this node hosts, if it does

    def told(self, listed: Sequence[tuple[str, int]]) -> None:
        """The successors as an answer listed them: the leader's word from now on."""
        self._known(list(listed))
        self._read = math.inf

    def learn(self) -> None:
        """Read the successors in the store, every ``timing.successor_copy`` at most, until an answer lists them:
        should the store die before its first answer, the node still knows where the job goes on. :class:`StoreError`
        if it fails."""
        now = self.clock()
        if now - self._read < self.timing.successor_copy:
            return
        self._read = now
        self._known(published(self.store, self.malformed))

    def _known(self, listed: list[tuple[str, int]]) -> None:
        job = self.store.address.job_id
        self.successors = [StoreAddress(host, port, job) for host, port in listed]

    def lost(self) -> bool:
        """Whether the store in use is lost to this node (gone, or silent for ``timing.store_lost``)."""
        return self.store.silent_for() >= self.timing.store_lost or self.store.gone()

    def forward(self) -> bool:
        """Move from the job's store, lost, to the first successor listed that answers; whether it moved. The host
        that knows no list knows its own store: it goes on there once other nodes did (:meth:`_own_joined`)."""
        if self.store.address != self.home:  # (once: a successor lost too leaves each node to itself)
            return False
        listed = self.successors or self._own_joined()
        if not (listed and self.lost()):
            return False
        self._gone.add(self.store.address)
        if not next_store(self.store, listed, self._gone, self.host):
            return False
        self.count += 1
        return True

    def _own_joined(self) -> list[StoreAddress]:
        """The store this node hosts, where other nodes announced themselves (the job leads there); not where this
        host alone would be (it would lead for itself beside the nodes that commit alone)."""
        if self.host is None:
            return []
        try:
            joined = [node for node in parse_members(self.host.own.get("members"), self.nodes) if node != self.node]
        except StoreError:
            return []
        return [self.host.address] if joined else []
