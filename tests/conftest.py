"""Make the package importable without installing it (the repo root goes first on sys.path), and
make sure the suite leaves no process of its own behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


from helpers import kill_all, processes_naming, served_store  # noqa: E402 (the repo root first on sys.path, above)


def _tensorboards_crc_in_c() -> None:
    """TensorBoard without TensorFlow checks each record's CRC-32C in pure Python: half the CPU of a test
    that reads a job back (py-spy). Its reader stays TensorBoard's, its checks too, with the same CRC
    computed by the C library the package uses (test_tb_readers.py checks the two agree)."""
    from crc32c import crc32c
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    pywrap_tensorflow.crc32c = crc32c


_tensorboards_crc_in_c()


@pytest.fixture
def hub():
    """The project's Hub-compatible server on a free port (tokens: upload_helpers.TOKEN, READ_ONLY)."""
    from upload_helpers import READ_ONLY, TOKEN

    from hf_mpwriter.testing import HubServer

    server = HubServer(tokens={TOKEN}, read_only_tokens={READ_ONLY}).start()
    yield server
    server.stop()


@pytest.fixture
def store():
    """The job's store: a TCPStore server on a free port in the test's process, as the job hosts it."""
    from datetime import timedelta

    dist = pytest.importorskip("torch.distributed")
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    yield server
    del server


@pytest.fixture
def store_process():
    """A TCPStore served by a process of its own (its host can be frozen with SIGSTOP); the process and its port."""
    with served_store() as served:
        yield served


@pytest.fixture
def hub_is_this_process_hub(hub, monkeypatch):
    """The test Hub as this process's Hub, as ``HF_ENDPOINT`` makes it for an uploader: for targets used
    in the test's own process (huggingface_hub 0.x parses a commit's URL against it, whatever endpoint
    the client was given): :func:`upload_helpers.as_process_hub`, which a test that starts a Hub of its own
    calls itself."""
    from upload_helpers import as_process_hub

    as_process_hub(hub, monkeypatch)
    return hub


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(request, tmp_path):
    """An uploader may legitimately outlive the writer processes of a test (it drains, then exits);
    it must not outlive the test: its server and its directories are gone."""
    yield
    kill_all(processes_naming(str(tmp_path)))


@pytest.fixture(autouse=True, scope="session")
def _suite_leaves_no_process(tmp_path_factory):
    """Fails the session if any process started under the session's temporary directory survives it."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    left = processes_naming(base)
    kill_all(left)
    assert not left, f"the test suite left processes behind: {[p.info['cmdline'] for p in left]}"


@pytest.fixture(autouse=True)
def _own_index_of_logdirs(tmp_path, monkeypatch):
    """Each test its own index of the logdirs uploaders served (hf_mpwriter.state.attempts, under
    ``XDG_CACHE_HOME``): an uploader must not find another test's logdir as one an earlier attempt left."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
