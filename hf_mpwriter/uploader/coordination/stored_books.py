"""The leader's books (:class:`~.plan.Books`) as the job's store keeps them, for the next leader.

Why apart: the budget must hold across leaders, and across writes no leader's books hold. So:

- each term takes up the books its last leader left (``books``: ages, never a host's clock);
- the writes made outside them are counted through the store's ``own_writes`` counter: a node adds one
  before each commit of its own (right after it, or later, where the store did not answer), a leader before
  each write (withdrawn only when the write certainly did not apply), and the books carry the count they hold;
- a leader sets them again while it leads, written or not, and only while the store's lease names its term.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...timing import JobTiming
from .plan import Books
from .protocol import Malformed, Skipped, books_value, lease_holder, parse_books
from .store import CoordinationStore, StoreError

logger = logging.getLogger("hf_mpwriter.uploader")

#: A leader's last writes whose counts it keeps: a successor's host copies at each change of the count, within a
#: poll, so that a copy misses one or two at most (:meth:`StoredBooks.written_on`).
RECENT_WRITES = 16


class StoredBooks:
    """One leader's side of the books in the store: take-up, counting, announcing, setting."""

    def __init__(self, books: Books, store: CoordinationStore, clock: Callable[[], float], timing: JobTiming,
                 malformed: Skipped) -> None:
        self.books, self.store, self.clock, self.timing, self.malformed = books, store, clock, timing, malformed
        self._term = 0  # the term whose start took them up
        self._moves: int | None = None  # the store's moves when they were last read (another store's count differs)
        self._set_at = -float("inf")  # when this leader last set them (monotonic)
        #: The store's moves, this leader's writes announced on that store, and ``own_writes`` there as the last
        #: :data:`RECENT_WRITES` of them left it.
        self._written: tuple[int, int, tuple[int, ...]] = (0, 0, ())

    def take_up(self, term: int) -> bool:
        """At the start of each term, the books as the last leader left them: a hand-over or a restarted
        uploader must not start the hour afresh. Whether it took some up."""
        if self._term == term:
            return False
        self._term, raw = term, self.store.get("books")
        if not raw:  # the job's first leader (or its store's): every own commit so far counts
            self.books.own_seen = 0
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

    def count_own(self) -> None:
        """The writes ``own_writes`` counts and the books do not yet: into the books, so that the budget holds
        what the nodes wrote while no leader answered them (a hand-over, a slow round), and a leader's write
        that applied as it died, too."""
        counted = self.books.count_own(self.store.add("own_writes", 0), self.clock(), self._moved())
        self._moves = self.store.moves
        if counted:
            logger.info("job leader: %d write(s) outside the books count in the job's budget", counted)

    def _moved(self) -> bool:
        """Whether the store moved (to a successor) since the books were last read."""
        return self._moves is not None and self.store.moves != self._moves

    def announce(self, files: int) -> None:
        """A write about to go: counted in the store first (should this process die during the call, or lose
        the lease, the next leader counts it), then in the books."""
        moves, count = self.store.moves, self.store.add("own_writes", 1)
        self.books.announced(self.clock(), files)
        _, written, recent = self._written if self._written[0] == moves else (moves, 0, ())
        self._written = (moves, written + 1, (*recent, count)[-RECENT_WRITES:])

    def withdraw(self) -> None:
        """The write last announced did not apply: out of the store's count and the books (where the store
        cannot be told, both keep it)."""
        try:
            self.store.add("own_writes", -1)
        except StoreError:
            return
        self.books.withdrawn()
        moves, written, recent = self._written
        if moves == self.store.moves and written:
            self._written = (moves, written - 1, recent[:-1])

    def written_on(self, moves: int, after: int = 0) -> int:
        """This leader's writes announced on the store its connection reached after ``moves`` moves (``after``: those
        that left its ``own_writes`` above it, all of them where more than the last :data:`RECENT_WRITES` may have):
        what its node tells the store it moves to where no copy holds them (:meth:`~.moves.Moves.forward`,
        :meth:`~.moves.Moves.go_back`)."""
        moves_then, written, recent = self._written
        if moves_then != moves:
            return 0
        above = sum(count > after for count in recent)
        return written if above == len(recent) else above

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
