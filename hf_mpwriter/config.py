"""Upload settings shared by the writers and the uploader of a logdir, in ``.hf_mpwriter/config.json``.

Writers record them; the uploader (a separate process, possibly started much later by
``hf-mpwriter sync``) reads them. A token is never part of them: the uploader gets it from its
environment, like any ``huggingface_hub`` program. The checks of the arguments they are built from
are :mod:`hf_mpwriter.upload_args`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import environment
from .compat import BUCKETS_VERSION, require_hub_version
from .errors import ConfigurationError
from .state.statedir import read_json, state_dir, write_json_atomic
from .timing import (
    AUDIT_EVERY_S,
    BUCKET_AUDIT_EVERY_S,
    BUCKET_COMMIT_EVERY_S,
    DEFAULT_PREEMPTION_DEADLINE_S,
    DRAIN_TIMEOUT_S,
    HTTP_TIMEOUT_S,
    HUB_COMMIT_EVERY_S,
    HUB_COMMIT_SPACING_S,
    HUB_COMMITS_PER_HOUR,
)
from .upload_args import (
    PatternArg,
    check_apart,
    check_commit_every,
    check_hub_settings,
    check_preemption_deadline,
    check_remote_path,
    hub_prefix,
    parse_bucket_url,
    pattern_list,
    period_seconds,
)

logger = logging.getLogger(__name__)

DEFAULT_ALLOW = ("*.tfevents.*",)
#: Files a Hub repository holds, at most (hub-docs, "Repository limitations": under 100k); a Storage
#: Bucket has no such limit. Both sides warn before a job's event files reach it.
HUB_MAX_FILES = 100_000


#: The Hub huggingface_hub talks to when ``HF_ENDPOINT`` is not set (its ``constants._HF_DEFAULT_ENDPOINT``).
DEFAULT_ENDPOINT = "https://huggingface.co"


def current_endpoint() -> str:
    """The Hub this process's settings send to: ``HF_ENDPOINT`` (trailing ``/`` dropped), as
    ``huggingface_hub.constants.ENDPOINT`` reads it, or huggingface_hub's default.

    Read from the environment, not from huggingface_hub: a writer's process must not import the
    client for this (the uploader process, spawned with this environment, would read the same)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token_found(token: str | None) -> bool:
    """Whether the uploader will have a Hub token: ``token``, else one huggingface_hub finds itself
    (``HF_TOKEN``, the file ``hf auth login`` writes, OIDC, Colab secrets)."""
    if token:
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # a failed OIDC exchange, an unreadable file: no token for the uploader either
        return False


