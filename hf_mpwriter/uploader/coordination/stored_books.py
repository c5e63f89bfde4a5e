"""The leader's books (:class:`~.plan.Books`) as the job's store keeps them, for the next leader.

Why apart: the budget must hold across leaders: each term takes up the books its last leader left (``books``: ages,
never a host's clock), and a leader sets them again while it leads, written or not, and only while the store's lease
names its term. Writes no books hold (a node's own, while no leader answers it; a successor's copy that lags) are
the rule's margin's (docs/guarantees.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...timing import JobTiming
from .plan import Books
from .protocol import Malformed, Skipped, books_value, lease_holder, parse_books
from .store import CoordinationStore

logger = logging.getLogger("hf_mpwriter.uploader")


class StoredBooks:
    """One leader's side of the books in the store: take-up, counting, announcing, setting."""

    def __init__(self, books: Books, store: CoordinationStore, clock: Callable[[], float], timing: JobTiming,
                 malformed: Skipped) -> None:
        self.books, self.store, self.clock, self.timing, self.malformed = books, store, clock, timing, malformed
        self._term = 0  # the term whose start took them up
        self._set_at = -float("inf")  # when this leader last set them (monotonic)

    def take_up(self, term: int) -> bool:
        """At the start of each term, the books as the last leader left them: a hand-over or a restarted
        uploader must not start the hour afresh. Whether it took some up."""
        if self._term == term:
            return False
        self._term, raw = term, self.store.get("books")
        if not raw:  # the job's first leader (or its store's)
            return False
        try:
            books = parse_books(raw)
        except Malformed as exc:
            self.malformed.count("books", exc)
            return False
        now = self.clock()
        self.books.take_up(books, now)
        writes, requests = self.books.spent(now)
        logger.info("job leader: took up the job's books: %d write(s) in the commit window, %d request(s) in the API "
                    "window", writes, requests)
        return True

    def announce(self, files: int) -> None:
        """A write about to go: in the books now (withdrawn if it certainly did not apply)."""
        self.books.wrote(self.clock(), files)

    def withdraw(self) -> None:
        """The write last announced did not apply: out of the books."""
        self.books.withdrawn()

    def value(self, holder: tuple[int, int]) -> dict[str, bytes]:
        """``books`` to set (with a write's answers, or alone) while the store's lease names ``holder`` (node,
        term): asked of the store, not of the leader's belief (a deposed leader whose late write lands, paused
        say, must not set back the books of the one after it; one whose renewal only lost its answer still
        holds)."""
        if lease_holder(self.store.get("lease")) != holder:
            return {}
        now = self.clock()
        self._set_at = now
        return {"books": books_value(*self.books.export(now))}

    def keep_fresh(self, holder: tuple[int, int]) -> None:
        """Set them again every ``lease_stale`` while leading, written or not: their ages count from the next
        leader's take-up, so books left since the last write would keep a quiet hour's writes in its window."""
        if self.clock() - self._set_at >= self.timing.lease_stale and (value := self.value(holder)):
            self.store.set("books", value["books"])
