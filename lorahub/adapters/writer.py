"""Writing safetensors files without torch.

Used for headers rewritten by ``lorahub meta set``, synthetic adapters (demo,
tests) and converted files. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._atomic import atomic_writer
from ..errors import MetadataError
from .header import DTYPE_BITS

#: torch / numpy spellings -> safetensors dtype codes.
DTYPE_CODES: dict[str, str] = {
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float": "F32",
    "float64": "F64",
    "double": "F64",
    "int8": "I8",
    "uint8": "U8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "bool": "BOOL",
}


def dtype_code(dtype: str) -> str:
    if dtype in DTYPE_BITS:
        return dtype
    code = DTYPE_CODES.get(str(dtype).replace("torch.", ""))
    if code is None:
        raise ValueError(f"unsupported dtype {dtype!r}")
    return code


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The safetensors rule: a flat object of string keys and string values."""
    if metadata is None:
        return {}
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise MetadataError(f"metadata key {key!r} is not a string")
        if not isinstance(value, str):
            raise MetadataError(
                f"metadata value of '{key}' is a {type(value).__name__}, not a string",
                hint="safetensors metadata values must be strings; encode structured values as JSON text",
            )
        out[key] = value
    return out


def encode_header(entries: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, str] | None) -> bytes:
    """Serialise a header (tensor entries with data_offsets) padded to a multiple of 8."""
    obj: dict[str, Any] = {}
    md = check_metadata(metadata)
    if md:
        obj["__metadata__"] = md
    obj.update(entries)
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, tuple[str, Iterable[int], bytes]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``name -> (dtype, shape, raw little-endian bytes)`` atomically, in name order."""
    entries: dict[str, dict[str, Any]] = {}
    blobs: list[bytes] = []
    pos = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        code = dtype_code(dtype)
        shape = [int(d) for d in shape]
        numel = 1
        for d in shape:
            numel *= d
        expected = (numel * DTYPE_BITS[code] + 7) // 8
        if len(data) != expected:
            raise ValueError(f"tensor {name!r}: {code} {shape} needs {expected} bytes, got {len(data)}")
        entries[name] = {"dtype": code, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    path = Path(path)
    with atomic_writer(path) as fh:
        fh.write(encode_header(entries, metadata))
        for blob in blobs:
            fh.write(blob)
    return path


def write_safetensors_zeros(
    path: str | os.PathLike[str],
    tensors: Mapping[str, tuple[str, Iterable[int]]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write zero-filled tensors of the given dtypes and shapes (for manifests and tests)."""
    full = {}
    for name, (dtype, shape) in tensors.items():
        code = dtype_code(dtype)
        shape = list(shape)
        numel = 1
        for d in shape:
            numel *= int(d)
        full[name] = (code, shape, bytes((numel * DTYPE_BITS[code] + 7) // 8))
    return write_safetensors(path, full, metadata)


def write_numpy(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write numpy arrays (float16/float32/...) as safetensors."""
    import numpy as np

    tensors = {}
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        arr = arr.astype(dt, copy=False)
        tensors[name] = (str(arr.dtype), arr.shape, arr.tobytes())
    return write_safetensors(path, tensors, metadata)
