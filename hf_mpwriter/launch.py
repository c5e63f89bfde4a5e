"""What the launcher says about the job a process belongs to: its id, read the same way on both sides.

The writers name run folders with it and the uploaders scope the job's store keys with it, so one
launch (not one allocation) is one job for both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

#: (variable, label): the id of the job, the same in every process of it, set by its launcher.
#: torchrun's comes first: several torchrun jobs may run one after the other in one SLURM allocation.
_JOB_IDS = (
    ("TORCHELASTIC_RUN_ID", "torchrun"),
    ("SLURM_JOB_ID", "slurm"),
    ("PBS_JOBID", "pbs"),
    ("LSB_JOBID", "lsf"),
    ("FLUX_JOB_ID", "flux"),
    ("PMIX_NAMESPACE", "mpi"),
)
#: torchrun's run id when it was given none (no ``--rdzv-id``, no ``--standalone``): not an id.
TORCHRUN_NO_ID = "none"


def job_id(env: Mapping[str, str] | None = None) -> str | None:
    """``<launcher>-<job id>`` from the launcher's environment, or ``None`` outside a known job.

    Under SLURM the step joins the id (``slurm-<job>.<step>``): each ``srun`` of one allocation is its
    own launch, so two launches one after the other get two folders, while a requeued job (same job,
    same step) resumes its own. torchrun's run id ``none`` is not an id.
    """
    env = os.environ if env is None else env
    for var, label in _JOB_IDS:
        value = (env.get(var) or "").strip()
        if not value or (var == "TORCHELASTIC_RUN_ID" and value == TORCHRUN_NO_ID):
            continue
        step = (env.get("SLURM_STEP_ID") or "").strip() if var == "SLURM_JOB_ID" else ""
        if step.isdigit():
            value = f"{value}.{step}"
        return f"{label}-" + re.sub(r"[^A-Za-z0-9._-]", "_", value)[:64]
    return None
