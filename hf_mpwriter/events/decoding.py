"""Reading back the scalars and histograms of an event record: the inverse of :mod:`.encoding` for what
the uploader's job view (:mod:`hf_mpwriter.uploader.jobrun.view`) needs, a scalar's tag, step, wall time
and value, and a histogram's ``HistogramProto``.

By hand, for the reason :mod:`.encoding` encodes by hand: the uploader may not import tensorboardX
(it imports torch). It reads the protobuf wire format of ``Event`` and ``Summary`` and keeps what a
scalar is: ``Value.simple_value`` (tensorboardX, ``torch.utils.tensorboard``, this package), or a
one-element float or double tensor of the ``scalars`` plugin (TensorFlow 2's ``tf.summary.scalar``);
and what a histogram is: ``Value.histo`` (tensorboardX, ``torch.utils.tensorboard``, TensorFlow 1; not
TensorFlow 2's tensors of the ``histograms`` plugin); and a ``SessionLog.START`` (a restart: TensorBoard
drops the run's earlier events at and after its step). Anything else (images, text) is skipped. A
record that does not parse is skipped too: a job view must never be the reason a node's logs stop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_DT_FLOAT, _DT_DOUBLE = 1, 2
#: ``SessionLog.START``: what tensorboardX's ``purge_step`` writes at the restart's step.
SESSION_START = 1


class Scalar(NamedTuple):
    tag: str
    step: int
    wall_time: float
    value: float


class Histogram(NamedTuple):
    """A ``HistogramProto`` with its tag, step and wall time: ``counts[i]`` values in the bucket whose right
    edge is ``limits[i]`` (its left edge the limit before)."""

    tag: str
    step: int
    wall_time: float
    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    limits: tuple[float, ...]
    counts: tuple[float, ...]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of one message: an int for a varint, bytes otherwise."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, data[pos:pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire == 5:
            yield number, wire, data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"wire type {wire} is not used by events")


def scalars(record: bytes) -> list[Scalar]:
    """The scalars of one serialized ``Event`` (none for any other event, or one that does not parse)."""
    return summaries(record)[0]


#: What one event holds for the job run: its scalars, its histograms, and the step of a ``SessionLog.START``
#: (a writer restarted with ``purge_step``), else ``None``. (A plain tuple: it is made for every record.)
Summaries = tuple[list[Scalar], list[Histogram], Optional[int]]


def step_of(record: bytes) -> int | None:
    """The step of one serialized ``Event`` of any kind (``None`` for one that does not parse)."""
    try:
        for number, wire, value in _fields(record):
            if number == 2 and wire == 0:
                return value - (1 << 64) if value >= 1 << 63 else value
        return 0
    except (ValueError, IndexError, TypeError, struct.error):
        return None


def step_and_tags(record: bytes) -> tuple[int, list[str]] | None:
    """The step of one serialized ``Event`` and the tags of its summary's values (``None``: it does not parse)."""
    try:
        step, tags = 0, []
        for number, wire, value in _fields(record):
            if number == 2 and wire == 0:
                step = value - (1 << 64) if value >= 1 << 63 else value
            elif number == 5 and wire == 2:
                tags = [_value(item)[0] for n, w, item in _fields(value) if n == 1 and w == 2]
        return step, tags
    except (ValueError, IndexError, TypeError, struct.error, UnicodeDecodeError):
        return None


def summaries(record: bytes) -> Summaries:
    """The scalars, the histograms and the restart of one serialized ``Event`` (none for any other event,
    or one that does not parse), in one pass."""
    try:
        return _summaries(record)
    except (ValueError, IndexError, TypeError, struct.error, UnicodeDecodeError):
        return [], [], None


def _summaries(record: bytes) -> Summaries:
    wall_time, step, summary, session = 0.0, 0, b"", None
    for number, wire, value in _fields(record):
        if number == 1 and wire == 1:
            wall_time = _DOUBLE.unpack(value)[0]
        elif number == 2 and wire == 0:
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5 and wire == 2:
            summary = value
        elif number == 7 and wire == 2:  # Event.session_log
            session = value
    if session is not None:
        status = next((value for number, wire, value in _fields(session) if number == 1 and wire == 0), 0)
        return [], [], step if status == SESSION_START else None
    found: list[Scalar] = []
    histograms: list[Histogram] = []
    for number, wire, value in _fields(summary):
        if number == 1 and wire == 2:
            tag, scalar, histo = _value(value)
            if scalar is not None:
                found.append(Scalar(tag, step, wall_time, scalar))
            elif histo is not None:
                histograms.append(Histogram(tag, step, wall_time, *_histogram(histo)))
    return found, histograms, None


def _value(data: bytes) -> tuple[str, float | None, bytes | None]:
    """``(tag, scalar, HistogramProto bytes)`` of a ``Summary.Value`` (``None`` for what it does not hold)."""
    tag, simple, tensor, plugin, histo = "", None, None, "", None
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            tag = value.decode()
        elif number == 2 and wire == 5:
            simple = _FLOAT.unpack(value)[0]
        elif number == 5 and wire == 2:
            histo = value
        elif number == 8 and wire == 2:
            tensor = value
        elif number == 9 and wire == 2:
            plugin = _plugin_name(value)
    if simple is not None:
        return tag, simple, None
    if tensor is not None and plugin == "scalars":
        return tag, _tensor_scalar(tensor), None
    return tag, None, histo


def _histogram(data: bytes) -> tuple[float, float, float, float, float, tuple[float, ...], tuple[float, ...]]:
    """``(min, max, num, sum, sum_squares, bucket_limit, bucket)`` of a ``HistogramProto`` (proto3: a field
    left out is 0; the repeated doubles packed or not)."""
    stats = [0.0] * 5
    limits: list[float] = []
    counts: list[float] = []
    for number, wire, value in _fields(data):
        if 1 <= number <= 5 and wire == 1:
            stats[number - 1] = _DOUBLE.unpack(value)[0]
        elif number in (6, 7):
            into = limits if number == 6 else counts
            into.extend(_unpack(_DT_DOUBLE, value))
    if len(limits) != len(counts):
        raise ValueError("a histogram's limits and counts differ in length")
    mn, mx, num, total, squares = stats
    return mn, mx, num, total, squares, tuple(limits), tuple(counts)


def _plugin_name(metadata: bytes) -> str:
    for number, wire, value in _fields(metadata):
        if number == 1 and wire == 2:  # SummaryMetadata.plugin_data
            for inner, inner_wire, name in _fields(value):
                if inner == 1 and inner_wire == 2:
                    return name.decode()
    return ""


def _tensor_scalar(tensor: bytes) -> float | None:
    """The one value of a float or double ``TensorProto`` (``tensor_content`` or ``float_val``/``double_val``)."""
    dtype, numbers = 0, []
    for number, wire, value in _fields(tensor):
        if number == 1 and wire == 0:
            dtype = value
        elif number == 4 and wire == 2:  # tensor_content: the raw little-endian values
            numbers.extend(_unpack(dtype, value))
        elif number in (5, 6):  # float_val / double_val, packed (wire 2) or not (5 / 1)
            numbers.extend(_unpack(_DT_FLOAT if number == 5 else _DT_DOUBLE, value))
    return float(numbers[0]) if len(numbers) == 1 else None


def _unpack(dtype: int, raw: bytes) -> list[float]:
    form = _FLOAT if dtype == _DT_FLOAT else _DOUBLE if dtype == _DT_DOUBLE else None
    if form is None or len(raw) % form.size:
        return []
    return list(struct.unpack(f"<{len(raw) // form.size}{form.format[-1]}", raw))
