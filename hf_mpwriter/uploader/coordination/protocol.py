"""Every value the uploaders of a job share in its store: one codec per kind (one encode, one decode), and the
table of keys (:data:`KINDS`).

A value another process wrote is never trusted: a decoder either returns a value whose every field has the type its
readers use, every number finite and within its bound (the ``MAX_`` constants below, the job run's readers' too), or
raises :class:`Malformed`. The reader skips that value, counts it (``status``) and goes on: one bad value never stops
a round. JSON values carry the protocol's :data:`VERSION` (``v``); one of another version is malformed here.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...targets.base import UploadedFile
from ...timing import OFFER_WAIT_S
from .store import CoordinationStore, StoreError

logger = logging.getLogger(__name__)

#: The protocol's version, in every JSON value (``v``): a node reads only its own.
VERSION = 1
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
#: The longest text a value holds (a path, a commit id, why an offer was put off, a leader's error).
MAX_TEXT = 4096
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


def _text(value: Any, what: str, longest: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > longest:
        raise Malformed(f"{what}: not a text of at most {longest} characters")
    return value


def _message(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object of this protocol's version."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise Malformed(f"{what}: not JSON") from None
    return versioned(value, what)


def versioned(value: Any, what: str) -> dict[str, Any]:
    """``value`` where it is an object of this protocol's version (none said: the first)."""
    if not isinstance(value, dict):
        raise Malformed(f"{what}: not an object")
    if value.get("v", VERSION) != VERSION:
        raise Malformed(f"{what}: written by protocol version {str(value.get('v'))[:20]}; this node reads {VERSION}")
    return value


def _encoded(**fields: Any) -> bytes:
    """A JSON message of this version, its fields that are ``None`` left out."""
    return json.dumps({"v": VERSION, **{key: value for key, value in fields.items() if value is not None}}).encode()


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


def _spelled(text: str, longest: int = 19) -> int | None:
    """The whole number ``text`` spells in at most ``longest`` ASCII digits (an int64's 19 by default); else ``None``."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= longest else None


def parse_step(value: Any, what: str, minimum: int = MIN_STEP) -> int:
    """A step of the job run, an int64: from ``minimum`` (:data:`MIN_STEP` by default) to :data:`MAX_STEP`."""
    return _whole(value, what, minimum, MAX_STEP)


def parse_count(value: Any, what: str) -> int:
    """A count or an id another process wrote: a whole number from 0 to :data:`MAX_WHOLE`."""
    return _whole(value, what)


# -- offer/<n> -----------------------------------------------------------------------------------------
def _file(entry: Any) -> UploadedFile:
    """``[path, sha256, size, xet_hash or None]``."""
    if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str) and 0 < len(entry[0]) <= MAX_TEXT
            and isinstance(entry[1], str) and len(entry[1]) == 64
            and (entry[3] is None or isinstance(entry[3], str) and len(entry[3]) <= MAX_TEXT)):
        raise Malformed(f"offer: file {str(entry)[:200]} is not [path, sha256, size, xet hash]")
    return UploadedFile(entry[0], entry[1], _whole(entry[2], "offer: a file's size"), entry[3])


@dataclass(frozen=True)
class Offer:
    """``offer/<n>``: a node's files, their content uploaded, for the leader to commit."""

    seq: int  # above every earlier offer of the node's (its incarnation is the high part)
    incarnation: int  # the offering uploader's (:mod:`.joining`)
    wait: float  # how long the node waits for the answer: a leader takes the offer no longer
    waiting: float  # how long the node's data has waited already (the oldest first)
    last: bool  # the node's last records: committed whatever the budget
    files: tuple[UploadedFile, ...]
    raw: bytes = field(default=b"", compare=False, repr=False)  # the value as read: what a claim compares

    def encode(self) -> bytes:
        return _encoded(seq=self.seq, incarnation=self.incarnation, wait=self.wait, waiting=self.waiting, last=self.last,
                        files=[[f.path, f.sha256, f.size, f.xet_hash] for f in self.files])

    @classmethod
    def decode(cls, raw: bytes) -> Offer:
        offer = _message(raw, "offer")
        files = offer.get("files")
        if not isinstance(files, list) or not files:
            raise Malformed("offer: no files")
        return cls(_whole(offer.get("seq"), "offer: seq"), _whole(offer.get("incarnation"), "offer: incarnation"),
                   _number(offer.get("wait"), "offer: wait", maximum=MAX_OFFER_WAIT_S),
                   _number(offer.get("waiting", 0.0), "offer: waiting"), offer.get("last") is True,
                   tuple(_file(entry) for entry in files), raw)


