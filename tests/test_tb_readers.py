"""The two TensorBoard readers of :mod:`tb_readers` on a run restarted in the same directory: they differ.

The default reader (the Rust data server) keeps one point per step, the later file's from the step it
went back to. The Python reader (``--load_fast=false``) keeps both attempts' points unless the run holds
two ``SessionLog.START`` events: the first START of a run is never taken as a restart, so a
``purge_step`` on the second attempt alone purges nothing there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tb_readers import default_reader_scalars, python_reader_scalars
from tensorboardX import SummaryWriter

FIRST = [(s, float(s)) for s in range(60)]
SECOND = [(s, 1000.0 + s) for s in range(31, 60)]


def _two_attempts(logdir: Path, first_purge: int | None, second_purge: int | None) -> None:
    """Attempt 1 logs "loss" at 0..59, attempt 2 (a new file in the same directory) at 31..59."""
    for n, (purge, points) in enumerate(((first_purge, FIRST), (second_purge, SECOND))):
        # The suffix orders the files as the readers do (by name) even within one second.
        with SummaryWriter(str(logdir), purge_step=purge, filename_suffix=f".{n}") as writer:
            for step, value in points:
                writer.add_scalar("loss", value, step)


@pytest.mark.parametrize("second_purge", [None, 31], ids=["no_purge_step", "purge_step_31"])
def test_restart_without_a_first_start(tmp_path: Path, second_purge: int | None) -> None:
    """Cases (a) and (b): the same for both, since attempt 1 wrote no START."""
    _two_attempts(tmp_path, None, second_purge)
    assert default_reader_scalars(tmp_path) == {".": {"loss": FIRST[:31] + SECOND}}
    assert python_reader_scalars(tmp_path) == {".": {"loss": FIRST + SECOND}}  # 89 points, 31..59 twice


def test_restart_after_a_first_start(tmp_path: Path) -> None:
    """Attempt 1 opened with purge_step=0 too: now the Python reader purges, and the readers agree."""
    _two_attempts(tmp_path, 0, 31)
    expected = {".": {"loss": FIRST[:31] + SECOND}}
    assert default_reader_scalars(tmp_path) == expected
    assert python_reader_scalars(tmp_path) == expected


def test_the_suites_crc_for_tensorboards_reader_is_tensorboards_own() -> None:
    """conftest.py gives TensorBoard's reader the C library's CRC-32C in place of its pure-Python one: the
    same values (masked, as records carry them), so a record the reader accepts or refuses is the same."""
    import importlib.util
    import random

    from crc32c import crc32c
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    spec = importlib.util.find_spec(pywrap_tensorflow.__name__)
    assert spec and spec.loader
    pure = importlib.util.module_from_spec(spec)  # a fresh copy of TensorBoard's module, its own CRC
    spec.loader.exec_module(pure)
    assert pure.crc32c is not crc32c and pywrap_tensorflow.crc32c is crc32c
    rng = random.Random(0)
    for size in (0, 1, 7, 8, 63, 1000):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        assert pywrap_tensorflow.masked_crc32c(data) == pure.masked_crc32c(data)
