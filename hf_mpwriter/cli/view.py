"""``hf-mpwriter view``: stock TensorBoard on the remote copy of a logdir, read where it is through
huggingface_hub (fsspec's ``hf://``), after checking that the repository or bucket exists."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .. import environment
from ..errors import HFMPWriterError
from ..uploader.jobrun.runfile import RUN_DIR as JOB_RUN_DIR
from .common import CLIError, use_logdir_endpoint, where_text


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


def holds_job_run(url: str) -> bool:
    """Whether ``url`` holds a job run (its Custom Scalars page has charts only then); ``False`` if that
    cannot be told (the banner then leaves the page out, nothing else depends on it)."""
    try:
        if url.startswith("hf://"):
            from huggingface_hub import HfFileSystem

            return bool(HfFileSystem().isdir(f"{url.rstrip('/')}/{JOB_RUN_DIR}"))
        return os.path.isdir(os.path.join(url, JOB_RUN_DIR))
    except Exception:  # the banner's hint is not worth failing `view` for
        return False


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
    command = ["tensorboard", "--logdir", url, "--port", str(args.port)]
    if url.startswith("hf://"):
        command.append("--load_fast=false")  # the Rust loader does not read fsspec URLs
    if args.print:
        print(" ".join(([f"HF_ENDPOINT={endpoint}"] if endpoint else []) + command))
        return 0
    # on PATH, or beside this Python (a virtual environment that is not activated)
    tensorboard = shutil.which("tensorboard") or shutil.which("tensorboard", path=os.path.dirname(sys.executable))
    if tensorboard is None:
        raise CLIError("tensorboard is not installed in this environment: pip install tensorboard", 2)
    page = f"http://localhost:{args.port}/"
    if holds_job_run(url):
        print(f"TensorBoard on {url} (Ctrl-C to stop): {page}; the job run's statistics across ranks (run `job`): "
              f"{page}#custom_scalars", flush=True)
    else:
        print(f"TensorBoard on {url} (Ctrl-C to stop): {page}", flush=True)
    os.execv(tensorboard, [tensorboard, *command[1:]])  # TensorBoard takes this process's place (and signals)
    return 0  # not reached


# -- demo ------------------------------------------------------------------------------------
