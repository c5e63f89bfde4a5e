"""What a logdir's upload looks like right now (``hf-mpwriter status``, ``sync``'s progress, the demo).

It only reads: the queue (read-only), the state files, the logs. It never touches the target: what
it says of the target is what the uploader's last audit saw there.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from .. import config as config_mod
from ..errors import ConfigurationError
from ..state import lost as lost_mod
from ..state.election import uploader_info, uploader_state
from ..state.filesystem import queue_advice
from ..state.jobqueue import HANG_COUNTS, JobQueue, audit_record
from ..state.registry import live_writers
from ..state.statedir import STATE_DIRNAME, read_json, state_dir
from ..uploader.jobrun.runfile import STATUS_FILE as JOB_VIEW_FILE
from ..uploader.snapshot import Scanner
from ..uploader.throwaway import call_in_thread

#: How many levels below a directory :func:`find_logdirs` looks (a Lightning ``save_dir`` holds its
#: logdirs at ``name/version_N``: two levels).
LOGDIR_SEARCH_DEPTH = 4


class HoldsLogdirs(ConfigurationError):
    """The directory given is not a logdir but holds some: the user meant one of them (a Lightning
    ``save_dir`` holds ``name/version_N/`` logdirs, each with its own target)."""

    def __init__(self, directory: Path, logdirs: list[Path]) -> None:
        example = logdirs[0]
        super().__init__(
            f"{str(directory)!r} is not a logdir but holds {len(logdirs)}; pass one of them, "
            f"e.g. {str(example)!r} (`hf-mpwriter status {directory}` lists them with their targets)"
        )
        self.directory = directory
        self.logdirs = logdirs


def find_logdirs(root: Path, depth: int = LOGDIR_SEARCH_DEPTH) -> list[Path]:
    """The logdirs with upload settings (``.hf_mpwriter/config.json``) at most ``depth`` levels below
    ``root``, sorted. Symbolic links are not followed (no loops, no wandering off the tree), and a
    logdir's own subdirectories (its runs) are not searched."""
    found: list[Path] = []

    def walk(directory: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:  # unreadable: nothing to show there
            return
        for entry in entries:
            if entry.name == STATE_DIRNAME or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if (path / STATE_DIRNAME / "config.json").is_file():
                found.append(path)
            elif level < depth:
                walk(path, level + 1)

    walk(root, 1)
    return found


def check_used_logdir(logdir: Path) -> None:
    """Raise :class:`ConfigurationError` unless ``logdir`` exists and an hf_mpwriter writer used it
    (:class:`HoldsLogdirs` if it is a directory that holds logdirs)."""
    if not logdir.exists():
        raise ConfigurationError(f"no such logdir: {str(logdir)!r}")
    if not logdir.is_dir():
        raise ConfigurationError(f"{str(logdir)!r} is not a directory")
    if not (logdir / STATE_DIRNAME).is_dir():
        inside = find_logdirs(logdir)
        if inside:
            raise HoldsLogdirs(logdir, inside)
        raise ConfigurationError(
            f"{str(logdir)!r} was never used by an hf_mpwriter writer (it has no {STATE_DIRNAME}/ directory); "
            f"pass the logdir given to SummaryWriter/HFSummaryWriter"
        )


def collect(logdir: str | os.PathLike) -> dict[str, Any]:
    """A JSON-able picture of the logdir: files, what is committed, jobs, uploader, errors."""
    root = Path(logdir)
    check_used_logdir(root)
    config = config_mod.load(root)
    queue = _read_queue(root, config.target_key if config else None)
    writers = live_writers(root)
    info = uploader_info(root)
    liveness = uploader_state(root) if info is not None else "none"
    files = _files(root, config, queue.committed, writers, liveness)
    if config is not None and config.repo_id:  # "name" alone: the namespace the uploader learnt from the Hub
        resolved = config_mod.resolved_repo_id(root) or _in_namespace(config.repo_id, config.endpoint)
        config = dataclasses.replace(config, repo_id=resolved or config.repo_id)
    target = None if config is None else {"kind": config.kind, "description": config.description,
                                          "prefix": config.prefix, "commit_every_s": config.commit_every,
                                          "endpoint": config.endpoint}
    pending, last = queue.pending, queue.last
    return {
        "logdir": str(root.resolve()),
        "target": target,
        "uploader": None if info is None else _uploader(info, liveness),
        "writers": [{"pid": w["pid"], "host": w.get("host"), "run_dir": w.get("run_dir")} for w in writers],
        "files": files,
        "bytes_written": sum(f["bytes_written"] for f in files),
        "bytes_committed": sum(f["bytes_committed"] for f in files),
        # Bytes on disk the target does not hold yet, whatever their stage (not snapshotted yet, queued,
        # in flight): the queued job alone says nothing of what the uploader has not looked at.
        "pending_bytes": sum(max(0, f["bytes_written"] - f["bytes_committed"]) for f in files),
        "pending_jobs": 1 if pending else 0,
        "queued_bytes": pending.bytes if pending else 0,
        "commits": queue.commits,
        "last_commit": None if last is None else {"time": last.updated, "id": last.commit_id},
        "last_error": queue.meta_error or queue.queue_error,
        # "transient" (retried), "needs_user" (a token, a repository: retrying alone won't help), "local"
        "last_error_kind": queue.error_kind if queue.meta_error else ("queue" if queue.queue_error else None),
        "audit": _audit_summary(queue.audit, last),
        "up_to_date": config is not None and all(
            f["bytes_committed"] >= f["bytes_written"] - f["torn_tail_bytes"] for f in files)
        and pending is None and _audit_summary(queue.audit, last)["agrees"],
        # calls that never answered: abandoned past their bound, uploader processes replaced for them
        "hangs": queue.hangs,
        "lost_steps": queue.lost,  # a resumed run's steps that went with an earlier attempt's disk
        "job_view": _job_view(root),
        "checked_at": time.time(),
    }


@dataclasses.dataclass
class _QueueView:
    """What :func:`collect` reads from the logdir's queue (all empty without a target or a queue)."""

    committed: dict[str, tuple[int, str, bool]] = dataclasses.field(default_factory=dict)
    pending: Any | None = None
    last: Any | None = None
    commits: int = 0
    meta_error: str | None = None
    error_kind: str | None = None
    queue_error: str | None = None
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)
    hangs: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(HANG_COUNTS, 0))
    lost: list[dict[str, Any]] = dataclasses.field(default_factory=list)


