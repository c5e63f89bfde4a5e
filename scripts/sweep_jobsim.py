"""Sweep a deterministic simulation of the job's protocol over many seeds, per kind of fault: the job run
(``tests/jobsim.py``), the lease (``tests/leasesim.py``) or the commits (``tests/commitsim.py``).

    python scripts/sweep_jobsim.py --seeds 2000                 # the job run, every kind of fault at once
    python scripts/sweep_jobsim.py --seeds 500 --kinds resume late
    python scripts/sweep_jobsim.py --replay 12 --kinds lost-answer leader
    python scripts/sweep_jobsim.py --model lease --seeds 100000 --processes 2
    python scripts/sweep_jobsim.py --model commit --seeds 1000 --kinds kill hub-hang
    python scripts/sweep_jobsim.py --model commit --seeds 500 --successors     # node 1 serves a successor store

Prints each failing seed (it replays exactly with ``--replay``) and a count; exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import commitsim  # noqa: E402  (the tests' harnesses: one simulation for the suite and the sweep)
import jobsim  # noqa: E402
import leasesim  # noqa: E402

MODELS = {"jobrun": jobsim, "lease": leasesim, "commit": commitsim}


def _run(model: str, seed: int, kinds: tuple[str, ...], tmp: str, successors: bool = False):
    """One seed's result; a seed that raised is a failure of its own (the sweep goes on)."""
    try:
        return _run_one(model, seed, kinds, tmp, successors)
    except Exception as exc:  # (the harness's own checks raise too: "kept the turn for 60 s")
        return types.SimpleNamespace(seed=seed, problems=[f"raised {exc!r}"])


def _run_one(model: str, seed: int, kinds: tuple[str, ...], tmp: str, successors: bool):
    logging.disable(logging.WARNING)
    if model == "commit":
        return commitsim.run(seed, kinds, successors=successors)
    if model == "lease":
        return leasesim.run(seed, kinds)
    result = jobsim.run(seed, Path(tmp), kinds=kinds)
    shutil.rmtree(Path(tmp, f"seed-{seed}"), ignore_errors=True)
    return result


def _sweep(model: str, seeds: range, kinds: tuple[str, ...], processes: int, tmp: str, successors: bool) -> list:
    """The seeds' results that broke an invariant, the seeds spread over ``processes``."""
    with ProcessPoolExecutor(processes) as pool:
        chunk = max(1, len(seeds) // (processes * 20))
        results = pool.map(_run, [model] * len(seeds), seeds, [kinds] * len(seeds),
                           [f"{tmp}/{seed % processes}" for seed in seeds], [successors] * len(seeds), chunksize=chunk)
        return [result for result in results if result.problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="jobrun")
    parser.add_argument("--seeds", type=int, default=1000, help="seeds FIRST..FIRST+N-1")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--kinds", nargs="+", help="the kinds of fault (default: every kind of the model's)")
    parser.add_argument("--processes", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument("--replay", type=int, help="run this one seed and print what it did")
    parser.add_argument("--successors", action="store_true", help="commit model: node 1 serves a successor store")
    args = parser.parse_args(argv)
    if args.successors and args.model != "commit":
        parser.error("--successors is the commit model's (--model commit)")
    model = MODELS[args.model]
    kinds = tuple(args.kinds or model.KINDS)
    known = (*model.KINDS, *getattr(model, "EXTRA_KINDS", ()))
    unknown = sorted(set(kinds) - set(known))
    if unknown:
        parser.error(f"{args.model} has no fault kind {unknown}; its kinds: {' '.join(known)}")
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.processes):
            Path(tmp, str(k)).mkdir()
        if args.replay is not None:
            result = _run(args.model, args.replay, kinds, f"{tmp}/0", args.successors)
            print(result, *result.problems, sep="\n  ")
            return 1 if result.problems else 0
        started = time.monotonic()
        failed = _sweep(args.model, range(args.first, args.first + args.seeds), kinds, args.processes, tmp,
                        args.successors)
    for result in failed:
        print(f"FAIL seed {result.seed}: {'; '.join(result.problems[:3])}")
    print(f"{args.model}{' with successor stores' if args.successors else ''}: {args.seeds} seeds from {args.first} "
          f"({', '.join(kinds)}): {len(failed)} failed, "
          f"{time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
