"""The package's layout as the README's "How it is built" states it, checked on a real interpreter
(``lint-imports``, run by ``.ci/run``, checks the same contracts on the import graph; these check what
a process really loads, lazy imports included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hf_mpwriter"


def _loaded(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """Modules starting with one of ``prefixes`` that a fresh interpreter has loaded after ``code``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_uploader_never_imports_the_writer_side():
    """The uploader process (``python -m hf_mpwriter.uploader``) and ``sync`` load no writer module, and
    so neither tensorboardX nor torch (about 1.5 s and 200 MB per uploader start)."""
    code = "import hf_mpwriter.uploader.loop, hf_mpwriter.cli.main, hf_mpwriter.cli.status"
    assert _loaded(code, ("hf_mpwriter.writer", "tensorboardX", "torch")) == []


def test_a_training_process_loads_nothing_of_the_uploader_side(tmp_path):
    """A process that creates an ``HFSummaryWriter`` (no uploader started), logs and closes loads no
    target, schedule, commit cycle, system metrics or uploader module, nor the Hub client's ``hf_api``."""
    code = (f"from hf_mpwriter import HFSummaryWriter\n"
            f"w = HFSummaryWriter(repo_id='me/run', logdir={str(tmp_path / 'logs')!r}, uploader='none')\n"
            f"w.add_scalar('loss', 1.0, 0)\nw.close()\n"
            f"assert 'hf_mpwriter.writer.hub_writer' in sys.modules  # the scenario: a writer really ran")
    loaded = _loaded(code, ("hf_mpwriter.uploader", "hf_mpwriter.targets", "huggingface_hub.hf_api"))
    assert loaded == []


def test_the_package_root_is_the_data_flow():
    """At most 7 modules beside ``__init__``/``__main__`` at the root (settings, argument checks, errors,
    policy); the rest in the folders of the data flow."""
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(root) <= 7, root
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == ["cli", "events", "integrations", "state", "targets", "testing", "uploader", "writer"]


def test_no_import_cycle():
    """No module of the package imports, directly or not, a module that imports it back (lazy imports
    included): the layers above hold between folders, this holds inside them too."""
    grimp = __import__("pytest").importorskip("grimp", reason="grimp comes with import-linter (the test extra)")
    graph = grimp.build_graph("hf_mpwriter")
    cycles = sorted({tuple(sorted((module, imported))) for module in graph.modules
                     for imported in graph.find_modules_directly_imported_by(module)
                     if graph.chain_exists(importer=imported, imported=module)})
    assert not cycles, cycles
