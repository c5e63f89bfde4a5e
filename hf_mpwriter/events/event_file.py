"""The per-process event-file writer: whole records, unique names, prompt flushes, rotation.

Why not tensorboardX's ``EventFileWriter``: it pushes every event through a bounded
``multiprocessing.Queue`` and a pure-Python crc32c (what that costs: ``docs/design-notes.md``), names
files by the second and host only (two processes of one host starting in the same second open the
same file with ``"wb"`` and destroy each other's data) and flushes every two minutes.

This writer appends framed records to an in-memory list under a lock and hands them to the OS with
one ``write`` per batch (a batch holds whole records only). Data handed to the OS survives a
SIGKILL of the process, so a crash loses at most ``flush_secs`` or ``max_queue`` events. File names
carry the time to the microsecond, the host and the pid and are created with ``O_EXCL``, so they
never collide and sort in creation order, which is the order TensorBoard reads them in. Past
``rotate_bytes`` the writer continues in a new file and makes the old one read-only: a read-only
event file is complete and the uploader can send it once, as it is, without copying it. A closed
writer stays closed: the ``SummaryWriter`` that logs after ``close()`` creates a new one (a new file
in the same run directory).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..state.liveness import host_file_name
from .encoding import file_version_event
from .flusher import flusher
from .records import frame

if TYPE_CHECKING:  # tensorboardX imports torch: not at run time here (the uploader stays light)
    from tensorboardX.proto.event_pb2 import Event

logger = logging.getLogger(__name__)

#: Rotation size: bounds what one commit re-sends for an open file.
DEFAULT_ROTATE_BYTES = 4 * 1024 * 1024
#: Default ``flush_secs``: what a crash can lose, in seconds of logging.
DEFAULT_FLUSH_SECS = 2.0
#: ``close()`` on a full disk keeps trying this long for space to return before giving up.
CLOSE_RETRY_SECS = 10.0
#: While the disk refuses writes, records are kept in memory up to this many bytes per writer;
#: past it they are dropped and counted (said loudly), so a long full-disk period cannot exhaust
#: the training process's memory.
MAX_UNWRITTEN_BYTES = 64 * 1024 * 1024
_HOST = host_file_name()
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


def event_file_name(created: float, suffix: str = "") -> str:
    """``events.out.tfevents.<seconds>.<microseconds>.<host>.<pid><suffix>``: unique and sortable."""
    sec = int(created)
    usec = int(round((created - sec) * 1e6)) % 1_000_000
    return f"events.out.tfevents.{sec:010d}.{usec:06d}.{_HOST}.{os.getpid()}{suffix}"


class EventFileWriter:
    """Append-only writer of one run directory's event files (one file at a time).

    Thread-safe. ``flush()`` hands buffered records to the OS; nothing here does network I/O or
    hashing. A background thread (shared by all writers of the process) flushes every
    ``flush_secs``.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        max_queue: int = 10,
        flush_secs: float = DEFAULT_FLUSH_SECS,
        filename_suffix: str = "",
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> None:
        self._logdir = Path(logdir)
        self._max_queue = max(1, int(max_queue or 1))
        self.flush_secs = float(flush_secs if flush_secs is not None else DEFAULT_FLUSH_SECS)
        self._suffix = filename_suffix or ""
        self._rotate_bytes = int(rotate_bytes)
        # Re-entrant: the SIGTERM handler (see :mod:`hf_mpwriter.writer.termination`) runs in the main thread,
        # possibly between two bytecodes of this very writer's add_serialized.
        self._lock = threading.RLock()
        self._flushing = False  # inside _flush_locked: a signal handler must not write meanwhile
        self._buffer: list[bytes] = []
        self._unwritten = b""  # tail of a batch the OS refused (disk full): written first next time
        self._fd: int | None = None
        self._size = 0
        self._last_name = ""
        self._last_flush = time.monotonic()
        self._write_error: str | None = None
        self._unwritten_since: float | None = None
        self._buffered_bytes = 0  # counted only while the disk refuses writes
        self._dropped = 0  # records dropped past MAX_UNWRITTEN_BYTES (a long full-disk period)
        self.files: list[Path] = []
        self.closed = False
        self._open_new_file()
        flusher.add(self)

    # -- public API (tensorboardX EventFileWriter compatible) -------------------------------
    def get_logdir(self) -> str:
        return str(self._logdir)

    def add_event(self, event: Event) -> None:
        """Append one ``Event`` protocol buffer."""
        self.add_serialized(event.SerializeToString())

    def add_serialized(self, data: bytes) -> None:
        """Append one already-serialized ``Event``: the hot path."""
        record = frame(data)
        with self._lock:
            if self.closed:
                raise RuntimeError(self.closed_message())
            if self._write_error is not None:  # disk full: keep records, up to a bound
                self._keep_while_unwritable(record)
                return
            # self._buffer, not a local alias: a signal handler may flush (and replace it) between two bytecodes.
            self._buffer.append(record)
            if len(self._buffer) >= self._max_queue:
                self._flush_locked()

    def flush(self) -> bool:
        """Hand every buffered record to the OS (one ``write``; whole records only).

        Returns ``True`` once every record logged so far is written (a SIGKILL of the process can no
        longer lose it). If the OS refuses them (disk full) it returns ``False`` and never raises:
        the transformers Trainer, Accelerate and Lightning call ``flush()`` after every log, and a
        logger must not be the reason a training run dies. The records are kept in memory (bounded,
        see :data:`MAX_UNWRITTEN_BYTES`) and retried every ``flush_secs``; the error is logged once,
        with what to do; :attr:`unwritten_bytes` tells how much waits.
        """
        with self._lock:
            self._flush_locked()
            return not (self._unwritten or self._buffer)

    def flush_for_signal(self) -> bool:
        """Flush from a signal handler; ``False`` if it cannot be done right now.

        The handler runs in the main thread, which may itself be inside :meth:`_flush_locked` with
        records in a local variable: writing then would duplicate or lose them, so the caller comes
        back a moment later (:mod:`hf_mpwriter.writer.termination`). The flusher thread holding the lock
        only delays this (one write).
        """
        if not self._lock.acquire(timeout=1.0):
            return False
        try:
            if self._flushing:
                return False
            if not self.closed or self._unwritten or self._buffer:
                self._flush_locked()
            return True
        finally:
            self._lock.release()

    def close(self, retry_secs: float | None = None) -> None:
        """Flush, and make the current file read-only: it is complete.

        If the disk is full, keeps trying for ``retry_secs`` (default :data:`CLOSE_RETRY_SECS`)
        in case space returns. What still cannot be written then stays in memory, retried every
        ``flush_secs`` while the process runs, and an error says exactly that: how many bytes,
        logged since when, and that they are lost if the process exits first.
        """
        deadline = time.monotonic() + (CLOSE_RETRY_SECS if retry_secs is None else retry_secs)
        with self._lock:
            if self.closed:
                return
            self._flush_locked()
            while (self._unwritten or self._buffer) and time.monotonic() < deadline:
                self._lock.release()  # let other threads log meanwhile
                try:
                    time.sleep(0.1)
                finally:
                    self._lock.acquire()
                self._flush_locked()
            if not self._buffer and not self._unwritten:
                self._close_file_locked()
            else:
                logger.error("%s", self._unwritten_message(closing=True))
            self.closed = True

    @property
    def unwritten_bytes(self) -> int:
        """Bytes of records accepted but not yet written (disk full); 0 normally."""
        with self._lock:
            return len(self._unwritten) + sum(map(len, self._buffer))

    def _unwritten_message(self, closing: bool = False) -> str:
        pending = len(self._unwritten) + sum(map(len, self._buffer))
        since = time.strftime("%H:%M:%S", time.localtime(self._unwritten_since or time.time()))
        text = (
            f"{pending} bytes of TensorBoard records logged since {since} could not be written to "
            f"{self.files[-1] if self.files else self._logdir} ({self._write_error}); they are kept in memory "
            f"and retried every {self.flush_secs:g} s while this process runs"
        )
        if self._dropped:
            text += f"; {self._dropped} later records were dropped (over {MAX_UNWRITTEN_BYTES >> 20} MiB unwritten)"
        if closing:
            text += ". They are LOST if the process exits before space returns: free disk space now"
        return text

    def _keep_while_unwritable(self, record: bytes) -> None:
        """Keep ``record`` in memory while the disk refuses writes; past a bound, drop and count.

        Only the flusher retries writing (every ``flush_secs``): the training thread must not pay
        for a failed write every ``max_queue`` events.
        """
        if len(self._unwritten) + self._buffered_bytes >= MAX_UNWRITTEN_BYTES:
            if not self._dropped:
                logger.error(
                    "more than %d MiB of records could not be written to %s (%s); records are now DROPPED "
                    "(and counted) until space returns: free disk space",
                    MAX_UNWRITTEN_BYTES >> 20, self._logdir, self._write_error,
                )
            self._dropped += 1
            return
        self._buffer.append(record)
        self._buffered_bytes += len(record)

    def closed_message(self) -> str:
        if getattr(self, "_forked", False):
            return ("this writer was created in a parent process before fork(); create a new writer in "
                    "each worker process (each process writes its own files)")
        return ("this event writer is closed; create a new writer to log more (it continues the same run "
                "directory in a new event file)")

    @property
    def pending_error(self) -> str | None:
        """Why the last flush could not write (e.g. disk full), or ``None``."""
        return self._write_error

    # -- internals -------------------------------------------------------------------------
    def _open_new_file(self) -> None:
        now = time.time()
        while True:
            name = event_file_name(now, self._suffix)
            if name <= self._last_name:  # keep write order == name order, even if the clock stepped back
                now = max(now, time.time()) + 1e-6
                continue
            path = self._logdir / name
            try:
                self._fd = os.open(path, _OPEN_FLAGS, 0o644)
            except FileExistsError:
                now += 1e-6
                continue
            break
        self._last_name = name
        self._size = 0
        self.files.append(path)
        # Every event file starts with its version record, as TensorFlow's and tensorboardX's do.
        self._buffer.insert(0, frame(file_version_event(now)))

    def _flush_locked(self) -> None:
        self._flushing = True
        try:
            self._flush_unguarded()
        finally:
            self._flushing = False

    def _flush_unguarded(self) -> None:
        self._last_flush = time.monotonic()
        if self._fd is None:
            if not self._buffer:
                return
            self._open_new_file()
        data = self._unwritten + b"".join(self._buffer) if self._buffer else self._unwritten
        self._buffer = []
        self._buffered_bytes = 0
        self._unwritten = b""
        if not data:
            return
        try:
            self._write_all(data)
        except OSError as exc:
            if self._write_error is None:
                self._unwritten_since = time.time()
                logger.error(
                    "cannot write event file %s (%s); %d bytes are kept in memory and retried every %g s: "
                    "free disk space or fix permissions",
                    self.files[-1], exc, len(self._unwritten), self.flush_secs,
                )
            self._write_error = str(exc)
            return
        if self._write_error is not None:
            if self._dropped:
                logger.error(
                    "event file %s is writable again; %d records logged while it was not were dropped",
                    self.files[-1], self._dropped,
                )
            else:
                logger.warning("event file %s is writable again; nothing was lost", self.files[-1])
            self._write_error = None
            self._unwritten_since = None
        if self._size >= self._rotate_bytes:
            self._close_file_locked()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)  # type: ignore[arg-type]
            except OSError:
                self._unwritten = bytes(view)
                raise
            self._size += written
            view = view[written:]

    def _close_file_locked(self) -> None:
        if self._fd is None:
            return
        try:
            os.fchmod(self._fd, 0o444)  # read-only == complete: the uploader may send it as it is
        except OSError:  # pragma: no cover - e.g. filesystems without permissions
            logger.debug("could not mark %s read-only", self.files[-1])
        os.close(self._fd)
        self._fd = None

    def _tick(self, now: float) -> None:
        if now - self._last_flush < self.flush_secs:
            return
        with self._lock:
            if not self.closed:
                self._flush_locked()
            elif self._unwritten or self._buffer:  # closed during a write error: finish the job
                self._flush_locked()
                if not self._unwritten and not self._buffer:
                    self._close_file_locked()

    def _last_attempt(self) -> None:
        """At exit, for a writer closed with records it could not write: try once more, then say."""
        with self._lock:
            if not (self._unwritten or self._buffer):
                return
            self._flush_locked()
            if self._unwritten or self._buffer:
                pending = len(self._unwritten) + sum(map(len, self._buffer))
                logger.error(
                    "the process is exiting and %d bytes of TensorBoard records for %s could still not be written "
                    "(%s): they are LOST; everything before them is on disk", pending,
                    self.files[-1] if self.files else self._logdir, self._write_error,
                )
            else:
                self._close_file_locked()

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent owns the file and its buffer; write nothing of them."""
        self._lock = threading.RLock()
        self._forked = True
        self._buffer = []
        self._unwritten = b""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self.files = []
        self.closed = True
