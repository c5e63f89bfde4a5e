"""``hf-mpwriter sync``: commit a logdir's backlog now, taking over from a running uploader (and
giving it back if the sync gives up), with the uploader's log lines held until the command's last line."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import with_sync_advice
from ..timing import HANDOVER_WAIT_S
from .common import CLIError, show_bars, use_logdir_endpoint

if TYPE_CHECKING:
    from ..uploader.loop import Uploader


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


#: On the command's log handler (:mod:`hf_mpwriter.cli.main` puts it there); it holds only while ``sync`` drains.
held_lines = _HeldUploaderLines()


def release_held(final: str = "") -> None:
    """Print the held uploader lines (those ``final``, the command's last line, does not say)."""
    for handler in logging.getLogger("hf_mpwriter").handlers:
        held_lines.release(handler, final)
        break


def _sync_config(args: argparse.Namespace, logdir: Path):  # -> UploadConfig
    """The settings ``sync`` runs with: the logdir's own, or those ``--repo-id``/``--target`` name (saved)."""
    from .. import config as config_mod
    from ..config import UploadConfig, hub_settings
    from ..upload_args import hub_prefix

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
    from ..state.queue_readers import read_error
    from ..state.statedir import state_dir
    from ..state.upload_error import ErrorKind
    from ..writer import supervisor

    error = read_error(state_dir(logdir, create=False) / "queue.db")
    if error is not None and error.kind is ErrorKind.NEEDS_USER and error.pid == os.getpid():
        return True
    return supervisor.fatal_error(logdir) is not None


def cmd_sync(args: argparse.Namespace) -> int:
    """``hf-mpwriter sync``: drain the backlog (exit 0 once all is committed), or with ``--watch`` run as
    this node's uploader."""
    from .. import config as config_mod
    from ..uploader.loop import Uploader
    from .status import check_used_logdir

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
        return _watch(uploader, logdir)
    return _drain(uploader, args, bars)


def _watch(uploader: Uploader, logdir: Path) -> int:
    """``sync --watch``: run as this node's uploader until a termination signal."""
    from ..uploader.process import on_termination

    print(f"watching {logdir} -> {uploader.target.description} (Ctrl-C: last commit, then exit; twice: exit now)")
    on_termination(uploader.terminate)
    code = uploader.run(watch=True)
    if code == 2:
        raise CLIError(f"another uploader is already running for {logdir}; `hf-mpwriter status {logdir}` shows it")
    return code


def _drain(uploader: Uploader, args: argparse.Namespace, bars: bool) -> int:
    """Take over, commit the backlog under a progress bar (or watch the running uploader commit it),
    give back on failure; then say the outcome."""
    from tqdm.auto import tqdm

    from ..state.election import AlreadyRunning
    from .status import collect

    logdir = Path(args.logdir)
    total = max(1, collect(logdir)["bytes_written"])
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="sync", disable=not bars)

    def show(_progress: object = None) -> None:
        info = collect(logdir)
        bar.n = min(total, info["bytes_committed"])
        bar.set_postfix(commits=info["commits"], pending=info["pending_bytes"])
        bar.refresh()

    replaced = _take_over(logdir, args.quiet)
    held_lines.holding = True  # the uploader's lines, until the end: its error is said once, in the last line
    ok = False
    try:
        ok = uploader.drain(timeout=args.timeout, on_progress=show, wait=min(HANDOVER_WAIT_S, args.timeout))
    except AlreadyRunning:  # the node's uploader did not hand over: ask it to commit now and watch it
        ok = _watch_running(logdir, args.timeout, show)
    finally:
        if not ok:
            _give_back(logdir, replaced, args.quiet)
    show()
    bar.close()
    return _outcome(args, ok)


def _watch_running(logdir: Path, timeout: float, show: Callable[[], None]) -> bool:
    """Ask the running uploader to commit now and watch it; whether the logdir got up to date in time."""
    from ..state.mailbox import trigger, withdraw_handover
    from .status import collect

    withdraw_handover(logdir)  # not waiting for it any more: it must not exit for us later
    trigger(logdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        show()
        if collect(logdir)["up_to_date"]:
            return True
        if _needs_user(logdir):  # the running uploader waits for the user: so would we, for nothing
            break
        time.sleep(0.5)
    return False


def _outcome(args: argparse.Namespace, ok: bool) -> int:
    """The last line: what was synced (exit 0), or what is left and why (a :class:`CLIError`)."""
    from .status import collect

    info = collect(Path(args.logdir))
    if ok and info["up_to_date"]:
        release_held()
        print(f"synced: {info['bytes_committed']} bytes in {len(info['files'])} file(s) are on {info['target']['description']}")
        return 0
    error = info["last_error"] or "timed out"
    left = info["pending_bytes"]
    final = with_sync_advice(f"not everything is committed ({left} bytes left): {error}. The logs are safe and queued",
                             args.logdir, "fix the cause and run it again")
    release_held(final)
    raise CLIError(final)
