"""``validate_file`` / ``validate_paths``: is this a sound adapter file?

Errors make a file invalid (exit 1 in the CLI); warnings do not. Every message
is one line naming the key or byte offset. Pickle files are refused by name and
never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from lorahub.errors import AdapterFileError, NotFoundError
from lorahub.schemas.adapters import ValidationReport

from .families import disagree
from .formats import NOT_LOADABLE_REASON, analyze, declared_family
from .header import SafetensorsHeader, _short, layout_problems, read_header
from .kohya import training_resolution
from .pickles import PICKLE_SUFFIXES

#: Suffixes ``validate`` picks up inside folders (pickles so they are reported).
SCANNED_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES


def validate_file(path: str | os.PathLike[str], *, deep: bool = False, check_hash: bool = True) -> ValidationReport:
    """Validate one file. Never raises for a bad file: the report says what is wrong."""
    spath = str(path)
    try:
        header = read_header(path)
    except AdapterFileError as exc:
        return ValidationReport(path=spath, valid=False, errors=[exc.reason])
    errors: list[str] = []
    warnings: list[str] = []
    errors.extend(header.problems)
    layout = layout_problems(header)
    errors.extend(layout)
    errors.extend(_metadata_problems(header))
    an = analyze(header, read_alpha=not layout)
    errors.extend(an.errors)
    if not an.modules:
        errors.append("no LoRA or LyCORIS weights found (keys do not follow any adapter format)")
    warnings.extend(an.warnings)
    md = header.string_metadata()
    declared = declared_family(md)
    if disagree(an.shape_family, declared):
        warnings.append(f"metadata declares {declared} but the tensor shapes say {an.shape_family}")
    warnings.extend(training_resolution(md)[1])
    if an.format in NOT_LOADABLE_REASON and an.modules:
        warnings.append(NOT_LOADABLE_REASON[an.format])
    elif an.diffusers_problem:
        warnings.append(an.diffusers_problem)
    if an.shape_mismatches:
        more = f" and {len(an.shape_mismatches) - 1} more" if len(an.shape_mismatches) > 1 else ""
        warnings.append(f"diffusers refuses the whole file: {an.shape_mismatches[0]}{more} (lorahub convert fixes it)")
    if deep and not layout:
        errors.extend(nonfinite_problems(header))
    if check_hash and not layout and md.get("sshs_model_hash"):
        warnings.extend(_embedded_hash_warning(header, md["sshs_model_hash"]))
    return ValidationReport(path=spath, valid=not errors, errors=errors, warnings=warnings)


def _metadata_problems(header: SafetensorsHeader) -> list[str]:
    out = []
    for key, value in header.metadata.items():
        if not isinstance(value, str):
            out.append(f"metadata value of '{_short(key)}' is a JSON {_json_type(value)}, not a string")
    return out


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _embedded_hash_warning(header: SafetensorsHeader, embedded: str) -> list[str]:
    embedded = embedded.strip()
    if embedded.lower().startswith("0x"):
        return []  # LyCORIS state-dict-order hash: cannot be recomputed from the file
    try:
        from .fingerprint import fingerprint_file
    except ImportError:  # pragma: no cover - fingerprint layer missing
        return []
    try:
        fp = fingerprint_file(header.path)
    except AdapterFileError:
        return []
    if fp.tensor_sha256 and fp.tensor_sha256.lower() != embedded.lower():
        return [
            f"embedded sshs_model_hash {_short(embedded[:12])}... does not match the tensor data "
            f"({fp.tensor_sha256[:12]}...): the file was changed after it was hashed"
        ]
    return []


_FLOAT_NONFINITE = {
    # dtype: (uint view, mask, value meaning non-finite when (x & mask) == value)
    "F16": ("<u2", 0x7C00, 0x7C00),
    "BF16": ("<u2", 0x7F80, 0x7F80),
    "F32": ("<u4", 0x7F800000, 0x7F800000),
    "F64": ("<u8", 0x7FF0000000000000, 0x7FF0000000000000),
    "F8_E5M2": ("u1", 0x7C, 0x7C),
    "F8_E4M3": ("u1", 0x7F, 0x7F),
}


def nonfinite_problems(header: SafetensorsHeader, *, chunk_bytes: int = 32 << 20) -> list[str]:
    """Read every float tensor (in bounded chunks) and name those holding NaN or Inf."""
    import numpy as np

    out: list[str] = []
    try:
        fh = open(header.path, "rb")  # noqa: SIM115
    except OSError as exc:
        return [f"cannot read tensor data: {exc.strerror or exc}"]
    with fh:
        for t in sorted(header.tensors.values(), key=lambda t: t.begin):
            spec = _FLOAT_NONFINITE.get(t.dtype)
            if spec is None or t.nbytes == 0:
                continue
            view, mask, value = spec
            item = np.dtype(view).itemsize
            step = max(item, chunk_bytes - chunk_bytes % item)
            bad = 0
            pos = t.begin
            while pos < t.end:
                n = min(step, t.end - pos)
                fh.seek(header.data_start + pos)
                raw = fh.read(n)
                if len(raw) != n:
                    out.append(f"tensor '{_short(t.name)}': data truncated at file byte {header.data_start + pos}")
                    break
                arr = np.frombuffer(raw, dtype=view)
                bad += int(np.count_nonzero((arr & np.array(mask, dtype=view)) == np.array(value, dtype=view)))
                pos += n
            if bad:
                out.append(f"tensor '{_short(t.name)}': {bad} non-finite value(s) (NaN or Inf)")
    return out


def iter_files(paths: Iterable[str | os.PathLike[str]], suffixes: tuple[str, ...] = SCANNED_SUFFIXES) -> list[Path]:
    """Expand files and folders (recursively, sorted) into adapter candidate files."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(
                f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith(".")
            )
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise NotFoundError(f"{p}: no such file or folder")
    return out


def validate_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    deep: bool = False,
    on_result: Callable[[ValidationReport], None] | None = None,
) -> list[ValidationReport]:
    reports = []
    for f in iter_files(paths):
        report = validate_file(f, deep=deep)
        reports.append(report)
        if on_result is not None:
            on_result(report)
    return reports
