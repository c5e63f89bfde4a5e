"""The job's budget on the Hub (issue 32, items 2 and 4): the plan at any size, and the real leader and
nodes keeping to it against the test Hub, which enforces the Hub's commit rate and answers 429.

Real: the leader and node code (``Leader``, ``JobTarget``), a TCPStore, the test Hub with the real
huggingface_hub client. Time is compressed by shortening the budget's windows (``Budget.scaled``) and
the test Hub's the same way; the rates per window are the ones named.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest
from test_job_commit import REPO, _commit_when_due, _leading, _log_commits, _pieces
from upload_helpers import TOKEN, as_process_hub, commit_time, wait_for

from hf_mpwriter.config import UploadConfig
from hf_mpwriter.errors import Deferred, TargetError
from hf_mpwriter.targets.base import UploadedFile
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.testing import HubServer
from hf_mpwriter.testing.limits import HubLimits
from hf_mpwriter.uploader.coordination.leader import Leader
from hf_mpwriter.uploader.coordination.member import JobTarget, store_prefix
from hf_mpwriter.uploader.coordination.pacing import Situation, Store, pacing
from hf_mpwriter.uploader.coordination.plan import (
    LEADER_ROOM,
    LEADER_SHARE,
    PLAN_SLACK,
    REQUESTS_PER_WRITE,
    Books,
    Budget,
    make_budget,
    make_plan,
    start_pacing,
)
from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress
from hf_mpwriter.uploader.node_pacing import NodePacing
from hf_mpwriter.uploader.schedule import Schedule, until_turn

dist = pytest.importorskip("torch.distributed")


@pytest.mark.parametrize("kind", ["hub", "bucket"])
@pytest.mark.parametrize("nodes", [1, 2, 8, 64, 256, 1024, 4096])
def test_the_plan_keeps_any_job_within_the_default_budget(kind, nodes):
    """At any size: each write at most the budget's files, the repository's commits per hour and the
    leader's API requests per 5 minutes within the budget, every node in exactly one group."""
    budget = make_budget()
    plan = make_plan(budget, kind, nodes, files_per_node=8, commit_every=300.0 if kind == "hub" else 10.0, spacing=14.0)
    writes_per_hour = plan.groups * 3600 / plan.interval
    assert plan.per_commit * 8 <= budget.files_per_commit
    assert plan.groups * plan.per_commit >= nodes > (plan.groups - 1) * plan.per_commit
    requests_per_5min = writes_per_hour / 12 * REQUESTS_PER_WRITE[kind] * math.ceil(plan.per_commit * 8 / 1000)
    assert requests_per_5min <= budget.requests_per_5min * LEADER_SHARE + 1e-9, requests_per_5min
    if kind == "hub":
        assert writes_per_hour <= budget.commits_per_hour + 1e-9, writes_per_hour
    phases = {plan.pacing(node)[1] for node in range(nodes)}
    assert len(phases) == plan.groups  # one slot per group: the groups never offer together


def test_at_1024_nodes_each_ranks_newest_record_has_a_stated_age():
    """The issue's numbers at 1,024 nodes of 8 ranks: a repository within 32 commits an hour and each node
    committed at least every 30 minutes; a bucket every 30 s at most (the plan's interval bounds the age)."""
    budget = make_budget()
    repo = make_plan(budget, "hub", 1024, 8, commit_every=300.0, spacing=14.0)
    bucket = make_plan(budget, "bucket", 1024, 8, commit_every=10.0, spacing=0.0)
    assert budget.commits_per_hour == 32
    assert repo.interval <= 30 * 60, repo
    assert bucket.interval <= 30, bucket


