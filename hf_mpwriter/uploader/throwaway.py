"""Calls that may never return, run in a throwaway thread that the caller can walk away from.

Why: a call to the Hub on a half-open connection (an hf_xet transfer gets no timeout at all), or to a store
whose host is frozen, can block for ever with the GIL released. The caller waits for it only as long as it
may, doing its own work meanwhile (the uploader's loop beats and takes signals), and then abandons it: the
thread ends on its own or dies with the process. One mechanism for the uploader's calls to its target
(:mod:`.target_calls`) and for the job's store (:mod:`.coordination.store`).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Abandoned(Exception):
    """The preemption deadline passed (or a second signal came) while a call the uploader's loop waits on ran."""


class Unfinished(Exception):
    """The caller walked away from a call that still runs (in :attr:`thread`)."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__(f"{thread.name} still runs")
        self.thread = thread


def call_in_thread(name: str, fn: Callable[[], T], wait: Callable[[], float]) -> T:
    """``fn()`` in a daemon thread named ``name``: what it returns, or what it raised, raised here.
    ``wait()`` is asked before each wait on the thread, while it runs: the seconds to wait next (it may do
    the caller's work meanwhile, or raise); 0 or less walks away (:class:`Unfinished`)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        step = wait()
        if step <= 0:
            if thread.is_alive():
                raise Unfinished(thread)
            break
        thread.join(step)
    done, value = outcome.pop()  # (not kept: an error's traceback would hold this frame, and the frame it)
    if not done:
        raise value
    return value