@dataclass
class UploadConfig:
    """Where and how often a logdir is uploaded."""

    kind: str  # "hub" | "bucket" | "local"
    prefix: str  # folder in the target: path_in_repo/<logdir name>
    commit_every: float = HUB_COMMIT_EVERY_S  # seconds
    repo_id: str | None = None
    repo_type: str = "model"
    revision: str = "main"
    private: bool | None = None
    squash_history: bool = False
    directory: str | None = None  # local target
    allow_patterns: list = field(default_factory=lambda: list(DEFAULT_ALLOW))
    ignore_patterns: list = field(default_factory=list)
    drain_timeout: float = DRAIN_TIMEOUT_S  # seconds an uploader keeps retrying once every writer is gone
    audit_every: float = AUDIT_EVERY_S  # seconds between full audits of the target (and one at every start)
    nodes: int = 1  # nodes of the job that commit to this target, each with its own uploader
    node_rank: int = 0  # this logdir's node: its turn among them
    #: The job's ranks, as its writers detected them (0: unknown, ranks given with ``rank=``): the job run
    #: (:mod:`hf_mpwriter.uploader.jobrun.view`) counts a step's missing ranks against it.
    world_size: int = 1
    #: The launcher's facts (:class:`hf_mpwriter.environment.Launcher`), as the writer read them: its ranks on
    #: this node (0: not said), the launch's id and the job's store (``host:port``).
    ranks_per_node: int = 0
    job_id: str | None = None
    store: str | None = None
    #: Seconds between two commits to one repository (:func:`commit_spacing`); None: the target's own (a
    #: repository's ~28 s, a bucket's 0).
    min_interval: float | None = None
    #: After SIGTERM (preemption), the uploader's last commit must end by then: fits a 30 s grace period.
    preemption_deadline: float = DEFAULT_PREEMPTION_DEADLINE_S
    #: Seconds between samples of the node's system metrics (:mod:`hf_mpwriter.uploader.system_metrics`); 0: off.
    system_metrics: float = 0.0
    #: The Hub (hub and bucket targets) the logs go to, recorded where the settings were made, so that
    #: ``sync``/``status``/``view`` in a shell with another ``HF_ENDPOINT`` still reach it.
    #: ``None``: a config.json written before it was recorded (the environment's ``HF_ENDPOINT``).
    endpoint: str | None = None
    #: The read timeout, in seconds, of the uploader's Hub calls (``HF_MPWRITER_HTTP_TIMEOUT``).
    http_timeout: float = HTTP_TIMEOUT_S
    #: A multi-node job commits through one leader where it has a store (``HF_MPWRITER_JOB_STORE``).
    job_store: bool = True
    #: The job's budget on the Hub (:mod:`hf_mpwriter.uploader.coordination.plan`); ``None``: the default.
    #: Commits to one repository per hour (``HF_MPWRITER_COMMITS_PER_HOUR``).
    commits_per_hour: float | None = None
    #: Hub API requests per 5 minutes (``HF_MPWRITER_API_REQUESTS``).
    api_requests: int | None = None
    #: Files in one commit of the job's leader (``HF_MPWRITER_FILES_PER_COMMIT``).
    files_per_commit: int | None = None

    # -- the one way settings are built (writers, the CLI, the integrations) -----------------
    @classmethod
    def for_hub(
        cls, repo_id: str, *, prefix: str, commit_every: float = HUB_COMMIT_EVERY_S, repo_type: str | None = None,
        revision: str | None = None, private: bool | None = None, squash_history: bool = False,
        allow_patterns: PatternArg = DEFAULT_ALLOW, ignore_patterns: PatternArg = None,
    ) -> UploadConfig:
        """Settings for a Hub repository, checked (repo id and type, interval) before anything is written."""
        kind_type = check_hub_settings(repo_id, repo_type, commit_every)
        return cls(
            kind="hub", prefix=check_remote_path(prefix), commit_every=commit_every, repo_id=repo_id,
            repo_type=kind_type, revision=revision or "main", private=private, squash_history=squash_history,
            allow_patterns=pattern_list(allow_patterns), ignore_patterns=pattern_list(ignore_patterns),
            endpoint=current_endpoint(),
        )

    @classmethod
    def for_bucket(
        cls, bucket_id: str, *, prefix: str, commit_every: float = BUCKET_COMMIT_EVERY_S, private: bool | None = None,
        allow_patterns: PatternArg = DEFAULT_ALLOW, ignore_patterns: PatternArg = None,
    ) -> UploadConfig:
        """Settings for a Hub Storage Bucket (``ns/name`` or ``name``)."""
        require_hub_version(BUCKETS_VERSION, "Storage Buckets")
        check_hub_settings(bucket_id, "model", commit_every)  # same id rules as a repository
        return cls(
            kind="bucket", prefix=check_remote_path(prefix), commit_every=commit_every, repo_id=bucket_id,
            # Bucket writes are not fenced: a late write of a dead uploader is found by the audit, so audit often.
            repo_type="bucket", private=private, audit_every=BUCKET_AUDIT_EVERY_S, allow_patterns=pattern_list(allow_patterns),
            ignore_patterns=pattern_list(ignore_patterns), endpoint=current_endpoint(),
        )

    @classmethod
    def for_local(
        cls, directory: str | os.PathLike, *, prefix: str, logdir: Path, commit_every: float = HUB_COMMIT_EVERY_S,
        allow_patterns: PatternArg = DEFAULT_ALLOW, ignore_patterns: PatternArg = None,
    ) -> UploadConfig:
        """Settings for a local target directory (neither inside the logdir nor containing it)."""
        check_apart(Path(logdir), Path(directory))
        return cls(
            kind="local", prefix=check_remote_path(prefix), commit_every=commit_every,
            directory=str(Path(directory).expanduser().resolve()),
            allow_patterns=pattern_list(allow_patterns), ignore_patterns=pattern_list(ignore_patterns),
        )

    @property
    def target_key(self) -> str:
        """The queue's name for the target (``Target.key`` of the target these settings name)."""
        return target_key(self.kind, repo_id=self.repo_id, repo_type=self.repo_type, revision=self.revision,
                          directory=self.directory, prefix=self.prefix)

    @property
    def description(self) -> str:
        """Where the logs go, for people (``Target.description``), without building the target."""
        return describe_target(self.kind, repo_id=self.repo_id, repo_type=self.repo_type, directory=self.directory,
                               prefix=self.prefix, endpoint=self.endpoint or current_endpoint())

    # -- persistence -------------------------------------------------------------------------
    def save(self, logdir: Path) -> None:
        """Record the settings; refuse to point a logdir that already uploads somewhere else elsewhere."""
        path = state_dir(logdir) / "config.json"
        old = check_same_target(logdir, self)
        write_json_atomic(path, asdict(self))
        if old is None:  # the first writer of the logdir says it, not every rank
            warn_about_interval(self)


