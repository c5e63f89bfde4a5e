"""The job run as the uploader's loop drives it: started with the loop, brought up to date with each commit
(or at its own rounds, on a node of a job with a store), its last points before the uploader exits.

Why apart from the loop: the job run must never be the reason a commit fails or waits. So every update here
is bounded by the loop's own calls (``in_worker``: it beats and takes signals meanwhile), and a failure turns
the job run off for this uploader, the ranks' runs committed as before.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...config import UploadConfig
from ...state.lost import Lost
from ...timing import JOB_VIEW_LAST_WAIT_S, JOB_VIEW_READ_S
from ..coordination.protocol import Seat
from ..throwaway import Abandoned
from . import exchange
from . import view as job_view

logger = logging.getLogger("hf_mpwriter.uploader")

#: ``in_worker(what, fn, *args)``: ``fn(*args)`` while the loop beats and takes signals (its own bound: store calls).
InWorker = Callable[..., Any]


class JobRunDriver:
    """One uploader's job run (:class:`~.view.JobView`) and, in a job with a store, its exchange with the leader."""

    def __init__(self, logdir: Path, config: UploadConfig, beat: Callable[[], None], in_worker: InWorker,
                 signalled: Callable[[], bool]) -> None:
        self.logdir, self.config, self.beat = logdir, config, beat
        self.in_worker, self.signalled = in_worker, signalled
        self.view: job_view.JobView | None = None
        self.exchange: exchange.ViewExchange | None = None  # its points to and from the job's leader
        self._next_round = 0.0  # (monotonic) when this node's next round is due, in a job with a store

    def start(self, job: Seat | None = None, job_run_wait: float = math.inf) -> None:
        """The logdir's job run (:func:`job_view.start_for`; ``job``: this node's seat in a job with a store, whose
        leader merges the nodes' points every ``min(commit_every, job_run_wait)``). One that cannot start is
        left out: never the uploader's end."""
        try:
            self.view = job_view.start_for(self.logdir, self.config, beat=self.beat, node=job is not None)
        except Exception:
            logger.exception("job run of %s cannot start; the ranks' runs are committed as before", self.logdir)
            return
        if job is not None and self.view is not None:
            self.exchange = exchange.ViewExchange(self.view, job, self.config.nodes,  # (the round its pacing knows)
                                                  period=min(self.config.commit_every, job_run_wait))

    def live(self, ranks: Any) -> None:
        """The ranks whose writers live (a dead rank's steps are not waited for)."""
        if self.view is not None:
            self.view.live = ranks

    def round_due(self, now: float) -> bool:
        """A node of a job with a store: whether its own round is due (not once signalled: the commit comes first)."""
        return self.exchange is not None and now >= self._next_round and not self.signalled()

    def round(self) -> None:
        """A node's round, at its own pace (:meth:`ViewExchange.next_in`), not its commits' (the leader's node
        commits what its merge wrote at its next commit)."""
        self.update(final=False, budget=JOB_VIEW_READ_S)
        if self.exchange is not None:  # (a failure turned it off)
            self._next_round = time.monotonic() + self.exchange.next_in(time.time())

    def rides_along(self, urgent: bool, writers_alive: bool) -> None:
        """Before a commit: the job run rides along with it (a backlog: some seconds of it, the rest at the next);
        a node of a job with a store has rounds of its own, and one more as its writers close."""
        if self.exchange is None or urgent or not writers_alive:
            self.update(final=False, budget=JOB_VIEW_READ_S)

    def update(self, final: bool, budget: float = math.inf) -> int:
        """Bring the job run up to date (the points written); a failure turns it off for this uploader (it
        never holds a commit back)."""
        if self.view is None:
            return 0
        try:
            written = self.view.update(final, budget)
            if self.exchange is not None and not self.signalled():  # store calls (each bounded), the loop beating
                if final:  # (its points sent until a leader took them, for a bounded time)
                    written += self.in_worker("exchange the job run's last points", self.exchange.last_round,
                                              JOB_VIEW_LAST_WAIT_S, self.signalled)
                else:
                    written += self.in_worker("exchange the job run's points", self.exchange.round, False)
            return written
        except Abandoned:
            raise
        except OSError as exc:  # a full disk: the ranks' files go on being committed; tried again next cycle
            logger.warning("job run of %s not updated: %s", self.logdir, exc)
        except Exception:
            logger.exception("job run of %s failed; it is turned off for this uploader (the ranks' runs are "
                             "committed as before)", self.logdir)
            if self.exchange is not None:  # (the view is left as it failed: nothing more of it runs)
                self.exchange.close()
            self.view = self.exchange = None
        return 0

    def say_lost(self, found: Sequence[Lost]) -> None:
        """Steps this node's resumed runs lost with an earlier attempt's disk (:mod:`..lost_steps`), in the job run
        where the job has one: a node of a job with a store writes them in its own file of the job run (the
        leader's node writes the points), a lone node where two ranks or more make one."""
        if self.view is not None and (self.exchange is not None or len(self.view.newest) >= 2) and found:
            try:
                self.view.say_lost(found)
            except OSError as exc:  # (a full disk: said again at the next cycle)
                logger.warning("job run of %s: its lost steps not written: %s", self.logdir, exc)

    def close(self) -> None:
        if self.exchange is not None:
            self.exchange.close()
        if self.view is not None:
            self.view.close()
        self.view = self.exchange = None
