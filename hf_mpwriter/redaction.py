"""Keeping tokens out of every message, log line and stored error, without garbling the rest.

Why a module of its own: every target (Hub repositories, buckets) and the uploader's log handler
need it, and none of them should import another to get it.

Two things are removed: the token the process was configured with, and any string shaped like a
real Hub token (``hf_`` followed by a long run of letters and digits). Both only as whole words, so
that ``.hf_mpwriter/`` paths, repo ids and the package's own name stay readable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import traceback

#: ``hf_`` + 20 or more letters/digits, not inside a longer word: real Hub tokens are ``hf_`` + 34
#: letters; ``hf_mpwriter`` and ``hf_xet`` are far shorter.
_TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{20,}(?![A-Za-z0-9_])")
MASK = "***"


def redact(text: str, token: str | None = None) -> str:
    """``text`` without ``token`` (as a whole word) and without anything shaped like a Hub token."""
    if token:
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])", MASK, text)
    return _TOKEN_SHAPE.sub("hf_" + MASK, text)


class RedactingFilter(logging.Filter):
    """Redacts every record that passes (message, arguments and traceback), whatever a library put
    in it. The token is read from ``HF_TOKEN`` unless given."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # tracebacks too: format them here, redacted
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info, record.exc_text = None, None
        record.msg = redact(message, self._token or os.environ.get("HF_TOKEN"))
        record.args = ()
        return True


def token_id(token: str | None) -> str | None:
    """A short one-way fingerprint of a token: tells "another token" without storing the token."""
    if not token:
        return None
    return hashlib.sha256(b"hf_mpwriter token id\0" + token.encode()).hexdigest()[:16]
