"""429s against the real uploader and the test Hub (issue 32, item 2): a rate-limited audit never holds
back the commits, and is asked again only after the wait the server asked for; a rate-limited send
waits at least what the server asked for.

Found: under 429s, a failed audit ran again at every cycle *before* the send, so an uploader audited
and never committed. The 429s come from the test Hub (``Retry-After``, ``RateLimit: "api";r=0;t=N``)
and are counted there before anything is judged. Time is the committer's clock, moved by hand (no
sleep, no timed assertion); huggingface_hub's bucket calls retry a 429 themselves, waiting ``t + 1``
each time: their waits are recorded here instead of slept (and checked: they are what the server asked).
"""

from __future__ import annotations

import dataclasses
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from upload_helpers import TOKEN, as_process_hub, check_remote

from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
from hf_mpwriter.config import load
from hf_mpwriter.state.jobqueue import audit_record
from hf_mpwriter.targets import target_for
from hf_mpwriter.testing import HubLimits, HubServer
from hf_mpwriter.uploader.loop import Uploader

#: What the server asks a rate-limited client to wait (longer than any backoff of ours but the server's).
RETRY_AFTER = 600
CYCLES = 3


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    repo_id: str  # as a writer is given it
    audit_route: str  # the test Hub's route of the audit's call (paths-info)
    send_route: str  # ... and of the write itself
    calls_per_ask: int  # requests one call makes when answered 429: huggingface_hub's bucket calls retry 5 times


REPO = Kind("repo", "tester/run", "paths_info", "commit", 1)
BUCKET = Kind("bucket", "hf://buckets/tester/runs", "bucket_paths_info", "bucket_batch", 6)
KINDS = [
    pytest.param(REPO, id="repo"),
    pytest.param(BUCKET, id="bucket", marks=pytest.mark.skipif(hub_version() < BUCKETS_VERSION,
                                                                reason="Storage Buckets need huggingface_hub>=1.5")),
]


class Clock:
    """The committer's ``time`` module: frozen, moved only by :meth:`advance`."""

    def __init__(self) -> None:
        self._wall, self._mono = time.time(), time.monotonic()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client_waits(monkeypatch) -> list[float]:
    """The seconds huggingface_hub's own retries wait (``http_backoff``), recorded instead of slept."""
    from huggingface_hub.utils import _http

    waits: list[float] = []
    fake = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
    fake.sleep = waits.append
    monkeypatch.setattr(_http, "time", fake)
    return waits


def _log(writer: HFSummaryWriter, steps: range) -> None:
    for step in steps:
        writer.add_scalar("loss", float(step), step)  # rank 0: check_remote expects the step itself
    writer.flush()


def _uploader(kind: Kind, hub: HubServer, logdir: Path, clock: Clock) -> Uploader:
    """A new uploader of ``logdir`` (a takeover: its start audit is owed), elected, with the real target."""
    config = dataclasses.replace(load(logdir), endpoint=hub.endpoint)
    uploader = Uploader(logdir, config=config, token=TOKEN, target=target_for(config, TOKEN))
    uploader.committer.clock = clock
    uploader.acquire()
    return uploader


def _requests(hub: HubServer, route: str) -> int:
    return int(hub.stats["requests"].get(route, 0))


def _read_back(uploader: Uploader) -> dict[str, bytes]:
    """Every event file the target holds, read through the real client."""
    target = uploader.target
    files = sorted(uploader.queue.committed(target.key))
    return {rel: target.read(rel) for rel in files}


def _writes(kind: Kind, hub: HubServer) -> int:
    """Writes the server applied."""
    return hub.commit_count(kind.repo_id) if kind is REPO else int(hub.stats["bucket_writes"])


