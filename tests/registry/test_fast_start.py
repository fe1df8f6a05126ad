"""Registry commands start fast (issue 24): `search` (text, --json, --hash), `dupes`, a warm `index`
, `token list` and `org list` import neither SQLAlchemy, sqlmodel nor Alembic (nor huggingface_hub or torch),
and print exactly what the full path prints.

The fast path is a command's registry (``Registry(url, pooled=False)``: reads on a driver connection
of its own); the full path is the pooled SQLAlchemy connection the server and the library use. The
queries are the same code either way; these tests run each command as a whole process (what a user
runs) and compare its stdout with the same command run in-process on a pooled registry, on generated
records (tests/corpuskit.py), on a folder of real kohya files and on the Civitai corpus (../shared;
skips without it), on SQLite and PostgreSQL. Speed itself is measured in benchmarks/bench_cli_startup.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

#: Top-level packages a registry command must not import.
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "huggingface_hub", "torch", "fastapi", "diffusers", "gradio")
#: lorahub modules that pull those in (the ORM tables, the writers, the migrations' Alembic part).
HEAVY_OWN = ("lorahub.registry.tables", "lorahub.registry.rows", "lorahub.registry.hub.tables")

# Runs `python -m lorahub.cli ARGS` and, at exit, writes the modules it imported to $LH_MODULES_OUT.
_PROBE = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["LH_MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["lorahub", *sys.argv[1:]]
runpy.run_module("lorahub.cli", run_name="__main__", alter_sys=True)
"""


def fast(args: list[str], tmp_path: Path) -> tuple[int, str, list[str]]:
    """Run ``lorahub ARGS`` as a process: (exit code, stdout, the heavy modules it imported)."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "LH_MODULES_OUT": str(out)}
    env.pop("LORAHUB_DEBUG", None)
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    modules = json.loads(out.read_text())
    heavy = [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY_OWN]
    return res.returncode, res.stdout, heavy


def full(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run ``lorahub ARGS`` in this process with pooled registries (SQLAlchemy connections)."""
    from lorahub.cli.commands import registry as commands
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.server import run as server_run

    real_prepare = server_run.prepare
    with monkeypatch.context() as m:
        m.setattr(commands, "_registry", lambda database: Registry(database, pooled=True))
        m.setattr(server_run, "prepare", lambda data_dir, database, pooled=True: real_prepare(data_dir, database))
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
    return res.exit_code, res.stdout


def same_both_ways(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int = 0) -> str:
    """Run ``lorahub ARGS`` both ways: the same exit code and stdout (an index's time aside), and no
    heavy module in the process."""
    got_code, got, heavy = fast(args, tmp_path)
    assert heavy == [], f"lorahub {' '.join(args)} imported {heavy}"
    assert got_code == code, (args, got)
    want_code, want = full(args, monkeypatch)
    seconds = re.compile(r'"seconds": [0-9.e-]+')
    assert (got_code, seconds.sub("", got)) == (want_code, seconds.sub("", want)), args
    return got


