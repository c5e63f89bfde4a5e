"""The process's one flushing thread: every event-file writer flushed every ``flush_secs``.

Apart from :mod:`hf_mpwriter.events.event_file` (one writer's files and buffer): this is
process-wide state (a thread, an exit hook, a fork hook) that every writer of the process shares.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref

from ..compat import keep_signals_for_the_main_thread

logger = logging.getLogger(__name__)


class Flusher:
    """One daemon thread per process that flushes every writer every ``flush_secs``.

    One thread for all writers (not one per writer, as tensorboardX does) keeps a process with many
    writers cheap. It is process-wide state by nature (a thread, an exit hook, a fork hook), so it
    is one object, and it installs its hooks when the first writer is opened: importing the package
    changes nothing in the process.
    """

    PERIOD = 0.25

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[object] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._hooked = False

    def add(self, writer: object) -> None:
        with self._lock:
            if not self._hooked:
                atexit.register(self.close_all)
                if hasattr(os, "register_at_fork"):
                    os.register_at_fork(after_in_child=self.after_fork_in_child)
                self._hooked = True
            self._writers.add(writer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hf_mpwriter-flusher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        keep_signals_for_the_main_thread()
        while True:
            time.sleep(self.PERIOD)
            now = time.monotonic()
            for writer in list(self._writers):
                try:
                    writer._tick(now)  # type: ignore[attr-defined]
                except Exception:  # never let one writer's trouble stop the others' flushes
                    logger.exception("periodic flush failed")

    def close_all(self) -> None:
        """At interpreter exit: flush every writer and close its file (so it counts as complete).

        A writer closed earlier on a full disk still holds records: one last bounded attempt, then
        the error says they are lost (they are: the process is ending).
        """
        for writer in list(self._writers):
            try:
                if writer.closed:  # type: ignore[attr-defined]
                    writer._last_attempt()  # type: ignore[attr-defined]
                else:
                    writer.close()  # type: ignore[attr-defined]
            except Exception:
                logger.exception("closing an event writer at exit failed")

    def after_fork_in_child(self) -> None:
        for writer in list(self._writers):
            writer._forget_after_fork()  # type: ignore[attr-defined]
        self._writers = weakref.WeakSet()
        self._thread = None
        self._lock = threading.Lock()


#: The process's flusher; a writer adds itself when it opens (:meth:`Flusher.add`).
flusher = Flusher()
