"""lorahub.hub.paths: .git under every name a file system gives it (issue 13, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub.hub.package import load_package
from lorahub.hub.paths import git_alias_in, is_git_alias, local_path_problem

ALIASES = [".git", ".GIT", ".Git", ".gIt", "git~1", "GIT~1", "git~2", ".git.", ".git ", ".git. .", ".git::$INDEX_ALLOCATION",
           ".git:$I30:$INDEX_ALLOCATION", "\u200c.git", ".g\u200dit", ".git\ufeff", ".\u206agit", "\uff0e\uff47\uff49\uff54"]
NOT_ALIASES = [".gitattributes", ".gitignore", ".github", ".gitmodules", "git", "a.git", ".gits", "git~", "git~1x", "x.git.",
               "..git", ".", "..", ""]


@pytest.mark.parametrize("segment", ALIASES)
def test_git_aliases(segment: str) -> None:
    assert is_git_alias(segment)
    for path in (f"{segment}/config", f"sub/{segment}/config", f"a/b/{segment}", f"sub\\{segment}\\config"):
        assert git_alias_in(path) == segment
        assert local_path_problem(path) is not None


@pytest.mark.parametrize("segment", NOT_ALIASES)
def test_not_git_aliases(segment: str) -> None:
    assert not is_git_alias(segment)


def test_local_path_problems() -> None:
    for ok in ("a.txt", "samples/0.png", ".gitattributes", "sub/.github/x.yml", "é/文件"):
        assert local_path_problem(ok) is None, ok
    for bad in ("", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b", "C:/x", "a\x00b", "sub/.GIT/config", None, 3):
        assert local_path_problem(bad) is not None, bad


def test_push_never_uploads_a_git_folder(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    for rel in ("pytorch_lora_weights.safetensors", "README.md", "samples/a.png", "git~1/config", "GIT~1/hooks/x",
                ".GIT/config", "sub/.git/config", "\u200c.git/config", "samples/\u200c.git/config", "a/.git"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(b"x")
    files = load_package(pkg).files
    assert set(files) == {"pytorch_lora_weights.safetensors", "README.md", "samples/a.png"}
