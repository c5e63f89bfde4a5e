"""The one protobuf encoder of the ``Event`` messages this package writes itself, byte-identical to
tensorboardX's ``Event(...).SerializeToString()`` (the tests compare the bytes).

Three writers use it: the writer's hot path (:func:`scalar_event`: ``add_scalar`` is called millions
of times in a training run, so it encodes directly, with the per-tag part cached, instead of building
``Summary`` and ``Event`` messages; :func:`summary_event` for a summary the writer encoded itself, such
as a histogram), every event file's first record (:func:`file_version_event`) and the uploader's system
metrics (:func:`scalar_event`, :func:`text_event`). It may not import tensorboardX (which imports torch)
because the uploader imports it, so it restates the one rule of tensorboardX it needs, how a scalar's
tag is cleaned (:func:`clean_tag`). What each costs: ``docs/design-notes.md``. Everything else the writer logs goes through
tensorboardX's own summary functions and protobufs.
"""

from __future__ import annotations

import logging
import math
import re
import struct

from .records import varint

logger = logging.getLogger(__name__)

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
#: tensorboardX's ``summary._INVALID_TAG_CHARACTERS``: what a scalar's tag may not contain.
_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w.]")
#: ``Event.file_version`` of every event file's first record, as TensorFlow and tensorboardX write it.
FILE_VERSION = b"brain.Event:2"

_TAG_CACHE_LIMIT = 100_000
_tag_tails: dict[str, bytes] = {}


