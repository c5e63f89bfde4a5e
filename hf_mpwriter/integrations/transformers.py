"""``transformers`` integration: the ``Trainer`` logs through an :class:`~hf_mpwriter.HFSummaryWriter`.

:class:`HFMPWriterCallback` is ``transformers``' own ``TensorBoardCallback`` (same tags, same
``args`` / ``model_config`` texts, same main-process-only logging) whose writer is an
``HFSummaryWriter``, created lazily when training starts::

    from transformers import Trainer, TrainingArguments
    from hf_mpwriter.integrations import HFMPWriterCallback

    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir="out", report_to="none", logging_steps=10),
        train_dataset=dataset,
        callbacks=[HFMPWriterCallback(repo_id="me/my-run", commit_every=5)],
    )
    trainer.train()  # returns once the logs are committed

Use ``report_to="none"`` (or leave out ``"tensorboard"``) so that ``transformers`` does not add its
own ``TensorBoardCallback`` as well. ``report_to="hf_mpwriter"`` is not offered: ``transformers``
has no public way to register a ``report_to`` name (``INTEGRATION_TO_CALLBACK`` is an internal
dict, and callbacks named there are built without arguments), so ``callbacks=[...]`` is the
supported spelling.

A ``Trainer`` resumed from a checkpoint (``trainer.train(resume_from_checkpoint=True)``) continues the
run of the attempt that saved it: the callback records its logdir in the checkpoint (``trainer_state.json``,
the ``Trainer``'s place for callbacks' state) and logs there again, and its writer has ``resume=True``:
the first step the resumed attempt logs is the restart point, so TensorBoard shows one curve, with the
resumed attempt's values from there. A new ``output_dir`` (or ``logdir=``) is a new run.

Already have a ``TensorBoardCallback``? ``TensorBoardCallback(tb_writer=HFSummaryWriter(...))``
works too; this class only adds the lazy creation in the right directory.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import ExportableState

from ..writer.hub_writer import HFSummaryWriter
from ._common import check_writer_kwargs, resuming

logger = logging.getLogger(__name__)

__all__ = ["HFMPWriterCallback"]


def _default_logdir(output_dir: str) -> str:
    """``<output_dir>/runs/<date>_<host>``: the directory ``TensorBoardCallback`` uses."""
    try:
        from transformers.integrations.integration_utils import default_logdir
    except ImportError:  # pragma: no cover - older layouts
        from transformers.training_args import default_logdir  # type: ignore[no-redef,attr-defined]
    return os.path.join(output_dir, default_logdir())


_NOT_PLAIN = object()


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (a path as its text, a list of plain values), else ``_NOT_PLAIN``."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, int, float, bool)) for item in value):
        return list(value)
    return _NOT_PLAIN


def _saved(state: Any, name: str) -> dict:
    """This callback's attributes as the checkpoint's ``trainer_state.json`` holds them (``{}`` if none)."""
    saved = (getattr(state, "stateful_callbacks", None) or {}).get(name) or {}
    saved = saved[0] if isinstance(saved, list) and saved else saved
    attributes = saved.get("attributes") if isinstance(saved, dict) else None
    return attributes if isinstance(attributes, dict) else {}


class HFMPWriterCallback(TensorBoardCallback, ExportableState):
    """A ``TrainerCallback`` that logs the ``Trainer``'s metrics with an :class:`~hf_mpwriter.HFSummaryWriter`.

    The writer is created when training starts, on the main process (world process zero) only,
    as ``TensorBoardCallback`` does, and closed when training ends (``close()`` returns once the
    logs are committed).

    Args:
        repo_id: Hub repo to push to; ``None`` keeps the logs local (or sends them to ``target_dir``).
        logdir: where the event files go. Default, in this order: the ``TENSORBOARD_LOGGING_DIR``
            environment variable, the logdir of the attempt a resumed ``Trainer``'s checkpoint was
            saved by (same ``output_dir``), ``args.logging_dir`` (``transformers`` < 5), then
            ``<output_dir>/runs/<date>_<host>`` (``TensorBoardCallback``'s default).
        commit_every: minutes between commits (default: 5, or 10 s for a bucket; one commit per interval per node).
        **writer_kwargs: any other :class:`~hf_mpwriter.HFSummaryWriter` argument (``target_dir``,
            ``path_in_repo``, ``repo_private``, ``uploader``, ``close_timeout``, ``flush_secs`` ...).
            Checked here: a wrong one fails now, not when training starts.

    Example:
        >>> from hf_mpwriter.integrations import HFMPWriterCallback
        >>> callback = HFMPWriterCallback(repo_id="me/my-run", commit_every=5)  # doctest: +SKIP
        >>> Trainer(model=model, args=args, train_dataset=ds, callbacks=[callback]).train()  # doctest: +SKIP
    """

    def __init__(
        self,
        repo_id: str | None = None,
        *,
        logdir: str | os.PathLike | None = None,
        commit_every: int | float | None = None,
        **writer_kwargs: Any,
    ) -> None:
        writer_kwargs["commit_every"] = commit_every
        check_writer_kwargs(type(self).__name__, repo_id, writer_kwargs)
        super().__init__(tb_writer=None)
        self.repo_id = repo_id
        self.writer_kwargs = resuming(writer_kwargs)
        #: Rebuilds this callback where the ``Trainer`` restores callbacks from a checkpoint
        #: (``restore_callback_states_from_checkpoint``): plain values only, never the token.
        self._args = {k: _plain(v) for k, v in {"repo_id": repo_id, "logdir": logdir, **writer_kwargs}.items()
                      if k != "token" and _plain(v) is not _NOT_PLAIN}
        #: Where the logs go was chosen by the user (or TENSORBOARD_LOGGING_DIR), not by default.
        self._logdir_chosen = logdir is not None or getattr(self, "logging_dir", None) is not None
        self.output_dir: str | None = None  # the Trainer's, from its start (saved with the checkpoint)
        if logdir is not None:
            self.logging_dir = os.path.expanduser(os.fspath(logdir))
        elif not hasattr(self, "logging_dir"):  # transformers < 5: TensorBoardCallback has no such attribute
            self.logging_dir = None

    def state(self) -> dict:
        """What a checkpoint keeps of this callback (``trainer_state.json``): where the run's logs are."""
        return {"args": self._args, "attributes": {"logging_dir": self.logging_dir, "output_dir": self.output_dir}}

    def _init_summary_writer(self, args: Any, log_dir: str | None = None) -> None:
        if log_dir is not None and self.logging_dir is None:  # transformers < 5 passes args.logging_dir here
            self.logging_dir = log_dir
        if self.logging_dir is None:  # on_log before on_train_begin (e.g. evaluate() alone)
            self.logging_dir = getattr(args, "logging_dir", None) or _default_logdir(args.output_dir)
        self.tb_writer = HFSummaryWriter(self.repo_id, logdir=self.logging_dir, **self.writer_kwargs)
        logger.info("logging to %s (run directory %s)", self.logging_dir, self.tb_writer.run_dir)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        output_dir = os.path.abspath(args.output_dir)
        saved = _saved(state, type(self).__name__)
        # A checkpoint saved without this callback's state (an earlier release, or the callback added on a
        # resume): the Trainer's next save looks its state up and would fail without it.
        stateful = getattr(state, "stateful_callbacks", None)
        if isinstance(stateful, dict):
            stateful.setdefault(type(self).__name__, self.state())
        if (self.tb_writer is None and not self._logdir_chosen and state.global_step > 0
                and saved.get("logging_dir") and saved.get("output_dir") == output_dir):
            self.logging_dir = saved["logging_dir"]  # resumed: the run of the attempt that saved the checkpoint
            logger.info("resumed at step %d: logging to %s again", state.global_step, self.logging_dir)
        # transformers < 5 has args.logging_dir; TensorBoardCallback >= 5 only looks at output_dir.
        if self.logging_dir is None and getattr(args, "logging_dir", None):
            self.logging_dir = args.logging_dir
        self.output_dir = output_dir
        super().on_train_begin(args, state, control, **kwargs)
