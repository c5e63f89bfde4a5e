"""``hf-mpwriter view``: stock TensorBoard on the remote copy of a logdir, read where it is through
huggingface_hub (fsspec's ``hf://``), after checking that the repository or bucket exists.

Where the copy holds a job run (``job/``, each scalar's statistics across the ranks), TensorBoard opens
that run alone unless asked for ranks (``--ranks``, ``--slowest``): a job of 8,192 rank runs read through
``hf://`` costs TensorBoard a listing per run (each a Hub API request, 1,000 per 5 minutes for a free
account) and slows it past a few hundred runs, while the job run alone shows its first chart in seconds.
A subset of runs is TensorBoard's ``--logdir_spec name:path,...`` (its Python loader), one named run per
folder; ``--ranks all`` is the whole folder, as without a job run.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .. import environment
from ..errors import HFMPWriterError
from ..state.run_dirs import in_block
from ..uploader.jobrun.runfile import GROUP as JOB_GROUP
from ..uploader.jobrun.runfile import RUN_DIR as JOB_RUN_DIR
from .common import CLIError, use_logdir_endpoint, where_text

logger = logging.getLogger(__name__)

#: ``--ranks`` value for every run of the folder (TensorBoard on the whole logdir).
ALL_RANKS = "all"
#: Texts of the job run that name ranks behind at a step: its last rank (where 1 s or more after the first,
#: ``~job/slowest_rank``) and the ranks that did not log a tag at that step (``~job/<tag>/missing_ranks``).
_BEHIND_TAG = re.compile(rf"^{re.escape(JOB_GROUP)}/(slowest_rank|.+/missing_ranks)/text_summary$")


def remote_url(where: str) -> tuple[str, str | None]:
    """What TensorBoard should read for ``where`` (a logdir's remote copy, a repo id or an ``hf://``
    URL), and the logdir's Hub when it replaced the shell's ``HF_ENDPOINT`` (see
    :func:`use_logdir_endpoint`). A directory that holds logdirs lists them on stderr and fails: the
    user picks one.

    TensorBoard reads ``hf://`` URLs through fsspec and ``huggingface_hub.HfFileSystem`` (with its
    Python loader, ``--load_fast=false``): the remote copy is viewed where it is, nothing is
    downloaded first. A logdir's copy is on the Hub the logdir records, whatever the shell says.
    """
    from .. import config as config_mod
    from ..targets import target_for
    from .status import HoldsLogdirs, check_used_logdir, collect

    if where.startswith("hf://") or "://" in where:
        return where, None
    logdir = Path(where)
    if logdir.is_dir():
        try:
            check_used_logdir(logdir)
        except HoldsLogdirs as found:
            for inside in found.logdirs:  # which to pick: each with its target, above the one error line
                print(f"  {inside}  {where_text(collect(inside)['target'])}", file=sys.stderr)
            raise CLIError(f"{where!r} is not a logdir but holds {len(found.logdirs)} (listed above, each with its "
                           f"target); pass one of them, e.g. `hf-mpwriter view {found.logdirs[0]}`", 2) from None
        except HFMPWriterError:
            pass  # a plain TensorBoard logdir: said below
        config = config_mod.load(logdir)
        if config is None:
            raise CLIError(f"{where!r} has no upload target: view it locally with `tensorboard --logdir {where}`", 2)
        if config.repo_id is not None:  # "name" alone: the full id, once the uploader has resolved it
            config.repo_id = config_mod.resolved_repo_id(logdir) or config.repo_id
        switched = use_logdir_endpoint(config)
        return target_for(config).reader_url, switched
    return f"hf://{where.strip('/')}", None


def check_remote_exists(url: str, logdir: str | None) -> None:
    """Fail, saying what is missing where and what to do, unless the repository (and branch) or bucket
    ``url`` names exists on this process's Hub (the logdir's: :func:`use_logdir_endpoint`) and the
    token may read it: TensorBoard would serve an empty page instead, and keep polling it.

    Asked through ``HfFileSystem.resolve_path``, which TensorBoard's reads go through too."""
    from huggingface_hub import HfFileSystem, get_token

    from ..config import current_endpoint
    from ..redaction import redact
    from ..targets.hub_client import configure_process_client, is_network_error

    configure_process_client(environment.read().http_timeout)  # this process is ours: its calls get timeouts
    hub = current_endpoint()
    try:
        HfFileSystem(endpoint=hub).resolve_path(url)
        return
    except FileNotFoundError as exc:  # the client's "missing": its cause says what is
        cause = type(exc.__cause__).__name__
        what = {"RevisionNotFoundError": "the branch (revision) it names does not exist",
                "BucketNotFoundError": "no such bucket"}.get(cause, "no such repository")
        token = "your token cannot see it" if get_token() else "no token is set: set HF_TOKEN or run `hf auth login`"
        fix = (f"its uploader creates it at its first commit: `hf-mpwriter status {logdir}` shows whether anything "
               f"was committed and any error, `hf-mpwriter sync {logdir}` commits now" if logdir else
               "check the id (hf://datasets/NS/NAME for a dataset, hf://buckets/NS/NAME for a bucket) and HF_ENDPOINT")
        message = f"nothing to view at {url} on {hub}: {what} (or it is private and {token}); {fix}"
    except ValueError as exc:  # an id the client cannot resolve
        message = f"cannot view {url} on {hub}: {exc}"
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, get_token())
        if status in (401, 403):
            message = (f"the Hub at {hub} refused the token (HTTP {status}) for {url}: set HF_TOKEN to a token "
                       f"that can read it, or run `hf auth login`")
        elif status is not None:
            message = f"the Hub at {hub} answered HTTP {status} for {url}: {detail}"
        elif is_network_error(exc):
            message = f"cannot reach the Hub at {hub} to open {url} ({type(exc).__name__}: {detail}); check the network"
        else:
            raise
    raise CLIError(message, 1)