#: How long ``status`` waits for the Hub's ``whoami`` (:func:`_in_namespace`) before it shows the name as given.
WHOAMI_WAIT_S = 5.0


@functools.lru_cache(maxsize=16)
def _in_namespace(repo_id: str, endpoint: str | None) -> str | None:
    """A bare ``name`` in the token's namespace, as the Hub will name it, before the uploader resolved it (one
    ``whoami`` per process, waited for :data:`WHOAMI_WAIT_S` at most; ``None`` where it cannot be told: no token,
    no Hub, a Hub that does not answer): one name in ``status``, before and after the first commit."""
    if "/" in repo_id:
        return None
    try:
        from huggingface_hub import HfApi, get_token

        if get_token() is None:  # (huggingface_hub's client is left as it is: ``collect`` may run in a user's process)
            return None
        until = time.monotonic() + WHOAMI_WAIT_S  # (status never waits on a Hub that does not answer)
        name = call_in_thread("hf_mpwriter-whoami", lambda: HfApi(endpoint=endpoint or None).whoami(),
                              lambda: until - time.monotonic()).get("name")
    except Exception:  # (offline, a refused token, no answer in time: the name as given)
        return None
    return f"{name}/{repo_id}" if isinstance(name, str) and name else None


def _read_queue(root: Path, key: str | None) -> _QueueView:
    """The queue's word on the target ``key``, read-only; an unreadable queue is said in ``queue_error``."""
    view = _QueueView()
    if key is not None and (state_dir(root, create=False) / "queue.db").exists():
        try:
            queue = JobQueue(state_dir(root, create=False) / "queue.db", readonly=True)
            try:
                view.committed = queue.committed(key)
                view.pending = queue.unfinished(key)
                view.last = queue.last_done(key)
                view.commits = queue.count_done(key)
                recorded = queue.error()
                view.meta_error = recorded.text if recorded else None
                view.error_kind = recorded.kind.value if recorded else None
                view.audit = audit_record(queue)
                view.hangs = queue.hang_counts()
                view.lost = [{**dataclasses.asdict(lost), "text": lost.text()}
                             for lost in lost_mod.decode(queue.get_meta(lost_mod.LOST_META))]
            finally:
                queue.close()
        except sqlite3.OperationalError as exc:  # locked, an I/O error, cannot open: no rebuild fixes it
            view.queue_error = (f"the queue cannot be read ({exc}); "
                                f"{queue_advice(state_dir(root, create=False) / 'queue.db')}")
        except Exception as exc:  # corrupt, or being rebuilt by the uploader: say so
            view.queue_error = f"queue unreadable ({exc}); the next uploader start rebuilds it"
    return view


