"""Looking at the remote copy without downloading it: ``hf-mpwriter view`` starts stock TensorBoard on
an ``hf://`` URL, which it reads through fsspec and ``huggingface_hub.HfFileSystem``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from helpers import load_script, read_line
from upload_helpers import finish, start_writer, wait_for, writer_env

from hf_mpwriter.testing import HubServer

TOKEN = "hf_goodTokenForTests0123456789"
REPO = "tester/view"


def _bench():
    """scripts/bench_view.py: the simulated job, its seeding, and TensorBoard's loader on a printed command."""
    return load_script("bench_view")


def _loads(command: list[str]) -> dict[str, str | None]:
    """What TensorBoard loads for ``command``: each path it walks and the run name it gives it, read with
    TensorBoard's own parser of ``--logdir_spec`` (``--logdir``: the one path, unnamed)."""
    from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

    assert command[0] == "tensorboard", command
    if "--logdir" in command:
        return {command[command.index("--logdir") + 1]: None}
    return _parse_event_files_spec(command[command.index("--logdir_spec") + 1])


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
    """The repository is checked first (the token reads it, as TensorBoard's will), then the command printed: this
    job's copy holds a job run, which TensorBoard opens alone; ranks on demand (where the writer puts them, rank 9,000
    in its block folder), every run with ``--ranks all``."""
    _, logdir, env = uploaded
    url = f"hf://{REPO}/tensorboard/logs"

    def view(*options: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "hf_mpwriter", "view", str(logdir), "--print", *options],
                                env=writer_env({**env, "HF_TOKEN": TOKEN}), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "--load_fast=false" in result.stdout.split() and "6006" in result.stdout.split()
        return result.stdout.split()

    assert _loads(view()) == {f"{url}/job": "job"}
    assert _loads(view("--ranks", "1,9000")) == {f"{url}/job": "job", f"{url}/rank-001": "rank-001",
                                                 f"{url}/ranks-9000-17999/rank-9000": "rank-9000"}
    assert _loads(view("--ranks", "all")) == {url: None}