def taken_value(seq: int, node: int, term: int) -> bytes:
    """``offer/<n>`` once a leader claimed offer ``seq``: ``taken:seq:node:term`` (the claimer's node and term)."""
    return TAKEN + f"{seq}:{node}:{term}".encode()


def claimer(value: bytes | None, seq: int) -> tuple[int, int] | None:
    """``(node, term)`` of the leader that claimed offer ``seq``; ``None`` where ``value`` claims no offer, or
    another."""
    if not value or not value.startswith(TAKEN):
        return None
    parts = value[len(TAKEN):].decode(errors="replace").split(":")
    numbers = [_spelled(part) for part in parts]
    if len(parts) != 3 or parts[0] != str(seq) or numbers[1] is None or numbers[2] is None:
        return None
    return numbers[1], numbers[2]


def _offer_slot(raw: bytes) -> Offer | tuple[int, int] | None:
    """``offer/<n>`` whatever it holds: an offer, a claim's ``(node, term)``, or ``None`` (taken back)."""
    if raw == WITHDRAWN:
        return None
    if raw.startswith(TAKEN):
        seq = _spelled(raw[len(TAKEN):].split(b":", 1)[0].decode(errors="replace"))
        if (taker := claimer(raw, -1 if seq is None else seq)) is None:
            raise Malformed("offer: not taken:seq:node:term")
        return taker
    return Offer.decode(raw)


# -- answer/<n> ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """``answer/<n>``: the leader's word on offer ``seq``: committed (``commit``), put off (``retry_in``), or not
    committed (``error``); the plan and this node's slots in it (:meth:`~.plan.Plan.slots_in`), the successor
    stores. ``{}``: nothing answered yet."""

    seq: int
    commit: str | None = None
    retry_in: float | None = None
    error: str | None = None
    why: str | None = None  # why put off
    verified: bool = False  # the leader found the commit holding the files as offered
    plan: dict[str, Any] | None = None  # :func:`parse_plan`'s
    next_in: float | None = None  # seconds to the node's next slot, and own slot (bounded by the plan's cycles)
    own_in: float | None = None
    successors: tuple[tuple[str, int], ...] = ()

    def encode(self) -> bytes:
        cut = {key: text[:MAX_TEXT] for key, text in (("error", self.error), ("why", self.why)) if text is not None}
        return _encoded(seq=self.seq, commit=self.commit, retry_in=self.retry_in, **cut, verified=self.verified or None,
                        plan=self.plan, next_in=self.next_in, own_in=self.own_in,
                        successors=[list(address) for address in self.successors])

    @classmethod
    def decode(cls, raw: bytes) -> Answer:
        """A bad plan or slot costs the plan, a bad successor its entry, never the commit's answer."""
        answer = _message(raw, "answer")
        if not answer or answer.keys() == {"v"}:
            return cls(0)
        fields: dict[str, Any] = {"seq": _whole(answer.get("seq"), "answer: seq"), "verified": answer.get("verified") is True}
        for key in ("commit", "error", "why"):
            if answer.get(key) is not None:
                fields[key] = _text(answer[key], f"answer: {key}")
        if answer.get("retry_in") is not None:
            fields["retry_in"] = _number(answer["retry_in"], "answer: retry_in")
        try:
            fields.update(_plan_and_slots(answer))
        except Malformed:
            pass
        listed = answer.get("successors")
        fields["successors"] = tuple(parse_successor(entry) for entry in (listed[:MAX_SUCCESSORS] if isinstance(listed, list)
                                                                        else []) if _successor_shaped(entry))
        return cls(**fields)


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


# -- lease ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LeaseValue:
    """``lease``: who leads, ``(node, term)``; ``pid`` for people, ``n`` renewals (each renewal a new value)."""

    node: int
    term: int
    pid: int = 0
    n: int = 0

    def encode(self) -> bytes:
        return _encoded(node=self.node, term=self.term, pid=self.pid, n=self.n)

    @classmethod
    def decode(cls, raw: bytes) -> LeaseValue:
        lease = _message(raw, "lease")
        return cls(_whole(lease.get("node"), "lease: node", 0, MAX_NODES - 1), _whole(lease.get("term"), "lease: term"),
                   _whole(lease.get("pid", 0), "lease: pid"), _whole(lease.get("n", 0), "lease: n"))


def lease_holder(raw: bytes | None) -> tuple[int, int] | None:
    """``(node, term)`` of the lease's holder; ``None`` where nobody holds it or the value is malformed (a
    holder nobody can name holds nothing: it is taken over once it goes stale)."""
    try:
        lease = LeaseValue.decode(raw) if raw else None
    except Malformed:
        return None
    return None if lease is None else (lease.node, lease.term)


