"""The package's layout as the README's "How it is built" states it, checked on a real interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

WRITER_SIDE = ("hf_mpwriter.writer", "hf_mpwriter.hub_writer", "hf_mpwriter.termination", "hf_mpwriter.values",
               "hf_mpwriter.summaries", "hf_mpwriter.writer_args", "hf_mpwriter.histogram", "tensorboardX", "torch")


def test_the_uploader_never_imports_the_writer_side():
    """The uploader process (``python -m hf_mpwriter.uploader``) and ``sync`` load no writer module, and
    so neither tensorboardX nor torch (about 1.5 s and 200 MB per uploader start)."""
    code = ("import json, sys; import hf_mpwriter.uploader, hf_mpwriter.cli, hf_mpwriter.status; "
            f"print(json.dumps(sorted(m for m in {WRITER_SIDE!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == []
