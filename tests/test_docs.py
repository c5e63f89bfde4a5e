"""README.md against the code: its numbers are the constants', its examples are all checked, and the
test Hub's command line tells a shell (and a user without ``lz4``) what to do.

Why: the README's timings drifted from the code once already (a heartbeat "every 2 s; stale after
30 s" where the code said 1 s and 10 s). Each sentence below is built from the constant it states,
so changing a constant without the README (or the README without the constant) fails here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _s(seconds: float) -> str:
    """A number as the README writes it: ``1`` for 1.0, ``2.5`` for 2.5."""
    return f"{seconds:g}"


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def readme_claims() -> list[tuple[str, str]]:
    """``(what, sentence)``: each timing or size README.md states, written from the constant in the code."""
    from hf_mpwriter import timing
    from hf_mpwriter.events import event_file
    from hf_mpwriter.targets import hub
    from hf_mpwriter.uploader import process
    from hf_mpwriter.writer import supervisor

    beat, hung, stale = timing.HEARTBEAT_S, timing.HUNG_AFTER_S, timing.OTHER_HOST_STALE_S
    flush = _s(event_file.DEFAULT_FLUSH_SECS)
    spacing = round(timing.HUB_COMMIT_SPACING_S)
    deadline = _s(timing.DEFAULT_PREEMPTION_DEADLINE_S)
    return [
        ("heartbeat of other hosts", f"refresh their heartbeat file (every {_s(beat)} s; stale after {_s(stale)} s)"),
        ("shared logdir fail-over", f"start one once the heartbeat is {_s(stale)} s stale"),
        ("heartbeat in the diagram", f"is alive and working (heartbeat, every {_s(beat)} s)"),
        ("hung uploader", f"one silent for {_s(hung)} s (stopped, blocked) is SIGKILLed and replaced"),
        ("fail-over times", f"writers start a new uploader within ~{_s(beat)}-{_s(2 * beat)} s when it dies "
                            f"(~{_s(hung)}-{_s(hung + 2 * beat)} s when it hangs)"),
        ("spawn wait", f"makes sure an uploader runs (waiting up to {_s(timing.START_WAIT_S)} s) before it returns"),
        ("flush_secs default", f"Records reach the OS within `flush_secs` ({flush} s by default, not 120 s)"),
        ("flush_secs default (multiprocessing)", f"(`flush_secs`, {flush} s by default)"),
        ("flush_secs in the diagram", f"{flush} s flushes"),
        ("Hub commit spacing", f"commits at most once per `max(commit_every, nodes × {spacing} s)`"),
        ("Hub commit spacing variable", f"(seconds between commits to one repository; {spacing} for huggingface.co)"),
        ("Hub commit spacing at the last close", f"a commit at once, not after the Hub's ~{spacing} s spacing"),
        ("job leader: lease", f"(`compare_set`, renewed every {_s(timing.LEADER_POLL_S)} s)"),
        ("job leader: gather", f"commits every node's offers together {_s(timing.JOB_GATHER_S)} s after the first one"),
        ("job leader: replaced", f"A leader that stops renewing (its node died) is replaced after {_s(timing.LEASE_STALE_S)} s"),
        ("job leader: offer wait", f"a node with no answer within {_s(timing.OFFER_WAIT_S)} s (once its uploader"),
        ("job store: asked again", f"again at its first commit {_s(timing.STORE_RETRY_S)} s or more after the failure"),
        ("job store: deadline", f"with small values and a {_s(timing.STORE_CALL_S)} s deadline on every"),
        ("Hub commit budget", f"the Hub accepts ~{round(3600 / timing.HUB_COMMIT_SPACING_S)} commits/hour/repo"),
        ("repository commit_every default", f"(default {_s(timing.HUB_COMMIT_EVERY_S / 60)} min;"),
        ("bucket commit_every default", f"(default `commit_every` {_s(timing.BUCKET_COMMIT_EVERY_S)} s)"),
        ("bucket audit", f"found by the audit (every {_s(timing.BUCKET_AUDIT_EVERY_S)} s and at every start)"),
        ("audit_every default", f"every `audit_every` ({_s(timing.AUDIT_EVERY_S / 60)} minutes)"),
        ("paths-info batch", f"one `get_paths_info` call per {hub.PATHS_PER_CALL} files"),
        ("preemption deadline default", f"By `preemption_deadline` ({deadline} s) it exits"),
        ("preemption deadline example", f"HFSummaryWriter(..., preemption_deadline={deadline})"),
        ("close_timeout default", f"waits up to `close_timeout` ({_s(timing.DEFAULT_CLOSE_TIMEOUT_S)} s)"),
        ("system metrics period",
         f"sample the node every {_s(timing.SYSTEM_METRICS_PERIOD_S)} s (or `system_metrics=<seconds>`)"),
        ("full disk memory",
         f"Records the disk refuses stay in memory (up to {_mib(event_file.MAX_UNWRITTEN_BYTES)} per writer;"),
        ("close on a full disk", f"`close()` keeps trying for {_s(event_file.CLOSE_RETRY_SECS)} s"),
        ("transient errors said", f"an error that retrying may fix is logged once it has lasted "
                                  f"{_s(timing.TRANSIENT_WARN_AFTER_S / 60)} minutes"),
        ("call bound", f"has a hard bound ({_s(timing.CALL_BOUND_TIMEOUTS)} × `HF_MPWRITER_HTTP_TIMEOUT` plus its bytes "
                       f"at {_s(timing.CALL_MIN_RATE_BPS / 1024)} KiB/s)"),
        ("log rotation", f"`uploader.log` rotates at {_mib(process.LOG_BYTES)} (two old copies kept); "
                         f"`uploader.out` is set aside past {_mib(supervisor.OUT_BYTES)}."),
    ]


def _readme_text() -> str:
    """README.md with every run of whitespace made one space (sentences wrap across lines)."""
    return " ".join(README.read_text().split())


def test_readme_states_the_numbers_of_the_code():
    text = _readme_text()
    claims = readme_claims()
    assert len(claims) >= 20  # the scenario: every number is checked, not none
    missing = [f"{what}: {sentence!r}" for what, sentence in claims if sentence not in text]
    assert not missing, "README.md does not say what the code does (fix one or the other):\n" + "\n".join(missing)


def test_readme_states_no_old_timings():
    """The numbers the review found wrong stay gone (a sentence can say them in another order)."""
    text = _readme_text()
    assert not re.search(r"every 2 s; stale after 30 s|warns at start|not reliable on NFS", text)


def test_every_readme_code_block_is_run_or_says_why_not():
    """Each ``` block carries an example / excerpt / not-run marker and each excerpt is still in its file
    (scripts/check_readme_examples.py runs the examples; here only what needs no run)."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_readme_examples.py"), "--list"],
                          capture_output=True, text=True, timeout=60)
    assert "example  torchrun" in proc.stdout and "excerpt" in proc.stdout, proc.stdout  # the README was parsed
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _hub_server(*args: str, hide_lz4: bool = False) -> subprocess.Popen:
    prelude = "sys.modules['lz4'] = None; " if hide_lz4 else ""  # None: `import lz4` raises ImportError
    code = "import sys; " + prelude + "from hf_mpwriter.testing.hub_server import main; main(sys.argv[1:])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_hub_server_prints_lines_a_shell_can_paste(tmp_path):
    server = _hub_server("--port", "0", "--token", "hf_paste_me", "--log-level", "WARNING")
    try:
        assert server.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(line.startswith("export NO_PROXY") for line in lines):
            line = server.stdout.readline()
            assert line, f"the server ended early: {server.stderr.read() if server.stderr else ''}"
            lines.append(line.rstrip("\n"))
        exports = [line for line in lines if line.startswith("export ")]
        names = {line.split()[1].split("=")[0] for line in exports}
        assert {"HF_ENDPOINT", "HF_TOKEN", "HF_HUB_DISABLE_XET"} <= names, lines
        # Pasted into a shell, they point the real client at the server, with the token it accepts.
        script = "\n".join(exports) + "\n" + (
            f"{sys.executable} -c \"from huggingface_hub import HfApi; "
            "print(HfApi().create_repo('pasted').repo_id)\""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {"HF_HOME": str(tmp_path)}
        shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
        assert shell.returncode == 0, shell.stderr
        assert "test-user/pasted" in shell.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_hub_server_without_lz4_says_how_to_install_it():
    server = _hub_server("--port", "0", hide_lz4=True)
    try:
        out, err = server.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        out, err = server.communicate()
        pytest.fail(f"the server started without lz4 instead of saying how to install it: {out}")
    assert server.returncode != 0
    assert "pip install 'hf_mpwriter[testing]'" in err and "lz4" in err
    assert "Traceback" not in err and "listening" not in out  # one line, and it did not start


def test_demo_local_hub_without_lz4_says_how_to_install_it(tmp_path):
    code = "import sys; sys.modules['lz4'] = None; from hf_mpwriter.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "demo", "--local-hub", "--quiet", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0
    assert "pip install 'hf_mpwriter[testing]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*tfevents*"))  # no worker started


@pytest.mark.parametrize("extra", ["testing", "test"])
def test_lz4_is_in_the_extras_not_the_install_requirements(extra):
    from configparser import ConfigParser

    cfg = ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "lz4" not in cfg["options"]["install_requires"]
    assert "lz4" in cfg["options.extras_require"][extra]
