"""lorahub.safezip: the one zip extractor (the Space's training sets and packages to push)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lorahub.errors import UsageError
from lorahub.safezip import extract_zip, extract_zip_file, member_parts


@pytest.mark.parametrize("name", [
    "/etc/passwd", "C:/x.txt", "a/../../x.txt", "../x.txt", ".git/config", "sub/.git/hooks/post-checkout",
    "git~1/config", "GIT~2/config", "sub/.GIT./config", "\u200c.git/config", ".g\u200cit/config",
    "__MACOSX/a.png", "a/.DS_Store", "dir/", "a\x00b.txt",
])
def test_member_names_that_are_never_written(name: str) -> None:
    assert member_parts(name) is None


def test_plain_members_keep_their_folders() -> None:
    assert member_parts("set/1_cat/a.png") == ("set", "1_cat", "a.png")
    assert member_parts("set\\b.txt") == ("set", "b.txt")  # a zip written on Windows


def test_extract_writes_only_plain_members_inside_the_folder(tmp_path: Path) -> None:
    z = tmp_path / "in.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok/a.png", b"png")
        zf.writestr("ok/a.txt", b"caption")
        zf.writestr("../escape.txt", b"x")
        zf.writestr("sub/git~1/config", b"[core]\n\tfsmonitor = touch /tmp/owned\n")
        zf.writestr("note.md", b"kept only without a filter")
    dest = tmp_path / "out"
    dest.mkdir()
    assert extract_zip_file(z, dest, keep=lambda sfx: sfx in (".png", ".txt")) == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["ok/a.png", "ok/a.txt"]
    assert not (tmp_path / "escape.txt").exists()


def test_bounds_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", b"small")
        zf.writestr("b.txt", b"\0" * (4 << 20))  # 4 MiB of zeros: compressed > 100:1
    dest = tmp_path / "out"
    dest.mkdir()
    with zipfile.ZipFile(z) as zf, pytest.raises(UsageError, match="zip bomb"):
        extract_zip(zf, dest)
    with zipfile.ZipFile(z) as zf, pytest.raises(UsageError, match="more than 1 files"):
        extract_zip(zf, dest, max_files=1, max_ratio=10**6)
    assert not any(dest.iterdir())


def test_a_file_that_is_not_a_zip_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"PK\x03\x04 but no zip")
    with pytest.raises(UsageError, match=r"^x\.zip: not a readable zip file$"):
        extract_zip_file(bad, tmp_path)
