"""Every value of a job's store through one codec (issue 68, point 2): one encode and one decode per kind, every
key in the protocol's table, another version or a number past its bound refused, and the simulations failing a
seed where a node writes a value another cannot read."""

from __future__ import annotations

import json
import logging

import commitsim
import pytest
from jobsim import MemoryStore

from hf_mpwriter.targets.base import UploadedFile
from hf_mpwriter.uploader.coordination import protocol
from hf_mpwriter.uploader.coordination.joining import other_folders
from hf_mpwriter.uploader.coordination.protocol import (
    MAX_TEXT,
    Answer,
    GroupHost,
    LeaseValue,
    Malformed,
    Offer,
    Skipped,
    kind_of,
)
from hf_mpwriter.uploader.jobrun.values import Held, group_value, parse_value

FILE = UploadedFile("tb/rank-000/events.out.tfevents.1.h", "a" * 64, 1234, "b" * 64)
PLAN = {"nodes": 4, "per_commit": 2, "gap": 30.0, "interval": 60.0, "own_gap": 40.0}

#: One value of each kind a node writes, as its writer encodes it, under a key of that kind.
WRITTEN = {
    "members": protocol.member_entry(3) + protocol.member_entry(0),
    "incarnation/3": protocol.counter_value(2),
    "left/3": protocol.counter_value(2),
    "offer/3": Offer(7, 2, 30.0, 4.5, True, (FILE,)).encode(),
    "answer/3": Answer(7, commit="c0ffee", verified=True, plan=PLAN, next_in=12.0, own_in=100.0,
                       successors=(("10.0.0.2", 29500),)).encode(),
    "lease": LeaseValue(3, 9, 1234, 5).encode(),
    "terms": protocol.counter_value(9),
    "prepared": protocol.prepared_value("tester/job"),
    "xet": protocol.xet_token_value("https://cas.example", "secret", 2_000_000_000),
    "successor/1": protocol.successor_value("10.0.0.2", 29500),
    "targets": protocol.target_entry(3, "0123abcd"),
    "target/0123abcd": protocol.folder_value("/logs of tester/job"),
    "view/g1/host": GroupHost(5, ("10.0.0.5", 40000), 11).encode(),
}


@pytest.mark.parametrize("key", sorted(WRITTEN))
def test_each_kind_decodes_what_its_encoder_wrote(key, monkeypatch):
    monkeypatch.setattr(protocol.time, "time", lambda: 1_999_990_000.0)  # (the token's expiry within a day)
    assert kind_of(key).decode is not None
    assert kind_of(key).decode(WRITTEN[key]) is not None


def test_the_typed_messages_come_back_whole():
    offer = Offer(7, 2, 30.0, 4.5, True, (FILE,))
    assert Offer.decode(offer.encode()) == offer and Offer.decode(offer.encode()).raw == offer.encode()
    answer = Answer(7, retry_in=30.0, why="the budget", plan=PLAN, next_in=12.0, own_in=100.0,
                    successors=(("10.0.0.2", 29500),))
    assert Answer.decode(answer.encode()) == answer
    assert LeaseValue.decode(LeaseValue(3, 9, 1, 2).encode()) == LeaseValue(3, 9, 1, 2)
    assert GroupHost.decode(GroupHost(5, None, 1).encode()) == GroupHost(5, None, 1)
    assert Answer.decode(b"{}") == Answer(0)  # (a node's answer key before any answer)


def test_every_key_the_nodes_use_is_in_the_table_and_no_other():
    for key in ("offered", "answered", "view/held", "view/12", "view/g0", "successor/2", "answer/0"):
        assert kind_of(key).key
    for key in ("offer/x", "lease/1", "view/g1/hosts", "prepared/1", "secret"):
        with pytest.raises(KeyError):
            kind_of(key)


@pytest.mark.parametrize("key", ["offer/3", "answer/3", "lease", "xet", "successor/1", "view/g1/host"])
def test_a_value_of_another_protocol_version_is_malformed(key, monkeypatch):
    """A node of another version writes values this one may misread: refused whole, never half-read."""
    monkeypatch.setattr(protocol.time, "time", lambda: 1_999_990_000.0)
    value = json.loads(WRITTEN[key])
    with pytest.raises(Malformed):
        kind_of(key).decode(json.dumps({**value, "v": 2}).encode())
    assert kind_of(key).decode(json.dumps({k: v for k, v in value.items() if k != "v"}).encode())  # (none said: 1)


