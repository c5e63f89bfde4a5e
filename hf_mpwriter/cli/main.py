"""hf-mpwriter: run the demo, look at a logdir's upload status, drain a backlog.

Every expected failure prints one line (what, why, what to do) and exits non-zero; --debug
shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__, environment
from ..errors import ConfigurationError, HFMPWriterError, in_logdir, with_sync_advice
from ..timing import HANDOVER_WAIT_S, STORE_RETRY_S
from .common import CLIError, show_bars, use_logdir_endpoint, where_text
from .view import cmd_view

logger = logging.getLogger(__name__)


# -- status ----------------------------------------------------------------------------------
def _committer_text(job: dict | None, config: Any) -> str:
    """Who makes this logdir's commits: the job's leader (multi-node job with a store), the node itself, or this uploader."""
    handed = f"; this node stopped leading: {job['handed_over']}" if job and job.get("handed_over") else ""
    if job and job.get("malformed"):
        handed += (f"; {job['malformed']} value(s) in the job's store could not be read and were skipped (every node "
                   "should run the same hf_mpwriter version)")
    if job and job.get("split_from"):  # said first: the job's runs are split, whatever else goes well
        handed += (f"; THIS JOB LOGS TO SEVERAL FOLDERS ({job['split_from']}): give every node's logdir the same "
                   "name")
    if job and job.get("on_successor") and not job.get("store_gone"):
        handed += (f"; the job's store is lost: the nodes coordinate through successor store {job['store']} "
                   f"({job['moves']} move(s))")
    if job and job.get("store_gone"):
        return (f"this node itself (job {job['job_id']}, node {job['node']} of {job['nodes']}): the job's store at "
                f"{job['store']} is gone, so nothing coordinates the nodes any more; it commits at its own slot of the "
                f"job's budget{_budget_text(job)}, every {_span(job.get('own_every'))} at most{handed}")
    if job and job.get("mode") == "node":
        why = job.get("why") or "the job store failed"
        return (f"this node itself, at its turn in the job's budget{_budget_text(job)}, every {_span(job.get('own_every'))} "
                f"at most (job {job['job_id']}, node {job['node']} of {job['nodes']}): {why}; "
                f"it offers its files to the job's leader again at its first commit {STORE_RETRY_S:.0f} s or more after "
                f"that{handed}")
    if job:
        pace = (f"this node's files every {_span(job.get('interval'))}, each rank's newest record at most "
                f"{_span(job.get('age_bound'))} behind" if job.get("planned") else "not planned yet")
        lead = " and leads it" if job.get("leading") else ""
        return (f"one leader for the job's {job['nodes']} nodes (job {job['job_id']}, store {job['store']}, this is node "
                f"{job['node']}{lead}; {pace} within the job's budget{_budget_text(job)}; without a leader, this node "
                f"commits itself at its turn){handed}")
    if config.nodes > 1 and config.kind in ("hub", "bucket"):
        return (f"this node itself, at its own slot of the job's budget among {config.nodes} nodes (no job store: "
                "MASTER_ADDR/MASTER_PORT and a job id), or every commit_every where every node's writers share "
                "this logdir")
    return "this uploader"


def _budget_text(job: dict) -> str:
    """`` (32 commits an hour, 400 API requests per 5 minutes)``: the budget a job's commits keep to."""
    parts = [f"{job['commits_per_hour']:g} commits an hour"] if job.get("commits_per_hour") else []
    parts += [f"{job['api_requests']:g} API requests per 5 minutes"] if job.get("api_requests") else []
    return f" ({', '.join(parts)})" if parts else ""


def _span(seconds: float | None) -> str:
    from ..timing import duration_text

    return "?" if seconds is None else duration_text(seconds)


def _age(ts: float | None) -> str:
    if not ts:
        return "never"
    secs = max(0, time.time() - ts)
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}min ago"


