"""What a node takes from its job's store never chooses where it writes (issue 68: P3, N1).

The torch.distributed store has no authentication: anyone who reaches its port can write any key. Here
such a value is planted in a real ``TCPStore`` under the job's keys, the nodes run against the test Hub
and its Xet CAS through the real client, and the outcome is read where it lands: a second Hub's CAS
receives nothing, another repository holds no commit, and the node's own target holds its files.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from upload_helpers import TOKEN, wait_for

from hf_mpwriter.state.piece import Piece, sha256_prefix
from hf_mpwriter.targets.hub import HubTarget
from hf_mpwriter.testing import HubServer
from hf_mpwriter.uploader.coordination.member import JobTarget, store_prefix
from hf_mpwriter.uploader.coordination.plan import make_budget
from hf_mpwriter.uploader.coordination.store import JobStore, StoreAddress

dist = pytest.importorskip("torch.distributed")

REPO = "tester/job"
#: The test Hub's Xet tokens live an hour: one issued by it expires within a day.
DAY = 86_400
#: A budget with room for a test's seconds.
ROOMY = make_budget(commits_per_hour=36_000, requests_per_5min=100_000)


@pytest.fixture(autouse=True)
def _endpoint(hub_is_this_process_hub):
    """The test Hub as the process's Hub (conftest.py's ``hub_is_this_process_hub``)."""


@pytest.fixture
def other_hub():
    """A second Hub with a CAS of its own: where a planted ``xet`` value points the nodes' content."""
    server = HubServer(tokens={TOKEN}).start()
    yield server
    server.stop()


def _node(hub, port: int, node: int, repo: str = REPO, prepared_wait: float = 0.0) -> JobTarget:
    """Node ``node`` of a 2-node job logging to ``repo`` (its own target and its leader's)."""
    address = StoreAddress("127.0.0.1", port, "job-1")
    inner = HubTarget(repo, prefix="tb", token=TOKEN, endpoint=hub.endpoint, shared_branch=True)
    leader = HubTarget(repo, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
    return JobTarget(inner, leader, JobStore(address, store_prefix(address, inner.key)), node, 2, wait=10.0,
                     spacing=0.5, prepared_wait=prepared_wait, budget=ROOMY)


def _pieces(tmp_path: Path, rank: int, size: int) -> list[Piece]:
    """Rank ``rank``'s event file of ``size`` bytes, as the scanner would queue it."""
    path = tmp_path / f"rank-{rank:03d}" / "events.out.tfevents.1.node"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes((rank + i) % 256 for i in range(size)))
    return [Piece(path=f"rank-{rank:03d}/{path.name}", size=size, sha256=sha256_prefix(path, size), source=str(path))]


