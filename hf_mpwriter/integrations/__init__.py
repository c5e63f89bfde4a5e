"""Integrations with training frameworks. Each imports its framework only when you use it.

- :class:`HFMPWriterCallback` (:mod:`hf_mpwriter.integrations.transformers`): a ``transformers``
  ``TrainerCallback`` that logs the ``Trainer``'s metrics through an
  :class:`~hf_mpwriter.HFSummaryWriter`.
- :class:`HFMPWriterTracker` (:mod:`hf_mpwriter.integrations.accelerate`): an ``accelerate``
  tracker for ``Accelerator(log_with=...)``.
- :class:`HFMPWriterLogger` (:mod:`hf_mpwriter.integrations.lightning`): a Lightning logger for
  ``Trainer(logger=...)`` that logs on every rank.

``import hf_mpwriter`` (and ``import hf_mpwriter.integrations``) never imports ``transformers``,
``accelerate`` or ``lightning``; ``from hf_mpwriter.integrations import HFMPWriterCallback`` does.

Example:
    >>> from hf_mpwriter.integrations import HFMPWriterCallback  # doctest: +SKIP
    >>> trainer = Trainer(..., callbacks=[HFMPWriterCallback(repo_id="me/run")])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .accelerate import HFMPWriterTracker
    from .lightning import HFMPWriterLogger
    from .transformers import HFMPWriterCallback

#: public name -> submodule that defines it (imported on first access).
_EXPORTS = {"HFMPWriterCallback": "transformers", "HFMPWriterTracker": "accelerate", "HFMPWriterLogger": "lightning"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