@pytest.mark.parametrize("kind,commit_every", [("hub", 300.0), ("bucket", 10.0)])
@pytest.mark.parametrize("nodes", [2, 256, 1024, 4096])
def test_the_leaders_node_offers_at_the_groups_slots_so_the_job_run_rides_with_their_writes(kind, commit_every, nodes):
    """Issue 53: the job run is written on the leader's node and rode only with its own group's commit, once
    an interval (18.8 min at 1,024 nodes on a repository). Where the groups fill the interval, the leader's
    node offers at every k-th group slot (no more often than the job run changes, a round of the exchange),
    each group leaves room for its files, and no slot of its falls outside a group's (no write of its own)."""
    budget = make_budget()
    plan = make_plan(budget, kind, nodes, files_per_node=8, commit_every=commit_every, spacing=14.0 if kind == "hub" else 0.0)
    changes_every = min(commit_every, 30.0)
    situation = Situation(commit_every=commit_every, rate_interval=commit_every, nodes=nodes, node=0, kind=kind,
                          budget=budget, files=8, store=Store.PLANNED, plan=plan, leading=True, job_run_every=changes_every)
    interval, phase, case = pacing(situation)
    ride = plan.leader_pacing(changes_every)
    assert ride is not None or nodes == 2 or kind == "bucket"  # a repository's groups fill its interval: it rides
    if ride is None:  # one group, or idle time between the groups' writes: its group's slot, as any node's
        assert (interval, phase, case) == (*plan.pacing(0), "member")
        return
    assert case == "leader" and (interval, phase) == ride
    assert changes_every <= interval < plan.interval  # fresher than its group's, never busier than the job run
    slots = {round(k * plan.gap, 6) % round(plan.interval, 6) for k in range(plan.groups)}  # the groups' (phases)
    assert all(round(k * interval, 6) % round(plan.interval, 6) in slots for k in range(int(plan.interval / interval) + 1))
    assert (plan.per_commit + LEADER_ROOM) * 8 <= budget.files_per_commit  # a group's write has room for its files
    if kind == "hub" and nodes >= 1024:
        assert interval <= 3 * 60 < plan.interval, (interval, plan)  # the issue: the job run within 3 minutes


@pytest.mark.parametrize("kind,commit_every", [("hub", 300.0), ("bucket", 10.0)])
@pytest.mark.parametrize("nodes", [8, 256, 301, 1024, 4096])
def test_the_jobs_start_follows_the_plans_slots_within_one_interval(kind, commit_every, nodes):
    """Before the leader's first plan, each node's first cycle is where ``start_pacing`` puts it, from one
    start moment, for nodes of 8 ranks: a job of one group together, within ``commit_every``; else the nodes
    of a group together, the groups one after the other at least the leader's gap apart (their offers come
    as the leader writes them: none waits for another group's write), every node's first cycle within one
    plan interval, on a repository and on a bucket. The Hub API requests of that start: the leader's writes
    at the plan's pace and the job's one Xet token, within the budget in any window (the nodes' first
    uploads use the job's token)."""
    budget = make_budget()
    plan = make_plan(budget, kind, nodes, files_per_node=8, commit_every=commit_every, spacing=14.0)
    start = 1_000_003.7  # the wall clock when every uploader starts (any moment)
    firsts = [start + until_turn(*start_pacing(plan, node, commit_every), start) for node in range(nodes)]
    assert max(firsts) - start <= max(commit_every, plan.interval), (max(firsts) - start, plan.interval)
    groups = [sorted({firsts[n] for n in range(g, min(nodes, g + plan.per_commit))})
              for g in range(0, nodes, plan.per_commit)]
    assert all(len(group) == 1 for group in groups), "a group's nodes offer together"
    moments = sorted(group[0] for group in groups)
    assert len(moments) == len(groups) and all(b - a >= plan.gap - 1e-6 for a, b in zip(moments, moments[1:]))
    writes = budget.api_window_s / plan.interval * plan.groups * REQUESTS_PER_WRITE[kind]  # in any window
    assert writes + 1 <= budget.requests_per_5min, writes


