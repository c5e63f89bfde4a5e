"""At start, say once per job when its world size alone fills a Hub repository with event files.

Every rank writes its own event files and rotates to a new one every ``rotate_bytes``, so a job
makes ``ranks × (1 + bytes per rank / rotate_bytes)`` files
(:func:`hf_mpwriter.events.file_count.files_made`), and a repository holds fewer than
:data:`~hf_mpwriter.config.HUB_MAX_FILES`. Rank 0 alone says it: every rank would compute the same
numbers, and a job's ranks usually share one console (torchrun, srun): one line per job, not one
per node or rank. The uploader warns again as the repository really fills
(:mod:`hf_mpwriter.uploader.file_limit`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import HUB_MAX_FILES, UploadConfig
from ..events.file_count import TYPICAL_BYTES_PER_RANK_PER_S, bytes_until_files, files_made
from .ranks import RankInfo

logger = logging.getLogger(__name__)

#: Warn when a job at the typical rate fills the repository within this many days (long jobs run weeks).
WARN_WITHIN_DAYS = 7.0
#: The largest ``rotate_bytes`` the warning suggests: past it, every commit re-reads too much of each open file.
MAX_SUGGESTED_ROTATE = 256 * 1024 * 1024
_MIB = 1024 * 1024
_DAY_S = 86400.0


@dataclass(frozen=True)
class Outlook:
    """What a job of ``ranks`` makes in a repository at ``bytes_per_day`` per rank."""

    ranks: int
    rotate_bytes: int
    files_at_start: int
    files_per_day: int
    days_to_limit: float
    #: The smallest power-of-two MiB ``rotate_bytes`` that takes the job past :data:`WARN_WITHIN_DAYS`;
    #: ``None`` when rotation cannot (each rank's first files alone come near the limit).
    suggested_rotate: int | None

    @property
    def too_many(self) -> bool:
        return self.days_to_limit < WARN_WITHIN_DAYS


def outlook(ranks: int, rotate_bytes: int, limit: int = HUB_MAX_FILES,
            bytes_per_day: float = TYPICAL_BYTES_PER_RANK_PER_S * _DAY_S) -> Outlook:
    """The numbers of the warning (pure)."""
    days = bytes_until_files(limit, ranks, rotate_bytes) / bytes_per_day
    return Outlook(ranks, rotate_bytes, files_made(ranks, rotate_bytes, 0),
                   files_made(ranks, rotate_bytes, bytes_per_day), days,
                   _suggested_rotate(ranks, rotate_bytes, limit, bytes_per_day * WARN_WITHIN_DAYS))


def _suggested_rotate(ranks: int, rotate_bytes: int, limit: int, needed_bytes: float) -> int | None:
    size = _MIB
    while size <= MAX_SUGGESTED_ROTATE:
        if size > rotate_bytes and bytes_until_files(limit, ranks, size) >= needed_bytes:
            return size
        size *= 2
    return None


def bucket_advice(config: UploadConfig) -> str:
    """The ``HFSummaryWriter`` arguments that send the same logs to a Storage Bucket of the same name."""
    if config.repo_id and "/" in config.repo_id:
        return f'repo_id="hf://buckets/{config.repo_id}"'
    return f'repo_id="{config.repo_id}", repo_type="bucket"'


def warn_at_start(config: UploadConfig, rank_info: RankInfo, rotate_bytes: int) -> Outlook | None:
    """Rank 0 of a job whose repository would be full within :data:`WARN_WITHIN_DAYS` warns, with the
    numbers and what to use instead; returns the outlook it warned about (``None``: no warning)."""
    if config.kind != "hub" or rank_info.rank != 0 or rank_info.world_size <= 1:
        return None
    seen = outlook(rank_info.world_size, rotate_bytes)
    if not seen.too_many:
        return None
    text = ("this job's %d ranks make %d event files in %s at start and about %d a day at %d bytes/s a rank (20 "
            "scalars a step, one step a second); a repository holds fewer than %d files: full in about %.3g days, "
            "then commits fail (the logs stay on disk). Use a Storage Bucket, which has no file limit: %s "
            "(huggingface_hub 1.5 or later)")
    args: list = [seen.ranks, seen.files_at_start, config.description, seen.files_per_day,
                  TYPICAL_BYTES_PER_RANK_PER_S, HUB_MAX_FILES, seen.days_to_limit, bucket_advice(config)]
    if seen.suggested_rotate is not None:
        text += (", or keep the repository with rotate_bytes=%d (event files of %d MiB instead of %.1f MiB: full in "
                 "about %.3g days; each commit then re-reads up to that much of every open file)")
        args += [seen.suggested_rotate, seen.suggested_rotate // _MIB, rotate_bytes / _MIB,
                 outlook(seen.ranks, seen.suggested_rotate).days_to_limit]
    logger.warning(text, *args)
    return seen
