"""``lorahub fingerprint PATH...``: every community hash of adapter files, from one read each.

The cached path must be fast (a cached re-run of a 1 GiB file is one SQLite
lookup), so this module imports neither pydantic nor ``lorahub.cli.output``
(which imports pydantic): it prints the plain dicts of
:func:`lorahub.adapters.fingerprint.iter_records`, which have exactly the shape
of :class:`lorahub.schemas.adapters.FingerprintReport`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

#: Show a progress bar when there is at least this much to hash (or several files).
PROGRESS_MIN_BYTES = 64 << 20

_LABELS = [
    ("sha256", "SHA256"),
    ("autov1", "AutoV1"),
    ("autov2", "AutoV2"),
    ("autov3", "AutoV3"),
    ("tensor_sha256", "tensor SHA256"),
    ("crc32", "CRC32"),
    ("blake3", "BLAKE3"),
]

_EMBEDDED = {
    "match": "match",
    "mismatch": "MISMATCH: the file's tensors are not the ones the embedded hash describes",
    "absent": "absent",
    "unverifiable": "unverifiable (LyCORIS '0x' hash or not a SHA-256)",
}


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def render(record: dict[str, Any]) -> list[str]:
    """Human-readable block for one file (all hex lower case, as in --json)."""
    head = f"{record['path']}  ({_size(record['size'])}{', cached' if record.get('cached') else ''})"
    lines = [head]
    width = max(len(label) for _, label in _LABELS + [("", "sshs_model_hash")])
    for key, label in _LABELS:
        value = record.get(key)
        lines.append(f"  {label:<{width}}  {value if value is not None else '-'}")
    status = record.get("embedded_hash", "absent")
    text = _EMBEDDED.get(status, status)
    embedded = record.get("embedded_sshs_model_hash")
    if embedded and status != "match":
        text += f" [{embedded}]"
    if status == "mismatch":
        text = click.style(text, fg="yellow")
    lines.append(f"  {'sshs_model_hash':<{width}}  {text}")
    for w in record.get("warnings", []):
        lines.append(click.style("  warning: ", fg="yellow") + w)
    return lines


class _Bar:
    """A tqdm bar on stderr, created only when it will be shown."""

    def __init__(self, total: int, files: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="fingerprint" if files == 1 else f"fingerprint ({files} files)",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _want_progress(files: list[str], from_folder: bool) -> tuple[bool, int]:
    if not _stderr_is_tty() or os.environ.get("LORAHUB_NO_PROGRESS"):
        return False, 0
    total = 0
    for f in files:
        try:
            total += os.stat(f).st_size
        except OSError:
            pass
    return (total >= PROGRESS_MIN_BYTES or (from_folder and len(files) > 1)), total


@click.command("fingerprint")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout (always a list).")
@click.option("--no-cache", is_flag=True, help="Hash again and leave the fingerprint cache alone (neither read nor written).")
def fingerprint_cmd(paths: tuple[str, ...], as_json: bool, no_cache: bool) -> None:
    """Compute every hash used to identify adapter files: SHA256 (the Hub's LFS
    oid), AutoV1, AutoV2, AutoV3 (Civitai), the tensor SHA-256 (kohya
    sshs_model_hash, A1111), CRC32 and BLAKE3, in one read of each file, and
    check an embedded sshs_model_hash against the tensors.

    PATHS are files (of any type: a pickle is hashed, never loaded) or folders,
    searched recursively for *.safetensors. Results are cached under
    $LORAHUB_HOME/cache by path, size, mtime and inode, so an unchanged file is
    not read again. Hex is lower case; compare hashes case-insensitively.
    """
    from lorahub.adapters.fingerprint import expand_paths, iter_records
    from lorahub.errors import NotFoundError

    for p in paths:
        if not os.path.exists(p):
            raise NotFoundError(f"{p}: no such file or folder")
    files = expand_paths(paths)
    from_folder = any(os.path.isdir(p) for p in paths)
    if not files:
        raise NotFoundError(f"no *.safetensors files under {', '.join(paths)}")

    show, total = _want_progress(files, from_folder)
    bar = _Bar(total, len(files)) if show else None
    records: list[dict[str, Any]] = []
    try:
        for i, rec in enumerate(iter_records(files, use_cache=not no_cache, progress=bar)):
            records.append(rec)
            if not as_json:
                if bar is not None:
                    bar.bar.clear()
                if i:
                    click.echo("")
                for line in render(rec):
                    click.echo(line)
                if bar is not None:
                    bar.bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        sys.stdout.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()
