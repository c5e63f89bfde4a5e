"""The job run's protocol under a deterministic simulation (:mod:`jobsim`): the real decision code of every
node, faults chosen by a seed, the invariant checked at quiescence. A failing seed replays exactly
(``jobsim.run(seed, tmp_path, kinds=...)``); ``scripts/sweep_jobsim.py`` runs many more."""

from __future__ import annotations

import logging

import jobsim
import pytest

#: The kinds of fault the invariant holds under (see the xfail below for the one that breaks it).
HOLDING = tuple(kind for kind in jobsim.KINDS if kind != "lost-answer")


@pytest.fixture(autouse=True)
def _quiet():
    """Every malformed value and restart is said in the log: hundreds of lines a seed."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_the_job_run_equals_what_tensorboard_shows_for_the_ranks_over_seeds(tmp_path):
    failed = jobsim.sweep(range(20), tmp_path, kinds=HOLDING)  # (0.4 s a seed; scripts/sweep_jobsim.py for more)
    assert not failed, "\n".join(map(str, failed))


def test_seed_13_a_node_restarted_without_its_state_reports_its_ranks_restarts(tmp_path):
    """Found by the simulation: a node's uploader that starts without its view's state reads its ranks'
    restarts before it hears the leader's word, so it knew no step the job run holds and reported none:
    the job run kept a failed attempt's values (step 4: 31.17 where the ranks' mean is 197.83)."""
    result = jobsim.run(13, tmp_path, kinds=("resume", "uploader-restart"))
    assert any("state lost" in fault for fault in result.faults)  # the scenario
    assert not result.problems, result


@pytest.mark.xfail(strict=True, reason="open (issue 52): a leader's publication applied but its answer lost, then the "
                   "lease moves (or its uploader restarts) before its next round: the points it published as held are "
                   "never written by anyone")
@pytest.mark.parametrize("seed, kinds", [(12, ("lost-answer", "leader")), (9, ("lost-answer", "uploader-restart"))])
def test_a_publication_whose_answer_is_lost_before_a_hand_over_loses_its_points(tmp_path, seed, kinds):
    result = jobsim.run(seed, tmp_path, kinds=kinds)
    assert not result.problems, result
