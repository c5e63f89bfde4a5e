"""The uploader's timing rules (hf_mpwriter.uploader.schedule) with a fake clock: every pacing, trigger,
termination and backoff rule, in milliseconds, without a process or a sleep."""

from __future__ import annotations

import dataclasses
import math

import pytest

from hf_mpwriter.config import UploadConfig
from hf_mpwriter.uploader.schedule import (
    FINAL_GAP_S,
    LOCAL_RETRY_S,
    MAX_BACKOFF_S,
    NEEDS_USER_BACKOFF_S,
    POLL_S,
    SETTLE_S,
    SIGNAL_REPEAT_S,
    TERM_GAP_S,
    UNEXPECTED_ERROR_PAUSE_S,
    Action,
    Pacing,
    Schedule,
    backoff,
    until_turn,
)

HUB_SPACING = 3600 / 128


def pacing(**overrides) -> Pacing:
    values = dict(interval=300.0, phase=None, trigger_gap=HUB_SPACING, final_gap=HUB_SPACING,
                  drain_timeout=600.0, preemption_deadline=20.0)
    values.update(overrides)
    return Pacing(**values)


class Clock:
    """Drives a schedule the way the loop does: ask, and if a cycle is due, run it (instantly)."""

    def __init__(self, schedule: Schedule, now: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.schedule, self.now, self.wall = schedule, now, wall
        self.cycles: list[tuple[float, str]] = []

    def run_until(self, end: float, *, drained=lambda c: False, retry_due=lambda c: False, step: float = POLL_S):
        """As the loop: sleep what the schedule says, but look again at least every ``step``."""
        while self.now < end:
            decision = self.schedule.decide(self.now, drained=drained(self), retry_due=retry_due(self))
            if decision.action is Action.EXIT:
                return decision
            if decision.action is Action.CYCLE:
                self.cycles.append((self.now, decision.reason))
                self.schedule.cycled(self.now, self.wall, decision.reason)
                continue
            assert decision.wait > 0, decision
            wait = min(decision.wait, step)
            self.now += wait
            self.wall += wait
        return None


def test_a_single_node_commits_a_backlog_at_once_then_every_interval():
    clock = Clock(Schedule(pacing(), 1000.0, 1_700_000_000.0))
    clock.schedule.writers(1000.0, alive=True)
    clock.run_until(1000.0 + 3 * 300.0 + 1)
    times = [t - 1000.0 for t, _ in clock.cycles]
    assert times == pytest.approx([0.0, 300.0, 600.0, 900.0], abs=1e-6)  # no drift
    assert {reason for _, reason in clock.cycles} == {"interval"}


def test_nodes_take_their_own_slot_of_the_shared_wall_clock():
    from hf_mpwriter.uploader.coordination.plan import make_budget, make_plan

    plan = make_plan(make_budget(), "hub", 4, 1, 60.0, HUB_SPACING / 2)
    for node in range(4):
        interval, phase = plan.own_pacing(node, 60.0)
        assert interval == plan.own_every() and phase == node * plan.own_gap  # the scenario: slots one gap apart
        wall = 1_700_000_123.0
        clock = Clock(Schedule(pacing(interval=interval, phase=phase), 50.0, wall), now=50.0, wall=wall)
        clock.schedule.writers(50.0, alive=True)
        clock.run_until(50.0 + 3 * interval)
        assert len(clock.cycles) >= 2
        for t, _ in clock.cycles:  # every commit on this node's slot of the wall clock
            at_wall = wall + (t - 50.0)
            offset = (at_wall - phase) % interval
            assert min(offset, interval - offset) < 0.06
        gaps = [b - a for (a, _), (b, _) in zip(clock.cycles, clock.cycles[1:])]
        assert min(gaps) >= interval / 2  # never more often than once per interval (a turn skipped at worst)


@pytest.mark.parametrize("kind", ["hub", "bucket"])
@pytest.mark.parametrize("nodes", [2, 8, 64, 1024])
def test_nodes_without_a_store_keep_to_the_jobs_budget_together(monkeypatch, tmp_path, kind, nodes):
    """A job without a store (``HF_MPWRITER_JOB_STORE=0``, none in the environment): each node commits
    at its own slot of the job's budget, so the nodes together stay within its commits an hour (a
    repository) and its API requests per 5 minutes, whatever their number. (Before: a repository's nodes
    took the Hub's whole rate, a bucket's every interval, past the requests: 8 nodes, 2 requests each,
    every 10 s.)"""
    from hf_mpwriter.targets.bucket import BucketTarget
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.uploader.coordination.factory import situation
    from hf_mpwriter.uploader.coordination.pacing import pacing as node_pacing
    from hf_mpwriter.uploader.coordination.plan import LEADER_SHARE, OWN_REQUESTS_PER_WRITE, make_budget

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    every = 10.0 if kind == "bucket" else 300.0
    config = UploadConfig(kind=kind, prefix="tb", commit_every=every, nodes=nodes, node_rank=nodes - 1)
    target = (BucketTarget("me/logs", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:1") if kind == "bucket"
              else HubTarget("me/run", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:1"))
    interval, phase = node_pacing(situation(config, target))[:2]
    budget = make_budget()
    assert interval >= every and 0 <= phase < interval
    writes_per_hour = nodes * 3600 / interval
    if kind == "hub":
        assert writes_per_hour <= budget.commits_per_hour + 1e-9, writes_per_hour
    requests_per_5min = writes_per_hour / 12 * OWN_REQUESTS_PER_WRITE[kind]  # (each node's own writes)
    assert requests_per_5min <= budget.requests_per_5min * LEADER_SHARE + 1e-9, requests_per_5min
    alone = situation(dataclasses.replace(config, nodes=1, node_rank=0), target)
    assert node_pacing(alone)[:2] == (every, None)  # one node: its own interval, no slot


def test_a_new_pacing_brings_the_next_cycle_forward_but_never_within_half_an_interval_of_the_last():
    """``Schedule.repace``: a node's uploader that finds its logdir shared by every node (the job's one
    uploader) goes from its own slot among many nodes to every ``commit_every``, from its next turn."""
    wall = 1_699_999_200.0  # a whole number of hours: a turn now
    clock = Clock(Schedule(pacing(interval=3600.0, phase=0.0), 1000.0, wall), now=1000.0, wall=wall)
    clock.schedule.writers(1000.0, alive=True)
    clock.run_until(1001.0)
    assert clock.cycles and clock.schedule.next_cycle >= 1000.0 + 1800.0  # the scenario: the next turn is far
    clock.schedule.repace(pacing(interval=60.0, phase=0.0), clock.now, clock.wall)
    assert clock.schedule.next_cycle == pytest.approx(1060.0)  # the new pacing's next turn, half an interval on
    clock.run_until(1000.0 + 60 * 5 + 1)
    times = [t - 1000.0 for t, _ in clock.cycles]
    assert times == pytest.approx([0.0, 60.0, 120.0, 180.0, 240.0, 300.0], abs=0.3)
    far = Schedule(pacing(interval=60.0, phase=0.0), 1000.0, wall)
    far.repace(pacing(interval=3600.0, phase=0.0), 1000.0, wall)  # a slower pacing never delays the turn due
    assert far.next_cycle == 1000.0


def test_a_single_node_keeps_commit_every_within_the_logs_commit_rate():
    """On the Hub with nothing set: its ~128 commits an hour at most; ``HF_MPWRITER_COMMITS_PER_HOUR`` sets
    the rate on any endpoint (more, for one that accepts more; fewer); another endpoint states none."""
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.uploader.coordination.factory import situation
    from hf_mpwriter.uploader.coordination.pacing import pacing as node_pacing

    target = HubTarget("me/run", prefix="tb", token="hf_x", endpoint="http://127.0.0.1:1")
    every = UploadConfig(kind="hub", prefix="tb", commit_every=1.5)

    def interval(**settings) -> float:
        return node_pacing(situation(dataclasses.replace(every, **settings), target))[0]

    assert interval(endpoint="https://huggingface.co") == HUB_SPACING
    assert interval(endpoint="https://huggingface.co", commits_per_hour=3600) == 1.5
    assert interval(endpoint="http://127.0.0.1:1", commits_per_hour=20) == 180.0
    assert interval(endpoint="http://127.0.0.1:1") == 1.5


def test_until_turn_lands_on_the_slot_and_waits_at_least_after():
    assert until_turn(100.0, 30.0, wall=1010.0) == pytest.approx(20.0)
    assert until_turn(100.0, 30.0, wall=1010.0, after=50.0) == pytest.approx(120.0)
    assert until_turn(0.0, 0.0, wall=5.0) == 0.0


def test_a_trigger_settles_then_respects_the_target_spacing():
    schedule = Schedule(pacing(), 0.0, 0.0)
    clock = Clock(schedule, now=0.0)
    schedule.writers(0.0, alive=True)
    clock.run_until(1.0)  # the first (backlog) cycle at 0
    assert [r for _, r in clock.cycles] == ["interval"]
    schedule.trigger(clock.now)
    clock.run_until(HUB_SPACING + 1)
    when, reason = clock.cycles[1]
    assert reason == "a writer asked for a commit" and when == pytest.approx(HUB_SPACING, abs=0.06)
    # later, with the spacing long past: it waits only for the others' last records
    clock.now = 200.0
    schedule.trigger(200.0)
    clock.run_until(201.0)
    assert clock.cycles[2][0] == pytest.approx(200.0 + SETTLE_S, abs=0.06)
    decision = schedule.decide(clock.now, drained=False, retry_due=False)
    assert decision.action is Action.WAIT and decision.wait == pytest.approx(300.0 - clock.now)  # the next interval


def test_a_trigger_skips_the_backoff_but_the_interval_does_not():
    schedule = Schedule(pacing(), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    assert schedule.decide(0.0, drained=False, retry_due=False).urgent is False
    schedule.cycled(0.0, 0.0, "interval")
    schedule.trigger(100.0)
    decision = schedule.decide(100.0 + SETTLE_S, drained=False, retry_due=False)
    assert decision.action is Action.CYCLE and decision.urgent


def test_the_last_writer_gone_commits_at_once_whatever_the_spacing():
    schedule = Schedule(pacing(), 0.0, 0.0)
    clock = Clock(schedule, now=0.0)
    schedule.writers(0.0, alive=True)
    clock.run_until(0.1)
    schedule.trigger(5.0)  # a rank closed 5 s after the last commit: the spacing would hold it ~23 s
    clock.now = 5.0
    assert schedule.decide(5.0 + SETTLE_S, drained=False, retry_due=False).action is Action.WAIT
    schedule.writers(5.2, alive=False)  # ...but it was the last one
    decision = schedule.decide(5.2, drained=False, retry_due=False)
    assert decision.action is Action.CYCLE and decision.urgent and decision.reason == "the last writer is gone"
    schedule.cycled(5.3, 5.3, decision.reason)
    # then drain attempts are spaced as the target wants
    clock.now = 5.3
    clock.run_until(5.3 + HUB_SPACING + 0.2)
    assert clock.cycles[-1][1] == "draining: every writer is gone"
    assert clock.cycles[-1][0] == pytest.approx(5.3 + max(HUB_SPACING, FINAL_GAP_S), abs=0.06)


def test_writers_gone_exit_when_drained_or_after_drain_timeout():
    schedule = Schedule(pacing(drain_timeout=60.0), 0.0, 0.0)
    schedule.writers(0.0, alive=False)
    done = schedule.decide(1.0, drained=True, retry_due=False)
    assert done.action is Action.EXIT and done.code == 0
    clock = Clock(schedule, now=1.0)
    end = clock.run_until(1000.0, step=1.0)
    assert end is not None and end.code == 1 and 60.0 < clock.now <= 62.0
    # a writer coming back resets it all
    schedule = Schedule(pacing(drain_timeout=60.0), 0.0, 0.0)
    schedule.writers(0.0, alive=False)
    schedule.writers(59.0, alive=True)
    schedule.writers(61.0, alive=False)
    assert schedule.decide(62.0, drained=False, retry_due=False).action is Action.CYCLE


def test_writers_gone_never_give_up_before_the_time_the_target_asked_to_wait_for():
    """A node's last records put off by the job's leader (or a Retry-After) past ``drain_timeout``: the
    uploader keeps trying until that time and one more try after it, not a second less (the drain time
    it states is the time it waits); with nothing held, it gives up after ``drain_timeout`` as before."""
    schedule = Schedule(pacing(drain_timeout=60.0, final_gap=5.0), 0.0, 0.0)
    schedule.writers(0.0, alive=False)
    schedule.held_until = 200.0  # the leader's put-off, as the loop hands it down
    clock = Clock(schedule, now=1.0)
    end = clock.run_until(1000.0, step=1.0)
    assert end is not None and end.code == 1 and 205.0 < clock.now <= 207.0, clock.now
    assert any(200.0 <= at <= 206.0 for at, _ in clock.cycles), clock.cycles  # tried once its time had come


def test_watch_mode_never_exits_for_lack_of_writers():
    schedule = Schedule(pacing(watch=True, drain_timeout=1.0), 0.0, 0.0)
    schedule.writers(0.0, alive=False)
    clock = Clock(schedule, now=0.0)
    assert clock.run_until(700.0, drained=lambda c: True, step=1.0) is None
    assert [r for _, r in clock.cycles] == ["interval", "interval", "interval"]


def test_sigterm_commits_after_settling_whatever_the_interval_and_spacing():
    schedule = Schedule(pacing(), 0.0, 0.0)
    clock = Clock(schedule, now=0.0)
    schedule.writers(0.0, alive=True)
    clock.run_until(40.0)  # one cycle at 0; the next regular one would be at 300
    schedule.trigger(39.0)  # and a trigger still held by the spacing
    schedule.terminate(40.0)
    decision = schedule.decide(40.0, drained=False, retry_due=False)
    assert decision.action is Action.WAIT and 0 < decision.wait <= SETTLE_S
    decision = schedule.decide(40.0 + SETTLE_S, drained=False, retry_due=False)
    assert decision.action is Action.CYCLE and decision.urgent
    schedule.cycled(41.0, 41.0, decision.reason)
    # the ranks flushed more after the snapshot: again, TERM_GAP_S later, not a spacing later
    assert schedule.decide(41.5, drained=False, retry_due=False).action is Action.WAIT
    assert schedule.decide(41.0 + TERM_GAP_S, drained=False, retry_due=False).action is Action.CYCLE
    schedule.cycled(42.0, 42.0, "x")
    # everything committed, but a rank still runs its handler: wait for it, do not exit yet
    assert schedule.decide(42.5, drained=True, retry_due=False).action is Action.WAIT
    schedule.writers(43.0, alive=False)
    end = schedule.decide(43.0, drained=True, retry_due=False)
    assert end.action is Action.EXIT and end.code == 0


def test_after_sigterm_a_send_put_off_by_0_s_goes_again_at_once_not_a_gap_later():
    """A signalled node of a job whose leader never answered commits its newest files itself as its last: the
    target put the send off by 0 s. With a deadline of seconds, a gap of TERM_GAP_S before it is a third of it."""
    schedule = Schedule(pacing(preemption_deadline=4.0), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    schedule.terminate(10.0)
    assert schedule.decide(10.0 + SETTLE_S, drained=False, retry_due=False).action is Action.CYCLE
    schedule.cycled(11.5, 11.5, "terminating: last commit", again=True)
    assert schedule.decide(11.5, drained=False, retry_due=False).action is Action.CYCLE
    schedule.cycled(11.6, 11.6, "terminating: last commit")  # it failed: the next try a gap later, as before
    assert schedule.decide(11.6 + TERM_GAP_S / 2, drained=False, retry_due=False).action is Action.WAIT


def test_sigterm_deadline_ends_it_with_the_backlog_counted():
    schedule = Schedule(pacing(preemption_deadline=20.0), 0.0, 0.0)
    schedule.writers(0.0, alive=False)
    schedule.terminate(100.0)
    assert schedule.deadline() == 120.0
    clock = Clock(schedule, now=100.0)
    end = clock.run_until(200.0)  # the target refuses everything: never drained
    assert end is not None and end.code == 1 and 120.0 <= clock.now < 120.1
    times = [t for t, _ in clock.cycles]
    assert times[0] == pytest.approx(100.0 + SETTLE_S, abs=0.06)
    assert all(b - a >= TERM_GAP_S - 1e-9 for a, b in zip(times, times[1:]))
    assert len(times) >= 15  # retried all along, not after a backoff


def test_a_second_signal_exits_at_once():
    schedule = Schedule(pacing(), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    assert schedule.terminate(10.0)
    # The same event delivered twice (every process of the job signalled, a launcher forwarding it too):
    # still the last commit, not an exit.
    assert not schedule.terminate(10.0 + SIGNAL_REPEAT_S / 2)
    assert schedule.deadline() == 10.0 + schedule.pacing.preemption_deadline
    assert schedule.terminate(10.0 + SIGNAL_REPEAT_S)
    assert schedule.deadline() == -math.inf
    end = schedule.decide(10.2 + SIGNAL_REPEAT_S, drained=False, retry_due=False)
    assert end.action is Action.EXIT and end.code == 1
    assert schedule.decide(10.2 + SIGNAL_REPEAT_S, drained=True, retry_due=False).code == 0


def test_retries_after_a_backoff_and_after_local_errors():
    schedule = Schedule(pacing(), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    schedule.cycled(0.0, 0.0, "interval")
    assert schedule.decide(10.0, drained=False, retry_due=False).action is Action.WAIT
    assert schedule.decide(10.0, drained=False, retry_due=True).reason == "a failed job's backoff ran out"
    schedule.failed(20.0, local=True)
    assert schedule.decide(20.0 + LOCAL_RETRY_S - 0.01, drained=False, retry_due=False).action is Action.WAIT
    assert schedule.decide(20.0 + LOCAL_RETRY_S, drained=False, retry_due=False).reason == "retry after a local error"
    schedule.cycled(22.0, 22.0, "retry")
    assert schedule.decide(23.0, drained=False, retry_due=False).action is Action.WAIT


def test_a_local_error_holds_every_rule_until_its_retry():
    """After a local error (a full disk, a locked queue) nothing is tried before ``LOCAL_RETRY_S``: not
    the interval that was due, a writer's request, a job's backoff or the last writer gone (before,
    with no ``cycled()`` between, ``decide`` said CYCLE at once and the loop retried back to back)."""
    schedule = Schedule(pacing(interval=1.0), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    assert schedule.decide(0.0, drained=False, retry_due=False).action is Action.CYCLE  # the backlog
    schedule.failed(0.01, local=True)
    schedule.trigger(0.02)
    for step in range(1, int(LOCAL_RETRY_S / 0.01)):
        now = 0.01 + step * 0.01
        if now > 1.0:
            schedule.writers(now, alive=False)
        decision = schedule.decide(now, drained=False, retry_due=True)
        assert decision.action is Action.WAIT, (now, decision)
        assert 0 < decision.wait <= 0.01 + LOCAL_RETRY_S - now + 1e-9
    assert schedule.decide(0.01 + LOCAL_RETRY_S, drained=False, retry_due=False).action is Action.CYCLE


def test_an_unexpected_error_pauses_even_a_due_interval():
    schedule = Schedule(pacing(interval=1.0), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    schedule.failed(0.0, local=False)
    assert schedule.decide(UNEXPECTED_ERROR_PAUSE_S - 0.1, drained=False, retry_due=True).action is Action.WAIT
    assert schedule.decide(UNEXPECTED_ERROR_PAUSE_S, drained=False, retry_due=False).action is Action.CYCLE


@pytest.mark.parametrize("attempts", range(1, 15))
def test_backoff_grows_with_jitter_and_is_capped(attempts):
    low, high = backoff(attempts, True, None, rand=0.0), backoff(attempts, True, None, rand=0.999999)
    base = min(MAX_BACKOFF_S, 2.0 ** (attempts - 1))
    assert low == pytest.approx(base * 0.5) and high == pytest.approx(base * 1.5, rel=1e-5)
    assert backoff(attempts, False, None, rand=0.0) >= NEEDS_USER_BACKOFF_S  # needs the user: no hammering
    assert backoff(attempts, True, 600.0, rand=0.0) == 600.0  # Retry-After wins


def test_preemption_deadline_setting_is_checked_where_it_enters():
    from hf_mpwriter.errors import ConfigurationError
    from hf_mpwriter.upload_args import check_preemption_deadline

    assert check_preemption_deadline(None) == 20.0
    assert check_preemption_deadline(8) == 8.0
    assert check_preemption_deadline(None, 45.0) == 45.0  # HF_MPWRITER_PREEMPTION_DEADLINE, as the writer read it
    assert check_preemption_deadline(8, 45.0) == 8.0  # the argument wins
    for bad in (0, -1, math.inf, "20", True):
        with pytest.raises(ConfigurationError, match="preemption_deadline must be a positive number"):
            check_preemption_deadline(bad)


def test_a_local_error_holds_back_a_due_interval_and_a_writers_trigger():
    """After a local error (a queue that cannot be opened, a full disk) the next try comes
    ``LOCAL_RETRY_S`` later, not at the next poll because an interval has passed or a closing writer
    asked for a commit: the uploader then retried (and logged) four times a second."""
    schedule = Schedule(pacing(interval=1.0, trigger_gap=0.0), 0.0, 0.0)
    schedule.writers(0.0, alive=True)
    schedule.trigger(0.0)
    assert schedule.decide(5.0, drained=False, retry_due=False).action is Action.CYCLE  # the scenario: both due
    schedule.failed(5.0, local=True)
    wait = schedule.decide(5.0 + POLL_S, drained=False, retry_due=True)
    assert wait.action is Action.WAIT and wait.wait == pytest.approx(LOCAL_RETRY_S - POLL_S), wait
    assert schedule.local_wait(5.0 + POLL_S) == wait  # what the loop asks before it reads the queue at all
    assert schedule.local_wait(5.0 + LOCAL_RETRY_S) is None
    assert schedule.decide(5.0 + LOCAL_RETRY_S, drained=False, retry_due=False).action is Action.CYCLE
    schedule.failed(10.0, local=True)
    schedule.terminate(10.1)
    held = schedule.local_wait(10.2)  # a signal: retried as often as a last commit is, not LOCAL_RETRY_S
    assert held is None or held.wait <= TERM_GAP_S, held


# -- one rate gate: a writer's triggers too ----------------------------------------------------------------------
@pytest.mark.parametrize("layout,per_hour,endpoint,bound", [
    ("store-less-nodes", 20, "http://127.0.0.1:9", 2 * 20),
    ("store-less-nodes", None, "http://127.0.0.1:9", 2 * 32),  # the job's default budget, 32 an hour
    ("shared-logdir", 20, "http://127.0.0.1:9", 2 * 20),
    ("shared-logdir", None, "https://huggingface.co", 128),  # one uploader: the Hub's own rate
], ids=["store-less-explicit", "store-less-default", "shared-explicit", "shared-default"])
def test_triggers_every_5_s_keep_a_jobs_commits_within_twice_its_budget(layout, per_hour, endpoint, bound):
    """``scheduler.trigger()`` every 5 s in every node of a 4-node job without a leader (``HF_MPWRITER_JOB_STORE=0``,
    node-local logdirs), or in the one uploader of a logdir every node shares: the job's commits in any hour stay
    within twice its budget (the rule's margin: ``HF_MPWRITER_COMMITS_PER_HOUR``, or the job's default), and a single
    uploader within the Hub's rate. The real :class:`NodePacing` and :class:`Schedule`, on a virtual clock of two hours."""
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.uploader.node_pacing import NodePacing

    nodes = 4 if layout == "store-less-nodes" else 1
    commits: list[float] = []
    for k in range(nodes):
        config = dataclasses.replace(UploadConfig.for_hub("me/run", prefix="tb", commit_every=5.0), endpoint=endpoint,
                                     nodes=4, node_rank=k, commits_per_hour=per_hour)
        node = NodePacing(config, HubTarget("me/run", prefix="tb", token="x", endpoint=endpoint))
        node._shared = layout == "shared-logdir"  # (as repace_if_shared finds it: live writers on several hosts)
        clock = Clock(Schedule(node.settings(watch=False), 1000.0, 1_700_000_000.0))
        for t in range(0, 7200, 5):
            clock.schedule.trigger(clock.now)
            clock.run_until(1000.0 + t + 5)
        commits += [when for when, _ in clock.cycles]
    assert len(commits) > 7200 / 3600 * bound / 4, "the scenario: the triggers made commits"
    busiest = max(sum(1 for c in commits if start <= c < start + 3600) for start in commits)
    assert busiest <= bound, (busiest, bound)
    if nodes > 1:  # and the asks ride each node's own slot: the nodes' commits stay apart, never together
        times = sorted(commits)
        assert min(b - a for a, b in zip(times, times[1:])) > 5.0, times[:8]
