"""Consistent snapshots of a logdir: which bytes of which files to commit next.

A snapshot names immutable data: "file F up to offset O, cut at a whole-record boundary, with
sha256 S". Event files are append-only, so their first O bytes never change; still, a file that a
writer keeps appending to cannot be handed to an upload client that reads it twice (once to hash,
once to send), so the first O bytes are *staged*: copied, while hashing, to
``.hf_mpwriter/staging/<sha256>`` (content-addressed, so a retry or a merge reuses the copy). A
file its writer has closed (made read-only) is complete and is sent as it is, once, without a copy.
Each commit then costs the data since the last one plus the size of the open files, which
rotation bounds.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..config import DEFAULT_ALLOW
from ..events.records import last_whole_record
from ..state.piece import Piece, open_nofollow, sha256_prefix
from ..state.statedir import STATE_DIRNAME
from ..upload_args import matches, pattern_list

logger = logging.getLogger(__name__)

class Scanner:
    """Finds what changed in a logdir since the last snapshot, and snapshots it.

    Remembers, per file, the last whole-record boundary it validated, so each scan reads only the
    new bytes of each file to find where whole records end.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        allow_patterns: str | Sequence[str] | None = DEFAULT_ALLOW,
        ignore_patterns: str | Sequence[str] | None = None,
    ) -> None:
        self.logdir = Path(logdir)
        self.allow = pattern_list(allow_patterns)
        self.ignore = pattern_list(ignore_patterns)
        self.staging = self.logdir / STATE_DIRNAME / "staging"
        self._boundary: dict[str, int] = {}
        self._warned_links: set[str] = set()

    def files(self) -> Iterator[tuple[str, os.stat_result]]:
        """``(relative path, stat)`` of every file to upload (never the state directory).

        Symlinks are skipped, to files and to directories alike (``os.walk`` does not descend into
        linked directories; ``lstat`` tells a linked file): only what lies in the logdir is sent.
        """
        for root, dirs, names in os.walk(self.logdir):
            dirs[:] = sorted(d for d in dirs if d != STATE_DIRNAME)  # at any depth: nested logdirs too
            for name in sorted(names):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, self.logdir).replace(os.sep, "/")
                if not matches(rel, self.allow, self.ignore):
                    continue
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield rel, st
                elif stat.S_ISLNK(st.st_mode) and rel not in self._warned_links:
                    self._warned_links.add(rel)
                    logger.warning("%s is a symbolic link; it is not uploaded (only files inside the logdir are)", rel)

    def whole_size(self, rel: str, st: os.stat_result, known: int) -> int:
        """How many leading bytes of the file are whole records (whole file for non-event files)."""
        if "tfevents" not in rel:
            return st.st_size
        start = self._boundary.get(rel, known)
        if start > st.st_size:  # the file was replaced by a shorter one: start over
            logger.warning("%s shrank from %d to %d bytes; snapshotting it again from the start", rel, start, st.st_size)
            start = 0
        with open_nofollow(self.logdir / rel) as handle:
            cut = last_whole_record(handle, start, st.st_size)
        self._boundary[rel] = cut
        return cut

    def snapshot(self, known: dict[str, int]) -> list[Piece]:
        """Pieces for every file that has whole records beyond ``known[path]`` bytes."""
        pieces = []
        for rel, st in self.files():
            have = known.get(rel, 0)
            if st.st_size <= have:
                continue
            try:
                cut = self.whole_size(rel, st, have if have <= st.st_size else 0)
                if cut <= have or cut == 0:
                    continue
                pieces.append(self._piece(rel, st, cut))
            except OSError as exc:  # one unreadable file must not hold back the others
                logger.error("cannot snapshot %s (%s); the other files go ahead, it is retried later", rel, exc)
        return pieces

    def _piece(self, rel: str, st: os.stat_result, cut: int) -> Piece:
        source = str(self.logdir / rel)
        complete = not (st.st_mode & 0o222) and cut == st.st_size
        if complete:
            return Piece(rel, cut, sha256_prefix(source, cut), source, None, True)
        digest, staged = self._stage(source, cut)
        return Piece(rel, cut, digest, source, str(staged), False)

    def _stage(self, source: str, size: int, expected: str | None = None) -> tuple[str, Path]:
        """Copy the first ``size`` bytes of ``source`` to ``staging/<sha256>`` (hashing as it copies)."""
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.staging / f".{os.getpid()}.tmp"
        digest = sha256_prefix(source, size, copy_to=tmp)
        if expected is not None and digest != expected:
            tmp.unlink()
            raise OSError(f"{source} no longer starts with the bytes queued for upload (was it rewritten?)")
        staged = self.staging / digest
        os.replace(tmp, staged)
        return digest, staged

    def restage(self, piece: Piece) -> Piece:
        """Re-create a piece whose staged copy is gone or damaged, from the append-only source.

        A piece sent from its own path (a complete file) is checked once more just before it is
        handed to the upload client, which opens it by path: it must still be a regular file
        inside the logdir, not a symlink put in its place since the snapshot.
        """
        if piece.staged is None:
            self._check_inside(piece.source)
            return piece
        path = Path(piece.staged)
        if not (path.exists() and path.stat().st_size == piece.size):
            self._stage(piece.source, piece.size, expected=piece.sha256)
        return piece

    def _check_inside(self, source: str) -> None:
        st = os.lstat(source)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{source} is no longer a regular file (a symlink?); it is not uploaded")
        real = os.path.realpath(source)
        root = os.path.realpath(self.logdir)
        if os.path.commonpath([real, root]) != root:
            raise OSError(f"{source} resolves to {real}, outside the logdir; it is not uploaded")

    def clean_staging(self, keep: Iterable[Piece]) -> None:
        """Delete staged copies no unfinished job refers to."""
        wanted = {Path(p.staged).name for p in keep if p.staged}
        try:
            entries = list(self.staging.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name not in wanted:
                try:
                    entry.unlink()
                except OSError:
                    pass
