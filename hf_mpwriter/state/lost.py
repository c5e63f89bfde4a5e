"""Steps of a resumed run that are lost with an earlier attempt's disk, as the uploader keeps them in its queue
(found by :mod:`hf_mpwriter.uploader.lost_steps`; read by ``status`` and a closing writer)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from .statedir import read_json, state_dir, write_json_atomic

logger = logging.getLogger(__name__)

#: The queue's meta key.
LOST_META = "lost_steps"
#: The queue's meta key of the ``[run, restart]`` pairs already looked at: a later uploader lists the target for none.
LOOKED_META = "lost_looked"


@dataclass(frozen=True)
class Lost:
    """Steps ``after + 1`` to ``restart - 1`` of ``run`` (a folder of the logdir, ``.`` for its top) are not at the
    target and never will be: the target's copy of the run ends at ``after``, the resumed attempt restarts at
    ``restart``, and the files in between were on a disk that is gone."""

    run: str
    after: int
    restart: int

    def text(self) -> str:
        steps = f"step {self.after + 1}" if self.restart - self.after == 2 else \
            f"steps {self.after + 1} to {self.restart - 1}"
        return (f"run {self.run!r} lost {steps} with an earlier attempt's disk: the target holds that run up to step "
                f"{self.after}, and this attempt restarts at step {self.restart}")



def encode(found: list[Lost]) -> str:
    return json.dumps([asdict(lost) for lost in found])


def decode(value: str | None) -> list[Lost]:
    """What was kept (``[]`` for nothing, or a value this version cannot read)."""
    try:
        return [Lost(str(d["run"]), int(d["after"]), int(d["restart"])) for d in json.loads(value or "[]")]
    except (ValueError, TypeError, KeyError):
        return []


def encode_looked(looked: set[tuple[str, int]]) -> str:
    return json.dumps(sorted([run, restart] for run, restart in looked))


def decode_looked(value: str | None) -> set[tuple[str, int]]:
    """The ``(run, restart)`` pairs kept (none for a value this version cannot read)."""
    try:
        return {(str(run), int(restart)) for run, restart in json.loads(value or "[]")}
    except (ValueError, TypeError):
        return set()


def _resumed_dir(logdir: Path, create: bool = False) -> Path:
    return state_dir(logdir, create=create) / "resumed"


def note_resumed(logdir: Path, run: str, step: int) -> None:
    """A writer resumed ``run`` (``resume=True``) on a disk that holds nothing of it, from ``step``. Never raises: a
    full disk must not stop training for a note."""
    try:
        folder = _resumed_dir(logdir, create=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        write_json_atomic(folder / (hashlib.sha256(run.encode()).hexdigest()[:16] + ".json"), {"run": run, "step": step})
    except OSError as exc:
        logger.debug("the resume of %s not noted: %s", run, exc)


def resumed_runs(logdir: Path) -> dict[str, int]:
    """``run -> first step`` of the runs writers resumed on this disk without their earlier files."""
    found = {}
    try:
        notes = list(_resumed_dir(logdir).glob("*.json"))
    except OSError:
        return {}
    for note in notes:
        value = read_json(note)
        if isinstance(value, dict) and isinstance(value.get("run"), str) and isinstance(value.get("step"), int):
            found[value["run"]] = value["step"]
    return found
