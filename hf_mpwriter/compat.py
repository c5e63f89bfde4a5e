"""What differs between the versions of our dependencies that setup.cfg admits, in one place.

Why: the declared floors are the versions the tests run on (``.ci/run`` runs the Hub-facing tests a
second time on the oldest stack), and code written against the newest release alone breaks there.
"""

from __future__ import annotations

import errno
import inspect
import re
import signal
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

#: What ``flock`` answers on a file system that does not implement it (FUSE, some NFS and SMB mounts).
_NO_FLOCK_ERRNOS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}


class LockUnsupported(ConfigurationError):
    """The file system of a lock file has no working ``flock``: a lock there would not exclude anyone."""


@lru_cache(maxsize=1)
def _filelock_takes_fallback_to_soft() -> bool:
    from filelock import FileLock

    try:
        return "fallback_to_soft" in inspect.signature(FileLock).parameters
    except (TypeError, ValueError):
        return False


class OsFileLock:
    """A lock file held by the OS (``flock``), never a soft lock file: the one way this package locks.

    Why: a soft lock file left by a SIGKILLed holder would block every successor, and a lock that
    silently stops excluding would let two uploaders (or two writers of one run directory) in. So
    where ``flock`` is missing, :meth:`acquire` raises :class:`LockUnsupported` with what the file
    system lacks, whatever filelock would do: filelock 4 falls back to a soft lock unless told
    ``fallback_to_soft=False`` (we tell it); 3.12-3.23 raise (``NotImplementedError`` or an
    ``OSError``); 3.24-3.29 fall back with no way to say no (the lock turns into a ``SoftFileLock``:
    we see it, let it go and refuse).
    """

    def __init__(self, path: str | Path, *, timeout: float = -1, mode: int = 0o600) -> None:
        from filelock import FileLock

        self.path = Path(path)
        kwargs: dict[str, Any] = {"fallback_to_soft": False} if _filelock_takes_fallback_to_soft() else {}
        self._lock = FileLock(str(path), timeout=timeout, mode=mode, **kwargs)

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock (``filelock.Timeout`` if another process holds it past ``timeout``), or raise
        :class:`LockUnsupported` where the file system has no ``flock``."""
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            if self._is_soft():  # 3.24-3.29 fell back, and a stale soft lock file is in the way
                raise self._unsupported("filelock fell back to a soft lock file") from None
            raise
        except NotImplementedError as exc:  # filelock 3.12-3.23 on ENOSYS
            raise self._unsupported(str(exc)) from None
        except OSError as exc:
            if exc.errno in _NO_FLOCK_ERRNOS:
                raise self._unsupported(f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}") from None
            raise
        if self._is_soft():
            self._lock.release(force=True)
            raise self._unsupported("filelock fell back to a soft lock file")

    def release(self, force: bool = False) -> None:
        self._lock.release(force=force)

    @property
    def is_locked(self) -> bool:
        return bool(self._lock.is_locked)

    def _is_soft(self) -> bool:
        from filelock import SoftFileLock

        return isinstance(self._lock, SoftFileLock)

    def _unsupported(self, why: str) -> LockUnsupported:
        return LockUnsupported(
            f"the file system of {self.path.parent} does not support flock ({why}), so {self.path.name} "
            f"cannot be locked safely: put the logdir on a local disk or on a file system with flock"
        )


def os_file_lock(path: str | Path, *, timeout: float = -1, mode: int = 0o600) -> OsFileLock:
    """The lock at ``path``, held by the OS: see :class:`OsFileLock`."""
    return OsFileLock(path, timeout=timeout, mode=mode)


# -- versions ---------------------------------------------------------------------------------------
#: The first huggingface_hub release with each feature that needs more than the floor in setup.cfg.
BUCKETS_VERSION = (1, 5)  # HfApi.create_bucket, batch_bucket_files, get_bucket_paths_info
BUCKET_FS_VERSION = (1, 6)  # HfFileSystem reads hf://buckets/... (what `hf-mpwriter view` of a bucket needs)


def hub_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed huggingface_hub (``(0, 0)`` if it cannot be read)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = re.match(r"(\d+)\.(\d+)", version("huggingface_hub"))
    except PackageNotFoundError:
        return (0, 0)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def require_hub_version(minimum: tuple[int, int], feature: str) -> None:
    """A :class:`~hf_mpwriter.errors.ConfigurationError` naming the version ``feature`` needs, if the
    installed huggingface_hub is older: at construction, not hours later in the uploader."""
    installed = hub_version()
    if installed < minimum:
        from importlib.metadata import version

        needed = ".".join(map(str, minimum))
        raise ConfigurationError(
            f"{feature}: requires huggingface_hub>={needed}; this environment has huggingface_hub "
            f"{version('huggingface_hub')}. "
            f"Upgrade it (pip install -U 'huggingface_hub>={needed}'; transformers 4.x pins huggingface_hub<1.0: "
            f"transformers>=5 lifts that), or use a Hub repository (repo_id='me/run') instead"
        )


def keep_signals_for_the_main_thread() -> None:
    """Block SIGTERM and SIGINT in the calling thread: one hf_mpwriter started in a training process.

    Why: the kernel hands a process-directed signal to any thread that does not block it. Had one of
    ours taken SIGTERM while the main thread waits in a lock or a semaphore (a pool worker waiting for
    its next task), the main thread would never be interrupted to run Python's handler, and a process
    that dies of SIGTERM without hf_mpwriter would live on (``Pool.terminate()`` then waits for ever).
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

