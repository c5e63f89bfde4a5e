"""The checks of the upload arguments (``HFSummaryWriter``'s, the integrations', ``hf-mpwriter sync``'s):
each turns one argument into what the upload settings hold, or a :class:`ConfigurationError` that says
what to write instead; and ``huggingface_hub``'s allow/ignore pattern semantics.

Apart from :mod:`hf_mpwriter.config` (the settings themselves, saved for the uploader): these read
nothing and write nothing, and run before anything is written. (A writer's own arguments:
:mod:`hf_mpwriter.writer.args`.)
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from .errors import ConfigurationError
from .timing import DEFAULT_PREEMPTION_DEADLINE_S, SYSTEM_METRICS_MIN_PERIOD_S, SYSTEM_METRICS_PERIOD_S

#: The repository types ``repo_type=`` accepts (a bucket is its own target, not one of them).
REPO_TYPES = ("model", "dataset", "space")
#: ``huggingface_hub``'s pattern arguments: a pattern, several, or none.
PatternArg = Union[str, Sequence[str], None]


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


def hub_prefix(path_in_repo: str | None, logdir: Path) -> str:
    """``path_in_repo/<logdir name>``, as ``huggingface_hub.HFSummaryWriter`` lays it out."""
    name = Path(os.path.abspath(logdir)).name
    if not path_in_repo:
        return check_remote_path(name, "the logdir's name")
    return check_remote_path(path_in_repo.strip("/") + "/" + name, "path_in_repo")


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


def parse_bucket_url(url: str) -> tuple[str, str] | None:
    """``hf://buckets/ns/name/some/prefix`` -> ``("ns/name", "some/prefix")``; ``None`` if not a bucket URL."""
    if not url.startswith("hf://buckets/"):
        return None
    parts = url[len("hf://buckets/"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


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
