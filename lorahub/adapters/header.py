"""Reading a safetensors header, and only the header.

Layout: 8 bytes little-endian ``N``, then ``N`` bytes of UTF-8 JSON, then the
packed tensor data. Nothing here reads tensor data (except the few bytes of
scalar tensors on request, see :func:`read_scalars`) and nothing here trusts
the file: every length is checked against the real file size before it is
used, so a header that claims gigabytes is refused before anything is read.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ..errors import AdapterFileError
from .pickles import PICKLE_SUFFIXES, pickle_refusal

#: The safetensors library refuses headers above 100 MB; so do we.
MAX_HEADER_BYTES = 100 * 1000 * 1000

#: Bits per element of every dtype safetensors defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}

#: Friendly names (as torch spells them).
DTYPE_NAMES: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4_e2m1",
    "F6_E2M3": "float6_e2m3",
    "F6_E3M2": "float6_e3m2",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
    "C64": "complex64",
}

#: Shapes and offsets are u64 in the format; larger numbers are refused per tensor.
MAX_U64 = (1 << 64) - 1



class TensorInfo(NamedTuple):
    """One tensor entry of the header. Offsets are relative to the data region.

    A named tuple: built, hashed and compared in C (a header's table is a key of the sketch's plans, and an
    SDXL LoRA has about 3,000 tensors)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def expected_nbytes(self) -> int | None:
        bits = DTYPE_BITS.get(self.dtype)
        if bits is None:
            return None
        total_bits = self.numel * bits
        return (total_bits + 7) // 8


_new_tuple = tuple.__new__


def _make_info(name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int) -> TensorInfo:
    """``TensorInfo(name, dtype, shape, begin, end)`` for checked values, without the keyword handling of the
    named tuple's ``__new__``."""
    return _new_tuple(TensorInfo, (name, dtype, shape, begin, end))


@dataclass
class SafetensorsHeader:
    """A parsed header. ``problems`` lists entries that could not be understood."""

    path: str
    file_size: int
    header_len: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, object]
    problems: list[str] = field(default_factory=list)
    raw_metadata_present: bool = False

    @property
    def data_start(self) -> int:
        return 8 + self.header_len

    @property
    def data_len(self) -> int:
        return self.file_size - self.data_start

    def string_metadata(self) -> dict[str, str]:
        """Metadata restricted to the string values the format allows."""
        return {k: v for k, v in self.metadata.items() if isinstance(v, str)}


def sniff_pickle(path: str | os.PathLike[str], head: bytes) -> str | None:
    """Name the pickle container ``head`` starts, or ``None``. Never unpickles."""
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "a raw pickle stream"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()[:10000]
        except Exception:  # noqa: BLE001 - any unreadable zip is still refused, never loaded
            return "a zip archive"
        if any(n.endswith(".pkl") for n in names):
            return "a PyTorch zip archive with a pickle inside"
        return "a zip archive"
    return None


