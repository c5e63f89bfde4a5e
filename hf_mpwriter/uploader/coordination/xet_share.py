"""The job's one Xet write token: the leader fetches it and publishes it (``xet``), the nodes upload with it.

Why: one token per node is a Hub request per node at the start and at every refresh. The token is a secret: never in a
log line, ``status`` or an error. Anyone who reaches the store can write ``xet``: a value is used or kept only where
its CAS is one the reading node's own Hub names and its expiry is bounded (:func:`checked`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ...targets.xet_content import REFRESH_BEFORE_S, Connection
from ..schedule import doubling
from .protocol import Malformed, Skipped, parse_xet_token, xet_token_value
from .store import CoordinationStore, StoreError

logger = logging.getLogger("hf_mpwriter.uploader")

#: After the Hub gave the leader no Xet write token, it asks again after a pause that doubles up to this.
XET_RETRY_S = 300.0
#: The leader shares a Xet write token good for this long at least, and renews it then: the nodes use it
#: until :data:`~hf_mpwriter.targets.xet_content.REFRESH_BEFORE_S` before its expiry, a round or more later.
XET_FRESH_S = 2 * REFRESH_BEFORE_S
#: How often a leader without a token to share looks again (its target not prepared yet, or no Xet).
XET_CHECK_S = 2.0


def checked(raw: bytes, trusts: Callable[[str], bool]) -> Connection:
    """A ``xet`` value as this node may use it: well formed, its expiry bounded (:func:`~.protocol.parse_xet_token`) and
    its CAS one ``trusts`` (the node's target) accepts; else :class:`Malformed`, naming no secret."""
    connection = parse_xet_token(raw, time.time())
    if not trusts(connection[0]):
        raise Malformed("xet: cas is not a CAS this node's Hub names")
    return connection


class XetPublisher:
    """The leader's side: a Xet write token for the job kept in the store while this node leads."""

    def __init__(self, store: CoordinationStore, source: Callable[[float], Connection | None], retry: float,
                 malformed: Skipped, trusts: Callable[[str], bool]) -> None:
        """``source(fresh)``: a token good for ``fresh`` seconds at least (the node's own, or its target's);
        ``retry``: the first pause after a failure (it doubles up to :data:`XET_RETRY_S`); ``trusts(cas)``: whether
        a published token's CAS is one this node's Hub names (another is replaced by this node's own)."""
        self.store, self.source, self.retry, self.malformed = store, source, retry, malformed
        self.trusts = trusts
        self._due = 0.0  # (unix seconds) when the token is fetched and published again
        self._failures = 0  # the token could not be had, in a row: the next try waits longer
        self._thread: threading.Thread | None = None

    def share(self) -> None:
        """When one is due: a good one in the store is kept (another leader's), else one is fetched and published in a
        thread of its own (a token request that hangs must not hold up the job's commits). Where there is none (no Xet
        here, the Hub refused), the nodes fetch their own. :class:`StoreError` if the store fails."""
        if time.time() < self._due or (self._thread is not None and self._thread.is_alive()):
            return
        if self._published_lasts():
            return
        self._thread = threading.Thread(target=self._fetch, name="hf_mpwriter-job-xet", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            connection = self.source(XET_FRESH_S)
            if connection is None:  # no Xet for this target here, or not yet (it is prepared after the start)
                self._due = time.time() + XET_CHECK_S
                return
            self.store.set("xet", xet_token_value(*connection))
        except Exception as exc:  # (never the token in a message: the Hub's answer, the store's failure)
            self._failures += 1
            pause = doubling(self._failures, self.retry, XET_RETRY_S)
            self._due = time.time() + pause
            logger.info("job leader: no Xet write token shared for the job (%s); each node uses its own; "
                        "asked again in %.0f s", type(exc).__name__, pause)
            return
        self._failures = 0
        self._due = connection[2] - XET_FRESH_S
        logger.info("job leader: shared a Xet write token for the job (good for %.0f s)", connection[2] - time.time())

    def _published_lasts(self) -> bool:
        """Whether the store holds a token this node would use (:func:`checked`) for a while yet: then it is kept
        until due."""
        raw = self.store.get("xet")
        if not raw:
            return False
        try:
            expiry = checked(raw, self.trusts)[2]
        except Malformed as exc:
            self.malformed.count("xet", exc)
            return False
        self._due = expiry - XET_FRESH_S
        return time.time() < self._due


class SharedXetToken:
    """The node's side: the leader's token, read from the store when the one held nears its expiry, so that the node
    asks the Hub for none of its own. At the uploader's first upload it is waited for (the leader shares it at its
    first round)."""

    def __init__(self, store: CoordinationStore, usable: Callable[[], bool], first_wait: float, poll: float,
                 malformed: Skipped, trusts: Callable[[str], bool]) -> None:
        """``usable``: whether the store may be asked now (the node's, :meth:`~.job_node.JobNode.store_usable`);
        ``trusts(cas)``: whether a token for that CAS may be used (the node's target's)."""
        self.store, self.usable, self.first_wait, self.poll, self.malformed = store, usable, first_wait, poll, malformed
        self.trusts = trusts
        self._held: Connection | None = None
        self._waited = False

    def __call__(self) -> Connection | None:
        """The token, or ``None`` (the node fetches its own) where the store has none, cannot be asked now,
        or holds one this node may not use (:func:`checked`: counted as malformed)."""
        if self._held is not None and self._held[2] - 2 * REFRESH_BEFORE_S > time.time():
            return self._held
        raw = self._read(self.first_wait if self._held is None and not self._waited else 0.0)
        self._waited = True
        if not raw:
            return None
        try:
            self._held = checked(raw, self.trusts)
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
