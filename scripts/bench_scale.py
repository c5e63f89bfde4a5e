"""How big a job one leader serves, by simulation: issue 32's "Done when" numbers for a repository and a
Storage Bucket at 64, 256 and 1,024 nodes of 8 ranks, with the job's default settings.

TIME IS COMPRESSED by ``--scale`` (60: a Hub-hour in a real minute). Every time this script prints is in
Hub time (real seconds times the scale). What is compressed, and how:

- the leader's budget is ``make_budget(...).scaled(scale)`` (the rates per window stay the Hub's: 32
  commits an hour to a repository, 400 API requests per 5 minutes, 1,000 files a commit);
- the test Hub enforces a free account's limits compressed the same way:
  ``HubLimits(api_requests_per_window=1000, window_s=300/scale, commits_per_hour=128,
  commit_window_s=3600/scale)``, so a design that overspends gets 429s (counted: ``limits_hit``);
- the leader's spacing (half the Hub's ~28 s for a repository, 0 for a bucket) and ``commit_every``
  (300 s for a repository, 10 s for a bucket) are divided by the scale, and so are ``JOB_GATHER_S`` (2 s:
  how long a round gathers offers after the first, which must stay below the plan's gap) and
  ``DEFER_AFTER_S`` (10 s: how long the leader holds offers waiting for the budget's room before it puts
  them off; unscaled it would hold them 10 × scale Hub-seconds). Module constants of
  ``hf_mpwriter.uploader.coordination.leader``, set in the leader processes before the Leader starts.
- NOT scaled (real seconds, so times scale × longer in Hub time here than in a job): the waits about
  processes, not the Hub: ``LEASE_STALE_S`` (10 s: a standby takes a lease over 10 s real after its last
  renewal, i.e. 10 × scale Hub-seconds here), ``LEADER_POLL_S`` (a round every 0.5 s real, which adds up
  to 0.5 × scale Hub-seconds to a commit's latency here, and at a bucket's scale 5 lets two groups' offers
  meet in one round: ``--poll-scaled`` scales it), ``OFFER_WAIT_S`` (30 s: how long a node waits
  for an answer, and how old an offer the leader still takes; scaled, it would fall below the unscaled
  poll) and ``STORE_RETRY_S`` (30 s), and everything the processes do (a commit of 1,000 files to
  the test Hub takes what it takes on this 2-core machine, in real seconds, times the scale in Hub time).
  The default scale is 60 for a repository (poll: 30 Hub-seconds against an interval of 5 to 17
  minutes), 5 for a bucket (poll: 2.5 Hub-seconds against a 30 s goal) and 600 for a repository's
  ``kill-store`` (1,024 nodes' own commits at the Hub's 128 an hour take 8 Hub-hours; with successor stores,
  ``--scale 60`` is the measure: the unscaled seconds of finding the store lost count 600-fold at 600).

WHAT IS REAL: the ``Leader`` (hf_mpwriter.uploader.coordination.leader), run as the job runs it: two processes
(node 0 and node 1's uploaders), each with its own ``Leader`` thread pair, one leading, the other a
standby watching the lease; the store (torch's TCPStore, in a process of its own, over loopback); the
test Hub (``hf_mpwriter.testing.HubServer``, in this process) with the Hub's limits on, driven by the
real huggingface_hub client: the leader's commits by sha256 (a bucket: batches by Xet hash) and its
verifications (``paths_info``); ``Plan.pacing`` and ``Plan.own_turn`` for when each simulated node
offers or commits; ``HubTarget.commit_uploaded`` for the nodes' own commits once the store is gone; the
read-back at the end (``HfApi.get_paths_info`` / ``get_bucket_paths_info``). The leader processes count
per round ``JobStore.round_trips`` and time each round (a subclass that wraps ``_round``; the lease
thread's renewals, one round trip per 0.5 s, share that store and may fall into a round's count).

WHAT IS SIMULATED: the nodes. One loop in this process (not 1,024 threads) keeps each node's next due
time: the slots of the latest plan the node got in an answer, which says them as seconds from now and the
node turns into phases of its own clock (``Plan.phases``; before that the job's start pacing,
``plan.start_pacing``, production's ``pacing(target.situation(config))``). ``--skew S``: the leaders' wall clocks run S seconds
ahead of the nodes' (negative: behind; their monotonic clocks do not), as hosts' clocks can. Each due
node's offer is written exactly as ``JobTarget.commit`` writes it (``offer/{node}`` =
``{"seq","incarnation","wait","waiting","last","files":[[path, sha256, size, xet_hash], ...]}``), but the
offers due in one tick go in one ``multi_set``, and ``offered`` is bumped once per tick by their number
(a node bumps it by 1). The nodes announce themselves as ``JobTarget._announce`` does (``incarnation``,
``offer`` = ``-``, ``answer`` = ``{}``, ``members``), batched too. Answers are read as a node reads them,
batched: poll ``answered``, and when it moved, ``multi_get`` the waiting nodes' answers. A commit answer
sets the node's next slot; a deferral (``retry_in``) makes it offer again then; no answer within
``OFFER_WAIT_S`` makes it take the offer back (``compare_set`` to ``-``; one the leader claimed first is
awaited instead) and commit itself at its ``Plan.own_turn``, a due time it keeps, or, if that is later
than ``STORE_RETRY_S``, offer again then (as ``JobTarget`` does).
The content: 48 event-file contents, each longer than the one before, uploaded once to the Hub's storage (Xet); a
node's k-th offer's files point at content k (at most the 47th: the same again after, past the ~33 offers a node
makes in the longest run here), and its last records at the 48th, so that a node's files only grow, as event files
do (a leader writes no offer the target holds longer: ``Leader._not_behind``), and the read-back can tell an old
version from the newest. A node's data
is "written up to" the moment it offers; a rank's newest record's age at the target, sampled at random moments a
Hub-minute apart on average (fixed ones would alias with the interval) after a warm-up (the job's start: until every
node's first offer is held; then one plan interval), is now minus the offer time of its node's newest offer that the
Hub holds (answered with a commit, or committed by the node itself).

WHAT IS MODELLED, not measured: the nodes' own Hub API requests (the simulator makes none but the own
commits of ``kill-store``): the job's one Xet write token (the leader fetches it and shares it through the
store; the nodes upload their content themselves with it) at the first offer and every Hub-hour after it,
each in the 5-minute window it falls in,
and the audits the nodes share while a leader commits (``JOB_AUDITORS`` = 8 audits of one ``paths_info``
per ``AUDIT_EVERY_S`` = 600 s for a repository, ``BUCKET_AUDIT_EVERY_S`` = 60 s for a bucket), in a
column of their own next to the measured requests; the limit applies to both together. The requests
are counted from the job's first second (the start included); the ages after the warm-up, whose length
is reported (``start_s``: the last node's first records at the Hub). The leader's store work at 0.3 ms
a round trip (a cross-node store) is its counted round trips × 0.3 ms; the loopback time is measured too.

SCENARIOS (``--scenario``):
- ``steady``: a warm-up (until every node's first offer is held: the processes' first HTTP calls take
  seconds, and a big job starts a group at a time, ``plan.start_pacing``; then one plan interval),
  then at least 1.5 plan intervals and one Hub-hour (a repository: commits per hour are measured, not
  extrapolated) or two API windows (a bucket).
- ``kill-leader``: as steady; after the warm-up and one more interval, SIGKILL the leading process (the
  pid in the lease); report the time until the standby's first commit, in plan intervals (mostly the
  unscaled ``LEASE_STALE_S``: 10 s real, i.e. 10 × scale Hub-seconds here). The nodes whose offers the killed
  leader had claimed (it may have been mid-commit) wait ``Offers.taken_wait`` before they offer again, three offer
  waits of real seconds (90 Hub-minutes at scale 60; 90 s in production): their ages are reported apart, and a
  file the Hub holds newer than its node was answered (the claimed commit landed) is counted as such, not stale.
- ``kill-store``: node 1's successor store (production's ``SuccessorHost``, served in this process, which
  plays every node's member) copies the job's books; once every node's answers listed it, kill the store's
  process. The nodes move to the successor (production's ``next_store``), and so does the leader's process
  (what its node's member does), where a leader commits for them. Reports how long draining took (every
  node's first commit there after the kill) and the 429s. Where the nodes could not move, each commits its
  own files at once (a real ``HubTarget.commit_uploaded``, a bucket's ``BucketTarget`` write), a refused one
  again after the Hub's ``Retry-After``, as ``JobTarget`` does with the store gone. A repository or a bucket.
  The nodes' own commits are ``commit_uploaded`` of content already in Xet (one Hub API request each; a
  node's own commit in a job also reads the head and verifies: about 5, see DESIGN.md §7).
  The job goes on after the kill by default (``"last": false``: the nodes offer at their plan's slots), which a
  real job does not (see END AT KILL).
- ``kill-store --end-at-kill``: the job ends at the kill, as a torchrun job whose store dies does; see END AT KILL.
- ``leader-cut-off``: node 0's leader process leads first, but its Hub accepts connections and never
  answers (its route to the Hub is down); as steady otherwise. Its head read hangs: after a hand-over
  time (one plan interval, at least the unscaled ``LEASE_STALE_S``) it stops renewing, the lease goes
  stale, and node 1's process leads. Reports the first commit's time and which processes committed.
- ``freeze-leader``: as kill-leader, but the leading process is stopped (SIGSTOP) for 15 s real, past
  the lease's staleness, then woken up: the standby leads meanwhile; no two leaders' commits may
  overlap (checked in every scenario: two committing rounds of different processes whose spans meet).

END AT KILL (``--scenario kill-store --end-at-kill``). In a torchrun job the job's store lives in torchrun's agent
on node 0's host, or in rank 0's process (``env://``): when it dies the other ranks fail and close, and the job
ends. A node's uploader runs in a session of its own (``start_new_session``), so the launcher's signal to its
ranks does not reach it: it sees every writer of its node gone (``closing``, not ``hurried``), cycles at once
(``Schedule``: the last writer gone) and offers its newest files with ``"last": true`` (``JobTarget.commit``:
``self._hurried() or self.closing``), which the leader commits at its next round whatever its budget (``_ready``,
``_round``: a last offer waits for no spacing, gathering or room in the books; what does not fit the commit's
1,000 files goes in the next round), within the Hub's own limits.

- REAL, as in the default ``kill-store``: the store's process SIGKILLed; node 1's successor store
  (``SuccessorHost``); the moves to it (``next_store``), of the simulated nodes and of both leader processes;
  the ``Leader`` in two processes (its lease and new term on the successor, its rounds and commits); the test Hub
  with a free account's limits (compressed); a node's own commits where it makes any (``commit_uploaded``); the
  read-back. Production's ``last_burst`` (``own_commits.py``) says which nodes commit themselves at once.
- SIMULATED, as ``JobTarget`` does for a closing node: every node's writers close at the kill (the ranks' time
  to fail and close is taken as 0: the clock starts at the kill). A node's last records are one version of its
  files that no earlier offer of it held or had pending (the read-back tells them apart), the same each time
  it offers them again. An offer pending in the dead store goes with it (``JobTarget``: the store gone, no
  leader can take it). The bench sees the store gone at its next call and moves every node to the successor at
  once (``Moves.forward`` then ``Deferred(0)``: a node's next cycle offers again at once), where each announces
  itself and offers its last records at once (not at its slot) with ``"last": true``. Then, per node: answered
  with a commit: done (nothing more offered: its uploader exits, everything committed and every writer gone);
  put off (``retry_in``): offered again then (at most a commit window later); an error, or no answer within
  ``OFFER_WAIT_S`` and taken back (``compare_set``): ``JobTarget._own_turn``, i.e. a node below ``last_burst``
  commits its last records itself at once (``OwnCommits.turn(closing=True)``: 16 nodes on a repository at the
  default budget), any other at its own slot (``Plan.own_turn``, a due time it keeps), offering again at least
  every ``STORE_RETRY_S`` meanwhile; one a leader claimed is awaited as in ``kill-store``. Where no successor
  answers, each node commits itself at once (the store gone: ``_own_turn`` is 0), again after a 429's
  ``Retry-After``, until its last records land.
- NOT MODELLED: (1) the leading node's uploader exits once its own node's records landed (everything committed,
  every writer gone: its ``Leader.stop`` lets the lease go) and another waiting node's leader takes the lease
  (its watch: every 2.5 s at 1,024 nodes); here the two leader processes stay up, so one leader commits for all,
  where a job hands the lease on as leading nodes drain (a last offer is not put off by the new term). (2) The
  nodes' uploads of their last content (already in Xet here). (3) Node 0's own death: every node survives (the
  store's process alone dies, as rank 0's ``env://`` store does; node 0's uploader is a process of its own).
  (4) The real Hub's commit latency (the test Hub commits 1,000 files in about 0.1 s).
- REPORTS: from the kill until every node's last records are held (answered with a commit, or its own commit),
  in Hub time and real seconds, and the median node; the leader's first and last commit after the kill; the
  commits after the kill (the leader's, the nodes' own; the most in any Hub-hour); the Hub API requests after
  the kill (measured at the test Hub); the 429s. The read-back checks that every rank's file holds its node's
  last records. MISSED (exit 1): a node's last records not held within ``KILL_STORE_GIVE_UP_S`` (real), a 429
  after the kill, or the read-back. Read the Hub time with care: at ``--scale 60`` what follows the kill is
  mostly unscaled process time, the leader's round poll (``LEADER_POLL_S``, 0.5 s real between rounds) and its
  rounds, each counted 60-fold.

Options that make the nodes less tidy than the simulation otherwise is: ``--spread S`` (each offer 0 to
S Hub-seconds after its slot, as nodes with their own clocks and uploads offer), ``--upload-s S`` (a
node's upload before it offers, counted in the ages), ``--commit-s S`` (the test Hub holds every write of
the leader S Hub-seconds: 60 is the Hub's server timeout).
Every scenario ends by reading back every rank's file: present, with the sha256 (a bucket: Xet hash) and
size of its node's newest committed offer (nothing lost, nothing torn), and checks that no commit holds a
path twice.

    python scripts/bench_scale.py                                   # steady, repo and bucket, 64,256,1024
    python scripts/bench_scale.py --kind repo --nodes 1024 --scenario kill-leader
    python scripts/bench_scale.py --kind repo --nodes 1024 --scenario kill-store
    python scripts/bench_scale.py --kind repo --nodes 1024 --scenario kill-store --scale 60 --end-at-kill
    python scripts/bench_scale.py --nodes 8 --scale 120 --kind repo  # a quick check

It exits 1 when a row misses a limit (``MISSED:`` lines): a file lost, stale or torn; more than 500 Hub
API requests in a 5-minute window; a 429; a rank's newest record older than ``Plan.age_bound`` (two plan
intervals); a bucket's p95 age over 30 s; two leaders' commits overlapping; a node not drained.

A bucket's plan at 1,024 nodes puts 2.6 Hub-seconds between writes; the leader's unscaled 0.5 s poll
weighs ``scale`` times more here, so a bucket wants a small scale (``--scale 2``: one 11-minute row takes
6 minutes). ``BENCH_SCALE_KEEP=dir`` keeps the leaders' logs and their per-round records
(``rounds.jsonl``) of the last row there.

4,096 nodes × 8 ranks is 32,768 rank folders under one folder: the Hub refuses more than 10,000 entries a
folder (the test Hub too), so this layout stops below that.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import logging
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _bench_common import free_port, header, table  # noqa: E402
from bench_requests import api_requests  # noqa: E402

from hf_mpwriter.targets.base import UploadedFile  # noqa: E402
from hf_mpwriter.uploader.coordination.protocol import Answer, Offer  # noqa: E402

TOKEN = "hf_bench_scale_token"
REPO = "bench/scale"
BUCKET = "bench/scale-logs"
ROUND_TRIP_S = 0.3e-3  # a cross-node TCPStore round trip (model)
VERSIONS = 48  # contents an offer's files may point at (:meth:`Nodes.version`: a node's files only grow)
XET_TOKEN_EVERY_S = 3600.0  # model: one Xet write token for the job (the leader's) per Hub-hour
TICK_S = 0.05  # the simulator's loop, real seconds
#: Real seconds between a successor store's copies (and the leader's reads of the successors' addresses).
SUCCESSOR_COPY_REAL_S = 2.0
KILL_STORE_GIVE_UP_S = 600.0  # kill-store: real seconds the simulator waits for every node's own commit
FREEZE_S = 15.0  # freeze-leader: real seconds the leading process stays stopped (past LEASE_STALE_S)
DEFAULT_SCALE = {"repo": 60.0, "bucket": 5.0, "kill-store": 600.0}


# ---------------------------------------------------------------------------------------------------
# a node as production makes it: the writer's settings under torchrun, the uploader's own factory
# ---------------------------------------------------------------------------------------------------
def production_node(kind: str, node: int, nodes: int, ranks: int, scale: float, port: int, job: str,
                    endpoint: str, ranks_known: bool = True) -> tuple[Any, Any]:
    """``(config, target)`` of node ``node``: the settings a rank's writer saves under torchrun (``ranks`` a
    node, the job's store at ``port``), and the target the uploader's factory (``factory.for_job``) makes of
    them, with the Hub's windows ``scale`` times shorter (``JobTiming(windows=scale)``). Its pacing is then
    production's: ``pacing(target.situation(config))``. ``ranks_known=False``: the settings say nothing of the
    node's ranks, as before issue 46 (the uploader's environment lost ``LOCAL_WORLD_SIZE``)."""
    import dataclasses

    from hf_mpwriter.config import writer_settings
    from hf_mpwriter.environment import Environment, Launcher
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.timing import JobTiming
    from hf_mpwriter.uploader.coordination.factory import for_job
    from hf_mpwriter.uploader.coordination.member import JobTarget
    from hf_mpwriter.uploader.schedule import call_bound

    commit_every = (10.0 if kind == "bucket" else 300.0) / scale  # the target's default, in Hub time
    config = writer_settings(Path("tb"), BUCKET if kind == "bucket" else REPO, commit_every=commit_every / 60,
                             repo_type="bucket" if kind == "bucket" else None, path_in_repo=None, nodes=nodes,
                             node_rank=node, world_size=nodes * ranks, env=Environment(),
                             launcher=Launcher(ranks if ranks_known else 0, job, f"127.0.0.1:{port}"))
    assert config is not None
    config = dataclasses.replace(config, endpoint=endpoint)  # the test Hub: no single node's cap of huggingface.co
    target = for_job(config, target_for(config, TOKEN), TOKEN, call_bound(config.http_timeout),
                     JobTiming(windows=scale).scaled(scale, "job_run_wait"))  # (its commit_every is scaled too)
    assert isinstance(target, JobTarget), "the factory made no job target: no store, no torch or no Xet"
    return config, target


# ---------------------------------------------------------------------------------------------------
# the leader's process
# ---------------------------------------------------------------------------------------------------
def leader_main(cfg: dict) -> None:
    """One node's uploader's ``Leader`` (leading or watching), rounds measured into ``cfg['log']``."""
    from hf_mpwriter.targets.bucket import BucketTarget
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.uploader.coordination import leader as job_leader
    from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scale = cfg["scale"]
    config, node_target = production_node(cfg["kind"], cfg["node"], cfg["nodes"], cfg["ranks"], scale, cfg["port"],
                                          cfg["job"], cfg["endpoint"])
    # A round's gathering and how long the leader holds offers for the budget's room, in Hub time; with
    # --poll-scaled, its round poll too (a round per 0.5 Hub-s, as at the Hub's own pace).
    timing = node_target.timing.scaled(scale, "gather", "defer_after", *(["poll"] if cfg.get("poll_scaled") else []))
    timing = dataclasses.replace(timing, successor_copy=SUCCESSOR_COPY_REAL_S)
    skew = float(cfg.get("skew") or 0.0)  # this leader's host clock is off by ``skew`` s (its monotonic clock is not)
    log = open(cfg["log"], "a", buffering=1)

    class TimedStore(JobStore):
        busy = 0.0

        def _bounded(self, call: Any, round_trips: int = 1) -> Any:
            t0 = time.perf_counter()
            try:
                return super()._bounded(call, round_trips)
            finally:
                self.busy += time.perf_counter() - t0

    class MeasuredLeader(job_leader.Leader):
        idle_rounds = 0
        files = 0

        def _round(self) -> None:
            store = self.store
            assert isinstance(store, TimedStore)
            rt, busy, t0, self.files = store.round_trips, store.busy, time.perf_counter(), 0
            try:
                super()._round()
            finally:
                n = store.round_trips - rt
                if n > 1 or self.files:
                    log.write(json.dumps({"t": time.time(), "pid": os.getpid(), "node": self.node, "rt": n,
                                          "store_s": store.busy - busy, "wall": time.perf_counter() - t0,
                                          "files": self.files, "idle_before": self.idle_rounds}) + "\n")
                    self.idle_rounds = 0
                else:
                    self.idle_rounds += 1

    if cfg["kind"] == "bucket":
        target: Any = BucketTarget(BUCKET, prefix="tb", token=TOKEN, endpoint=cfg["endpoint"])
    else:
        target = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=cfg["endpoint"])
    commit_uploaded = target.commit_uploaded

    def counted(files: Sequence[Any], message: str, parent: str | None = None) -> str | None:
        leader.files = len(files)
        return commit_uploaded(files, message, parent=parent)

    target.commit_uploaded = counted
    address = StoreAddress("127.0.0.1", cfg["port"], cfg["job"])
    store = TimedStore(address, cfg["prefix"])
    # What the factory gave the node's own leader (its spacing, budget and interval), measured here.
    leader = MeasuredLeader(target, store, cfg["node"], cfg["nodes"], node_target.spacing, node_target.budget,
                            node_target.commit_every, timing=timing, wall=lambda: time.time() + skew)
    leader.start()
    threading.Thread(target=_follow_successors, args=(leader, store, cfg["job"]), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes it (or kills this process)
    leader.stop()


def _follow_successors(leader: Any, store: Any, job: str) -> None:
    """What this leader's node's member does once the store in use is gone (``Moves.forward``): move
    to the successor stores the leader itself lists in its answers (production's ``next_store``)."""
    from hf_mpwriter.uploader.coordination.store import StoreAddress
    from hf_mpwriter.uploader.coordination.successor import next_store

    gone: set = set()
    while True:
        time.sleep(leader.timing.poll)
        listed = [StoreAddress(host, port, job) for host, port in leader._successors]
        if listed and store.gone():
            gone.add(store.address)
            next_store(store, listed, gone, None)


# ---------------------------------------------------------------------------------------------------
# the bench's side
# ---------------------------------------------------------------------------------------------------
def _store_process(port: int) -> subprocess.Popen:
    code = ("import sys, time, datetime, torch.distributed as d\n"
            f"s = d.TCPStore('127.0.0.1', {port}, is_master=True, wait_for_workers=False, "
            "timeout=datetime.timedelta(seconds=30))\nprint('ready', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _contents(kind: str, endpoint: str, tmp: Path) -> tuple[Any, list[Any]]:
    """The target (as a node's) and :data:`VERSIONS` event-file contents in its Xet storage, as a node's
    preupload leaves them (sizes 16 KiB + v KiB)."""
    from hf_mpwriter.state.piece import Piece, sha256_prefix
    from hf_mpwriter.targets.bucket import BucketTarget
    from hf_mpwriter.targets.hub import HubTarget

    target: Any = (BucketTarget(BUCKET, prefix="tb", token=TOKEN, endpoint=endpoint) if kind == "bucket"
                   else HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=endpoint))
    target.prepare()
    pieces = []
    for v in range(VERSIONS):
        path = tmp / f"events.out.tfevents.{v}.node"
        path.write_bytes(os.urandom((16 + v) * 1024))
        size = path.stat().st_size
        pieces.append(Piece(path=f"v{v}", size=size, sha256=sha256_prefix(path, size), source=str(path)))
    uploaded = target.preupload(pieces)
    assert uploaded and len(uploaded) == VERSIONS, "the content did not go to the Hub's storage"
    return target, uploaded


class Nodes:
    """The simulated nodes (see the module's docstring): offers, answers, own commits, ages."""

    def __init__(self, kind: str, nodes: int, ranks: int, scale: float, store: Any, contents: list[Any],
                 own_target: Any, production: list[tuple[Any, Any]]) -> None:
        """``production``: each node's ``(config, target)`` as production makes them (:func:`production_node`):
        their pacing decides when each simulated node offers (``pacing(target.situation(config))``)."""
        self.kind, self.n, self.ranks, self.scale, self.store = kind, nodes, ranks, scale, store
        self.contents, self.own_target = contents, own_target
        self.configs = [config for config, _ in production]
        self.targets = [target for _, target in production]
        first = self.targets[0]
        self.commit_every, self.spacing, self.budget = first.commit_every, first.spacing, first.budget
        # What a node plans before any answer (JobTarget.plan_now), for its own files: the leader's too here.
        self.own_plan = first.plan_now(first.files_hint)
        now = time.time()
        self.incarnation = 1  # each node's first uploader, as the store numbers it (JobTarget._announce)
        self.plan: list[Any] = [None] * nodes
        self.told_bound = self.own_plan.age_bound()  # the longest stated age of the plans the nodes were told
        self.phases: list[tuple[float, float] | None] = [None] * nodes  # its slots on its own clock (JobTarget)
        self.due = [now] * nodes  # real wall time of the next offer (or own commit)
        self.pending: list[dict | None] = [None] * nodes  # {"seq", "at", "raw", "since", "taken"}
        self.waiting_since: list[float | None] = [None] * nodes  # the first offer of data not held yet
        self.own_due: list[float | None] = [None] * nodes  # a node's own slot, kept until it commits
        self.held_at = [math.nan] * nodes  # offer time of the newest offer the Hub holds
        self.held_version: list[int | None] = [None] * nodes
        self.own_gone_first: list[float | None] = [None] * nodes  # its first own commit after the store went
        self.spread = 0.0  # real seconds: each offer comes 0 to this long after its node's slot
        self.upload = 0.0  # real seconds a node's upload takes before it offers (counted in the ages)
        self.pick = random.Random(nodes + 1)
        self.jitter = [0.0] * nodes
        self.seq = [0] * nodes
        self.first_offer: list[float | None] = [None] * nodes  # real time: the node's first upload (its Xet token)
        self.answered_seen: int | None = None
        self.leading_node: int | None = None  # the lease's node: its pacing is the leader's (Plan.leader_pacing)
        self.counts = {"offers": 0, "commits": 0, "deferred": 0, "errors": 0, "timeouts": 0, "own_commits": 0,
                       "own_refused": 0, "taken_late": 0}
        self.store_gone_at: float | None = None
        #: Node 1's successor store (its uploader's, :mod:`hf_mpwriter.uploader.coordination.successor`): hosted
        #: in this process, which plays every node's member; when the nodes moved to it, and each one's first
        #: commit through the leader there.
        self.successor: Any = None
        self.moved_at: float | None = None
        self.moved_first: list[float | None] = [None] * nodes
        self.own_commit_log: list[tuple[float, int]] = []  # (real time, node)
        self.commit_log: list[tuple[float, int, float, float]] = []  # (answered, node, offer's at, offered)
        self.deferred_log: list[float] = []  # when an offer was put off
        from hf_mpwriter.timing import OFFER_WAIT_S, STORE_RETRY_S
        from hf_mpwriter.uploader.coordination.own_commits import last_burst

        self.offer_wait, self.store_retry = OFFER_WAIT_S, STORE_RETRY_S  # not scaled (see the docstring)
        #: ``--end-at-kill``: the job ended (every node's writers closed, :meth:`close`); each node's last records
        #: (``last_version``) and when they were held (answered with a commit, or committed by the node itself).
        self.closing = False
        self.closed_at: float | None = None
        self.last_version: list[int | None] = [None] * nodes
        self.last_held: list[float | None] = [None] * nodes
        self.last_own = [False] * nodes  # its last records went in its own commit
        #: Production's ``last_burst``: a closing node below this number commits itself at once where no leader
        #: answers (``OwnCommits.turn(closing=True)``).
        self.last_burst = last_burst(self.budget, "bucket" if kind == "bucket" else "hub")

    def files(self, node: int, version: int) -> list[UploadedFile]:
        """A node's files as the library names its ranks' runs (``RankInfo.run_name``: past rank 8,999 in
        folders of 9,000, so no remote folder holds more than the Hub's 10,000 entries)."""
        from hf_mpwriter.writer.ranks import RankInfo

        c = self.contents[version]
        world = self.n * self.ranks
        runs = [RankInfo(node * self.ranks + r, world, "torchrun").run_name() for r in range(self.ranks)]
        return [UploadedFile(f"tb/{run}/events.out.tfevents.1.node{node}", c.sha256, c.size, c.xet_hash) for run in runs]

    def announce(self) -> None:
        values: dict[str, bytes] = {}
        for node in range(self.n):
            values[f"incarnation/{node}"] = str(self.incarnation).encode()
            values[f"offer/{node}"] = b"-"
            values[f"answer/{node}"] = b"{}"
        self.store.multi_set(values)
        self.store.append("members", "".join(f"{n}," for n in range(self.n)).encode())
        # no plan yet: the job's start pacing (production's pacing: together, or spread past the first requests' budget)
        now = time.time()
        self.due = [self.next_slot(node, now, cycled=False) for node in range(self.n)]
        if self.closing:  # their writers are gone: the uploader cycles at once (Schedule: "the last writer is gone")
            self.due = [now if self.last_held[node] is None else math.inf for node in range(self.n)]

    def close(self) -> None:
        """The job ends (``--end-at-kill``): every node's writers close now. Each node's last records are a version of
        its files no offer of it held or had pending (the read-back then tells them apart); from now on each node
        offers them with ``"last": true`` at once (not at its slot), again after a put-off, until they are held, then
        nothing more (its uploader exits: everything committed, every writer gone)."""
        now = time.time()
        self.closing, self.closed_at = True, now
        for node in range(self.n):
            p = self.pending[node]
            self.last_version[node] = VERSIONS - 1  # (longer than any it offered or had pending)
            if p is None:
                self.due[node] = now  # (one pending waits for its answer, as the node's cycle does)

    def next_slot(self, node: int, now: float, cycled: bool = True) -> float:
        """The node's next slot after ``now``; after a cycle (``cycled``) at least half an interval later, as the
        uploader's ``Schedule.cycled`` keeps it (a node whose slot moved, to the leader's plan, a skewed leader's
        phase, does not offer again right after its answer)."""
        from hf_mpwriter.uploader.coordination.pacing import pacing
        from hf_mpwriter.uploader.schedule import until_turn

        self.targets[node].leader.leading = node == self.leading_node  # (what its own uploader's leader says)
        interval, phase, _ = pacing(self.targets[node].situation(self.configs[node]))  # production's pacing
        return now + until_turn(interval, phase or 0.0, now, interval / 2 if cycled else 0.0)

    # -- one tick -----------------------------------------------------------------------------------
    def tick(self, offering: bool = True) -> None:
        if self.store_gone_at is not None:
            self._own_tick(offering)
            return
        from hf_mpwriter.uploader.coordination.protocol import lease_holder
        from hf_mpwriter.uploader.coordination.store import StoreError

        try:
            self.leading_node = (lease_holder(self.store.get("lease")) or (None,))[0]
            self._offer_tick(offering)
            self._answer_tick()
        except StoreError:
            if not self.store.gone():
                raise
            if not self._moved():
                self._store_gone()

    def _moved(self) -> bool:
        """Every node moves to the successor store its answers listed (``Moves.forward``, production's
        ``next_store``), announces itself there and offers again; ``False`` where a node never heard of it."""
        from hf_mpwriter.uploader.coordination.successor import next_store

        listed = [t.successors for t in self.targets]
        if self.successor is None or not all(listed) or not next_store(self.store, listed[0], set(), self.successor):
            return False
        self.moved_at = time.time()
        self.pending = [None] * self.n  # (gone with the store: the leader may still commit them)
        self.answered_seen = None
        self.announce()
        return True

    def _offer_tick(self, offering: bool) -> None:
        now = time.time()
        due = [n for n in range(self.n) if self.pending[n] is None and self.due[n] + self.jitter[n] <= now] \
            if offering else []
        for node in due:  # the next offer of each: its own delay after the slot (0 to ``spread``)
            self.jitter[node] = 0.0 if self.closing else self.pick.uniform(0.0, self.spread)  # closing: at once
        if due:
            values = {}
            for node in due:
                self.first_offer[node] = self.first_offer[node] or now
                self.seq[node] = max(self.seq[node], self.incarnation << 32) + 1  # as JobTarget.commit numbers it
                seq = self.seq[node]
                version = self.version(node, seq)
                since = self.waiting_since[node] = self.waiting_since[node] or now
                # "last": JobTarget's ``self._hurried() or self.closing`` (closing: every writer of the node gone)
                raw = Offer(seq, self.incarnation, self.offer_wait, now - since, self.closing,
                            tuple(self.files(node, version))).encode()
                values[f"offer/{node}"] = raw
                # Its data is as old as its snapshot: the node uploaded the content before offering it.
                self.pending[node] = {"seq": seq, "version": version, "at": now - self.upload, "raw": raw, "since": now,
                                      "taken": False}
            self.store.multi_set(values)
            self.store.add("offered", len(due))
            self.counts["offers"] += len(due)
        # no answer in time: take the offer back (one compare_set each, as a node), then own turn or offer again;
        # one a leader claimed first is under way: its answer is awaited (Offers.taken_wait: 3 offer waits)
        for node in range(self.n):
            p = self.pending[node]
            if p is None or now - p["since"] < self.offer_wait * (4 if p["taken"] else 1):
                continue
            if p["taken"]:  # claimed, never answered: offered again (JobTarget raises a transient error)
                self.counts["taken_late"] += 1
                self.pending[node], self.due[node] = None, now
                continue
            self.counts["timeouts"] += 1
            if self.store.compare_set(f"offer/{node}", p["raw"], b"-"):
                self.pending[node] = None
                self._own_turn(node, p, now)
            else:
                p["taken"] = True  # a leader claimed it: wait for its answer
                self.answered_seen = None

    def _own_turn(self, node: int, p: dict, now: float) -> None:
        """No leader committed the offer ``p`` (none answered in time, or one answered an error): JobTarget's
        ``_own_turn``. A closing node below ``last_burst`` commits its last records itself at once
        (``OwnCommits.turn(closing=True)``); any other at its own slot (``Plan.own_turn``), a due time it keeps,
        offering again meanwhile at least every ``STORE_RETRY_S``."""
        if self.closing and node < self.last_burst:
            self._own_commit(node, p["seq"], p["at"], p["version"])
            return
        if self.own_due[node] is None:
            plan = self.plan[node] or self.own_plan
            phases = self.phases[node]
            self.own_due[node] = now + plan.own_turn(node, now, None if phases is None else phases[1])
        own_due = self.own_due[node]
        assert own_due is not None
        if own_due <= now:
            self._own_commit(node, p["seq"], p["at"], p["version"])
            if not self.closing:
                self.due[node] = self.next_slot(node, time.time())
        else:
            self.due[node] = now + min(own_due - now, self.store_retry)

    def version(self, node: int, seq: int) -> int:
        """Which of the contents an offer (or own commit) numbered ``seq`` carries: a new one each time while the
        job runs; a closing node's last records, the same each time it offers them again."""
        v = self.last_version[node] if self.closing else None
        return min((seq & 0xFFFFFFFF) - 1, VERSIONS - 2) if v is None else v

    def _answer_tick(self) -> None:
        answered = self.store.add("answered", 0)
        if answered == self.answered_seen:
            return
        self.answered_seen = answered
        waiting = [n for n in range(self.n) if self.pending[n] is not None]
        if not waiting:
            return
        raws = self.store.multi_get([f"answer/{n}" for n in waiting])
        now = time.time()
        for node, raw in zip(waiting, raws):
            p = self.pending[node]
            assert p is not None
            answer = Answer.decode(raw or b"{}")
            if answer.seq != p["seq"]:
                continue
            self.pending[node] = None
            target = self.targets[node]
            target.heard(answer, now)  # its slots as seconds from now, turned into phases of this host's clock
            self.plan[node], self.phases[node] = target.plan, target._phases
            if target.plan is not None:  # the slowest plan a node was told: its stated age holds while it is in force
                self.told_bound = max(self.told_bound, target.plan.age_bound())
            if answer.retry_in is not None:
                self.counts["deferred"] += 1
                self.deferred_log.append(now)
                self.due[node] = now + min(answer.retry_in, self.budget.commit_window_s)
            elif answer.commit is None:
                self.counts["errors"] += 1
                if self.closing:  # JobTarget: "the leader could not commit it": its own turn
                    self._own_turn(node, p, now)
                    continue
                self.due[node] = self.next_slot(node, now)
            else:
                self.counts["commits"] += 1
                if self.moved_at is not None and self.moved_first[node] is None:
                    self.moved_first[node] = now
                self.waiting_since[node] = self.own_due[node] = None
                if not self.held_at[node] >= p["at"]:
                    self.held_at[node], self.held_version[node] = p["at"], p["version"]
                self._last_landed(node, p["version"], now)
                if not self.closing:
                    self.due[node] = self.next_slot(node, now)
                elif self.last_held[node] is None:  # (an offer from before the close: its last records go now)
                    self.due[node] = now
                self.commit_log.append((now, node, p["at"], p["since"]))

    def _last_landed(self, node: int, version: int, now: float, own: bool = False) -> None:
        """A closing node's last records are held: its uploader is done (nothing more is offered)."""
        if self.closing and version == self.last_version[node] and self.last_held[node] is None:
            self.last_held[node], self.last_own[node] = now, own
            self.due[node] = math.inf

    # -- without a store ------------------------------------------------------------------------------
    def _store_gone(self) -> None:
        """The store is gone (and every offer in it): each node commits itself at once (JobTarget._own_turn),
        a refused one again after the Hub's Retry-After; then every own slot (Plan.own_pacing)."""
        now = time.time()
        self.store_gone_at = now
        for node in range(self.n):
            self.pending[node] = None  # (the leader may still commit it: not counted as held)
            self.due[node] = now if self.last_held[node] is None else math.inf
            self.targets[node].store_gone = True  # what its own JobTarget finds: its pacing is its own slots

    def _own_tick(self, offering: bool) -> None:
        from hf_mpwriter.uploader.coordination.pacing import pacing

        now = time.time()
        for node in sorted(range(self.n), key=lambda n: self.due[n]):
            if self.due[node] > now:
                break
            self.seq[node] = max(self.seq[node], self.incarnation << 32) + 1
            retry = self._own_commit(node, self.seq[node], now, self.version(node, self.seq[node]))
            turns = pacing(self.targets[node].situation(self.configs[node]))[0]  # production's: its own slots
            if self.closing and retry is None:  # its last records landed: its uploader exits
                self.due[node] = math.inf
            else:
                self.due[node] = time.time() + (retry if retry is not None else turns)
            if retry is None and self.own_gone_first[node] is None:
                self.own_gone_first[node] = time.time()
            now = time.time()

    def _own_commit(self, node: int, seq: int, at: float, version: int | None = None) -> float | None:
        """The node's own commit of its files (real), as of ``at``; the seconds to wait after a refusal."""
        from hf_mpwriter.errors import TargetError

        version = self.version(node, seq) if version is None else version
        files = self.files(node, version)
        try:
            self.own_target.commit_uploaded(files, f"Upload TensorBoard logs: {len(files)} file(s) of node {node} "
                                                   "(hf_mpwriter, the node's own)")
        except TargetError as exc:
            self.counts["own_refused"] += 1
            retry = exc.retry_after if exc.retry_after is not None else 1.0
            if self.closing:  # refused: its last records again after the Hub's Retry-After (the queue's backoff)
                self.due[node] = time.time() + retry
            return retry
        self.counts["own_commits"] += 1
        self.waiting_since[node] = self.own_due[node] = None
        self.own_commit_log.append((time.time(), node))
        if not self.held_at[node] >= at:
            self.held_at[node], self.held_version[node] = at, version
        self._last_landed(node, version, time.time(), own=True)
        return None

    def ages(self, now: float, since: float) -> list[float]:
        """Each node's newest held record's age (real seconds); never held: since ``since``."""
        return [now - (t if t == t else since) for t in self.held_at]


def _start_leader(cfg: dict, env: dict, err: Path) -> subprocess.Popen:
    with open(err, "w") as handle:
        proc = subprocess.Popen([sys.executable, __file__, "--_leader", json.dumps(cfg)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=handle, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"leader process did not start: {err.read_text()[-2000:]}")
    return proc


def _wait_lease(store: Any, node: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while json.loads(store.get("lease") or b"{}").get("node") != node:
        if time.time() > deadline:
            raise RuntimeError(f"node {node} did not take the lease")
        time.sleep(0.1)


def _end(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait()


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run(kind: str, nodes: int, ranks: int, scale: float, scenario: str, tmp: Path, quiet: bool = False,
        minutes: float | None = None, spread: float = 0.0, commit_s: float = 0.0, upload_s: float = 0.0,
        skew: float = 0.0, poll_scaled: bool = False, ranks_known: bool = True, end_at_kill: bool = False) -> dict:
    from hf_mpwriter.testing import HubServer
    from hf_mpwriter.testing.limits import HubLimits
    from hf_mpwriter.timing import AUDIT_EVERY_S, BUCKET_AUDIT_EVERY_S, LEASE_STALE_S
    from hf_mpwriter.uploader.coordination.member import JOB_AUDITORS, store_prefix
    from hf_mpwriter.uploader.coordination.protocol import TAKEN
    from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress

    def say(text: str) -> None:
        if not quiet:
            print(f"  [{kind} {nodes} {scenario} +{time.monotonic() - wall0:.0f}s] {text}", flush=True)

    wall0 = time.monotonic()
    limits = HubLimits(api_requests_per_window=1000, window_s=300 / scale, commits_per_hour=128,
                       commit_window_s=3600 / scale)
    procs: list[subprocess.Popen] = []
    store_proc = None
    with HubServer(tokens={TOKEN}, limits=limits) as hub:
        os.environ.update(hub.env())
        if kind == "bucket":
            hub.create_bucket(BUCKET)
        else:
            hub.create_repo(REPO)
        node_target, contents = _contents(kind, hub.endpoint, tmp)
        silent = socket.socket()  # leader-cut-off: node 0's Hub accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        try:
            port = free_port()
            job = f"scale-{kind}-{nodes}"
            # Each node as production makes it, before the store is up: the factory's first look at the store
            # fails at once (nothing listens yet), which changes nothing the simulation reads (its pacing), and
            # 1,024 connections from this one process are not what a job's store serves (one per node host).
            quiet_factory = logging.getLogger("hf_mpwriter")
            level, quiet_factory.level = quiet_factory.level, logging.ERROR
            try:
                production = [production_node(kind, node, nodes, ranks, scale, port, job, hub.endpoint, ranks_known)
                              for node in range(nodes)]
            finally:
                quiet_factory.setLevel(level)
            store_proc = _store_process(port)
            address = StoreAddress("127.0.0.1", port, job)
            prefix = store_prefix(address, node_target.key)
            log = tmp / "rounds.jsonl"
            env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "HF_HOME": str(tmp / "hf_home")}
            assert production[0][1].store.prefix == prefix + "/", (production[0][1].store.prefix, prefix)
            sim_store = JobStore(address, prefix, deadline=30.0)
            sim = Nodes(kind, nodes, ranks, scale, sim_store, contents, node_target, production)
            sim.spread = spread / scale  # each offer 0 to ``spread`` Hub-seconds after its slot, as real nodes'
            sim.upload = upload_s / scale
            if commit_s:  # every write of the leader held this long at the Hub (its 60 s limit, Hub time)
                hub.inject("latency", route="bucket_batch" if kind == "bucket" else "commit", times=None,
                           seconds=commit_s / scale)
            sim.announce()
            if scenario == "kill-store":
                from hf_mpwriter.timing import LEADER_POLL_S
                from hf_mpwriter.uploader.coordination.successor import SuccessorHost

                sim.successor = SuccessorHost(sim_store, 1, SUCCESSOR_COPY_REAL_S, LEADER_POLL_S)
                sim.successor.start()
            for node in (0, 1):  # node 0's and node 1's uploaders: one leads, one watches
                cut_off = scenario == "leader-cut-off" and node == 0
                cfg = {"kind": kind, "endpoint": f"http://127.0.0.1:{silent.getsockname()[1]}" if cut_off
                       else hub.endpoint, "port": port, "job": job, "prefix": prefix,
                       "node": node, "nodes": nodes, "ranks": ranks, "scale": scale, "log": str(log),
                       "skew": skew, "poll_scaled": poll_scaled}
                procs.append(_start_leader(cfg, env, tmp / f"leader-{node}.err"))
                if cut_off:  # it leads first
                    _wait_lease(sim_store, 0)
            plan = sim.own_plan
            interval = plan.interval
            least = (3600 if kind == "repo" else 660) if minutes is None else minutes * 60
            measure = max(1.5 * interval, least / scale) if scenario != "kill-store" else 0.0
            if scenario in ("kill-leader", "freeze-leader"):  # one interval in; then the takeover and two intervals
                measure = max(measure, 3 * interval + 2 * LEASE_STALE_S + FREEZE_S)
            wall_start = time.time()
            say(f"plan: {plan}; warm-up: the job's start, then one interval ({interval * scale:.0f} Hub-s); "
                f"then measuring {measure * scale:.0f} Hub-s ({measure:.0f} s real)")
            samples: list[tuple[float, dict]] = []
            age_samples: list[float] = []
            leader_ages: list[float] = []  # the leading node's newest record: its job run rides with it
            killed: dict[str, Any] = {}
            claimed: set[int] = set()  # kill-leader: the nodes whose offers the killed leader had claimed
            claimed_ages: list[float] = []  # theirs, apart: they wait unscaled real seconds (the module's docstring)
            t0 = next_age = stop_at = kill_at = math.inf  # set once the job's start is over
            next_sample = wall_start  # the Hub's requests from the job's first second (the start included)
            first_commit_s = start_s = math.inf
            start_span = max(sim.due) - wall_start  # the last group's first slot (plan.start_pacing)
            pick = random.Random(nodes)
            while time.time() < stop_at and (scenario != "kill-store" or not killed
                                              or time.time() - killed["at"] < KILL_STORE_GIVE_UP_S):
                now = time.time()
                sim.tick()
                if first_commit_s == math.inf and sim.commit_log:  # (the processes' first HTTP calls take seconds)
                    first_commit_s = sim.commit_log[0][0] - wall_start
                    say(f"first commit {first_commit_s * scale:.0f} Hub-s after the start")
                if t0 == math.inf and sim.commit_log and all(t == t for t in sim.held_at):  # the job's start is over
                    start_s = now - wall_start
                    t0 = next_age = now + interval  # then an interval
                    stop_at = t0 + measure if scenario != "kill-store" else math.inf
                    kill_at = t0 + interval if scenario in ("kill-leader", "freeze-leader") else t0
                    say(f"every node's first records at the Hub {start_s * scale:.0f} Hub-s after the start")
                elif t0 == math.inf and now - wall_start > 120 + 3 * interval + start_span:
                    raise RuntimeError("the job's start did not end")
                if now >= next_sample and scenario != "kill-store":
                    samples.append((now, hub.stats))
                    next_sample += 60 / scale
                if now >= next_age and scenario != "kill-store":  # at random moments, a Hub-minute apart on average
                    ages_now = sim.ages(now, wall_start)  # (fixed ones would alias with a 10 s or 5 min interval)
                    age_samples += [a for n, a in enumerate(ages_now) if n not in claimed]
                    claimed_ages += [ages_now[n] for n in claimed]
                    if sim.leading_node is not None:
                        leader_ages.append(sim.ages(now, wall_start)[sim.leading_node])
                    next_age += 60 / scale * pick.uniform(0.2, 1.8)
                if scenario in ("kill-leader", "freeze-leader") and not killed and now >= kill_at:
                    lease = json.loads(sim_store.get("lease") or b"{}")
                    victim = next(p for p in procs if p.pid == lease.get("pid"))
                    if scenario == "kill-leader":
                        os.kill(victim.pid, signal.SIGKILL)
                        victim.wait()
                    else:  # stopped past the lease's staleness, then woken up (mid-round, maybe mid-commit)
                        os.kill(victim.pid, signal.SIGSTOP)
                        threading.Timer(FREEZE_S, os.kill, (victim.pid, signal.SIGCONT)).start()
                    killed = {"at": time.time(), "pid": victim.pid}
                    if scenario == "kill-leader":  # the offers it had claimed: their nodes wait ``Offers.taken_wait``
                        raws = sim.store.multi_get([f"offer/{n}" for n in range(nodes)])
                        claimed = {n for n, raw in enumerate(raws) if raw.startswith(TAKEN) and sim.pending[n] is not None}
                    say(f"{'SIGKILL' if scenario == 'kill-leader' else f'SIGSTOP for {FREEZE_S:.0f} s real:'} "
                        f"leader pid {victim.pid}")
                if scenario == "kill-store":
                    if sim.store_gone_at is None and not killed and now >= kill_at and all(t.successors for t in sim.targets):
                        stats_before = hub.stats
                        store_proc.kill()
                        store_proc.wait()
                        killed = {"at": time.time(), "plan": sim.plan[0] or plan, "stats": stats_before,
                                  "held_at": list(sim.held_at)}
                        if end_at_kill:  # the job ends with its store: every node's writers close now
                            sim.close()
                        say(f"killed the store: the nodes go on through the successor store (Hub time: × {scale:g})"
                            + ("; the job ends: every node closing, its last records offered at once" if end_at_kill
                               else ""))
                    if end_at_kill:
                        if killed and all(t is not None for t in sim.last_held):
                            break
                    elif sim.store_gone_at is not None and all(t is not None for t in sim.own_gone_first):
                        break
                    elif sim.moved_at is not None and all(t is not None for t in sim.moved_first):
                        break
                time.sleep(max(0.0, TICK_S - (time.time() - now)))
            # the end: no new offers; the answers of those pending are awaited (one OFFER_WAIT_S)
            end_wall = time.time()
            stats_end = hub.stats
            settle = time.time() + sim.offer_wait + 5 * interval / max(1, plan.groups)
            while scenario != "kill-store" and time.time() < settle and any(p is not None for p in sim.pending):
                sim.tick(offering=False)
                time.sleep(TICK_S)
            for proc in procs:
                _end(proc)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if store_proc is not None and store_proc.poll() is None:
                _end(store_proc, 10)
            silent.close()
        rounds = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        for node in (0, 1):  # what the leaders said, in short
            said = [line for line in (tmp / f"leader-{node}.err").read_text(errors="replace").splitlines()
                    if "WARNING" in line or "ERROR" in line or "Traceback" in line]
            if said:
                say(f"leader {node} said ({len(said)} warnings/errors), the last: " + " | ".join(said[-3:]))
        if os.environ.get("BENCH_SCALE_KEEP"):  # the leaders' logs and rounds, for a look
            import shutil

            keep = Path(os.environ["BENCH_SCALE_KEEP"])
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("leader-0.err", "leader-1.err", "rounds.jsonl"):
                if (tmp / name).exists():
                    shutil.copy(tmp / name, keep / name)
        readback = _read_back(kind, hub, sim)
        commits_dup = _duplicate_paths(kind, hub)

    # -- the numbers, in Hub time --------------------------------------------------------------------
    measured = [r for r in rounds if t0 <= r["t"] <= end_wall]
    commit_rounds = [r for r in measured if r["files"]]
    per_round_rt = [r["rt"] for r in measured]
    out: dict[str, Any] = {
        "kind": kind, "nodes": nodes, "ranks": ranks, "scale": scale, "scenario": scenario, "skew": skew,
        "poll_scaled": poll_scaled, "end_at_kill": end_at_kill,
        "plan": plan, "told_bound": sim.told_bound, "wall_s": time.monotonic() - wall0, "counts": dict(sim.counts),
        "readback": readback,
        "dup_commits": commits_dup, "limits_hit": {k: v for k, v in stats_end["limits_hit"].items() if v},
        "rt_max": max(per_round_rt, default=0), "rt_p50": _pct(per_round_rt, 0.5),
        "store_s_max": max((r["store_s"] for r in measured), default=0.0),
        "round_wall_p50": _pct([r["wall"] for r in commit_rounds], 0.5),
        "round_wall_max": max((r["wall"] for r in commit_rounds), default=0.0),
        "leaders": sorted({r["pid"] for r in commit_rounds}),
        "files_max": max((r["files"] for r in commit_rounds), default=0),
        "files_mean": statistics.mean([r["files"] for r in commit_rounds]) if commit_rounds else 0.0,
        "measured_hub_s": (end_wall - t0) * scale,
        "measured_offers": sum(1 for t, *_ in sim.commit_log if t0 <= t <= end_wall)
        + sum(1 for t in sim.deferred_log if t0 <= t <= end_wall),
        "measured_deferred": sum(1 for t in sim.deferred_log if t0 <= t <= end_wall),
        "first_commit_real_s": first_commit_s,
        "start_s": start_s * scale,
        "committing_nodes": sorted({r["node"] for r in commit_rounds}),
    }
    # commits per Hub-hour: the most in any hour of the measured period (sliding over the commit times)
    times = sorted(r["t"] for r in commit_rounds)
    hour = 3600 / scale
    if times and end_wall - t0 >= hour * 0.999:
        out["commits_per_hour"] = max(sum(1 for u in times if s <= u < s + hour) for s in times
                                      if s + hour <= end_wall + 1e-9) if any(s + hour <= end_wall for s in times) \
            else len(times)
        out["commits_per_hour_note"] = "max over 1 h windows"
    else:
        span = (end_wall - t0) * scale
        out["commits_per_hour"] = len(times) * 3600 / span if span else 0.0
        out["commits_per_hour_note"] = f"{len(times)} in {span / 60:.0f} min, per hour"
    # API requests per 5 Hub-minutes, from the job's first second: fixed windows of 5 samples (a sample per
    # Hub-minute). The nodes' own, modelled: the job's Xet token at the first upload and every
    # XET_TOKEN_EVERY_S after it, counted in the window it falls in; the audits they share, flat.
    windows = [sum(api_requests(samples[i + 5][1], samples[i][1]).values()) for i in range(0, len(samples) - 5, 5)]
    out["api_5min_max"] = max(windows, default=0)
    out["api_5min_mean"] = statistics.mean(windows) if windows else 0.0
    out["api_windows"] = len(windows)
    audit_every = BUCKET_AUDIT_EVERY_S if kind == "bucket" else AUDIT_EVERY_S
    # (One token for the job: the leader's, shared through the store; the nodes fetch none of their own.)
    first = min((t for t in sim.first_offer if t is not None), default=end_wall)
    tokens = [first + k * XET_TOKEN_EVERY_S / scale for k in range(int((end_wall - first) * scale / XET_TOKEN_EVERY_S) + 1)]
    audits = JOB_AUDITORS * 300 / audit_every
    nodes_in = [bisect.bisect_left(tokens, samples[i + 5][0]) - bisect.bisect_left(tokens, samples[i][0]) + audits
                for i in range(0, len(samples) - 5, 5)]
    out["nodes_model_5min"] = max(nodes_in, default=0.0)
    out["api_5min_with_nodes"] = max((a + b for a, b in zip(windows, nodes_in)), default=0.0)
    ages = [a * scale for a in age_samples]
    out["claimed_nodes"], out["claimed_age_max"] = len(claimed), max((a * scale for a in claimed_ages), default=0.0)
    out["age_p50"], out["age_p95"], out["age_max"] = _pct(ages, 0.5), _pct(ages, 0.95), max(ages, default=math.nan)
    lead = [a * scale for a in leader_ages]
    out["leader_age_p50"], out["leader_age_p95"] = _pct(lead, 0.5), _pct(lead, 0.95)
    if scenario in ("kill-leader", "freeze-leader") and killed:
        after = sorted(r["t"] for r in rounds if r["files"] and r["pid"] != killed["pid"] and r["t"] > killed["at"])
        out["takeover_s"] = (after[0] - killed["at"]) * scale if after else math.inf
    # Two leaders committing at once: two committing rounds of different processes whose spans overlap.
    spans = sorted((r["t"] - r["wall"], r["t"], r["pid"]) for r in rounds if r["files"])
    out["overlap"] = any(b[0] < a[1] and b[2] != a[2] for i, a in enumerate(spans) for b in spans[i + 1:i + 8])
    out["spread_s"], out["commit_s"], out["upload_s"] = spread, commit_s, upload_s
    if scenario == "kill-store" and killed:
        gone = killed["at"]
        out["moved"] = sim.moved_at is not None
        firsts = [t for t in (sim.moved_first if out["moved"] else sim.own_gone_first) if t is not None]
        out["drain_s"] = (max(firsts) - gone) * scale if len(firsts) == nodes else math.inf
        out["drained_nodes"] = len(firsts)
        out["drain_429"] = {k: v - killed["stats"]["limits_hit"].get(k, 0) for k, v in stats_end["limits_hit"].items()
                            if v - killed["stats"]["limits_hit"].get(k, 0)}
        out["drain_api"] = sum(api_requests(stats_end, killed["stats"]).values())
        out["leader_commits_after_kill"] = sum(1 for r in rounds if r["files"] and r["t"] > gone)
        out["own_commits_after_kill"] = sum(1 for t, _ in sim.own_commit_log if t > gone)
        after_kill = sorted(r["t"] for r in rounds if r["files"] and r["t"] > gone)  # (a round's end: its commit's answer)
        out["leader_first_after_kill_s"] = (after_kill[0] - gone) * scale if after_kill else math.inf
        out["leader_last_after_kill_s"] = (after_kill[-1] - gone) * scale if after_kill else math.inf
        out["moved_after_s"] = (sim.moved_at - gone) * scale if sim.moved_at is not None else math.inf
        if end_at_kill:
            held = [t for t in sim.last_held if t is not None]
            out["last_nodes"] = len(held)
            out["last_own"] = sum(sim.last_own)
            out["last_real_s"] = max(held) - gone if len(held) == nodes else math.inf
            out["last_s"] = out["last_real_s"] * scale
            out["last_p50_s"] = _pct([t - gone for t in held], 0.5) * scale
            # the commits after the kill in any sliding Hub-hour (the Hub's 128 a repository)
            stamps = sorted([r["t"] for r in rounds if r["files"] and r["t"] > gone]
                            + [t for t, _ in sim.own_commit_log if t > gone])
            out["commits_hour_max"] = max((sum(1 for u in stamps if s <= u < s + 3600 / scale) for s in stamps), default=0)
    return out


def _read_back(kind: str, hub: Any, sim: Nodes) -> dict:
    """Every rank's file on the Hub, compared with its node's newest held offer: sha256 (a bucket: Xet
    hash) and size. ``lost``: not there though committed; ``stale``: an older version; ``torn``: a size
    or hash that matches no version."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    expected: dict[str, int] = {}
    offered: dict[str, int] = {}  # the version of a node's offer still unanswered (a killed leader's claim, say)
    for node in range(sim.n):
        v, p = sim.held_version[node], sim.pending[node]
        if v is not None:
            for entry in sim.files(node, v):
                expected[entry.path] = v
                if p is not None:
                    offered[entry.path] = p["version"]
    paths = sorted(expected)
    infos: dict[str, Any] = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        got: Any = (api.get_bucket_paths_info(BUCKET, chunk) if kind == "bucket"
               else api.get_paths_info(REPO, chunk))
        infos.update({info.path: info for info in got})
    by_key = {}
    for v, c in enumerate(sim.contents):
        by_key[(c.size, c.xet_hash if kind == "bucket" else c.sha256)] = v
    lost = stale = torn = ok = unanswered = 0
    for path, v in expected.items():
        info = infos.get(path)
        if info is None:
            lost += 1
            continue
        key = (info.size, getattr(info, "xet_hash", None) if kind == "bucket"
               else (info.lfs.sha256 if getattr(info, "lfs", None) else None))
        version = by_key.get(key)
        if version is None:
            torn += 1
        elif version == v:
            ok += 1
        elif version == offered.get(path):  # newer than its node knows: the commit landed, its answer never came
            unanswered += 1
        else:
            stale += 1
    never = sum(1 for v in sim.held_version if v is None)
    return {"files": len(expected), "ok": ok, "lost": lost, "stale": stale, "torn": torn, "nodes_never_held": never,
            "unanswered": unanswered}


def _duplicate_paths(kind: str, hub: Any) -> int | None:
    """Commits that name a path twice (a repository; a bucket has no commits to read)."""
    if kind == "bucket":
        return None
    return sum(1 for c in hub.commits(REPO) if len(c["added"]) != len(set(c["added"])))


# ---------------------------------------------------------------------------------------------------
def _fmt_s(seconds: float) -> str:
    if seconds != seconds or seconds == math.inf:
        return "–" if seconds != seconds else "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="64,256,1024", help="comma-separated node counts (default: 64,256,1024)")
    parser.add_argument("--ranks", type=int, default=8, help="ranks per node, one event file each (default: 8)")
    parser.add_argument("--kind", choices=["repo", "bucket", "both"], default="both",
                        help="a repository, a Storage Bucket, or both (default)")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="Hub-seconds: each offer comes 0 to this long after its node's slot, as real nodes' do "
                             "(their clocks, their uploads; default 0: every offer at its slot)")
    parser.add_argument("--upload-s", type=float, default=0.0,
                        help="Hub-seconds a node's upload takes before it offers, counted in the ages (default 0)")
    parser.add_argument("--commit-s", type=float, default=0.0,
                        help="Hub-seconds the test Hub holds each of the leader's writes (60: the Hub's server timeout)")
    parser.add_argument("--scenario", choices=["steady", "kill-leader", "kill-store", "leader-cut-off", "freeze-leader"],
                        default="steady",
                        help="see SCENARIOS above (default: steady)")
    parser.add_argument("--scale", type=float, default=None,
                        help="time compression: Hub-seconds per real second (default: 60 for a repository, 5 for "
                             "a bucket, 600 for a repository's kill-store)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="Hub-minutes to measure after the warm-up, at least (default: 60 for a repository, 11 for "
                             "a bucket; always at least 1.5 plan intervals)")
    parser.add_argument("--skew", type=float, default=0.0,
                        help="real seconds: the leaders' wall clocks run this far ahead of the nodes' (negative: "
                             "behind; default 0; 3601.5: an hour, not a whole number of intervals)")
    parser.add_argument("--poll-scaled", action="store_true",
                        help="LEADER_POLL_S (0.5 s) in Hub time too, as --scale shortens the plan's gaps: the "
                             "leader's rounds, and with them its lease renewals, watch and store backoff (default: "
                             "real seconds)")
    parser.add_argument("--ranks-unknown", action="store_true",
                        help="the nodes' settings say nothing of their ranks (LOCAL_WORLD_SIZE lost on the way to the "
                             "uploader, as before issue 46): their start pacing counts one file a node")
    parser.add_argument("--end-at-kill", action="store_true",
                        help="kill-store only: the job ends at the kill, as a torchrun job whose store's host died does: "
                             "every node's writers close, and each node offers its last records at once with "
                             "\"last\": true once it moved (see END AT KILL above; default: the nodes go on offering at "
                             "their plan's slots)")
    parser.add_argument("--json", type=Path, default=None, help="also write every row's raw numbers here")
    parser.add_argument("--_leader", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.end_at_kill and args.scenario != "kill-store":
        parser.error("--end-at-kill is an option of --scenario kill-store")
    if args._leader:
        leader_main(json.loads(args._leader))
        return 0
    kinds = ["repo", "bucket"] if args.kind == "both" else [args.kind]
    print(header(f"bench_scale {args.scenario}: real Leader (2 processes) + TCPStore process, {args.ranks} ranks "
                 "a node simulated; test Hub with a free account's limits, time compressed"))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: python scripts/bench_scale.py "
          + " ".join(sys.argv[1:]))
    results = []
    for kind in kinds:
        for nodes in (int(n) for n in args.nodes.split(",")):
            scale = args.scale or DEFAULT_SCALE["kill-store" if args.scenario == "kill-store" and kind == "repo" else kind]
            with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
                r = run(kind, nodes, args.ranks, scale, args.scenario, Path(tmp), minutes=args.minutes,
                        spread=args.spread, commit_s=args.commit_s, upload_s=args.upload_s, skew=args.skew,
                        poll_scaled=args.poll_scaled, ranks_known=not args.ranks_unknown,
                        end_at_kill=args.end_at_kill)
            results.append(r)
            print(json.dumps({k: (str(v) if k == "plan" else v) for k, v in r.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps([{k: (str(v) if k == "plan" else v) for k, v in r.items()} for r in results],
                                        indent=1))
    rows = []
    for r in [r for r in results if r["scenario"] != "kill-store"]:
        p, rb = r["plan"], r["readback"]
        sc = r["scale"]
        rows.append([
            r["kind"], r["nodes"], f"{r['nodes'] * r['ranks']:,}", f"{sc:g}",
            f"{p.groups}×{p.per_commit} nodes, gap {_fmt_s(p.gap * sc)}, interval {_fmt_s(p.interval * sc)}",
            f"{r['rt_p50']:.0f} / {r['rt_max']}", f"{r['rt_max'] * ROUND_TRIP_S * 1000:.1f} ms",
            f"{r['store_s_max'] * 1000:.0f} ms", f"{r['round_wall_p50']:.2f} / {r['round_wall_max']:.2f} s",
            len(r["leaders"]),
            f"{r['commits_per_hour']:.0f} ({r['commits_per_hour_note']})" if r["kind"] == "repo"
            else f"{r['commits_per_hour']:.0f}",
            f"{r['files_mean']:.0f} / {r['files_max']}",
            f"{r['api_5min_mean']:.0f} / {r['api_5min_max']} ({r['api_windows']} windows)",
            f"+{r['nodes_model_5min']:.0f} (together: {r['api_5min_with_nodes']:.0f})",
            f"{_fmt_s(r['age_p50'])} / {_fmt_s(r['age_p95'])} / {_fmt_s(r['age_max'])} "
            f"(stated: {_fmt_s(max(p.age_bound(), r['told_bound']) * sc)})",
            ", ".join(f"{k} {v}" for k, v in r["limits_hit"].items()) or "none",
            f"{rb['ok']}/{rb['files']} ok, lost {rb['lost']}, stale {rb['stale']}, torn {rb['torn']}, newer than "
            f"answered {rb['unanswered']}" + (f", twice {r['dup_commits']}" if r["dup_commits"] is not None else ""),
            f"{r['wall_s']:.0f} s",
        ])
    if rows:
        print(table(["target", "nodes", "files", "scale", "plan (Hub time)", "leader's store round trips per round "
                     "(p50 / max)", "store work per round at 0.3 ms (max)", "store time on loopback (max)",
                     "round wall time, committing rounds (p50 / max, real)", "leading processes",
                     "commits (batches) per hour", "files per commit (mean / max)",
                     "Hub API requests per 5 min from the first second, measured (mean / max)",
                     "nodes' own, modelled (max in a window)", "newest record's age "
                     "(p50 / p95 / max)", "429s (limits hit)", "read back", "wall time"], rows))
    for r in results:
        c = r["counts"]
        print(f"- {r['kind']} {r['nodes']} {r['scenario']}: the job's start: every node's first records at the Hub "
              f"{_fmt_s(r['start_s'])} after it; measured: {r['measured_deferred']} of "
              f"{r['measured_offers']} answers put an offer off; whole run: offers {c['offers']}, "
              f"answered with a commit {c['commits']}, "
              f"put off {c['deferred']}, errors {c['errors']}, no answer in time {c['timeouts']}, the nodes' own "
              f"commits {c['own_commits']} (refused {c['own_refused']}); the leading node's newest record "
              f"(its job run rides with it), age p50 / p95: {_fmt_s(r['leader_age_p50'])} / {_fmt_s(r['leader_age_p95'])}")
    kills = [r for r in results if r["scenario"] != "steady"]
    if kills:
        rows = []
        for r in kills:
            sc, interval = r["scale"], r["plan"].interval * r["scale"]
            if r["scenario"] in ("kill-leader", "freeze-leader"):
                what = (f"{'SIGKILL' if r['scenario'] == 'kill-leader' else f'SIGSTOP {FREEZE_S:.0f} s real'}; "
                        f"standby's first commit {_fmt_s(r['takeover_s'])} after it = "
                        f"{r['takeover_s'] / interval:.2f} intervals ({r['takeover_s'] / sc:.1f} s real: the unscaled "
                        f"LEASE_STALE_S + a watch); commits of the two leaders overlap: {'yes' if r['overlap'] else 'no'}"
                        + (f"; {r['claimed_nodes']} node(s) whose offers it had claimed wait Offers.taken_wait (unscaled "
                           f"real seconds), their newest record's age apart: {_fmt_s(r['claimed_age_max'])} at most"
                           if r.get("claimed_nodes") else ""))
            elif r["scenario"] == "leader-cut-off":
                what = (f"node 0 led first and could not reach the Hub; the first commit {r['first_commit_real_s']:.1f} s "
                        f"real after the start (the unscaled hand-over and LEASE_STALE_S), by node(s) "
                        f"{r['committing_nodes']}; then as steady (see the table above)")
            elif r.get("end_at_kill"):
                where = (f"moved to the successor store {_fmt_s(r['moved_after_s'])} after the kill "
                         f"({r['moved_after_s'] / sc:.1f} s real)" if r["moved"]
                         else "found no successor store: each committed itself")
                what = (f"the job ended at the kill; every node {where}; {r['last_nodes']}/{r['nodes']} nodes' last records "
                        f"at the target, the last **{_fmt_s(r['last_s'])}** after the kill ({r['last_real_s']:.1f} s real; "
                        f"p50 {_fmt_s(r['last_p50_s'])}), {r['last_own']} of them by the node's own commit; the leader's "
                        f"first commit after the kill {_fmt_s(r['leader_first_after_kill_s'])}, its last "
                        f"{_fmt_s(r['leader_last_after_kill_s'])}; after the kill: "
                        f"the leader's commits {r['leader_commits_after_kill']}, the nodes' own commits "
                        f"{r['own_commits_after_kill']} (at most {r['commits_hour_max']} in any Hub-hour), Hub API "
                        f"requests {r['drain_api']}, 429s {r['drain_429'] or 'none'}")
            else:
                how = ("had their files committed by the leader on the successor store" if r["moved"] else
                       "committed themselves (each at once, then after the Hub's Retry-After)")
                what = (f"{r['drained_nodes']}/{r['nodes']} nodes {how}, the last {_fmt_s(r['drain_s'])} after the kill; "
                        f"Hub API requests while draining {r['drain_api']}; 429s {r['drain_429'] or 'none'}; the "
                        f"leader's commits after the kill {r['leader_commits_after_kill']}")
            rb = r["readback"]
            rows.append([r["kind"], r["nodes"], r["scenario"] + (" --end-at-kill" if r.get("end_at_kill") else ""),
                         f"{sc:g}", what,
                         f"{rb['ok']}/{rb['files']} ok, lost {rb['lost']}, stale {rb['stale']}, torn {rb['torn']}, "
                         f"newer than answered {rb['unanswered']}"
                         + (f", commits naming a path twice {r['dup_commits']}" if r["dup_commits"] is not None else ""),
                         f"{r['wall_s']:.0f} s"])
        print(table(["target", "nodes", "scenario", "scale", "what happened (Hub time)", "read back", "wall time"], rows))
    missed = [f"{r['kind']} {r['nodes']} {r['scenario']}: {miss}" for r in results for miss in _missed(r)]
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if missed else 0


def _missed(r: dict) -> list[str]:
    """The limits a row misses: issue 32's and 37's "Done when" (the Hub's limits, nothing lost, a stated age)."""
    rb, plan, sc = r["readback"], r["plan"], r["scale"]
    out = [f"read back: {rb}"] if rb["lost"] or rb["stale"] or rb["torn"] else []
    if r["scenario"] == "kill-store" and r.get("end_at_kill"):
        if r["last_nodes"] < r["nodes"]:
            out.append(f"{r['nodes'] - r['last_nodes']} of {r['nodes']} nodes' last records not at the target")
        if r["drain_429"]:  # the job's end within the Hub's limits
            out.append(f"the Hub's limits hit after the kill: {r['drain_429']}")
        return out
    if r["scenario"] == "kill-store":
        return out + ([f"{r['drained_nodes']} of {r['nodes']} nodes drained"] if r["drained_nodes"] < r["nodes"] else [])
    if r["api_5min_with_nodes"] > 500:
        out.append(f"{r['api_5min_with_nodes']:.0f} Hub API requests in a 5-minute window, the nodes' modelled "
                   f"ones included (> 500)")
    if r["limits_hit"]:
        out.append(f"the Hub's limits hit: {r['limits_hit']}")
    bound = max(plan.age_bound(), r["told_bound"]) * sc  # (a leader keeping commits back tells a slower plan)
    if r["age_max"] > bound:
        out.append(f"a rank's newest record {_fmt_s(r['age_max'])} old, past the stated {_fmt_s(bound)}")
    if r["kind"] == "bucket" and r["age_p95"] > 30:
        out.append(f"bucket age p95 {_fmt_s(r['age_p95'])} (> 30 s)")
    if r.get("overlap"):
        out.append("two leaders' commits overlapped")
    return out


if __name__ == "__main__":
    sys.exit(main())
