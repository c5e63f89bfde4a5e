"""A node's commits of its own files where no leader answers it (none yet, a hand-over, the store failing): when the
next may go. They spend the job's budget beside the leader's writes, uncounted by its books, so each goes at the node's
own slot (:meth:`~.plan.Plan.own_turn`): together they stay within the margin (docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Callable

from .plan import OWN_REQUESTS_PER_WRITE, Budget, Plan


class OwnCommits:
    """One node's own commits: their turn, and how many it made."""

    def __init__(self, budget: Budget, kind: str, clock: Callable[[], float]) -> None:
        self.budget, self.kind, self.clock = budget, kind, clock
        self.made = 0  # commits this node made of its files itself (``status``)
        self._due: float | None = None  # monotonic: the next own slot, kept until it commits

    def turn(self, plan: Plan, node: int, wall: float, phase: float | None, closing: bool = False) -> float:
        """Seconds until this node's next own commit may go (0: now): its own slot in ``plan`` (``phase``: on this
        node's clock, as the leader said it), kept as a due time until it commits, so a slot is never missed for being
        looked at late. ``closing``: its last records go at once where the node is one of the job's first
        :func:`last_burst`."""
        if closing and node < last_burst(self.budget, self.kind):
            return 0.0
        now = self.clock()
        if self._due is None:
            self._due = now + plan.own_turn(node, wall, phase)
        return max(0.0, self._due - now)

    def landed(self) -> None:
        """This node's files landed (through the leader, or its own commit): its next own turn is drawn anew."""
        self._due = None

    def going(self) -> None:
        """An own commit goes now: the next own turn is drawn anew."""
        self._due = None


def last_burst(budget: Budget, kind: str) -> int:
    """How many nodes may commit their last records at once, each itself, when their writers close: half of what the
    budget allows in one of its windows (a repository's commits, a bucket's writes by their requests). With the own
    slots' share this keeps a job within twice its budget in any window, so the job's end never waits for a slot."""
    if kind == "hub":
        return max(1, int(budget.commits_per_hour / 2))
    return max(1, int(budget.requests_per_5min / OWN_REQUESTS_PER_WRITE["bucket"] / 2))

