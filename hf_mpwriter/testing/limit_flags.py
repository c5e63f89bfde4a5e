"""The command line's flags for the Hub's limits (:class:`~.limits.HubLimits`) of a standalone test Hub.

``python -m hf_mpwriter.testing.hub_server --hub-free --api-requests 100 ...``: one flag per limit, 0
turning it off. Apart from :mod:`.hub_server`'s ``main`` because they are a table of flags and their
reading, next to nothing else of the server.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .limits import HubLimits


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The :class:`HubLimits` flags (0 turns a limit off); ``--hub-free`` starts from the Hub's free-account rates."""
    group = parser.add_argument_group("the Hub's limits (HubLimits; 0 turns one off)")
    group.add_argument("--hub-free", action="store_true",
                       help="the Hub's free-account rates: 1000 API requests per 300 s, 128 commits per hour per repository")
    group.add_argument("--entries-per-folder", type=int, metavar="N",
                       help="most files and sub-folders in one folder (default: 10000, as the Hub)")
    group.add_argument("--api-requests", type=int, metavar="N",
                       help="Hub API requests per window, for the server's one user (default: no limit)")
    group.add_argument("--window-s", type=float, metavar="SECONDS", help="the API window, in seconds (default: 300)")
    group.add_argument("--commits-per-hour", type=int, metavar="N",
                       help="commits per repository per commit window (default: no limit)")
    group.add_argument("--commit-window-s", type=float, metavar="SECONDS",
                       help="the commit window, in seconds (default: 3600)")
    group.add_argument("--files-per-commit", type=int, metavar="N",
                       help="most file operations in one commit (default: no limit)")


def limits_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> HubLimits:
    """The flags of :func:`add_limit_flags` as a :class:`HubLimits` (a bad value: a usage error, exit 2)."""
    counts = {
        "entries_per_folder": args.entries_per_folder,
        "api_requests_per_window": args.api_requests,
        "commits_per_hour": args.commits_per_hour,
        "files_per_commit": args.files_per_commit,
    }
    changes: dict[str, Any] = {name: value or None for name, value in counts.items() if value is not None}
    for name, seconds in (("window_s", args.window_s), ("commit_window_s", args.commit_window_s)):
        if seconds is not None:
            changes[name] = seconds
    try:
        return dataclasses.replace(HubLimits.hub_free() if args.hub_free else HubLimits(), **changes)
    except ValueError as exc:
        parser.error(str(exc))

