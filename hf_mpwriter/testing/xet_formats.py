"""The Xet wire formats the test Hub's CAS reads and writes: hashes' string form, xorbs, shards, dedup answers.

Follows the public *Xet Protocol Specification*: a xorb is a sequence of chunks, each ``[version u8,
compressed size u24, scheme u8, uncompressed size u24]`` + data (scheme 0 = none, 1 = LZ4 frame,
2 = 4-byte grouping then LZ4 frame), with an optional ``XorbObjectInfo`` footer; a shard is a
file-info section (each file a list of ``(xorb, chunk range, unpacked bytes)`` terms + optional
sha256 metadata), then a CAS-info section (the xorbs and their chunk hashes). Apart from the CAS's
handlers (:mod:`.xet`) because these are pure functions of bytes, tested on their own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .storage import XetTerm, Xorb

MAX_CHUNK_SIZE = 128 * 1024
MAX_XORB_SIZE = 64 * 1024 * 1024

SHARD_HEADER_TAG = bytes(
    [72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85, 105, 103, 69, 106, 123,
     129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)  # "HFRepoMetaData\0" + 17 magic bytes  # fmt: skip
SHARD_HEADER_VERSION = 2
SHARD_FOOTER_VERSION = 1
SHARD_FOOTER_SIZE = 200
_BOOKEND = b"\xff" * 32 + b"\0" * 16
FLAG_WITH_VERIFICATION = 1 << 31
FLAG_WITH_METADATA_EXT = 1 << 30


def hash_to_str(raw: bytes) -> str:
    """A 32-byte Xet hash as the spec's string: each 8-byte group read as a little-endian u64, in hex."""
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


def str_to_hash(text: str) -> bytes:
    """Inverse of :func:`hash_to_str`."""
    return b"".join(bytes.fromhex(text[i : i + 16])[::-1] for i in range(0, 64, 16))


