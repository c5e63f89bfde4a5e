"""Real failures of the real huggingface_hub client against the test Hub, each classified as the
targets classify them (``hub_client.classify``).

Run by tests/test_client.py in a process of its own, with its own ``HF_HOME`` and no ``HF_TOKEN`` ("no
token" must really mean none), and its own test Hub (started here, before huggingface_hub reads its
environment). Usage: ``python client_scenarios.py SCENARIO...``. Prints one JSON line per scenario: the
exception the client raised, how many requests the scenario's fault hit (it fired), and what
``classify`` made of it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hf_mpwriter.testing import HubServer

TOKEN, READ_ONLY = "hf_goodTokenForTests0123456789", "hf_readOnlyTokenForTests0123"
HUB = HubServer(tokens={TOKEN}, read_only_tokens={READ_ONLY}).start()
os.environ.update(HUB.env(xet=True))
os.environ.setdefault("HF_XET_CLIENT_RETRY_MAX_ATTEMPTS", "1")  # hf_xet's own retries: seconds each

from huggingface_hub import HfApi  # noqa: E402 - after the environment it reads at import

from hf_mpwriter.errors import TargetError  # noqa: E402
from hf_mpwriter.targets.hub import HubTarget  # noqa: E402
from hf_mpwriter.targets.hub_client import classify  # noqa: E402

ENDPOINT = HUB.endpoint
REPO = "tester/errors"


def prepare(token: str | None, endpoint: str = ENDPOINT) -> None:
    """What the uploader does first: create the repository (through the target, which classifies)."""
    HubTarget(REPO, prefix="", token=token, endpoint=endpoint).prepare()


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def html_server() -> str:
    """A server that answers every request with 200 and an HTML page (a captive portal, a proxy's login)."""

    class Portal(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>Sign in to the proxy</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def recurse(depth: int = 0) -> int:
    return recurse(depth + 1) + 1


def xet_upload() -> None:
    HfApi(token=TOKEN, endpoint=ENDPOINT).upload_file(path_or_fileobj=os.urandom(20_000), path_in_repo="x.bin",
                                                      repo_id=REPO)


#: scenario -> the test Hub's fault for it: (kind, route, params), injected until the scenario ends
FAULTS: dict[str, tuple[str, str, dict]] = {
    "server_error": ("status", "create_repo", {"status": 500}),
    "bad_request": ("status", "create_repo", {"status": 400, "message": "this request makes no sense"}),
    "dropped_connection": ("drop", "create_repo", {}),
    "timeout": ("latency", "repo_info", {"seconds": 3}),
    "xet_server_error": ("status", "xorb_upload", {"status": 500}),
    "xet_refused": ("status", "xorb_upload", {"status": 401}),
}

#: scenario -> the call that fails
SCENARIOS = {
    "no_token": lambda: prepare(None),
    "wrong_token": lambda: prepare("hf_wrongTokenForTests0000000"),
    "read_only_token": lambda: HfApi(token=READ_ONLY, endpoint=ENDPOINT).upload_file(
        path_or_fileobj=b"hello", path_in_repo="hello.txt", repo_id=REPO),
    "server_error": lambda: prepare(TOKEN),  # 500 on create_repo
    "bad_request": lambda: prepare(TOKEN),  # 400 on create_repo
    "garbled_answer": lambda: prepare(TOKEN, html_server()),  # 200 with a proxy's HTML page instead of JSON
    "dropped_connection": lambda: prepare(TOKEN),  # closed without an answer
    "connection_refused": lambda: prepare(TOKEN, closed_port()),
    "timeout": lambda: HfApi(token=TOKEN, endpoint=ENDPOINT).repo_info(REPO, timeout=0.5),  # 3 s latency
    "xet_server_error": xet_upload,  # 500 on every xorb upload
    "xet_refused": xet_upload,  # 401 on every xorb upload
    "type_error": lambda: HfApi(token=TOKEN, endpoint=ENDPOINT).create_commit(REPO),  # type: ignore[call-arg]
    "attribute_error": lambda: HfApi(token=TOKEN, endpoint=ENDPOINT).create_commit(
        REPO, operations=[object()], commit_message="m"),  # type: ignore[list-item]
    "validation_error": lambda: HfApi(token=TOKEN, endpoint=ENDPOINT).repo_info("not/a/valid/id"),
    "recursion_error": recurse,
    "not_implemented": lambda: (_ for _ in ()).throw(NotImplementedError("a method the installed version lacks")),
}


def run(name: str) -> dict:
    """Run one scenario under its fault; what was raised and what it was classified as."""
    HUB.clear_faults()
    kind, route, params = FAULTS.get(name, ("", "", {}))
    fault = HUB.inject(kind, route=route, times=None, **params) if kind else None
    result: dict = {"name": name, "raised": None, "transient": None, "message": "no error"}
    started = time.monotonic()
    try:
        SCENARIOS[name]()
    except TargetError as exc:  # classified by the target itself
        cause = exc.__cause__ or exc.__context__
        result.update(raised=type(cause).__name__ if cause else None, transient=exc.transient, message=str(exc))
    except BaseException as exc:  # what the client raised: classified as the targets do
        error = classify(exc, "probe", f"repo {REPO!r}", TOKEN, missing="missing", fix_missing="fix it")
        result.update(raised=type(exc).__name__, transient=error.transient, message=str(error))
    result["seconds"] = round(time.monotonic() - started, 2)
    if fault is not None:
        fault.release()
        result["fault_hits"] = fault.hits
    return result


if __name__ == "__main__":
    HUB.create_repo(REPO)
    try:
        for scenario in sys.argv[1:]:
            print(json.dumps(run(scenario)), flush=True)
    finally:
        HUB.clear_faults()
        HUB.stop()
