"""What a training process tells its user about its uploads while it runs.

Why: the uploader is a process of its own, whose log nobody reads while training runs. An error
that needs the user (no token, a token the Hub refuses, a repository or bucket that does not exist)
would otherwise be seen only at ``close()``, possibly at the end of a three-day job. So each
writer's heartbeat (:meth:`hf_mpwriter.writer.hub_writer.HFSummaryWriter._heartbeat`, never the training
thread) reads the uploader's one error record (:func:`hf_mpwriter.state.queue_readers.read_error`) and says it
in the training process's own log (stdlib ``logging``, ``WARNING``: shown even where logging was
never configured):

- an error that needs the user: at once, with what to do;
- an error that retrying may fix (network, 5xx, 429, a full disk of the uploader): only once it has
  lasted :data:`TRANSIENT_WARN_AFTER_S` (a blip is not news; an outage is);
- each problem once per writer (the heartbeat reads the record every second).

Nothing changes in what is kept: whatever fails, every record stays on disk and queued.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import in_logdir
from ..state.election import uploader_info
from ..state.queue_readers import read_error
from ..state.statedir import state_dir
from ..state.upload_error import ErrorKind, UploadError
from ..timing import TRANSIENT_WARN_AFTER_S

logger = logging.getLogger(__name__)



class ProblemReporter:
    """Says the logdir's upload problems in this process's log, each once (see the module's docstring)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self._queue = state_dir(self.logdir, create=False) / "queue.db"
        self._told: set[tuple[str, str]] = set()

    def check(self) -> None:
        """Read the uploader's error record and say what is news (cheap: one read-only query), and a job
        whose nodes log to different folders (the uploader found it in the job's store), once."""
        split = ((uploader_info(self.logdir) or {}).get("job") or {}).get("split_from")
        if split and ("split", split) not in self._told:
            self._told.add(("split", split))
            logger.error("this job's nodes log to different folders (this node to %s; %s): each folder gets a leader "
                         "and a run of its own. Give every node's logdir the same name (node-local logdirs: the same "
                         "path on every node)", self.logdir, split)
        error = self._current_error()
        if error is None:
            return
        key = (error.kind.value, _problem(error.text))
        lasted = error.time - error.since  # from the first failure of this kind to the latest
        if key in self._told or (error.kind is not ErrorKind.NEEDS_USER and lasted < TRANSIENT_WARN_AFTER_S):
            return
        self._told.add(key)
        text = in_logdir(error.text, self.logdir)
        if error.kind is ErrorKind.NEEDS_USER:
            logger.warning(
                "uploads of %s need you: %s. Nothing is lost: the logs stay on disk and queued while training goes on",
                self.logdir, text,
            )
        else:
            logger.warning(
                "uploads of %s have failed for %.0f min: %s. Nothing is lost: the uploader keeps retrying and the "
                "logs stay on disk and queued (`hf-mpwriter status %s` shows what is pending)",
                self.logdir, lasted / 60, text, self.logdir,
            )

    def _current_error(self) -> UploadError | None:
        """The running uploader's error: one recorded by an uploader that is gone (an earlier run,
        an earlier token) is not this run's news (a new uploader clears it when it takes over)."""
        error = read_error(self._queue)
        if error is None:
            return None
        info = uploader_info(self.logdir) or {}
        return error if error.pid == info.get("pid") else None


def _problem(text: str) -> str:
    """What kind of problem an error text names, so that the same problem met by two calls (creating
    the repository, then committing) is said once: the text after the call's own ``cannot X on Y:``."""
    _, _, after = text.partition(": ")
    return (after or text)[:80]
