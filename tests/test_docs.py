"""README.md's examples are all checked (scripts/check_readme_examples.py runs them), and the test Hub's
command line tells a shell (and a user without ``lz4``) what to do.

No README sentence is pinned here: a wording change must not fail the suite, a wrong behaviour must.
The README's numbers come from the benchmarks' printed tables and the code's behaviour, tested where it lives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


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
