"""What differs between the versions of our dependencies that setup.cfg admits, in one place.

Why: the declared floors are the versions the tests run on (``.ci/run`` runs the Hub-facing tests a
second time on the oldest stack), and code written against the newest release alone breaks there.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _filelock_takes_fallback_to_soft() -> bool:
    from filelock import FileLock

    try:
        return "fallback_to_soft" in inspect.signature(FileLock).parameters
    except (TypeError, ValueError):
        return False


def os_file_lock(path: str, **kwargs: Any) -> Any:
    """A ``filelock.FileLock`` held by the OS (``flock``), never a soft lock file.

    Why: a soft lock file left by a SIGKILLed holder would block every successor. filelock 4 falls
    back to a soft lock where ``flock`` is missing unless told ``fallback_to_soft=False``; filelock
    3.12-3.23 never fall back (they raise instead) and do not know the argument; 3.24-3.29 fall back
    on such file systems (``ENOSYS``) and offer no way to say no: keep the logdir's ``.hf_mpwriter``
    on a local disk there (as everywhere, see the README's notes on shared file systems).
    """
    from filelock import FileLock

    if _filelock_takes_fallback_to_soft():
        kwargs.setdefault("fallback_to_soft", False)
    return FileLock(path, **kwargs)
