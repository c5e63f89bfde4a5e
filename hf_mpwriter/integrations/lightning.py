"""Lightning integration: ``Trainer(logger=HFMPWriterLogger(...))`` logs on every rank.

Lightning's ``TensorBoardLogger`` logs on rank 0 only (its methods are ``@rank_zero_only``), although
the ``Trainer`` calls ``logger.log_metrics`` on every rank. :class:`HFMPWriterLogger` takes the
``TensorBoardLogger`` arguments and logs with an :class:`~hf_mpwriter.HFSummaryWriter` on every
rank: rank ``r`` of a distributed run writes ``<save_dir>/<name>/<version>/rank-00r/``, and the
node's uploader commits every rank's run to the Hub (``repo_id``) or a local directory
(``target_dir``)::

    import lightning.pytorch as pl
    from hf_mpwriter.integrations import HFMPWriterLogger

    logger = HFMPWriterLogger("logs", name="my-model", repo_id="me/my-run")
    pl.Trainer(logger=logger, strategy="ddp", devices=8).fit(model)  # returns once the logs are committed

A relaunch after a crash or a preemption continues the run it resumes: with no ``version=`` and no
job id from the launcher, rank 0 continues the newest ``version_N`` whose attempt did not end (ended:
``fit`` returned, ``finalize("success")``) instead of starting ``version_N+1``, so ``fit(ckpt_path="last")``
finds that version's checkpoints (Lightning looks in ``<version>/checkpoints`` by default). Every writer
has ``resume=True``: the first step an attempt logs is the restart point, and TensorBoard shows one curve
per rank, with the resumed attempt's values from there. Pass ``version=`` for a new run.

``rank_zero_only=True`` gives ``TensorBoardLogger``'s behaviour (rank 0 logs, into ``rank-000`` in a
distributed run). Works with ``lightning.pytorch`` and, when only that is installed, the older
``pytorch_lightning`` package (the ``Trainer`` of either accepts it).
"""

from __future__ import annotations

import logging
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from lightning.fabric.loggers.logger import _DummyExperiment
    from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict, _sanitize_params
    from lightning.pytorch.loggers.logger import Logger
except ImportError:  # pragma: no cover - only the older package is installed
    from lightning_fabric.loggers.logger import _DummyExperiment  # type: ignore[no-redef,assignment]
    from lightning_fabric.utilities.logger import (  # type: ignore[no-redef]
        _add_prefix,
        _convert_params,
        _flatten_dict,
        _sanitize_params,
    )
    from pytorch_lightning.loggers.logger import Logger  # type: ignore[no-redef,assignment]

from ..state.statedir import state_dir
from ..writer import ranks
from ..writer.hub_writer import HFSummaryWriter
from ._common import check_writer_kwargs, resuming
from .lightning_version import ENDED_FILE, choose_version, distributed, rank_and_world, version_path

logger = logging.getLogger(__name__)

__all__ = ["HFMPWriterLogger", "job_version"]

job_version = ranks.job_id  # the version every rank of a job shares


