"""Upload settings shared by the writers and the uploader of a logdir, in ``.hf_mpwriter/config.json``.

Writers record them; the uploader (a separate process, possibly started much later by
``hf-mpwriter sync``) reads them. A token is never part of them: the uploader gets it from its
environment, like any ``huggingface_hub`` program.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

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
    SYSTEM_METRICS_MIN_PERIOD_S,
    SYSTEM_METRICS_PERIOD_S,
)

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_ALLOW = ("*.tfevents.*",)
#: Files a Hub repository holds, at most (hub-docs, "Repository limitations": under 100k); a Storage
#: Bucket has no such limit. Both sides warn before a job's event files reach it.
HUB_MAX_FILES = 100_000


def pattern_list(value: str | Sequence[str] | None) -> list[str]:
    """``huggingface_hub``'s pattern arguments (a string, a list or ``None``) as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def matches(path: str, allow: Sequence[str], ignore: Sequence[str]) -> bool:
    """``huggingface_hub``'s allow/ignore semantics (fnmatch on the relative path; a pattern ending
    in ``/`` means everything below that folder)."""
    def _fix(p: str) -> str:
        return p + "*" if p.endswith("/") else p

    if allow and not any(fnmatch.fnmatch(path, _fix(p)) for p in allow):
        return False
    return not any(fnmatch.fnmatch(path, _fix(p)) for p in ignore)


def check_remote_path(prefix: str, what: str = "path_in_repo") -> str:
    """``prefix`` if it stays inside the target once normalised, else a :class:`ConfigurationError`.

    Why here: a ``..`` would make a local target write outside its directory, and makes every Hub
    commit fail inside the client before any request (retried forever, nothing uploaded).
    """
    if not isinstance(prefix, str):
        raise ConfigurationError(f"{what} must be a string, got {type(prefix).__name__}")
    parts = prefix.replace("\\", "/").split("/")
    if any(part == ".." for part in parts) or "\0" in prefix:
        raise ConfigurationError(
            f"{what} {prefix!r} would leave the repository (or target directory): use a relative folder "
            f"without '..', e.g. path_in_repo='tensorboard'"
        )
    return "/".join(part for part in parts if part not in ("", "."))


def parse_bucket_url(url: str) -> tuple[str, str] | None:
    """``hf://buckets/ns/name/some/prefix`` -> ``("ns/name", "some/prefix")``; ``None`` if not a bucket URL."""
    if not url.startswith("hf://buckets/"):
        return None
    parts = url[len("hf://buckets/"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def period_seconds(value: object) -> float:
    """``system_metrics=`` as seconds between samples: ``False``/``None``/``0`` -> 0 (off), ``True``
    -> :data:`SYSTEM_METRICS_PERIOD_S`, a number of seconds >= 1 -> that; anything else is refused.

    At least a second: the step of a sample is its Unix time in seconds, and a node's health does
    not change faster than that is worth a commit."""
    if value is None or value is False or (isinstance(value, (int, float)) and value == 0):
        return 0.0
    if value is True:
        return SYSTEM_METRICS_PERIOD_S
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= SYSTEM_METRICS_MIN_PERIOD_S:
        return float(value)
    raise ConfigurationError(
        f"system_metrics must be True, False or a period in seconds (at least {SYSTEM_METRICS_MIN_PERIOD_S:g}), got {value!r}"
    )

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


PatternArg = Union[str, Sequence[str], None]


def check_commit_every(minutes: Any) -> float | None:
    """``commit_every`` (minutes, as ``huggingface_hub``) in seconds (``None``: the target's default),
    or a clear error."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < math.inf:
        raise ConfigurationError(f"commit_every must be a positive, finite number of minutes, got {minutes!r}")
    return float(minutes) * 60.0


def check_preemption_deadline(seconds: Any, default: float | None = None) -> float:
    """``preemption_deadline`` (seconds after SIGTERM by which the uploader's last commit must end),
    checked; ``None``: ``default`` (``HF_MPWRITER_PREEMPTION_DEADLINE``, read by
    :mod:`hf_mpwriter.environment`), else :data:`DEFAULT_PREEMPTION_DEADLINE_S`."""
    if seconds is None:
        return DEFAULT_PREEMPTION_DEADLINE_S if default is None else default
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ConfigurationError(
            f"preemption_deadline must be a positive number of seconds (a few seconds less than the cluster's "
            f"grace period between SIGTERM and SIGKILL, e.g. 20 for 30), got {seconds!r}"
        )
    return float(seconds)


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


def commit_spacing(commits_per_hour: float | None) -> float:
    """Seconds between two commits to one repository: the Hub's (~28 s), or less where
    ``HF_MPWRITER_COMMITS_PER_HOUR`` asks for more commits an hour than the Hub accepts (an endpoint
    that accepts more). One setting for one rate: the spacing never holds back a rate the user set."""
    if commits_per_hour is None:
        return HUB_COMMIT_SPACING_S
    return min(HUB_COMMIT_SPACING_S, 3600 / commits_per_hour)


def check_apart(logdir: Path, directory: Path) -> None:
    """Refuse a target directory inside the logdir (the uploader would upload its own mirror into
    itself, deeper at every commit) or a logdir inside the target directory."""
    logs = Path(os.path.realpath(logdir.expanduser()))
    target = Path(os.path.realpath(directory.expanduser()))
    if logs == target or logs in target.parents or target in logs.parents:
        how = "the same directory" if logs == target else "one is inside the other"
        raise ConfigurationError(
            f"target_dir {str(directory)!r} and logdir {str(logdir)!r} overlap ({how}); "
            f"choose a target directory outside the logdir, e.g. {str(logs.parent / (logs.name + '-mirror'))!r}"
        )


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


def hub_prefix(path_in_repo: str | None, logdir: Path) -> str:
    """``path_in_repo/<logdir name>``, as ``huggingface_hub.HFSummaryWriter`` lays it out."""
    name = Path(os.path.abspath(logdir)).name
    if not path_in_repo:
        return check_remote_path(name, "the logdir's name")
    return check_remote_path(path_in_repo.strip("/") + "/" + name, "path_in_repo")


def repo_id_error(repo_id: str, reason: str) -> str:
    """What is wrong with ``repo_id`` (huggingface_hub's ``reason``) and what to write instead, in one sentence.

    huggingface_hub's text ends with a period and, for an id of three parts, suggests ``repo_type``,
    which does not help here: the type is its own argument, and a path goes into ``path_in_repo``."""
    reason = re.sub(r"\s*Use `repo_type` argument if needed\.?", "", reason).strip().rstrip(".")
    hint = "expected 'namespace/name' or 'name'"
    if repo_id.count("/") > 1 and not repo_id.startswith("hf://"):
        hint += ("; a folder inside the repository goes in path_in_repo=, and a Storage Bucket is "
                 "'hf://buckets/namespace/name[/path]'")
    return f"invalid repo_id {repo_id!r}: {reason}; {hint}"


def check_hub_settings(repo_id: str, repo_type: str | None, commit_every_s: float) -> str:
    """Validate Hub settings before anything is written; return the repo type."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigurationError(repo_id_error(repo_id, str(exc))) from None
    repo_type = repo_type or "model"
    if repo_type not in REPO_TYPES:
        raise ConfigurationError(f"invalid repo_type {repo_type!r}: use one of {', '.join(REPO_TYPES)}, or bucket")
    return repo_type


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