def _list_logdirs(found: Any, as_json: bool) -> int:
    """``status`` of a directory that holds logdirs (a Lightning ``save_dir``): each one, its target
    and whether it is up to date, and which to pass."""
    from .status import collect

    rows = []
    for logdir in found.logdirs:
        info = collect(logdir)
        rows.append({"logdir": info["logdir"], "target": info["target"], "up_to_date": info["up_to_date"],
                     "pending_bytes": info["pending_bytes"]})
    if as_json:
        print(json.dumps({"directory": str(found.directory.resolve()), "logdirs": rows}, indent=2, sort_keys=True))
        return 0
    print(f"{found.directory} is not a logdir; it holds {len(rows)} (pass one: `hf-mpwriter status LOGDIR`):")
    table = [("logdir", "target", "")]
    for logdir, row in zip(found.logdirs, rows):
        target = row["target"]
        state = "up to date" if row["up_to_date"] else f"NOT up to date ({row['pending_bytes']} bytes not committed)"
        table.append((str(logdir), where_text(target), state))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for line in table:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .. import config as config_mod
    from .status import HoldsLogdirs, collect

    try:
        info = collect(Path(args.logdir))
    except HoldsLogdirs as found:
        return _list_logdirs(found, args.json)
    use_logdir_endpoint(config_mod.load(Path(args.logdir)))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    target = info["target"]
    up = info["uploader"]
    print(f"logdir    {info['logdir']}")
    local_only = "none (local only; `hf-mpwriter sync LOGDIR --repo-id ID` uploads it)"
    print(f"target    {where_text(target) + ' (' + target['prefix'] + '/)' if target else local_only}")
    liveness = {"alive": "alive", "hung": "HUNG (no progress; writers replace it)", "none": "DEAD"}
    print("uploader  " + ("none" if up is None else f"pid {up['pid']} on {up['host']}, {liveness[up['state']]}"))
    if up is not None and config_mod.load(Path(args.logdir)) is not None:
        print("committer " + _committer_text(up.get("job"), config_mod.load(Path(args.logdir))))
    print(f"writers   {len(info['writers'])} live")
    last = info["last_commit"]
    last_id = f", {last['id']}" if last and last["id"] else ""
    # Counted from this logdir's queue: commits that carried its files (in a multi-node job, the leader's
    # commits of this node's files too), not every commit the target holds.
    print(f"commits   {info['commits']} with this logdir's files (last: {_age(last['time']) if last else 'never'}{last_id})")
    print(f"pending   {info['pending_bytes']} bytes not committed (queued: {info['pending_jobs']} job(s), "
          f"{info['queued_bytes']} bytes)")
    audit = info["audit"]
    if audit["verified_at"] is None:
        print("audit     the target was never checked yet")
    else:
        repairing = audit["repairing"]
        print(f"audit     target checked {_age(audit['verified_at'])}"
              f" (full audit: {_age(audit['last_full_audit'])}, {audit['files_checked'] or 0} files);"
              f" {len(repairing)} file(s) being repaired, {audit['repaired_total']} repaired in all")
        for path, why in sorted(repairing.items())[:10]:
            print(f"          {path}: {why}")
    if info["last_error"]:
        print(f"error     {in_logdir(info['last_error'], args.logdir)}")
    if info["job_view"]:
        for line in _job_view_lines(info["job_view"], args.tag):
            print(line)
    print()
    rows = [("run", "file", "written", "committed", "")]
    for f in info["files"]:
        state = "complete" if f["complete"] else "open" if f["writing"] else "ended (its writer is gone)"
        if f["torn_tail_bytes"]:
            state += f", {f['torn_tail_bytes']} B torn tail"
        rows.append((f["run"], os.path.basename(f["path"]), str(f["bytes_written"]), str(f["bytes_committed"]), state))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    if target is None:
        print(f"local only: `hf-mpwriter sync {args.logdir} --repo-id ID` (or `--target DIR`) uploads it")
    else:
        print(_up_to_date_text(info, args.logdir))
    return 0


