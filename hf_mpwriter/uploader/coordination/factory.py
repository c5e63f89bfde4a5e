"""The uploader's factory for a job's coordination: a node's target (:func:`for_job`) and what its commit times follow
(:func:`situation`), both from the logdir's settings alone (where the writer put the launcher's facts), never from the
uploader's environment."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

from ...config import UploadConfig, commit_interval
from ...targets import Target, target_for
from ...targets.bucket import BucketTarget, batch_takes_xet_hashes
from ...targets.hub import HubTarget
from ...targets.xet_content import xet_usable
from ...timing import PREPARED_WAIT_MIN_S, PREPARED_WAIT_NODES, PREPARED_WAIT_S, JobTiming
from .member import OWN_COMMITS, JobTarget, store_prefix
from .pacing import Situation
from .plan import Budget, make_budget
from .store import JobStore, StoreError, store_address

logger = logging.getLogger("hf_mpwriter.uploader")


def for_job(config: UploadConfig, target: Target, token: str | None, call_bound: float,
            timing: JobTiming = JobTiming()) -> Target:
    """``target`` itself, or a :class:`JobTarget` around it: only for a repository or a bucket (with hf_xet and
    huggingface_hub 1.10+) in a multi-node job whose logdir's settings name a store; otherwise each node commits
    itself at its own slots. A store that does not answer yet gives a :class:`JobTarget` that commits itself until
    it does (offering to the leader again ``timing.store_retry`` after a failure)."""
    address = store_address(config.store, config.job_id) if config.job_store else None  # HF_MPWRITER_JOB_STORE=0: each itself
    if config.nodes <= 1 or address is None or not isinstance(target, (HubTarget, BucketTarget)):
        return target
    if importlib.util.find_spec("torch") is None:  # the store's client is torch's
        logger.info("job %s: no torch in the uploader's environment, so no job store: each node commits its own "
                    "files", address.job_id)
        return target
    if isinstance(target, BucketTarget) and not (xet_usable() and batch_takes_xet_hashes()):
        logger.info("job %s: each node writes its own files to the bucket (one leader needs hf_xet and "
                    "huggingface_hub 1.10 or later)", address.job_id)
        return target
    store = JobStore(address, store_prefix(address, target.key))
    leader_target = target_for(dataclasses.replace(config, nodes=1, node_rank=0), token)
    assert isinstance(leader_target, (HubTarget, BucketTarget))
    prepared_wait = max(PREPARED_WAIT_MIN_S, PREPARED_WAIT_S * min(1.0, config.nodes / PREPARED_WAIT_NODES))
    job = JobTarget(target, leader_target, store, config.node_rank, config.nodes,
                    wait=min(timing.offer_wait, call_bound / 3), spacing=_write_spacing(config, leader_target) / timing.windows,
                    prepared_wait=prepared_wait, budget=_budget(config).scaled(timing.windows),
                    commit_every=config.commit_every, call_bound=call_bound,
                    files_hint=config.ranks_per_node or 1, timing=timing)
    try:
        store.get("lease")
        job.store_seen = True
        logger.info("job %s: commits through one leader, coordinated in the job's store at %s:%d",
                    address.job_id, address.host, address.port)
    except StoreError as exc:  # not there yet (an env:// store rank 0 creates later), too busy, or gone
        job.store_seen = not store.gone()
        logger.warning("%s; %s", exc, OWN_COMMITS)
        job.store_failed(exc)
        job.mode = "node"
    return job


def situation(config: UploadConfig, target: Target, shared: bool = False) -> Situation:
    """What decides a node's commit times (:func:`.pacing.pacing`) where no job's leader paces it, from its settings;
    ``shared``: its logdir is every node's (it is the job's one uploader)."""
    kind = target.kind if isinstance(target, (HubTarget, BucketTarget)) else None
    return Situation(commit_every=config.commit_every, rate_interval=commit_interval(config), nodes=config.nodes,
                     node=config.node_rank, kind=kind, budget=_budget(config) if kind else None,
                     files=config.ranks_per_node or 1, spacing=_write_spacing(config, target), shared=shared)


def _budget(config: UploadConfig) -> Budget:
    return make_budget(config.commits_per_hour, config.api_requests, config.files_per_commit)


def target_spacing(config: UploadConfig, target: Target) -> float:
    """Seconds between two commits to ``target``: the settings' if set, else the target's own (a bucket has none)."""
    return config.min_interval if config.min_interval is not None else target.min_interval


def _write_spacing(config: UploadConfig, target: Target) -> float:
    """Seconds between two of the job's writes (the leader's, or a node's own): at most one a round, the commit
    spacing apart."""
    return min(config.commit_every, target_spacing(config, target)) / 2
