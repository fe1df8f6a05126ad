"""Docs a contributor can trust: docs/cli.md is what the click commands say, every ``lorahub ...``
command shown in README.md and docs/*.md exists with the options it shows, and nothing in the
shipped packages points at files outside the repository."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from testkit import REPO

from lorahub.cli.main import cli

GENERATOR = REPO / "scripts" / "gen_cli_docs.py"
CLI_MD = REPO / "docs" / "cli.md"


def _generator():  # noqa: ANN202 - the module scripts/gen_cli_docs.py
    spec = importlib.util.spec_from_file_location("gen_cli_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    expected = _generator().render()
    current = CLI_MD.read_text(encoding="utf-8") if CLI_MD.exists() else ""
    assert current == expected, (
        "docs/cli.md is stale (a command, option or help text changed): run `make docs` "
        "(python scripts/gen_cli_docs.py) and commit docs/cli.md"
    )


def _tree(cmd: click.Command, ctx: click.Context) -> list[tuple[click.Command, click.Context]]:
    out = [(cmd, ctx)]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += _tree(sub, click.Context(sub, info_name=name, parent=ctx))
    return out


def test_cli_reference_lists_every_command_and_option() -> None:
    """Each command path has its section, with its usage line and a row for each visible option."""
    text = _generator().render()
    sections = dict(re.findall(r"^#{2,3} (lorahub(?: [\w-]+)*)\n(.*?)(?=^#{2,3} lorahub|\Z)", text, re.M | re.S))
    tree = _tree(cli, click.Context(cli, info_name="lorahub"))
    assert len(tree) > 25 and set(sections) == {ctx.command_path for _, ctx in tree}
    for cmd, ctx in tree:
        body = sections[ctx.command_path]
        assert f"```text\n{ctx.command_path} [OPTIONS]" in body, ctx.command_path
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert f"| `{', '.join(p.opts)}" in body, (ctx.command_path, p.opts)


# --------------------------------------------------------------------------- commands shown in the docs

_FENCE = re.compile(r"^```")


def shown_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every ``lorahub ...`` line in the file's code blocks (a ``$ `` prompt
    and indented continuation lines included)."""
    out: list[tuple[int, str]] = []
    inside = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            continue
        stripped = line.strip().removeprefix("$ ")
        if stripped.startswith("lorahub "):
            out.append((n, stripped))
        elif out and out[-1][0] == n - 1 - out[-1][1].count("\n") and line[:1].isspace() and stripped.startswith("["):
            out[-1] = (out[-1][0], out[-1][1] + "\n" + stripped)  # a continuation of the command above
    return out


def _cases() -> list[tuple[str, int, str]]:
    files = [REPO / "README.md", *sorted(f for f in (REPO / "docs").glob("*.md") if f != CLI_MD)]  # cli.md: generated
    return [(f.relative_to(REPO).as_posix(), n, cmd) for f in files for n, cmd in shown_commands(f)]


_OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)(?:=.*)?$")


@pytest.mark.parametrize(("doc", "line", "command"), _cases(), ids=lambda v: " ".join(str(v).split())[:40])
def test_commands_shown_in_the_docs_exist(doc: str, line: int, command: str) -> None:
    """The command path exists (``--help`` of it succeeds) and takes every option the line shows
    (``[--json]`` brackets mark optional parts; ``#`` starts a comment)."""
    tokens = shlex.split(command.replace("[", " ").replace("]", " ").replace("\n", " "), comments=True)
    assert tokens[0] == "lorahub"
    cmd: click.Command = cli
    ctx = click.Context(cli, info_name="lorahub")
    path = []
    rest = tokens[1:]
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        if sub is None and cmd.invoke_without_command:  # a command with subcommands (blend): its own argument
            break
        assert sub is not None, f"{doc}:{line}: `lorahub {' '.join([*path, rest[0]])}` is no command: {command!r}"
        path.append(rest.pop(0))
        cmd, ctx = sub, click.Context(sub, info_name=path[-1], parent=ctx)
    res = CliRunner().invoke(cli, [*path, "--help"], prog_name="lorahub")
    assert res.exit_code == 0 and res.output.startswith(f"Usage: lorahub {' '.join(path)}"), f"{doc}:{line}: {res.output}"
    known = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ())) if isinstance(p, click.Option)}
    known |= {"-h", "--help"}
    for token in rest:
        m = _OPTION.match(token)
        if m:
            assert m.group(1) in known, f"{doc}:{line}: `lorahub {' '.join(path)}` has no option {m.group(1)}: {command!r}"


def test_the_docs_show_commands() -> None:
    """The extraction finds the commands (else the test above would pass on nothing)."""
    cases = _cases()
    readme = [c for c in cases if c[0] == "README.md"]
    assert len(readme) >= 20 and len(cases) >= 35
    train = next(c for c in readme if c[2].startswith("lorahub train"))
    assert "--resume" in train[2]  # the indented continuation line belongs to it


# --------------------------------------------------------------------------- nothing points outside the repo

#: What a clone does not have: the third-party data beside the project, the machine's own folders,
#: the reference notes that live there, and a bare tracker "issue N" (upstream issues are cited as
#: ``owner/repo#N`` or ``peft#N``).
OUTSIDE = [
    (re.compile(r"\.\./shared\b|\bshared/(?:reference|fixtures|corpora|hooks)\b"), "../shared"),
    (re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|notes)/"), "an absolute path outside the repo"),
    (re.compile(r"(?<![\w/.-])(?:lora-files|ecosystem-pitfalls|hub-api)\.md|hf-tasks\.json"), "a note of ../shared"),
    (re.compile(r"(?<![\w#/-])[Ii]ssue[ -]?#?\d+\b"), "an issue of a tracker outside the repo"),
]
SHIPPED = ("lorahub", "cli", "registry", "space", "schemas")
SUFFIXES = {".py", ".md", ".txt", ".json", ".ini", ".mako", ".toml", ".html", ".css", ".js"}


def test_nothing_shipped_points_outside_the_repo() -> None:
    found = []
    scanned = 0
    for top in SHIPPED:
        for path in sorted((REPO / top).rglob("*")):
            if path.suffix not in SUFFIXES or "__pycache__" in path.parts or not path.is_file():
                continue
            scanned += 1
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                for pattern, what in OUTSIDE:
                    if pattern.search(line):
                        found.append(f"{path.relative_to(REPO)}:{n}: {what}: {line.strip()[:100]}")
    assert scanned > 100
    assert not found, "docstrings and comments must stay inside the repo (cite docs/, tests/ or the upstream source):\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "See ``../shared/reference/lora-files.md`` section 7", "(``shared/fixtures/lycoris``)",
    '"""The routes (see ``/work/shared/reference/hub-api.md``)."""', "# as in /home/ann/notes.txt",
    "Definitions (lora-files.md section 5)", "# fixed in issue 12", "Load (issue #9): ...",
])
def test_the_scan_catches(line: str) -> None:
    assert any(p.search(line) for p, _ in OUTSIDE), line


@pytest.mark.parametrize("line", [
    "(peft#3780: swapping X zeroes ...)", "huggingface/diffusers#11943", "see ``docs/hashes.md``",
    "lorahub registry check --data /srv/lorahub", "~/sd/models/Lora", "https://huggingface.co/api/models",
])
def test_the_scan_lets_pass(line: str) -> None:
    assert not any(p.search(line) for p, _ in OUTSIDE), line
