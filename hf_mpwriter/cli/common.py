"""What the commands share: the error a command exits with, the Hub a logdir's commands talk to,
and how a target is shown."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ..errors import HFMPWriterError

logger = logging.getLogger("hf_mpwriter.cli")


class CLIError(HFMPWriterError):
    """An expected failure: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def use_logdir_endpoint(config: Any) -> str | None:
    """Make this process (and TensorBoard or an uploader it starts) talk to the Hub ``config`` (the
    logdir's :class:`~hf_mpwriter.config.UploadConfig`, or ``None``) records, and say so on stderr when
    the shell's ``HF_ENDPOINT`` names another: a user whose shell points at a mirror or a private Hub
    must not wonder where the logs went. Returns that endpoint when it replaced the shell's, else ``None``.

    Through ``HF_ENDPOINT``, before huggingface_hub is imported (it reads it at import): the command
    owns its process, and huggingface_hub 0.x builds some URLs from it whatever ``HfApi(endpoint=...)``
    says (a commit to another endpoint fails there: "Unable to retrieve user and repo ID")."""
    from ..config import DEFAULT_ENDPOINT, current_endpoint

    endpoint = getattr(config, "endpoint", None)
    if not endpoint or endpoint == current_endpoint():
        return None
    shell = os.environ.get("HF_ENDPOINT") or f"not set (so {DEFAULT_ENDPOINT})"
    print(f"this logdir sends to {endpoint}; the shell's HF_ENDPOINT is {shell}: using {endpoint}",
          file=sys.stderr, flush=True)
    if "huggingface_hub.constants" in sys.modules:  # too late for the library's own constant: calls name it
        logger.debug("huggingface_hub was imported before HF_ENDPOINT was set to %s", endpoint)
    os.environ["HF_ENDPOINT"] = endpoint
    return endpoint


def show_bars(quiet: bool, client: bool = True) -> bool:
    """Whether progress bars are shown: not with ``--quiet``, and not into a file or a pipe (a bar
    there is a line per update). When not, huggingface_hub's bars are off too (``client``: this
    process uses it; import it only after :func:`use_logdir_endpoint`, which sets its endpoint)."""
    show = not quiet and sys.stderr.isatty()
    if not show and client:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return show


def where_text(target: dict[str, Any]) -> str:
    """A target as ``status`` shows it: a repository's description names its Hub, a bucket's does not."""
    endpoint = target.get("endpoint")
    return target["description"] + (f" on {endpoint}" if target["kind"] == "bucket" and endpoint else "")