def test_a_node_without_a_plan_paces_its_first_cycle_by_the_jobs_start_pacing(store):
    """The real node: before any answer its pacing is the job's start pacing, from the plan it makes
    itself for the files its launcher's ranks write (node 1000 of 1,024 nodes of 8 ranks: group 8 of 9)."""
    address = StoreAddress("127.0.0.1", store.port, "job-start")
    inner = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint="http://127.0.0.1:9", shared_branch=True)
    node = JobTarget(inner, HubTarget(REPO, prefix="tb", token=TOKEN, endpoint="http://127.0.0.1:9"),
                     JobStore(address, store_prefix(address, inner.key)), 1000, 1024, wait=30.0, spacing=14.0,
                     budget=make_budget(), files_hint=8)
    config = UploadConfig.for_hub(REPO, prefix="tb")
    assert node.plan is None
    interval, phase = pacing(node.situation(config))[:2]
    plan = node.plan_now(8)
    assert (interval, phase) == start_pacing(plan, 1000, config.commit_every)
    assert plan.groups == 9 and phase == pytest.approx(8 * plan.gap) and interval == pytest.approx(plan.interval)


def test_a_leaders_plan_past_its_bounds_is_not_taken_and_the_nodes_next_commit_stays_due(store, tmp_path, monkeypatch):
    """P2: a leader's answer whose plan has ``"interval": Infinity`` was taken: once the node's uploader paced anew
    after that commit, its next regular commit was at ``inf``. A plan's numbers have bounds (``parse_plan``): that plan
    costs the plan, never the commit's answer; the node keeps the pacing it had, and takes the next answer's plan."""
    address = StoreAddress("127.0.0.1", store.port, "job-bad-plan")
    inner = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint="http://127.0.0.1:9", shared_branch=True)
    node = JobTarget(inner, HubTarget(REPO, prefix="tb", token=TOKEN, endpoint="http://127.0.0.1:9"),
                     JobStore(address, store_prefix(address, inner.key)), 1, 2, wait=5.0, spacing=14.0,
                     budget=make_budget(), files_hint=8)
    # (its content is in the Hub's storage: the leader commits it by hash; no Hub here)
    monkeypatch.setattr(inner, "preupload", lambda pieces: [UploadedFile(f"tb/{p.path}", p.sha256, p.size) for p in pieces])
    leader_view = JobStore(address, node.store.prefix)
    settings = NodePacing(UploadConfig.for_hub(REPO, prefix="tb"), node)
    schedule = Schedule(settings.settings(watch=False), time.monotonic(), time.time())

    def committed(plan: dict) -> None:
        """Node 1 commits; the leader answers its offer with a commit and ``plan``; the uploader paces anew."""
        seq = node.offers.seq

        def lead() -> None:
            offer = wait_for(lambda: (json.loads(raw) if (raw := leader_view.get("offer/1") or b"").startswith(b"{")
                                      and json.loads(raw)["seq"] > seq else None), 10, "node 1's offer")
            answer = {"seq": offer["seq"], "commit": "c1", "plan": plan, "next_in": 1.0, "own_in": 2.0}
            leader_view.set("answer/1", json.dumps(answer).encode())  # (an infinity as JSON's ``Infinity``)
            leader_view.add("answered", 1)

        leader = threading.Thread(target=lead)
        leader.start()
        assert node.commit(_pieces(tmp_path, 2, 1000), "node commit") == "c1"
        leader.join()
        now = time.monotonic()
        schedule.cycled(now, time.time(), "interval")
        schedule.repace(settings.settings(watch=False), now, time.time())
        # (a slot at least half an interval after the last cycle: :meth:`Schedule.repace`)
        assert schedule.next_cycle - now <= 1.5 * schedule.pacing.interval < math.inf, (schedule.next_cycle, schedule.pacing)

    own = node.plan_now(8)
    committed({**own.to_json(), "interval": math.inf})
    assert node.plan is None  # not taken: its start pacing goes on
    committed({**own.to_json(), "nodes": 1e300})
    assert node.plan is None
    committed(own.to_json())
    assert node.plan == own  # (the path: a plan within its bounds is taken)


