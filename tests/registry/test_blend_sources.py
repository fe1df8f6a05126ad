"""The registry links blends to their sources: indexing a lorahub blend stores the sources its recipe
names, and ``lorahub search --uses NAME|HASH`` lists the blends made from an adapter (both backends;
the command stays on the light read path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hubkit import write_kohya_lora

from lorahub.cli.main import cli

pytestmark = pytest.mark.torch

_PROBE = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["LH_MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["lorahub", *sys.argv[1:]]
runpy.run_module("lorahub.cli", run_name="__main__", alter_sys=True)
"""


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def uses(db_url: str, source: str) -> list[str]:
    code, out, err = run("search", "--uses", source, "--database", db_url, "--json")
    assert code == 0, err
    return sorted(r["name"] for r in json.loads(out))


def test_search_uses_lists_the_blends_made_from_an_adapter(db_url: str, tmp_path: Path) -> None:
    from lorahub.adapters.fingerprint import fingerprint_file

    src = tmp_path / "sources"
    folder = tmp_path / "loras"
    for name, seed in (("alpha", 1), ("beta", 2), ("gamma", 3)):
        write_kohya_lora(src / f"{name}.safetensors", seed=seed, title=name)
    folder.mkdir()
    for name in ("alpha", "beta"):  # gamma is not in the registry: a blend still names it by hash
        shutil.copy(src / f"{name}.safetensors", folder / f"{name}.safetensors")
    for out, parts in (("ab_blend", ("alpha.safetensors:0.5", "beta.safetensors:0.5")),
                       ("bg_blend", ("beta.safetensors:0.7", "gamma.safetensors:0.3"))):
        code, _, err = run("blend", *(f"{src}/{p}" for p in parts), "-o", str(folder / f"{out}.safetensors"))
        assert code == 0, err
    code, _, err = run("index", str(folder), "--database", db_url)
    assert code == 0, err
    fp = {n: fingerprint_file(str(src / f"{n}.safetensors")) for n in ("alpha", "beta", "gamma")}

    assert uses(db_url, "alpha") == ["ab_blend"]  # a registry name: its file's SHA-256
    assert uses(db_url, "BETA") == ["ab_blend", "bg_blend"]
    assert uses(db_url, "gamma") == ["bg_blend"]  # not indexed: the name the recipe gives it
    assert uses(db_url, fp["gamma"].sha256) == ["bg_blend"]
    assert uses(db_url, fp["alpha"].autov3) == ["ab_blend"]
    assert uses(db_url, fp["beta"].sha256[:10].upper()) == ["ab_blend", "bg_blend"]
    assert uses(db_url, fp["alpha"].blake3[:16]) == ["ab_blend"]  # another fingerprint of a registry file
    assert uses(db_url, "ab_blend") == [] and uses(db_url, "no such adapter") == []
    code, out, err = run("search", "--uses", "beta", "--database", db_url)
    assert code == 0 and "ab_blend" in out and "bg_blend" in out
    code, _, err = run("search", "words", "--uses", "beta", "--database", db_url)
    assert code == 2 and "--uses alone" in err

    # the blend is replaced by a plain adapter: re-indexing drops its sources
    write_kohya_lora(folder / "ab_blend.safetensors", seed=7, title="plain")
    assert run("index", str(folder), "--database", db_url)[0] == 0
    assert uses(db_url, "alpha") == []
    assert uses(db_url, "beta") == ["bg_blend"]

    # the light read path: no SQLAlchemy (tests/registry/test_fast_start.py)
    modules = tmp_path / "modules.json"
    env = {**os.environ, "LH_MODULES_OUT": str(modules)}
    res = subprocess.run([sys.executable, "-c", _PROBE, "search", "--uses", "beta", "--database", db_url, "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [r["name"] for r in json.loads(res.stdout)] == ["bg_blend"]
    heavy = [m for m in json.loads(modules.read_text()) if m.split(".")[0] in ("sqlalchemy", "sqlmodel", "alembic")]
    assert heavy == []
