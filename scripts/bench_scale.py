"""How big a job one leader serves: the real ``Leader`` and a real ``TCPStore`` (in a process of its own),
the test Hub with the Hub's limits on, and simulated nodes (8 ranks each) at 64, 256 and 1,024 nodes.

What is real: the leader's code (its lease thread, its batched reads of every node's offer, its commits
by sha256 through the real huggingface_hub client, its verification), the store (torch's TCPStore, over
loopback), the Hub's limits (``HubLimits``: 10,000 entries a folder, a free account's 1,000 API
requests per 5 minutes, 128 commits an hour). What is simulated: the nodes. Their offers are written
into the store as a node writes its own (announce, then offer: the same keys and values), all at once
for one interval, and point at one event file's content uploaded once (the Hub checks that the content
exists, not which file it came from). Store latency: loopback's, measured; the leader's store work at
0.3 ms a round trip (a cross-node store) is modelled from its counted round trips.

One interval's worth of offers is committed by the leader as it would in a job: at most
``MAX_FILES_PER_COMMIT`` files a commit, the oldest offers first, commits ``--spacing`` seconds apart
(the job's default is half the Hub's ~28 s: 14 s; scaled down here, and said). The table gives per
interval what one leader needs; per hour and per 5 minutes follow from the default 5-minute interval.

    python scripts/bench_scale.py                 # 64, 256, 1024 nodes
    python scripts/bench_scale.py --nodes 4096    # 32,768 ranks: past rank 8999 in folders of 9,000

The ranks' files are named as the library names them (``RankInfo.run_name``: ``rank-000`` ...,
``ranks-9000-17999/rank-12345`` ...), so a job past 1,250 nodes of 8 stays within 10,000 entries a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _bench_common import free_port, header, table  # noqa: E402
from bench_requests import api_requests  # noqa: E402

TOKEN = "hf_bench_scale_token"
REPO = "bench/scale"
INTERVAL_S = 300.0  # the default commit_every of a repository
ROUND_TRIP_S = 0.3e-3  # a cross-node TCPStore round trip (model)


def _store_process(port: int) -> subprocess.Popen:
    code = ("import sys, time, datetime, torch.distributed as d\n"
            f"s = d.TCPStore('127.0.0.1', {port}, is_master=True, wait_for_workers=False, "
            "timeout=datetime.timedelta(seconds=30))\nprint('ready', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _one_content(hub_endpoint: str, tmp: Path):  # -> UploadedFile
    """One event file's content in the repository's storage (Xet), as a node's preupload leaves it."""
    from hf_mpwriter.state.piece import Piece, sha256_prefix
    from hf_mpwriter.targets.hub import HubTarget

    path = tmp / "events.out.tfevents.1.node"
    path.write_bytes(os.urandom(64 * 1024))
    size = path.stat().st_size
    target = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub_endpoint)
    target.prepare()
    uploaded = target.preupload([Piece(path="f", size=size, sha256=sha256_prefix(path, size), source=str(path))])
    assert uploaded, "the content did not go to the Hub's storage"
    return uploaded[0]


def run(nodes: int, ranks: int, spacing: float, tmp: Path) -> dict:
    from hf_mpwriter.targets.hub import HubTarget
    from hf_mpwriter.testing import HubServer
    from hf_mpwriter.testing.limits import HubLimits
    from hf_mpwriter.uploader.job_commit import Leader, store_prefix
    from hf_mpwriter.uploader.job_store import JobStore, StoreAddress
    from hf_mpwriter.writer.ranks import RankInfo

    limits = HubLimits.hub_free()
    with HubServer(tokens={TOKEN}, limits=limits) as hub:
        os.environ.update(hub.env())
        hub.create_repo(REPO)
        content = _one_content(hub.endpoint, tmp)
        port = free_port()
        store_proc = _store_process(port)
        try:
            address = StoreAddress("127.0.0.1", port, f"scale-{nodes}")
            leader_target = HubTarget(REPO, prefix="tb", token=TOKEN, endpoint=hub.endpoint)
            prefix = store_prefix(address, leader_target.key)
            nodes_store = JobStore(address, prefix, deadline=60.0)
            at = time.time()
            values: dict[str, bytes] = {}
            for node in range(nodes):  # what each node's announce, then offer, writes
                runs = [RankInfo(node * ranks + r, nodes * ranks, "torchrun").run_name() for r in range(ranks)]
                files = [[f"tb/{run}/events.out.tfevents.1.node{node}", content.sha256, content.size, content.xet_hash]
                         for run in runs]
                values[f"incarnation/{node}"] = b"1"
                values[f"answer/{node}"] = b"{}"
                values[f"offer/{node}"] = json.dumps({"seq": 1, "incarnation": 1, "at": at + node * 1e-6,
                                                      "files": files}).encode()
            nodes_store.multi_set(values)
            nodes_store.append("members", "".join(f"{n}," for n in range(nodes)).encode())
            nodes_store.add("offered", nodes)
            leader = Leader(leader_target, JobStore(address, prefix, deadline=60.0), node=0, nodes=nodes,
                            spacing=spacing)
            before = hub.stats
            started = time.monotonic()
            leader.start()
            answered, deadline = 0, time.monotonic() + 600
            while time.monotonic() < deadline:
                raw = nodes_store.multi_get([f"answer/{n}" for n in range(nodes)])
                answered = sum(1 for v in raw if json.loads(v or b"{}").get("seq") == 1)
                refused = hub.stats["limits_hit"]
                if answered == nodes or refused.get("entries_per_folder"):
                    break
                time.sleep(0.5)
            took = time.monotonic() - started
            leader.stop()
            after = hub.stats
        finally:
            if store_proc.stdin:
                store_proc.stdin.close()
            store_proc.wait(10)
        commits = [c for c in hub.commits(REPO) if "hf_mpwriter" in c["summary"]]
        per_commit = [int(c["summary"].split(": ")[1].split()[0]) for c in commits]
        requests = sum(api_requests(after, before).values())
        rounds = max(1, len(commits))
        return {
            "nodes": nodes, "files": nodes * ranks, "answered": answered, "commits": len(commits),
            "max_files": max(per_commit, default=0), "took": took,
            "round_trips": leader.store.round_trips / rounds, "requests": requests,
            "refused": dict(after["limits_hit"]),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="64,256,1024", help="comma-separated node counts")
    parser.add_argument("--ranks", type=int, default=8, help="ranks per node (one event file each)")
    parser.add_argument("--spacing", type=float, default=1.0,
                        help="seconds between the leader's commits (the job's default: 14; scaled down here)")
    args = parser.parse_args()
    print(header(f"bench_scale: one leader, simulated nodes of {args.ranks} ranks; test Hub with HubLimits.hub_free()"))
    rows = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(nodes, args.ranks, args.spacing, Path(tmp))
        per_interval = r["commits"]
        rows.append([
            r["nodes"], r["files"], f"{r['answered']}/{r['nodes']}", r["commits"], r["max_files"],
            f"{r['round_trips']:.0f}", f"{r['round_trips'] * ROUND_TRIP_S * 1000:.1f} ms",
            f"{per_interval * 3600 / INTERVAL_S:.0f}", f"{r['requests']}", f"{r['took']:.1f} s",
            ", ".join(f"{k} {v}" for k, v in r["refused"].items() if v) or "none",
        ])
    print(table(["nodes", "files per interval", "nodes answered", "commits per interval", "files per commit (max)",
                 "leader's store round trips per commit", "store work per commit at 0.3 ms",
                 "commits per hour at 5 min", "Hub API requests per interval", "wall time (spacing scaled)",
                 "refused by the Hub's limits"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
