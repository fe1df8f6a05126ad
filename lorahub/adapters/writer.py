"""Writing safetensors files without torch.

Used for headers rewritten by ``lorahub meta set``, synthetic adapters (demo,
tests) and converted files. Writes are atomic (temporary file + rename).

:func:`write_adapter` writes the adapters lorahub makes for other tools (trained
files, blends, conversions): serialised by the ``safetensors`` library itself,
as kohya-ss/sd-scripts saves its files, and carrying the two hashes kohya embeds
(:func:`kohya_hashes`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_bytes, atomic_writer
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


# ------------------------------------------------------------------------------------ kohya's way

#: safetensors dtype codes -> the dtype names ``safetensors.serialize`` takes.
_SERIALIZE_DTYPES = {
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I8": "int8", "U8": "uint8",
    "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
}

AUTOV1_WINDOW = (0x100000, 0x110000)


def serialize_tensors(
    tensors: Mapping[str, tuple[str, Iterable[int], bytes]], metadata: Mapping[str, str] | None
) -> bytes:
    """The bytes ``safetensors`` itself writes for ``name -> (dtype, shape, raw bytes)`` and ``metadata``.

    The same serialiser ``safetensors.torch.save`` uses (tensor order, header
    layout and padding included), so hashes of the result are the ones kohya
    computes for the same tensors.
    """
    import numpy as np
    import safetensors

    md = check_metadata(metadata) if metadata is not None else None
    keep: list[Any] = []
    flat: dict[str, Any] = {}
    spec = getattr(safetensors, "TensorSpec", None)
    for name, (dtype, shape, data) in tensors.items():
        code = dtype_code(dtype)
        shape = [int(d) for d in shape]
        if spec is not None:  # safetensors >= 0.7: pointers to the bytes
            arr = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, dtype=np.uint8)
            keep.append(arr)
            flat[name] = spec(dtype=_SERIALIZE_DTYPES[code], shape=shape, data_ptr=arr.ctypes.data,
                              data_len=len(data))
        else:  # pragma: no cover - older safetensors took the bytes themselves
            flat[name] = {"dtype": _SERIALIZE_DTYPES[code], "shape": shape, "data": bytes(data)}
    return bytes(safetensors.serialize(flat, metadata=md))


def kohya_hashes(
    tensors: Mapping[str, tuple[str, Iterable[int], bytes]], metadata: Mapping[str, str] | None
) -> tuple[str, str]:
    """``(sshs_model_hash, sshs_legacy_hash)`` as kohya-ss/sd-scripts computes them.

    ``library/train_util.py`` ``precalculate_safetensors_hashes``: serialise the
    tensors in memory with only the ``ss_*`` metadata, then
    ``addnet_hash_safetensors`` (SHA-256 of everything after the header, 64 hex)
    and ``addnet_hash_legacy`` (SHA-256 of what ``seek(0x100000); read(0x10000)``
    returns, first 8 hex: the hash of nothing, ``e3b0c442``, for a copy of at
    most 1 MiB).
    """
    ss = {k: v for k, v in (metadata or {}).items() if k.startswith("ss_")}
    blob = serialize_tensors(tensors, ss)
    n = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + n :]).hexdigest()
    legacy = hashlib.sha256(blob[AUTOV1_WINDOW[0] : AUTOV1_WINDOW[1]]).hexdigest()[:8]
    return model_hash, legacy


def write_adapter(
    path: str | os.PathLike[str],
    tensors: Mapping[str, tuple[str, Iterable[int], bytes]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write an adapter for other tools: ``metadata`` plus ``sshs_model_hash``/``sshs_legacy_hash``.

    Serialised as :func:`serialize_tensors` does (so the file's tensor hash is
    the embedded ``sshs_model_hash``), atomically.
    """
    md = dict(check_metadata(metadata))
    md["sshs_model_hash"], md["sshs_legacy_hash"] = kohya_hashes(tensors, md)
    blob = serialize_tensors(tensors, md)
    path = Path(path)
    atomic_write_bytes(path, blob)
    return path
