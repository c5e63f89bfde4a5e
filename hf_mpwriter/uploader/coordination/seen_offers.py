"""The nodes' offers as the job's leader reads them: which it may commit (not answered, taken back, claimed, expired
or of unknown age), and in what order; :mod:`.leader` decides what to do with them. Ages are on this host's monotonic
clock."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ...timing import JobTiming
from .lease import Lease
from .protocol import TAKEN, WITHDRAWN, Answer, Malformed, Offer, Skipped, parse_counter, parse_members
from .store import CoordinationStore

logger = logging.getLogger("hf_mpwriter.uploader")


def parsed_number(key: str, raw: bytes | None, malformed: Skipped) -> int:
    """The answered ``seq`` (an ``answer/`` key) or the incarnation of a node; 0 where it is malformed
    (counted): its offer is still committed, fenced by the parent like any other."""
    try:
        return Answer.decode(raw or b"{}").seq if key.startswith("answer/") else parse_counter(raw, key)
    except Malformed as exc:
        malformed.count(key, exc)
        return 0


def oldest_first(offers: dict[int, Offer], first_seen: dict[tuple[int, int], float]) -> list[tuple[int, Offer]]:
    """``offers`` by the age of the data their node has waiting, on this leader's clock (``first_seen``)."""
    return sorted(offers.items(), key=lambda item: first_seen.get((item[0], item[1].seq), 0.0) - item[1].waiting)


def fitting(offers: dict[int, Offer], first_seen: dict[tuple[int, int], float],
            max_files: int) -> tuple[dict[int, Offer], dict[int, Offer]]:
    """The oldest offers whose files fit in one commit of at most ``max_files`` (at least one offer), and the rest."""
    chosen: dict[int, Offer] = {}
    count = 0
    for node, offer in oldest_first(offers, first_seen):
        if chosen and count + len(offer.files) > max_files:
            break
        chosen[node] = offer
        count += len(offer.files)
    rest = {node: offer for node, offer in offers.items() if node not in chosen}
    if rest:
        logger.info("job leader: %d of %d offers fit in this commit (at most %d files); the rest later",
                    len(chosen), len(offers), max_files)
    return chosen, rest


class SeenOffers(Lease):
    """The leader's reading of the offers (the base of :class:`~.leader.Leader`): since when it saw each, those of
    unknown age."""

    def __init__(self, store: CoordinationStore, node: int, nodes: int, timing: JobTiming, commit_every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(store, node, nodes, timing, commit_every, clock)
        self._first_seen: dict[tuple[int, int], float] = {}  # (node, seq) -> when this leader first saw it
        self._seen_in_term = 0  # the term those were seen in
        #: node -> its offer in the store when this term began, or when the store answered again after failures
        self._stale: dict[int, bytes] = {}
        self._unknown_age: dict[int, Offer] = {}  # those offers, read: answered "offer again" (:meth:`_offer_again`)
        self.malformed = Skipped()  # values of the store skipped as malformed (``status``)

    def _forget(self, offers: dict[int, Offer]) -> None:
        for node, offer in offers.items():
            self._first_seen.pop((node, offer.seq), None)

    def _offers(self) -> dict[int, Offer]:
        """The nodes' current offers this leader may commit (see the module; unknown age: :meth:`after_store_gap`),
        from each node's current uploader, expired by when this leader first saw them and the wait their node said.
        Read in one batch: a few round trips at any job size."""
        members = self.members()
        kinds = ("offer", "answer", "incarnation")
        values = self.store.multi_get([f"{kind}/{node}" for node in members for kind in kinds])
        if self._seen_in_term != self.term:  # a new term knows no offer's age (:meth:`after_store_gap`)
            self._first_seen, self._seen_in_term = {}, self.term
        if self.store_gap:  # (not marked yet: what is there now is from before, as far as this leader knows)
            self._mark_stale({node: values[3 * k] for k, node in enumerate(members)})
        now = self.clock()
        offers: dict[int, Offer] = {}
        present: set[tuple[int, int]] = set()
        for k, node in enumerate(members):
            raw, answered_raw, incarnation_raw = values[3 * k:3 * k + 3]
            if not raw or raw == WITHDRAWN or raw.startswith(TAKEN):
                continue
            try:
                offer = Offer.decode(raw)
            except Malformed as exc:  # skipped: the other nodes' offers are committed all the same
                self.malformed.count(f"offer/{node}", exc)
                continue
            answered = parsed_number(f"answer/{node}", answered_raw, self.malformed)
            incarnation = parsed_number(f"incarnation/{node}", incarnation_raw, self.malformed)
            if offer.seq <= answered or offer.incarnation < incarnation:
                continue
            present.add((node, offer.seq))
            if self._stale.get(node) == raw and not offer.last:  # (a last offer: its files change no more)
                self._unknown_age[node] = offer
                continue
            seen = self._first_seen.setdefault((node, offer.seq), now)
            if now - seen > offer.wait:  # its node is taking it back
                continue
            offers[node] = offer
        self._first_seen = {key: seen for key, seen in self._first_seen.items() if key in present}
        return offers

    def after_store_gap(self) -> None:
        """The store answers again after a spell of failures, or this node's term began: the offers in it now may be
        older than their wait (a node that could not take its offer back commits its files itself once its wait is
        over, or its preemption deadline comes, and may have committed newer ones since). None of them is committed
        but a node's last (its files change no more): their nodes offer again
        (:meth:`~.leader.Leader._offer_again`)."""
        members = self.members()
        self._mark_stale(dict(zip(members, self.store.multi_get([f"offer/{node}" for node in members]))))

    def _mark_stale(self, offers: dict[int, bytes]) -> None:
        self._stale = {node: raw for node, raw in offers.items() if raw}
        self.store_gap = False

    def members(self) -> list[int]:
        """The nodes that announced themselves in this store (their keys exist)."""
        return parse_members(self.store.get("members"), self.nodes)
