"""The Xet wire formats, in Python: hashes, xorbs and shards (what ``hf_xet`` sends and reads).

Written from the Xet Protocol Specification and checked against the Rust client ``hf_xet`` 1.8.0
(huggingface_hub 2.4.0). What a server must get exactly right:

Hashes (all 32 bytes)
  * chunk hash: ``blake3.keyed(DATA_KEY, chunk bytes)``.
  * xorb hash: the root of an aggregated merkle tree over the chunks' ``(hash, length)``: a level
    is cut into groups (at least 2, at most 9 nodes; a group ends after node ``i >= 2`` whose hash
    ``% 4 == 0``, or at 9, or at the end), each group becomes one node whose hash is
    ``blake3.keyed(INTERNAL_NODE_KEY, "".join(f"{hex(h)} : {len}\\n"))`` and whose length is the
    sum; repeated until one node is left (one chunk: its own hash).
  * file hash: ``blake3.keyed(zero key, xorb-style root over all the file's chunks)``.
  * term verification hash (shards): ``blake3.keyed(VERIFICATION_KEY, concatenated raw chunk hashes)``.
  * hex form (URLs, the merkle text above): each of the four 8-byte words read as a little-endian
    u64 and printed as 16 hex digits, i.e. every 8-byte group byte-reversed. ``h % n`` is the last
    word (bytes 24..32, little-endian) modulo n.

Xorb (``POST /v1/xorbs/default/<hash>`` body)
  A bare sequence of chunk records: an 8-byte header (``version=0``, compressed length u24 LE,
  scheme u8: 0 none, 1 LZ4 frame, 2 byte-grouping-4 + LZ4 frame, uncompressed length u24 LE),
  then the compressed bytes. Current clients send no footer; an older one may append a footer
  starting with ``XETBLOB`` (ignored here). Chunks are at most 128 KiB uncompressed.

Shard (``POST /v1/shards`` body; also the global-dedupe answer)
  48-byte header (32-byte tag, u64 version 2, u64 footer size), then the file-info section: per
  file a 48-byte header (file hash, u32 flags, u32 entry count, 8 unused), that many 48-byte terms
  (xorb hash, u32 flags, u32 unpacked bytes, u32 first chunk, u32 end chunk exclusive), then, with
  flag bit 31, one 48-byte verification entry per term (range hash + 16 unused), with bit 30 one
  48-byte metadata entry (the file's SHA-256, its 8-byte words reversed like any Xet hash, + 16 unused); a header whose hash is all ``ff``
  ends the section. The xorb-info section follows (per xorb a 48-byte header: hash, u32 flags, u32
  chunk count, u32 unpacked bytes, u32 stored bytes; per chunk 48 bytes: hash, u32 byte offset in
  the xorb, u32 unpacked length, u32 flags, u32 unused; ``ff`` bookend). Uploaded shards may stop
  there (footer size 0) or carry lookup tables and a 200-byte footer, which the server ignores.

Every parse here is bounded (sizes, counts) and raises :class:`XetFormatError` on anything off.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import blake3

DATA_KEY = bytes(
    [102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41]
)
INTERNAL_NODE_KEY = bytes(
    [1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63]
)
VERIFICATION_KEY = bytes(
    [127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195]
)
ZERO_KEY = bytes(32)
BOOKEND = b"\xff" * 32

SHARD_TAG = bytes(
    [72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)
SHARD_HEADER_VERSION = 2
SHARD_FOOTER_VERSION = 1
SHARD_FOOTER_SIZE = 200
ENTRY = 48  # every shard record (headers, terms, verification, metadata, chunk entries)

FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30

CHUNK_HEADER = 8
MAX_CHUNK_SIZE = 128 * 1024
#: The spec's limit on a serialized xorb, plus room for an old client's footer.
MAX_XORB_BYTES = 64 * 1024 * 1024 + 1024 * 1024
MAX_XORB_CHUNKS = 16 * 1024
MAX_SHARD_BYTES = 64 * 1024 * 1024
MAX_SHARD_FILES = 100_000
MAX_FILE_TERMS = 1_000_000
XORB_FOOTER_IDENT = b"XETBLOB"

SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2
#: A chunk is a candidate for the global dedupe query when its hash % this == 0.
GLOBAL_DEDUPE_MODULUS = 1024


class XetFormatError(ValueError):
    """Bytes that are not what the protocol says (a 400)."""


# -- hashes ---------------------------------------------------------------------------------


def hex_of(h: bytes) -> str:
    """The protocol's hex form of a 32-byte hash (each 8-byte word byte-reversed)."""
    return b"".join(h[i : i + 8][::-1] for i in range(0, 32, 8)).hex()


