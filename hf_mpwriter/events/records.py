"""TFRecord framing of tfevents files: writing whole records, and finding where whole records end.

An event file is a sequence of records::

    uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

Writers append whole records with one ``write`` each, so a reader (or the uploader taking a
snapshot) can always cut a file at the last record whose framing and checksums are intact. A file
cut anywhere else would show TensorBoard a torn record, so every byte range we upload ends at a
boundary returned by :func:`last_whole_record`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from crc32c import crc32c

_HEADER = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
#: Records larger than this are treated as corruption while scanning (TensorBoard has no such
#: records in practice; images and embeddings stay far below it).
MAX_RECORD_BYTES = 1 << 30


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer (events are encoded by hand on
    the hot path and in the uploader, which must not import tensorboardX: it imports torch)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def masked_crc(data: bytes) -> int:
    """The checksum TFRecord stores: crc32c rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _record_head(length: int) -> bytes:
    header = _HEADER.pack(length)
    return header + _CRC.pack(masked_crc(header))


# The 12-byte head depends on the length only; events of the hot path are short, so it is cached.
_HEADS = [_record_head(n) for n in range(1024)]
_pack_crc = _CRC.pack


def frame(data: bytes) -> bytes:
    """One whole record holding ``data``."""
    n = len(data)
    crc = crc32c(data)
    return b"".join((
        _HEADS[n] if n < 1024 else _record_head(n),
        data,
        _pack_crc((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF),
    ))


def iter_records(stream: BinaryIO, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(end_offset, data)`` for each whole, checksum-valid record from ``start``.

    Stops quietly at the first incomplete or corrupt record (or at ``end``): what follows it is not
    something a reader can trust, so it is never part of a snapshot.
    """
    stream.seek(start)
    offset = start
    while end is None or offset + 16 <= end:
        head = stream.read(12)
        if len(head) < 12:
            return
        (length,) = _HEADER.unpack_from(head)
        if length > MAX_RECORD_BYTES or _CRC.unpack_from(head, 8)[0] != masked_crc(head[:8]):
            return
        stop = offset + 12 + length + 4
        if end is not None and stop > end:
            return
        body = stream.read(length + 4)
        if len(body) < length + 4:
            return
        data = body[:length]
        if _CRC.unpack_from(body, length)[0] != masked_crc(data):
            return
        offset = stop
        yield offset, data


def last_whole_record(stream: BinaryIO, start: int = 0, end: int | None = None) -> int:
    """Offset just past the last whole record at or after ``start`` (``start`` if there is none).

    ``start`` must itself be a record boundary (0, or a value this function returned before), so
    the cost of a scan is the new data only, not the whole file.
    """
    offset = start
    for offset, _ in iter_records(stream, start, end):  # noqa: B007 - the last record's end is the answer
        pass
    return offset
