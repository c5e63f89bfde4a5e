"""The text of ``hf-mpwriter status``: a logdir's upload said line by line (who commits, the job run,
what is left), or the logdirs a directory holds. Apart from :mod:`.status`, which collects the JSON
picture this text is made from."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import in_logdir
from ..timing import STORE_RETRY_S
from .common import use_logdir_endpoint, where_text


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
    """``hf-mpwriter status``: the logdir's upload in lines (``--json``: :func:`.status.collect`'s picture)."""
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
    for lost in info["lost_steps"]:  # (up to date or not: what went with an earlier attempt's disk is not coming)
        print(f"LOST      {lost['text']}")
    if info["job_view"]:
        for line in _job_view_lines(info["job_view"], args.tag):
            print(line)
    print()
    _print_files(info["files"])
    print()
    if target is None:
        print(f"local only: `hf-mpwriter sync {args.logdir} --repo-id ID` (or `--target DIR`) uploads it")
    else:
        print(_up_to_date_text(info, args.logdir))
    return 0


def _print_files(files: list[dict]) -> None:
    """The table of ``status``: per event file, its run, bytes written and committed, and its state."""
    rows = [("run", "file", "written", "committed", "")]
    for f in files:
        state = "complete" if f["complete"] else "open" if f["writing"] else "ended (its writer is gone)"
        if f["torn_tail_bytes"]:
            state += f", {f['torn_tail_bytes']} B torn tail"
        rows.append((f["run"], os.path.basename(f["path"]), str(f["bytes_written"]), str(f["bytes_committed"]), state))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


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

