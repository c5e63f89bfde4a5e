"""Read scalars back the two ways TensorBoard does, so tests can check what a user would see.

The two readers treat a restart differently. The Python reader (``tensorboard --load_fast=false``)
drops every tag's points from a ``SessionLog.START``'s step on, but only from the run's second START
(the first is never a restart), and otherwise keeps a step logged twice twice. The default reader, the
Rust data server, ignores ``SessionLog`` altogether: per tag, a step at or below the last one read
drops that tag's points from that step on. Both keep every point here (no reservoir sampling), so a
test sees those semantics, not sampling.

Both return ``{run: {tag: [(step, value), ...]}}`` in the reader's order; the logdir's root is run ``"."``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable

Scalars = dict[str, dict[str, list[tuple[int, float]]]]

_ALL = 10**9  # a downsample / reservoir size that keeps every point


def python_reader_scalars(logdir: str | os.PathLike[str]) -> Scalars:
    """Scalars as the Python reader (``EventMultiplexer``, ``purge_orphaned_data=True``) shows them."""
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_multiplexer
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0},  # 0: keep all
        tensor_size_guidance={scalar_metadata.PLUGIN_NAME: 0},
    )
    multiplexer.AddRunsFromDirectory(os.fspath(logdir))
    multiplexer.Reload()
    result: Scalars = {}
    # simple_value scalars are migrated to "scalars"-plugin tensors on load (data_compat), so one path reads both.
    for run, tags in multiplexer.PluginRunToTagToContent(scalar_metadata.PLUGIN_NAME).items():
        accumulator = multiplexer.GetAccumulator(run)
        result[run] = {
            tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())) for e in accumulator.Tensors(tag)]
            for tag in tags
        }
    return result


def _server_binary() -> str:
    """The data server TensorBoard would start (``TENSORBOARD_DATA_SERVER_BINARY`` or the pip package)."""
    from tensorboard.data import server_ingester

    try:
        return server_ingester.get_server_binary().path
    except server_ingester.NoDataServerError as e:
        raise ImportError(f"TensorBoard's data server is not available: {e}") from e


def default_reader_texts(logdir: str | os.PathLike[str], timeout: float = 60) -> dict[str, dict[str, list[tuple[int, str]]]]:
    """Texts as TensorBoard's default reader (the Rust data server) shows them: ``run -> tag -> [(step, text)]``."""
    return default_reader_scalars(logdir, timeout, texts=True)  # type: ignore[return-value]


def default_reader_scalars(logdir: str | os.PathLike[str], timeout: float = 60, texts: bool = False) -> Scalars:
    """Scalars (``texts``: the texts) as TensorBoard's default reader (the Rust data server) shows them.

    Started as ``SubprocessServerDataIngester`` starts it (``--port 0`` and a port file), but with
    ``--reload once`` and ``scalars=all`` (TensorBoard keeps 1000 per tag); loading is finished when its
    reloader thread logs ``Finished load cycle`` (``-v``), after which the data cannot change. The server
    is killed before this returns. Raises ImportError where TensorBoard has no data server."""
    import grpc
    from tensorboard import context
    from tensorboard.data import grpc_provider
    from tensorboard.plugins.scalar import metadata as scalar_metadata

    binary = _server_binary()
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="tb_data_server_") as tmp:
        port_file, log_file = os.path.join(tmp, "port"), os.path.join(tmp, "stderr")
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # RUST_LOG would override -v
        args = [binary, f"--logdir={os.fspath(logdir)}", "--reload=once", "--samples-per-plugin=scalars=all,text=all",
                "--port=0", f"--port-file={port_file}", "--die-after-stdin", "--verbose"]
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            _wait_for(proc, deadline, log_file, lambda: _read(port_file).endswith("\n"))  # written in one go
            port = int(_read(port_file))
            _wait_for(proc, deadline, log_file, lambda: "Finished load cycle" in _read(log_file))
            with grpc.insecure_channel(f"localhost:{port}") as channel:
                provider = grpc_provider.GrpcDataProvider(f"localhost:{port}", grpc_provider.make_stub(channel))
                ctx, plugin = context.RequestContext(), scalar_metadata.PLUGIN_NAME
                if texts:
                    tensors = provider.read_tensors(ctx, experiment_id="", plugin_name="text", downsample=_ALL)
                    return {run: {tag: [(d.step, d.numpy.item().decode()) for d in data] for tag, data in tags.items()}
                            for run, tags in tensors.items()}
                # No run_tag_filter: every run and every tag of the scalars plugin.
                series = provider.read_scalars(ctx, experiment_id="", plugin_name=plugin, downsample=_ALL)
                return {run: {tag: [(d.step, float(d.value)) for d in data] for tag, data in tags.items()}
                        for run, tags in series.items()}
        finally:
            proc.kill()
            proc.wait()
            if proc.stdin:
                proc.stdin.close()


def _read(path: str) -> str:
    """The file's text, or "" while the server has not created it."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _wait_for(proc: subprocess.Popen[bytes], deadline: float, log_file: str, ready: Callable[[], bool]) -> None:
    """Polls ``ready()`` until it is truthy; raises with the server's stderr if it dies or time runs out."""
    while True:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"data server exited with {proc.returncode}: {_read(log_file)[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"data server not ready in time: {_read(log_file)[-2000:]}")
        time.sleep(0.01)


def python_reader_text_steps(logdir: str | os.PathLike[str]) -> dict[str, dict[str, list[int]]]:
    """The steps of each text tag of each run, as the Python reader keeps them (one entry per record it shows)."""
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_multiplexer
    from tensorboard.plugins.text import metadata as text_metadata

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance={event_accumulator.TENSORS: 0}, tensor_size_guidance={text_metadata.PLUGIN_NAME: 0})
    multiplexer.AddRunsFromDirectory(os.fspath(logdir))
    multiplexer.Reload()
    return {run: {tag: [e.step for e in multiplexer.GetAccumulator(run).Tensors(tag)] for tag in tags}
            for run, tags in multiplexer.PluginRunToTagToContent(text_metadata.PLUGIN_NAME).items()}
