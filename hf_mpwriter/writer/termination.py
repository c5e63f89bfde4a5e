"""What a training process does on SIGTERM: save what it logged, then behave exactly as before.

Clusters end jobs with SIGTERM, a grace period (SLURM, Kubernetes, torchrun: 30 s by default), then
SIGKILL. Python's default action for SIGTERM ends the process at once: no ``atexit``, no
``finally``, so records still buffered in the writer (up to ``flush_secs``) would be lost though
the process had seconds left. On SIGTERM, every writer of the process:

1. hands every record logged so far to the OS (:meth:`EventFileWriter.flush_for_signal`);
2. asks its logdir's uploader to commit now (``mailbox.trigger``: a small file, no network);
3. then does what the process would have done without us: calls the handler that was installed
   before (the user's, torchrun's, Accelerate's, Lightning's), ignores the signal if it was ignored,
   or, with the default disposition, ends the process by the same signal (same exit status).

Installed by the first writer created in the main thread (signal handlers can only be set there),
once per process. ``HF_MPWRITER_HANDLE_SIGTERM=0`` turns it off. A handler installed later by
someone else replaces ours (their choice is respected; their handler then decides).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from types import FrameType
from typing import Any, Callable

from ..compat import keep_signals_for_the_main_thread

logger = logging.getLogger(__name__)

#: A writer busy in its own flush when the signal lands is flushed again after this long...
RETRY_S = 0.02
#: ...at most this many times (a second), then the handler goes on.
MAX_RETRIES = 50

_flushers: weakref.WeakSet[Any] = weakref.WeakSet()  # EventFileWriter objects with flush_for_signal()
_logdirs: dict[str, Callable[[bool], None]] = {}  # logdir -> "commit now" (HFSummaryWriter's), told if we die
_previous: Any = None
_installed = False
_retries = 0
_signalled = False  # a termination signal reached this process (``signalled()``)


def watch(event_writer: Any, install: bool = True) -> None:
    """Flush ``event_writer`` on SIGTERM (installs the handler if it can and ``install``: ``False`` where
    ``HF_MPWRITER_HANDLE_SIGTERM=0`` leaves SIGTERM to the user)."""
    _flushers.add(event_writer)
    if install:
        _install()


def on_term(logdir: Path, trigger: Callable[[bool], None], install: bool = True) -> None:
    """Call ``trigger(dying)`` on SIGTERM, after the flush: the logdir's uploader commits at once.

    ``dying``: the process ends right after (the signal's default action). An uploader running as a
    thread of this process dies with it, so that is its last chance to commit (bounded wait)."""
    _logdirs[str(logdir)] = trigger
    if install:
        _install()


def forget(logdir: Path) -> None:
    """The writer of ``logdir`` closed: nothing to trigger for it any more."""
    _logdirs.pop(str(logdir), None)


def _install() -> None:
    global _installed, _previous
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        _previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _handler)
    except (ValueError, OSError) as exc:  # e.g. an embedded interpreter that owns its signals
        logger.debug("cannot handle SIGTERM here (%s): records buffered at SIGTERM may be lost", exc)
        return
    _installed = True


def signalled() -> bool:
    """Whether a termination signal reached this process: its grace period is for its records, nothing else."""
    return _signalled


def _handler(signum: int, frame: FrameType | None) -> None:
    global _retries, _signalled
    _signalled = True
    dying = _default_action_is_ours(signum)
    busy = [w for w in list(_flushers) if not _flush(w)]
    if busy and dying and _retries < MAX_RETRIES:
        # The main thread was interrupted inside a writer's own flush, its records in a local
        # variable: let it finish, then come back (the process would otherwise die with them).
        _retries += 1
        threading.Timer(RETRY_S, _signal_again, (signum,)).start()
        return
    _retries = 0
    for trigger in list(_logdirs.values()):
        try:
            trigger(dying)
        except Exception:  # a handler must not raise into the training loop
            logger.exception("could not ask the uploader for a commit on SIGTERM")
    _chain(signum, frame)


def _signal_again(signum: int) -> None:
    keep_signals_for_the_main_thread()  # the signal is for the main thread, not this timer's
    os.kill(os.getpid(), signum)


def _flush(writer: Any) -> bool:
    try:
        return bool(writer.flush_for_signal())
    except Exception:
        logger.exception("flushing TensorBoard records on SIGTERM failed")
        return True  # nothing more to try


def _default_action_is_ours(signum: int) -> bool:
    """Whether this handler stands for the signal's default action (the process ends after it).

    Not when it was installed over another handler or SIG_IGN, and not when someone installed their
    own handler over it and calls it from theirs (Lightning composes the handlers it finds with its
    own, which lets training stop gracefully): then they decide, not the default action."""
    if callable(_previous) or _previous == signal.SIG_IGN:
        return False
    try:
        return signal.getsignal(signum) is _handler
    except ValueError:
        return False


def _chain(signum: int, frame: FrameType | None) -> None:
    """Do what the process would have done without this handler."""
    previous = _previous
    if callable(previous):
        previous(signum, frame)
    elif not _default_action_is_ours(signum):
        return  # ignored, or called from someone else's handler: they decide what happens next
    else:  # SIG_DFL (or installed outside Python): die by the same signal, as without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        time.sleep(1.0)  # the signal is delivered at once; this is never reached in practice