def test_the_books_hold_writes_to_the_budget_and_a_429_slows_the_plan():
    budget = Budget(commits_per_hour=2, requests_per_5min=1000, files_per_commit=1000, commit_window_s=10.0)
    books = Books(budget, "hub")
    assert books.next_free(0.0, 8) == 0.0
    books.wrote(0.0, 8)
    books.wrote(1.0, 8)
    assert books.next_free(2.0, 8) == 10.0  # the third write waits until the first leaves the window
    books.refused(3.0, retry_after=20.0)
    assert books.next_free(11.0, 8) == 23.0 and books.slowdown == 2.0
    slow = make_plan(budget, "hub", 16, 8, commit_every=1.0, spacing=0.0, slowdown=books.slowdown)
    assert slow.gap == 2 * make_plan(budget, "hub", 16, 8, commit_every=1.0, spacing=0.0).gap


def _nodes(hub: HubServer, port: int, count: int, budget: Budget, wait: float = 10.0) -> list[JobTarget]:
    address = StoreAddress("127.0.0.1", port, "job-plan")
    targets = []
    for node in range(count):
        inner = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
        leader = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
        targets.append(JobTarget(inner, leader, JobStore(address, store_prefix(address, inner.key)), node, count,
                                 wait=wait, spacing=0.2, prepared_wait=0.0, budget=budget, commit_every=1.0))
    for target in targets:
        target.prepare()
    return targets


def _each_node_commits(targets: list[JobTarget], tmp_path: Path, rounds: int) -> dict[int, list]:
    """Every node commits ``rounds`` times (its file grows each time), as its queue would: a commit put off
    is tried again when it says. What each node was told: ``(commit id, waits)`` per round."""
    told: dict[int, list] = {t.node: [] for t in targets}
    failures: list[BaseException] = []

    def run(target: JobTarget) -> None:
        try:
            for r in range(rounds):
                pieces = _pieces(tmp_path, target.node, 2000 + 1000 * r)
                told[target.node].append(_commit_when_due(target, pieces, "node commit", limit=60.0))
        except BaseException as exc:  # handed to the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    return told


def _commit_times(hub: HubServer) -> list[float]:
    """When the Hub applied each commit (its history's dates, to the millisecond)."""
    return sorted(commit_time(c) for c in _log_commits(hub))


def test_the_leader_keeps_to_the_commit_budget_and_puts_offers_off_instead_of_letting_nodes_commit(store, tmp_path, monkeypatch):
    """A budget of 2 commits per 15 s (an hour, compressed: longer than a node waits for an answer) and 3
    nodes committing 3 times each as fast as they can: the leader never makes more than 2 commits in any
    15 s, tells the nodes when to offer again instead, and no node commits its files itself; every node's
    last file lands whole."""
    budget = Budget(commits_per_hour=2, requests_per_5min=100_000, files_per_commit=1000, commit_window_s=15.0)
    with HubServer(tokens={TOKEN}) as hub:
        as_process_hub(hub, monkeypatch)  # huggingface_hub 0.x reads commit URLs against it
        hub.create_repo(REPO)
        targets = _nodes(hub, store.port, 3, budget)
        with _leading(targets):
            told = _each_node_commits(targets, tmp_path, rounds=3)
        commits = _log_commits(hub)
        assert any(waits for results in told.values() for _, waits in results), told  # the path: offers were put off
        assert all("from" in c["summary"] and "node(s)" in c["summary"] for c in commits), commits  # only the leader's
        times = _commit_times(hub)
        most = max(sum(1 for t in times if start <= t < start + budget.commit_window_s) for start in times)
        assert most <= budget.commits_per_hour, times
        for target in targets:
            pieces = _pieces(tmp_path, target.node, 4000)
            assert not target.inner.differences(pieces)  # the last round of every node is on the Hub


