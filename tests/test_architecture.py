"""The allowed directions between the parts of lorahub (docs/architecture.md), read from the source.

Every module's imports are parsed with ``ast``: the ones at the top, the ones inside functions (lorahub
imports lazily, so most are there), relative ones, and ``importlib.import_module("lorahub...")`` with a
literal name. An import of a part the module's part may not use fails the test, naming the module and
the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folder of the tree -> the package it installs as (pyproject.toml's package-dir).
PARTS = {"lorahub": "lorahub", "cli": "lorahub.cli", "registry": "lorahub.registry", "space": "lorahub.space",
         "schemas": "lorahub.schemas"}
#: The part of a package name: the library is ``lorahub`` minus the four others.
FACES = {"lorahub.cli": "cli", "lorahub.registry": "registry", "lorahub.space": "space", "lorahub.schemas": "schemas"}

#: part -> the parts it may import (besides itself).
ALLOWED = {
    "library": {"schemas"},
    "schemas": set(),
    "registry": {"library", "schemas"},
    "space": {"library", "schemas"},
    "cli": {"library", "schemas", "registry", "space"},  # the CLI composes the faces
}
#: Edges between two faces other than the CLI's, module to module. None: the Space runs on its own only
#: composed by the CLI (``lorahub space``, an exported Space's ``app.py``: lorahub.cli.spacehost), which
#: opens the registry and hands the page its search function and its database's files.
EXCEPTIONS: set[tuple[str, str]] = set()


def part_of(name: str) -> str | None:
    """``library``, ``cli``, ``registry``, ``space`` or ``schemas`` for a ``lorahub...`` module; None otherwise."""
    if name != "lorahub" and not name.startswith("lorahub."):
        return None
    for pkg, part in FACES.items():
        if name == pkg or name.startswith(pkg + "."):
            return part
    return "library"


def modules() -> list[tuple[str, Path]]:
    out = []
    for folder, pkg in PARTS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if part_of(name) != ("library" if folder == "lorahub" else folder):
                continue  # lorahub/ never holds a face's folder, but be exact
            out.append((name, path))
    return out


def imports(name: str, path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every import in the file, absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            # `from lorahub import cli` imports the module lorahub.cli
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*"]
            found.append((node.lineno, mod))
        elif isinstance(node, ast.Call):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if fname == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
                found.append((node.lineno, node.args[0].value))
    return found


def violations() -> list[str]:
    known = {name for name, _ in modules()}
    bad: list[str] = []
    seen: set[tuple[str, int]] = set()
    for name, path in modules():
        mine = part_of(name)
        for line, target in imports(name, path):
            theirs = part_of(target)
            if theirs is None or theirs == mine:
                continue
            if mine == "library" and target not in known and target.rsplit(".", 1)[0] in known:
                # `from lorahub import cli`-style names that are attributes, not modules
                theirs = part_of(target.rsplit(".", 1)[0])
                if theirs == mine:
                    continue
            module = next((k for k in (target, target.rsplit(".", 1)[0]) if k in known), target)
            if theirs in ALLOWED[mine] or (name, module) in EXCEPTIONS:
                continue
            if (name, line) not in seen:  # `from X import Y` is one line, not two findings
                seen.add((name, line))
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name} ({mine}) imports {module} ({theirs})")
    return bad


def test_every_part_imports_only_what_it_may() -> None:
    bad = violations()
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_the_exceptions_are_still_needed() -> None:
    """An allowed exception that no module uses any more is removed from the list (and the docs)."""
    used = set()
    for name, path in modules():
        for _, target in imports(name, path):
            used |= {(name, target), (name, target.rsplit(".", 1)[0])}
    assert EXCEPTIONS <= used, EXCEPTIONS - used


@pytest.mark.parametrize(("source", "expected"), [
    ("import lorahub.registry.catalogue\n", "lorahub.registry.catalogue"),
    ("def f():\n    from lorahub.cli.main import cli\n", "lorahub.cli.main"),
    ("import importlib\nimportlib.import_module('lorahub.space.ui')\n", "lorahub.space.ui"),
    ("def g():\n    from ..registry import catalogue\n", "lorahub.registry.catalogue"),
])
def test_a_new_edge_is_found_with_its_line(tmp_path: Path, source: str, expected: str) -> None:
    """The checker sees imports at the top, inside functions, by importlib and relative ones."""
    mod = tmp_path / "probe.py"
    mod.write_text(source)
    found = imports("lorahub.hub.probe", mod)
    assert any(t == expected and part_of(t) != "library" for _, t in found), found
    line = next(n for n, t in found if t == expected)
    assert source.splitlines()[line - 1].strip().startswith(("import", "from", "importlib", "def"))
