"""``HFSummaryWriter``: the drop-in for ``huggingface_hub.HFSummaryWriter``, safe in every process.

Same constructor arguments (plus ``rank``, and ``target_dir`` / ``uploader`` / ``close_timeout``
keywords). Each process writes its own event files with :class:`~hf_mpwriter.writer.summary_writer.SummaryWriter`
and registers itself; the node's uploader (:mod:`hf_mpwriter.uploader`) commits them. The training
process never hashes and never does HTTP (unless ``uploader="thread"``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import environment
from ..compat import keep_signals_for_the_main_thread
from ..config import UploadConfig, check_same_target, resolved_repo_id, token_found, writer_settings
from ..errors import ConfigurationError
from ..state import mailbox, registry, statedir
from ..state.liveness import touch
from ..state.queue_readers import read_committed
from ..timing import DEFAULT_CLOSE_TIMEOUT_S, HEARTBEAT_S, HUNG_AFTER_S, JOB_VIEW_LAST_WAIT_S, START_WAIT_S
from ..upload_args import matches
from . import close_report, file_limit, ranks, supervisor, termination, waiting
from .args import check_keywords, check_logdir, check_writer_args, default_logdir
from .reporting import ProblemReporter
from .summary_writer import SummaryWriter

logger = logging.getLogger(__name__)

#: ``close()`` says what it waits for once it has waited this long (s): never a long wait in silence.
SAY_WAIT_AFTER_S = 5.0


#: SummaryWriter arguments checked (with no file system change) before anything is created.
_WRITER_CHECKED = ("purge_step", "max_queue", "flush_secs", "filename_suffix", "rotate_bytes")
#: HFSummaryWriter's own keyword arguments (the rest go to SummaryWriter): for "did you mean".
_OWN_ARGS = (
    "repo_id", "logdir", "commit_every", "squash_history", "repo_type", "repo_revision", "repo_private",
    "path_in_repo", "repo_allow_patterns", "repo_ignore_patterns", "token", "rank", "target_dir", "uploader",
    "close_timeout", "preemption_deadline", "system_metrics",
)


def _detect_nodes() -> tuple[int, int]:
    """This node's rank and the job's number of nodes, from the launcher's environment; a
    :class:`ConfigurationError` where it contradicts itself."""
    try:
        return ranks.detect_nodes()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


class _Scheduler:
    """``writer.scheduler.trigger()`` as with ``huggingface_hub.HFSummaryWriter``: commit now."""

    def __init__(self, writer: HFSummaryWriter) -> None:
        self._writer = writer

    def trigger(self) -> concurrent.futures.Future[bool]:
        """Ask the uploader to commit now; the future resolves once what was logged so far is committed."""
        self._writer.flush()
        sizes = self._writer._file_sizes()
        mailbox.trigger(self._writer._root)
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def wait() -> None:
            keep_signals_for_the_main_thread()
            future.set_result(self._writer._wait_committed(sizes, self._writer.close_timeout))

        threading.Thread(target=wait, daemon=True).start()
        return future


class HFSummaryWriter(SummaryWriter):
    """Logs TensorBoard events in every process and has them committed to the Hub, without loss.

    Args (as ``huggingface_hub.HFSummaryWriter``):
        repo_id: the repo to push to; ``None`` keeps the logs local (or sends them to ``target_dir``).
        logdir: local directory of the logs. Default: in a launched job, ``runs/<launcher>-<job id>``,
            the same in every process and node; else ``runs/<Mon>DD_HH-MM-SS_<host>``
            (:func:`hf_mpwriter.writer.args.default_logdir`).
        commit_every: minutes between commits (default 5; 10 s for a bucket). One commit per interval
            per node, whatever the number of processes (the nodes of a job share a repository's budget).
        repo_id: also ``"hf://buckets/ns/name[/path]"`` (or ``repo_type="bucket"``): a Storage Bucket.
        squash_history, repo_type, repo_revision, repo_private, path_in_repo, repo_allow_patterns,
        repo_ignore_patterns, token: as in ``huggingface_hub``. The token goes to the uploader
            through its environment, never to disk, a command line or a log.
        rank: this process's global rank (default: from the launcher's environment).
        target_dir: with ``repo_id=None``, commit to this local directory instead of the Hub.
        uploader: ``"process"`` (default), ``"thread"`` or ``"none"``; see :mod:`hf_mpwriter.state.election`.
        close_timeout: seconds ``close()`` waits for this process's logs to be committed.
        preemption_deadline: seconds after SIGTERM by which the uploader's last commit must be done
            (default 20, or ``HF_MPWRITER_PREEMPTION_DEADLINE``): a few seconds less than the grace
            period between SIGTERM and SIGKILL of the cluster (30 s for SLURM, Kubernetes, torchrun).
        system_metrics: ``True`` (every 10 s) or a period in seconds: the node's uploader also logs
            the node's CPU, memory, disk, network and GPUs into ``<logdir>/system/<host>``
            (:mod:`hf_mpwriter.uploader.system_metrics`). Nothing runs in the training process.
        kwargs: passed to :class:`~hf_mpwriter.writer.summary_writer.SummaryWriter`.

    Example:
        >>> from hf_mpwriter import HFSummaryWriter
        >>> with HFSummaryWriter(repo_id="me/my-run", commit_every=1) as logger:  # doctest: +SKIP
        ...     logger.add_scalar("loss", 0.1, 1)
    """

    def __init__(
        self,
        repo_id: str | None = None,
        *,
        logdir: str | os.PathLike | None = None,
        commit_every: int | float | None = None,
        squash_history: bool = False,
        repo_type: str | None = None,
        repo_revision: str | None = None,
        repo_private: bool | None = None,
        path_in_repo: str | None = "tensorboard",
        repo_allow_patterns: list | str | None = "*.tfevents.*",
        repo_ignore_patterns: list | str | None = None,
        token: str | None = None,
        rank: int | None = None,
        target_dir: str | os.PathLike | None = None,
        uploader: str = "process",
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
        preemption_deadline: float | None = None,
        system_metrics: bool | float = False,
        **kwargs: Any,
    ) -> None:
        self._env = environment.read()  # HF_MPWRITER_*, checked once, before anything is created
        check_keywords("HFSummaryWriter", kwargs, SummaryWriter.__init__, extra=_OWN_ARGS)
        supervisor.check_mode(uploader)
        logdir = logdir or kwargs.pop("log_dir", None) or default_logdir(kwargs.get("comment") or "")
        # Every setting is checked before anything is created: a rejected call leaves no trace.
        rank_info = check_writer_args(
            logdir, rank=rank, **{k: kwargs[k] for k in _WRITER_CHECKED if k in kwargs},
        )
        node_rank, nodes = _detect_nodes()
        self._upload: UploadConfig | None = writer_settings(
            Path(logdir).expanduser(), repo_id, target_dir=target_dir, commit_every=commit_every,
            squash_history=squash_history, repo_type=repo_type, repo_revision=repo_revision,
            repo_private=repo_private, path_in_repo=path_in_repo, repo_allow_patterns=repo_allow_patterns,
            repo_ignore_patterns=repo_ignore_patterns, nodes=nodes, node_rank=node_rank,
            world_size=rank_info.world_size if rank_info.world_known else 0,
            preemption_deadline=preemption_deadline, system_metrics=system_metrics, env=self._env,
            launcher=environment.launcher(),
        )
        if self._upload is not None:  # a logdir that uploads elsewhere is refused before anything is created
            check_same_target(Path(logdir).expanduser(), self._upload)
        root = check_logdir(logdir)
        self._given_repo_id = repo_id
        self.repo_type = repo_type or "model"
        self.repo_revision = repo_revision or "main"
        self.close_timeout = float(close_timeout)
        self._mode = uploader
        self._token = token
        self._settings_saved = self._upload is None or self._save_settings(root, first=True)
        self._event_writers: list = []
        self._registration: Path | None = None
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._problems = ProblemReporter(root)
        super().__init__(logdir=logdir, rank=rank, **kwargs)
        self.scheduler = _Scheduler(self)
        if self._upload is not None:
            self._start_uploading(self._upload)

    def _start_uploading(self, upload: UploadConfig) -> None:
        """Once the writer exists: warn what needs warning, handle SIGTERM, register, start the uploader
        and the heartbeat that keeps one alive."""
        file_limit.warn_at_start(upload, self.rank_info, self._rotate_bytes)  # rank 0 of a big job
        self._warn_if_no_token()
        # On SIGTERM (after the flush): the uploader commits at once, within the grace period.
        termination.on_term(self._root, self._on_sigterm, install=self._env.handle_sigterm)
        self._register(first=True)
        if self._settings_saved:
            # Before returning: a process that fails right after creating its writer must still
            # leave an uploader behind (it outlives the process and commits what was flushed).
            supervisor.ensure_uploader(self._root, self._mode, self._token, wait=START_WAIT_S)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="hf_mpwriter-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _warn_if_no_token(self) -> None:
        """A Hub repository or bucket with no token anywhere: said now, not after ``close_timeout``.

        Not refused: logging goes on to disk and nothing is lost, and a token can still come (``hf auth
        login`` in another shell, read by the running uploader at its next try; or ``hf-mpwriter sync`` with
        HF_TOKEN set). Without network the Hub's refusal would never be seen at all."""
        assert self._upload is not None
        if self._upload.kind not in ("hub", "bucket") or token_found(self._token):
            return
        logger.warning(
            "no Hugging Face token found for %s: pass token=..., set HF_TOKEN, or run `hf auth login` (a token with "
            "write access). Until then logs are written to %s and kept queued; `hf-mpwriter sync %s` uploads them "
            "once a token is set", self._upload.description, self._root, self._root,
        )

    @property
    def repo_id(self) -> str | None:
        """The repository, as ``huggingface_hub.HFSummaryWriter.repo_id``: with its namespace.

        ``repo_id="name"`` is created by the Hub in the token's namespace; the uploader (the only
        process that talks to the Hub) records the full id once it has created the repository.
        Until then, this is the id as given.
        """
        given = self._given_repo_id
        if given is None or "/" in given:
            return given
        return resolved_repo_id(self._root) or given

    def _save_settings(self, root: Path, first: bool = False) -> bool:
        """Record the upload settings for the uploader; on a full disk, keep them in memory.

        Training must not crash because the disk is full: the settings are saved by the heartbeat as
        soon as space returns (uploads start then); any other error says what to fix.
        """
        assert self._upload is not None
        upload = self._upload

        def save() -> None:
            statedir.secure_state_dir(root)
            upload.save(root)

        saved = self._write_state(root, "the upload settings", save)
        if not saved and first:
            logger.error(
                "the disk of %s is full: the upload settings are kept in memory and saved as soon as space "
                "returns; logging goes on (records wait in memory) and uploads start then", root,
            )
        return saved

    def _register(self, first: bool = False) -> None:
        """Register this process as a writer of the logdir (retried by the heartbeat if the disk is full)."""

        def register() -> None:
            self._registration = registry.register_writer(self._root, self.run_dir)

        if not self._write_state(self._root, "this writer's registration", register) and first:
            logger.warning("cannot register this writer yet (disk full); retrying every %.0f s", HEARTBEAT_S)

    @staticmethod
    def _write_state(root: Path, what: str, write: Callable[[], None]) -> bool:
        """``write()`` a small file of ``.hf_mpwriter/``: ``False`` if the disk is full (the heartbeat
        tries again), a :class:`ConfigurationError` that says what to fix for any other error."""
        try:
            write()
        except OSError as exc:
            if not statedir.is_disk_full(exc):
                raise ConfigurationError(
                    f"cannot write {what} in {statedir.state_dir(root, create=False)}: {exc.strerror or exc}; "
                    f"make the logdir writable or choose another one"
                ) from None
            return False
        return True

    def _on_sigterm(self, dying: bool) -> None:
        """Ask for a commit now. With the uploader in a thread of this process (``uploader="thread"``)
        and the process about to end, wait for it (up to ``preemption_deadline``): it dies with us."""
        mailbox.trigger(self._root)
        if dying and self._mode == "thread" and self._upload is not None:
            if supervisor.terminate_thread_uploader(self._root):
                self._wait_committed(self._file_sizes(), self._upload.preemption_deadline)

    # -- keeping an uploader alive -----------------------------------------------------------
    def _heartbeat(self) -> None:
        """Fail-over: start an uploader whenever none is alive (a flock + a psutil check, no I/O)."""
        keep_signals_for_the_main_thread()
        while not self._stop.is_set():
            try:
                if not self._settings_saved:  # full disk at construction: save once space returns
                    self._settings_saved = self._save_settings(self._root)
                if self._registration is None or not self._registration.exists():
                    self._register()  # first failed (disk full), or deleted by someone: never left out
                touch(self._registration)  # other hosts sharing the logdir see we are alive
                if self._settings_saved:
                    supervisor.ensure_uploader(self._root, self._mode, self._token)
                    self._problems.check()  # say what needs the user now, not at close()
            except Exception:
                logger.exception("could not check or start the uploader of %s", self._root)
            self._stop.wait(HEARTBEAT_S)

    def _new_file_writer(self, directory: str | os.PathLike) -> Any:
        writer = super()._new_file_writer(directory)
        self._event_writers.append(writer.event_writer)
        return writer

    def _file_sizes(self) -> dict[str, int]:
        """Relative path -> size of every event file this writer created."""
        sizes = {}
        allow, ignore = (self._upload.allow_patterns, self._upload.ignore_patterns) if self._upload else ([], [])
        for event_writer in self._event_writers:
            for path in event_writer.files:
                rel = os.path.relpath(path, self._root).replace(os.sep, "/")
                if not matches(rel, allow, ignore):  # the uploader will not send it: don't wait for it
                    continue
                try:
                    sizes[rel] = os.path.getsize(path)
                except OSError:
                    pass
        return sizes

    def _wait_committed(self, sizes: dict[str, int], timeout: float, say_after: float | None = None) -> bool:
        """Wait until the queue shows every file committed up to ``sizes``; ``False`` on timeout.
        ``say_after``: past that many seconds of waiting, say once what the files wait for."""
        if self._upload is None or self._mode == "none":
            return not sizes
        key = self._upload.target_key
        started = time.monotonic()
        deadline = started + timeout
        say_at = math.inf if say_after is None else started + say_after
        next_check = 0.0

        def done() -> bool:
            committed = read_committed(self._queue_path, key)
            return all(committed.get(rel, 0) >= size for rel, size in sizes.items())

        while True:
            if done():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= say_at:
                say_at = math.inf
                self._say_waiting(sizes, deadline - now)
            if now >= next_check:  # the uploader may have died or hung, and we may be the last writer
                if supervisor.fatal_error(self._root, self._token or "") is not None:
                    return False  # retrying cannot fix it: say so now (no new uploader), not after close_timeout
                supervisor.ensure_uploader(self._root, self._mode, self._token, wait=0, needed=lambda: not done())
                next_check = now + HEARTBEAT_S
            time.sleep(0.1)

    def _say_waiting(self, sizes: dict[str, int], left: float) -> None:
        """Once per wait: what this process's files wait for (read from the uploader's published state).
        A warning on rank 0 (or a lone process), so that the terminal says it; the other ranks at info."""
        assert self._upload is not None
        level = logging.WARNING if self.rank_info.rank in (None, 0) else logging.INFO
        logger.log(level, "close() of %s waits for %s (%d file(s) not committed yet; up to %.0f s more; "
                   "`hf-mpwriter status %s` shows progress)", self._root,
                   waiting.waiting_for(self._root, self._upload.description),
                   close_report.missing(self._root, self._upload.target_key, sizes), left, self._root)

    def close(self) -> None:
        """Flush, close, and wait (at most ``close_timeout``) until this process's logs are committed.

        Says the truth about anything it could not do: records the disk refused (kept in memory
        while the process runs), files not committed yet (safe on disk and queued).
        """
        if (self._stop.is_set() and self.file_writer is None) or os.getpid() != self._owner_pid:
            return
        super().close()
        deadline = time.monotonic() + self.close_timeout  # what waits for the uploader: within close_timeout
        self._stop.set()
        if self._heartbeat_thread is not None:
            # Let a beat in progress finish first (within close_timeout): one that ran past our
            # unregistering would register this closed writer again, or start a needless uploader.
            self._heartbeat_thread.join(self.close_timeout)
            self._heartbeat_thread = None
        if self._upload is None:
            return
        termination.forget(self._root)
        if not self._settings_saved:
            self._settings_saved = self._save_settings(self._root)
        unwritten = sum(w.unwritten_bytes for w in self._event_writers)
        sizes = self._file_sizes()
        self._unregister()
        mailbox.trigger(self._root)
        if self._mode == "none":
            logger.info("logs of %s are queued; run `hf-mpwriter sync %s` to upload them", self._root, self._root)
            return
        committed = self._settings_saved and self._wait_committed(
            sizes, max(0.0, deadline - time.monotonic()), say_after=SAY_WAIT_AFTER_S)
        if (committed and self._upload.nodes > 1 and self._upload.store and self._mode == "process"
                and not termination.signalled()):  # (preempted: its grace period is for its records)
            waiting.wait_job_run_sent(self._root, min(deadline, time.monotonic() + JOB_VIEW_LAST_WAIT_S + HUNG_AFTER_S))
        close_report.say_what_is_left(self._root, self._upload, sizes, committed=committed, unwritten=unwritten,
                                      close_timeout=self.close_timeout, token=self._token)

    def _unregister(self) -> None:
        """Remove this writer's registration: the uploader no longer counts it among the live writers."""
        if self._registration is not None:
            try:
                self._registration.unlink()
            except OSError:
                pass
            self._registration = None

    @property
    def _queue_path(self) -> Path:
        return statedir.state_dir(self._root, create=False) / "queue.db"