@pytest.mark.parametrize("kind", KINDS)
def test_audits_refused_by_429_do_not_hold_back_commits(hub_is_this_process_hub, tmp_path, clock, client_waits, kind):
    hub = hub_is_this_process_hub  # (huggingface_hub 0.x reads commit URLs against the process's Hub)
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(kind.repo_id, logdir=str(logdir), uploader="none", rank=0, token=TOKEN)
    _log(writer, range(0, 20))
    first = _uploader(kind, hub, logdir, clock)
    try:
        first.cycle()  # committed: the next uploader's start audit has something to ask about
    finally:
        first.release()
    fault = hub.inject("rate_limit", route=kind.audit_route, times=None, retry_after=RETRY_AFTER)
    writes = _writes(kind, hub)
    uploader = _uploader(kind, hub, logdir, clock)
    try:
        for cycle in range(CYCLES):
            _log(writer, range(20 + 10 * cycle, 30 + 10 * cycle))
            uploader.cycle()
        assert fault.hits >= 1, "the scenario: the audit was refused by the server (429)"
        assert _writes(kind, hub) - writes == CYCLES, (
            f"{CYCLES} cycles with new records and audits answered 429 ({fault.hits} refused): "
            f"{_writes(kind, hub) - writes} write(s)")
        assert fault.hits == kind.calls_per_ask, "the audit was asked again before the server's Retry-After"
        assert client_waits == [RETRY_AFTER + 1.0] * (kind.calls_per_ask - 1)  # the client's own retries, if any

        clock.advance(RETRY_AFTER - 1)
        uploader.cycle()
        assert fault.hits == kind.calls_per_ask, "the audit was asked again before the server's Retry-After"
        clock.advance(1)
        uploader.cycle()
        assert fault.hits == 2 * kind.calls_per_ask, "the audit is owed: it is asked again after its wait"

        hub.clear_faults()  # the window reset: the next audit is answered, and finds everything there
        clock.advance(RETRY_AFTER)
        uploader.cycle()
        audit = audit_record(uploader.queue)  # the last full audit: now, and it found everything there
        assert audit["found"] == {} and audit["repairing"] == {} and audit["time"] == clock.time(), audit
        writer.close()
        uploader.cycle()  # the last records
        check_remote(logdir, _read_back(uploader), {0: range(20 + 10 * CYCLES)}, tmp_path / "remote")
    finally:
        uploader.release()
        writer.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_send_refused_by_429_waits_what_the_server_asked(hub_is_this_process_hub, tmp_path, clock, client_waits, kind):
    hub = hub_is_this_process_hub  # (as above)
    logdir = tmp_path / "logs"
    writer = HFSummaryWriter(kind.repo_id, logdir=str(logdir), uploader="none", rank=0, token=TOKEN)
    _log(writer, range(0, 20))
    uploader = _uploader(kind, hub, logdir, clock)
    try:
        uploader.cycle()  # prepared (the repository's model card is a commit too) and committed
        _log(writer, range(20, 30))
        fault = hub.inject("rate_limit", route=kind.send_route, times=kind.calls_per_ask, retry_after=RETRY_AFTER)
        uploader.cycle()
        assert fault.hits == kind.calls_per_ask, "the scenario: the send was refused by the server (429)"
        assert client_waits == [RETRY_AFTER + 1.0] * (kind.calls_per_ask - 1)
        tried = _requests(hub, kind.send_route)

        clock.advance(RETRY_AFTER - 1)
        _log(writer, range(30, 40))
        uploader.cycle()
        assert _requests(hub, kind.send_route) == tried, "the send was tried again before the server's Retry-After"
        clock.advance(1)
        uploader.cycle()
        assert _requests(hub, kind.send_route) == tried + 1, "the send was not tried again after the server's wait"
        writer.close()
        uploader.cycle()
        check_remote(logdir, _read_back(uploader), {0: range(40)}, tmp_path / "remote")
    finally:
        uploader.release()
        writer.close()


def _spend_the_window(hub: HubServer) -> None:
    """Make Hub API requests until the server refuses one: the window is spent (``r=0``)."""
    for _ in range(hub.limits.api_requests_per_window or 0):
        request = urllib.request.Request(f"{hub.endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 429 and exc.headers["RateLimit"].startswith('"api";r=0;'), exc.headers
            return
    raise AssertionError("the API window was never spent")


@pytest.mark.parametrize("kind", KINDS)
def test_a_spent_api_window_is_waited_out_not_audited_at_every_cycle(tmp_path, clock, client_waits, kind, monkeypatch):
    """The Hub's own API window (``HubLimits``), on the committer's clock: once spent, every request gets
    429 until it resets. A takeover's audit is refused, so is the send after it; then nothing is asked
    until the window's reset, and then everything arrives. (Before: the audit was asked again at every
    cycle, and nothing was sent.)"""
    window = 300.0
    limits = HubLimits(api_requests_per_window=200, window_s=window)
    with HubServer(tokens={TOKEN}, limits=limits, clock=clock.monotonic) as hub:
        as_process_hub(hub, monkeypatch)  # (as above)
        logdir = tmp_path / "logs"
        writer = HFSummaryWriter(kind.repo_id, logdir=str(logdir), uploader="none", rank=0, token=TOKEN)
        try:
            _log(writer, range(0, 20))
            first = _uploader(kind, hub, logdir, clock)
            try:
                first.cycle()  # committed: the takeover's audit has something to ask about
            finally:
                first.release()
            uploader = _uploader(kind, hub, logdir, clock)
            try:
                assert uploader.committer.prepare()  # the takeover's start (the repository is there)...
                _spend_the_window(hub)  # ... then the job's other clients spend the window
                refused = hub.stats["limits_hit"]["api_requests"]
                _log(writer, range(20, 30))
                uploader.cycle()
                after_first = hub.stats["limits_hit"]["api_requests"]
                assert after_first > refused, "the scenario: the takeover's audit was refused (429)"
                job = uploader.committer.pending_job()
                assert job is not None and job.attempts == 1, "the send did not go ahead of the refused audit"
                for cycle in range(CYCLES):
                    clock.advance(10)  # within the window
                    _log(writer, range(30 + 10 * cycle, 40 + 10 * cycle))
                    uploader.cycle()
                assert hub.stats["limits_hit"]["api_requests"] == after_first, (
                    "the uploader asked again within the window the server said was spent")
                job = uploader.committer.pending_job()
                assert job is not None and job.attempts == 1, "the send was tried again within the window"

                clock.advance(window)  # the window resets
                uploader.cycle()
                audit = audit_record(uploader.queue)
                assert audit["found"] == {} and audit["time"] == clock.time(), audit
                writer.close()
                uploader.cycle()
                check_remote(logdir, _read_back(uploader), {0: range(30 + 10 * CYCLES)}, tmp_path / "remote")
            finally:
                uploader.release()
        finally:
            writer.close()
