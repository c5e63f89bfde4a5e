"""How many event files writers leave: the arithmetic of rotation, apart from the writer that rotates
(:mod:`hf_mpwriter.events.event_file`), for the README's table (``scripts/files_per_day.py``) and
rank 0's warning at start (:mod:`hf_mpwriter.writer.file_limit`)."""

from __future__ import annotations

#: One rank's logging rate assumed by estimates of files a job makes (the README's "files per day", the
#: writer's warning at start): 20 scalars a step (tags like ``train/metric_07``) at one step a second.
#: A record of such a scalar is 55 bytes as this writer frames it at steps past 16,384
#: (``scripts/files_per_day.py`` counts it).
TYPICAL_BYTES_PER_RANK_PER_S = 20 * 55


def files_made(ranks: int, rotate_bytes: int, bytes_per_rank: float) -> int:
    """Event files ``ranks`` writers leave once each has written ``bytes_per_rank``: one each to start
    with, and one more per ``rotate_bytes`` written (a file is closed once it holds that much).

    Why: a Hub repository holds fewer than 100,000 files, and a long job's rotation, times its ranks,
    gets there. Pure: the README's numbers and the writer's warning at start both come from it.
    An upper bound: a file closes past ``rotate_bytes``, never before.
    """
    if ranks <= 0:
        return 0
    return ranks * (1 + int(max(0.0, bytes_per_rank) // rotate_bytes))


def bytes_until_files(limit: int, ranks: int, rotate_bytes: int) -> int:
    """How many bytes each of ``ranks`` writers writes before :func:`files_made` reaches ``limit``
    (its inverse); 0 when their first files alone do."""
    rotations = -(-limit // max(1, ranks)) - 1  # files each rank may have, less its first
    return max(0, rotations) * rotate_bytes
