"""The rows a search's results show are kept while the registry's data version stays the same (migration 0116,
``lookups.results_for``), on SQLite and PostgreSQL: the version is raised by every transaction that writes
``adapters``, ``adapter_files`` or ``adapter_versions``, whoever writes them (SQL behind lorahub's back here, from
another connection, as another process would), on PostgreSQL once and at its commit; a search that read it
answers from the rows kept under it, and shows every change once it is committed."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from lorahub.registry import lookups, semantic
from lorahub.registry.catalogue import Registry
from lorahub.schemas.registry import AdapterRecord, SearchQuery


@pytest.fixture
def reg(db_url: str, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(lookups, "_kept", {})
    semantic.reset_cache()
    r = Registry(db_url)
    r.migrate()
    yield r
    r.close()
    semantic.reset_cache()


def _version(url: str) -> int:
    other = Registry(url)
    try:
        with other.reading() as raw:
            return int(raw.all("SELECT version FROM registry_data_version")[0][0])
    finally:
        other.close()


def _records(n: int) -> list[AdapterRecord]:
    return [AdapterRecord(source="t", id=str(i), name=f"Robot Pilot {i}", tags=["robot", "mecha"],
                          description=f"A giant robot, number {i}.", downloads=100 - i, base_model="SDXL 1.0",
                          files=[{"name": f"robot{i}.safetensors"}]) for i in range(n)]


def test_the_version_is_raised_by_every_committed_transaction_of_any_of_the_three_tables(reg, db_url) -> None:  # noqa: ANN001
    pg = db_url.startswith("postgresql")
    reg.import_records(_records(5))
    start = _version(db_url)
    with reg.writing() as conn:  # five rows, three tables, one transaction
        conn.execute(text("UPDATE adapters SET downloads = downloads + 1"))
        conn.execute(text("UPDATE adapter_files SET size = 1"))
        conn.execute(text("UPDATE adapter_versions SET name = 'v2'"))
        assert _version(db_url) == start  # another connection: nothing before the commit
    assert _version(db_url) == (start + 1 if pg else start + 15)  # PostgreSQL once, at the commit; SQLite by row
    for sql in ("UPDATE adapter_files SET filename = 'x.safetensors' WHERE id = (SELECT min(id) FROM adapter_files)",
                "UPDATE adapter_versions SET revision = 'r' WHERE id = (SELECT min(id) FROM adapter_versions)",
                "DELETE FROM adapters WHERE id = (SELECT min(id) FROM adapters)",
                "TRUNCATE adapter_files" if pg else "DELETE FROM adapter_files"):
        before = _version(db_url)
        with reg.writing() as conn:
            conn.execute(text(sql))
        assert _version(db_url) > before, sql
    before = _version(db_url)
    with pytest.raises(RuntimeError), reg.writing() as conn:  # rolled back: not raised
        conn.execute(text("UPDATE adapters SET title = 'gone'"))
        raise RuntimeError
    assert _version(db_url) == before
    with reg.writing() as conn:  # nothing of the three written: not raised
        conn.execute(text("SELECT count(*) FROM adapters"))
    assert _version(db_url) == before


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_a_search_answers_from_the_kept_rows_and_shows_every_committed_change(reg, db_url, read_statements,  # noqa: ANN001
                                                                              mode: str) -> None:
    if mode == "hybrid" and not semantic.installed():
        pytest.skip("hybrid search needs the [semantic] extra")
    reg.import_records(_records(8))
    q = SearchQuery(query="robot", mode=mode, limit=5)
    statements = read_statements

    def page() -> list:
        statements.clear()
        return reg.search(q)

    first = page()
    assert len(first) == 5 and any("LEFT JOIN adapter_files" in s for s in statements)
    again = page()
    assert [r.model_dump() for r in again] == [r.model_dump() for r in first]
    assert not any("LEFT JOIN adapter_files" in s for s in statements)  # the rows kept: no statement of them
    again[0].tags.append("changed by a caller")
    assert page()[0].tags == first[0].tags  # a result of its own

    other = Registry(db_url)  # another process's writes, in SQL
    try:
        top = first[0].id
        for sql, check in (
            ("UPDATE adapters SET title = 'Renamed' WHERE id = :i", lambda r: r.title == "Renamed"),
            ("UPDATE adapter_files SET filename = 'renamed.safetensors' WHERE adapter_id = :i",
             lambda r: r.file_name == "renamed.safetensors"),
            ("UPDATE adapter_versions SET name = 'v9' WHERE adapter_id = :i", lambda r: r.version == "v9"),
        ):
            with other.writing() as conn:
                conn.execute(text(sql), {"i": top})
            shown = {r.id: r for r in page()}
            assert check(shown[top]), sql
            assert any("LEFT JOIN adapter_files" in s for s in statements)
        with other.writing() as conn:
            conn.execute(text("DELETE FROM adapters WHERE id = :i"), {"i": top})
        assert top not in [r.id for r in page()]
    finally:
        other.close()


def test_a_search_of_an_older_version_does_not_use_the_rows_kept_and_drops_them(reg) -> None:  # noqa: ANN001
    """An older version: a search that read it before another read a newer one, or a database put back to an
    earlier state under a running process (whose versions to come would meet the kept rows')."""
    reg.import_records(_records(3))
    with reg.reading() as raw:
        ids = [int(r[0]) for r in raw.all("SELECT id FROM adapters ORDER BY id")]
        kept = lookups.results_for(raw, ids, version=10)
        assert [r.id for r in kept] == ids and set(lookups._kept[raw.key].values) == set(ids)
        lookups._kept[raw.key].values[ids[0]] = {**lookups._kept[raw.key].values[ids[0]], "title": "kept"}
        assert lookups.results_for(raw, ids[:1], version=10)[0].title == "kept"
        assert lookups.results_for(raw, ids[:1])[0].title != "kept"  # no version read: read, not kept
        assert lookups.results_for(raw, ids[:1], version=11)[0].title != "kept"  # newer: afresh
        assert lookups._kept[raw.key].version == 11 and set(lookups._kept[raw.key].values) == {ids[0]}
        lookups._kept[raw.key].values[ids[0]] = {**lookups._kept[raw.key].values[ids[0]], "title": "kept"}
        assert lookups.results_for(raw, ids[:1], version=9)[0].title != "kept"  # older: read
        assert raw.key not in lookups._kept  # ... and the rows kept are gone
        assert lookups.results_for(raw, ids[:1], version=11)[0].title != "kept"
        assert lookups._kept[raw.key].version == 11


def test_without_the_version_row_every_search_reads_its_rows(reg, read_statements) -> None:  # noqa: ANN001
    """The version's row deleted in SQL: searches go on, reading their rows each time."""
    reg.import_records(_records(3))
    with reg.writing() as conn:
        conn.execute(text("DELETE FROM registry_data_version"))
    for _ in range(2):
        read_statements.clear()
        assert len(reg.search(SearchQuery(query="robot", mode="keyword", limit=3))) == 3
        assert any("LEFT JOIN adapter_files" in s for s in read_statements)
