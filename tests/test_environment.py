"""Settings read from the environment (hf_mpwriter.environment): one reader, checked where the writer is
created, handed down to the uploader through the logdir's settings."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_mpwriter import HFSummaryWriter, SummaryWriter, environment
from hf_mpwriter.environment import Environment
from hf_mpwriter.errors import ConfigurationError

#: Each setting with a value a user could plausibly type that is wrong.
BAD = [
    ("HF_MPWRITER_HTTP_TIMEOUT", "60s"),
    ("HF_MPWRITER_HTTP_TIMEOUT", "0"),
    ("HF_MPWRITER_PREEMPTION_DEADLINE", "soon"),
    ("HF_MPWRITER_JOB_STORE", "maybe"),
    ("HF_MPWRITER_HANDLE_SIGTERM", "nope"),
    ("HF_MPWRITER_NETWORK_FS", "nfs; lustre"),
    ("HF_MPWRITER_COMMITS_PER_HOUR", "0"),
    ("HF_MPWRITER_COMMITS_PER_HOUR", "lots"),
    ("HF_MPWRITER_API_REQUESTS", "5"),
    ("HF_MPWRITER_API_REQUESTS", "1000.5"),
    ("HF_MPWRITER_FILES_PER_COMMIT", "20000"),
    ("HF_MPWRITER_FILES_PER_COMMIT", "0"),
]


def _settings() -> dict[str, str]:
    """Field of :class:`Environment` -> its variable, ``HF_MPWRITER_<FIELD>``: the settings counted from the
    dataclass the writer receives, not from the reader's own table."""
    return {field.name: f"HF_MPWRITER_{field.name.upper()}" for field in dataclasses.fields(Environment)}


def test_every_setting_has_a_bad_value_above_and_a_row_in_the_reference():
    """The variables a user can set are the ones docs/reference.md lists, and each one is tried with a
    bad value here."""
    reference = (Path(__file__).resolve().parent.parent / "docs" / "reference.md").read_text()
    documented = set(re.findall(r"^\| `(HF_MPWRITER_[A-Z_]+)` \|", reference, re.M))
    assert len(_settings()) >= 8  # the scenario: the dataclass does hold the settings
    assert documented == set(_settings().values())
    assert {name for name, _ in BAD} == set(_settings().values())