@pytest.mark.parametrize("key, value", [
    ("answer/3", {"seq": 7, "commit": "c" * (MAX_TEXT + 1)}),
    ("answer/3", {"seq": 2**64, "commit": "c"}),
    ("answer/3", {"seq": 7, "retry_in": 1e300}),
    ("offer/3", {"seq": 7, "incarnation": 2, "wait": 30, "files": [["p" * (MAX_TEXT + 1), "a" * 64, 1, None]]}),
    ("offer/3", {"seq": 7, "incarnation": 2, "wait": 30, "files": [["p", "a" * 64, 2**64, None]]}),
    ("lease", {"node": 1 << 20, "term": 1}),
    ("view/g1/host", {"node": 1, "at": ["h", 70000]}),
    ("view/g1/host", {"node": 1e999, "at": None}),
    ("successor/1", {"at": ["h", True]}),
])
def test_a_number_or_text_past_its_bound_is_malformed(key, value):
    with pytest.raises(Malformed):
        kind_of(key).decode(json.dumps(value).encode())


def test_a_counter_past_an_int64_is_malformed():
    with pytest.raises(Malformed):
        kind_of("terms").decode(str(2**64).encode())


def test_an_answers_long_error_is_cut_to_fit_when_written_not_refused_when_read():
    long = Answer(7, error="x" * (3 * MAX_TEXT)).encode()
    assert Answer.decode(long).error == "x" * MAX_TEXT


def test_a_targets_value_with_a_bad_entry_still_tells_the_nodes_logging_apart():
    """A planted entry (``x:zz``) raised ``ValueError`` out of the comparison, which then said nothing."""
    store = MemoryStore()
    store.set("target/00ff", b"/logs/b of tester/job")
    store.append("targets", b"x:zz,1:00ff,")
    assert other_folders(store, 0, "0aa0", "/logs/a of tester/job") == "node(s) [1] log to /logs/b of tester/job"


def test_the_commit_simulation_fails_a_seed_where_a_node_writes_a_value_no_node_can_read(monkeypatch):
    """The check behind every seed: here the leader's answers carry another version."""
    logging.disable(logging.WARNING)
    try:
        assert not commitsim.run(3).problems  # (the seed, as written: its problems would be this test's)
        written = Answer.encode
        monkeypatch.setattr(Answer, "encode", lambda self: written(self).replace(b'"v": 1', b'"v": 2'))
        problems = commitsim.run(3).problems
    finally:
        logging.disable(logging.NOTSET)
    assert any("no node can read: answer/" in problem for problem in problems), problems[:3]


def test_the_job_runs_values_carry_the_version_too():
    """``view/held`` and a node's or group's ``view/`` value: another version is skipped, counted, as any malformed
    value."""
    held = Held({"loss": 4}, 1)
    assert Held.parse(held.to_json(0)).steps == {"loss": 4}
    skipped = Skipped()
    assert Held.parse(held.to_json(0).replace(b'"v": 1', b'"v": 2'), skipped).steps == {} and skipped.total == 1
    value = group_value({}, 1 << 16, held)
    assert b'"v": 1' in value and parse_value(None, value) is not None
    with pytest.raises(Malformed):
        parse_value(None, value.replace(b'"v": 1', b'"v": 2'))


@pytest.mark.parametrize("key, value", [
    ("offer/3", b"taken:" + b"9" * 5000 + b":1:1"),
    ("terms", b"9" * 5000),
])
def test_a_number_spelled_in_thousands_of_digits_is_malformed_not_a_valueerror(key, value):
    """Python refuses ``int()`` of a string over 4,300 digits with a ``ValueError`` that no reader expects."""
    with pytest.raises(Malformed):
        kind_of(key).decode(value)


def test_an_entry_spelled_in_thousands_of_digits_is_skipped_and_the_others_kept():
    """In ``members`` that ``ValueError`` failed every round of the leader; in ``targets``, the folder check."""
    assert protocol.parse_members(b"9" * 5000 + b",1,", 4) == [1]
    assert protocol.parse_targets(b"9" * 5000 + b":00ff,1:00ff,") == {"00ff": {1}}
