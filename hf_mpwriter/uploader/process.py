"""The uploader as a process of its own: ``python -m hf_mpwriter.uploader LOGDIR``.

Its command line, its log file (``uploader.log``, rotated, tokens redacted), its client (configured
the documented way: this process is the uploader's, see
:func:`hf_mpwriter.targets.hub_client.configure_process_client`), its termination signals and its
exit. The loop itself is :mod:`hf_mpwriter.uploader.loop`'s; the process replacing itself after an
abandoned call, :mod:`hf_mpwriter.uploader.replacement`'s.

Once the loop returns, everything it owns is closed and what it committed is committed: the process
ends at once (:func:`_exit`), without the interpreter's teardown (torch's store clients, hf_xet's
runtime, abandoned calls' threads), which can take seconds on a loaded node and would run past a
preempted node's deadline (``docs/design-notes.md``).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from .. import config as config_mod
from ..errors import ConfigurationError
from ..redaction import RedactingFilter
from ..state.statedir import private_open, secure_state_dir, state_dir
from ..targets.hub_client import configure_process_client
from ..timing import HTTP_TIMEOUT_S
from .loop import Uploader
from .replacement import termination_signals

logger = logging.getLogger("hf_mpwriter.uploader")

#: ``uploader.log`` rotates past this size (two old copies are kept).
LOG_BYTES = 1 << 20


def main(argv: list[str] | None = None) -> int:
    """Entry point of the uploader process: ``python -m hf_mpwriter.uploader LOGDIR``."""
    parser = argparse.ArgumentParser(description="The uploader of a logdir (one per node).")
    parser.add_argument("logdir")
    args = parser.parse_args(argv)
    # First: a signal during the start (torch's import, a silent job store: seconds) is kept for the
    # loop, whose deadline counts from it, instead of ending the process with the backlog.
    early: list[float] = []
    on_termination(lambda: early.append(time.monotonic()))
    logdir = Path(args.logdir)
    try:
        _log_to_file(logdir)
        config = config_mod.load(logdir)
        # This process is the uploader's own: its client gets timeouts, the documented way.
        configure_process_client(config.http_timeout if config else HTTP_TIMEOUT_S)
        uploader = Uploader(logdir, config, owns_process=True)
        on_termination(uploader.terminate)
        while early:
            uploader.terminate(early.pop(0))
        _exit(uploader.run())
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 3
    except Exception:  # logged through the redacting handler, not printed raw to uploader.out
        logger.exception("the uploader failed")
        return 1
    return 0  # (not reached)


def _exit(code: int) -> None:
    """End the process now with ``code``, its logs and output flushed (see the module)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _log_to_file(logdir: Path) -> None:
    """``uploader.log`` (private, rotated, tokens redacted): where the writers and ``status`` look."""
    secure_state_dir(logdir)
    os.close(private_open(state_dir(logdir) / "uploader.log"))  # private before the handler opens it
    handler = logging.handlers.RotatingFileHandler(
        state_dir(logdir) / "uploader.log", maxBytes=LOG_BYTES, backupCount=2, delay=True
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    for name in ("hf_mpwriter", "huggingface_hub"):  # the client's own warnings too, redacted
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("hf_mpwriter").setLevel(logging.INFO)


def on_termination(handler: Callable[[], None]) -> None:
    """SIGTERM, SIGINT, SIGHUP: the last commit now (preemption), not death with the backlog on a
    disk that may not survive it. The uploader runs in its own session, but SLURM, systemd and
    Kubernetes signal every process of the job (its cgroup), so it gets them too.

    The signals are then unblocked: a process inherits its parent thread's signal mask, and a writer's
    heartbeat thread, which starts a replacement uploader, blocks SIGTERM and SIGINT
    (:func:`hf_mpwriter.compat.keep_signals_for_the_main_thread`): such an uploader never saw them.
    One that arrived meanwhile runs the handler now."""
    signums = termination_signals()
    for signum in signums:
        signal.signal(signum, lambda _signum, _frame: handler())
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)