def writer_settings(
    logdir: Path, repo_id: str | None, *, target_dir: str | os.PathLike | None = None, commit_every: Any = None,
    squash_history: bool = False, repo_type: str | None = None, repo_revision: str | None = None,
    repo_private: bool | None = None, path_in_repo: str | None = "tensorboard",
    repo_allow_patterns: PatternArg = DEFAULT_ALLOW, repo_ignore_patterns: PatternArg = None,
    nodes: int = 1, node_rank: int = 0, world_size: int = 1, preemption_deadline: Any = None,
    system_metrics: Any = False, env: environment.Environment | None = None,
    launcher: environment.Launcher | None = None,
) -> UploadConfig | None:
    """The upload settings of ``HFSummaryWriter``'s arguments (``None``: local only), all checked.

    Used by the writer, the integrations (to fail when a callback is built, not at the first log
    call) and nothing else: one place decides what the arguments mean. ``env``: the environment's
    settings as the writer read them, ``launcher`` its launcher's facts (default: read them now).
    """
    env = environment.read() if env is None else env
    every_s = check_commit_every(commit_every)
    deadline_s = check_preemption_deadline(preemption_deadline, env.preemption_deadline)
    metrics_s = period_seconds(system_metrics)
    config: UploadConfig | None = None
    if repo_id is not None:
        if target_dir is not None:
            raise ConfigurationError("pass either repo_id (the Hub) or target_dir (a local directory), not both")
        config = hub_settings(
            repo_id, logdir=logdir, path_in_repo=path_in_repo, commit_every=every_s, repo_type=repo_type,
            revision=repo_revision, private=repo_private, squash_history=squash_history,
            allow_patterns=repo_allow_patterns, ignore_patterns=repo_ignore_patterns,
        )
    elif target_dir is not None:
        config = UploadConfig.for_local(
            target_dir, prefix=hub_prefix(path_in_repo, logdir), logdir=logdir, commit_every=every_s or HUB_COMMIT_EVERY_S,
            allow_patterns=repo_allow_patterns, ignore_patterns=repo_ignore_patterns,
        )
    if config is not None:
        config.nodes, config.node_rank, config.world_size = nodes, node_rank, world_size
        facts = launcher or environment.launcher()
        config.ranks_per_node, config.job_id, config.store = facts.ranks_per_node, facts.job_id, facts.store
        config.preemption_deadline = deadline_s
        config.system_metrics = metrics_s
        config.min_interval = commit_spacing(env.commits_per_hour) if config.kind == "hub" else None  # a bucket: none
        config.http_timeout, config.job_store = env.http_timeout, env.job_store
        config.commits_per_hour, config.api_requests = env.commits_per_hour, env.api_requests
        config.files_per_commit = env.files_per_commit
    return config