def test_a_429_from_the_hub_puts_the_nodes_off_and_slows_the_plan(store, tmp_path, monkeypatch):
    """The Hub allows 1 commit per 3 s (its commit rate, compressed) while the budget would allow more: the
    second commit gets the Hub's 429; the leader pauses until its Retry-After, tells the nodes to offer again
    then (no node commits itself, none is lost), and slows the plan (its gap doubled for a window: checked
    on the books in test_the_books_hold_writes_to_the_budget_and_a_429_slows_the_plan)."""
    budget = Budget(commits_per_hour=1000, requests_per_5min=100_000, files_per_commit=1000, commit_window_s=3.0)
    with HubServer(tokens={TOKEN}, limits=HubLimits(commits_per_hour=1, commit_window_s=3.0)) as hub:
        as_process_hub(hub, monkeypatch)  # huggingface_hub 0.x reads commit URLs against it
        hub.create_repo(REPO)
        time.sleep(3.0)  # the repository's creation used the window's one commit
        targets = _nodes(hub, store.port, 2, budget)
        with _leading(targets) as leading:
            told = _each_node_commits(targets, tmp_path, rounds=2)
        leader = leading.leader
        assert hub.stats["limits_hit"].get("commits", 0) >= 1  # the scenario: the Hub refused a commit
        assert leader.books.refusals >= 1  # ... and the leader read it
        waits = [w for results in told.values() for _, ws in results for w in ws]
        assert waits and max(waits) >= 1.0, told  # the nodes were told to wait for the Hub's time
        assert all("node(s)" in c["summary"] for c in _log_commits(hub))  # the leader's commits only
        for target in targets:
            assert not target.inner.differences(_pieces(tmp_path, target.node, 3000))


def test_nodes_without_a_leader_commit_themselves_at_the_jobs_pace(store, tmp_path, monkeypatch):
    """No leader anywhere (the store answers, nobody leads): each of 4 nodes commits its files itself,
    at its own slot of the job's budget (one commit per ``own_gap`` for the whole job), not all at once."""
    budget = Budget(commits_per_hour=4, requests_per_5min=100_000, files_per_commit=1000, commit_window_s=4.0)
    with HubServer(tokens={TOKEN}) as hub:
        as_process_hub(hub, monkeypatch)  # huggingface_hub 0.x reads commit URLs against it
        hub.create_repo(REPO)
        targets = _nodes(hub, store.port, 4, budget, wait=0.3)  # no target is started: no leader thread
        own_gap = targets[0].plan_now(1).own_gap
        assert own_gap == pytest.approx(budget.commit_window_s / budget.commits_per_hour / PLAN_SLACK)
        _each_node_commits(targets, tmp_path, rounds=2)
        commits = _log_commits(hub)
        assert len(commits) == 8 and all(c["summary"] == "node commit" for c in commits)  # the path: own commits
        times = _commit_times(hub)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) >= own_gap * 0.5, gaps  # one node at a time: slots own_gap apart, never together
        for target in targets:
            assert not target.inner.differences(_pieces(tmp_path, target.node, 3000))


def test_a_nodes_last_records_go_in_the_next_commit_whatever_the_budget(store, tmp_path, monkeypatch):
    """A budget of 1 commit per minute, spent: a node's offer is put off, until its writers are gone (the
    job ends, ``closing``): then its last records go in the leader's next commit, not a minute later."""
    budget = Budget(commits_per_hour=1, requests_per_5min=100_000, files_per_commit=1000, commit_window_s=60.0)
    with HubServer(tokens={TOKEN}) as hub:
        as_process_hub(hub, monkeypatch)  # huggingface_hub 0.x reads commit URLs against it
        hub.create_repo(REPO)
        targets = _nodes(hub, store.port, 2, budget)
        with _leading(targets):
            first = targets[0].commit(_pieces(tmp_path, 0, 2000), "node commit")  # the minute's one commit
            with pytest.raises(Deferred) as put_off:  # the path: without closing, node 1 waits for the budget
                targets[1].commit(_pieces(tmp_path, 1, 2000), "node commit")
            assert put_off.value.retry_after and put_off.value.retry_after > 30, put_off.value
            targets[1].closing = True
            last = targets[1].commit(_pieces(tmp_path, 1, 2500), "node commit")
        assert [c["oid"] for c in _log_commits(hub)] == [last, first]  # the leader's two commits, newest first
        assert not targets[1].inner.differences(_pieces(tmp_path, 1, 2500))