def read_header(path: str | os.PathLike[str], *, max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Parse the header of ``path``; raise :class:`AdapterFileError` when it is unusable.

    Malformed individual tensor entries do not raise: they are skipped and
    described in ``problems`` so that inspection can go on and validation can
    report every one of them.
    """
    spath = str(path)
    p = Path(path)
    fh, _ = open_regular(spath)
    with fh:
        try:
            file_size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
        except OSError as exc:
            raise AdapterFileError(spath, f"cannot read: {exc.strerror or exc}") from None
        peek = _peek(fh)
        # A plausible length followed by '{' is a safetensors header, whatever its first
        # bytes look like (N = 640 starts b"\x80\x02", like a pickle stream).
        looks_safetensors = _plausible_header(head, file_size) and peek[:1] == b"{"
        kind = None if looks_safetensors else sniff_pickle(p, head + peek)
        if kind is not None or (p.suffix.lower() in PICKLE_SUFFIXES and not _plausible_header(head, file_size)):
            raise pickle_refusal(spath, kind or f"a '{p.suffix}' file that is not safetensors")
        if len(head) < 8:
            raise AdapterFileError(spath, f"not a safetensors file: {file_size} bytes, too short for a header")
        (n,) = struct.unpack("<Q", head)
        if n == 0:
            raise AdapterFileError(spath, "not a safetensors file: header length is 0")
        if n > file_size - 8:
            raise AdapterFileError(
                spath,
                f"truncated or not safetensors: header length {n} at byte 0 runs past the end of the "
                f"{file_size}-byte file",
            )
        if n > max_header_bytes:
            raise AdapterFileError(spath, f"header length {n} exceeds the {max_header_bytes}-byte limit")
        try:
            raw = fh.read(n)
        except OSError as exc:
            raise AdapterFileError(spath, f"cannot read header: {exc.strerror or exc}") from None
        if len(raw) != n:
            raise AdapterFileError(spath, f"truncated: header needs {n} bytes, only {len(raw)} readable")
    return parse_header_bytes(spath, raw, file_size)


def open_regular(path: str, *, buffering: int = -1) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading; anything else is one readable AdapterFileError.

    The type is checked before opening: opening a FIFO would wait for a writer forever.
    """
    try:
        if os.path.isdir(path):
            raise AdapterFileError(path, "is a folder, not a file")
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise AdapterFileError(path, "is not a regular file (a pipe, socket or device)")
        fh = open(path, "rb", buffering=buffering)  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise AdapterFileError(path, "no such file") from None
    except IsADirectoryError:
        raise AdapterFileError(path, "is a folder, not a file") from None
    except PermissionError:
        raise AdapterFileError(path, "permission denied") from None
    except OSError as exc:
        raise AdapterFileError(path, f"cannot open: {exc.strerror or exc}") from None
    return fh, os.fstat(fh.fileno())


def _peek(fh) -> bytes:  # noqa: ANN001
    pos = fh.tell()
    data = fh.read(8)
    fh.seek(pos)
    return data


def _plausible_header(head: bytes, file_size: int) -> bool:
    if len(head) < 8:
        return False
    (n,) = struct.unpack("<Q", head)
    return 2 <= n <= file_size - 8


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):  # a key given twice: name the first one repeated
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def parse_header_bytes(path: str, raw: bytes, file_size: int) -> SafetensorsHeader:
    """Parse the JSON header ``raw`` of a file of ``file_size`` bytes."""
    n = len(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdapterFileError(path, f"header is not UTF-8 (bad byte at offset {8 + exc.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as exc:
        raise AdapterFileError(path, f"header names '{_short(exc.key)}' twice") from None
    except RecursionError:
        raise AdapterFileError(path, "header is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        where = f" at byte {8 + pos}" if isinstance(pos, int) else ""
        msg = getattr(exc, "msg", str(exc))
        raise AdapterFileError(path, f"header is not valid JSON{where}: {msg}") from None
    if not isinstance(obj, dict):
        raise AdapterFileError(path, f"header is JSON {type(obj).__name__}, not an object")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        bad = _lone_surrogate(obj)
        if bad is not None:
            # safetensors (serde_json) refuses these too; they cannot be printed or re-encoded as UTF-8.
            raise AdapterFileError(path, f"header string '{_short(bad)}' holds a lone UTF-16 surrogate (\\uD800-\\uDFFF escape)")

    problems: list[str] = []
    metadata: dict[str, object] = {}
    present = "__metadata__" in obj
    raw_md = obj.pop("__metadata__", None)
    if present:
        if isinstance(raw_md, dict):
            metadata = dict(raw_md)
        elif raw_md is not None:
            problems.append(f"__metadata__ is a JSON {type(raw_md).__name__}, not an object")
    data_len = file_size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        info = _tensor_info(name, entry, problems)
        if info is not None:
            tensors[name] = info
    _ = data_len
    return SafetensorsHeader(
        path=path,
        file_size=file_size,
        header_len=n,
        tensors=tensors,
        metadata=metadata,
        problems=problems,
        raw_metadata_present=present,
    )


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(obj: object) -> str | None:
    """The first string (key or value) of decoded JSON holding an unpaired surrogate. Not recursive."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
    return None


def _short(text: str, limit: int = 160) -> str:
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tensor_info(name: str, entry: object, problems: list[str]) -> TensorInfo | None:
    """The entry of tensor ``name``, or None with its problem appended to ``problems``."""
    if type(entry) is dict and len(entry) == 3:  # the well-formed entry, checked at once
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (type(dtype) is str and dtype in DTYPE_BITS and type(shape) is list and len(shape) <= 16
                and type(offsets) is list and len(offsets) == 2):
            begin, end = offsets
            if type(begin) is int and type(end) is int and 0 <= begin <= end <= MAX_U64:
                for d in shape:
                    if type(d) is not int or not 0 <= d <= MAX_U64:
                        break
                else:
                    return _make_info(name, dtype, tuple(shape), begin, end)
    return _tensor_info_checked(name, entry, problems)


def _tensor_info_checked(name: str, entry: object, problems: list[str]) -> TensorInfo | None:
    """:func:`_tensor_info` check by check, each with its own message (what a malformed entry gets)."""
    label = f"tensor '{_short(name)}'"
    if not isinstance(entry, dict):
        problems.append(f"{label}: entry is a JSON {type(entry).__name__}, not an object")
        return None
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        problems.append(f"{label}: missing {', '.join(missing)}")
        return None
    extra = sorted(k for k in entry if k not in ("dtype", "shape", "data_offsets"))
    if extra:
        problems.append(f"{label}: unknown field(s) {', '.join(_short(k) for k in extra)}")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        problems.append(f"{label}: unknown dtype {_short(repr(dtype))}")
        return None
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        problems.append(f"{label}: shape {_short(json.dumps(shape))} is not a list of non-negative integers")
        return None
    if any(d > MAX_U64 for d in shape):
        problems.append(f"{label}: shape {_short(json.dumps(shape))} has a dimension of 2^64 or more")
        return None
    if len(shape) > 16:
        problems.append(f"{label}: shape has {len(shape)} dimensions")
        return None
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
    ):
        problems.append(f"{label}: data_offsets {_short(json.dumps(offsets))} is not two non-negative integers")
        return None
    if any(o > MAX_U64 for o in offsets):
        problems.append(f"{label}: data_offsets {_short(json.dumps(offsets))} lie beyond 2^64 bytes")
        return None
    begin, end = offsets
    if end < begin:
        problems.append(f"{label}: data_offsets end {end} is before begin {begin}")
        return None
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def layout_problems(header: SafetensorsHeader) -> list[str]:
    """Offsets out of range, overlaps, gaps and dtype/shape/byte-length mismatches."""
    out: list[str] = []
    data_len = header.data_len
    start = header.data_start
    for t in header.tensors.values():
        label = f"tensor '{_short(t.name)}'"
        if t.end > data_len:
            out.append(
                f"{label}: data ends at file byte {start + t.end}, past the end of the {header.file_size}-byte file"
            )
        exp = t.expected_nbytes
        if exp is not None and exp != t.nbytes:
            shape = _short("x".join(map(str, t.shape)) or "scalar")
            need = str(exp) if exp <= MAX_U64 else "more than 2^64"
            out.append(f"{label}: {t.dtype} {shape} needs {need} bytes but data_offsets span {t.nbytes}")
    ordered = sorted(header.tensors.values(), key=lambda t: (t.begin, t.end))
    pos = 0
    for t in ordered:
        if t.begin < pos:
            out.append(f"tensor '{_short(t.name)}': data at file byte {start + t.begin} overlaps the tensor before it")
        elif t.begin > pos:
            out.append(f"file bytes {start + pos}..{start + t.begin} belong to no tensor (gap in the data region)")
        pos = max(pos, t.end)
    if pos < data_len:
        out.append(f"{data_len - pos} trailing bytes after the last tensor (file byte {start + pos} onwards)")
    return out


def read_scalars(header: SafetensorsHeader, names: list[str]) -> dict[str, float]:
    """Read the values of small scalar tensors (kohya ``.alpha``): a few bytes each.

    Entries that are not scalars of at most 8 bytes inside the file are skipped.
    """
    import array

    fmt = {"F16": "e", "F32": "f", "F64": "d", "BF16": "bf16", "I64": "q", "I32": "i", "I16": "h", "U8": "B", "I8": "b"}
    wanted = []
    for name in names:
        t = header.tensors.get(name)
        if t is None or t.numel != 1 or t.dtype not in fmt or t.nbytes > 8 or t.end > header.data_len:
            continue
        if t.expected_nbytes != t.nbytes:
            continue
        wanted.append(t)
    out: dict[str, float] = {}
    if not wanted:
        return out
    _ = array
    try:
        fd = os.open(header.path, os.O_RDONLY)
    except OSError:
        return out
    try:
        for t in wanted:
            raw = os.pread(fd, t.nbytes, header.data_start + t.begin)
            if len(raw) != t.nbytes:
                continue
            code = fmt[t.dtype]
            if code == "bf16":
                (value,) = struct.unpack("<f", b"\x00\x00" + raw)
            else:
                (value,) = struct.unpack("<" + code, raw)
            out[t.name] = float(value)
    finally:
        os.close(fd)
    return out
