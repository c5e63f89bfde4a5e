"""The library's settings from the environment (``HF_MPWRITER_*``): each read and checked here, once.

Why one reader: a job script sets these once for every process, and a bad value found later (in the
uploader, another process) is found by nobody. The writer's constructor calls :func:`read` before it
creates anything; a bad value is a :class:`~hf_mpwriter.errors.ConfigurationError` that names the
variable, its value and a value that works. What the uploader needs travels in the logdir's settings
(:class:`~hf_mpwriter.config.UploadConfig`), so ``hf-mpwriter sync`` in another shell uses what the
writer read.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from .errors import ConfigurationError
from .timing import HTTP_TIMEOUT_S

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Environment:
    """What the environment says; ``None``: not set (the library's default applies)."""

    #: ``HF_MPWRITER_PREEMPTION_DEADLINE``: seconds after SIGTERM by which the last commit must end.
    preemption_deadline: float | None = None
    #: ``HF_MPWRITER_HTTP_TIMEOUT``: the read timeout, in seconds, of the uploader's Hub calls.
    http_timeout: float = HTTP_TIMEOUT_S
    #: ``HF_MPWRITER_JOB_STORE``: a multi-node job commits through one leader (its torch.distributed store).
    job_store: bool = True
    #: ``HF_MPWRITER_HANDLE_SIGTERM``: writers flush (and uploaders commit) on SIGTERM.
    handle_sigterm: bool = True
    #: ``HF_MPWRITER_NETWORK_FS``: more file system types (as the mount table names them) to treat as
    #: network file systems (the queue then uses a rollback journal: :mod:`hf_mpwriter.state.filesystem`).
    network_fs: tuple[str, ...] = ()
    #: ``HF_MPWRITER_COMMITS_PER_HOUR``: commits this logdir's job (one node or all of them) may make to one
    #: repository per hour (:func:`hf_mpwriter.config.commits_allowed`, the leader's plan).
    commits_per_hour: float | None = None
    #: ``HF_MPWRITER_API_REQUESTS``: Hub API requests a multi-node job's logs may make per 5 minutes.
    api_requests: int | None = None
    #: ``HF_MPWRITER_FILES_PER_COMMIT``: files in one commit (or bucket batch) of a multi-node job's leader.
    files_per_commit: int | None = None


def _seconds(minimum: float, inclusive: bool) -> Callable[[str], float | None]:
    def parse(raw: str) -> float | None:
        try:
            value = float(raw)
        except ValueError:
            return None
        ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
        return value if ok else None

    return parse


def _count(minimum: int, maximum: int) -> Callable[[str], int | None]:
    def parse(raw: str) -> int | None:
        return int(raw) if raw.isdigit() and minimum <= int(raw) <= maximum else None

    return parse


def _names(raw: str) -> tuple[str, ...] | None:
    names = tuple(name.strip().lower() for name in raw.split(",") if name.strip())
    return names if names and all(name.replace(".", "").replace("_", "").replace("-", "").isalnum() for name in names) else None


def _switch(raw: str) -> bool | None:
    word = raw.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


#: field -> (variable, parser returning None for a bad value, what a good value is, an example value)
_SETTINGS: dict[str, tuple[str, Callable[[str], object], str, str]] = {
    "preemption_deadline": ("HF_MPWRITER_PREEMPTION_DEADLINE", _seconds(0.0, False),
                            "a number of seconds > 0, a few less than the cluster's grace period", "20"),
    "http_timeout": ("HF_MPWRITER_HTTP_TIMEOUT", _seconds(1.0, True), "a number of seconds >= 1", "60"),
    "job_store": ("HF_MPWRITER_JOB_STORE", _switch, "1 or 0 (also true/false, yes/no, on/off)", "0"),
    "handle_sigterm": ("HF_MPWRITER_HANDLE_SIGTERM", _switch, "1 or 0 (also true/false, yes/no, on/off)", "0"),
    "network_fs": ("HF_MPWRITER_NETWORK_FS", _names, "file system types as the mount table names them, "
                   "comma-separated", "fuse.mydfs,myfs"),
    "commits_per_hour": ("HF_MPWRITER_COMMITS_PER_HOUR", _seconds(1.0, True),
                         "a number of commits >= 1 (the Hub accepts about 128 an hour per repository; more only "
                         "for an endpoint that accepts more)", "32"),
    "api_requests": ("HF_MPWRITER_API_REQUESTS", _count(10, 1_000_000),
                     "a whole number of requests per 5 minutes >= 10 (a free account has 1,000, PRO 2,500)", "400"),
    "files_per_commit": ("HF_MPWRITER_FILES_PER_COMMIT", _count(1, 10_000),
                         "a whole number of files from 1 to 10,000", "1000"),
}

#: Every variable this library reads (the README's reference lists the same).
VARIABLES = tuple(name for name, _, _, _ in _SETTINGS.values())
#: Variables an earlier version read, and what to set instead: said once (a warning), the default applies.
RETIRED = {"HF_MPWRITER_HUB_COMMIT_SPACING": "HF_MPWRITER_COMMITS_PER_HOUR (commits an hour to one repository; "
                                             "the spacing of two commits follows from it)"}
_retired_said: set[str] = set()


def read(env: Mapping[str, str] | None = None) -> Environment:
    """The settings ``env`` (default: this process's environment) gives, all checked."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for field, (name, parse, wanted, example) in _SETTINGS.items():
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        value = parse(raw.strip())
        if value is None:
            raise ConfigurationError(
                f"environment variable {name}={raw!r} is not valid: it must be {wanted}, e.g. {name}={example} "
                f"(or unset it for the default)"
            )
        values[field] = value
    for name, instead in RETIRED.items():
        if env.get(name) and name not in _retired_said:
            _retired_said.add(name)
            logger.warning("%s is no longer read: set %s instead", name, instead)
    return Environment(**values)  # type: ignore[arg-type]


# -- the launcher's job id: one launch, one id, for the writers (their folders) and the uploaders (the store)
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


@dataclass(frozen=True)
class Launcher:
    """What a launcher says of the job beyond this process's rank: read by the writer, saved in the logdir's
    settings for its uploader (which is spawned without the launcher's rank variables, and reads none)."""

    #: The processes the launcher started on this node (0: it does not say).
    ranks_per_node: int = 0
    #: The launch's id, which scopes the uploaders' keys in the job's store (``None``: no known launcher).
    job_id: str | None = None
    #: ``host:port`` of the job's torch.distributed store (``MASTER_ADDR``, ``MASTER_PORT``), or ``None``.
    store: str | None = None


def launcher(env: Mapping[str, str] | None = None) -> Launcher:
    """The launcher's facts from ``env`` (default: this process's environment), checked."""
    env = os.environ if env is None else env
    # torchrun without ``--rdzv-id`` says ``none``: not an id for folders, but its store is that launch's own.
    job = job_id(env) or ("torchrun-none" if env.get("TORCHELASTIC_RUN_ID") else None)
    host, port = (env.get("MASTER_ADDR") or "").strip(), (env.get("MASTER_PORT") or "").strip()
    store = None
    if host and port:
        if port.isdigit() and 0 < int(port) < 65536:
            store = f"{host}:{int(port)}"
        else:
            logger.warning("MASTER_PORT=%r is not a port number; no job-wide leader (each node commits itself)", port)
    return Launcher(ranks_per_node(env) or 0, job, store)


def ranks_per_node(env: Mapping[str, str] | None = None) -> int | None:
    """The processes the launcher started on this node (torchrun's ``LOCAL_WORLD_SIZE``, SLURM's
    ``SLURM_NTASKS_PER_NODE``, whose ``8(x2)`` form gives 8), or ``None`` where it says none."""
    env = os.environ if env is None else env
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        match = re.match(r"\s*(\d+)", env.get(var) or "")
        if match and int(match.group(1)) >= 1:
            return int(match.group(1))
    return None
