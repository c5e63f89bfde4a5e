"""``scripts/bench_scale.py`` in one short scaled scenario: the bench that sizes a job of 1,024 nodes runs its
nodes on production's pacing (the writer's settings under torchrun, the uploader's factory ``for_job``,
``pacing(target.situation(config))``) and real leader processes; here 8 nodes of 2 ranks on a bucket for a
few Hub-minutes, so that a change that breaks the bench (or what it drives) is seen in CI, not at the next
long run. The numbers themselves are the bench's (docs/benchmarks.md), not asserted here."""

from __future__ import annotations

import os

import pytest
from helpers import load_script

pytest.importorskip("torch.distributed", reason="the job's store is torch's TCPStore")
pytest.importorskip("hf_xet", reason="a bucket's leader writes by Xet hash")



def _bench():
    return load_script("bench_scale")


def test_a_short_scaled_job_on_production_pacing_lands_whole_within_the_limits(tmp_path):
    from hf_mpwriter.targets.bucket import batch_takes_xet_hashes

    if not batch_takes_xet_hashes():
        pytest.skip("a bucket's leader needs huggingface_hub 1.10 or later")
    bench = _bench()
    saved = dict(os.environ)  # the bench points this process at its test Hub (os.environ): put back after
    try:
        os.environ["HF_HOME"] = str(tmp_path / "hf_home")
        result = bench.run("bucket", nodes=8, ranks=2, scale=5.0, scenario="steady", tmp=tmp_path, quiet=True,
                           minutes=1.0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    counts = result["counts"]
    assert counts["commits"] > 8 and result["leaders"], result  # the scenario: the leader committed every node's offers
    assert result["readback"]["ok"] == result["readback"]["files"] == 16, result["readback"]
    assert result["limits_hit"] == {} and counts["own_commits"] == 0, result
