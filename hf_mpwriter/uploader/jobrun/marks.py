"""Where a rank file's steps are (:class:`Marks`): a restart reads the file again from near its step."""

from __future__ import annotations

import bisect


class Marks:
    """Where a rank file's steps are: every ``every`` bytes read or more (:attr:`~.bounds.ViewBounds.mark_bytes`),
    the highest step before that offset that a restart has not dropped (its rank's newest step then: a rank's
    files are read in order).
    A restart at a step reads the file again from the last mark below it, not from its start (a long run's
    files hold days of steps; a restart goes back to the last checkpoint)."""

    __slots__ = ("to", "most", "at")

    def __init__(self, to: int = 0, most: int = -1, at: list | None = None) -> None:
        self.to, self.most = to, most  # read to ``to``; the highest step before it
        self.at: list[tuple[int, int]] = [] if at is None else [(int(o), int(m)) for o, m in at]  # (offset, most)

    def saw(self, end: int, step: int, every: int) -> None:
        """Read to ``end``, its rank's newest step then ``step``; a mark if ``every`` bytes or more were read since the last."""
        if end > self.to:
            self.to, self.most = end, max(self.most, step)
            if end - (self.at[-1][0] if self.at else 0) >= every:
                self.at.append((end, self.most))

    def below(self, step: int) -> int:
        """The offset from which the file holds every record of ``step`` and later (0: its start; where it is
        read to, if every step read is below: a rotated file's older parts are not read again)."""
        if self.most < step:
            return self.to
        i = bisect.bisect_left([most for _, most in self.at], step)
        return self.at[i - 1][0] if i else 0
