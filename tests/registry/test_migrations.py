"""Alembic migrations upgrade an empty database on both backends, and match the models."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from lorahub.errors import RegistryError
from lorahub.registry.catalogue import Registry
from lorahub.registry.migrations import alembic_config, head_revision
from lorahub.registry.tables import metadata

OWN_TABLES = {"users", "tokens", "adapters", "adapter_versions", "adapter_files", "adapter_tags", "trigger_words"}


def test_upgrade_from_empty_then_nothing_to_do(db_url: str) -> None:
    reg = Registry(db_url)
    try:
        before, after = reg.migrate()
        assert before is None
        assert after == head_revision()
        tables = set(inspect(reg.engine).get_table_names())
        assert OWN_TABLES <= tables
        if reg.dialect == "sqlite":
            assert "adapter_fts" in tables
        else:
            cols = {c["name"] for c in inspect(reg.engine).get_columns("adapters")}
            assert {"name_vector", "keywords_vector", "search_vector"} <= cols
        again = reg.migrate()
        assert again == (head_revision(), head_revision())
    finally:
        reg.close()


def test_migrated_schema_equals_the_models(db_url: str) -> None:
    """Autogenerate finds nothing to change in the registry's own tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from lorahub.registry.migrations import include_object as include

    reg = Registry(db_url)
    try:
        reg.migrate()
        with reg.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include})
            diffs = compare_metadata(ctx, metadata)

        def table_of(diff: object) -> str | None:
            item = diff[0] if isinstance(diff, list) else diff
            for part in item[1:]:
                name = getattr(part, "name", None)
                table = getattr(part, "table", None)
                if table is not None:
                    return table.name
                if isinstance(part, str) and part in OWN_TABLES:
                    return part
                if name in OWN_TABLES:
                    return name
            return None

        ours = [d for d in diffs if table_of(d) in OWN_TABLES]
        assert ours == [], ours
    finally:
        reg.close()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    from alembic import command

    reg = Registry(db_url)
    try:
        reg.migrate()
        with reg.engine.connect() as conn:
            command.downgrade(alembic_config(connection=conn), "base")
            conn.commit()
        assert not OWN_TABLES & set(inspect(reg.engine).get_table_names())
        assert reg.migrate()[1] == head_revision()
    finally:
        reg.close()


def test_without_auto_migrate_an_empty_database_is_refused(db_url: str) -> None:
    reg = Registry(db_url, auto_migrate=False)
    try:
        with pytest.raises(RegistryError, match="lorahub registry migrate"):
            reg.search("anime")
        reg.migrate()
        assert reg.search("anime") == []
    finally:
        reg.close()


def test_script_location_is_the_package_folder() -> None:
    import lorahub.registry.migrations as mig

    cfg = alembic_config()
    assert cfg.get_main_option("script_location") == str(mig.HERE)
    assert (mig.HERE / "env.py").is_file()
    assert head_revision()


def test_unreachable_database_is_one_clear_error() -> None:
    reg = Registry("postgresql://nobody@127.0.0.1:1/nothing")
    try:
        with pytest.raises(RegistryError, match="registry database"):
            reg.count()
    finally:
        reg.close()


def test_small_files_indexed_before_get_the_autov1_the_tools_show(db_url: str, tmp_path) -> None:  # noqa: ANN001
    """0103: files of at most 1 MiB indexed with a null AutoV1 get e3b0c442, as A1111 and kohya compute it."""
    from alembic import command
    from sqlalchemy import text

    from lorahub.base.synthetic import make_adapter

    f = make_adapter(tmp_path / "small.safetensors", rank=2, fmt="kohya", seed=1)
    reg = Registry(db_url)
    try:
        reg.migrate()
        reg.index_paths([tmp_path])
        assert [r.name for r in reg.by_hash("e3b0c442")] == ["small"]
        with reg.engine.connect() as conn:
            command.downgrade(alembic_config(connection=conn), "0102_search_statistics")
            conn.commit()
            assert conn.execute(text("SELECT autov1 FROM adapter_files")).scalars().all() == [None]
        assert reg.migrate()[1] == head_revision()
        with reg.engine.connect() as conn:
            assert conn.execute(text("SELECT autov1 FROM adapter_files")).scalars().all() == ["e3b0c442"]
        assert f.stat().st_size <= 1 << 20
    finally:
        reg.close()