def _job_view_lines(view: dict, tag: str | None) -> list[str]:
    """The job run in ``status``: how many ranks report, who is behind, who is most often a tag's min or max."""
    world, missing = view["world_size"], view["missing_ranks"]
    newest = max(view["newest_step"].values(), default="none")
    if view.get("node"):  # a node of a job with a store: the leader's node writes the run, committed to the same target
        return [f"job run   {view['run']}/ at the target, written by the job's leader (on its node): this node's "
                f"{len(view['newest_step'])} ranks' points go to it ({view['points']} made, {view['outbox']} not taken yet, "
                f"{view['waiting']} waiting for ranks); newest step {newest}; `hf-mpwriter view` shows it"]
    lines = [f"job run   {view['run']}/: {world - len(missing)} of {world} ranks, {view['points']} points written "
             f"({view['waiting']} waiting for ranks, {view['late']} late values left out); newest step {newest}"]
    behind = sorted(view["behind"].items(), key=lambda item: (-item[1], int(item[0])))
    if behind:
        shown = ", ".join(f"rank {rank} ({steps} steps)" for rank, steps in behind[:5])
        more = f" and {len(behind) - 5} more" if len(behind) > 5 else ""
        lines.append(f"          behind: {shown}{more}")
    slowest = view.get("slowest")
    if slowest and slowest["lag_s"] >= 1.0:  # (the job run's STRAGGLER_S: ranks in lockstep show none)
        lines.append(f"          slowest at the last step: rank {slowest['rank']}, {slowest['lag_s']:.1f} s after the first "
                     "rank (by the ranks' own clocks)")
    if view.get("unwaited"):
        lines.append(f"          {view['unwaited']} points written without ranks far behind (too many waited for them)")
    if view.get("restarts"):
        lines.append(f"          {view['restarts']} restart(s) read (purge_step): the steps from there were made anew")
    back = sorted((view.get("without_restart_point") or {}).items(), key=lambda item: int(item[0]))
    if back:
        shown = ", ".join(f"rank {rank} from step {step}" for rank, step in back[:5]) + (" ..." if len(back) > 5 else "")
        lines.append(f"          logged again without a restart point: {shown}. TensorBoard's default reader shows the "
                     "last values there (the job run follows it), its Python reader (--load_fast=false, what "
                     "`hf-mpwriter view` starts) both attempts'. Next time, resume with purge_step=<the first step the "
                     "resumed run logs>, or resume=True")
    if missing:
        lines.append(f"          never logged: rank {', '.join(str(r) for r in missing[:20])}"
                     + (" ..." if len(missing) > 20 else ""))
    if view.get("histograms_not_merged"):
        lines.append(f"          {view['histograms_not_merged']} histogram points not merged: the ranks' buckets differ "
                     "(log them with bins=\"tensorflow\", the default, to have them merged)")
    if tag is not None:
        extremes = view["extremes"].get(tag)
        if extremes is None:
            known = ", ".join(sorted(view["extremes"])[:20]) or "none yet"
            lines.append(f"          {tag}: not a tag of the job run (its tags: {known})")
        else:
            for side in ("max", "min"):
                ranks = ", ".join(f"rank {rank} ({times}x)" for rank, times in extremes[side])
                lines.append(f"          {tag}: most often the {side}: {ranks}")
    return lines


def _up_to_date_text(info: dict, logdir: str) -> str:
    """The last line of ``status``: up to date; or, while a live uploader works on it, what it waits
    for (its next commit's time); or the command that finishes the job."""
    from ..writer.waiting import waiting_for

    if info["up_to_date"]:
        return "up to date"
    up = info["uploader"]
    if up is not None and up["alive"] and info["last_error_kind"] in (None, "transient"):
        return (f"not up to date yet, waiting for {waiting_for(Path(logdir), info['target']['description'])} "
                f"(the uploader is alive: nothing to run)")
    return f"NOT up to date: `hf-mpwriter sync {logdir}` finishes it"


# -- sync ------------------------------------------------------------------------------------
def _sync_config(args: argparse.Namespace, logdir: Path):  # -> UploadConfig
    from .. import config as config_mod
    from ..config import UploadConfig, hub_prefix, hub_settings

    current = config_mod.load(logdir)
    if args.repo_id or args.target:
        if args.repo_id and args.target:
            raise CLIError("pass either --repo-id or --target, not both", 2)
        every = current.commit_every if current else None
        if args.repo_id:
            wanted = hub_settings(args.repo_id, logdir=logdir, path_in_repo=args.path_in_repo, commit_every=every,
                                  repo_type=args.repo_type, revision=args.revision)
        else:
            wanted = UploadConfig.for_local(args.target, prefix=hub_prefix(args.path_in_repo, logdir), logdir=logdir,
                                            commit_every=every or 300.0)
        if current is not None and current.target_key == wanted.target_key:
            return current  # same target: keep its saved settings (patterns, privacy, squash)
        wanted.save(logdir)  # refuses a logdir already bound to another target
        return wanted
    if current is None:
        raise CLIError(f"{str(logdir)!r} has no upload target yet: pass --repo-id ID or --target DIR", 2)
    return current




