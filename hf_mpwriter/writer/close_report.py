"""What ``HFSummaryWriter.close()`` says when it could not do all it should: files whose commit it cannot
tell (an unreadable queue), cannot commit (an error retrying cannot fix) or did not see committed within
``close_timeout``, and records the disk refused. Always with what is safe and the command that finishes
the job.

Apart from the writer: these are words, read from the queue the uploader keeps; the writer decides
when to wait and for how long.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from ..config import UploadConfig
from ..errors import with_sync_advice
from ..state.queue_readers import read_committed, read_error, read_failure, read_lost
from ..state.statedir import state_dir
from . import supervisor

logger = logging.getLogger(__name__)


def say_what_is_left(root: Path, upload: UploadConfig, sizes: dict[str, int], *, committed: bool, unwritten: int,
                     close_timeout: float, token: str | None) -> None:
    """Log what a closing writer leaves behind: nothing if ``committed`` and ``unwritten`` is 0."""
    unreadable = None if committed else read_failure(_queue_path(root))  # said when it began to last
    fatal = None if committed or unreadable else supervisor.fatal_error(root, token or "")
    if unreadable is not None:
        logger.warning(
            "cannot tell whether %d file(s) of %s are committed to %s: this process cannot read the upload "
            "queue (%s). What is on disk is safe; `hf-mpwriter status %s` shows what the queue holds once it "
            "can be read, and this finishes the job: hf-mpwriter sync %s",
            len(sizes), root, upload.description, unreadable, root, root,
        )
    elif fatal is not None:
        logger.error("%d file(s) of %s cannot be committed: %s", missing(root, upload.target_key, sizes), root,
                     with_sync_advice(f"{fatal}. Nothing is lost (the logs are on disk and queued)", root))
    elif not committed:
        logger.warning("%s", with_sync_advice(
            f"{missing(root, upload.target_key, sizes)} file(s) of {root} are not committed to {upload.description} "
            f"after {close_timeout:.0f} s{_last_error_suffix(root)}. What is on disk is safe and queued; the "
            f"uploader keeps trying while it runs", root, "and this finishes the job"))
    for lost in read_lost(_queue_path(root)):
        if lost.run in {posixpath.dirname(rel) or "." for rel in sizes}:  # (this writer's runs: each rank says its own)
            logger.warning("%s: they were on that disk only, and never reached %s (docs/guarantees.md says what bounds "
                           "such a loss)", lost.text(), upload.description)
    if unwritten:
        logger.error(
            "%d bytes of records of %s are NOT on disk (it refused them: see the error above); they are kept "
            "in memory and written if space returns before this process exits, otherwise they are lost",
            unwritten, root,
        )


def missing(root: Path, key: str, sizes: dict[str, int]) -> int:
    """How many of the files in ``sizes`` the queue does not show committed to ``key`` up to that size."""
    committed = read_committed(_queue_path(root), key)
    return sum(1 for rel, size in sizes.items() if committed.get(rel, 0) < size)


def _last_error_suffix(root: Path) -> str:
    """`` (last error: ...)``: the uploader's error record, or nothing."""
    error = read_error(_queue_path(root))
    return f" (last error: {error.text})" if error else ""


def _queue_path(root: Path) -> Path:
    return state_dir(root, create=False) / "queue.db"