def parse_ranks(text: str) -> tuple[int, ...] | None:
    """``--ranks``: ``all`` (``None``: the whole folder), or ranks and inclusive ranges, comma-separated
    (``0,3,7``, ``0-15``, ``0-3,64``), in order, each once. Not given: ``()``."""
    if text.strip().lower() == ALL_RANKS:
        return None
    ranks: dict[int, None] = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a rank or a range (e.g. 0,3,7 or 0-15 or all)")
        ranks.update(dict.fromkeys(range(int(match[1]), int(match[2] or match[1]) + 1)))
    return tuple(ranks)


def parse_slowest(text: str) -> int:
    """``--slowest``: a count of ranks, 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of ranks (1 or more)")
    return int(text)


def _join(url: str, relative: str) -> str:
    """``relative`` under ``url`` (an ``hf://`` URL or a local path)."""
    return f"{url.rstrip('/')}/{relative}" if "://" in url else os.path.join(url, relative)


def rank_run(rank: int) -> str:
    """Where rank ``rank``'s run lies in a logdir (``rank-003``, ``ranks-9000-17999/rank-12345``): the
    writer's own layout (:func:`~hf_mpwriter.state.run_dirs.in_block`)."""
    return in_block(rank, f"rank-{rank:03d}", "ranks")


def job_run_files(url: str) -> list[str] | None:
    """The event files of ``url``'s job run (``None``: it holds none). One listing of the ``job`` folder (a
    Hub API request), not of the logdir: ``isdir`` on the Hub lists the parent, every rank run's folder."""
    path = _join(url, JOB_RUN_DIR)
    if "://" in url:
        from huggingface_hub import HfFileSystem

        try:
            names = HfFileSystem().ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        files = sorted(str(name) for name in names if "tfevents" in str(name).rsplit("/", 1)[-1])
        return [f"hf://{name}" for name in files] or None
    if not os.path.isdir(path):
        return None
    return sorted(os.path.join(path, name) for name in os.listdir(path) if "tfevents" in name)  # (on the Hub, no empty folder)


def holds_job_run(url: str) -> bool:
    """Whether ``url`` holds a job run (its Custom Scalars page has charts only then); ``False`` if that
    cannot be told (``view`` then does what it does without one: the whole folder)."""
    try:
        return job_run_files(url) is not None
    except Exception:  # a hint and a default are not worth failing `view` for
        logger.debug("cannot tell whether %s holds a job run", url, exc_info=True)
        return False


def _event_records(path: str) -> Iterable[bytes]:
    """The whole records of one event file, local or ``hf://``."""
    from ..events.records import iter_records

    if "://" in path:
        from huggingface_hub import HfFileSystem

        with HfFileSystem().open(path.removeprefix("hf://"), "rb") as stream:
            yield from (record for _, record in iter_records(stream))
        return
    with open(path, "rb") as stream:
        yield from (record for _, record in iter_records(stream))


def ranks_behind(files: Iterable[str]) -> Counter[int]:
    """How many steps the job run names each rank behind at: the step's last rank (``~job/slowest_rank``) or
    one that did not log a tag of the step (``~job/<tag>/missing_ranks``). Read from the job run alone: a few
    requests, where the ranks' own runs would cost one listing each."""
    from tensorboardX.proto.event_pb2 import Event

    named: set[tuple[int, int]] = set()
    for path in files:
        for record in _event_records(path):
            event = Event.FromString(record)
            for value in event.summary.value:
                match = _BEHIND_TAG.match(value.tag)
                if match is not None:
                    for text in value.tensor.string_val:
                        named.update((event.step, rank) for rank in _named(match[1], text.decode("utf-8", "replace")))
    return Counter(rank for _, rank in named)


def _named(kind: str, text: str) -> list[int]:
    """The ranks a text of the job run names: ``rank 5, 2.0 s after the first rank`` (the slowest) or
    ``missing: rank 1, 2, 3``."""
    if kind == "slowest_rank":
        match = re.match(r"rank (\d+)\b", text)
        return [int(match[1])] if match else []
    return [int(rank) for rank in re.findall(r"\d+", text.partition(":")[2])]


def slowest_ranks(files: Iterable[str], k: int) -> list[int]:
    """The ``k`` ranks :func:`ranks_behind` counts most (ties: the lower rank), fewer if fewer are named."""
    counts = ranks_behind(files)
    return sorted(counts, key=lambda rank: (-counts[rank], rank))[:k]


def chosen_runs(url: str, ranks: tuple[int, ...], slowest: int, job_files: list[str] | None) -> list[tuple[str, str]]:
    """``(name, path)`` of the runs TensorBoard opens: the job run (where there is one) and the ranks asked
    for, by number and as the ``slowest`` ranks the job run names behind."""
    if slowest and job_files is None:
        raise CLIError(f"--slowest reads the job run, and {url} holds none ({JOB_RUN_DIR}/): pick ranks with --ranks", 2)
    picked = list(ranks) + [r for r in (slowest_ranks(job_files or [], slowest) if slowest else []) if r not in ranks]
    runs = [(rank_run(r).rsplit("/", 1)[-1], _join(url, rank_run(r))) for r in picked]
    return ([(JOB_RUN_DIR, _join(url, JOB_RUN_DIR))] if job_files is not None else []) + runs


def _job_run_files_or_none(url: str, slowest: int) -> list[str] | None:
    """:func:`job_run_files`, ``None`` where the listing fails (``view`` then opens the whole folder), except
    for ``--slowest``, which cannot do without it."""
    try:
        return job_run_files(url)
    except Exception as exc:
        logger.debug("cannot list the job run of %s", url, exc_info=True)
        if slowest:
            raise CLIError(f"cannot read the job run of {url} for --slowest: {exc}", 1) from None
        return None


def tensorboard_command(url: str, runs: list[tuple[str, str]] | None, port: int) -> list[str]:
    """TensorBoard's command line: ``--logdir`` for the whole folder, ``--logdir_spec`` for chosen runs
    (its Python loader, which also reads ``hf://``: the Rust one does not)."""
    if runs is None:
        command = ["tensorboard", "--logdir", url]
    else:
        if any("," in path or "," in name for name, path in runs):  # the spec's separator
            raise CLIError(f"{url} has a comma in its path: TensorBoard cannot open chosen runs there; pass --ranks all", 2)
        command = ["tensorboard", "--logdir_spec", ",".join(f"{name}:{path}" for name, path in runs)]
    command += ["--port", str(port)]
    if url.startswith("hf://"):
        command.append("--load_fast=false")  # the Rust loader does not read fsspec URLs
    return command


def _hint(runs: list[tuple[str, str]] | None, job_files: list[str] | None, target: str) -> str | None:
    """What to add, where the job run is opened alone."""
    if runs is None or job_files is None or len(runs) > 1:
        return None
    return (f"the job run alone (each tag's statistics across ranks); add ranks with e.g. `hf-mpwriter view {target} "
            f"--ranks 0,3,7`, `--ranks 0-15`, `--slowest 8` (the ranks the job run names behind most often), "
            f"or `--ranks all` (every run: slow on thousands)")


def cmd_view(args: argparse.Namespace) -> int:
    url, endpoint = remote_url(args.target)
    if url.startswith("hf://buckets/"):
        from ..compat import BUCKET_FS_VERSION, require_hub_version
        from ..errors import ConfigurationError

        try:
            require_hub_version(BUCKET_FS_VERSION, "Viewing a Storage Bucket (hf://buckets/ in HfFileSystem)")
        except ConfigurationError as exc:
            raise CLIError(str(exc), 2) from None
    if url.startswith("hf://"):
        given_logdir = "://" not in args.target and Path(args.target).is_dir()
        check_remote_exists(url, args.target if given_logdir else None)
    job_files = None if args.ranks is None else _job_run_files_or_none(url, args.slowest)
    runs = None  # the whole folder: --ranks all, or no job run and no rank asked for (as ever)
    if args.ranks is not None and (args.ranks or args.slowest or job_files is not None):
        runs = chosen_runs(url, args.ranks, args.slowest, job_files)
    command = tensorboard_command(url, runs, args.port)
    hint = _hint(runs, job_files, args.target)
    if args.print:
        if hint:
            print(hint, file=sys.stderr)
        print(" ".join(([f"HF_ENDPOINT={endpoint}"] if endpoint else []) + command))
        return 0
    # on PATH, or beside this Python (a virtual environment that is not activated)
    tensorboard = shutil.which("tensorboard") or shutil.which("tensorboard", path=os.path.dirname(sys.executable))
    if tensorboard is None:
        raise CLIError("tensorboard is not installed in this environment: pip install tensorboard", 2)
    page = f"http://localhost:{args.port}/"
    opened = "every run" if runs is None else ", ".join(name for name, _ in runs)
    if job_files is not None or (args.ranks is None and holds_job_run(url)):
        print(f"TensorBoard on {url} ({opened}; Ctrl-C to stop): {page}; the job run's statistics across ranks "
              f"(run `job`): {page}#custom_scalars", flush=True)
    else:
        print(f"TensorBoard on {url} ({opened}; Ctrl-C to stop): {page}", flush=True)
    if hint:
        print(hint, flush=True)
    os.execv(tensorboard, [tensorboard, *command[1:]])  # TensorBoard takes this process's place (and signals)
    return 0  # not reached


# -- demo ------------------------------------------------------------------------------------
