"""Sweep the job run's deterministic simulation (``tests/jobsim.py``) over many seeds, per kind of fault.

    python scripts/sweep_jobsim.py --seeds 2000                 # every kind of fault at once
    python scripts/sweep_jobsim.py --seeds 500 --kinds resume late
    python scripts/sweep_jobsim.py --replay 12 --kinds lost-answer leader

Prints each failing seed (it replays exactly with ``--replay``) and a count; exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import jobsim  # noqa: E402  (the tests' harness: one simulation for the suite and the sweep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000, help="seeds 0..N-1")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--kinds", nargs="+", choices=jobsim.KINDS, default=list(jobsim.KINDS))
    parser.add_argument("--replay", type=int, help="run this one seed and print what it did")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    kinds = tuple(args.kinds)
    with tempfile.TemporaryDirectory() as tmp:
        if args.replay is not None:
            result = jobsim.run(args.replay, Path(tmp), kinds=kinds)
            print(result, *result.problems, sep="\n  ")
            return 1 if result.problems else 0
        started = time.monotonic()
        failed = jobsim.sweep(range(args.first, args.first + args.seeds), Path(tmp), kinds=kinds)
    for result in failed:
        print(f"FAIL seed {result.seed}: {'; '.join(result.problems[:3])}")
    print(f"{args.seeds} seeds ({', '.join(kinds)}): {len(failed)} failed, {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
