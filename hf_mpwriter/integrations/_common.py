"""Checks shared by the integrations: bad writer settings fail when the callback/tracker is built,
not at the first log call deep inside a training loop."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import writer_settings
from ..writer import supervisor
from ..writer.hub_writer import HFSummaryWriter
from ..writer.summary_writer import SummaryWriter

#: Arguments the integration itself sets (from the framework's settings).
_SET_BY_INTEGRATION = {"self", "kwargs", "logdir", "log_dir", "repo_id"}
#: Arguments that are upload settings, checked by :func:`~hf_mpwriter.config.writer_settings`.
_SETTINGS = set(inspect.signature(writer_settings).parameters) - {"logdir", "repo_id"}


def writer_parameters() -> set[str]:
    """Keyword arguments :class:`~hf_mpwriter.HFSummaryWriter` accepts (its own and its base's)."""
    names = set(inspect.signature(HFSummaryWriter.__init__).parameters)
    names |= set(inspect.signature(SummaryWriter.__init__).parameters)
    return names - _SET_BY_INTEGRATION


def check_writer_kwargs(owner: str, repo_id: str | None, kwargs: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` / :class:`~hf_mpwriter.ConfigurationError` for settings the writer would reject."""
    unknown = sorted(set(kwargs) - writer_parameters())
    if unknown:
        raise TypeError(
            f"{owner} got unexpected keyword argument(s) {', '.join(unknown)}; it accepts those of "
            f"HFSummaryWriter: {', '.join(sorted(writer_parameters()))}"
        )
    supervisor.check_mode(kwargs.get("uploader", "process"))
    settings = {k: v for k, v in kwargs.items() if k in _SETTINGS}
    writer_settings(Path("logs"), repo_id, **settings)  # the writer's own checks, nothing written


def resuming(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The writer's arguments with ``resume=True`` unless the user chose the restart step (``purge_step``):
    an integration's run continues where an earlier attempt left it, and TensorBoard shows one curve."""
    return kwargs if "purge_step" in kwargs else {"resume": True, **kwargs}
