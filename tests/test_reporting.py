"""Say it while it matters: a problem that needs the user reaches the training process's own output
while it runs (not at ``close()``), and a rejected constructor leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from upload_helpers import (
    TOKEN,
    check_remote,
    hub_env,
    kill_and_collect,
    read_line,
    sigkill,
    uploader_pid,
    writer_argv,
    writer_env,
)

from hf_mpwriter import ConfigurationError, HFSummaryWriter
from hf_mpwriter.cli.status import collect
from hf_mpwriter.state.election import stopped_uploader_info

REPO = "tester/run"
PREFIX = "tensorboard/logs/"


@pytest.mark.parametrize("token,expect", [("hf_wrongTokenXYZ0123456789", "refused the token"), (None, "no token")],
                         ids=["token-refused", "no-token"])
def test_a_problem_that_needs_the_user_is_said_while_training_runs(hub, tmp_path, token, expect):
    logdir = tmp_path / "logs"
    env = hub_env(hub, tmp_path, token=token or "")
    if token is None:
        env.pop("TEST_TOKEN")  # no token= and no HF_TOKEN; HF_HOME is the test's own: no stored token either
    cfg = {"logdir": str(logdir), "repo_id": REPO, "rank": 0, "commit_every_s": 6.0, "steps": 200, "sleep": 0.01,
           "hang": True}  # logs 200 steps, flushes, then waits without closing: a job still training
    proc = subprocess.Popen(writer_argv(cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=writer_env(env),
                            text=True)
    try:
        # Every line from the start, in order: the heartbeat thread starts in the constructor, so the
        # warning (stderr) may come before "started" (stdout, the training thread), or inside it or inside a
        # "flushed" line (print writes the text and its newline apart): it is looked for anywhere in any
        # line. The bound covers imports, the uploader's start and its first try on CI's loaded machine (it
        # is generous, not a timing goal).
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while not (any("started" in line for line in seen) and any("uploads of" in line for line in seen)):
            try:
                seen.append(read_line(proc, "", timeout=max(0.1, deadline - time.monotonic())))
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nlines read before: {seen}") from None
        warning = next(line for line in seen if "uploads of" in line)
        warning = warning[warning.index("uploads of"):]
        assert proc.poll() is None, "said by close() or at exit, not while training runs"
        assert expect in warning and "hf-mpwriter sync" in warning and "Nothing is lost" in warning, warning
        assert str(logdir) in warning, "the advice names the logdir to sync"
        if token is None:
            assert "refused" not in warning, warning
        else:
            assert token not in warning
        if not any("flushed 199" in line for line in seen):  # (the warning may have joined it)
            read_line(proc, "flushed 199", timeout=60)
        assert expect in (collect(logdir)["last_error"] or ""), "status shows it too"
    finally:
        out, _ = kill_and_collect(proc)
    assert out.count("uploads of") == 0, f"said more than once:\n{out}"  # (the first was consumed by read_line)
    pid = uploader_pid(logdir)
    if pid is not None:
        sigkill(pid)  # still waiting for the user
    else:  # it stopped on its own: every writer is gone and only the user can fix the error (said in its record)
        assert stopped_uploader_info(logdir) is not None, "the uploader is gone without saying why"
    # The advice works as printed: sync with a good token lands every record.
    env["HF_TOKEN"] = TOKEN
    result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir), "--quiet"],
                            env=writer_env(env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    remote = {p[len(PREFIX):]: hub.read_file(REPO, p) for p in hub.list_files(REPO) if p.startswith(PREFIX)}
    check_remote(logdir, remote, {0: range(200)}, tmp_path / "remote")


def test_a_misspelt_keyword_names_the_class_and_the_argument_and_creates_nothing(tmp_path):
    logdir = tmp_path / "a" / "logs"
    with pytest.raises(TypeError, match=r"HFSummaryWriter\(\) got an unexpected keyword argument 'flush_sec'; "
                                        r"did you mean 'flush_secs'\?"):
        HFSummaryWriter(repo_id="me/run", logdir=str(logdir), flush_sec=5)
    assert not (tmp_path / "a").exists(), "a rejected constructor created directories"
    # The same logdir then works with another repository: nothing of the failed call is remembered.
    with HFSummaryWriter(repo_id=None, target_dir=str(tmp_path / "mirror"), logdir=str(logdir), uploader="none") as w:
        w.add_scalar("loss", 1.0, 0)


def test_a_logdir_that_uploads_elsewhere_is_refused_before_anything_is_written(tmp_path):
    logdir = tmp_path / "logs"
    with HFSummaryWriter(repo_id=None, target_dir=str(tmp_path / "one"), logdir=str(logdir), uploader="none") as w:
        w.add_scalar("loss", 1.0, 0)
    before = sorted(p.relative_to(logdir) for p in logdir.rglob("*"))
    with pytest.raises(ConfigurationError, match="already uploads to"):
        HFSummaryWriter(repo_id=None, target_dir=str(tmp_path / "two"), logdir=str(logdir), uploader="none", rank=1)
    assert sorted(p.relative_to(logdir) for p in logdir.rglob("*")) == before, "the refused writer wrote something"


def _record(logdir, kind, text, *, lasted: float, pid: int | None = None) -> None:
    """The running uploader is this process; the error record is what an uploader of pid ``pid`` (default:
    the running one) leaves after meeting the error for ``lasted`` s."""
    import json
    import os

    from hf_mpwriter.state.jobqueue import ERROR_META, JobQueue
    from hf_mpwriter.state.statedir import state_dir, write_json_atomic

    state = state_dir(logdir)
    write_json_atomic(state / "uploader.json", {"pid": os.getpid(), "host": "h", "create_time": 0})
    pid = os.getpid() if pid is None else pid
    queue = JobQueue(state / "queue.db")
    now = time.time()
    queue.set_meta(ERROR_META, json.dumps({"kind": kind.value, "text": text, "pid": pid, "time": now,
                                           "since": now - lasted}))
    queue.close()


def test_a_transient_error_is_said_once_it_lasts_and_only_once(tmp_path, caplog):
    from hf_mpwriter.state.upload_error import ErrorKind
    from hf_mpwriter.writer.reporting import TRANSIENT_WARN_AFTER_S, ProblemReporter

    reporter = ProblemReporter(tmp_path)
    text = "cannot commit on model repo 'me/run' (HTTP 503: busy); will retry"
    _record(tmp_path, ErrorKind.TRANSIENT, text, lasted=5.0)
    with caplog.at_level("WARNING", logger="hf_mpwriter.reporting"):
        reporter.check()
        assert not caplog.records, "a blip is not news"
        _record(tmp_path, ErrorKind.TRANSIENT, text, lasted=TRANSIENT_WARN_AFTER_S + 60)
        reporter.check()
        reporter.check()
        assert len(caplog.records) == 1 and "have failed for 11 min" in caplog.text and "HTTP 503" in caplog.text
        _record(tmp_path, ErrorKind.NEEDS_USER, "cannot commit on model repo 'me/run': the Hub refused the token",
                lasted=0.0, pid=1)  # recorded by an uploader that is not the running one: not this run's news
        reporter.check()
        assert len(caplog.records) == 1
        _record(tmp_path, ErrorKind.NEEDS_USER, "cannot commit on model repo 'me/run': the Hub refused the token",
                lasted=0.0)
        reporter.check()
        assert len(caplog.records) == 2 and "need you" in caplog.records[1].getMessage()


def test_the_error_record_keeps_when_its_kind_began(tmp_path):
    from hf_mpwriter.state.jobqueue import JobQueue
    from hf_mpwriter.state.upload_error import ErrorKind

    queue = JobQueue(tmp_path / "queue.db")
    queue.record_error(ErrorKind.TRANSIENT, "one")
    first = queue.error()
    time.sleep(0.01)
    queue.record_error(ErrorKind.TRANSIENT, "two")
    second = queue.error()
    assert second.since == first.since and second.time > first.time and second.text == "two"
    queue.record_error(ErrorKind.NEEDS_USER, "three")
    assert queue.error().since > first.since  # another kind: a new streak
    queue.record_error(None)
    queue.record_error(ErrorKind.NEEDS_USER, "four")
    assert queue.error().since > second.time  # after a success: a new streak
    queue.close()


def test_a_transient_error_outlives_a_new_uploader_until_the_target_answers(tmp_path):
    """A replaced or restarted uploader keeps counting how long an outage has lasted (writers say it
    after 10 minutes, whatever the number of uploaders meanwhile); the first audit the target answers ends it."""
    import json

    from hf_mpwriter.config import UploadConfig
    from hf_mpwriter.state.jobqueue import ERROR_META
    from hf_mpwriter.state.statedir import state_dir
    from hf_mpwriter.state.upload_error import ErrorKind
    from hf_mpwriter.targets import target_for
    from hf_mpwriter.uploader.commit_cycle import Committer

    logdir = tmp_path / "logs"
    state_dir(logdir)
    config = UploadConfig.for_local(tmp_path / "mirror", prefix="logs", logdir=logdir)
    committer = Committer(logdir, config, target_for(config), None, call=lambda what, fn, *a, nbytes=0: fn(*a))
    began = time.time() - 700
    committer.queue.set_meta(ERROR_META, json.dumps({"kind": "transient", "text": "cannot commit (HTTP 503)",
                                                     "pid": 1, "time": time.time() - 5, "since": began}))
    committer.take_over()
    committer.queue.record_error(ErrorKind.TRANSIENT, "cannot commit (HTTP 503) again")
    assert committer.queue.error().since == began, "the outage's start was forgotten by the new uploader"
    committer.audit()
    assert committer.queue.error() is None, "a target that answers ends the outage"
    committer.queue.record_error(ErrorKind.NEEDS_USER, "the Hub refused the token")
    committer.take_over()
    assert committer.queue.error() is None, "an error that needs the user is checked again by a new uploader"
    committer.close()


def test_a_job_split_over_differently_named_logdirs_is_said_in_the_ranks_output_once(tmp_path, caplog):
    """A node's uploader found, in the job's store, nodes logging to another folder (``split_from`` in what it
    publishes): the ranks' own output says it, once, naming both folders; nothing is said where it is not so."""
    import json

    from hf_mpwriter.state.statedir import state_dir
    from hf_mpwriter.writer.reporting import ProblemReporter

    logdir = tmp_path / "logs-node1"
    info = state_dir(logdir) / "uploader.json"
    info.write_text(json.dumps({"pid": 1, "job": {"split_from": None}}))
    reporter = ProblemReporter(logdir)
    with caplog.at_level("ERROR", logger="hf_mpwriter"):
        reporter.check()
        assert not caplog.records  # one folder: nothing to say
        info.write_text(json.dumps({"pid": 1, "job": {"split_from": "node(s) [0] log to /data/logs-node0 of the repo"}}))
        reporter.check()
        reporter.check()
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "/data/logs-node0" in said[0] and str(logdir) in said[0]
