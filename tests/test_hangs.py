"""A call to the target that never answers is abandoned and the uploader carries on (issue 24).

hf_xet's transfers to the CAS get no HTTP timeout at all, and a commit is several requests: the
uploader bounds every call itself (:func:`hf_mpwriter.uploader.schedule.call_bound`, from
``HF_MPWRITER_HTTP_TIMEOUT`` and the bytes in flight). Each test makes one route of the test Hub
hold its first request(s) for an hour (never answered while the test runs), proves it was held, then
checks that every record still lands, soon after ``close()`` starts, and that no commit the Hub
applied sent a record twice or replaced a file with a shorter one.

``HF_MPWRITER_HTTP_TIMEOUT`` is small here (:data:`TIMEOUT_S`) to keep the tests short; issue 24's
"done when" uses 10 s: ``HANG_TEST_HTTP_TIMEOUT=10 pytest tests/test_hangs.py -s`` prints the times.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from test_data_safety import REPO, _plant
from upload_helpers import (
    TOKEN,
    check_remote,
    every_applied_commit_is_whole_and_only_grows,
    finish,
    hub_env,
    read_line,
    start_writer,
    wait_for,
)

from hf_mpwriter.cli.status import collect
from hf_mpwriter.errors import TargetError
from hf_mpwriter.state.piece import Piece
from hf_mpwriter.targets import HubTarget
from hf_mpwriter.targets.xet_content import xet_usable
from hf_mpwriter.uploader.schedule import call_bound

PREFIX = "tensorboard/logs/"
#: ``HF_MPWRITER_HTTP_TIMEOUT`` of the tests: a call with nothing to send is abandoned after 3 of them.
TIMEOUT_S = float(os.environ.get("HANG_TEST_HTTP_TIMEOUT") or 3)
#: What the issue asks: every record on the Hub this soon after ``close()`` starts.
LANDS_WITHIN_S = 90.0
STEPS = 300


def _writer(hub, tmp_path, **kw):
    cfg = {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "rank": 0, "commit_every_s": 1.0, "steps": STEPS,
           "sleep": 0.01, "close_timeout": LANDS_WITHIN_S, **kw}
    return start_writer(cfg, hub_env(hub, tmp_path, HF_MPWRITER_HTTP_TIMEOUT=f"{TIMEOUT_S:g}"))


def _remote(hub) -> dict[str, bytes]:
    return {p[len(PREFIX):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(PREFIX)}


def _closing(proc) -> float:
    """When the writer's ``close()`` starts (right after its last flush)."""
    read_line(proc, f"flushed {STEPS - 1}", timeout=60)
    return time.monotonic()


def _landed(hub, tmp_path, proc, close_started: float) -> tuple[float, str]:
    """Every record lands, once, within the issue's bound of ``close()`` starting. Returns the seconds
    it took and the writer's stderr (where an uploader thread's warnings go)."""
    err = finish(proc, timeout=LANDS_WITHIN_S + 30)
    landed_after = time.monotonic() - close_started
    check_remote(tmp_path / "logs", _remote(hub), {0: range(STEPS)}, tmp_path / "remote")
    assert landed_after < LANDS_WITHIN_S, landed_after
    return landed_after, err


@pytest.mark.parametrize(
    ("route", "mode"),
    [("xorb_upload", "process"), ("shard_upload", "process"), ("xet_token", "process"), ("commit", "process"),
     ("xet_token", "thread"), ("commit", "thread")],
)
def test_a_call_that_never_answers_is_abandoned_and_every_record_lands(hub, tmp_path, route, mode):
    hub.create_repo(REPO)
    if route == "commit":  # the card already tagged: the uploader's first commit, the one held, is of logs
        _plant(hub, tmp_path, "README.md", b"---\ntags:\n- hf-summary-writer\n---\n")
    hang = hub.inject("latency", route=route, seconds=3600)  # the first request of the route: held for an hour
    proc = _writer(hub, tmp_path, uploader=mode)
    try:
        close_started = _closing(proc)
        wait_for(lambda: hang.hits == 1, 30, f"the {route} request to be held")
        landed_after, _ = _landed(hub, tmp_path, proc, close_started)
        # The scenario: the held request was never answered; the uploader gave it up and went on.
        assert hang.done == 0, "the held request was answered: nothing was abandoned"
        hangs = collect(tmp_path / "logs")["hangs"]
        if route in ("xorb_upload", "shard_upload") or (mode == "thread" and route == "commit"):
            # hf_xet's transfers, and the user's own client (thread mode): only the uploader's bound ends them
            assert hangs["abandoned_calls"] >= 1, hangs
        # (HTTP requests of the uploader's own client: its read timeout, or the bound, whichever comes first)
        if mode == "process" and route in ("xorb_upload", "shard_upload"):  # hf_xet still holds the stuck transfer
            assert hangs["process_replacements"] >= 1, hangs
        if mode == "thread":  # (a training process is never replaced)
            assert hangs["process_replacements"] == 0, hangs
        assert hangs["process_replacements"] <= hangs["abandoned_calls"], hangs
        if route == "commit":  # the Hub applies the held commit now: its parent is stale, so it is refused
            hang.release()
            wait_for(lambda: hang.done == 1, 30, "the held commit to be processed")
            assert hang.outcomes == [412], f"the abandoned commit was applied late: {hang.outcomes}"
        every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)
        print(f"{route} ({mode}), HF_MPWRITER_HTTP_TIMEOUT={TIMEOUT_S:g}: every record on the Hub "
              f"{landed_after:.1f} s after close() started")
    finally:
        hang.release()