# -- counters, members, targets, prepared --------------------------------------------------------------
def counter_value(count: int) -> bytes:
    """A counter (``incarnation/<n>``, ``left/<n>``, ``terms``, ``offered``, ``answered``): decimal text, as
    ``add`` writes it."""
    return str(count).encode()


def parse_counter(raw: bytes | None, what: str) -> int:
    """A counter's value; 0 where it was never set."""
    if not raw:
        return 0
    text = raw.decode(errors="replace").strip()
    if (count := _spelled(text)) is None:
        raise Malformed(f"{what}: {text[:40]!r} is not a count")
    return _whole(count, what)


def member_entry(node: int) -> bytes:
    """What a node appends to ``members``."""
    return f"{node},".encode()


def parse_members(raw: bytes | None, nodes: int) -> list[int]:
    """``members`` as read from the store: the job's nodes it lists, in order, each once (anything else is skipped)."""
    spelled = [_spelled(part.strip(), 7) for part in (raw or b"").decode(errors="replace").split(",")]
    return sorted({node for node in spelled if node is not None and node < nodes})


def target_entry(node: int, key_hash: str) -> bytes:
    """What a node appends to the job's ``targets``: which target (its key's hash) it logs to."""
    return f"{node}:{key_hash},".encode()


def parse_targets(raw: bytes | None) -> dict[str, set[int]]:
    """``targets``: each target's hash and the nodes that log to it (a malformed entry is skipped)."""
    nodes_of: dict[str, set[int]] = {}
    for entry in (raw or b"").decode(errors="replace").split(","):
        spelled, _, key_hash = entry.strip().partition(":")
        if (node := _spelled(spelled, 7)) is not None and node < MAX_NODES and _HASH.fullmatch(key_hash):
            nodes_of.setdefault(key_hash, set()).add(node)
    return nodes_of


def folder_value(folder: str) -> bytes:
    """``target/<hash>``: the folder a target's nodes log to, for people (cut to fit a value)."""
    return folder.encode()[:MAX_TEXT]


def parse_folder(raw: bytes | None) -> str:
    return (raw or b"?").decode(errors="replace")[:MAX_TEXT]


#: A repository or bucket id as the Hub resolves it: ``namespace/name`` (the Hub's own characters).
_RESOLVED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def prepared_value(repo_id: str) -> bytes:
    """``prepared``: the id node 0 resolved for the target."""
    return repo_id.encode()


def parse_prepared(raw: bytes) -> str:
    """The id node 0 resolved (``prepared``): ``namespace/name``."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Malformed("prepared: not ASCII") from None
    if not _RESOLVED_ID.fullmatch(text):
        raise Malformed(f"prepared: {text[:100]!r} is not a namespace/name id")
    return text


# -- successor/<i>, view/g<g>/host: where a store listens ----------------------------------------------
#: Successor stores an answer may list (:mod:`.successor` keeps fewer).
MAX_SUCCESSORS = 8


def _successor_shaped(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and 0 < len(value[0]) <= 255
            and not isinstance(value[1], bool) and isinstance(value[1], int) and 0 < value[1] < 65536)


def parse_successor(value: Any) -> tuple[str, int]:
    """A store's ``[host, port]``."""
    if not _successor_shaped(value):
        raise Malformed(f"successor: {str(value)[:300]} is not [host, port]")
    return value[0], value[1]


def successor_value(host: str, port: int) -> bytes:
    """``successor/<i>``: where the i-th successor store listens."""
    return _encoded(at=[host, port])


def parse_successor_value(raw: bytes) -> tuple[str, int]:
    return parse_successor(_message(raw, "successor").get("at"))


@dataclass(frozen=True)
class GroupHost:
    """``view/g<g>/host``: the node that hosts group g's store of the job run, and where it listens (``None``:
    claimed, not serving yet); ``n`` a nonce (two claims never hold the same bytes)."""

    node: int
    at: tuple[str, int] | None
    n: int = 0

    def encode(self) -> bytes:
        return _encoded(node=self.node, at=None if self.at is None else list(self.at), n=self.n)

    @classmethod
    def decode(cls, raw: bytes) -> GroupHost:
        value = _message(raw, "group host")
        at = value.get("at")  # (none: claimed, not serving yet)
        return cls(_whole(value.get("node"), "group host: node", 0, MAX_NODES - 1),
                   None if at is None else parse_successor(at), _whole(value.get("n", 0), "group host: n"))


# -- xet -----------------------------------------------------------------------------------------------
#: The furthest a shared Xet token's expiry may lie ahead of the reader's clock (the Hub's live about an hour):
#: a later one is refused, so that no value keeps a leader from fetching a fresh token for longer than this.
MAX_XET_AHEAD_S = 86_400
#: The longest ``cas`` URL and ``token`` a ``xet`` value may hold.
MAX_XET_FIELD = 4096


