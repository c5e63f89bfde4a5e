"""Checks shared by the integrations: bad writer settings fail when the callback/tracker is built,
not at the first log call deep inside a training loop."""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional

from .. import election
from ..config import REPO_TYPES
from ..errors import ConfigurationError
from ..hub_writer import HFSummaryWriter
from ..writer import SummaryWriter

#: Arguments the integration itself sets (from the framework's settings).
_SET_BY_INTEGRATION = {"self", "kwargs", "logdir", "log_dir", "repo_id"}


def writer_parameters() -> set[str]:
    """Keyword arguments :class:`~hf_mpwriter.HFSummaryWriter` accepts (its own and its base's)."""
    names = set(inspect.signature(HFSummaryWriter.__init__).parameters)
    names |= set(inspect.signature(SummaryWriter.__init__).parameters)
    return names - _SET_BY_INTEGRATION


def check_writer_kwargs(owner: str, repo_id: Optional[str], kwargs: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` / :class:`~hf_mpwriter.ConfigurationError` for settings the writer would reject."""
    unknown = sorted(set(kwargs) - writer_parameters())
    if unknown:
        raise TypeError(
            f"{owner} got unexpected keyword argument(s) {', '.join(unknown)}; it accepts those of "
            f"HFSummaryWriter: {', '.join(sorted(writer_parameters()))}"
        )
    commit_every = kwargs.get("commit_every", 5)
    if isinstance(commit_every, bool) or not isinstance(commit_every, (int, float)) or commit_every <= 0:
        raise ConfigurationError(f"commit_every must be a positive number of minutes, got {commit_every!r}")
    uploader = kwargs.get("uploader", "process")
    if uploader not in election.MODES:
        raise ConfigurationError(f"uploader must be one of {', '.join(election.MODES)}, got {uploader!r}")
    if repo_id is not None:
        if kwargs.get("target_dir") is not None:
            raise ConfigurationError("pass either repo_id (the Hub) or target_dir (a local directory), not both")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(repo_id)
        except HFValidationError as exc:
            raise ConfigurationError(f"invalid repo_id {repo_id!r}: {exc}. Expected 'namespace/name' or 'name'") from None
        repo_type = kwargs.get("repo_type") or "model"
        if repo_type not in REPO_TYPES:
            raise ConfigurationError(f"invalid repo_type {repo_type!r}: use one of {', '.join(REPO_TYPES)}")
