"""Hub API requests per commit, per route, with the real client against the test Hub.

A writer (``uploader="none"``) and its logdir's uploader run in a child process (:func:`drive`), which
huggingface_hub starts in afresh, reading ``HF_ENDPOINT`` at import as the uploader's own process does.
The child waits for a command between commits, so each commit's requests are counted exactly by the
test Hub, in this process. Storage transfers (Xet CAS: xorbs, shards, chunk queries, reconstructions;
legacy LFS PUTs) are not Hub API requests and are left out, and so are downloads through ``/resolve/``
URLs (the Hub's "Resolvers" have a budget of their own): the test Hub's API window counts the same.

Run: ``python scripts/bench_requests.py [--commits N] [--kind repo|bucket|both] [--lfs]`` (``--lfs``:
the legacy LFS path, ``HF_HUB_DISABLE_XET=1``). ``tests/test_requests.py`` drives the same child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from hf_mpwriter.testing.limits import is_api_route  # noqa: E402


def api_requests(after: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> Counter:
    """Hub API requests per route in the test Hub's ``stats`` ``after`` (minus ``before``): the
    requests its API window counts (``hf_mpwriter.testing.limits.is_api_route``)."""
    count = Counter({k: v for k, v in after["requests"].items() if is_api_route(k)})
    if before is not None:
        count.subtract({k: v for k, v in before["requests"].items() if is_api_route(k)})
    return +count


# -- the child: a writer and its uploader, one command at a time -----------------------------------------
def drive(repo_id: str, logdir: Path, shared_branch_s: float | None = None) -> int:
    """Answer commands read from stdin, one JSON line each, until ``quit``:

    ``commit``: log step ``n`` (value ``n``, rank 0), flush it, run one uploader cycle; ``cycle``: one cycle
    (the backoff of a failed commit skipped); ``push``: commit ``checkpoint.txt`` to the repository with
    a client of its own (someone else moves the branch; ``checkpoint <n>`` at the n-th push). The token is
    ``TEST_TOKEN``'s, never an argument. ``shared_branch_s``: the repository target's window after a 412
    (``HubTarget.shared_branch_s``).
    """
    from hf_mpwriter import HFSummaryWriter
    from hf_mpwriter.uploader.loop import Uploader

    token = os.environ["TEST_TOKEN"]
    answers, sys.stdout = sys.stdout, sys.stderr  # stdout carries the answers only, whatever else prints
    steps = pushes = 0
    with HFSummaryWriter(repo_id, logdir=str(logdir), uploader="none", rank=0, token=token) as writer:
        uploader = Uploader(logdir, token=token)
        uploader.acquire()
        if shared_branch_s is not None:
            uploader.target.shared_branch_s = shared_branch_s  # type: ignore[attr-defined]
        try:
            _answer(answers, {"prefix": uploader.target.prefix})
            for line in sys.stdin:
                command = line.strip()
                if command == "quit":
                    break
                if command == "push":
                    from huggingface_hub import HfApi

                    pushes += 1
                    HfApi(token=token).upload_file(path_or_fileobj=f"checkpoint {pushes}\n".encode(),
                                                   path_in_repo="checkpoint.txt", repo_id=repo_id,
                                                   commit_message="someone else's commit")
                    _answer(answers, {})
                    continue
                if command == "commit":
                    writer.add_scalar("loss", float(steps), steps)
                    writer.flush()
                    steps += 1
                uploader.committer.skip_backoff()
                progress = uploader.cycle()
                _answer(answers, {"commits": progress.commits, "error": progress.error, "steps": steps})
        finally:
            uploader.release()
    return 0


def _answer(out: Any, data: dict) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


# -- the parent: drives the child, counts what each command cost ------------------------------------------
class Driven:
    """The child of :func:`drive` for ``repo_id`` (a repository, or ``hf://buckets/...``), and the Hub API
    requests each of its commands made on ``hub`` (the test Hub, in this process). ``env``: the child's
    environment (the test Hub's, ``TEST_TOKEN``, ``HF_HOME``); ``shared_branch_s``: see :func:`drive`."""

    def __init__(self, hub: Any, repo_id: str, logdir: Path, env: Mapping[str, str],
                 shared_branch_s: float | None = None) -> None:
        self.hub = hub
        window = [] if shared_branch_s is None else [str(shared_branch_s)]
        self.proc = subprocess.Popen([sys.executable, __file__, "--drive", repo_id, str(logdir), *window], env=dict(env),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.prefix: str = self._read()["prefix"]

    def commit(self) -> tuple[dict, Counter]:
        """Log one record and run one cycle: ``{"commits", "error", "steps"}`` and its Hub API requests."""
        return self._ask("commit")

    def cycle(self) -> tuple[dict, Counter]:
        """One cycle, nothing new logged (a failed commit retried at once)."""
        return self._ask("cycle")

    def push(self) -> Counter:
        """Someone else commits ``checkpoint.txt`` to the repository: its requests."""
        return self._ask("push")[1]

    def _ask(self, command: str) -> tuple[dict, Counter]:
        before = self.hub.stats
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        return answer, api_requests(self.hub.stats, before)

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"the driven uploader exited ({self.proc.returncode}) before answering")
        return json.loads(line)

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Driven:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def child_env(hub: Any, home: Path, token: str, xet: bool = True) -> dict[str, str]:
    """The child's environment: the test Hub's (endpoint, Xet or not), its own ``HF_HOME``, the token."""
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(hub.env(xet=xet))
    env.update({"HF_HOME": str(home), "TEST_TOKEN": token,
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    return env


def main() -> int:
    if sys.argv[1:2] == ["--drive"]:
        return drive(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else None)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commits", type=int, default=6)
    parser.add_argument("--kind", choices=["repo", "bucket", "both"], default="both")
    parser.add_argument("--lfs", action="store_true", help="the legacy LFS path (HF_HUB_DISABLE_XET=1)")
    args = parser.parse_args()
    from importlib.metadata import version

    from hf_mpwriter.compat import BUCKETS_VERSION, hub_version
    from hf_mpwriter.testing import HubServer

    token = "hf_benchRequestsToken0123456789"
    print(f"huggingface_hub {version('huggingface_hub')}, {'LFS' if args.lfs else 'Xet'}")
    with HubServer(tokens={token}) as hub, tempfile.TemporaryDirectory() as tmp:
        env = child_env(hub, Path(tmp) / "hf_home", token, xet=not args.lfs)
        for kind in (["repo", "bucket"] if args.kind == "both" else [args.kind]):
            if kind == "bucket" and hub_version() < BUCKETS_VERSION:
                print(f"bucket: Storage Buckets need huggingface_hub>={'.'.join(map(str, BUCKETS_VERSION))}")
                continue
            repo_id = "tester/requests" if kind == "repo" else "hf://buckets/tester/requests"
            print(f"{kind}: Hub API requests per commit (commit 1: the start, with creation and the model card)")
            try:
                with Driven(hub, repo_id, Path(tmp) / kind, env) as child:
                    for number in range(1, args.commits + 1):
                        answer, count = child.commit()
                        if answer["error"] or answer["commits"] != 1:
                            print(f"  commit {number} did not land: {answer['error']}")
                            break
                        print(f"  commit {number}: {sum(count.values())} {dict(sorted(count.items()))}")
            except RuntimeError as exc:  # the child said why on stderr
                print(f"  {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
