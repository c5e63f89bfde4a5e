"""Every key the uploaders of a job share in its store, and one parser per kind of value read from them.

Keys, under the prefix of one job and one target (:func:`~.member.store_prefix`)::

    members            "0,3,1,"          the nodes that announced themselves (append) left/<n>           counter
    node n's exited uploader (its incarnation): n left while it equals ``incarnation/<n>`` incarnation/<n>    counter
    node n's current uploader, each new one adds 1 (a count, not a clock: a replacement's offers always win over its
    predecessor's) offer/<n>          JSON | "-" | "taken:seq:node:term"  an offer, taken back, or claimed by a leader
    answer/<n>         JSON               the leader's answer to offer ``seq`` (:func:`parse_answer`: plan, slots,
    successors) lease              JSON {node, term, pid, n}            who leads (``(node, term)``; pid: for people)
    terms              counter            each take of the lease adds 1: its holder's term offered, answered  counters
    polled instead of every node's keys prepared           "ns/name"          the repository or bucket id node 0's Hub
    resolved xet                JSON {cas, token, exp}  the job's Xet write token, fetched and renewed by the leader
    (a secret: never in a log line, ``status`` or an error) successor/<i>      JSON [host, port]  the i-th successor
    store (:mod:`.successor`), set by its host, passed on in answers

The job's own keys (not one target's: :func:`.joining.other_folders`)::

    target/<hash>      text               the folder a target's nodes log to
    targets            "hash:node,..."    which node logs to which (append)

The job run's keys (:mod:`hf_mpwriter.uploader.jobrun`, its parsers there, bounded by the constants below)::

    view/held          JSON               the leader's word: per tag the last step written, the restarts
                                          (:meth:`~hf_mpwriter.uploader.jobrun.values.Held.parse`)
    view/<n>           JSON               node n's points not written yet, with their spread across ranks
                                          (:func:`~hf_mpwriter.uploader.jobrun.values.parse_value`)
    view/g<g>          JSON               group g's nodes' values, merged by its host (same parser)
    view/g<g>/host     JSON {node, at}    which node hosts group g's store, and where (:mod:`~..jobrun.tree`)

A value another process wrote is never trusted: a parser either returns a value whose every field has the type its
readers use, every number finite and within its bound (the ``MAX_`` constants below, the job run's readers' too), or
raises :class:`Malformed`. The reader skips that value, counts it (``status``) and goes on: one bad value never stops
a round.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any, Protocol

from ...timing import OFFER_WAIT_S
from .store import CoordinationStore, StoreError

logger = logging.getLogger(__name__)

#: An offer's value once its node took it back.
WITHDRAWN = b"-"
#: An offer's value once a leader claimed it (followed by ``seq:node:term``: the offer's, the claimer's).
TAKEN = b"taken:"

#: A node's number is below this, and a plan's nodes and group size at most this.
MAX_NODES = 1 << 20
#: An offer's wait for its answer: a node waits at most this long (``JobTiming.offer_wait``, shorter where its
#: calls are), and a leader takes an offer no longer than its node waits for it.
MAX_OFFER_WAIT_S = OFFER_WAIT_S
#: Any other span another process states, in seconds (a plan's interval and gaps, a put-off, an age, a window): 30 days,
#: well above the longest plan interval (about 6 days: 65,536 nodes of 8 ranks on a repository, slowed 8 times).
MAX_SPAN_S = 30 * 24 * 3600.0
#: A whole number (a sequence number, a term, a size, a count): within an int64.
MAX_WHOLE = 2**63 - 1
#: A step of the job run: TensorBoard's event steps are int64 (a larger one wraps; a writer may log negative ones).
MIN_STEP, MAX_STEP = -(2**63), 2**63 - 1


class Malformed(ValueError):
    """A value in the store is not what its key holds (another version, a bug, a partial write)."""


class Skipped:
    """The malformed values a process skipped: counted per kind of key (``offer``, ``view``...) for
    ``status``, each kind said once in the log (a bad value is read again every round)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def count(self, key: str, exc: Exception) -> None:
        kind = key.split("/", 1)[0]
        if not self.kinds[kind]:
            logger.warning("the job's store holds a malformed value at %s (%s): skipped, the others are used", key, exc)
        self.kinds[kind] += 1


def taken_value(seq: int, node: int, term: int) -> bytes:
    return TAKEN + f"{seq}:{node}:{term}".encode()


