"""When a node's uploader commits: one function of its :class:`Situation`, one named branch per case (:func:`pacing`).

The uploader's loop hands the result to its :class:`~hf_mpwriter.uploader.schedule.Schedule` at start and through
:meth:`~hf_mpwriter.uploader.schedule.Schedule.repace` whenever the situation changes. What a commit then does is
:mod:`.member`'s; the leader's own writes follow its plan and books (:mod:`.plan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from .plan import Budget, Plan, make_plan, start_pacing


class Store(str, Enum):
    """Where a node stands with its job's store."""

    NONE = "none"  # no store (one node, HF_MPWRITER_JOB_STORE=0, a local target, no torch): each node alone
    STARTING = "starting"  # a store, and no plan from a leader yet
    PLANNED = "planned"  # the leader's plan, from its last answer
    GONE = "gone"  # the store it once reached is gone: nothing coordinates the nodes any more


@dataclass(frozen=True)
class Situation:
    """What decides a node's commit times."""

    commit_every: float  # the user's interval
    rate_interval: float  # the logs' commit rate, as one uploader's interval (:func:`hf_mpwriter.config.commit_interval`)
    nodes: int = 1
    node: int = 0
    kind: str | None = None  # "hub" or "bucket" (the budget's rules); None: a target without a budget
    budget: Budget | None = None
    files: int = 1  # this node's files (its ranks): how its own plan counts them
    spacing: float = 0.0  # two of the leader's (or a node's own) writes at least this far apart
    shared: bool = False  # a logdir every node shares: this uploader is the job's only one
    store: Store = Store.NONE
    plan: Plan | None = None  # the leader's, with ``store`` PLANNED
    phase: float | None = None  # this node's slot on its own clock, as the leader's last answer said it
    leading: bool = False  # this node's uploader leads the job's commits (its node's job run rides with each)
    job_run_every: float = math.inf  # how often the job run changes (its exchange's round): the leader's node's quickest


def pacing(s: Situation) -> tuple[float, float | None, str]:
    """``(interval, phase, case)``: seconds between this node's regular commits, its slot on the wall
    clock (``None``: none, a single node cycles from its start), and the branch taken."""
    if s.nodes <= 1:  # a single node: commit_every, within the logs' commit rate
        return s.rate_interval, None, "alone"
    if s.shared or s.kind is None or s.budget is None:  # the job's one uploader, or no budget to share
        return s.rate_interval, 0.0, "shared logdir" if s.shared else "no budget"
    ride = s.plan.leader_pacing(s.job_run_every) if s.plan is not None and s.leading else None
    if s.store is Store.PLANNED and ride is not None:  # the leader's node: the job run rides with its writes
        return ride[0], ride[1], "leader"
    if s.store is Store.PLANNED and s.plan is not None:  # the leader's plan: its group's slot
        interval, phase = s.plan.pacing(s.node)
        return interval, phase if s.phase is None else s.phase, "member"
    own = s.plan or make_plan(s.budget, s.kind, s.nodes, s.files, s.commit_every, s.spacing)  # the leader's last, or its own
    if s.store is Store.STARTING:  # before the leader's plan: the job's groups start at the plan's slots
        interval, phase = start_pacing(own, s.node, s.commit_every)
        return interval, phase, "start-up"
    # No store, or it is gone: each node at its own slot of the job's budget, so that together they keep it.
    interval, phase = own.own_pacing(s.node, s.commit_every)
    return max(interval, s.rate_interval), phase, "store gone" if s.store is Store.GONE else "own slots"
