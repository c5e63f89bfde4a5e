"""The huggingface_hub client as hf_mpwriter uses it, on whatever stack is installed (0.x ``requests``,
1.x+ ``httpx``):

- thread mode (the uploader inside the training process) leaves the process's client exactly as it
  was: huggingface_hub's own functions, factory and client objects, no timeout forced on the user's calls;
- process mode (the uploader owns its process) configures the client the documented way, with
  timeouts on every request, and keeps what the library's default client does;
- errors are classified by what they are: real failures of the real client (test Hub faults, a closed
  port, a proxy's HTML page, hf_xet's CAS errors, programming errors);
- every lock refuses a file system without ``flock`` (a process where ``flock`` answers ENOSYS).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from importlib.metadata import version

import pytest
from helpers import kill_and_collect
from upload_helpers import TESTS, hub_env, writer_env

REPO = "tester/client"

#: A training process that uses huggingface_hub itself and runs the uploader as a thread. It prints
#: which of huggingface_hub's session functions and factories (in any of its loaded modules) are not the
#: library's own objects, before the writer starts and after it closed, and its client before and after;
#: then, once told (a line on stdin: the test injected latency on ``repo_info``), times a call of its own.
_TRAINING = r'''
import json, os, sys, time
import huggingface_hub, huggingface_hub.utils as hub_utils
from huggingface_hub import HfApi
from huggingface_hub.utils import _http

NAMES = ("get_session", "close_session", "reset_sessions", "configure_http_backend", "set_client_factory",
         "_GLOBAL_CLIENT_FACTORY", "_GLOBAL_BACKEND_FACTORY")
library_own = {name: getattr(_http, name) for name in NAMES if hasattr(_http, name)}

def replaced():  # "module.name" for each loaded huggingface_hub module whose name is not the library's own object
    return sorted(f"{module_name}.{name}" for module_name, module in list(sys.modules.items())
                  if module is not None and module_name.split(".")[0] == "huggingface_hub"
                  for name, own in library_own.items() if name in vars(module) and vars(module)[name] is not own)

def describe(client):
    return {"id": id(client), "type": type(client).__name__, "timeout": repr(getattr(client, "timeout", None)),
            "hooks": repr(getattr(client, "event_hooks", None)),
            "adapters": {prefix: id(adapter) for prefix, adapter in (getattr(client, "adapters", None) or {}).items()},
            "own_request": "request" in vars(client)}

before, replaced_before = describe(hub_utils.get_session()), replaced()
from hf_mpwriter import HFSummaryWriter
from hf_mpwriter.targets.hub import HubTarget
writer = HFSummaryWriter(os.environ["REPO"], logdir=os.environ["LOGDIR"], commit_every=1 / 60, uploader="thread",
                         token=os.environ["TEST_TOKEN"], close_timeout=120)
for step in range(50):
    writer.add_scalar("loss", float(step), step)
writer.close()
HubTarget(os.environ["REPO"], prefix="", token=os.environ["TEST_TOKEN"]).reset_client()  # as after an abandoned call
after = describe(hub_utils.get_session())
print(json.dumps({"before": before, "after": after, "replaced": [replaced_before, replaced()],
                  "functions_loaded": sorted(library_own)}), flush=True)
sys.stdin.readline()
started = time.monotonic()
info = HfApi(token=os.environ["TEST_TOKEN"]).model_info(os.environ["REPO"])
print(json.dumps({"user_call_s": time.monotonic() - started, "sha": info.sha,
                  "same_client": id(hub_utils.get_session()) == before["id"]}), flush=True)
'''


def test_thread_mode_leaves_the_process_client_alone(hub, tmp_path):
    hub.create_repo(REPO)
    env = hub_env(hub, tmp_path, REPO=REPO, LOGDIR=str(tmp_path / "logs"), HF_MPWRITER_HTTP_TIMEOUT="2")
    proc = subprocess.Popen([sys.executable, "-c", _TRAINING], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=writer_env(env))
    try:
        first = json.loads(proc.stdout.readline() or "null")  # type: ignore[union-attr]
        assert first, kill_and_collect(proc)
        # The scenario happened: the thread uploaded through huggingface_hub in this very process.
        assert [c for c in hub.commits(REPO) if c["summary"].startswith("Upload TensorBoard logs")]
        assert "get_session" in first["functions_loaded"]
        assert first["replaced"] == [[], []], "a huggingface_hub function or factory was replaced"
        assert first["after"] == first["before"], "the training process's huggingface_hub client changed"
        slow = hub.inject("latency", route="repo_info", seconds=3)  # longer than our 2 s: the user's call waits
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_and_collect(proc)
    assert proc.returncode == 0, err
    second = json.loads(out.strip().splitlines()[-1])
    assert slow.hits == 1
    assert second["user_call_s"] >= 2.9 and second["same_client"], second


#: A process the uploader owns: configure_process_client(), then what the client does with it. Each
#: call meets a 5 s latency (injected by the test) with a read timeout of 1 s.
_PROCESS = r'''
import json, os, sys, time
import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.utils import get_session
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.targets.hub_client import configure_process_client

configure_process_client(1.0)
client = get_session()
hooks = [getattr(h, "__name__", "") for h in (getattr(client, "event_hooks", None) or {}).get("request", [])]
adapters = sorted({type(a).__name__ for a in (getattr(client, "adapters", None) or {}).values()})
api = HfApi(token=os.environ["TEST_TOKEN"], endpoint=os.environ["HF_ENDPOINT"])
timings = {}
for name, call in [("paths_info", lambda: api.get_paths_info(os.environ["REPO"], ["README.md"])),
                   ("repo_info_timeout_none", lambda: api.repo_info(os.environ["REPO"], timeout=None))]:
    started = time.monotonic()
    try:
        call()
        outcome = "answered"
    except Exception as exc:
        outcome = type(exc).__name__
    timings[name] = [time.monotonic() - started, outcome]
target = HubTarget(os.environ["REPO"], prefix="", token=os.environ["TEST_TOKEN"])
api_before = target.api
target.reset_client()
fresh = target.api is not api_before and get_session() is not client
target.api.repo_info(os.environ["REPO"])  # the rebuilt client works
print(json.dumps({"hooks": hooks, "adapters": adapters, "follow_redirects": getattr(client, "follow_redirects", None),
                  "timings": timings, "fresh_after_reset": fresh}))
'''


def test_process_mode_client_times_out_and_keeps_the_library_defaults(hub, tmp_path):
    hub.create_repo(REPO)
    slow_paths = hub.inject("latency", route="paths_info", seconds=5)
    slow_info = hub.inject("latency", route="repo_info", seconds=5)
    env = hub_env(hub, tmp_path, REPO=REPO, HF_MPWRITER_HTTP_TIMEOUT="1")
    done = subprocess.run([sys.executable, "-c", _PROCESS], capture_output=True, text=True, env=writer_env(env),
                          timeout=60)
    slow_paths.release()
    slow_info.release()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert slow_paths.hits >= 1 and slow_info.hits >= 1, "the latency never fired"
    # Without our timeouts each call would wait the full 5 s (get_paths_info takes no timeout=, and
    # repo_info passes timeout=None to the client explicitly). huggingface_hub may retry a timeout itself
    # (a second try meets no latency): either way the 1 s timeout cut the first try short.
    for name, (seconds, outcome) in seen["timings"].items():
        assert 0.9 <= seconds < 4.5, (name, seconds, outcome)
    # What the library's default client does is kept: its request hook (1.x+) or adapters (0.x).
    from hf_mpwriter.compat import hub_version

    if hub_version() >= (1, 0):
        assert "hf_request_event_hook" in seen["hooks"] and seen["follow_redirects"] is True, seen
    else:
        assert seen["adapters"] == ["UniqueRequestIdAdapter"], seen
    assert seen["fresh_after_reset"], "reset_client() must drop the API and, in process mode, the client"


#: scenario -> (retried?, what the message must say)
_EXPECTED = {
    "no_token": (False, "no token was given (HTTP 401): set HF_TOKEN, run `hf auth login`, or pass token="),
    "wrong_token": (False, "the Hub refused the token (HTTP 401)"),
    "read_only_token": (False, "the Hub refused the token (HTTP 403)"),
    "xet_refused": (False, "the Hub refused the token (HTTP 401)"),
    "bad_request": (False, "HTTP 400: this request makes no sense. This is not retried"),
    "server_error": (True, "(HTTP 500: "),
    "xet_server_error": (True, "(HTTP 500: "),
    "garbled_answer": (True, "will retry"),
    "dropped_connection": (True, "will retry"),
    "connection_refused": (True, "will retry"),
    "timeout": (True, "will retry"),
    "type_error": (False, "TypeError: "),
    "attribute_error": (False, "AttributeError: "),
    "validation_error": (False, "Error: "),
    "recursion_error": (False, "RecursionError: "),
    "not_implemented": (False, "NotImplementedError: "),
}
_BUG = "This is a bug in hf_mpwriter or huggingface_hub, not a network error, and is not retried: please report it"
_FAULTED = {"server_error", "bad_request", "dropped_connection", "timeout", "xet_server_error", "xet_refused"}


def test_errors_are_classified_by_what_they_are(tmp_path):
    """Real failures of the real client, each classified (tests/client_scenarios.py runs them in a process
    with no token anywhere: its own HF_HOME, no HF_TOKEN)."""
    env = writer_env({"HF_HOME": str(tmp_path / "hf_home")})
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, str(TESTS / "client_scenarios.py"), *_EXPECTED], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    # (hf_xet before 1.2 writes its own log lines, JSON too, to stdout: the results are those with a name)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"name"')]
    results = {r["name"]: r for r in lines}
    assert sorted(results) == sorted(_EXPECTED), done.stderr
    expected = dict(_EXPECTED)
    xet = tuple(int(part) for part in version("hf_xet").split(".")[:2])
    if xet < (1, 2):  # it reads a refused xorb upload's body as its answer: "error decoding response body",
        # no status to tell it from a garbled answer, so retried (hf_xet fetches its CAS token itself)
        expected["xet_refused"] = (True, "error decoding response body")
    for name, (transient, says) in expected.items():
        result = results[name]
        assert result["raised"], f"{name}: the client raised nothing"  # the scenario happened
        if name in _FAULTED:
            assert result.get("fault_hits", 0) >= 1, f"{name}: the test Hub's fault never fired"
        assert result["transient"] is transient, result
        assert says in result["message"], result
        bug = name.endswith("_error") and name not in ("server_error", "xet_server_error") or name == "not_implemented"
        assert (_BUG in result["message"]) is bug, result
    # hf_xet 1.5+ raises a failed transfer as a ConnectionError, older ones as a RuntimeError
    raised = "ConnectionError" if xet >= (1, 5) else "RuntimeError"
    assert results["xet_server_error"]["raised"] == results["xet_refused"]["raised"] == raised
    assert "refused" not in results["no_token"]["message"]


_NO_FLOCK_C = "#include <errno.h>\nint flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOSYS; return -1; }\n"

#: In a process where flock answers ENOSYS (what a file system without it answers): the lock helper and
#: a writer (its run-directory claim) refuse, saying what the file system lacks.
_NO_FLOCK = r'''
import errno, fcntl, json, os, sys
from pathlib import Path
from hf_mpwriter.compat import LockUnsupported, os_file_lock

directory = Path(sys.argv[1])
fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    probe = "flock works"
except OSError as exc:
    probe = errno.errorcode[exc.errno]
messages = []
try:
    os_file_lock(directory / "some.lock", timeout=0).acquire()
except LockUnsupported as exc:
    messages.append(str(exc))
from hf_mpwriter import SummaryWriter
try:
    SummaryWriter(str(directory / "logs"))
except LockUnsupported as exc:
    messages.append(str(exc))
import filelock
print(json.dumps({"probe": probe, "messages": messages, "filelock": filelock.__version__}))
'''


def test_locks_refuse_a_file_system_without_flock(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the flock-less libc shim")
    shim = tmp_path / "noflock.so"
    (tmp_path / "noflock.c").write_text(_NO_FLOCK_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "noflock.c")], check=True)
    place = tmp_path / "mount"
    place.mkdir()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _NO_FLOCK, str(place)], capture_output=True, text=True,
                          env=writer_env({"LD_PRELOAD": str(shim)}), timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["probe"] == "ENOSYS", seen  # the scenario: flock really is missing in that process
    assert len(seen["messages"]) == 2, seen  # the helper and the writer both refused
    for message in seen["messages"]:
        assert f"the file system of {place}" in message and "does not support flock" in message, message
        assert "put the logdir on a local disk or on a file system with flock" in message, message
    assert time.monotonic() - started < 30