# -- protobuf wire format ------------------------------------------------------------------------
def _length_head(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field (wire type 2) whose data is ``length`` bytes."""
    return varint(number << 3 | 2) + varint(length)


def field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field: a string, bytes or an embedded message."""
    return _length_head(number, len(data)) + data


def _event(wall_time: float, step: int, fields: bytes) -> bytes:
    """``Event`` with ``wall_time`` (field 1, double), ``step`` (field 2, varint; protobuf omits a 0)
    and ``fields`` (the event's other fields, already encoded)."""
    return b"\x09" + _DOUBLE.pack(wall_time) + (b"\x10" + varint(step) if step else b"") + fields


# -- events --------------------------------------------------------------------------------------
def clean_tag(tag: str) -> str:
    """The tag tensorboardX's ``scalar()`` stores: characters other than letters, digits, ``_-/.``
    become ``_``; leading slashes go (as ``tensorboardX.summary._clean_tag``, said at info level)."""
    cleaned = _INVALID_TAG_CHARACTERS.sub("_", tag).lstrip("/")
    if cleaned != tag:
        logger.info("summary name %r is illegal; using %r instead", tag, cleaned)
    return cleaned


def file_version_event(wall_time: float) -> bytes:
    """``Event(wall_time=wall_time, file_version="brain.Event:2")``: every event file's first record."""
    return _event(wall_time, 0, field(3, FILE_VERSION))


def session_start_event(step: int, wall_time: float) -> bytes:
    """``Event(step=step, session_log=SessionLog(status=START))``, as tensorboardX's ``purge_step`` writes it:
    TensorBoard drops the run's earlier events at and after ``step`` (files of version 2, as every file is here)."""
    return _event(wall_time, step, field(7, b"\x08\x01"))


def text_event(tag: str, text: str, step: int, wall_time: float) -> bytes:
    """The event of ``tensorboardX.summary.text(tag, text)``: a ``<tag>/text_summary`` string tensor
    for TensorBoard's text plugin (tensorboardX does not clean this tag, so neither does this)."""
    metadata = field(1, field(1, b"text"))  # SummaryMetadata.plugin_data.plugin_name
    tensor = b"\x08\x07" + field(2, field(2, b"\x08\x01")) + field(8, text.encode())  # DT_STRING, shape [1]
    value = field(1, f"{tag}/text_summary".encode()) + field(8, tensor) + field(9, metadata)
    return _event(wall_time, step, field(5, field(1, value)))


def _tag_tail(tag: str) -> bytes:
    """Everything of a scalar event after wall time and step, but the 4 value bytes.

    ``summary`` key + length, ``Summary.value`` key + length, ``Value.tag``, ``simple_value`` key:
    all constant for a tag (the value is always 4 bytes), so computed once per tag.
    """
    tail = _tag_tails.get(tag)
    if tail is None:
        raw = clean_tag(tag).encode("utf-8")
        value = (field(1, raw) if raw else b"") + b"\x15"  # Value.tag, then Value.simple_value's key
        summary = _length_head(1, len(value) + 4) + value  # Summary.value
        tail = _length_head(5, len(summary) + 4) + summary  # Event.summary
        if len(_tag_tails) < _TAG_CACHE_LIMIT:
            _tag_tails[tag] = tail
    return tail


def _step_field(step: int) -> bytes:
    """``Event.step`` key + varint; steps repeat across the tags of one step, so the last is cached
    (one tuple, swapped atomically: threads logging at once never pair a step with another's bytes)."""
    global _last_step
    last = _last_step
    if last[0] == step:
        return last[1]
    encoded = b"\x10" + varint(step)
    _last_step = (step, encoded)
    return encoded


_last_step: tuple = (0, b"")


def summary_event(summary: bytes, step: int | None, wall_time: float) -> bytes:
    """Serialized ``Event(wall_time, step, summary=Summary.FromString(summary))``.

    ``step`` must be ``None`` or a non-negative int (callers fall back to protobuf otherwise).
    """
    step_field = b"\x10" + varint(step) if step else b""
    return b"".join((b"\x09", _DOUBLE.pack(wall_time), step_field, _length_head(5, len(summary)), summary))


def scalar_event(tag: str, value: float, step: int | None, wall_time: float) -> bytes:
    """Serialized ``Event(wall_time, step, summary=Summary(value=[Value(tag, simple_value)]))``: the hot path.

    ``step`` must be ``None`` or a non-negative int (callers fall back to protobuf otherwise).
    """
    try:
        packed = _FLOAT.pack(value)
    except OverflowError:  # beyond float32: protobuf stores an infinity, struct refuses
        packed = _FLOAT.pack(math.copysign(math.inf, value))
    step_field = _step_field(step) if step else b""
    return b"".join((b"\x09", _DOUBLE.pack(wall_time), step_field, _tag_tails.get(tag) or _tag_tail(tag), packed))


def scalars_event(values: list[tuple[str, float]], step: int, wall_time: float) -> bytes:
    """One ``Event`` holding several scalars of one step (``Summary.value`` repeated): the uploader's job
    view writes a step's statistics of every tag in one record. Tags are taken as they are (cleaned
    where they were first logged)."""
    summary = b"".join(field(1, field(1, tag.encode()) + b"\x15" + _float_bytes(value)) for tag, value in values)
    return _event(wall_time, step, field(5, summary))


def layout_event(title: str, charts: list[tuple[str, str, str, str] | tuple[str, list[str]]], wall_time: float) -> bytes:
    """The event of tensorboardX's ``add_custom_scalars`` for one category of charts: ``(title, value tag, lower tag,
    upper tag)`` a margin chart (the value in a band), ``(title, [tag regex, ...])`` a multiline chart
    (``layout.proto``: Layout.category, Category.chart, Chart.multiline, Chart.margin)."""
    def chart(spec: tuple) -> bytes:
        if len(spec) == 2:
            return field(1, spec[0].encode()) + field(2, b"".join(field(1, tag.encode()) for tag in spec[1]))
        name, value, lower, upper = spec
        return field(1, name.encode()) + field(3, field(1, field(1, value.encode()) + field(2, lower.encode())
                                                        + field(3, upper.encode())))

    layout = field(2, field(1, title.encode()) + b"".join(field(2, chart(spec)) for spec in charts))
    metadata = field(1, field(1, b"custom_scalars"))
    tensor = b"\x08\x07" + field(2, b"") + field(8, layout)  # DT_STRING, a scalar shape, the layout
    value = field(1, b"custom_scalars__config__") + field(8, tensor) + field(9, metadata)
    return _event(wall_time, 0, field(5, field(1, value)))


def histogram_event(tag: str, stats: tuple[float, float, float, float, float], limits: list[float],
                    counts: list[float], step: int, wall_time: float) -> bytes:
    """The event of tensorboardX's ``histogram_raw(tag, *stats, limits, counts)``, ``stats`` being ``(min,
    max, num, sum, sum_squares)``: the uploader's job view writes the ranks' histograms merged."""
    histo = b"".join(b"" if value == 0.0 and math.copysign(1.0, value) > 0 else bytes((key,)) + _DOUBLE.pack(value)
                     for key, value in zip((0x09, 0x11, 0x19, 0x21, 0x29), stats))  # (proto3 leaves out a 0.0)
    for number, values in ((6, limits), (7, counts)):
        if values:
            histo += field(number, struct.pack(f"<{len(values)}d", *values))
    value = (field(1, tag.encode()) if tag else b"") + field(5, histo)
    return _event(wall_time, step, field(5, field(1, value)))


def _float_bytes(value: float) -> bytes:
    try:
        return _FLOAT.pack(value)
    except OverflowError:  # beyond float32: protobuf stores an infinity, struct refuses
        return _FLOAT.pack(math.copysign(math.inf, value))
