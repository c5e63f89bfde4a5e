"""One launch, one job id, read the same way by the writers (their default logdir, the Lightning
version) and the uploaders (the job's store keys): :func:`hf_mpwriter.environment.job_id`."""

from __future__ import annotations

from hf_mpwriter.environment import job_id, launcher
from hf_mpwriter.uploader.coordination.store import store_address
from hf_mpwriter.writer.args import default_logdir


def test_two_launches_in_one_slurm_allocation_get_two_folders(monkeypatch):
    """Two ``srun torchrun ...`` one after the other in one ``sbatch`` script, torchrun given no
    ``--rdzv-id`` (its run id ``none``): two steps of one job, two folders."""
    allocation = {"SLURM_JOB_ID": "812", "TORCHELASTIC_RUN_ID": "none"}
    first, second = ({**allocation, "SLURM_STEP_ID": step} for step in ("0", "1"))
    assert job_id(first) == "slurm-812.0" and job_id(second) == "slurm-812.1"
    assert job_id({"SLURM_JOB_ID": "812", "SLURM_STEP_ID": "batch"}) == "slurm-812"  # the batch script itself
    assert job_id({**allocation, "TORCHELASTIC_RUN_ID": "run-7", "SLURM_STEP_ID": "1"}) == "torchrun-run-7"
    for env in (first, second):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert default_logdir("") == f"runs/{job_id(env)}"


def test_the_uploaders_scope_the_store_by_the_writers_job_id():
    """The store's keys follow the same id as the folders; torchrun without an id still has its own
    launch's store, so its uploaders meet there."""
    store = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}

    def address(env):
        facts = launcher(env)  # what the writer saves in the logdir's settings, and the uploader reads
        return store_address(facts.store, facts.job_id)

    found = address({**store, "TORCHELASTIC_RUN_ID": "none", "SLURM_JOB_ID": "812", "SLURM_STEP_ID": "3"})
    assert found is not None and found.job_id == "slurm-812.3" == job_id({"SLURM_JOB_ID": "812", "SLURM_STEP_ID": "3"})
    assert (found.host, found.port) == ("10.0.0.1", 29500)
    alone = address({**store, "TORCHELASTIC_RUN_ID": "none"})
    assert alone is not None and alone.job_id == "torchrun-none"
    assert address(store) is None  # no launcher: no job, each node commits itself
    assert address({**store, "MASTER_PORT": "x", "TORCHELASTIC_RUN_ID": "r"}) is None  # no port: said, no store