def _take_over(logdir: Path, quiet: bool) -> bool:
    """Make a running uploader give way: ``sync`` runs with the settings and token it was given now
    (a fixed token, a new target), not with those the running one started with. Returns whether
    one was running (``sync`` restarts one if it gives up: see :func:`_give_back`)."""
    from ..state import election, mailbox
    from ..writer import supervisor

    state = election.uploader_state(logdir)
    if state == "hung":
        supervisor.stop_hung_uploader(logdir)
    elif state == "alive":
        if not quiet:
            print("asking the running uploader to hand over (it finishes its current cycle first)")
        mailbox.request_handover(logdir)
    return state != "none"


def _give_back(logdir: Path, replaced: bool, quiet: bool) -> None:
    """A ``sync`` that gives up takes its handover request back, and if it replaced a running
    uploader, starts one again: the backlog must not be left with nobody to send it (the writers
    may have exited meanwhile). Not after an error only the user can fix (no token, no such
    repository): a background uploader could only retry it, alone, for nothing; writers still
    running start their own."""
    from ..state import election, mailbox
    from ..writer import supervisor

    mailbox.withdraw_handover(logdir)
    if replaced and not _needs_user(logdir) and election.uploader_state(logdir) == "none":
        started = supervisor.ensure_uploader(logdir, "process")
        if not quiet and started:
            print("a background uploader was started again; it keeps trying (`hf-mpwriter status` shows it)")


def _needs_user(logdir: Path) -> bool:
    """The logdir's current error is one that retrying cannot fix (recorded by this ``sync``, or by
    the running uploader)."""
    from ..state.jobqueue import ErrorKind
    from ..state.queue_readers import read_error
    from ..state.statedir import state_dir
    from ..writer import supervisor

    error = read_error(state_dir(logdir, create=False) / "queue.db")
    if error is not None and error.kind is ErrorKind.NEEDS_USER and error.pid == os.getpid():
        return True
    return supervisor.fatal_error(logdir) is not None


def cmd_sync(args: argparse.Namespace) -> int:
    from .. import config as config_mod
    from ..state.election import AlreadyRunning
    from ..uploader.loop import Uploader
    from ..uploader.process import on_termination
    from .status import check_used_logdir, collect

    logdir = Path(args.logdir)
    check_used_logdir(logdir)
    use_logdir_endpoint(config_mod.load(logdir))  # the uploader's target is on it (targets.target_for)
    bars = show_bars(args.quiet)
    config = _sync_config(args, logdir)
    from ..targets.hub_client import configure_process_client

    # sync's process is the uploader's own: its client gets timeouts, the documented way
    configure_process_client(config.http_timeout)
    uploader = Uploader(logdir, config)
    if args.watch:
        print(f"watching {logdir} -> {uploader.target.description} (Ctrl-C: last commit, then exit; twice: exit now)")
        on_termination(uploader.terminate)
        code = uploader.run(watch=True)
        if code == 2:
            raise CLIError(f"another uploader is already running for {logdir}; `hf-mpwriter status {logdir}` shows it")
        return code
    from tqdm.auto import tqdm

    total = max(1, collect(logdir)["bytes_written"])
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="sync", disable=not bars)

    def show(_progress=None) -> None:
        info = collect(logdir)
        bar.n = min(total, info["bytes_committed"])
        bar.set_postfix(commits=info["commits"], pending=info["pending_bytes"])
        bar.refresh()

    replaced = _take_over(logdir, args.quiet)
    _held.holding = True  # the uploader's lines, until the end: its error is said once, in the last line
    ok = False
    try:
        ok = uploader.drain(timeout=args.timeout, on_progress=show, wait=min(HANDOVER_WAIT_S, args.timeout))
    except AlreadyRunning:  # the node's uploader did not hand over: ask it to commit now and watch it
        from ..state.mailbox import trigger, withdraw_handover

        withdraw_handover(logdir)  # not waiting for it any more: it must not exit for us later
        trigger(logdir)
        deadline = time.monotonic() + args.timeout
        ok = False
        while time.monotonic() < deadline:
            show()
            if collect(logdir)["up_to_date"]:
                ok = True
                break
            if _needs_user(logdir):  # the running uploader waits for the user: so would we, for nothing
                break
            time.sleep(0.5)
    finally:
        if not ok:
            _give_back(logdir, replaced, args.quiet)
    show()
    bar.close()
    info = collect(logdir)
    if ok and info["up_to_date"]:
        _release_held()
        print(f"synced: {info['bytes_committed']} bytes in {len(info['files'])} file(s) are on {info['target']['description']}")
        return 0
    error = info["last_error"] or "timed out"
    left = info["pending_bytes"]
    final = with_sync_advice(f"not everything is committed ({left} bytes left): {error}. The logs are safe and queued",
                             args.logdir, "fix the cause and run it again")
    _release_held(final)
    raise CLIError(final)