def _commit(node: JobTarget, pieces: list[Piece], limit: float = 30.0) -> str | None | Exception:
    """``node.commit`` as the uploader's queue drives it: tried again while put off or failing, until ``limit``;
    the commit id, or the last failure."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return node.commit(pieces, "node commit")
        except Exception as exc:
            if time.monotonic() > deadline:
                return exc
            time.sleep(1.0)


def _log_commits(hub, repo: str) -> list[dict]:
    return [c for c in hub.commits(repo) if c["summary"] != "initial commit" and "README" not in str(c["added"])]


def _xet_write_token(hub, repo: str) -> dict:
    """A real write token of ``hub``'s CAS, as its token endpoint hands it out."""
    request = urllib.request.Request(f"{hub.endpoint}/api/models/{repo}/xet-write-token/main",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _shared(node: JobTarget) -> dict:
    raw = node.store.get("xet")
    return json.loads(raw) if raw else {}


def _leaders_own(hub, node: JobTarget) -> bool:
    """The store's ``xet`` value is one the test Hub issued: its CAS, an expiry within the Hub's lifetime."""
    value = _shared(node)
    return (urlsplit(str(value.get("cas"))).netloc == urlsplit(hub.endpoint).netloc
            and isinstance(value.get("exp"), int) and value["exp"] <= time.time() + DAY)


@pytest.mark.parametrize("planted, when", [("another CAS", "before the leader looks"),
                                           ("another CAS", "after the leader shared its own"),
                                           ("this CAS, exp in 146 billion years", "before the leader looks")])
def test_a_xet_token_planted_in_the_store_sends_no_content_elsewhere_and_is_not_kept(
        hub, other_hub, store, tmp_path, planted, when):
    """N1: a ``xet`` value naming another Hub's CAS (with a token good there) sent every node's content there,
    and a leader kept any value whose ``exp`` lay far ahead. Now a node uses a shared token only for a CAS its
    own Hub names, and a leader replaces any other value (or a far-off expiry) with its own: the other CAS
    receives nothing, both nodes' files are at the configured repository."""
    hub.create_repo(REPO)
    other_hub.create_repo(REPO)
    foreign = _xet_write_token(other_hub, REPO)
    if planted == "another CAS":
        value = {"cas": foreign["casUrl"], "token": foreign["accessToken"], "exp": foreign["exp"]}
    else:
        value = {"cas": f"{hub.endpoint}/cas", "token": "planted-token-0123456789", "exp": 2 ** 62}
    other_hub.reset_stats()
    nodes = [_node(hub, store.port, k) for k in range(2)]
    for node in nodes:
        node.prepare()
    if when == "before the leader looks":
        nodes[0].store.set("xet", json.dumps(value).encode())
    nodes[0].start()
    try:
        wait_for(lambda: nodes[0].leader.leading, 20, "node 0 to lead")
        nodes[1].start()
        if when == "after the leader shared its own":
            wait_for(lambda: _leaders_own(hub, nodes[1]), 20, "the leader's token in the store")
            nodes[1].store.set("xet", json.dumps(value).encode())
        else:  # the leader looked at the planted value, and put its own in its place
            wait_for(lambda: _leaders_own(hub, nodes[1]), 20, "the leader's own token in place of the planted one")
        pieces = [_pieces(tmp_path, rank, 150_000 + rank) for rank in (0, 2)]
        oids = [_commit(node, p) for node, p in zip(nodes, pieces)]
        # The outcome: nothing reached the other Hub; each node's bytes are at the configured repository.
        assert other_hub.stats["bytes_received"] == 0 and not other_hub.stats["requests"], other_hub.stats["requests"]
        assert all(isinstance(oid, str) for oid in oids), oids
        for node_pieces in pieces:
            assert hub.read_file(REPO, f"tb/{node_pieces[0].path}") == Path(node_pieces[0].source).read_bytes()
        if when == "after the leader shared its own":  # each node skipped the planted value (counted)
            assert all(node.job_info()["malformed_kinds"].get("xet") for node in nodes)
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.mark.parametrize("configured, planted, lands", [("tester/job", "tester/other", "tester/job"),
                                                        ("job", "tester/job", "test-user/job")],
                         ids=["another repository", "another namespace"])
def test_a_prepared_id_planted_in_the_store_sends_no_commit_to_another_repository(
        hub, store, tmp_path, configured, planted, lands):
    """P3: a well-formed ``prepared`` id (``namespace/name``) was taken as the node's repository, whatever its
    configuration named. Now a node takes it only where it is the configured one (a name without namespace:
    in the namespace of the node's own token, ``whoami``); another id is counted as malformed and the node
    prepares its target itself: the other repository holds no commit, the configured one the node's files."""
    hub.create_repo(planted)  # a repository the node's token can write to, too
    node = _node(hub, store.port, 1, configured, prepared_wait=5.0)
    node.store.set("prepared", planted.encode())
    node.prepare()
    node.start()
    try:
        pieces = _pieces(tmp_path, 2, 4096)
        oid = _commit(node, pieces)
        # The outcome: no commit at the planted repository; the node's file at its own.
        assert _log_commits(hub, planted) == []
        assert isinstance(oid, str), oid
        assert hub.read_file(lands, f"tb/{pieces[0].path}") == Path(pieces[0].source).read_bytes()
        assert node.job_info()["malformed_kinds"] == {"prepared": 1}
    finally:
        node.stop()


@pytest.mark.parametrize("prepared, configured, namespace, taken", [
    ("tester/job", "tester/job", None, True),
    ("tester/other", "tester/job", "tester", False),
    ("other/job", "tester/job", "other", False),  # (a namespace given is never asked)
    ("tester/job", "job", "tester", True),
    ("other/job", "job", "tester", False),
    ("tester/job", "job", None, False),  # the node's namespace not known: prepared by the node itself
    ("tester/jobs", "job", "tester", False),
])
def test_a_prepared_id_is_taken_only_where_it_is_the_configured_repository(prepared, configured, namespace, taken):
    from hf_mpwriter.uploader.coordination.joining import same_target
    from hf_mpwriter.uploader.coordination.protocol import Malformed

    asked: list[int] = []

    def own_namespace() -> str | None:
        asked.append(1)
        return namespace

    if taken:
        assert same_target(prepared, configured, own_namespace) == prepared
    else:
        with pytest.raises(Malformed):
            same_target(prepared, configured, own_namespace)
    assert len(asked) <= (0 if "/" in configured else 1)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8080/cas/1", "http://127.0.0.1:8080"),
    ("HTTPS://Cas.Example.org/x", "https://cas.example.org:443"),
    ("http://127.0.0.1:8080@evil.example/cas", ""),  # (user info: refused, whatever host it names)
    ("https://evil.example\\@cas-server.xethub.hf.co", ""),  # (Python and hf_xet's WHATWG parser differ on the host)
    ("http://127.0.0.1:9 /cas", ""),
    ("http://127.0.0.1:99999/cas", ""), ("ftp://127.0.0.1/cas", ""), ("not a url", ""),
])
def test_a_cas_urls_origin_is_its_scheme_host_and_port(url, expected):
    from hf_mpwriter.targets.xet_content import origin

    assert origin(url) == expected