def check_same_target(logdir: Path, config: UploadConfig) -> UploadConfig | None:
    """The settings ``logdir`` already has (read only), or a :class:`ConfigurationError` if they upload
    to another target than ``config``: one logdir uploads to one target."""
    old = load(logdir)
    if old is not None and old.target_key != config.target_key:
        raise ConfigurationError(
            f"logdir {str(logdir)!r} already uploads to {old.description} "
            f"(prefix {old.prefix!r}); use a new logdir for {config.description}, or delete "
            f"{state_dir(logdir, create=False) / 'config.json'} once `hf-mpwriter status` shows nothing pending"
        )
    if old is not None and old.endpoint and config.endpoint and old.endpoint != config.endpoint:
        raise ConfigurationError(
            f"logdir {str(logdir)!r} sends its logs to the Hub at {old.endpoint}, but HF_ENDPOINT here is "
            f"{config.endpoint}: set HF_ENDPOINT={old.endpoint}, or use a new logdir for {config.endpoint}"
        )
    return old


def load(logdir: Path) -> UploadConfig | None:
    """The saved settings of ``logdir``, or ``None``."""
    data = read_json(state_dir(logdir, create=False) / "config.json")
    if data is None:
        return None
    known = set(UploadConfig.__dataclass_fields__)
    return UploadConfig(**{k: v for k, v in data.items() if k in known})


def resolved_repo_id(logdir: Path) -> str | None:
    """The repository or bucket id as the uploader resolved it (``"name"`` alone goes to the token's
    namespace: only the uploader, which talks to the Hub, learns the full id), or ``None`` yet."""
    recorded = read_json(state_dir(logdir, create=False) / "target.json") or {}
    return recorded.get("repo_id")


def hub_settings(
    repo_id: str, *, logdir: Path, path_in_repo: str | None = "tensorboard", commit_every: float | None = None,
    repo_type: str | None = None, revision: str | None = None, private: bool | None = None,
    squash_history: bool = False, allow_patterns: PatternArg = DEFAULT_ALLOW, ignore_patterns: PatternArg = None,
) -> UploadConfig:
    """Settings for the Hub: a repository, or a bucket (``repo_type="bucket"`` or an
    ``hf://buckets/ns/name[/path]`` id, whose path replaces ``path_in_repo``)."""
    bucket = parse_bucket_url(repo_id)
    if bucket is None and repo_type == "bucket":
        bucket = (repo_id, "")
    if bucket is not None:
        bucket_id, path = bucket
        if revision not in (None, "main") or squash_history:
            raise ConfigurationError("a bucket has no revisions or history: drop repo_revision / squash_history")
        return UploadConfig.for_bucket(
            bucket_id, prefix=hub_prefix(path or path_in_repo, logdir),
            commit_every=commit_every or BUCKET_COMMIT_EVERY_S, private=private,
            allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
        )
    return UploadConfig.for_hub(
        repo_id, prefix=hub_prefix(path_in_repo, logdir), commit_every=commit_every or HUB_COMMIT_EVERY_S, repo_type=repo_type,
        revision=revision, private=private, squash_history=squash_history, allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns,
    )


