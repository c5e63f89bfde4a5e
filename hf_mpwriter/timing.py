"""Every "when" of hf_mpwriter in one policy: how often the sides beat, when a process counts as dead
or hung, how long the uploader waits, retries and bounds its calls.

Why one module: these numbers only make sense together (a writer judges the uploader hung after
:data:`HUNG_AFTER_S` because the uploader's loop beats at least every :data:`POLL_S`; a host's file is
stale after :data:`OTHER_HOST_STALE_S` because writers refresh it every :data:`HEARTBEAT_S`), and both
the writer side and the uploader side read them (neither imports the other).
:mod:`hf_mpwriter.uploader.schedule` turns the uploader's into decisions. It owns the numbers only:
it imports nothing and decides nothing. The documentation quotes some of them (``docs/reference.md``,
``docs/guarantees.md``); a change here is a change there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

# -- liveness: writers and the uploader watching each other ----------------------------------------
#: Writers check (and if need be start) the uploader, and refresh their registration, this often.
HEARTBEAT_S = 1.0
#: An uploader whose heartbeat has not moved for this long is stopped or blocked, and is replaced.
#: Its loop beats at least every second, also while it waits on the network.
HUNG_AFTER_S = 5.0
#: A process of another host (shared logdir) counts as alive while its file is fresher than this:
#: we cannot ask that host's kernel, so writers and uploaders refresh their file's mtime.
OTHER_HOST_STALE_S = 10.0
#: A new writer waits at most this long for an uploader to be up before returning.
START_WAIT_S = 5.0
#: ``uploader="thread"``: the writer waits at most this long for its uploader thread to be elected.
THREAD_START_WAIT_S = 5.0
#: After an uploader exits with an error right away, writers wait this long before the next try
#: (instead of respawning it every heartbeat).
SPAWN_PAUSE_S = 30.0
#: An uploader this host spawned counts as on its way (no second one is spawned) while it runs and
#: is this young: on a loaded node, starting Python and the client can take longer than a writer
#: waits for it, and every writer spawning its own would load the node further.
STARTING_FOR_S = 60.0
#: A writer's request that the uploader hand over to its new token keeps writers with other tokens from
#: starting one for this long: its requester starts the next uploader (it asks again while the old runs).
HANDOVER_TO_TOKEN_S = 30.0
#: Registrations of dead writers are deleted only once their heartbeat is this old, looked for this often.
REGISTRATION_STALE_S = 3600.0
PRUNE_EVERY_S = 60.0
#: How long ``close()`` waits, by default, for this process's files to be committed.
DEFAULT_CLOSE_TIMEOUT_S = 120.0
#: A writer says that it cannot read the queue once every read has failed for this long (longer than a
#: rebuild of the queue; a locked one has already waited out SQLite's 30 s busy timeout by then).
READ_FAILING_S = 5.0
#: A transient upload error is said in the training process once it has lasted this long (longer than
#: the backoff between two retries of a flaky network, shorter than anyone's patience).
TRANSIENT_WARN_AFTER_S = 600.0
#: How long ``hf-mpwriter sync`` waits for a running uploader to finish its cycle and hand over.
HANDOVER_WAIT_S = 30.0

# -- the uploader's loop (see hf_mpwriter.uploader.schedule) ------------------------------------------------
#: How often the loop looks at its signals while nothing is due.
POLL_S = 0.25
#: A commit asked for by a signal or a closing writer waits this long for the others' last records.
SETTLE_S = 0.5
#: After SIGTERM, commits of what is new come at most this often (the deadline is near: no spacing).
TERM_GAP_S = 1.0
#: Default seconds between SIGTERM and the uploader's exit: fits in the usual 30 s grace period.
DEFAULT_PREEMPTION_DEADLINE_S = 20.0
#: A second termination signal this soon after the first is the same event, not "exit now": a scheduler
#: may signal every process of a job, and a launcher forward the signal as well (SIGTERM and SIGHUP together).
SIGNAL_REPEAT_S = 1.0
#: With no writer left, drain attempts come at least this far apart.
FINAL_GAP_S = 5.0
#: After a local error (disk full, database locked), the next try comes this soon.
LOCAL_RETRY_S = 2.0
#: After an error nobody expected, the loop pauses this long (never dies: writers would respawn it in a loop).
UNEXPECTED_ERROR_PAUSE_S = 10.0
#: Backoff of a failing job, at most.
MAX_BACKOFF_S = 300.0
#: Backoff for an error that needs the user (token, repository): no point asking often.
NEEDS_USER_BACKOFF_S = 30.0
#: The read timeout of the uploader's Hub calls (``HF_MPWRITER_HTTP_TIMEOUT`` sets another); connecting: 10 s.
HTTP_TIMEOUT_S = 60.0
#: A call to the target is abandoned once it has run this many read timeouts (``HF_MPWRITER_HTTP_TIMEOUT``)...
CALL_BOUND_TIMEOUTS = 3.0
#: ... plus the time its bytes take at this rate (256 KiB/s: slower than any link a job logs over).
CALL_MIN_RATE_BPS = 256 * 1024
#: Once every writer is gone, the uploader keeps retrying a backlog this long before it gives up.
DRAIN_TIMEOUT_S = 600.0

# -- targets ---------------------------------------------------------------------------------------
#: Commits an hour the Hub accepts to one repository, and so the seconds between two (~28 s): the
#: shortest spacing of a repository's commits, unless ``HF_MPWRITER_COMMITS_PER_HOUR`` asks for more
#: (an endpoint that accepts more: :func:`hf_mpwriter.config.commit_spacing`).
HUB_COMMITS_PER_HOUR = 128
HUB_COMMIT_SPACING_S = 3600 / HUB_COMMITS_PER_HOUR
#: Seconds during which the head is read before every commit, after the Hub refused one because the branch
#: had moved: someone else commits to it too (another node's uploader, the job's checkpoint pushes), and a
#: remembered head would be refused again. Afterwards the last commit's head is trusted again.
SHARED_BRANCH_S = 600.0
#: ``commit_every`` of a repository when not given (huggingface_hub's HFSummaryWriter: 5 minutes).
HUB_COMMIT_EVERY_S = 300.0
#: Default interval for a bucket: no commit budget, so seconds rather than minutes.
BUCKET_COMMIT_EVERY_S = 10.0
#: Full audits of the target this often (and one at every start)...
AUDIT_EVERY_S = 600.0
#: ... and of a bucket this often (its writes are not fenced; its paths-info answers 1000 files per call).
BUCKET_AUDIT_EVERY_S = 60.0

# -- one leader per job (hf_mpwriter.uploader.coordination) -------------------------------
#: Every call to the job's torch.distributed store is abandoned after this long (a frozen store host
#: blocks a call for ever).
STORE_CALL_S = 5.0
#: The leader looks at the nodes' offers, and renews its lease, this often.
LEADER_POLL_S = 0.5
#: A lease that has not been renewed for this long (on the observer's clock) is taken over: a dead
#: leader is replaced within it.
LEASE_STALE_S = 10.0
#: The leader commits this long after the first offer of a round arrived (the nodes cycle at the same
#: wall-clock moments, so their offers arrive within about this much of each other).
JOB_GATHER_S = 2.0
#: At a job's start, a node waits at most this long for node 0 to have created the repository (or bucket),
#: then creates it itself: in a job of :data:`PREPARED_WAIT_NODES` nodes or more (the requests it saves grow
#: with the nodes); in a smaller one, that share of it, at least :data:`PREPARED_WAIT_MIN_S` (node 0 may be the
#: node that cannot reach the Hub, and every other node's first commit waits for it).
PREPARED_WAIT_S = 60.0
PREPARED_WAIT_NODES = 128
PREPARED_WAIT_MIN_S = 15.0
#: A node waits at most this long (and at most a third of its call bound) for the leader to commit
#: its offer; then it takes the offer back and commits the files itself.
OFFER_WAIT_S = 30.0
#: The leader answers an offer it cannot write within this long (the budget, a 429) with the time to offer
#: again, so that its node does not wait, give up and commit itself.
DEFER_AFTER_S = OFFER_WAIT_S / 3
#: A node whose offer could not be taken back (the store stopped answering) commits it itself only this long
#: after its own wait: a leader stops taking it after the same wait from when it first saw it, plus its polls.
CLAIM_MARGIN_S = 5.0
#: A leader's commit may take this long (or the plan's interval, if longer) before the leader counts as stuck
#: and hands over: the Hub answers a commit of a job's files in seconds, and a hung one holds the offers it took.
LEADER_COMMIT_GRACE_S = 30.0
#: A leader that handed the lease over (its writes failed for a plan interval) does not take it again for this
#: many hand-over times: another node's leader, maybe one that reaches the Hub, gets it first.
ABSTAIN_FACTOR = 4.0
#: After the job's store failed (not there yet, gone, not answering), a node offers its files there
#: again at its first commit this long after (meanwhile it commits itself, in its node turn): an
#: ``env://`` store created after the first writer, or a store that comes back, is joined then. (Its
#: leader thread backs off from :data:`LEADER_POLL_S`, doubling, to half of :data:`LEASE_STALE_S`.)
STORE_RETRY_S = 30.0
#: A successor store's host copies what a new leader takes up (the job's books, the job run's word) from the
#: job's store this often, and the leader reads the successors' addresses as often
#: (:mod:`hf_mpwriter.uploader.coordination.successor`).
SUCCESSOR_COPY_S = 10.0
#: A store in use that answered none of a node's calls in time for this long is lost to it, like one where nothing
#: listens any more: its machine is down, frozen or cut off. The node then moves to a successor store that
#: answers (a store that comes back later finds it gone: two leaders until the job ends, each within its books).
STORE_LOST_S = 60.0
#: A successor store's host whose own files are drained serves its store on, while other nodes that moved
#: there have not left, for at most this long (their last commits go through it, not each node's own).
SUCCESSOR_LINGER_S = DRAIN_TIMEOUT_S

# -- system metrics --------------------------------------------------------------------------------
#: Seconds between two samples when ``system_metrics=True``.
SYSTEM_METRICS_PERIOD_S = 10.0
#: Shortest period accepted (steps are whole seconds).
SYSTEM_METRICS_MIN_PERIOD_S = 1.0
#: Delay of the first sample after the uploader starts (CPU use and rates need two readings): short,
#: so that a short run gets a sample too.
SYSTEM_METRICS_FIRST_SAMPLE_S = 0.2

# -- the job run (hf_mpwriter.uploader.jobrun.view) ----------------------------------------------------------
#: A step of the job run waits this long (at least one commit interval) for the ranks that have not
#: logged it yet; then it is written with the ranks that did, the others named as missing.
JOB_VIEW_WAIT_S = 30.0
#: A rank that logged nothing for this long is no longer waited for (its writer's death ends the wait at
#: once): far longer than a stall (a data loader, a checkpoint written by some ranks), so that a slow rank
#: is late, not missing.
JOB_VIEW_SILENT_S = 600.0
#: At its end, a node of a job with a store sends its job run points again for up to this long, until a
#: leader took them: the leader's node may be ending too, and the lease moves only once it is gone (or
#: :data:`LEASE_STALE_S` after it died).
JOB_VIEW_LAST_WAIT_S = 30.0
#: The most one commit cycle spends reading a backlog of the ranks' files into the job run (a restart
#: without its state, ``sync`` of a logdir logged offline); the rest is read at the next cycles. At the
#: job's end the backlog is read whole before the last points are written.
JOB_VIEW_READ_S = 5.0


#: Stopping a node's job leader waits this long for its threads, in all (not each).
LEADER_STOP_WAIT_S = 10.0
#: At its first upload a node of a job waits this long for the Xet write token the leader shares (at its
#: first round): a thousand nodes starting together then cost the Hub one token request, not a thousand.
XET_WAIT_S = 5.0


@dataclass(frozen=True)
class JobTiming:
    """The waits of a job's coordination (:mod:`hf_mpwriter.uploader.coordination`), handed to its member and
    leader: a simulation of Hub hours in minutes hands in a scaled copy (:meth:`scaled`) instead of patching
    this module's constants."""

    poll: float = LEADER_POLL_S
    lease_stale: float = LEASE_STALE_S
    gather: float = JOB_GATHER_S
    offer_wait: float = OFFER_WAIT_S
    defer_after: float = DEFER_AFTER_S
    claim_margin: float = CLAIM_MARGIN_S
    commit_grace: float = LEADER_COMMIT_GRACE_S
    store_retry: float = STORE_RETRY_S
    #: How long stopping a node's leader waits for its threads, in all (less once the uploader was signalled:
    #: its preemption deadline comes first).
    stop_wait: float = LEADER_STOP_WAIT_S
    xet_wait: float = XET_WAIT_S
    successor_copy: float = SUCCESSOR_COPY_S
    store_lost: float = STORE_LOST_S
    successor_linger: float = SUCCESSOR_LINGER_S
    #: The job run's longest round (its exchange's period: ``commit_every`` up to this): the leader's node
    #: offers no more often than the job run changes (:meth:`~hf_mpwriter.uploader.coordination.plan.Plan.leader_pacing`).
    job_run_wait: float = JOB_VIEW_WAIT_S
    #: The Hub's windows (an hour of commits, 5 minutes of API requests) are this many times shorter: a
    #: simulation's (the rates per window stay the Hub's: :meth:`hf_mpwriter.uploader.coordination.plan.Budget.scaled`).
    windows: float = 1.0

    def scaled(self, factor: float, *names: str) -> JobTiming:
        """A copy with the waits ``names`` (default: every one, and the Hub's windows) ``factor`` times shorter."""
        chosen = names or tuple(f.name for f in fields(self))
        return replace(self, **{name: getattr(self, name) * factor if name == "windows" else getattr(self, name) / factor
                                for name in chosen})


def duration_text(seconds: float) -> str:
    """A span as a person reads it, the same wherever it is said (``status``, a closing writer): seconds,
    minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