def hash_of_hex(text: str) -> bytes:
    """Inverse of :func:`hex_of`; :class:`XetFormatError` unless 64 lower-case hex digits."""
    if not isinstance(text, str) or len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise XetFormatError(f"not a Xet hash (64 lower-case hex digits): {str(text)[:80]!r}")
    raw = bytes.fromhex(text)
    return b"".join(raw[i : i + 8][::-1] for i in range(0, 32, 8))


def is_hex_hash(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def hash_mod(h: bytes, n: int) -> int:
    return int.from_bytes(h[24:32], "little") % n


def chunk_hash(data: bytes) -> bytes:
    return blake3.blake3(data, key=DATA_KEY).digest()


def _merge(nodes: Sequence[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{hex_of(h)} : {n}\n" for h, n in nodes)
    return blake3.blake3(text.encode("ascii"), key=INTERNAL_NODE_KEY).digest(), sum(n for _, n in nodes)


def _next_cut(nodes: Sequence[tuple[bytes, int]], start: int) -> int:
    left = len(nodes) - start
    if left <= 2:
        return len(nodes)
    end = min(9, left)
    for i in range(2, end):
        if hash_mod(nodes[start + i][0], 4) == 0:
            return start + i + 1
    return start + end


def merkle_root(chunks: Iterable[tuple[bytes, int]]) -> bytes:
    """The aggregated merkle root over ``(hash, length)`` pairs (the xorb hash); zeros for none."""
    level = list(chunks)
    if not level:
        return bytes(32)
    while len(level) > 1:
        nxt = []
        i = 0
        while i < len(level):
            cut = _next_cut(level, i)
            nxt.append(_merge(level[i:cut]))
            i = cut
        level = nxt
    return level[0][0]


def xorb_hash(chunks: Iterable[tuple[bytes, int]]) -> bytes:
    return merkle_root(chunks)


def file_hash(chunks: Iterable[tuple[bytes, int]]) -> bytes:
    chunks = list(chunks)
    if not chunks:
        return bytes(32)
    return blake3.blake3(merkle_root(chunks), key=ZERO_KEY).digest()


def range_hash(chunk_hashes: Iterable[bytes]) -> bytes:
    return blake3.blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()


# -- chunks and xorbs -----------------------------------------------------------------------


def _bg4_ungroup(data: bytes) -> bytes:
    n = len(data)
    split, rem = divmod(n, 4)
    sizes = [split + (1 if rem > k else 0) for k in range(4)]
    out = bytearray(n)
    pos = 0
    for k in range(4):
        out[k::4] = data[pos : pos + sizes[k]]
        pos += sizes[k]
    return bytes(out)


def _lz4_decompress(data: bytes, expected: int) -> bytes:
    import lz4.frame

    try:
        d = lz4.frame.LZ4FrameDecompressor()
        out = d.decompress(data, max_length=expected + 1)
    except RuntimeError as exc:
        raise XetFormatError(f"chunk is not a valid LZ4 frame ({exc})") from None
    if len(out) != expected or not d.eof:
        raise XetFormatError(f"chunk decompresses to other than its announced {expected} bytes")
    return out


def decode_chunk(scheme: int, payload: bytes, uncompressed: int) -> bytes:
    """The chunk's bytes from one record's payload (bounded: never more than ``uncompressed``)."""
    if scheme == SCHEME_NONE:
        if len(payload) != uncompressed:
            raise XetFormatError("uncompressed chunk whose two lengths differ")
        return payload
    if scheme == SCHEME_LZ4:
        return _lz4_decompress(payload, uncompressed)
    if scheme == SCHEME_BG4_LZ4:
        return _bg4_ungroup(_lz4_decompress(payload, uncompressed))
    raise XetFormatError(f"unknown chunk compression scheme {scheme}")


@dataclass(frozen=True)
class XorbChunk:
    hash: bytes
    length: int  # uncompressed
    offset: int  # of its record (header + payload, as received) in the xorb
    record_length: int


def parse_xorb(body: bytes | BinaryIO, size: int | None = None) -> list[XorbChunk]:
    """The verified chunks of a xorb upload (each chunk's hash computed from its bytes), read
    record by record from ``body`` (bytes, or a file of ``size`` bytes): one chunk in memory at a
    time, never the whole xorb."""
    fh = io.BytesIO(body) if isinstance(body, (bytes, bytearray)) else body
    n = len(body) if isinstance(body, (bytes, bytearray)) else size
    if n is None:
        raise ValueError("parse_xorb of a file needs its size")
    if n > MAX_XORB_BYTES:
        raise XetFormatError(f"xorb of {n} bytes exceeds the limit of {MAX_XORB_BYTES}")
    out: list[XorbChunk] = []
    pos = 0
    while pos < n:
        head = fh.read(min(CHUNK_HEADER, n - pos))
        if head.startswith(XORB_FOOTER_IDENT):
            break  # an old client's footer: the chunk records are what count
        if len(head) < CHUNK_HEADER:
            raise XetFormatError("xorb ends inside a chunk header (truncated)")
        version = head[0]
        clen = int.from_bytes(head[1:4], "little")
        scheme = head[4]
        ulen = int.from_bytes(head[5:8], "little")
        if version != 0:
            raise XetFormatError(f"chunk header version {version} (only 0 is known)")
        if ulen == 0 or ulen > MAX_CHUNK_SIZE or clen > 2 * MAX_CHUNK_SIZE:
            raise XetFormatError(f"chunk of {ulen} bytes ({clen} compressed) is out of bounds")
        end = pos + CHUNK_HEADER + clen
        if end > n:
            raise XetFormatError("xorb ends inside a chunk (truncated)")
        payload = fh.read(clen)
        if len(payload) != clen:
            raise XetFormatError("xorb ends inside a chunk (truncated)")
        data = decode_chunk(scheme, payload, ulen)
        out.append(XorbChunk(chunk_hash(data), ulen, pos, CHUNK_HEADER + clen))
        if len(out) > MAX_XORB_CHUNKS:
            raise XetFormatError(f"xorb has more than {MAX_XORB_CHUNKS} chunks")
        pos = end
    if not out:
        raise XetFormatError("xorb holds no chunk")
    return out


def decode_record(record: bytes) -> bytes:
    """The bytes of one stored chunk record."""
    if len(record) < CHUNK_HEADER:
        raise XetFormatError("chunk record shorter than its header")
    clen = int.from_bytes(record[1:4], "little")
    ulen = int.from_bytes(record[5:8], "little")
    if len(record) != CHUNK_HEADER + clen:
        raise XetFormatError("chunk record length differs from its header")
    return decode_chunk(record[4], record[CHUNK_HEADER:], ulen)


# -- shards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTerm:
    xorb: bytes
    unpacked: int
    start: int
    end: int  # exclusive
    range_hash: bytes | None


@dataclass(frozen=True)
class ShardFile:
    hash: bytes
    terms: list[ShardTerm]
    sha256: bytes | None


def parse_shard(body: bytes, *, max_files: int = MAX_SHARD_FILES) -> list[ShardFile]:
    """The file reconstructions a shard upload declares (its xorb listing is not needed: every
    xorb a term names must already be stored, which the caller checks)."""
    n = len(body)
    if n > MAX_SHARD_BYTES:
        raise XetFormatError(f"shard of {n} bytes exceeds the limit of {MAX_SHARD_BYTES}")
    if n < 48 or body[:32] != SHARD_TAG:
        raise XetFormatError("not a Xet shard (wrong magic tag)")
    version = int.from_bytes(body[32:40], "little")
    if version != SHARD_HEADER_VERSION:
        raise XetFormatError(f"shard header version {version} (only {SHARD_HEADER_VERSION} is known)")
    pos = 48
    files: list[ShardFile] = []

    def take(count: int) -> int:
        nonlocal pos
        start = pos
        if count < 0 or n - pos < count * ENTRY:
            raise XetFormatError("shard ends inside its file section (truncated)")
        pos += count * ENTRY
        return start

    while True:
        at = take(1)
        fhash = body[at : at + 32]
        if fhash == BOOKEND:
            break
        flags, count = struct.unpack_from("<II", body, at + 32)
        if count == 0 or count > MAX_FILE_TERMS:
            raise XetFormatError(f"file entry with {count} terms")
        at = take(count)
        terms_raw = [struct.unpack_from("<32sIIII", body, at + i * ENTRY) for i in range(count)]
        hashes: list[bytes | None] = [None] * count
        if flags & FLAG_VERIFICATION:
            at = take(count)
            hashes = [body[at + i * ENTRY : at + i * ENTRY + 32] for i in range(count)]
        sha = None
        if flags & FLAG_METADATA_EXT:
            at = take(1)
            sha = body[at : at + 32]
        terms = []
        for (xh, _flags, unpacked, start, end), rh in zip(terms_raw, hashes, strict=True):
            if end <= start:
                raise XetFormatError(f"term with an empty chunk range [{start}, {end})")
            terms.append(ShardTerm(xh, unpacked, start, end, rh))
        files.append(ShardFile(fhash, terms, sha))
        if len(files) > max_files:
            raise XetFormatError(f"shard declares more than {max_files} files")
    # The xorb section: read through (well formed, bookend present); its content is not needed.
    while True:
        if n - pos < ENTRY:
            raise XetFormatError("shard ends inside its xorb section (truncated)")
        at = pos
        pos += ENTRY
        if body[at : at + 32] == BOOKEND:
            break
        (count,) = struct.unpack_from("<I", body, at + 36)
        if count > MAX_XORB_CHUNKS or n - pos < count * ENTRY:
            raise XetFormatError("shard ends inside its xorb section (truncated)")
        pos += count * ENTRY
    return files


def build_dedupe_shard(xorbs: Sequence[tuple[bytes, int, Sequence[tuple[bytes, int, int]]]], *, timestamp: int) -> bytes:
    """A complete shard (header, empty file section, xorb section, lookup tables, 200-byte footer)
    listing ``xorbs``: ``(xorb hash, stored bytes, [(chunk hash, byte offset in the xorb, unpacked
    length)])``. Lookup keys are each hash's first 8 bytes as a little-endian u64; a xorb's lookup
    value is the index of its header among the xorb section's 48-byte entries, a chunk's is that
    index plus the chunk's position in the xorb."""
    out = bytearray(SHARD_TAG + struct.pack("<QQ", SHARD_HEADER_VERSION, SHARD_FOOTER_SIZE))
    file_info_offset = len(out)
    out += BOOKEND + bytes(16)
    xorb_info_offset = len(out)
    xorb_lookup: list[tuple[int, int]] = []
    chunk_lookup: list[tuple[int, int, int]] = []
    unpacked_total = 0
    index = 0
    for xh, stored, chunks in sorted(xorbs, key=lambda x: x[0]):
        unpacked = sum(c[2] for c in chunks)
        xorb_lookup.append((int.from_bytes(xh[:8], "little"), index))
        out += xh + struct.pack("<IIII", 0, len(chunks), unpacked, stored)
        for ci, (ch, offset, length) in enumerate(chunks):
            chunk_lookup.append((int.from_bytes(ch[:8], "little"), index, ci))
            out += ch + struct.pack("<IIII", offset, length, 0, 0)
        index += 1 + len(chunks)
        unpacked_total += unpacked
    out += BOOKEND + bytes(16)
    file_lookup_offset = len(out)
    xorb_lookup_offset = len(out)
    for key, idx in sorted(xorb_lookup):
        out += struct.pack("<QI", key, idx)
    chunk_lookup_offset = len(out)
    for key, xi, ci in sorted(chunk_lookup):
        out += struct.pack("<QII", key, xi, ci)
    footer_offset = len(out)
    out += struct.pack(
        "<9Q", SHARD_FOOTER_VERSION, file_info_offset, xorb_info_offset, file_lookup_offset, 0,
        xorb_lookup_offset, len(xorb_lookup), chunk_lookup_offset, len(chunk_lookup),
    )
    out += bytes(32)  # chunk_hash_hmac_key: none, chunk hashes in the clear
    out += struct.pack("<QQ", timestamp, (1 << 64) - 1)  # creation time, no expiry
    out += bytes(48)
    out += struct.pack("<QQQQ", sum(x[1] for x in xorbs), unpacked_total, unpacked_total, footer_offset)
    return bytes(out)
