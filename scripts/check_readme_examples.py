"""Run every example of README.md and docs/*.md as written, each in a fresh temporary directory, and report.

Why: documented examples rot silently (a missing install line, a second run that does nothing); the
only proof that one works is running it exactly as a reader would. Every fenced code block of the
README and of each page in ``docs/`` carries a marker on the line before it, and a block without one
fails this check, so a new block cannot slip in unchecked:

* ``<!-- example: NAME -->`` a block to run: ``bash`` blocks with ``bash -e``, ``python`` blocks
  written to ``example.py`` and run. Examples run in order: the README's, then each docs page's
  (by file name). An example's name is unique across all of them.
* ``<!-- example: NAME/FILE -->`` a file to write (as ``FILE``) into example ``NAME``'s directory
  before its ``<!-- example: NAME -->`` block runs there.
* ``<!-- excerpt: PATH -->`` lines quoted from a file of the repository: each line (but ``...``)
  must still be in it.
* ``<!-- not-run: REASON -->`` a block that is not run (a fragment, a diagram, a command that
  needs several nodes); the reason is printed.

Each example runs with this Python's environment first on ``PATH`` (a virtual environment with the
project and ``.[test,integrations]`` and torch installed), no ``HF_*`` variables from the caller's
shell (``HF_HOME`` goes into the temporary directory), and ``scripts/`` of this checkout linked
into its directory (the README's commands run from the repository's root). ``--repeat 2`` runs each
example twice in the same directory: a README command must work when a reader runs it again.

    python scripts/check_readme_examples.py                 # every example
    python scripts/check_readme_examples.py torchrun system # some
    python scripts/check_readme_examples.py --list
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!--\s*(example|excerpt|not-run):\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")

#: What an example's output must show, beyond exiting 0: proof that the example did what the
#: README says (a restart example that resumes a finished run exits 0 too, having done nothing).
EXPECT: dict[str, list[str]] = {
    "torchrun": [r"done: 100 steps on 4 ranks"],
    "torchrun-restart": [r"simulated failure of rank 2 at step 37", r"attempt 1: steps 30\.\.99", r"done: 100 steps"],
    "offline": [r"up to date", r"hf://test-user/run/tensorboard/exp1"],  # committed, and on the test Hub
    "testhub": [r"'tensorboard/exp1/events\.out\.tfevents\.[^']+'\] [1-9]"],  # the file, committed
    # both nodes met the job's one leader, and each node's ranks are committed
    "trainer-resume": [r"attempt 1 killed at step 6", r"up to date"],
    "two-nodes": [r"committer one leader for the job's 2 nodes", r"up to date[\s\S]*up to date"],
}


def documents() -> list[Path]:
    """The files whose examples are checked: README.md, then docs/*.md by name."""
    return [README, *sorted(DOCS.glob("*.md"))]


@dataclass
class Block:
    """One fenced code block of a document and the marker before it."""

    line: int
    lang: str
    text: str
    kind: str = ""  # example | excerpt | not-run | "" (unmarked)
    arg: str = ""
    source: str = "README.md"  # the document, relative to the repository's root

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class Example:
    """A runnable example: its files, then its command block."""

    name: str
    files: dict[str, str] = field(default_factory=dict)
    run: Block | None = None


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str


def parse(text: str, source: str = "README.md") -> list[Block]:
    """Every fenced block with the marker (if any) on the nearest non-blank line before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        block = Block(line=start + 1, lang=fence.group(1), text="\n".join(body) + "\n", source=source)
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before]) if before >= 0 else None
        if marker:
            block.kind, block.arg = marker.group(1), marker.group(2)
        blocks.append(block)
    return blocks


def parse_all() -> list[Block]:
    """The blocks of every document, in :func:`documents` order."""
    return [block for path in documents() for block in parse(path.read_text(), str(path.relative_to(ROOT)))]


def duplicate_examples(blocks: list[Block]) -> list[str]:
    """Command blocks (or files) of one example name defined twice, e.g. in two documents."""
    seen: dict[str, Block] = {}
    problems = []
    for block in blocks:
        if block.kind != "example":
            continue
        if block.arg in seen:
            problems.append(f"{block.where}: example {block.arg!r} is defined already at {seen[block.arg].where}")
        seen.setdefault(block.arg, block)
    return problems


def examples_of(blocks: list[Block]) -> dict[str, Example]:
    """Examples in document order, each with the files written before its command."""
    examples: dict[str, Example] = {}
    for block in blocks:
        if block.kind != "example":
            continue
        name, _, filename = block.arg.partition("/")
        example = examples.setdefault(name, Example(name))
        if filename:
            example.files[filename] = block.text
        else:
            example.run = block
    return examples


def check_excerpt(block: Block) -> str | None:
    """None if every line of the excerpt is still in its file, else what is missing."""
    path = ROOT / block.arg
    if not path.is_file():
        return f"{block.arg} does not exist"
    have = {line.strip() for line in path.read_text().splitlines()}
    missing = [line for line in block.text.splitlines() if line.strip() not in ("", "...") and line.strip() not in have]
    return f"lines not in {block.arg}: {missing}" if missing else None


def clean_env(workdir: Path) -> dict[str, str]:
    """The caller's environment without its Hub settings; this Python's environment first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "HF_MPWRITER_"))}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env["HF_HOME"] = str(workdir / ".hf_home")
    env.pop("PYTHONPATH", None)
    return env


def run_example(example: Example, repeat: int, timeout: float, keep: bool) -> Result:
    """Write the example's files into a fresh directory and run its command ``repeat`` times there."""
    assert example.run is not None
    workdir = Path(tempfile.mkdtemp(prefix=f"readme-{example.name}-"))
    started = time.monotonic()
    try:
        (workdir / "scripts").symlink_to(ROOT / "scripts")
        for filename, text in example.files.items():
            (workdir / filename).write_text(text)
        if example.run.lang == "python":
            (workdir / "example.py").write_text(example.run.text)
            command = ["python", "example.py"]
        else:
            command = ["bash", "-e", "-c", example.run.text]
        env = clean_env(workdir)
        for attempt in range(1, repeat + 1):
            try:
                proc = subprocess.run(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                out = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode(errors="replace")
                return Result(example.name, False, time.monotonic() - started,
                              f"run {attempt}: timed out after {timeout:.0f} s\n{tail(out)}")
            if proc.returncode != 0:
                return Result(example.name, False, time.monotonic() - started,
                              f"run {attempt}: exit {proc.returncode}\n{tail(proc.stdout)}")
            missing = [p for p in EXPECT.get(example.name, []) if not re.search(p, proc.stdout)]
            missing += [f"event files in {d.name}/" for d in workdir.glob("tb-mirror*") if not any(d.rglob("*tfevents*"))]
            if missing:
                return Result(example.name, False, time.monotonic() - started,
                              f"run {attempt}: exit 0 but the output lacks {missing}\n{tail(proc.stdout)}")
        return Result(example.name, True, time.monotonic() - started, tail(proc.stdout, 3))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="examples to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the blocks and their markers, run nothing")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each example in the same directory")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)

    blocks = parse_all()
    problems: list[str] = duplicate_examples(blocks)
    for block in blocks:
        if not block.kind:
            problems.append(f"{block.where}: a ``` block without a marker (example / excerpt / not-run)")
        elif block.kind == "excerpt" and (error := check_excerpt(block)):
            problems.append(f"{block.where}: excerpt: {error}")
    examples = examples_of(blocks)
    for name, example in examples.items():
        if example.run is None:
            problems.append(f"example {name}: files but no command block")
    if args.list:
        for block in blocks:
            print(f"{block.where:<26} {block.kind or 'UNMARKED':8} {block.arg}")
    unknown = set(args.names) - set(examples)
    if unknown:
        parser.error(f"no such example: {sorted(unknown)}; there are {sorted(examples)}")
    for problem in problems:
        print(f"FAIL {problem}")
    if args.list:
        return 1 if problems else 0
    if not args.names:
        for block in blocks:
            if block.kind == "not-run":
                print(f"not run  {block.where}: {block.arg}")
    results: list[Result] = []
    for name, example in examples.items():
        if example.run is None or (args.names and name not in args.names):
            continue
        print(f"... {name}", flush=True)
        result = run_example(example, args.repeat, args.timeout, args.keep)
        results.append(result)
        print(f"{'PASS' if result.ok else 'FAIL'} {name} ({result.seconds:.1f} s)\n{result.detail}", flush=True)
    print("\nsummary:")
    for result in results:
        print(f"  {'PASS' if result.ok else 'FAIL'}  {result.name:18} {result.seconds:6.1f} s")
    return 0 if not problems and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
