"""Looking at the remote copy without downloading it: ``hf-mpwriter view`` starts stock TensorBoard on
an ``hf://`` URL, which it reads through fsspec and ``huggingface_hub.HfFileSystem``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from helpers import read_line
from upload_helpers import finish, start_writer, wait_for, writer_env

from hf_mpwriter.testing import HubServer

TOKEN = "hf_goodTokenForTests0123456789"
REPO = "tester/view"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


@pytest.fixture
def uploaded(tmp_path):
    with HubServer(tokens={TOKEN}) as hub:
        env = {**hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "TEST_TOKEN": TOKEN}
        # The two ranks of one job: alive together until both logged every step (a rank whose whole life is
        # shorter than the other's start would end the job, for the uploader, before the other began).
        go = tmp_path / "both-logged"
        cfg = {"logdir": str(tmp_path / "logs"), "repo_id": REPO, "commit_every_s": 1.0, "steps": 30, "sleep": 0.0,
               "close_after": str(go)}
        procs = [start_writer({**cfg, "rank": rank}, env) for rank in range(2)]
        for proc in procs:
            read_line(proc, "flushed 29")
        go.touch()
        for proc in procs:
            finish(proc)
        yield hub, tmp_path / "logs", env


def test_view_prints_the_command_for_a_logdir(uploaded):
    """The repository is checked first (the token reads it, as TensorBoard's will), then the command printed."""
    _, logdir, env = uploaded
    result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "view", str(logdir), "--print"],
                            env=writer_env({**env, "HF_TOKEN": TOKEN}), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tensorboard", "--logdir", f"hf://{REPO}/tensorboard/logs", "--port", "6006",
                                     "--load_fast=false"]


def test_view_starts_tensorboard_on_the_repository(uploaded):
    """TensorBoard itself serves every rank's scalars, read from the test Hub through the real client:
    the logdir's Hub, though the shell's HF_ENDPOINT names another (where nothing listens)."""
    hub, logdir, env = uploaded
    port = _free_port()
    env = {**env, "HF_TOKEN": TOKEN, "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}
    listed_before = hub.stats["requests"].get("tree", 0)
    proc = subprocess.Popen([sys.executable, "-m", "hf_mpwriter", "view", str(logdir), "--port", str(port)],
                            env=writer_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "#custom_scalars" in read_line(proc, "TensorBoard on", timeout=60)  # this logdir has a job run
        base = f"http://127.0.0.1:{port}/data"
        runs = wait_for(lambda: (_get(f"{base}/runs") or None) if len(_get(f"{base}/runs") or []) >= 3 else None,
                        90, "TensorBoard to list the remote runs")
        assert sorted(runs) == ["job", "rank-000", "rank-001"], runs
        runs.remove("job")
        assert hub.stats["requests"].get("tree", 0) > listed_before, hub.stats  # TensorBoard listed the logdir's Hub
        for rank, run in enumerate(sorted(runs)):
            points = wait_for(lambda run=run: _loaded(f"{base}/plugin/scalars/scalars?run={run}&tag=loss", 30), 30,
                              f"the scalars of {run}")
            assert [(p[1], p[2]) for p in points] == [(s, float(rank * 100000 + s)) for s in range(30)]
        means = wait_for(lambda: _loaded(f"{base}/plugin/scalars/scalars?run=job&tag=loss", 30), 30, "the job run's means")
        assert [(p[1], p[2]) for p in means] == [(s, 50000.0 + s) for s in range(30)]  # both ranks, every step
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _loaded(url: str, points: int) -> list | None:
    """The scalars TensorBoard serves at ``url`` once it serves ``points`` of them: it loads a file while it
    serves it (on a busy machine a run is seen part-read), so a shorter answer is asked again."""
    got = _get(url)
    return got if got and len(got) >= points else None


def test_view_reads_every_kind_of_target_where_it_is(tmp_path):
    """The URL `view` opens comes from the target itself (one description per kind, not a copy in the CLI)."""
    from hf_mpwriter.targets.bucket import BucketTarget
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.targets.local import LocalTarget

    assert HubTarget("me/run", prefix="tb").reader_url == "hf://me/run/tb"
    assert HubTarget("me/run", prefix="tb", repo_type="dataset", revision="dev").reader_url == "hf://datasets/me/run@dev/tb"
    assert HubTarget("me/run", prefix="", repo_type="space").reader_url == "hf://spaces/me/run"
    assert BucketTarget("me/bucket", prefix="logs/a").reader_url == "hf://buckets/me/bucket/logs/a"
    assert LocalTarget(tmp_path, "tb").reader_url == str(tmp_path.resolve() / "tb")


def test_views_banner_offers_the_custom_scalars_page_only_where_a_job_run_is(tmp_path):
    from hf_mpwriter.cli.view import holds_job_run

    assert not holds_job_run(str(tmp_path))  # one process: no job run, an empty Custom Scalars page
    (tmp_path / "job").mkdir()
    assert holds_job_run(str(tmp_path))
