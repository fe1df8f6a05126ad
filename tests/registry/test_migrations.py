# ruff: noqa: F811 - pytest fixtures imported from registry_db are parameters here
"""Alembic migrations upgrade an empty database on both backends, and match the models."""

from __future__ import annotations

import pytest
from registry_db import db_url  # noqa: F401 - fixture
from sqlalchemy import inspect

from lorahub.errors import RegistryError
from lorahub.registry.migrations import alembic_config, head_revision
from lorahub.registry.models import metadata
from lorahub.registry.service import Registry

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
