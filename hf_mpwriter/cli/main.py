"""hf-mpwriter: run the demo, look at a logdir's upload status, drain a backlog.

Every expected failure prints one line (what, why, what to do) and exits non-zero; --debug
shows the traceback too.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence

from .. import __version__, environment
from ..errors import ConfigurationError, HFMPWriterError
from .common import CLIError
from .status_text import cmd_status
from .sync import cmd_sync, held_lines, release_held
from .view import cmd_view, parse_ranks, parse_slowest

logger = logging.getLogger(__name__)


# -- demo ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        workers=args.workers, steps=args.steps, repo_id=args.repo_id, target=args.target, chaos=args.chaos,
        out=args.out, commit_every_s=args.commit_every_s, local_hub=args.local_hub, quiet=args.quiet,
    )


# -- main ------------------------------------------------------------------------------------
class _DefaultOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default said once: appended only where its help does not say it already, and
    only a value worth saying (not ``None``, nor an on/off flag's ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False):
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-mpwriter`` parser: its own options, and one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="hf-mpwriter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="To try a script without the Hub, the test Hub (a Hub-compatible server on this machine; needs "
               "pip install 'hf_mpwriter[testing]'):\n  python -m hf_mpwriter.testing.hub_server --port 8765 "
               "--token hf_test   # prints the export lines that point a shell at it",
    )
    parser.add_argument("--version", action="version", version=f"hf-mpwriter {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_status(sub)
    _add_sync(sub)
    _add_view(sub)
    return parser


def _add_demo(sub: argparse._SubParsersAction) -> None:
    """The ``demo`` command's options."""
    demo = sub.add_parser("demo", help="N worker processes log while the uploader commits; then verify",
                          description="Worker processes log while the uploader commits; then every remote file is "
                                      "checked against the local one, record by record.", formatter_class=_DefaultOnce,
                          allow_abbrev=False)  # --commit-every (minutes in Python) must not pass for --commit-every-s
    demo.add_argument("--workers", type=int, default=4, help="number of worker processes (ranks)")
    demo.add_argument("--steps", type=int, default=200, help="training steps each worker logs")
    where = demo.add_mutually_exclusive_group()
    where.add_argument("--repo-id", help="commit to this Hub repo (needs a token and network)")
    where.add_argument("--target", help="commit to this local directory (default: inside --out)")
    where.add_argument("--local-hub", action="store_true",
                       help="commit through the real huggingface_hub client to the project's own local Hub server")
    demo.add_argument("--chaos", action="store_true", help="SIGKILL and restart a worker and the uploader on the way")
    demo.add_argument("--out", default="hf_mpwriter_demo", help="directory for the demo's logs and target")
    demo.add_argument("--commit-every-s", type=float, default=2.0,
                      help="seconds between commits (HFSummaryWriter's commit_every= is in minutes)")
    demo.add_argument("--quiet", action="store_true",
                      help="no progress bar (none either when stderr is not a terminal); only the result")
    demo.set_defaults(func=cmd_demo)


def _add_status(sub: argparse._SubParsersAction) -> None:
    """The ``status`` command's options."""
    status = sub.add_parser("status", help="per file: bytes written and committed; jobs, uploader, audit, errors",
                            description="What a logdir's upload looks like now (reads only). Its target is on the "
                                        "Hub the logdir records (the HF_ENDPOINT its writers had), whatever the "
                                        "shell's HF_ENDPOINT. A directory that holds logdirs (e.g. a Lightning "
                                        "save_dir) lists them, each with its target.", formatter_class=_DefaultOnce)
    status.add_argument("logdir", help="the logdir given to the writers (or a directory that holds logdirs)")
    status.add_argument("--json", action="store_true", help="stable JSON output")
    status.add_argument("--tag", help="a scalar tag of the job run (e.g. a step time): the ranks most often its "
                                      "max and its min (the stragglers)")
    status.set_defaults(func=cmd_status)


