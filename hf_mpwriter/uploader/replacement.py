"""The uploader's process replaced by a fresh image of itself (``exec``), after a call it abandoned.

Why: an abandoned hf_xet transfer keeps holding hf_xet's process-wide upload slots (``docs/design-notes.md``,
"Abandoned Xet transfers"); nothing of the stuck calls survives an ``exec``. The termination signals are held
across it: a SIGTERM during the new image's start is its last commit, not its death.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

logger = logging.getLogger("hf_mpwriter.uploader")

#: Signals that end the uploader: each starts a last commit (see :mod:`hf_mpwriter.uploader.schedule`).
TERMINATION_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


def termination_signals() -> list[int]:
    """:data:`TERMINATION_SIGNALS` this platform has."""
    return [s for s in (getattr(signal, name, None) for name in TERMINATION_SIGNALS) if s is not None]


def replace_process(logdir: Path, target: str) -> None:
    """``exec`` a fresh uploader of ``logdir`` in this process (same pid, no thread of the old one left). The
    queue and the lock must be released first; the new image takes over as after a SIGKILL (it reconciles the
    abandoned commit before sending it again). Returns only if ``exec`` failed."""
    argv = [sys.executable, "-m", "hf_mpwriter.uploader", str(logdir.resolve())]
    logger.warning("a call to %s was abandoned and may still hold hf_xet's transfers: replacing this uploader "
                   "process with a fresh one", target)
    for name in ("hf_mpwriter", "huggingface_hub"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()
    # Held (the mask survives exec) until the new image handles them (hf_mpwriter.uploader.process.on_termination).
    blocked = termination_signals() if hasattr(signal, "pthread_sigmask") else []
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        logger.error("could not start a fresh uploader in this process (%s); exiting so that a writer starts one", exc)
