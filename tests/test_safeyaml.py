"""lorahub.safeyaml: YAML from strangers within bounds (issue 13, item 3)."""

from __future__ import annotations

import datetime as dt
import resource
import time

import pytest

from lorahub import safeyaml
from lorahub.errors import YamlError


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" of YAML: 9 levels of 9 aliases (9**9 strings once expanded) in ~340 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"[: levels - 1], strict=False):
        lines.append(f"{cur}: &{cur} [" + ",".join(["*" + prev] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_the_alias_bomb_is_refused_at_once() -> None:
    bomb = alias_bomb()
    assert len(bomb) < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(YamlError, match=r"anchors \(&name\) are not allowed \(line 1\)"):
        safeyaml.load(bomb)
    assert time.perf_counter() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB
    with pytest.raises(YamlError, match="aliases"):
        safeyaml.load("a: 1\nb: *a\n")  # an alias without its anchor is refused too (not a parse error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: " + "[" * 5000 + "]" * 5000, "nest"),  # ours at 64, or libyaml's own limit (1000) first
        ("x:\n" + "".join("  " * i + "- \n" for i in range(200)), "nested deeper than 64 levels"),
        ("[" + ",".join(["1"] * 30_000) + "]", "more than 20000 values"),
        ("a: 1\n---\nb: 2\n", "more than one YAML document"),
        ("a: [1, 2\n", "not valid YAML"),
        ("a: !!python/object:os.system x\n", "could not determine a constructor"),
        ("a: 2024-13-45\n", "not valid YAML"),
        ("a: " + "1" * 6000 + "\n", "not valid YAML"),
        ("? [a, b]\n: c\n", "not valid YAML"),
        ("a: " + "x" * (1 << 20) + "\n", "larger than"),
    ],
)
def test_every_failure_is_one_yaml_error_line(text: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(YamlError) as info:
        safeyaml.load(text, what="README.md metadata", first_line=2)
    assert message in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 400
    assert str(info.value).startswith("README.md metadata")
    assert time.perf_counter() - started < 5.0


def test_ordinary_metadata_loads_and_becomes_json() -> None:
    text = (
        "license: mit\ntags: [lora, 'a: b']\nbase_model: x/y\ndate: 2024-01-02\n2024-05-06: key is a date\n"
        "1: int key\nnull: null key\nbin: !!binary aGk=\nnan: .nan\nwidget:\n  - text: a\n    output: {url: s.png}\n"
    )
    data = safeyaml.load(text)
    assert data["date"] == dt.date(2024, 1, 2) and data["license"] == "mit"
    out = safeyaml.jsonable(data)
    assert out["date"] == "2024-01-02" and out["2024-05-06"] == "key is a date" and out["1"] == "int key"
    assert out["null"] == "null key" and out["bin"] == "hi" and out["nan"] == "nan"
    assert out["widget"] == [{"text": "a", "output": {"url": "s.png"}}]
    assert safeyaml.load("") is None and safeyaml.load("- 1\n- 2\n") == [1, 2]