def test_two_xorb_uploads_stuck_do_not_stop_the_uploads_after_them(hub, tmp_path):
    """hf_xet's upload concurrency is process-wide: with two xorb uploads stuck in a process, every
    later upload of that process waits for them (measured). The uploader process replaces itself
    after an abandoned call, so the third try goes through as soon as the CAS answers."""
    hub.create_repo(REPO)
    hang = hub.inject("latency", route="xorb_upload", seconds=3600, times=2)
    proc = _writer(hub, tmp_path)
    try:
        close_started = _closing(proc)
        wait_for(lambda: hang.hits == 2, 2 * call_bound(TIMEOUT_S) + 30, "two xorb uploads to be held")
        landed_after, _ = _landed(hub, tmp_path, proc, close_started)
        assert hang.done == 0, "a held xorb upload was answered: nothing was abandoned"
        hangs = collect(tmp_path / "logs")["hangs"]
        assert hangs["abandoned_calls"] >= 2 and hangs["process_replacements"] >= 2, hangs
        every_applied_commit_is_whole_and_only_grows(hub, REPO, tmp_path)
        print(f"two stuck xorb uploads, HF_MPWRITER_HTTP_TIMEOUT={TIMEOUT_S:g}: every record on the Hub "
              f"{landed_after:.1f} s after close() started")
    finally:
        hang.release()


# -- the Xet write token in thread mode: the user's own client, no client-wide timeout (issue 31) --------
def _upload(target: HubTarget, root: Path, name: str) -> tuple[threading.Thread, dict]:
    """``target.commit`` of one event file, in a thread of its own (as the uploader calls it): the
    thread, and what the call returned (``"oid"``) or raised (``"error"``)."""
    data = f"{name}\n".encode() * 100
    (root / name).write_bytes(data)
    piece = Piece(name, len(data), hashlib.sha256(data).hexdigest(), str(root / name))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["oid"] = target.commit([piece], name)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"upload-{name}", daemon=True)
    thread.start()
    return thread, outcome


def _xet_target(hub, http_timeout: float) -> HubTarget:
    if not xet_usable():
        pytest.skip("no hf_xet: event files go through create_commit, which fetches no kept token")
    hub.create_repo(REPO)
    target = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint, http_timeout=http_timeout)
    target.prepare()
    return target


def test_the_xet_token_request_times_out_in_a_client_without_timeouts(hub, tmp_path, hub_is_this_process_hub):
    """In the training process (thread mode) the client is the user's, with no timeout of its own:
    the token request gets the target's read timeout (``HF_MPWRITER_HTTP_TIMEOUT``), so a Hub that never
    answers it ends the upload with a transient error, not a thread stuck for ever."""
    target = _xet_target(hub, http_timeout=2.0)
    hang = hub.inject("latency", route="xet_token", seconds=3600)
    try:
        thread, outcome = _upload(target, tmp_path, "events.out.tfevents.1")
        wait_for(lambda: hang.hits == 1, 30, "the token request to be held")
        thread.join(60)
        assert not thread.is_alive(), "the upload still waits on a token request the Hub never answers"
        assert hang.done == 0, "the held request was answered: no timeout was needed"
        error = outcome["error"]
        assert isinstance(error, TargetError) and error.transient, error
        assert "timed out" in str(error).lower() or "timeout" in str(error).lower(), error
    finally:
        hang.release()


def test_a_stuck_xet_token_request_does_not_hold_up_the_next_upload(hub, tmp_path, hub_is_this_process_hub):
    """A token request the Hub holds longer than any timeout catches (a server trickling its answer):
    the uploader abandons the call and drops the target's client (``reset_client``); the next upload
    fetches a token of its own, and is not queued behind the stuck one."""
    target = _xet_target(hub, http_timeout=3600.0)  # the read timeout does not end this one
    hang = hub.inject("latency", route="xet_token", seconds=3600)
    stuck, _ = _upload(target, tmp_path, "events.out.tfevents.1")
    try:
        wait_for(lambda: hang.hits == 1, 30, "the token request to be held")
        assert hub.stats["requests"]["xet_token"] == 1
        target.reset_client()  # what the uploader does when it abandons the call
        later, outcome = _upload(target, tmp_path, "events.out.tfevents.2")
        later.join(60)
        assert not later.is_alive(), "the next upload waits behind the stuck token request"
        assert hang.done == 0, "the held request was answered: the next upload may only have waited for it"
        assert "oid" in outcome, outcome
        assert hub.stats["requests"]["xet_token"] == 2  # a token of its own
        assert hub.read_file(REPO, "tb/events.out.tfevents.2") == b"events.out.tfevents.2\n" * 100
    finally:
        hang.release()
        stuck.join(30)


def test_a_call_in_a_throwaway_thread_returns_raises_or_is_walked_away_from():
    """The one mechanism behind the uploader's bounded calls and the store's: a call's value or its error
    reaches the caller; one that outlives the caller's wait is left running (its thread handed over), and
    the caller's own work runs between its waits."""
    from hf_mpwriter.uploader.throwaway import Unfinished, call_in_thread

    assert call_in_thread("t", lambda: 7, lambda: 0.05) == 7
    with pytest.raises(ZeroDivisionError):
        call_in_thread("t", lambda: 1 // 0, lambda: 0.05)
    release, waits = threading.Event(), []

    def wait() -> float:
        waits.append(time.monotonic())
        return 0.05 if len(waits) < 4 else 0.0

    with pytest.raises(Unfinished) as stuck:
        call_in_thread("t", release.wait, wait)
    assert len(waits) == 4 and stuck.value.thread.is_alive()  # walked away from a call that still runs
    release.set()
    stuck.value.thread.join(5)
    assert not stuck.value.thread.is_alive()