def test_repos_made_before_organisations_were_created_by_their_owner(db_url: str) -> None:
    """0107: ``hub_repos.created_by`` of existing repos is their owner (every namespace was a user's),
    so a contributor-style check never treats an old repo as created by nobody."""
    from alembic import command
    from sqlalchemy import text

    reg = Registry(db_url)
    try:
        reg.migrate()
        with reg.engine.connect() as conn:
            command.downgrade(alembic_config(connection=conn), "0106_blend_sources")
            conn.commit()
            conn.execute(text("INSERT INTO users (id, name, is_admin, created_at) VALUES (5, 'alice', :f, '2026-01-01')"),
                         {"f": False})
            conn.execute(text(
                "INSERT INTO hub_repos (id, public_id, repo_type, namespace, name, namespace_lower, key, owner_id, private, "
                "created_at, updated_at, downloads, likes, tags, next_pr) VALUES (9, 'ab', 'model', 'alice', 'x', 'alice', "
                "'model/alice/x', 5, :f, '2026-01-01', '2026-01-01', 0, 0, '[]', 1)"), {"f": False})
            conn.commit()
        assert reg.migrate()[1] == head_revision()
        with reg.engine.connect() as conn:
            assert conn.execute(text("SELECT created_by FROM hub_repos WHERE id = 9")).scalar_one() == 5
    finally:
        reg.close()


def _migrate_at_the_barrier(url: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    reg = Registry(url, auto_migrate=False)
    try:
        if barrier is not None:
            barrier.wait(timeout=60)
        reg.migrate()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    finally:
        reg.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_processes_migrating_one_empty_database_at_once(backend: str, tmp_path) -> None:  # noqa: ANN001
    """Issue 13, item 10: several processes (``lorahub serve`` workers, two servers) start on one empty
    database at the same moment. One migrates under the lock, the others wait and find the database at
    head. Before, Alembic committed after every revision on SQLite and a second process could run a
    revision again between two of them ("table hub_repos already exists", "expected to match one row
    when updating '0101_hub'"); it failed about one round in ten with three processes."""
    import multiprocessing

    from sqlalchemy import create_engine, text
    from testkit import create_pg_schema, drop_pg_schema, pg_admin_url

    ctx = multiprocessing.get_context("fork")
    rounds, processes = (6, 4) if backend == "sqlite" else (3, 4)
    base = pg_admin_url() if backend == "postgres" else None
    for round_ in range(rounds):
        schema = None
        if base is None:
            url = f"sqlite:///{tmp_path / f'round-{round_}.sqlite'}"
        else:
            schema, url = create_pg_schema(base)
        try:
            barrier, results = ctx.Barrier(processes), ctx.Queue()
            procs = [ctx.Process(target=_migrate_at_the_barrier, args=(url, barrier, results)) for _ in range(processes)]
            for p in procs:
                p.start()
            outcomes = [results.get(timeout=300) for _ in procs]
            for p in procs:
                p.join(timeout=60)
            assert outcomes == ["ok"] * processes, (round_, outcomes)
            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
            finally:
                engine.dispose()
        finally:
            if schema is not None:
                drop_pg_schema(base, schema)


def _migrate_slowly_between_transactions(url: str, results) -> None:  # noqa: ANN001 - multiprocessing objects
    """Migrate, pausing 1.5 s after every commit of a write transaction before the next one begins:
    if the upgrade let go of the lock between two revisions, another process would migrate then."""
    import time

    from sqlalchemy import event

    reg = Registry(url, auto_migrate=False)
    committed = []

    def on_commit(conn) -> None:  # noqa: ANN001 - fires before the commit itself
        if conn.get_execution_options().get("lorahub_write"):  # not the read of the revision before
            committed.append(1)

    def before(conn, cursor, statement, *args) -> None:  # noqa: ANN001 - the commit is done by now
        if committed and statement.startswith("BEGIN IMMEDIATE"):
            committed.clear()
            time.sleep(1.5)

    event.listen(reg.engine, "commit", on_commit)
    event.listen(reg.engine, "before_cursor_execute", before)
    try:
        reg.migrate()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    finally:
        reg.close()


def _migrate(url: str, results) -> None:  # noqa: ANN001
    _migrate_at_the_barrier(url, None, results)


def test_a_second_process_waits_for_the_whole_upgrade(tmp_path) -> None:  # noqa: ANN001
    """The deterministic form of the race above (SQLite): process A pauses between its transactions,
    process B starts meanwhile. B must wait for all of A's upgrade, not take over in the middle."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    results_a, results_b = ctx.Queue(), ctx.Queue()
    a = ctx.Process(target=_migrate_slowly_between_transactions, args=(url, results_a))
    a.start()
    time.sleep(0.5)
    b = ctx.Process(target=_migrate, args=(url, results_b))
    b.start()
    outcomes = [results_a.get(timeout=300), results_b.get(timeout=300)]
    a.join(timeout=60)
    b.join(timeout=60)
    assert outcomes == ["ok", "ok"], outcomes