def test_a_commit_that_timed_out_halves_the_leaders_next_commits():
    """A commit the Hub gave up on (its 60 s server timeout: a 504) or the client's read timeout ended:
    the leader's next commits hold half as many files, and grow back by half after each success. (The
    error is classified where huggingface_hub's exception is met, ``hub_client.classify``; a real read
    timeout in this process would need its client configured for the whole process, which
    ``tests/test_client.py`` does in a process of its own.)"""
    from types import SimpleNamespace

    from hf_mpwriter.targets.hub_client import classify

    def classified(exc: BaseException) -> TargetError:
        return classify(exc, "commit", "model repo 'a/b'", None, missing="gone", fix_missing="")

    def answered(status: int) -> Exception:
        """An error with the Hub's answer, as huggingface_hub's HTTP errors carry it (``response``)."""
        error = Exception(f"HTTP {status}")
        error.response = SimpleNamespace(status_code=status, headers={})  # type: ignore[attr-defined]
        return error

    timed_out = classified(TimeoutError("The read operation timed out"))  # the socket's own
    gateway, moved = classified(answered(504)), classified(answered(412))
    assert timed_out.timed_out and gateway.timed_out and not moved.timed_out and moved.transient

    unused = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint="http://127.0.0.1:9")  # (never called)
    leader = Leader(target=unused, store=_unused_store(), node=0, nodes=2, spacing=1.0)
    leader._failed(moved, {})
    assert leader.max_files == 1000  # a moved branch says nothing about the commit's size
    leader._failed(timed_out, {})
    assert leader.max_files == 500


def _unused_store() -> JobStore:
    """A store the test never calls (nothing listens there): a leader's decisions alone."""
    return JobStore(StoreAddress("127.0.0.1", 9, "job-unused"), "p")


@pytest.mark.parametrize("kind", ["hub", "bucket"])
def test_a_node_takes_only_a_plan_the_jobs_settings_can_give(kind):
    """Every number of a hostile plan can be finite and within its bound and still stall a node (a cycle of 86,000
    years) or flood the Hub (an interval of a microsecond): a node takes a leader's plan only where the job's settings
    can give it (:func:`plausible`), against the plan it makes itself; every plan a real leader makes passes."""
    import dataclasses

    from hf_mpwriter.uploader.coordination.plan import MAX_SLOWDOWN, plausible

    budget, nodes = make_budget(), 1024
    own = make_plan(budget, kind, nodes, 1, 300.0, 14.0)
    for files, max_files, slowdown in ((1, 1000, 1.0), (8, 1000, 1.0), (64, 20, MAX_SLOWDOWN), (8, 500, 2.0)):
        assert plausible(make_plan(budget, kind, nodes, files, 300.0, 14.0, max_files, slowdown), own)
    for hostile in (dataclasses.replace(own, nodes=2**20, own_gap=30 * 86400.0),  # its own slot 86,000 years away
                    dataclasses.replace(own, nodes=1, interval=1e-6, own_gap=1e-9, gap=1e-9),  # a commit every cycle
                    dataclasses.replace(own, interval=30 * 86400.0),  # its next offer 30 days away
                    dataclasses.replace(own, per_commit=0)):
        assert not plausible(hostile, own), hostile
