"""The sub-runs of a ``SummaryWriter``'s run: ``add_scalars``' one per tag, ``add_hparams``' one per call.

Apart from :mod:`hf_mpwriter.writer.summary_writer` (the drop-in and its own run): these methods
write into run directories below the run, in tensorboardX's layout, each through its own
:class:`~hf_mpwriter.writer.file_writer.FileWriter`. :class:`SubRuns` is ``SummaryWriter``'s base
class; the state it reads (the run's file writer, the restart point, the sub-runs made so far) is
``SummaryWriter``'s.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import tensorboardX
from tensorboardX.summary import hparams, scalar

from .file_writer import FileWriter, write_restart
from .summaries import domain_discrete, hparams_call, scalars_json
from .values import checked_float, checked_step


class SubRuns(tensorboardX.SummaryWriter):
    """tensorboardX's methods that create sub-runs, over this library's file writers."""

    _scalars_file_writers: dict[str, list[FileWriter]]  # add_scalars' sub-runs, for export (set in __init__)
    _exported_up_to: dict[Path, int]  # what export_scalars_to_json has read, per file (set in __init__)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several scalars on one chart: each tag in ``<run>/<main_tag>/<tag>``, as tensorboardX does.

        The one place where tensorboardX and ``torch.utils.tensorboard`` disagree: torch writes
        ``tag`` to the run ``<run>/<main_tag with '/' replaced by '_'>_<tag>`` (one directory level),
        tensorboardX to ``<run>/<main_tag>/<tag>`` (nested directories). This writer follows
        tensorboardX, so code moving from torch sees the same charts (same scalar tag ``main_tag``)
        under different run names in TensorBoard's run list.

        Unlike tensorboardX, values are not also kept in memory (which grows without bound):
        ``export_scalars_to_json`` reads them back from the event files.
        """
        if not self._write_to_disk:
            return
        values = {tag: checked_float("add_scalars", f"{main_tag}/{tag}", v) for tag, v in tag_scalar_dict.items()}
        walltime = time.time() if walltime is None else walltime
        run = self._get_file_writer().get_logdir()
        for tag, value in values.items():
            key = os.path.join(run, main_tag, tag)
            writer = self.all_writers.get(key)
            if writer is None:
                writer = self.all_writers[key] = self._new_file_writer(key)
                if key not in self._scalars_file_writers and self.purge_step is not None:
                    write_restart(writer, self.purge_step)  # a sub-run restarts with its run (once)
                writer.first_step = self._restart_at if self._restart_on_first_step else None
                self._scalars_file_writers.setdefault(key, []).append(writer)
            writer.add_summary(scalar(main_tag, value), global_step, walltime)

    def export_scalars_to_json(self, path: str | os.PathLike) -> None:
        """Write ``{key: [[wall_time, step, value], ...]}`` of the ``add_scalars`` values, as tensorboardX does.

        Keys are tensorboardX's (``<run>/<main_tag>/<tag>``) and, as there, only ``add_scalars``
        values are exported, and each export holds what was logged since the previous one. The
        values are read back from this writer's own event files (flushed first) instead of being
        kept in memory, so they are what TensorBoard shows: float32 values, and step 0 where no
        ``global_step`` was given (tensorboardX's JSON has the float64 value and ``null``).
        """
        self.flush()
        files = {key: [f for w in writers for f in w.event_writer.files] for key, writers in self._scalars_file_writers.items()}
        data = scalars_json(files, self._exported_up_to)
        with open(path, "w") as stream:
            json.dump(data, stream)

    def add_hparams(  # type: ignore[override]
        self,
        hparam_dict: dict,
        metric_dict: dict,
        *args: Any,
        name: str | None = None,
        global_step: int | None = None,
        hparam_domain_discrete: dict | None = None,
        run_name: str | None = None,
    ) -> None:
        """Hyperparameters and their metrics, in a sub-run ``<run>/<name>`` (tensorboardX layout).

        Both signatures work: tensorboardX's ``(hparam_dict, metric_dict, name=None,
        global_step=None)`` and torch's ``(hparam_dict, metric_dict, hparam_domain_discrete=None,
        run_name=None, global_step=None)``; a dict in third place is torch's
        ``hparam_domain_discrete``, a str tensorboardX's ``name``. ``hparam_domain_discrete``
        is written as torch writes it; the summaries carry ``global_step`` as torch 2.x's do.
        """
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionaries")
        domain, name, global_step = hparams_call(
            args, {"name": name, "global_step": global_step, "hparam_domain_discrete": hparam_domain_discrete,
                   "run_name": run_name},
        )
        exp, ssi, sei = hparams(hparam_dict, metric_dict)
        exp = domain_discrete(exp, hparam_dict, domain)
        values = {k: checked_float("add_hparams", k, v) for k, v in metric_dict.items()}
        if not self._write_to_disk:
            return
        step = checked_step("add_hparams", "global_step", global_step)
        writer = self._new_file_writer(os.path.join(self._get_file_writer().get_logdir(), name or str(time.time())))
        try:
            for summary in (exp, ssi, sei):
                writer.add_summary(summary, step)
            for key, value in values.items():
                writer.add_summary(scalar(key, value), step)
        finally:
            writer.close()
