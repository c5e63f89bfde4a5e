"""The audit: the queue's belief checked against what the target holds, and what it does not hold sent again.

Why apart: it runs on its own schedule (at every start, every ``audit_every``, a check after each commit) and with
its own backoff, within the commit cycle (:mod:`.commit_cycle`) but never holding its send back.

An audit the target refuses (a 429, a 5xx, a timeout) does not hold back the send, not even the
start's audit after a takeover: it is owed (:attr:`Audit.audit_due`) and asked again after its
own wait (:func:`~.cycle_terms.backoff`: at least the server's ``Retry-After`` or ``RateLimit`` reset, growing with
consecutive refusals), not at every cycle; meanwhile the check after each commit waits too (the owed
audit covers those files). Under 429s, an audit retried before every send left a node auditing and
never committing. Nothing a send does relies on an audit having run first: the audit protects what
was acknowledged *earlier* (a zombie commit that landed late, a bucket batch that lost files, a hand
edit: the file is forgotten, so the next snapshot sends it again), and sending first only delays that
repair. A piece is a whole prefix of its file, so a send never builds on what the target holds; a
repository's commit is fenced by its parent commit, not by the audit; and a job whose outcome is
unknown (in flight at a crash, or a failed attempt that may have landed) is reconciled by its own
check (:meth:`~.commit_cycle.Committer._reconcile`) before it is sent again, which still blocks its resend while the
target cannot be asked.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import UploadConfig
from ..errors import TargetError, in_logdir
from ..redaction import redact
from ..state.jobqueue import AUDIT_META, audit_record
from ..state.piece import Piece
from ..state.upload_error import ErrorKind
from ..targets import Target
from .cycle_terms import Clock, Progress, TargetCall, backoff

if TYPE_CHECKING:
    from ..state.jobqueue import JobQueue

logger = logging.getLogger("hf_mpwriter.uploader")  # the uploader's log, whichever module speaks


class Audit:
    """The audit's side of :class:`~.commit_cycle.Committer` (its base): when one is due, and what a check does."""

    logdir: Path
    config: UploadConfig
    target: Target
    clock: Clock
    _token: str | None
    _call: TargetCall

    if TYPE_CHECKING:  # the committer's
        @property
        def queue(self) -> JobQueue: ...

        def _record_error(self, exc: TargetError, text: str) -> None: ...

    def __init__(self) -> None:
        #: A full audit is owed: set at every start (a takeover trusts nothing), and when a check could not
        #: ask the target; run at the first cycle after :attr:`_audit_retry_at`.
        self.audit_due = True
        self._next_audit = 0.0  # monotonic: the periodic audit's time
        self._audit_retry_at = 0.0  # monotonic: a refused audit's wait ends then (the server's Retry-After...)
        self._audit_failures = 0  # consecutive refused audits and checks: their backoff grows with them

    def _audit_waiting(self) -> bool:
        """A refused audit's wait is not over: no audit nor check asks the target before then."""
        return self.clock.monotonic() < self._audit_retry_at

    def _audit_due(self) -> bool:
        """The audit is owed (a start, a refused check) or its period is over, and no refusal's wait runs."""
        return not self._audit_waiting() and (self.audit_due or self.clock.monotonic() >= self._next_audit)

    def _audit_or_defer(self, progress: Progress) -> None:
        """Audit; if the target refuses, say it and go on (see the module docstring: why that is safe)."""
        try:
            self.audit()
        except TargetError as exc:
            self._audit_refused(exc, progress)

    def _audit_refused(self, exc: TargetError, progress: Progress) -> None:
        """Say and record that an audit or check could not ask the target (:meth:`_verify` set its wait)."""
        text = redact(str(exc), self._token)
        wait = max(0.0, self._audit_retry_at - self.clock.monotonic())
        logger.warning("%s (the audit is asked again in %.0f s; commits go on meanwhile)", in_logdir(text, self.logdir), wait)
        self._record_error(exc, text)
        progress.error, progress.fatal = text, not exc.transient

    def audit(self) -> dict[str, str]:
        """Check every file the queue believes committed against what the target really holds.

        Runs at every start (a takeover trusts nothing) and every ``audit_every`` seconds; after a
        refusal, once its wait is over (:meth:`_verify`), while commits go on. Costs a
        ``get_paths_info`` call per 500 files on the Hub, a ``stat`` per unchanged file locally; the
        bytes it hashes (every file at the first audit of a process, then only files changed since:
        :meth:`Target.local_reads`) lengthen the call's bound like the bytes a commit sends.
        """
        committed = self.queue.committed(self.target.key)
        pieces = [
            Piece(path, size, sha, str(self.logdir / path), None, complete)
            for path, (size, sha, complete) in sorted(committed.items())
        ]
        found = self._verify(pieces, full=True)
        error = self.queue.error()
        if error is not None and error.kind is ErrorKind.TRANSIENT:
            self.queue.record_error(None)  # the target answered all it was asked: the outage is over
        self.audit_due = False
        self._audit_failures = 0
        self._next_audit = self.clock.monotonic() + self.target.audit_every(self.config.audit_every)
        return found

    def _verify(self, pieces: list[Piece], full: bool) -> dict[str, str]:
        """Compare ``pieces`` with the target; forget (so re-send) any it does not hold exactly.

        A file the target holds shorter or different from what was acknowledged (a late commit of a
        dead uploader, a hand edit, a target restored from an old backup) is sent again, whole, by
        the next snapshot, and counted in ``repaired_total``. ``status`` shows what was found.
        """
        try:
            found = (self._call("audit", self.target.differences, pieces, nbytes=self.target.local_reads(pieces))
                     if pieces else {})
        except TargetError as exc:  # could not ask: the full audit is owed, after a wait the server would accept
            self.audit_due = True
            self._audit_failures += 1
            self._audit_retry_at = self.clock.monotonic() + backoff(self._audit_failures, exc)
            raise
        record = audit_record(self.queue)
        repairing = dict(record.get("repairing", {}))
        for piece in pieces:
            if piece.path not in found:
                repairing.pop(piece.path, None)  # found right again: repaired
        if found:
            logger.error(
                "the target does not hold %d file(s) as acknowledged (%s); sending them again",
                len(found), "; ".join(f"{p}: {why}" for p, why in sorted(found.items())[:5]),
            )
            lost = [p for p in found if not os.path.lexists(self.logdir / p)]
            for path in lost:  # nothing to send it from: say so, do not wait for it forever
                logger.error("%s cannot be repaired: its local file is gone from %s", path, self.logdir)
            self.queue.forget(self.target.key, sorted(set(found) - set(lost)))
            repairing.update({p: why for p, why in found.items() if p not in lost})
            record["repaired_total"] = record.get("repaired_total", 0) + len(found) - len(lost)
        now = self.clock.time()
        record.update({"verified_at": now, "repairing": repairing})
        if full:
            record.update({"time": now, "files": len(pieces), "found": found})
        self.queue.set_meta(AUDIT_META, json.dumps(record, sort_keys=True))
        return found