def claimer(value: bytes | None, seq: int) -> tuple[int, int] | None:
    """``(node, term)`` of the leader that claimed offer ``seq``; ``None`` where ``value`` claims no offer, or
    another."""
    if not value or not value.startswith(TAKEN):
        return None
    parts = value[len(TAKEN):].decode(errors="replace").split(":")
    if len(parts) != 3 or parts[0] != str(seq) or not all(part.isascii() and part.isdigit() for part in parts[1:]):
        return None
    return int(parts[1]), int(parts[2])


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise Malformed(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise Malformed(f"{what}: not an object")
    return value


def _number(value: Any, what: str, minimum: float = 0.0, maximum: float = MAX_SPAN_S) -> float:
    """A finite number from ``minimum`` to ``maximum`` (JSON's ``Infinity`` and ``1e999`` parse as infinities)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise Malformed(f"{what}: {value!r} is not a number from {minimum:g} to {maximum:g}")
    return float(value)


def _whole(value: Any, what: str, minimum: int = 0, maximum: int = MAX_WHOLE) -> int:
    """A whole number from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise Malformed(f"{what}: {value!r} is not a whole number from {minimum} to {maximum}")
    return value


def parse_step(value: Any, what: str, minimum: int = MIN_STEP) -> int:
    """A step of the job run, an int64: from ``minimum`` (:data:`MIN_STEP` by default) to :data:`MAX_STEP`."""
    return _whole(value, what, minimum, MAX_STEP)


def parse_count(value: Any, what: str) -> int:
    """A count or an id another process wrote: a whole number from 0 to :data:`MAX_WHOLE`."""
    return _whole(value, what)


def _file(entry: Any) -> list:
    """``[path, sha256, size, xet_hash or None]``."""
    if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str) and entry[0]
            and isinstance(entry[1], str) and len(entry[1]) == 64 and (entry[3] is None or isinstance(entry[3], str))):
        raise Malformed(f"offer: file {entry!r} is not [path, sha256, size, xet hash]")
    _whole(entry[2], "offer: a file's size")
    return list(entry)


def parse_offer(raw: bytes) -> dict[str, Any]:
    """An offer as the leader reads it: ``seq``, ``incarnation``, ``wait``, ``waiting``, ``last``, ``files``."""
    offer = _json_object(raw, "offer")
    files = offer.get("files")
    if not isinstance(files, list) or not files:
        raise Malformed("offer: no files")
    return {"seq": _whole(offer.get("seq"), "offer: seq"), "incarnation": _whole(offer.get("incarnation"), "offer: incarnation"),
            "wait": _number(offer.get("wait"), "offer: wait", maximum=MAX_OFFER_WAIT_S),
            "waiting": _number(offer.get("waiting", 0.0), "offer: waiting"),
            "last": bool(offer.get("last")), "files": [_file(entry) for entry in files]}


def parse_answer(raw: bytes) -> dict[str, Any]:
    """A leader's answer as its node reads it: ``seq``, and ``commit`` (committed), ``retry_in`` (put off) or
    ``error`` (not committed); ``plan`` and the slots (:meth:`~.plan.Plan.slots_in`) where they are within their
    bounds (:func:`parse_plan`; else neither); ``successors``: ``[(host, port), ...]`` (:func:`parse_successor`),
    maybe empty."""
    answer = _json_object(raw, "answer")
    if not answer:  # the value a node's keys start with: nothing answered yet
        return {"seq": 0, "successors": []}
    parsed = dict(answer)
    parsed["seq"] = _whole(answer.get("seq"), "answer: seq")
    if answer.get("commit") is not None and not isinstance(answer["commit"], str):
        raise Malformed("answer: commit is not a string")
    if answer.get("retry_in") is not None:
        parsed["retry_in"] = _number(answer["retry_in"], "answer: retry_in")
    for key in ("plan", "next_in", "own_in"):
        parsed.pop(key, None)
    try:  # (a bad plan or slot costs the plan, never the commit's answer: the node keeps the plan it had)
        parsed.update(_plan_and_slots(answer))
    except Malformed:
        pass
    listed = answer.get("successors")
    parsed["successors"] = [entry for entry in (listed[:MAX_SUCCESSORS] if isinstance(listed, list) else [])
                            if _successor_shaped(entry)]  # (a bad entry costs its successor, never the commit's answer)
    return parsed


def parse_plan(value: Any) -> dict[str, Any]:
    """A plan as an answer carries it (:meth:`~.plan.Plan.to_json`): its nodes and group size whole numbers from
    1 to :data:`MAX_NODES`, its gap from 0 and its interval and own gap above 0, to :data:`MAX_SPAN_S`."""
    if not isinstance(value, dict):
        raise Malformed("plan: not an object")
    plan = {"nodes": _whole(value.get("nodes"), "plan: nodes", 1, MAX_NODES),
            "per_commit": _whole(value.get("per_commit"), "plan: per_commit", 1, MAX_NODES),
            "gap": _number(value.get("gap"), "plan: gap"), "interval": _number(value.get("interval"), "plan: interval"),
            "own_gap": _number(value.get("own_gap"), "plan: own_gap")}
    if not (plan["interval"] > 0 and plan["own_gap"] > 0):
        raise Malformed("plan: an interval or own gap of 0")
    return plan