def commit_spacing(commits_per_hour: float | None) -> float:
    """Seconds between two commits to one repository: the Hub's (~28 s), or less where
    ``HF_MPWRITER_COMMITS_PER_HOUR`` asks for more commits an hour than the Hub accepts (an endpoint
    that accepts more). One setting for one rate: the spacing never holds back a rate the user set."""
    if commits_per_hour is None:
        return HUB_COMMIT_SPACING_S
    return min(HUB_COMMIT_SPACING_S, 3600 / commits_per_hour)


def commit_interval(config: UploadConfig) -> float:
    """Seconds between the regular commits of an uploader that commits alone (one node, or a node of a job
    without its leader): ``commit_every``, or longer where the logs' rate allows fewer commits to one
    repository (:func:`commits_allowed`)."""
    per_hour = commits_allowed(config)
    return config.commit_every if per_hour is None else max(config.commit_every, 3600 / per_hour)


def commits_allowed(config: UploadConfig) -> float | None:
    """Commits an hour the logs may make to ``config``'s repository, or ``None`` where nothing limits them:
    ``HF_MPWRITER_COMMITS_PER_HOUR`` where it is set (any endpoint), else the Hub's ~128 on huggingface.co.
    A bucket has no commit rate; another endpoint states none unless the setting does. (A job's leader
    keeps the same setting through its plan: :mod:`hf_mpwriter.uploader.coordination.plan`.)"""
    if config.kind != "hub":
        return None
    if config.commits_per_hour is not None:
        return config.commits_per_hour
    return HUB_COMMITS_PER_HOUR if "huggingface.co" in (config.endpoint or current_endpoint()) else None


def warn_about_interval(config: UploadConfig) -> None:
    """Say once per logdir (the caller saves the settings first), in the training process, when a single
    uploader's commits come less often than ``commit_every`` asks (:func:`commit_interval`), and which
    setting changes it. (A job of several nodes: its plan decides, and each node's uploader says it.)"""
    interval = commit_interval(config)
    if interval <= config.commit_every or config.nodes > 1:
        return
    why = (f"HF_MPWRITER_COMMITS_PER_HOUR={config.commits_per_hour:g} allows one commit every {interval:.0f} s"
           if config.commits_per_hour is not None else
           f"the Hub accepts about {HUB_COMMITS_PER_HOUR} commits an hour per repository (HF_MPWRITER_COMMITS_PER_HOUR "
           "sets another rate)")
    logger.warning("commit_every=%.0f s: this node commits every %.0f s instead: %s. The last writer's close() and "
                   "a termination signal still commit at once%s", config.commit_every, interval, why,
                   "; other closing writers and scheduler.trigger() wait for the next commit the rate allows"
                   if config.commits_per_hour is not None else "")


def target_key(kind: str, *, repo_id: str | None, repo_type: str, revision: str, directory: str | None, prefix: str) -> str:
    """The queue's name for a target: committed offsets are per target. One formula, for the settings
    and the targets alike (``Target.key``): a key that differed between them would re-send everything."""
    prefix = check_remote_path(prefix.strip("/"), "the target prefix (path_in_repo)")
    if kind == "hub":
        return f"hub:{repo_type or 'model'}:{repo_id}@{revision or 'main'}:{prefix}"
    if kind == "bucket":
        return f"bucket:{repo_id}:{prefix}"
    if kind == "local":
        return f"local:{Path(str(directory)).expanduser().resolve()}:{prefix}"
    raise ConfigurationError(f"unknown target kind {kind!r} in the upload config")


def describe_target(kind: str, *, repo_id: str | None, repo_type: str, directory: str | None, prefix: str,
                    endpoint: str) -> str:
    """Where a target's logs go, for people: the repository's page, the bucket's URL, the directory."""
    prefix = prefix.strip("/")
    if kind == "hub":
        section = "" if (repo_type or "model") == "model" else f"{repo_type}s/"
        return f"{endpoint.rstrip('/')}/{section}{repo_id}"
    if kind == "bucket":
        return f"hf://buckets/{repo_id}" + (f"/{prefix}" if prefix else "")
    return str(Path(str(directory)).expanduser().resolve())