# -- view ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        workers=args.workers, steps=args.steps, repo_id=args.repo_id, target=args.target, chaos=args.chaos,
        out=args.out, commit_every_s=args.commit_every_s, local_hub=args.local_hub, quiet=args.quiet,
    )


# -- main ------------------------------------------------------------------------------------
class _DefaultOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default said once: appended only where its help does not say it already, and
    only a value worth saying (not ``None``, nor an on/off flag's ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False):
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    formatter = _DefaultOnce
    parser = argparse.ArgumentParser(
        prog="hf-mpwriter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="To try a script without the Hub, the test Hub (a Hub-compatible server on this machine; needs "
               "pip install 'hf_mpwriter[testing]'):\n  python -m hf_mpwriter.testing.hub_server --port 8765 "
               "--token hf_test   # prints the export lines that point a shell at it",
    )
    parser.add_argument("--version", action="version", version=f"hf-mpwriter {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="N worker processes log while the uploader commits; then verify",
                          description="Worker processes log while the uploader commits; then every remote file is "
                                      "checked against the local one, record by record.", formatter_class=formatter,
                          allow_abbrev=False)  # --commit-every (minutes in Python) must not pass for --commit-every-s
    demo.add_argument("--workers", type=int, default=4, help="number of worker processes (ranks)")
    demo.add_argument("--steps", type=int, default=200, help="training steps each worker logs")
    where = demo.add_mutually_exclusive_group()
    where.add_argument("--repo-id", help="commit to this Hub repo (needs a token and network)")
    where.add_argument("--target", help="commit to this local directory (default: inside --out)")
    where.add_argument("--local-hub", action="store_true",
                       help="commit through the real huggingface_hub client to the project's own local Hub server")
    demo.add_argument("--chaos", action="store_true", help="SIGKILL and restart a worker and the uploader on the way")
    demo.add_argument("--out", default="hf_mpwriter_demo", help="directory for the demo's logs and target")
    demo.add_argument("--commit-every-s", type=float, default=2.0,
                      help="seconds between commits (HFSummaryWriter's commit_every= is in minutes)")
    demo.add_argument("--quiet", action="store_true",
                      help="no progress bar (none either when stderr is not a terminal); only the result")
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser("status", help="per file: bytes written and committed; jobs, uploader, audit, errors",
                            description="What a logdir's upload looks like now (reads only). Its target is on the "
                                        "Hub the logdir records (the HF_ENDPOINT its writers had), whatever the "
                                        "shell's HF_ENDPOINT. A directory that holds logdirs (e.g. a Lightning "
                                        "save_dir) lists them, each with its target.", formatter_class=formatter)
    status.add_argument("logdir", help="the logdir given to the writers (or a directory that holds logdirs)")
    status.add_argument("--json", action="store_true", help="stable JSON output")
    status.add_argument("--tag", help="a scalar tag of the job run (e.g. a step time): the ranks most often its "
                                      "max and its min (the stragglers)")
    status.set_defaults(func=cmd_status)

    sync = sub.add_parser("sync", help="commit a logdir's backlog now (exit 0 only when all is committed)",
                          description="Commit a logdir's backlog now, taking over from a running uploader "
                                      "(exit 0 only when everything is committed). The logs go to the Hub the logdir "
                                      "records (the HF_ENDPOINT its writers had), whatever the shell's HF_ENDPOINT "
                                      "(a line on stderr says so when they differ).", formatter_class=formatter)
    sync.add_argument("logdir", help="the logdir given to the writers")
    where = sync.add_mutually_exclusive_group()
    where.add_argument("--repo-id", help="Hub repo (or hf://buckets/NS/NAME[/PATH]) to commit to (needed if the "
                                         "logdir has no target yet; then the shell's HF_ENDPOINT is its Hub, "
                                         "recorded). A logdir sends to one repo on one Hub: naming its own repo "
                                         "keeps its recorded Hub even if HF_ENDPOINT names another; another repo is "
                                         "refused. To send it to another Hub: delete LOGDIR/.hf_mpwriter/config.json, "
                                         "then sync --repo-id with HF_ENDPOINT set to that Hub (all is sent again)")
    where.add_argument("--target", help="local directory to commit to")
    sync.add_argument("--repo-type", default=None, choices=["model", "dataset", "space", "bucket"],
                      help="type of --repo-id (default: model; hf://buckets/NS/NAME[/PATH] is a bucket)")
    sync.add_argument("--revision", default=None, help="branch of --repo-id (default: main)")
    sync.add_argument("--path-in-repo", default="tensorboard", help="folder in the repo (or --target) for the logs")
    sync.add_argument("--watch", action="store_true", help="keep running as this node's uploader")
    sync.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    sync.add_argument("--quiet", action="store_true",
                      help="no progress bars, ours or the client's (none either when stderr is not a terminal)")
    sync.set_defaults(func=cmd_sync)
    view = sub.add_parser("view", help="TensorBoard on the remote copy (repo or bucket), nothing downloaded first",
                          description="Start TensorBoard on the remote copy of a logdir (its repo or bucket, on the "
                                      "Hub the logdir records), or on a repo id or hf:// URL (on the shell's "
                                      "HF_ENDPOINT), read where it is through huggingface_hub. The repo or bucket "
                                      "must exist and be readable with your token (checked first, --print too).",
                          formatter_class=formatter)
    view.add_argument("target", help="a logdir (its remote copy), a repo id, or an hf:// URL "
                                     "(hf://me/repo/tensorboard, hf://datasets/..., hf://buckets/me/name/...)")
    view.add_argument("--port", type=int, default=6006, help="TensorBoard's port")
    view.add_argument("--print", action="store_true", help="print the TensorBoard command instead of running it")
    view.set_defaults(func=cmd_view)
    return parser


class _HeldUploaderLines(logging.Filter):
    """While ``sync`` drains, the uploader's log lines wait here instead of going to stderr; at the end,
    :meth:`release` prints those the command's own last line does not say (its error is said once)."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.holding and record.name.startswith("hf_mpwriter.uploader"):
            self.held.append(record)
            return False
        return True

    def release(self, handler: logging.Handler, final: str = "") -> None:
        self.holding = False
        for record in self.held:
            if not (final and record.getMessage() in final):
                handler.handle(record)
        self.held.clear()


_held = _HeldUploaderLines()


def _release_held(final: str = "") -> None:
    for handler in logging.getLogger("hf_mpwriter").handlers:
        _held.release(handler, final)
        break


def _setup_logging(debug: bool) -> None:
    """Our warnings on stderr, redacted; huggingface_hub keeps its own handler (adding ours to the root
    logger as well would print each of its warnings twice)."""
    from ..redaction import RedactingFilter

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(_held)
    package = logging.getLogger("hf_mpwriter")
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if debug else logging.WARNING)
    package.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug)
    try:
        _check_environment()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; nothing is lost: `hf-mpwriter sync LOGDIR` resumes", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not _stdout_closed():
            return _error(args, exc)
        # `hf-mpwriter status LOGDIR | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except (HFMPWriterError, OSError) as exc:
        return _error(args, exc)
    finally:
        _release_held()  # whatever ended the command, the uploader's held lines are not lost


def _check_environment() -> None:
    """A bad ``HF_MPWRITER_*`` setting is said first, whatever the command, as a usage error (exit 2)."""
    try:
        environment.read()
    except ConfigurationError as exc:
        raise CLIError(str(exc), 2) from None


def _error(args: argparse.Namespace, exc: Exception) -> int:
    """One line on stderr, the error's exit code (a traceback with ``--debug``)."""
    if args.debug:
        raise exc
    print(f"hf-mpwriter: error: {exc}", file=sys.stderr)
    return int(getattr(exc, "code", 1))


def _stdout_closed() -> bool:
    """Whether the broken pipe is stdout's (its reader went away), not one of the work's own."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # a pipe whose reader is gone reports POLLERR
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows) or no stdout: assume it
        return True


if __name__ == "__main__":
    sys.exit(main())