def _plan_and_slots(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer's plan (:func:`parse_plan`) and this node's slots, bounded by its cycle (one missing: an older
    leader's)."""
    if answer.get("plan") is None:
        return {}
    plan = parse_plan(answer["plan"])
    cycles = {"next_in": plan["interval"], "own_in": plan["nodes"] * plan["own_gap"]}
    return {"plan": plan, **{key: _number(answer[key], f"answer: {key}", maximum=cycle)
                             for key, cycle in cycles.items() if key in answer}}


#: Successor stores an answer may list (:mod:`.successor` keeps fewer).
MAX_SUCCESSORS = 8


def parse_members(raw: bytes | None, nodes: int) -> list[int]:
    """``members`` as read from the store: the job's nodes it lists, in order, each once (anything else is skipped)."""
    parts = [part.strip() for part in (raw or b"").decode(errors="replace").split(",")]
    return sorted({node for part in parts if part.isascii() and part.isdigit() and 0 <= (node := int(part)) < nodes})


def successor_value(host: str, port: int) -> bytes:
    """``successor/<i>``: where the i-th successor store listens."""
    return json.dumps([host, port]).encode()


def parse_successor_value(raw: bytes) -> tuple[str, int]:
    """``successor/<i>`` as read from the store."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise Malformed("successor: not JSON") from None
    return parse_successor(value)


def _successor_shaped(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and 0 < len(value[0]) <= 255
            and not isinstance(value[1], bool) and isinstance(value[1], int) and 0 < value[1] < 65536)


def parse_successor(value: Any) -> tuple[str, int]:
    """A successor store's ``[host, port]`` (a key's value parsed)."""
    if not _successor_shaped(value):
        raise Malformed(f"successor: {value!r} is not [host, port]")
    return value[0], value[1]


def parse_counter(raw: bytes | None, what: str) -> int:
    """A counter's value (``add`` writes them as decimal text); 0 where it was never set."""
    if not raw:
        return 0
    text = raw.decode(errors="replace").strip()
    if not (text.isascii() and text.isdigit()):
        raise Malformed(f"{what}: {text[:40]!r} is not a count")
    return int(text)


#: A repository or bucket id as the Hub resolves it: ``namespace/name`` (the Hub's own characters).
_RESOLVED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def parse_prepared(raw: bytes) -> str:
    """The id node 0 resolved (``prepared``): ``namespace/name``."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Malformed("prepared: not ASCII") from None
    if not _RESOLVED_ID.fullmatch(text):
        raise Malformed(f"prepared: {text[:100]!r} is not a namespace/name id")
    return text


#: The furthest a shared Xet token's expiry may lie ahead of the reader's clock (the Hub's live about an hour):
#: a later one is refused, so that no value keeps a leader from fetching a fresh token for longer than this.
MAX_XET_AHEAD_S = 86_400
#: The longest ``cas`` URL and ``token`` a ``xet`` value may hold.
MAX_XET_FIELD = 4096


def xet_token_value(cas: str, token: str, expiry: int) -> bytes:
    """The ``xet`` value: a write connection for the job's target (:mod:`hf_mpwriter.targets.xet_content`)."""
    return json.dumps({"cas": cas, "token": token, "exp": expiry}).encode()


def parse_xet_token(raw: bytes, now: float) -> tuple[str, str, int]:
    """``(cas url, access token, expiry)``, the expiry at most :data:`MAX_XET_AHEAD_S` after ``now`` (unix
    seconds). Where the CAS is, the reader checks itself. A refusal names the field, never the value (a secret)."""
    value = _json_object(raw, "xet")
    cas, token, expiry = value.get("cas"), value.get("token"), value.get("exp")
    if not (isinstance(cas, str) and cas.startswith(("http://", "https://")) and len(cas) <= MAX_XET_FIELD):
        raise Malformed("xet: cas is not a URL")
    if not (isinstance(token, str) and 0 < len(token) <= MAX_XET_FIELD):
        raise Malformed("xet: token is not a string")
    exp = _whole(expiry, "xet: exp")
    if exp > now + MAX_XET_AHEAD_S:
        raise Malformed(f"xet: exp is more than {MAX_XET_AHEAD_S} s ahead")
    return cas, token, exp


def lease_holder(raw: bytes | None) -> tuple[int, int] | None:
    """``(node, term)`` of the lease's holder; ``None`` where nobody holds it or the value is malformed (a
    holder nobody can name holds nothing: it is taken over once it goes stale)."""
    try:
        lease = _json_object(raw, "lease") if raw else None
        return None if lease is None else (_whole(lease.get("node"), "lease: node"), _whole(lease.get("term"), "lease: term"))
    except Malformed:
        return None


class Seat(Protocol):
    """What the job run needs of this node's place in the job (:class:`~.member.JobTarget` is one)."""

    node: int

    @property
    def store(self) -> CoordinationStore: ...

    @property
    def malformed(self) -> Skipped: ...  # values of the store skipped (``status``)

    @property
    def leading(self) -> bool: ...

    def members(self) -> list[int]: ...

    def store_usable(self) -> bool: ...

    def store_failed(self, exc: StoreError) -> None: ...
