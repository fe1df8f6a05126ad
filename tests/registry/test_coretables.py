"""The Core tables the registry's writers use (lorahub.registry.coretables) are the sqlmodel tables
(lorahub.registry.tables) column for column, and a cold `lorahub index` writes through them without
importing sqlmodel: the rows it leaves read back through the ORM as before (times, booleans, hashes, the
sketch and the record's embedding), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _type(col) -> tuple[str, int | None]:  # noqa: ANN001
    name = type(col.type).__name__
    return ("String" if name == "AutoString" else name), getattr(col.type, "length", None)


def test_core_tables_are_the_orm_tables_column_for_column() -> None:
    from lorahub.registry import coretables as C
    from lorahub.registry import tables as T

    pairs = [(C.ADAPTERS, T.Adapter), (C.ADAPTER_VERSIONS, T.AdapterVersion), (C.ADAPTER_FILES, T.AdapterFile),
             (C.ADAPTER_TAGS, T.AdapterTag), (C.TRIGGER_WORDS, T.TriggerWord), (C.BLEND_SOURCES, T.BlendSource),
             (C.ADAPTER_EMBEDDINGS, T.AdapterEmbedding), (C.ADAPTER_EMBEDDING_REMOVALS, T.AdapterEmbeddingRemoval),
             (C.ADAPTER_SKETCHES, T.AdapterSketch)]
    assert sorted(C.__all__) == sorted(name for name in dir(C) if name.isupper() and not name.startswith("_"))
    assert len(pairs) == len(C.__all__)
    for core, model in pairs:
        orm = model.__table__
        assert core.name == orm.name
        got = [(c.name, _type(c), c.nullable, c.primary_key) for c in core.columns]
        want = [(c.name, _type(c), c.nullable, c.primary_key) for c in orm.columns]
        assert got == want, core.name


# Runs `python -m lorahub.cli ARGS` and, at exit, writes the modules it imported to $LH_MODULES_OUT.
_PROBE = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["LH_MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["lorahub", *sys.argv[1:]]
runpy.run_module("lorahub.cli", run_name="__main__", alter_sys=True)
"""


def test_a_cold_index_writes_through_core_tables_without_sqlmodel(db_url: str, tmp_path: Path) -> None:
    from datetime import datetime

    from kohyakit import write_kohya
    from sqlmodel import select

    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.adapters.sketch import sketch_file
    from lorahub.registry import semantic
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.database import Sessions
    from lorahub.registry.tables import Adapter, AdapterEmbedding, AdapterFile, AdapterSketch

    reg = Registry(db_url)
    reg.migrate()  # as `lorahub registry migrate` leaves it (migrating imports the ORM tables: Alembic's model)
    reg.close()
    folder = tmp_path / "loras"
    folder.mkdir()
    write_kohya(folder / "paper_cut.safetensors", rank=4, seed=3)
    write_kohya(folder / "ink_wash.safetensors", rank=8, seed=4)
    out = tmp_path / "modules.json"
    env = {**os.environ, "LH_MODULES_OUT": str(out), "LORAHUB_HOME": str(tmp_path / "home")}
    env.pop("LORAHUB_DEBUG", None)
    res = subprocess.run([sys.executable, "-c", _PROBE, "index", str(folder), "--database", db_url, "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == 2
    modules = json.loads(out.read_text())
    assert "sqlmodel" not in modules and "lorahub.registry.tables" not in modules
    assert "lorahub.registry.coretables" in modules

    reg = Registry(db_url)
    try:
        with Sessions(reg.engine).read() as s:
            adapters = {a.name: a for a in s.exec(select(Adapter)).all()}
            files = {f.filename: f for f in s.exec(select(AdapterFile)).all()}
            sketches = {k.sha256: k for k in s.exec(select(AdapterSketch)).all()}
            embedded = {e.adapter_id for e in s.exec(select(AdapterEmbedding)).all()}
        assert set(adapters) == {"paper_cut", "ink_wash"}
        for name, a in adapters.items():
            assert isinstance(a.created_at, datetime) and isinstance(a.updated_at, datetime)
            assert a.private is False and a.nsfw is False and a.source_kind == "local"
            f = files[f"{name}.safetensors"]
            assert f.is_primary is True and isinstance(f.indexed_at, datetime)
            fp = fingerprint_file(folder / f.filename)
            assert (f.sha256, f.autov3, f.blake3) == (fp.sha256, fp.autov3.lower(), fp.blake3)
            assert bytes(sketches[f.sha256].data) == sketch_file(folder / f.filename).to_bytes()
            assert isinstance(sketches[f.sha256].created_at, datetime)
        if semantic.installed():
            assert embedded == {a.id for a in adapters.values()}
        else:  # pragma: no cover - the dev install has the [semantic] extra
            assert embedded == set()
    finally:
        reg.close()


@pytest.mark.parametrize("how", ["replace", "remove", "sql"])
def test_embeddings_and_removals_write_through_core_tables(db_url: str, how: str) -> None:
    """Re-indexing a changed record notes its old vector's removal once and writes the new one (the Core
    tables of semantic.write_embeddings); removing it, through lorahub or behind its back in SQL (the foreign
    key's cascade takes the vector), notes the removal once, above every ``seq`` before (the database's
    trigger, migration 0113)."""
    from lorahub.registry import semantic
    from lorahub.registry.catalogue import Registry
    from lorahub.schemas.registry import AdapterRecord

    if not semantic.installed():  # pragma: no cover - the dev install has the [semantic] extra
        pytest.skip("needs the [semantic] extra")
    reg = Registry(db_url)
    try:
        rec = AdapterRecord(source="t", id="1", name="Paper Cut Style", tags=["paper", "style"])
        reg.import_records([rec])
        with reg.reading() as raw:
            first = raw.all("SELECT adapter_id, seq FROM adapter_embeddings")
        replace = how == "replace"
        if replace:
            reg.import_records([rec.model_copy(update={"name": "Ink Wash Style"})])
        elif how == "remove":
            reg.remove([first[0][0]])
        else:
            from sqlalchemy import text

            with reg.writing() as conn:
                conn.execute(text("DELETE FROM adapters WHERE id = :i"), {"i": first[0][0]})
        with reg.reading() as raw:
            removed = raw.all("SELECT adapter_id, seq FROM adapter_embedding_removals")
            now = raw.all("SELECT adapter_id, seq FROM adapter_embeddings")
        assert [r[0] for r in removed] == [first[0][0]] and removed[0][1] > first[0][1]
        assert len(now) == (1 if replace else 0)
        if replace:
            assert now[0][1] > removed[0][1]
    finally:
        reg.close()
