"""Every call the uploader makes to its target, run in a worker thread while the loop's own thread goes on being
the loop: it beats (writers see it waiting on the network, not stopped) and takes termination signals.

Two bounds end the wait without waiting for the call, which is left to end on its own or to die with the process:

- its own bound (:func:`~hf_mpwriter.uploader.schedule.call_bound`: read timeouts and the bytes in flight): a call
  that never answers (an hf_xet transfer to a CAS on a half-open connection gets no timeout at all) raises a
  transient :class:`~hf_mpwriter.errors.TargetError`; the target drops its client, so the next call starts on a
  fresh one, and the committer backs off and reconciles (asks the target whether the abandoned commit landed)
  before sending again;
- the preemption deadline, or a second signal: :class:`~.throwaway.Abandoned` ends the loop.

An abandoned hf_xet transfer keeps holding hf_xet's process-wide upload slots (why, and what was measured:
``docs/design-notes.md``, "Abandoned Xet transfers"). So where the uploader owns its process, the loop then
replaces the process (:attr:`TargetCalls.stuck`, :func:`.replacement.replace_process`): nothing of the stuck calls
survives an ``exec``. Where it cannot (a thread of the training process, ``sync``), it carries on with a fresh
client; a CAS silent for long can then hold its Xet uploads until hf_xet gives up.

A commit abandoned either way is treated as one whose answer was lost: a late landing of it is fenced by
``parent_commit`` (412) once anything newer was committed. The worker never touches the queue (its connection is
the loop thread's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import TargetError
from ..targets import Target
from .schedule import call_bound
from .throwaway import Abandoned, Unfinished, call_in_thread

T = TypeVar("T")


class TargetCalls:
    """The uploader's calls to ``target`` (the committer makes every one through :meth:`__call__`)."""

    def __init__(self, target: Target, http_timeout: float, meanwhile: Callable[[], float],
                 after: Callable[[], None], count_hang: Callable[[str], None]) -> None:
        """``meanwhile()``: what the loop does while a call runs (beat, take signals), every quarter second; it
        returns the preemption deadline (monotonic). ``after()``: once a call returned (what it changed, said at
        once). ``count_hang(key)``: a call abandoned, for ``status``."""
        self.target, self.http_timeout = target, http_timeout
        self.meanwhile, self.after, self.count_hang = meanwhile, after, count_hang
        self.abandoned: list[threading.Thread] = []  # calls given up on that may still be running

    def __call__(self, what: str, fn: Callable[..., T], *args: Any, nbytes: int = 0) -> T:
        """``fn(*args)``, abandoned past its bound (read timeouts and ``nbytes``)."""
        return self.in_worker(what, fn, *args, bound=call_bound(self.http_timeout, nbytes))

    def in_worker(self, what: str, fn: Callable[..., T], *args: Any, bound: float | None) -> T:
        """``fn(*args)`` in a worker thread; past ``bound`` seconds it is abandoned. ``None``: work that bounds
        itself (the job's store calls)."""
        started = time.monotonic()

        def wait() -> float:
            if time.monotonic() >= self.meanwhile():  # the process is about to be killed anyway
                raise Abandoned(f"{what} still running at the preemption deadline")
            return 0.25 if bound is None or time.monotonic() - started < bound else 0.0

        try:
            result = call_in_thread(f"hf_mpwriter-{what}", lambda: fn(*args), wait)
            self.after()
            return result
        except Unfinished as stuck:
            self.target.reset_client()  # the stuck call keeps its client; the next one gets a fresh one
            self.abandoned.append(stuck.thread)
            self.count_hang("abandoned_calls")
        raise TargetError(
            f"cannot {what} on {self.target.description}: the call did not finish within {bound:.0f} s "
            f"(HF_MPWRITER_HTTP_TIMEOUT and the bytes in flight); abandoned, will retry with a fresh client",
            transient=True,
        )

    @property
    def stuck(self) -> bool:
        """Whether a call abandoned earlier still runs."""
        self.abandoned = [worker for worker in self.abandoned if worker.is_alive()]
        return bool(self.abandoned)
