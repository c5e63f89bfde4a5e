"""The job's budget on the Hub, and the plan that keeps a job of any size within it.

Why a plan: 1,024 nodes of 8 ranks change 8,192 files every interval, 9 commits of 1,000 files: 108 an hour to a
repository that takes about 128. So the leader spreads the nodes over the budget: groups whose files fill one commit
take turns, one a ``gap``, and a node's interval is a pass over the groups. Every rank's newest record has a stated
age (:meth:`Plan.age_bound`). The leader's books (:class:`Books`) hold what it spent, so that off-plan offers wait
their turn and a 429 slows the plan. A node no leader answers has its own slot of the same budget
(:meth:`Plan.own_turn`, :meth:`Plan.own_pacing`)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

from ...timing import HUB_COMMITS_PER_HOUR
from ..schedule import until_turn

#: The Hub's window for API requests, in seconds (fixed windows of 5 minutes, per user).
API_WINDOW_S = 300.0
#: The commit quota's window (per repository: "128 per hour").
COMMIT_WINDOW_S = 3600.0
#: Hub API requests of one write of the leader (a repository: the commit, one ``paths_info`` per 500 files to verify it,
#: a head read now and then; a bucket: one batch, and one ``paths_info`` per 1,000 files before it, whether the bucket
#: holds newer versions, and one after, to verify it), rounded up, per 1,000 files.
REQUESTS_PER_WRITE = {"hub": 4, "bucket": 3}
#: The same for a node's own write: a bucket's without the look before it.
OWN_REQUESTS_PER_WRITE = {"hub": 4, "bucket": 2}
#: The leader plans to spend this share of the request budget; the rest is the nodes' (the job's Xet token, the audits
#: they share, retries and verifications of a node's own), none of which grows with the job's size.
LEADER_SHARE = 0.75
#: The plan spends this share of what the books allow: the rest is slack for what it does not foresee (the first
#: interval, closing writers, retries), so the leader catches up instead of carrying a backlog (why 0.9:
#: docs/design-notes.md).
PLAN_SLACK = 0.9
#: A 429 from the Hub multiplies the plan's gap by this, up to :data:`MAX_SLOWDOWN`; an hour without one brings it
#: back to 1.
SLOWDOWN_STEP = 2.0
MAX_SLOWDOWN = 8.0
#: Files in one commit of the job's leader, at most, by default (``upload_large_folder`` stops at 1,000; the Hub's
#: guidance, 50-100, is for its 60 s server timeout, which a commit by hash meets better).
MAX_FILES_PER_COMMIT = 1000
#: The smallest commit the leader halves to after commits timed out (``upload_large_folder`` starts at 20).
MIN_FILES_PER_COMMIT = 20
#: Where the nodes take turns in groups, a group leaves room for this many nodes' files in each write: the leader's own
#: node's, which rides along (:meth:`Plan.leader_pacing`), with room to spare for its job run's files.
LEADER_ROOM = 2
#: The logs' default share of a repository's commit rate (32 of the Hub's ~128 an hour); the job's own pushes get the
#: rest.
COMMIT_SHARE = 0.25
DEFAULT_COMMITS_PER_HOUR = COMMIT_SHARE * HUB_COMMITS_PER_HOUR
#: Default API requests per 5 minutes for the logs: 40% of a free account's 1,000; the job's own calls on the token
#: keep the rest.
DEFAULT_REQUESTS_PER_5MIN = 400


@dataclass(frozen=True)
class Budget:
    """What the job's logs may spend on the Hub (defaults: :func:`make_budget`; a user can raise each for their plan).

    ``commits_per_hour`` applies to a repository only (a bucket has no commit quota); ``requests_per_5min`` is the
    logger's share of the user's API window. The windows are the Hub's; a test or benchmark compresses time by
    shortening both (:meth:`scaled`: the rates per window stay the Hub's)."""

    commits_per_hour: float
    requests_per_5min: float
    files_per_commit: int
    commit_window_s: float = COMMIT_WINDOW_S
    api_window_s: float = API_WINDOW_S

    def scaled(self, factor: float) -> Budget:
        """The same budget with windows ``factor`` times shorter (simulations of hours in minutes)."""
        return replace(self, commit_window_s=self.commit_window_s / factor, api_window_s=self.api_window_s / factor)



def make_budget(commits_per_hour: float | None = None, requests_per_5min: float | None = None,
                files_per_commit: int | None = None) -> Budget:
    """The budget the user's settings give (``None``: the default)."""
    return Budget(commits_per_hour or DEFAULT_COMMITS_PER_HOUR, requests_per_5min or DEFAULT_REQUESTS_PER_5MIN,
                  files_per_commit or MAX_FILES_PER_COMMIT)


@dataclass(frozen=True)
class Plan:
    """Which node commits when: groups of ``per_commit`` nodes, one group every ``gap`` seconds, each node every
    ``interval`` seconds (at least the user's ``commit_every``)."""

    nodes: int
    per_commit: int  # nodes whose files fit in one commit
    gap: float  # seconds between two of the leader's writes
    interval: float  # seconds between two commits of one node's files
    own_gap: float  # seconds between two commits of nodes that commit themselves (the job's share)

    @property
    def groups(self) -> int:
        return math.ceil(self.nodes / self.per_commit)

    def pacing(self, node: int) -> tuple[float, float]:
        """``(interval, phase)`` of ``node``: its group's slot in the leader's wall-clock cycle."""
        return self.interval, ((node // self.per_commit) * self.gap) % self.interval

    def leader_pacing(self, changes_every: float) -> tuple[float, float] | None:
        """``(interval, phase)`` of the leader's own node where the plan has several groups and writes one every
        ``gap``: it offers at every k-th group's slot (no more often than its job run changes, every ``changes_every``
        seconds), so the job run rides with those writes instead of its own group's alone, once an interval. ``None``
        where that gains nothing, or where the groups leave part of the interval idle (its offers would make writes of
        their own)."""
        if self.groups <= 1 or self.gap <= 0 or self.interval > self.groups * self.gap * (1 + 1e-9) \
                or not math.isfinite(changes_every):
            return None
        every = self.gap * max(1, math.ceil(changes_every / self.gap - 1e-9))
        return (every, 0.0) if every < self.interval else None

    def own_pacing(self, node: int, commit_every: float) -> tuple[float, float]:
        """``(interval, phase)`` of ``node`` while it commits its files itself (no store, the store gone): its own
        slot, every :meth:`own_every` seconds (``commit_every`` at the shortest), so the nodes' own commits keep to
        the budget."""
        every = max(commit_every, self.own_every())
        return every, self.own_phase(node) % every

    def own_phase(self, node: int) -> float:
        """``node``'s own slot in the leader's wall-clock cycle of :meth:`own_every` seconds."""
        return (node * self.own_gap) % self.own_every()

    def slots_in(self, node: int, wall: float) -> dict[str, float]:
        """Seconds from ``wall`` (the leader's clock) to ``node``'s next slot and next own slot, which the node turns
        into phases of its own clock (:meth:`phases`): no wall clock is compared across hosts, and the slots stay
        apart whatever the clocks say."""
        return {"next_in": until_turn(self.interval, self.pacing(node)[1], wall),
                "own_in": until_turn(self.own_every(), self.own_phase(node), wall)}

    def phases(self, next_in: float | None, own_in: float | None, wall: float) -> tuple[float, float] | None:
        """``(phase, own phase)`` on the clock that reads ``wall`` now, from :meth:`slots_in` as received (``None``
        where either is missing)."""
        if next_in is None or own_in is None:
            return None
        return (wall + next_in) % self.interval, (wall + own_in) % self.own_every()

    def age_bound(self) -> float:
        """How old a rank's newest record at the target may get while the leader keeps to this plan: one interval
        until its node's slot, one more if that offer is put off (oldest data first, one gap apart: at most a pass
        over the groups)."""
        return 2 * self.interval

    def own_every(self) -> float:
        """How often one node may commit its files itself: the job's share, split between every node."""
        return self.nodes * self.own_gap

    def own_turn(self, node: int, wall: float, phase: float | None = None) -> float:
        """Seconds from ``wall`` until ``node``'s next own slot in a cycle of :meth:`own_every` seconds (``own_gap``
        apart from the others'; a new plan's slot may give two in a cycle: the margin's). ``phase``: the slot on the
        caller's clock, as the leader said it (:meth:`phases`)."""
        return until_turn(self.own_every(), self.own_phase(node) if phase is None else phase, wall)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plausible(told: Plan, own: Plan) -> bool:
    """Whether a leader's plan (``told``, from an answer) is one the job's settings can give, against ``own``, the plan
    this node makes of the same settings (:meth:`~.job_node.JobNode.plan_now`, before any leader's): the job's nodes,
    the gaps at most :data:`MAX_SLOWDOWN` times as long, the interval from ``own``'s (``commit_every`` at the least) to
    a group a node. Another plan is refused: a value from the store must not stall a node's commits or flood them."""
    close = 1 + 1e-6
    return (told.nodes == own.nodes and 1 <= told.per_commit <= told.nodes
            and own.gap / close <= told.gap <= own.gap * MAX_SLOWDOWN * close
            and own.own_gap / close <= told.own_gap <= own.own_gap * MAX_SLOWDOWN * close
            and own.interval / close <= told.interval <= max(own.interval, told.nodes * told.gap) * close)


def start_pacing(plan: Plan, node: int, commit_every: float) -> tuple[float, float]:
    """``(interval, phase)`` of ``node`` before the leader's first plan, from the one the node makes itself
    (:meth:`JobTarget.plan_now`): the groups start at the plan's slots, so the offers come as the leader wants them
    (whole groups, none put off); a job of one group starts together, at phase 0 of ``commit_every``."""
    if plan.groups <= 1:
        return commit_every, 0.0
    return plan.pacing(node)


def write_gap(budget: Budget, kind: str, files: int, slowdown: float = 1.0,
              costs: dict[str, int] = REQUESTS_PER_WRITE) -> float:
    """Seconds between two of the leader's writes (``costs``: requests per write, :data:`OWN_REQUESTS_PER_WRITE` for a
    node's own) of ``files`` files so that the job stays within ``budget``: the commit quota (a repository), and the
    leader's share of the API window."""
    per_write = costs[kind] * max(1, math.ceil(files / 1000))
    gap = budget.api_window_s * per_write / (budget.requests_per_5min * LEADER_SHARE)
    if kind == "hub":
        gap = max(gap, budget.commit_window_s / budget.commits_per_hour)
    return gap * slowdown / PLAN_SLACK


def make_plan(budget: Budget, kind: str, nodes: int, files_per_node: int, commit_every: float,
              spacing: float, max_files: int | None = None, slowdown: float = 1.0) -> Plan:
    """The plan for ``nodes`` nodes of ``files_per_node`` files each, the leader's writes at least ``spacing`` apart, at
    most ``max_files`` files each (default: the budget's)."""
    most = min(budget.files_per_commit, max_files or budget.files_per_commit)
    fits = most // max(1, files_per_node)
    plan = _plan(budget, kind, nodes, files_per_node, commit_every, spacing, slowdown, max(1, min(nodes, fits)))
    if plan.leader_pacing(0.0) is None or fits <= LEADER_ROOM:
        return plan
    # The groups fill the interval, so the leader's node rides with their writes: each leaves it room.
    return _plan(budget, kind, nodes, files_per_node, commit_every, spacing, slowdown, fits - LEADER_ROOM)


def _plan(budget: Budget, kind: str, nodes: int, files_per_node: int, commit_every: float, spacing: float,
          slowdown: float, per_commit: int) -> Plan:
    gap = max(spacing, write_gap(budget, kind, per_commit * files_per_node, slowdown))
    groups = math.ceil(nodes / per_commit)
    # A node that commits itself makes a commit (a batch) of its own files: the same gap, one node at a time.
    own_gap = max(spacing, write_gap(budget, kind, files_per_node, slowdown, OWN_REQUESTS_PER_WRITE))
    return Plan(nodes=nodes, per_commit=per_commit, gap=gap, interval=max(commit_every, groups * gap), own_gap=own_gap)


class Books:
    """What the leader spent in the budget's windows, and a 429's pause: whether a write may go now, and if not,
    when."""

    def __init__(self, budget: Budget, kind: str) -> None:
        self.budget, self.kind = budget, kind
        self._writes: deque[float] = deque()  # times of the writes in the commit window
        self._requests: deque[tuple[float, int]] = deque()  # (time, requests) in the API window
        self.paused_until = -math.inf
        self.slowdown = 1.0
        self._slowed_at = -math.inf
        self.refusals = 0  # the Hub's 429s so far

    def _forget(self, now: float) -> None:
        while self._writes and self._writes[0] <= now - self.budget.commit_window_s:
            self._writes.popleft()
        while self._requests and self._requests[0][0] <= now - self.budget.api_window_s:
            self._requests.popleft()
        if self.slowdown > 1 and now - self._slowed_at >= self.budget.commit_window_s:
            self.slowdown = 1.0

    def spent(self, now: float) -> tuple[int, int]:
        """``(writes in the last hour, API requests in the last 5 minutes)``."""
        self._forget(now)
        return len(self._writes), sum(n for _, n in self._requests)

    def next_free(self, now: float, files: int) -> float:
        """When a write of ``files`` files may go (``now`` if it may go now): after a 429's pause, and once the commit
        window (a repository) and the leader's share of the API window have room for it."""
        writes, requests = self.spent(now)
        at = max(now, self.paused_until)
        allowed = max(1, int(self.budget.commits_per_hour))
        if self.kind == "hub" and writes >= allowed:
            at = max(at, self._writes[writes - allowed] + self.budget.commit_window_s)
        cost = REQUESTS_PER_WRITE[self.kind] * max(1, math.ceil(files / 1000))
        room = self.budget.requests_per_5min * LEADER_SHARE - requests
        if cost > room and self._requests:
            freed = 0
            for when, n in self._requests:  # the oldest requests leave the window first
                freed += n
                if freed >= cost - room:
                    at = max(at, when + self.budget.api_window_s)
                    break
        return at

    def withdrawn(self) -> None:
        """The write last announced did not apply (refused, failed): out of the books again."""
        if self._writes:  # (gone from the window already, if the call outlasted it)
            self._writes.pop()
        if self._requests:
            self._requests.pop()

    def wrote(self, now: float, files: int) -> None:
        self._writes.append(now)
        self._requests.append((now, REQUESTS_PER_WRITE[self.kind] * max(1, math.ceil(files / 1000))))

    def refused(self, now: float, retry_after: float | None) -> None:
        """The Hub answered 429: no write before it said (a minute if it did not), and a slower plan."""
        self.paused_until = max(self.paused_until, now + (retry_after if retry_after is not None else 60.0))
        self.slowdown = min(MAX_SLOWDOWN, self.slowdown * SLOWDOWN_STEP)
        self._slowed_at = now
        self.refusals += 1