@pytest.mark.parametrize(("name", "value"), BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_a_bad_setting_is_refused_by_the_writers_constructor_before_anything_is_created(monkeypatch, tmp_path, name, value):
    monkeypatch.setenv(name, value)
    logdir = tmp_path / "logs"
    with pytest.raises(ConfigurationError) as caught:
        HFSummaryWriter(target_dir=str(tmp_path / "mirror"), logdir=str(logdir), uploader="none")
    message = str(caught.value)
    assert name in message and repr(value) in message and "e.g." in message, message  # what, the value, an example
    assert not logdir.exists() and not (tmp_path / "mirror").exists()  # nothing created, no uploader started
    with pytest.raises(ConfigurationError, match=name):  # the plain writer reads the same settings
        SummaryWriter(str(logdir))
    assert not logdir.exists()


def test_the_advice_works_when_followed(monkeypatch, tmp_path):
    """The example each error gives is itself accepted."""
    for name, value in BAD:
        with pytest.raises(ConfigurationError) as caught:
            environment.read({name: value})
        example = str(caught.value).split("e.g. ", 1)[1].split()[0].rstrip(").,")
        key, _, good = example.partition("=")
        assert key == name, example
        environment.read({name: good})


def test_the_writers_settings_reach_the_uploader_through_the_logdir(monkeypatch, tmp_path):
    """The uploader (another process, maybe started by `sync` in another shell) uses what the writer read."""
    monkeypatch.setenv("HF_MPWRITER_HTTP_TIMEOUT", "7")
    monkeypatch.setenv("HF_MPWRITER_JOB_STORE", "off")
    monkeypatch.setenv("HF_MPWRITER_PREEMPTION_DEADLINE", "12.5")
    logdir = tmp_path / "logs"
    with HFSummaryWriter(target_dir=str(tmp_path / "mirror"), logdir=str(logdir), uploader="none") as writer:
        writer.add_scalar("x", 1.0, 0)
    saved = json.loads((logdir / ".hf_mpwriter" / "config.json").read_text())
    assert (saved["http_timeout"], saved["job_store"], saved["preemption_deadline"]) == (7.0, False, 12.5), saved


def test_a_retired_variable_is_said_once_with_what_to_set_instead_and_the_default_applies(caplog):
    from hf_mpwriter.config import commit_spacing
    from hf_mpwriter.timing import HUB_COMMIT_SPACING_S

    environment._retired_said.clear()
    caplog.set_level("WARNING", logger="hf_mpwriter")
    first = environment.read({"HF_MPWRITER_HUB_COMMIT_SPACING": "2"})
    environment.read({"HF_MPWRITER_HUB_COMMIT_SPACING": "2"})
    said = [r for r in caplog.records if r.name == environment.logger.name]
    assert len(said) == 1 and said[0].levelname == "WARNING", said  # once per process, not per writer
    assert "HF_MPWRITER_COMMITS_PER_HOUR" in said[0].getMessage()  # what to set instead
    assert first == Environment() and commit_spacing(first.commits_per_hour) == HUB_COMMIT_SPACING_S


def test_one_rate_setting_gives_the_spacing_of_commits():
    """``HF_MPWRITER_COMMITS_PER_HOUR`` is the one rate: commits are the Hub's ~28 s apart, closer only
    where the rate asks for more than the Hub's 128 an hour (an endpoint that accepts more)."""
    from hf_mpwriter.config import commit_spacing
    from hf_mpwriter.timing import HUB_COMMIT_SPACING_S

    assert commit_spacing(None) == commit_spacing(32) == commit_spacing(128) == HUB_COMMIT_SPACING_S
    assert commit_spacing(1800) == 2.0 and commit_spacing(3600) == 1.0


def test_sync_with_a_bad_setting_says_what_to_fix_without_a_traceback(monkeypatch, tmp_path):
    logdir = tmp_path / "logs"
    with HFSummaryWriter(target_dir=str(tmp_path / "mirror"), logdir=str(logdir), uploader="none") as writer:
        writer.add_scalar("x", 1.0, 0)
    env = {**__import__("os").environ, "HF_MPWRITER_HTTP_TIMEOUT": "60s"}
    done = subprocess.run([sys.executable, "-m", "hf_mpwriter", "sync", str(logdir)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "HF_MPWRITER_HTTP_TIMEOUT" in done.stderr, done.stderr
    assert "'60s'" in done.stderr and "e.g." in done.stderr, done.stderr


@pytest.mark.parametrize("field", sorted(_settings()))
def test_each_setting_is_read_and_checked_before_the_writer_creates_anything(monkeypatch, tmp_path, field):
    """From outside, one variable at a time: a value no setting accepts stops the writer's constructor
    (naming the variable) before anything is created, and the example its error gives sets that field."""
    name = _settings()[field]
    monkeypatch.setenv(name, "not a value!")
    logdir = tmp_path / "logs"
    with pytest.raises(ConfigurationError, match=name) as caught:
        HFSummaryWriter(target_dir=str(tmp_path / "mirror"), logdir=str(logdir), uploader="none")
    assert not logdir.exists() and not (tmp_path / "mirror").exists()
    example = str(caught.value).split("e.g. ", 1)[1].split()[0].rstrip(").,")
    key, _, good = example.partition("=")
    assert key == name, example
    monkeypatch.setenv(name, good)
    assert _spelled(getattr(environment.read(), field)) == good  # this variable sets this field, to that value


def _spelled(value: object) -> str:
    """A setting's value as a user would type it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def test_the_ranks_a_launcher_started_on_a_node():
    """What a node's own plan counts its files by before the leader's (``job_plan.start_pacing``)."""
    ranks_per_node = environment.ranks_per_node
    assert ranks_per_node({"LOCAL_WORLD_SIZE": "8", "SLURM_NTASKS_PER_NODE": "4"}) == 8  # torchrun's first
    assert ranks_per_node({"SLURM_NTASKS_PER_NODE": "4(x2)"}) == 4
    assert ranks_per_node({"LOCAL_WORLD_SIZE": "0"}) is None and ranks_per_node({"LOCAL_WORLD_SIZE": "x"}) is None
    assert ranks_per_node({}) is None