def is_hash_str(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _ungroup4(data: bytes) -> bytes:
    """Undo the spec's 4-byte grouping: byte i of each group of 4 was moved to the i-th quarter."""
    n = len(data)
    out = bytearray(n)
    pos = 0
    for i in range(4):
        size = n // 4 + (1 if i < n % 4 else 0)
        out[i::4] = data[pos : pos + size]
        pos += size
    return bytes(out)


def decompress_chunk(scheme: int, data: bytes, size: int) -> bytes:
    """One chunk's raw bytes; ValueError if the scheme is unknown or the size does not match."""
    if scheme == 0:
        raw = data
    elif scheme in (1, 2):
        import lz4.frame  # the Xet reference client writes LZ4 *frames*

        try:
            raw = lz4.frame.decompress(data)
        except RuntimeError as exc:
            raise ValueError(f"LZ4 decompression failed: {exc}") from exc
        if scheme == 2:
            raw = _ungroup4(raw)
    else:
        raise ValueError(f"unknown chunk compression scheme {scheme}")
    if len(raw) != size:
        raise ValueError(f"chunk decompresses to {len(raw)} bytes, header says {size}")
    return raw


def _scan_chunk_headers(body: bytes, stop: int, max_chunks: int | None = None) -> list[int] | None:
    """Offsets of consecutive chunk headers from 0; None unless they end exactly at ``stop``."""
    offsets: list[int] = []
    pos = 0
    while pos < stop and (max_chunks is None or len(offsets) < max_chunks):
        if pos + 8 > stop or body[pos] != 0:
            return None
        csize = int.from_bytes(body[pos + 1 : pos + 4], "little")
        offsets.append(pos)
        pos += 8 + csize
    return offsets if pos == stop else None


def parse_xorb(body: bytes) -> tuple[list[bytes], list[int]]:
    """Decompressed chunks and header offsets (plus the end of the last chunk) of a serialized xorb."""
    if not body:
        raise ValueError("empty xorb")
    if len(body) > MAX_XORB_SIZE:
        raise ValueError(f"xorb of {len(body)} bytes exceeds the 64 MiB limit")
    offsets: list[int] | None = None
    if len(body) >= 36:  # with an XorbObjectInfo footer: ... chunks | info | u32 info length
        info_length = int.from_bytes(body[-4:], "little")
        num_chunks = int.from_bytes(body[-32:-28], "little")
        info_start = len(body) - 4 - info_length
        if 28 <= info_length and 0 < info_start and num_chunks > 0:
            offsets = _scan_chunk_headers(body, info_start, num_chunks)
            if offsets is not None and len(offsets) != num_chunks:
                offsets = None
            end = info_start
    if offsets is None:  # what hf_xet uploads: the chunks alone
        offsets = _scan_chunk_headers(body, len(body))
        end = len(body)
    if offsets is None:
        raise ValueError("body is not a sequence of xorb chunks")
    chunks = []
    for pos in offsets:
        csize = int.from_bytes(body[pos + 1 : pos + 4], "little")
        scheme = body[pos + 4]
        usize = int.from_bytes(body[pos + 5 : pos + 8], "little")
        if usize > MAX_CHUNK_SIZE:
            raise ValueError(f"chunk of {usize} bytes exceeds the 128 KiB limit")
        chunks.append(decompress_chunk(scheme, body[pos + 8 : pos + 8 + csize], usize))
    return chunks, [*offsets, end]


@dataclass(frozen=True)
class ShardFile:
    hash: str
    terms: tuple[XetTerm, ...]
    sha256: str | None  # from the metadata extension, if any


@dataclass(frozen=True)
class ShardXorb:
    hash: str
    chunk_hashes: tuple[str, ...]
    chunk_sizes: tuple[int, ...]


def parse_shard(body: bytes) -> tuple[list[ShardFile], list[ShardXorb]]:
    """The file-info and CAS-info sections of a shard (the footer, if any, is not needed)."""
    if len(body) < 48 or body[:32] != SHARD_HEADER_TAG:
        raise ValueError("not a shard: bad header tag")
    version, _footer_size = struct.unpack_from("<QQ", body, 32)
    if version != SHARD_HEADER_VERSION:
        raise ValueError(f"unsupported shard header version {version}")
    pos = 48

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        if pos + 48 > len(body):
            raise ValueError("truncated shard")
        values = struct.unpack_from(fmt, body, pos)
        pos += 48
        return values

    files = []
    while True:
        file_hash, flags, n_entries = take("<32sII8x")
        if file_hash == _BOOKEND[:32]:
            break
        terms = []
        for _ in range(n_entries):
            xorb, _cas_flags, unpacked, start, end = take("<32sIIII")
            if not start < end:
                raise ValueError(f"empty or reversed chunk range [{start}, {end})")
            terms.append(XetTerm(hash_to_str(xorb), start, end, unpacked))
        if flags & FLAG_WITH_VERIFICATION:
            for _ in range(n_entries):
                take("<32s16x")
        sha256 = None
        if flags & FLAG_WITH_METADATA_EXT:
            (raw_sha,) = take("<32s16x")
            # xet-core stores the digest as a MerkleHash: its string form is the usual sha256 hex.
            sha256 = hash_to_str(raw_sha)
        files.append(ShardFile(hash_to_str(file_hash), tuple(terms), sha256))
    xorbs = []
    while True:
        xorb, _flags, n_chunks, _bytes_in_cas, _bytes_on_disk = take("<32sIIII")
        if xorb == _BOOKEND[:32]:
            break
        hashes, sizes = [], []
        for _ in range(n_chunks):
            chunk_hash, _start, unpacked = take("<32sII8x")
            hashes.append(hash_to_str(chunk_hash))
            sizes.append(unpacked)
        xorbs.append(ShardXorb(hash_to_str(xorb), tuple(hashes), tuple(sizes)))
    return files, xorbs


def dedup_shard(xorb: Xorb, chunk_hashes: tuple[str, ...], now: float) -> bytes:
    """A global-dedup answer: a shard with no files and one CAS block (this xorb), with its footer.

    The footer's first reserved 48 bytes are, for xet-core, the offsets and sizes of three lookup
    tables (files; xorbs; chunks), keyed by each hash's first 8 bytes as a little-endian u64, which
    the reference client reads: they follow the CAS-info section, the chunk table sorted by key.
    """
    out = bytearray(SHARD_HEADER_TAG + struct.pack("<QQ", SHARD_HEADER_VERSION, SHARD_FOOTER_SIZE))
    out += _BOOKEND  # empty file-info section
    cas_info_offset = len(out)
    sizes = [len(c) for c in xorb.chunks]
    xorb_raw = str_to_hash(xorb.hash)
    out += struct.pack("<32sIIII", xorb_raw, 0, len(sizes), sum(sizes), len(xorb.serialized))
    start = 0
    chunk_keys = []
    for index, (chunk_hash, size) in enumerate(zip(chunk_hashes, sizes)):
        raw = str_to_hash(chunk_hash)
        out += struct.pack("<32sII8x", raw, start, size)
        chunk_keys.append((struct.unpack_from("<Q", raw)[0], index))
        start += size
    out += _BOOKEND
    file_lookup = xorb_lookup = len(out)  # no files
    out += struct.pack("<QI", struct.unpack_from("<Q", xorb_raw)[0], 0)
    chunk_lookup = len(out)
    for key, index in sorted(chunk_keys):
        out += struct.pack("<QII", key, 0, index)
    footer_offset = len(out)
    out += struct.pack(
        "<9Q32sQQ48xQQQQ",
        SHARD_FOOTER_VERSION, 48, cas_info_offset,
        file_lookup, 0, xorb_lookup, 1, chunk_lookup, len(chunk_keys),
        b"\0" * 32,  # no HMAC key: chunk hashes in clear
        int(now), int(now) + 7 * 86400,
        len(xorb.serialized), sum(sizes), sum(sizes), footer_offset,
    )  # fmt: skip
    assert len(out) - footer_offset == SHARD_FOOTER_SIZE
    return bytes(out)