class HFMPWriterLogger(Logger):
    """A Lightning logger that writes TensorBoard logs with an :class:`~hf_mpwriter.HFSummaryWriter`
    on every rank, committed by the node's uploader.

    The version (``<save_dir>/<name>/<version>``) must be the same on every rank: each rank's run
    goes into it. ``TensorBoardLogger`` picks the next free ``version_N`` by listing the directory
    in each process, so ranks that look at different moments (or at different disks) disagree.
    Here, in this order:

    1. ``version=`` as given;
    2. the job's id from the launcher (``TORCHELASTIC_RUN_ID``, ``SLURM_JOB_ID``, ``PBS_JOBID``,
       ``LSB_JOBID``, ``FLUX_JOB_ID``, ``PMIX_NAMESPACE``): ``"torchrun-<id>"``, ``"slurm-<id>"``...
       Every process of the job reads the same value with no communication, and a job that restarts
       (torchrun ``--max-restarts``, a requeued SLURM job) keeps it, so restarted ranks continue
       their runs. Pass ``version=`` to tell apart several runs within one job;
    3. otherwise (Lightning's own launcher, ``ddp_spawn``, a launcher without a job id): rank 0
       chooses from its listing of ``<save_dir>/<name>``: the newest ``version_N`` if an attempt
       logged there and did not end (it ends when ``finalize("success")`` runs, at the end of
       ``fit``; rank 0 records it in ``<version>/.hf_mpwriter/lightning-ended``), else the next
       ``version_N``. So a job relaunched after a crash or a preemption continues the run it resumes,
       and ``fit(ckpt_path="last")`` finds that version's checkpoints; a run that ended is never
       continued (pass ``version=`` for a new run while the newest has not ended). Rank 0 sends its
       choice to the other ranks through ``torch.distributed`` (``broadcast_object_list``) when the
       ``Trainer`` first touches :attr:`experiment`, which it does on every rank right after the
       process group is up, before anything is logged. A single process just uses its listing. On
       node-local disks, rank 0's disk decides.

    Reading :attr:`version` or :attr:`log_dir` on a rank other than 0 before the ``Trainer`` has set
    up the process group gives, in case 3, what that rank's own listing says rank 0 will choose, and
    keeps nothing: Lightning reads it there to find ``ckpt_path="last"``'s checkpoint (in
    ``<version>/checkpoints`` by default), before any rank has written to ``<save_dir>/<name>``, so on a
    shared disk every rank reads the same listing. The version a rank logs into is always rank 0's.

    Args:
        save_dir: parent directory of the logs (``TensorBoardLogger``'s ``save_dir``).
        name: experiment name, a sub-directory of ``save_dir`` (``""``: none).
        version: as above. An ``int`` becomes ``version_<int>``, a string is used as it is.
        log_graph: log the model's graph (rank 0, once), from ``model.example_input_array``.
        default_hp_metric: log ``hp_metric = -1`` with the hyperparameters when no metric is given
            (TensorBoard's HParams dashboard lists runs that have a metric).
        prefix: put before every metric name (joined with ``-``).
        sub_dir: a sub-directory of the version directory (``<version>/<sub_dir>``) that holds the runs.
        repo_id: Hub repository or bucket to push to; ``None`` keeps the logs local (or sends them
            to ``target_dir``).
        rank_zero_only: ``True``: only rank 0 logs, like ``TensorBoardLogger``.
        commit_every: minutes between commits (default: 5, or 10 s for a bucket).
        path_in_repo: folder in the repository under which ``<name>/<version>`` goes (default
            ``tensorboard``): the remote layout is the local one under ``save_dir``.
        **writer_kwargs: any other :class:`~hf_mpwriter.HFSummaryWriter` argument (``target_dir``,
            ``repo_type``, ``repo_private``, ``token``, ``system_metrics``, ``flush_secs``,
            ``close_timeout`` ...). Checked here: a wrong one fails now, not when training starts.
            ``rank`` is not one: it is Lightning's global rank.

    Example:
        >>> from hf_mpwriter.integrations import HFMPWriterLogger
        >>> logger = HFMPWriterLogger("logs", name="demo", target_dir="tb-mirror", commit_every=1)  # doctest: +SKIP
        >>> Trainer(logger=logger, strategy="ddp", devices=2).fit(model)  # doctest: +SKIP
    """

    LOGGER_JOIN_CHAR = "-"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike | None = None,
        *,
        repo_id: str | None = None,
        rank_zero_only: bool = False,
        commit_every: int | float | None = None,
        path_in_repo: str | None = "tensorboard",
        **writer_kwargs: Any,
    ) -> None:
        super().__init__()
        if "rank" in writer_kwargs:
            raise TypeError("HFMPWriterLogger sets the writer's rank itself (Lightning's global rank): drop rank=")
        writer_kwargs["commit_every"] = commit_every
        check_writer_kwargs(type(self).__name__, repo_id, {**writer_kwargs, "path_in_repo": path_in_repo})
        if version is not None and not isinstance(version, (int, str)) or isinstance(version, bool):
            raise TypeError(f"version must be an int, a string or None, got {version!r}")
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._log_graph = bool(log_graph)
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._repo_id = repo_id
        self._rank_zero_only = bool(rank_zero_only)
        self._path_in_repo = path_in_repo
        #: Every writer continues its run where an earlier attempt left it (the first step it logs is the
        #: restart point: TensorBoard shows one curve), unless the user chose the restart step.
        self._writer_kwargs = resuming(writer_kwargs)
        self._version: int | str | None = version if version is not None else job_version()
        #: Rank 0's choice must still be sent to the others (case 3 of the class docstring).
        self._from_rank_zero = self._version is None
        self._shared = False
        self._experiment: HFSummaryWriter | _DummyExperiment | None = None
        self.hparams: dict[str, Any] = {}

    # -- where the logs go -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The experiment name (a sub-directory of ``save_dir``)."""
        return self._name

    @property
    def version(self) -> int | str:
        """The version, the same on every rank (see the class docstring for how it is chosen)."""
        if self._version is None:
            if distributed() is not None and rank_and_world()[1] > 1:
                self._share_version()
            elif rank_and_world()[0] == 0:
                self._version = choose_version(self.root_dir)  # sent to the others once the process group is up
            else:
                # Before the process group (Lightning looks for ckpt_path="last" there): what rank 0 will
                # choose, as this rank's listing says. Not kept: rank 0's choice replaces it.
                return choose_version(self.root_dir, rank_zero=False)
        assert self._version is not None
        return self._version

    @property
    def save_dir(self) -> str:
        """The directory given as ``save_dir``."""
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: where the versions are."""
        return os.path.join(self._save_dir, self._name)

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/<version>[/<sub_dir>]``: the logdir of every rank's writer (rank ``r``'s
        run is its ``rank-00r`` sub-directory in a distributed run)."""
        path = os.path.join(self.root_dir, self._version_dir())
        if self._sub_dir:
            path = os.path.join(path, self._sub_dir)
        return os.path.expanduser(os.path.expandvars(path))

    def _version_dir(self) -> str:
        version = self.version
        return version if isinstance(version, str) else f"version_{version}"

    def _record_end(self, ended: bool) -> None:
        """Rank 0: this version's attempt ended (``finalize("success")``), or logs again (a writer is made)."""
        try:
            marker = state_dir(version_path(self.root_dir, self.version)) / ENDED_FILE
            if ended:
                marker.touch()
            else:
                marker.unlink(missing_ok=True)
        except OSError as exc:  # only costs the choice of a relaunch's version
            logger.warning("could not record in %s whether this attempt ended: %s", self.log_dir, exc)

    def _share_version(self) -> None:
        """Rank 0 sends its version to every rank (a collective: called by every rank, once)."""
        dist = distributed()
        if dist is None or self._shared:
            return
        rank, world = dist.get_rank(), dist.get_world_size()
        if world > 1:
            box: list[Any] = [None]
            if rank == 0:
                box[0] = self._version if self._version is not None else choose_version(self.root_dir)
            dist.broadcast_object_list(box, src=0)
            self._version = box[0]
            logger.debug("rank %d: version %r (chosen by rank 0)", rank, self._version)
        self._shared = True

    # -- the writer ------------------------------------------------------------------------------
    @property
    def experiment(self) -> HFSummaryWriter | _DummyExperiment:
        """This rank's :class:`~hf_mpwriter.HFSummaryWriter` (a do-nothing object on ranks other than
        0 with ``rank_zero_only=True``), created on first use.

        The ``Trainer`` touches it on every rank as soon as the process group is up: that is when
        rank 0's version is shared, if it has to be.
        """
        if self._experiment is not None:
            return self._experiment
        if self._from_rank_zero and not self._shared and distributed() is not None:
            self._share_version()
        rank, world = rank_and_world()
        if self._rank_zero_only and rank != 0:
            self._experiment = _DummyExperiment()
            return self._experiment
        kwargs = dict(self._writer_kwargs)
        if world > 1:
            kwargs["rank"] = rank  # Lightning's own launcher sets no RANK: its rank, whatever the launcher
        parts = [p for p in (self._name, self._version_dir(), self._sub_dir) if p]
        remote = "/".join(p.strip("/") for p in [self._path_in_repo or "", *parts[:-1]] if p and p.strip("/"))
        self._experiment = HFSummaryWriter(self._repo_id, logdir=self.log_dir, path_in_repo=remote or None, **kwargs)
        if rank == 0:
            self._record_end(False)  # an attempt logs in this version again: it has not ended
        logger.info("rank %d logs to %s", rank, self._experiment.run_dir)
        return self._experiment

    def _writer(self) -> HFSummaryWriter | None:
        experiment = self.experiment
        return experiment if isinstance(experiment, HFSummaryWriter) else None

    # -- Logger API ------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Numbers (and one-element tensors) as scalars, ``{name: number}`` dicts with ``add_scalars``."""
        writer = self._writer()
        if writer is None:
            return
        for key, value in _add_prefix(dict(metrics), self._prefix, self.LOGGER_JOIN_CHAR).items():
            try:
                if isinstance(value, dict):
                    writer.add_scalars(key, value, step)
                else:
                    writer.add_scalar(key, value, step)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"you tried to log {value!r} as {key!r}: log a number, a one-element tensor or "
                                 f"a dict of them ({exc})") from exc

    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, metrics: dict[str, Any] | float | None = None,
        step: int | None = None,
    ) -> None:
        """TensorBoard HParams data in this rank's run, as ``TensorBoardLogger`` writes it (with
        ``hp_metric = -1`` unless ``default_hp_metric=False`` or a metric is given)."""
        from tensorboardX.summary import hparams

        params = _convert_params(params)
        self.hparams.update(params)
        writer = self._writer()
        if writer is None:
            return
        flat = _sanitize_params(_flatten_dict(params))
        flat = {k: str(v) if getattr(v, "ndim", 0) > 1 else v for k, v in flat.items()}
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else None
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if not metrics:
            return
        self.log_metrics(metrics, step)
        file_writer = writer._get_file_writer()
        for summary in hparams(flat, metrics):
            file_writer.add_summary(summary, step)
        writer.flush()

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """The model's graph, once (rank 0), if ``log_graph=True``: from ``input_array`` or
        ``model.example_input_array``."""
        writer = self._writer()
        if not self._log_graph or writer is None or rank_and_world()[0] != 0:
            return
        import torch

        input_array = getattr(model, "example_input_array", None) if input_array is None else input_array
        if not isinstance(input_array, (torch.Tensor, tuple)):
            logger.warning("could not log the graph: set model.example_input_array (a tensor or a tuple of "
                           "forward()'s arguments), or pass input_array")
            return
        if callable(getattr(model, "_on_before_batch_transfer", None)):
            input_array = model._on_before_batch_transfer(input_array)
            input_array = model._apply_batch_transfer_handler(input_array)
        try:
            from lightning.pytorch.core.module import _jit_is_scripting
        except ImportError:  # pragma: no cover
            from pytorch_lightning.core.module import _jit_is_scripting  # type: ignore[no-redef]
        with _jit_is_scripting():
            writer.add_graph(model, input_array)

    def save(self) -> None:
        """Hand what was logged to the OS; rank 0 writes ``hparams.yaml`` once, as ``TensorBoardLogger``."""
        writer = self._writer() if self._experiment is not None else None
        if writer is None:
            return
        writer.flush()
        if rank_and_world()[0] == 0 and self.hparams:
            path = Path(self.log_dir) / self.NAME_HPARAMS_FILE
            if path.parent.is_dir() and not path.exists():
                try:
                    from lightning.pytorch.core.saving import save_hparams_to_yaml
                except ImportError:  # pragma: no cover
                    from pytorch_lightning.core.saving import save_hparams_to_yaml  # type: ignore[no-redef]
                save_hparams_to_yaml(path, self.hparams)

    def finalize(self, status: str) -> None:
        """Close this rank's writer: returns once its logs are committed (``close_timeout``). On
        ``"success"`` (the ``Trainer``'s call when ``fit`` returns), rank 0 records that this version's
        attempt ended: a later launch without ``version=`` starts a new version. Any other status
        (``"failed"``, SLURM's ``"finished"`` before a requeue) leaves it to be continued."""
        if self._experiment is None:
            return
        if status == "success":
            self.save()
        experiment, self._experiment = self._experiment, None
        if isinstance(experiment, HFSummaryWriter):
            experiment.close()
            if status == "success" and rank_and_world()[0] == 0:
                self._record_end(True)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (``ddp_spawn`` sends the logger to its processes): without the writer, which
        belongs to the process that made it."""
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state
