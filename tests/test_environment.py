"""Settings read from the environment (hf_mpwriter.environment): one reader, checked where the writer is
created, handed down to the uploader through the logdir's settings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hf_mpwriter import HFSummaryWriter, SummaryWriter
from hf_mpwriter.errors import ConfigurationError

#: Each setting with a value a user could plausibly type that is wrong.
BAD = [
    ("HF_MPWRITER_HTTP_TIMEOUT", "60s"),
    ("HF_MPWRITER_HTTP_TIMEOUT", "0"),
    ("HF_MPWRITER_PREEMPTION_DEADLINE", "soon"),
    ("HF_MPWRITER_HUB_COMMIT_SPACING", "-1"),
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


def test_every_setting_has_a_bad_value_above_and_a_row_in_the_reference():
    """Counted from outside the reader: the variables a user can set are the ones docs/reference.md lists,
    and each one is tried with a bad value here."""
    import re
    from pathlib import Path

    from hf_mpwriter import environment

    reference = (Path(__file__).resolve().parent.parent / "docs" / "reference.md").read_text()
    documented = set(re.findall(r"^\| `(HF_MPWRITER_[A-Z_]+)` \|", reference, re.M))
    assert documented == set(environment.VARIABLES)
    assert {name for name, _ in BAD} == set(environment.VARIABLES)


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
    from hf_mpwriter import environment

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


def test_every_setting_the_package_names_is_read_by_the_one_reader_and_nowhere_else():
    """No module reads an ``HF_MPWRITER_*`` variable itself (each did, four ways), and none names one the
    reader does not know (a removed variable still promised in a message or docstring)."""
    import re
    from pathlib import Path

    from hf_mpwriter import environment

    package = Path(environment.__file__).parent
    named, read_elsewhere = set(), []
    for path in package.rglob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r"HF_MPWRITER_[A-Z_]+", text))
        if path.name != "environment.py" and re.search(r"(\benviron\b|getenv)[^\n]*HF_MPWRITER_", text):
            read_elsewhere.append(str(path.relative_to(package)))
    assert len(named) >= 5  # the scenario: the package does name its settings
    assert named <= set(environment.VARIABLES), named - set(environment.VARIABLES)
    assert not read_elsewhere, read_elsewhere