def xet_token_value(cas: str, token: str, expiry: int) -> bytes:
    """``xet``: the job's write connection to its target's CAS (:mod:`hf_mpwriter.targets.xet_content`)."""
    return _encoded(cas=cas, token=token, exp=expiry)


def parse_xet_token(raw: bytes, now: float) -> tuple[str, str, int]:
    """``(cas url, access token, expiry)``, the expiry at most :data:`MAX_XET_AHEAD_S` after ``now`` (unix
    seconds). Where the CAS is, the reader checks itself. A refusal names the field, never the value (a secret)."""
    value = _message(raw, "xet")
    cas, token = value.get("cas"), value.get("token")
    if not (isinstance(cas, str) and cas.startswith(("http://", "https://")) and len(cas) <= MAX_XET_FIELD):
        raise Malformed("xet: cas is not a URL")
    if not (isinstance(token, str) and 0 < len(token) <= MAX_XET_FIELD):
        raise Malformed("xet: token is not a string")
    exp = _whole(value.get("exp"), "xet: exp")
    if exp > now + MAX_XET_AHEAD_S:
        raise Malformed(f"xet: exp is more than {MAX_XET_AHEAD_S} s ahead")
    return cas, token, exp


# -- the table -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A key of the job's store (``<n>``: a node's number, ``<i>`` a successor's slot, ``<g>`` a group's, ``<hash>`` a
    target's), what its value holds, and its decoder (``None``: the job run's, :mod:`hf_mpwriter.uploader.jobrun`)."""

    key: str
    holds: str
    decode: Callable[[bytes], object] | None


#: Every key, under the prefix of one job and one target (:func:`~.job_node.store_prefix`), or the job's own keys
#: (``target/<hash>``, ``targets``: :func:`.joining.other_folders`).
KINDS = (
    Kind("members", "the nodes that announced themselves, appended (:func:`member_entry`)",
         lambda raw: parse_members(raw, MAX_NODES)),
    Kind("incarnation/<n>", "node n's current uploader: each new one counts it up, and a newer one's offers win",
         lambda raw: parse_counter(raw, "incarnation")),
    Kind("left/<n>", "node n's exited uploader: n left while it equals incarnation/<n>",
         lambda raw: parse_counter(raw, "left")),
    Kind("offer/<n>", "node n's offer (:class:`Offer`), taken back (:data:`WITHDRAWN`) or claimed (:func:`taken_value`)",
         _offer_slot),
    Kind("answer/<n>", "the leader's answer to node n's offer (:class:`Answer`)", Answer.decode),
    Kind("lease", "who leads (:class:`LeaseValue`)", LeaseValue.decode),
    Kind("terms", "each take of the lease counts it up: its holder's term", lambda raw: parse_counter(raw, "terms")),
    Kind("offered", "counted up at each offer: the leader polls it, not every node's offer",
         lambda raw: parse_counter(raw, "offered")),
    Kind("answered", "counted up at each batch of answers: the nodes poll it", lambda raw: parse_counter(raw, "answered")),
    Kind("prepared", "the repository or bucket id node 0 resolved (:func:`parse_prepared`)", parse_prepared),
    Kind("xet", "the job's Xet write token, a secret (:func:`parse_xet_token`)", lambda raw: parse_xet_token(raw, time.time())),
    Kind("successor/<i>", "where the i-th successor store listens (:mod:`.successor`)", parse_successor_value),
    Kind("targets", "which node logs to which target, appended (:func:`parse_targets`)", parse_targets),
    Kind("target/<hash>", "the folder a target's nodes log to, for people", parse_folder),
    Kind("view/held", "the job run's leader's word: per tag the last step written, the restarts (jobrun.values.Held)", None),
    Kind("view/<n>", "node n's job run points not written yet (jobrun.values.parse_value)", None),
    Kind("view/g<g>", "group g's nodes' values, merged by its host (jobrun.values.parse_value)", None),
    Kind("view/g<g>/host", "which node hosts group g's store, and where (:class:`GroupHost`)", GroupHost.decode),
)

_HASH = re.compile(r"[0-9a-f]{1,64}")
_PATTERNS = [(re.compile(re.escape(kind.key).replace("<n>", r"\d+").replace("<i>", r"\d+").replace("<g>", r"\d+")
                         .replace("<hash>", _HASH.pattern)), kind) for kind in KINDS]


def kind_of(key: str) -> Kind:
    """The kind of ``key`` (unprefixed); :class:`KeyError` for a key the protocol does not have."""
    for pattern, kind in _PATTERNS:
        if pattern.fullmatch(key):
            return kind
    raise KeyError(key)


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
