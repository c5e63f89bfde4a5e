"""``accelerate`` integration: ``Accelerator(log_with=HFMPWriterTracker(...))``.

Like ``accelerate``'s ``TensorBoardTracker``, but the writer is an :class:`~hf_mpwriter.HFSummaryWriter`:
logs go to ``<logging_dir>/<run_name>`` and are committed to the Hub (``repo_id``) or to a local
directory (``target_dir``) by the node's uploader::

    from accelerate import Accelerator
    from hf_mpwriter.integrations import HFMPWriterTracker

    accelerator = Accelerator(log_with=HFMPWriterTracker("my-project", "logs", repo_id="me/my-run"))
    accelerator.init_trackers("my-project", config={"lr": 1e-3})
    accelerator.log({"train/loss": 0.5}, step=1)
    accelerator.end_training()  # returns once the logs are committed

By default only the main process logs, as with every ``accelerate`` tracker. With
``all_ranks=True`` every rank logs into its own ``rank-NNN`` run. ``Accelerator.init_trackers`` and
``Accelerator.log`` only ever run on the main process, so such a tracker is used directly on every
rank: ``tracker.log(values, step)`` and ``tracker.finish()`` (it starts itself on first use).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from accelerate.state import PartialState
from accelerate.tracking import GeneralTracker, on_main_process

from ..writer.hub_writer import HFSummaryWriter
from ._common import check_writer_kwargs, resuming

logger = logging.getLogger(__name__)

__all__ = ["HFMPWriterTracker"]


def _hparam_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard's hparams plugin can show (others become their ``str``)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
            if isinstance(value, (bool, int, float)):
                return value
        except (ValueError, RuntimeError):
            pass
    return str(value)


def _markdown_table(values: dict) -> str:
    rows = ["| hyperparameter | value |", "|---|---|"]
    for key, value in values.items():
        text = json.dumps(value, default=str) if not isinstance(value, str) else value
        rows.append(f"| {key} | {text.replace('|', '&#124;')} |")
    return "\n".join(rows)


class HFMPWriterTracker(GeneralTracker):
    """An ``accelerate`` tracker that logs with an :class:`~hf_mpwriter.HFSummaryWriter`.

    Args:
        run_name: name of the run (``accelerate``'s project name); logs go to ``<logging_dir>/<run_name>``.
        logging_dir: parent directory of the logs (e.g. ``accelerator.project_dir`` or ``"logs"``).
        repo_id: Hub repo to push to; ``None`` keeps the logs local (or sends them to ``target_dir``).
        all_ranks: ``False`` (default): only the main process logs, like ``accelerate``'s own
            trackers. ``True``: every process logs (rank ``r`` into ``<run>/rank-00r``); call
            ``tracker.log`` / ``tracker.finish`` on every rank, since ``Accelerator.log`` and
            ``Accelerator.init_trackers`` only run on the main process.
        commit_every: minutes between commits (default: 5, or 10 s for a bucket; one commit per interval per node).
        **writer_kwargs: any other :class:`~hf_mpwriter.HFSummaryWriter` argument (``target_dir``,
            ``path_in_repo``, ``uploader``, ``close_timeout``, ``flush_secs`` ...). Checked here.

    Example:
        >>> from accelerate import Accelerator  # doctest: +SKIP
        >>> tracker = HFMPWriterTracker("my-project", "logs", repo_id="me/my-run")  # doctest: +SKIP
        >>> accelerator = Accelerator(log_with=tracker)  # doctest: +SKIP
        >>> accelerator.init_trackers("my-project", config={"lr": 1e-3})  # doctest: +SKIP
        >>> accelerator.log({"train/loss": 0.5}, step=1)  # doctest: +SKIP
        >>> accelerator.end_training()  # doctest: +SKIP
    """

    name = "hf_mpwriter"
    requires_logging_directory = True

    def __init__(
        self,
        run_name: str,
        logging_dir: str | os.PathLike,
        repo_id: str | None = None,
        *,
        all_ranks: bool = False,
        commit_every: int | float | None = None,
        **writer_kwargs: Any,
    ) -> None:
        super().__init__()
        if not run_name or not isinstance(run_name, str):
            raise ValueError(f"run_name must be a non-empty string, got {run_name!r}")
        writer_kwargs["commit_every"] = commit_every
        check_writer_kwargs(type(self).__name__, repo_id, writer_kwargs)
        self.run_name = run_name
        self.logging_dir_param = os.fspath(logging_dir)
        self.logging_dir = os.path.join(self.logging_dir_param, run_name)
        self.repo_id = repo_id
        self.all_ranks = bool(all_ranks)
        self.main_process_only = not self.all_ranks  # read by accelerate's on_main_process
        self.writer_kwargs = resuming(writer_kwargs)  # a relaunch logs into <logging_dir>/<run_name> again
        self.writer: HFSummaryWriter | None = None
        self._warned: set[str] = set()

    # -- GeneralTracker API ----------------------------------------------------------------------
    @on_main_process
    def start(self) -> None:
        """Create the writer (called by ``Accelerator.init_trackers``; also on first use)."""
        self._writer()

    @property
    def tracker(self) -> HFSummaryWriter | None:
        """The underlying :class:`~hf_mpwriter.HFSummaryWriter` (``None`` before ``start``)."""
        return self.writer

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        """Hyperparameters: a ``hparams`` text (a table) and TensorBoard's HParams plugin data.

        The HParams data goes into the sub-run ``<run>/hparams`` (the layout of
        ``SummaryWriter.add_hparams``), so that it never mixes with the run's steps.
        """
        writer = self._writer()
        writer.add_text("hparams", _markdown_table(values))  # (no step: step 0 on disk, not a resume's restart point)
        clean = {str(k): _hparam_value(v) for k, v in values.items() if v is not None}
        writer.add_hparams(clean, {}, run_name="hparams")
        writer.flush()

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        """Log ``values``: numbers as scalars, strings as text, ``{name: number}`` dicts with
        ``add_scalars``. ``kwargs`` go to the writer method, as with ``TensorBoardTracker``."""
        writer = self._writer()
        for key, value in values.items():
            if isinstance(value, str):
                writer.add_text(key, value, global_step=step, **kwargs)
            elif isinstance(value, dict):
                writer.add_scalars(key, value, global_step=step, **kwargs)
            elif isinstance(value, (int, float)) or callable(getattr(value, "item", None)):
                try:
                    writer.add_scalar(key, value, global_step=step, **kwargs)
                except (TypeError, ValueError) as exc:
                    self._warn_once(key, f"value of {key!r} is not a single number ({exc}); not logged")
            else:
                self._warn_once(key, f"value of {key!r} has type {type(value).__name__}: log numbers, "
                                     f"strings or dicts of numbers; not logged")
        writer.flush()

    @on_main_process
    def finish(self) -> None:
        """Close the writer; returns once this process's logs are committed (``close_timeout``)."""
        if self.writer is not None:
            started = time.monotonic()
            self.writer.close()
            self.writer = None
            logger.debug("writer of %s closed in %.1f s", self.logging_dir, time.monotonic() - started)

    # -- internals -------------------------------------------------------------------------------
    def _writer(self) -> HFSummaryWriter:
        if self.writer is None:
            kwargs = dict(self.writer_kwargs)
            if "rank" not in kwargs and self.all_ranks:
                state = PartialState()
                if state.num_processes > 1:
                    kwargs["rank"] = state.process_index  # accelerate's idea of the rank, whatever the launcher
            self.writer = HFSummaryWriter(self.repo_id, logdir=self.logging_dir, **kwargs)
            logger.debug("tracker %s logs to %s", self.run_name, self.writer.run_dir)
        return self.writer

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s", message)