def test_view_starts_tensorboard_on_the_repository(uploaded):
    """TensorBoard itself serves the job run and the rank asked for (and no other), read from the test Hub through
    the real client: the logdir's Hub, though the shell's HF_ENDPOINT names another (where nothing listens)."""
    hub, logdir, env = uploaded
    port = _free_port()
    env = {**env, "HF_TOKEN": TOKEN, "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}
    listed_before = hub.stats["requests"].get("tree", 0)
    proc = subprocess.Popen([sys.executable, "-m", "hf_mpwriter", "view", str(logdir), "--port", str(port), "--ranks", "1"],
                            env=writer_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "#custom_scalars" in read_line(proc, "TensorBoard on", timeout=60)  # this logdir has a job run
        base = f"http://127.0.0.1:{port}/data"
        runs = wait_for(lambda: (_get(f"{base}/runs") or None) if len(_get(f"{base}/runs") or []) >= 2 else None,
                        90, "TensorBoard to list the remote runs")
        assert sorted(runs) == ["job/.", "rank-001/."], runs  # (--logdir_spec names a run "<name>/.")
        assert hub.stats["requests"].get("tree", 0) > listed_before, hub.stats  # TensorBoard listed the logdir's Hub
        points = wait_for(lambda: _loaded(f"{base}/plugin/scalars/scalars?run=rank-001/.&tag=loss", 30), 30,
                          "the scalars of rank 1")
        assert [(p[1], p[2]) for p in points] == [(s, float(100000 + s)) for s in range(30)]
        means = wait_for(lambda: _loaded(f"{base}/plugin/scalars/scalars?run=job/.&tag=loss", 30), 30, "the job run's means")
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


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A job of 150 rank runs with a job run naming ranks behind (rank 99 at 4 steps, 5 at 3, 17 at 2 and missing at
    2 more, 40 at 1), and a copy of 3 rank runs without a job run, on a test Hub; the bench's pieces drive them."""
    bench = _bench()
    home = tmp_path_factory.mktemp("view_hf_home")
    with HubServer(tokens={bench.TOKEN}) as hub:
        bench.seed(hub.endpoint, "tester/job", "tb", bench.simulated_job(150, 5, {99: 4, 5: 3, 17: 2, 40: 1}, {17: 2}))
        bench.seed(hub.endpoint, "tester/flat", "tb", bench.simulated_job(3, 5, {}, job_run=False))
        yield bench, hub, bench.client_env(hub.env(), str(home))


def test_the_jobs_view_loads_the_job_run_alone_with_a_few_listings(simulated):
    """By default TensorBoard's loader, on what `view` prints, loads the job run alone and reaches its first chart
    with a few listings; the whole folder (``--ranks all``, what `view` opened before) costs one per rank run."""
    bench, hub, env = simulated
    job_view = bench.measure(hub, env, "hf://tester/job/tb", [], timeout=60)
    assert job_view["runs"] == ["job/."] and "first_chart_s" in job_view, job_view
    whole = bench.measure(hub, env, "hf://tester/job/tb", ["--ranks", "all"], timeout=60)
    assert len(whole["runs"]) == 151 and "job" in whole["runs"] and "first_chart_s" in whole, whole
    assert whole["loader_tree"] >= 150, whole
    assert job_view["loader_tree"] + job_view["view_api"] <= 6, job_view  # the job folder, the logdir's (1 page), the check


def test_slowest_opens_the_ranks_the_job_run_names_behind_most_often(simulated):
    """``--slowest K``: read from the job run alone (texts of the steps' slowest and missing ranks), the K ranks
    named at the most steps (17: slowest at 2, missing at 2 more), beside the ranks asked for by number."""
    bench, _, env = simulated
    url = "hf://tester/job/tb"
    assert bench_loads(bench, env, url, "--slowest", "3") == {f"{url}/job": "job", f"{url}/rank-099": "rank-099",
                                                              f"{url}/rank-017": "rank-017", f"{url}/rank-005": "rank-005"}
    both = bench_loads(bench, env, url, "--slowest", "2", "--ranks", "0-1,99")
    assert list(both.values()) == ["job", "rank-000", "rank-001", "rank-099", "rank-017"]


def test_without_a_job_run_view_opens_the_whole_folder_as_before(simulated):
    """No job run: every run by default; ranks asked for alone; ``--slowest`` has nothing to read and fails."""
    bench, _, env = simulated
    url = "hf://tester/flat/tb"
    assert bench_loads(bench, env, url) == {url: None}
    assert bench_loads(bench, env, url, "--ranks", "2") == {f"{url}/rank-002": "rank-002"}
    with pytest.raises(RuntimeError):
        bench.view_command(env, url, "--slowest", "1", timeout=60)


def bench_loads(bench, env, url: str, *options: str) -> dict[str, str | None]:
    return _loads(bench.view_command(env, url, *options, timeout=60))


def test_ranks_are_read_as_lists_and_ranges():
    import argparse

    from hf_mpwriter.cli.view import parse_ranks

    assert parse_ranks("0-3,2,7") == (0, 1, 2, 3, 7)
    assert parse_ranks("all") is None
    for bad in ("3-1", "x", "1,,2", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ranks(bad)


def test_slowest_reads_what_the_uploaders_job_run_writes(tmp_path):
    """The texts ``--slowest`` counts are the job run's own (production's :class:`JobRun`): rank 7 the last at every
    step, 4 s behind; rank 5 missing at two; rank 3 last at one step but within a second (not named slow)."""
    from hf_mpwriter.cli.view import job_run_files, ranks_behind
    from hf_mpwriter.uploader.jobrun.runfile import JobRun
    from hf_mpwriter.uploader.jobrun.stats import Stats

    run = JobRun(tmp_path)
    points = [("loss", step, Stats.of({0: 1.0, 3: 2.0, 7: 3.0}, missing=(5,) if step < 2 else (), wall=104.0 + step,
                                      first_wall=100.0 + step, last_rank=7)) for step in range(4)]
    points.append(("loss", 4, Stats.of({0: 1.0, 7: 2.0, 3: 3.0}, wall=100.5, first_wall=100.0, last_rank=3)))
    run.write(points, world=8)
    run.close()
    assert ranks_behind(job_run_files(str(tmp_path)) or []) == {7: 4, 5: 2}