@pytest.fixture
def populated(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A registry with generated records (three of them with the same tensors), a folder of kohya
    files (copies and re-saves among them) indexed, and two tokens: (URL, folder, a known hash)."""
    from corpuskit import records
    from kohyakit import write_kohya

    from lorahub.registry.catalogue import Registry
    from lorahub.schemas.registry import AdapterRecord

    recs = records(400)
    twins = [AdapterRecord(source="twins", id=str(i), name=f"Twin Lantern {i}", downloads=10 * i,
                           files=[{"name": f"twin{i}.safetensors", "hashes": {"tensor_sha256": "ab" * 32,
                                                                              "sha256": f"{i:064x}"}}])
             for i in range(1, 4)]
    folder = tmp_path / "loras"
    folder.mkdir()
    write_kohya(folder / "style_a.safetensors", rank=4, seed=1)
    shutil.copy(folder / "style_a.safetensors", folder / "style_a_copy.safetensors")
    write_kohya(folder / "style_a_resaved.safetensors", rank=4, seed=1, metadata={"ss_output_name": "resaved"})
    write_kohya(folder / "style_b.safetensors", rank=4, seed=2)
    reg = Registry(db_url)
    try:
        reg.import_records([*recs, *twins])
        summary = reg.index_paths([folder])
        assert summary.added == 4 and not summary.failed
        known = recs[7].versions[0].files[0].hashes["sha256"]
    finally:
        reg.close()
    for args in (["org", "create", "Studio", "--admin", "alice"], ["org", "add", "studio", "Bob", "--role", "contributor"],
                 ["org", "create", "empty"]):
        code, _ = full([*args, "--database", db_url], pytest.MonkeyPatch())
        assert code == 0
    for user, extra in (("alice", []), ("Bob", ["--read-only", "--name", "ci"]),
                        ("Bob", ["--org", "studio", "--repo", "alice/x", "--name", "scoped"])):
        code, _ = full(["token", "create", "--user", user, *extra, "--database", db_url], pytest.MonkeyPatch())
        assert code == 0
    yield db_url, folder, known


def test_registry_commands_start_light_and_print_what_the_full_path_prints(
        populated: tuple[str, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, folder, known = populated
    db = ["--database", url]
    out = same_both_ways(["search", "lantern", *db], tmp_path, monkeypatch)
    assert "Twin Lantern 3" in out
    found = json.loads(same_both_ways(["search", "anime", "--json", *db], tmp_path, monkeypatch))
    assert found and all("anime" in json.dumps(r).lower() for r in found)
    same_both_ways(["search", "girl", "--base", "sdxl", "--sort", "newest", "--limit", "50", "--json", *db],
                   tmp_path, monkeypatch)
    same_both_ways(["search", "--tag", "style", "--page", "2", *db], tmp_path, monkeypatch)
    hits = json.loads(same_both_ways(["search", "--hash", known[:12].upper(), "--json", *db], tmp_path, monkeypatch))
    assert hits[0]["matches"][0]["sha256"] == known
    same_both_ways(["search", "--hash", known[:10], "--hash", "0123456789abcdef", *db], tmp_path, monkeypatch)
    same_both_ways(["search", "--hash", "0123456789abcdef", *db], tmp_path, monkeypatch, code=1)

    groups = json.loads(same_both_ways(["dupes", "--json", *db], tmp_path, monkeypatch))
    assert sorted(len(g["members"]) for g in groups) == [3, 3]  # the twin records, the three style_a files
    text = same_both_ways(["dupes", *db], tmp_path, monkeypatch)
    assert "same tensors, different files" in text

    summary = json.loads(same_both_ways(["index", str(folder), "--json", *db], tmp_path, monkeypatch))
    assert summary["unchanged"] == 4 and summary["added"] == summary["updated"] == summary["removed"] == 0

    tokens = json.loads(same_both_ways(["token", "list", "--json", *db], tmp_path, monkeypatch))
    assert [(t["user"], t["access"], t["name"], t["scopes"]) for t in tokens] == [
        ("alice", "write", "", []), ("Bob", "read", "ci", []), ("Bob", "write", "scoped", ["org:studio", "repo:alice/x"])]
    same_both_ways(["token", "list", "--user", "BOB", *db], tmp_path, monkeypatch)

    orgs = json.loads(same_both_ways(["org", "list", "--json", *db], tmp_path, monkeypatch))
    assert orgs == [{"org": "empty", "members": []},
                    {"org": "Studio", "members": [{"user": "alice", "role": "admin"}, {"user": "Bob", "role": "contributor"}]}]
    assert json.loads(same_both_ways(["org", "list", "--user", "bob", "--json", *db], tmp_path, monkeypatch)) == [
        {"org": "Studio", "members": [{"user": "Bob", "role": "contributor"}]}]
    same_both_ways(["org", "list", *db], tmp_path, monkeypatch)


QUERIES = [
    ["anime"], ["anime", "--json"], ["chinese", "dress", "--json"], ["velvet", "lantern", "--json"],
    ["girl", "--sort", "newest", "--limit", "40", "--json"], ["--tag", "style", "--sort", "downloads", "--page", "3"],
    ["style", "--base", "sd1", "--min-rank", "8", "--json"], ["qqzzyx"],
]


def _hash_args(records: list) -> list[str]:
    shas = [f.hashes["sha256"] for r in records[:40:7] for v in r.versions for f in v.files if f.hashes.get("sha256")]
    return ["search", *(a for sha in shas[:4] for a in ("--hash", sha[:10])), "--json"]


def test_search_output_on_generated_records(corpus_registry, corpus_records, tmp_path: Path,  # noqa: ANN001
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    db = ["--database", corpus_registry.url]
    for q in QUERIES:
        same_both_ways(["search", *q, *db], tmp_path, monkeypatch, code=0)
    same_both_ways([*_hash_args(corpus_records), *db], tmp_path, monkeypatch)
    same_both_ways(["dupes", "--json", *db], tmp_path, monkeypatch)


def test_search_output_on_the_civitai_corpus(civitai_registry, civitai_records, tmp_path: Path,  # noqa: ANN001
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    db = ["--database", civitai_registry.url]
    for q in QUERIES:
        same_both_ways(["search", *q, *db], tmp_path, monkeypatch, code=0)
    hits = json.loads(same_both_ways(["search", "--hash", "47AAAF0D29", "--json", *db], tmp_path, monkeypatch))
    assert hits[0]["matches"][0]["name"] == "Detail Tweaker LoRA (细节调整LoRA)"
    same_both_ways([*_hash_args(civitai_records), *db], tmp_path, monkeypatch)
    same_both_ways(["dupes", *db], tmp_path, monkeypatch)


def test_the_registry_api_reads_the_same_on_a_driver_connection(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    """Registry(url, pooled=False) (a command's) answers exactly what the pooled registry answers."""
    from lorahub.registry.catalogue import Registry
    from lorahub.schemas.registry import SearchQuery

    queries = [SearchQuery(query=w, sort=s) for w in ("anime", "girl style", "velvet lantern", None)
               for s in ("relevance", "newest", "downloads")]
    hashes = [f.hashes["sha256"][:10] for r in corpus_records[:30] for v in r.versions for f in v.files]
    light = Registry(corpus_registry.url, pooled=False)
    try:
        for q in queries:
            assert light.search(q) == corpus_registry.search(q), q
        assert light.lookup(hashes) == corpus_registry.lookup(hashes)
        assert light.dupes() == corpus_registry.dupes()
        assert light.count() == corpus_registry.count() > 3000
        assert light.get(5) == corpus_registry.get(5)
        assert light._engine is None  # reads never made an engine
    finally:
        light.close()


# -- the pieces ------------------------------------------------------------------------------


URLS = [
    "sqlite:////abs/path/registry.sqlite",
    "sqlite:///relative/reg.sqlite",
    "sqlite:////abs/with space/r.sqlite",
    "sqlite://",
    "sqlite:///:memory:",
    "sqlite+pysqlite:///x.db",
    "sqlite:///file:x.db?mode=ro&uri=true",
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgres://u:p%40ss%3Aw%2Frd@db.example.com/hub",
    "postgresql+psycopg2://u@[::1]:5433/db",
    "postgresql+psycopg://h/db?options=-csearch_path%3Dlh_x&sslmode=disable",
    "postgresql://h/db?b=2&a=1&a=3",
    "postgresql://user name+x@h/d b",
    "postgresql:///db?host=/var/run/postgresql",
]


@pytest.mark.parametrize("raw", URLS)
def test_urls_read_as_sqlalchemy_reads_them(raw: str) -> None:
    """database_url/display_url (no SQLAlchemy) give what SQLAlchemy's make_url gave before."""
    from sqlalchemy.engine import make_url

    from lorahub.registry.database import database_url, display_url

    parsed = make_url(raw)
    name = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    want = parsed.set(drivername=name).render_as_string(hide_password=False)
    assert database_url(raw) == want
    assert display_url(want) == make_url(want).render_as_string(hide_password=True)


@pytest.mark.parametrize("raw, message", [("nonsense", "not a database URL"), ("mysql://h/db", "unsupported database"),
                                          ("postgresql://h:port/db", "not a database URL")])
def test_bad_urls_are_usage_errors(raw: str, message: str) -> None:
    from lorahub.errors import UsageError
    from lorahub.registry.database import database_url

    with pytest.raises(UsageError, match=message):
        database_url(raw)


def test_head_revision_read_from_the_files_is_alembics() -> None:
    from lorahub.registry.migrations import _alembic_head, head_revision

    assert head_revision() == _alembic_head()


def test_a_database_behind_or_empty_is_migrated_and_one_that_is_current_is_not(db_url: str) -> None:
    from lorahub.errors import RegistryError
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.migrations import head_revision

    with Registry(db_url, auto_migrate=False, pooled=False) as reg:
        with pytest.raises(RegistryError, match="at revision none"):
            reg.count()
    with Registry(db_url, pooled=False) as reg:
        assert reg.count() == 0  # migrated on first use
        with reg.reading() as raw:
            assert raw.all("SELECT version_num FROM alembic_version")[0][0] == head_revision()
    with Registry(db_url, auto_migrate=False, pooled=False) as reg:
        assert reg.count() == 0
        assert reg._engine is None  # current: no migration (which needs the engine)


#: What semantic search loads (registry/semantic.py): never on a keyword search's path.
MODEL_MODULES = ("numpy", "tokenizers", "safetensors", "wordllama")


def _imported(args: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "LH_MODULES_OUT": str(out), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    return res.returncode, {m.split(".")[0] for m in json.loads(out.read_text())}


def test_keyword_search_loads_no_model_and_semantic_search_stays_light(corpus_registry, tmp_path: Path,  # noqa: ANN001
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated records have sentence embeddings (the dev install has the [semantic] extra), so a plain
    search is hybrid; --mode keyword and --sort newest load nothing of the model's; semantic and hybrid load
    numpy and the tokenizer, none of the heavy packages, and print what the full path prints."""
    db = ["--database", corpus_registry.url]
    for args in (["search", "anime", "--mode", "keyword"], ["search", "girl", "--sort", "newest"], ["search", "--tag", "style"]):
        code, modules = _imported([*args, *db], tmp_path)
        assert code == 0 and not modules & set(MODEL_MODULES), (args, modules & set(MODEL_MODULES))
    code, modules = _imported(["search", "spooky monsters", *db], tmp_path)
    assert code == 0 and {"numpy", "tokenizers"} <= modules and "wordllama" not in modules
    for args in (["search", "spooky", "monsters", "--json"], ["search", "giant", "robots", "--mode", "semantic"],
                 ["search", "velvet", "lantern", "--mode", "hybrid", "--limit", "5"]):
        same_both_ways([*args, *db], tmp_path, monkeypatch)
