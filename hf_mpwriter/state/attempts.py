"""The logdirs that uploaders of this user served on this host, per target: where a killed attempt
may have left records that no commit took.

A relaunched job often logs into a new folder (a new default logdir, a new ``version_N``, a new
rendezvous id): the uploader of the killed attempt's folder never runs again, and what that attempt
wrote after its last commit would stay on disk until someone runs ``hf-mpwriter sync``. So each
uploader records its logdir here when it starts and forgets it once it exits with everything
committed; the next uploader of the same target finds the logdirs left and starts their uploaders,
which commit what is there and exit (their writers are gone).

One small JSON file per logdir in ``$XDG_CACHE_HOME/hf_mpwriter/logdirs`` (default
``~/.cache/hf_mpwriter/logdirs``), named by hashes of the host and the path: each has one writer at a
time (the logdir's elected uploader), so no lock is needed; a host reads only its own entries, and only
logdirs of this user are taken up. Nothing here may stop an uploader: every
error is logged and passed over.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .liveness import HOST
from .statedir import STATE_DIRNAME, read_json, write_json_atomic

logger = logging.getLogger(__name__)


def index_dir() -> Path:
    """Where the entries are (read each time: a test or a job may point ``XDG_CACHE_HOME`` elsewhere)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "hf_mpwriter" / "logdirs"


def _host_part() -> str:
    """The entries of this host start with this (a home shared by many hosts: each reads its own)."""
    return hashlib.sha256(HOST.encode()).hexdigest()[:12]


def _entry(logdir: Path) -> Path:
    name = hashlib.sha256(f"{HOST}\0{Path(logdir).resolve()}".encode()).hexdigest()[:24]
    return index_dir() / f"{_host_part()}-{name}.json"


def record(logdir: Path, target: str) -> None:
    """``logdir``'s uploader runs for ``target`` (a target's key and endpoint: no token)."""
    try:
        index_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json_atomic(_entry(logdir), {"logdir": str(Path(logdir).resolve()), "host": HOST, "target": target})
    except OSError as exc:
        logger.debug("cannot record %s in %s (%s)", logdir, index_dir(), exc)


def forget(logdir: Path) -> None:
    """``logdir`` holds nothing uncommitted and no writer: no later uploader needs to look at it."""
    try:
        _entry(logdir).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.debug("cannot remove %s's entry (%s)", logdir, exc)


def left_behind(logdir: Path, target: str) -> list[Path]:
    """The other logdirs of this host recorded for ``target`` (their uploaders did not finish), owned by this
    user. Entries of logdirs that are gone are removed; one that cannot be read is passed over."""
    try:
        entries = sorted(index_dir().glob(f"{_host_part()}-*.json"))
    except OSError:
        return []
    mine, found = str(Path(logdir).resolve()), []
    for path in entries:
        entry = read_json(path)
        if not entry or entry.get("host") != HOST or entry.get("target") != target or entry.get("logdir") == mine:
            continue
        other = Path(str(entry.get("logdir")))
        try:
            state = other / STATE_DIRNAME
            if not state.is_dir():
                forget(other)
            elif state.stat().st_uid == os.getuid():  # (another user's: never started with this user's token)
                found.append(other)
        except OSError as exc:  # a lost permission, a stale NFS handle: not this uploader's problem
            logger.debug("passed over %s (%s)", other, exc)
    return found