def _files(root: Path, config: Any, committed: dict[str, tuple[int, str, bool]], writers: list[dict],
           liveness: str) -> list[dict[str, Any]]:
    """Per event file the upload settings take: bytes written and committed, torn tail, complete, writing."""
    scanner = Scanner(root, config.allow_patterns if config else ("*.tfevents.*",),
                      config.ignore_patterns if config else None)
    files: list[dict[str, Any]] = []
    # "writing": a live process may still append to the file: its writer (its run, add_scalars' sub-runs
    # in it), or the uploader (the job run, system metrics). An unfinished file that none may: its writer
    # was killed, and the file will not grow again.
    writing = [os.path.realpath(str(w.get("run_dir"))) for w in writers if w.get("run_dir")]
    for rel, st in scanner.files():
        done = committed.get(rel, (0, "", False))
        whole = scanner.whole_size(rel, st, min(done[0], st.st_size))
        files.append({
            "path": rel,
            "run": os.path.dirname(rel) or ".",
            "bytes_written": st.st_size,
            "bytes_committed": done[0],
            "torn_tail_bytes": st.st_size - whole,  # an unfinished last record (a writer was killed)
            "complete": not (st.st_mode & 0o222),
            "writing": liveness != "none" or any(os.path.realpath(root / rel).startswith(w + os.sep) for w in writing),
        })
    return files


def _uploader(info: dict[str, Any], liveness: str) -> dict[str, Any]:
    """The uploader as ``status`` shows it: who, where, alive or not, and what it last said of itself."""
    return {"pid": info.get("pid"), "host": info.get("host"), "state": liveness,
            "alive": liveness == "alive", "started": info.get("started"),
            "job": info.get("job"),
            # wall time of its next cycle (in the past: one is running)
            "next_cycle_at": info.get("next_cycle_at"),
            # wall time it took a termination signal (its last commit runs)
            "signalled": info.get("signalled"),
            # its tries that failed on a local error (full disk, queue), and when
            "local_errors": info.get("local_errors"),
            "local_error_times": info.get("local_error_times")}


def _job_view(root: Path) -> dict[str, Any] | None:
    """The job run's last picture (:meth:`hf_mpwriter.uploader.jobrun.view.JobView.summary`), if this
    logdir has one: the ranks' newest steps, who is behind, who is most often a tag's min or max."""
    return read_json(state_dir(root, create=False) / JOB_VIEW_FILE)


def _audit_summary(audit: dict[str, Any], last: Any | None) -> dict[str, Any]:
    """What the uploader last saw at the target, and whether it agrees with the queue.

    It agrees once a check of the target came after the last commit and nothing found wrong is
    still waiting to be sent again: ``up_to_date`` is never based on the queue's word alone.
    """
    verified_at = audit.get("verified_at")
    repairing = audit.get("repairing") or {}
    checked_after_last_commit = verified_at is not None and (last is None or verified_at >= last.updated)
    return {
        "last_full_audit": audit.get("time"),
        "files_checked": audit.get("files"),
        "found_wrong": audit.get("found") or {},
        "verified_at": verified_at,
        "repairing": repairing,
        "repaired_total": audit.get("repaired_total", 0),
        "agrees": bool(checked_after_last_commit and not repairing),
    }
