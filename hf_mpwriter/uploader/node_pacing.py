"""This node's pacing, as the uploader's schedule takes it (:class:`~.schedule.Pacing`), and what changes it.

Why apart: the settings come from the target's situation (a job's plan, a logdir every node shares, a single
node's repository: :func:`~.coordination.pacing.pacing`) and the logdir's config, while the loop (:mod:`.loop`)
only hands them to its :class:`~.schedule.Schedule` when they change.
"""

from __future__ import annotations

import logging
import math
import time

from ..config import UploadConfig, commits_allowed
from ..targets import Target
from .coordination import factory, member
from .coordination.pacing import pacing
from .schedule import FINAL_GAP_S, Pacing, Schedule

logger = logging.getLogger("hf_mpwriter.uploader")


class NodePacing:
    """The schedule's settings for this node's uploader, and the changes that pace it anew."""

    def __init__(self, config: UploadConfig, target: Target) -> None:
        self.config, self.target = config, target
        #: The logdir's live writers run on several hosts (a logdir every node shares): this one uploader
        #: commits every node's files, so it paces as a single node would (:meth:`settings`).
        self._shared = False
        self._leading = False  # this node's uploader led the job when it was last paced
        self._case: str | None = None  # the pacing's branch last said (:meth:`settings`)

    def settings(self, watch: bool) -> Pacing:
        """The schedule's settings: this node's commit times (:func:`~.coordination.pacing.pacing`, from the
        target's situation), the target's spacing, the logdir's config. A new case is said once."""
        if isinstance(self.target, member.JobTarget):
            situation = self.target.situation(self.config)
        else:
            situation = factory.situation(self.config, self.target, shared=self._shared)
        interval, phase, case = pacing(situation)
        if case != self._case:  # said once a case: its interval, and what changes it where it is not commit_every
            self._case = case
            if interval <= self.config.commit_every:
                logger.info("commits every %.0f s (%s)", interval, case)
            else:
                logger.warning("commit_every=%.0f s: this node's files are committed every %.0f s instead (%s): the logs' "
                               "budget on the Hub; HF_MPWRITER_COMMITS_PER_HOUR (and HF_MPWRITER_API_REQUESTS) raise it",
                               self.config.commit_every, interval, case)
        gap = self._trigger_gap(case)
        # Where the job's nodes commit without a leader, a writer's ask rides the node's next own slot (the asks of
        # every node would otherwise crowd the slots together): the last writer gone still commits at once.
        trigger_gap = math.inf if case in ("own slots", "store gone") else gap
        return Pacing(
            interval=interval, phase=phase, trigger_gap=trigger_gap,
            final_gap=max(gap, FINAL_GAP_S), drain_timeout=self.config.drain_timeout,
            preemption_deadline=self.config.preemption_deadline, watch=watch,
        )

    def _trigger_gap(self, case: str) -> float:
        """How often a writer's ask (``close()``, ``scheduler.trigger()``) may make a commit: not more often than the
        target allows (on the Hub, ranks closing one after the other make one commit per ~30 s), nor than the
        logs' rate where this uploader commits for the whole job (:func:`~hf_mpwriter.config.commits_allowed`). The
        last writer gone and SIGTERM still commit at once (nothing else sends those records); with a leader, a node's
        offers follow its plan and its own commits their slots."""
        gap = min(self.config.commit_every, factory.target_spacing(self.config, self.target))
        per_hour = commits_allowed(self.config)
        if per_hour is not None and (self.config.nodes <= 1 or case == "shared logdir"):
            gap = max(gap, 3600 / per_hour)
        return gap

    def repace_if_shared(self, schedule: Schedule, live: list[dict], watch: bool, now: float) -> None:
        """Pace anew when the logdir's live writers come to run on several hosts (a logdir every node shares),
        or no longer do."""
        shared = len({w.get("host") for w in live}) > 1
        if shared != self._shared:
            self._shared = shared
            schedule.repace(self.settings(watch), now, time.time())

    def repace_if_leading(self, job: member.JobTarget, schedule: Schedule, watch: bool, now: float) -> None:
        """Pace anew when this node's uploader comes to lead its job, or no longer does: a leader's node offers at
        the groups' writes (its job run rides along)."""
        leading = job.leading
        if leading != self._leading:
            self._leading = leading
            schedule.repace(self.settings(watch), now, time.time())