def _add_sync(sub: argparse._SubParsersAction) -> None:
    """The ``sync`` command's options."""
    sync = sub.add_parser("sync", help="commit a logdir's backlog now (exit 0 only when all is committed)",
                          description="Commit a logdir's backlog now, taking over from a running uploader "
                                      "(exit 0 only when everything is committed). The logs go to the Hub the logdir "
                                      "records (the HF_ENDPOINT its writers had), whatever the shell's HF_ENDPOINT "
                                      "(a line on stderr says so when they differ).", formatter_class=_DefaultOnce)
    sync.add_argument("logdir", help="the logdir given to the writers")
    where = sync.add_mutually_exclusive_group()
    where.add_argument("--repo-id", help="Hub repo (or hf://buckets/NS/NAME[/PATH]) to commit to (needed if the "
                                         "logdir has no target yet; then the shell's HF_ENDPOINT is its Hub, "
                                         "recorded). A logdir sends to one repo on one Hub: naming its own repo "
                                         "keeps its recorded Hub even if HF_ENDPOINT names another; another repo is "
                                         "refused. To send it to another Hub: delete LOGDIR/.hf_mpwriter/config.json, "
                                         "then sync --repo-id with HF_ENDPOINT set to that Hub (all is sent again)")
    where.add_argument("--target", help="local directory to commit to")
    sync.add_argument("--repo-type", default=None, choices=["model", "dataset", "space", "bucket"],
                      help="type of --repo-id (default: model; hf://buckets/NS/NAME[/PATH] is a bucket)")
    sync.add_argument("--revision", default=None, help="branch of --repo-id (default: main)")
    sync.add_argument("--path-in-repo", default="tensorboard", help="folder in the repo (or --target) for the logs")
    sync.add_argument("--watch", action="store_true", help="keep running as this node's uploader")
    sync.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    sync.add_argument("--quiet", action="store_true",
                      help="no progress bars, ours or the client's (none either when stderr is not a terminal)")
    sync.set_defaults(func=cmd_sync)


def _add_view(sub: argparse._SubParsersAction) -> None:
    """The ``view`` command's options."""
    view = sub.add_parser("view", help="TensorBoard on the remote copy (repo or bucket), nothing downloaded first",
                          description="Start TensorBoard on the remote copy of a logdir (its repo or bucket, on the "
                                      "Hub the logdir records), or on a repo id or hf:// URL (on the shell's "
                                      "HF_ENDPOINT), read where it is through huggingface_hub. The repo or bucket "
                                      "must exist and be readable with your token (checked first, --print too).",
                          formatter_class=_DefaultOnce)
    view.add_argument("target", help="a logdir (its remote copy), a repo id, or an hf:// URL "
                                     "(hf://me/repo/tensorboard, hf://datasets/..., hf://buckets/me/name/...)")
    view.add_argument("--port", type=int, default=6006, help="TensorBoard's port")
    view.add_argument("--print", action="store_true", help="print the TensorBoard command instead of running it")
    view.add_argument("--ranks", type=parse_ranks, default=(), metavar="RANKS",
                      help="rank runs to open beside the job run: 0,3,7 or 0-15 (or both: 0-3,64), or 'all' for every "
                           "run of the folder (default: where the target holds a job run, job/, that run alone, since "
                           "TensorBoard lists each run it opens on the Hub and slows past a few hundred runs; else every run)")
    view.add_argument("--slowest", type=parse_slowest, default=0, metavar="K",
                      help="also open the K ranks the job run names behind most often: at how many steps each was "
                           "the last rank to log it (1 s or more after the first) or missed a tag of it (read from "
                           "the job run alone, a few Hub requests; default: none)")
    view.set_defaults(func=cmd_view)


def _setup_logging(debug: bool) -> None:
    """Our warnings on stderr, redacted; huggingface_hub keeps its own handler (adding ours to the root
    logger as well would print each of its warnings twice)."""
    from ..redaction import RedactingFilter

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(held_lines)
    package = logging.getLogger("hf_mpwriter")
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if debug else logging.WARNING)
    package.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug)
    try:
        _check_environment()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; nothing is lost: `hf-mpwriter sync LOGDIR` resumes", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not _stdout_closed():
            return _error(args, exc)
        # `hf-mpwriter status LOGDIR | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except (HFMPWriterError, OSError) as exc:
        return _error(args, exc)
    finally:
        release_held()  # whatever ended the command, the uploader's held lines are not lost


def _check_environment() -> None:
    """A bad ``HF_MPWRITER_*`` setting is said first, whatever the command, as a usage error (exit 2)."""
    try:
        environment.read()
    except ConfigurationError as exc:
        raise CLIError(str(exc), 2) from None


def _error(args: argparse.Namespace, exc: Exception) -> int:
    """One line on stderr, the error's exit code (a traceback with ``--debug``)."""
    if args.debug:
        raise exc
    print(f"hf-mpwriter: error: {exc}", file=sys.stderr)
    return int(getattr(exc, "code", 1))


def _stdout_closed() -> bool:
    """Whether the broken pipe is stdout's (its reader went away), not one of the work's own."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # a pipe whose reader is gone reports POLLERR
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows) or no stdout: assume it
        return True


if __name__ == "__main__":
    sys.exit(main())
