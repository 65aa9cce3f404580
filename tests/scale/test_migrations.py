"""Alembic migrations: the same schema on SQLite and PostgreSQL, equal to the declared tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.scale.conftest import pg_url


def _schema(engine: object) -> dict[str, dict[str, object]]:
    inspector = inspect(engine)
    return {
        table: {
            "columns": sorted((c["name"], c["nullable"]) for c in inspector.get_columns(table)),
            "indexes": sorted(tuple(i["column_names"]) for i in inspector.get_indexes(table)),
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
        }
        for table in sorted(inspector.get_table_names()) if table != "alembic_version"
    }


def _differences(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from kiln.serve.store.models import Base

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_store_opens_at_head_matching_the_models(tmp_path: Path) -> None:
    from kiln.serve.store import open_store
    from kiln.serve.store.migrate import current_revision

    url = f"sqlite:///{tmp_path / 'kiln.db'}"
    store = open_store(url)
    assert current_revision(store.engine) == "0005"
    store.close()
    assert _differences(url) == []
    open_store(url).close()  # opening again is a no-op


def test_database_made_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    """A store created with create_all of the first release's tables gets the new job columns."""
    from sqlalchemy import text

    from kiln.serve.store import open_store
    from kiln.serve.store.migrate import current_revision, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))  # as if made before migrations
        connection.execute(text("INSERT INTO jobs (id, kind, status, created_at, updated_at, attempts) "
                                "VALUES ('j1', 'authenticate', 'done', '2026-01-01', '2026-01-01', 1)"))
    engine.dispose()
    store = open_store(url)
    assert current_revision(store.engine) == "0005"
    job = store.get_job("j1")
    assert job.status == "done" and job.webhook_attempts == 0 and job.callback_url is None
    store.close()


def test_database_at_0003_upgrades_to_the_case_list_indexes_and_keeps_its_cases(tmp_path: Path) -> None:
    from sqlalchemy import text

    from kiln.serve.store import CaseQuery, open_store
    from kiln.serve.store.migrate import current_revision, upgrade

    url = f"sqlite:///{tmp_path / 'at-0003.db'}"
    engine = create_engine(url)
    upgrade(engine, "0003")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO cases (id, app, created_at, brand, model, verdict, confidence, engine, result, tenant) "
                                "VALUES ('c1', 'authenticity', '2026-01-01 00:00:00', 'acme', 'tote', 'authentic', 0.9, 'e', '{}', 't1')"))
    indexes = {i["name"] for i in inspect(engine).get_indexes("cases")}
    assert "ix_cases_brand" in indexes and "ix_cases_brand_created_at" not in indexes
    engine.dispose()
    store = open_store(url)
    try:
        assert current_revision(store.engine) == "0005"
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("cases")}
        assert {"ix_cases_tenant_created_at", "ix_cases_brand_created_at", "ix_cases_verdict_created_at", "ix_cases_created_at"} <= indexes
        assert not indexes & {"ix_cases_tenant", "ix_cases_brand", "ix_cases_verdict"}
        page, total, capped = store.list_cases(CaseQuery(tenant="t1"))
        assert [c.id for c in page] == ["c1"] and (total, capped) == (1, False)
    finally:
        store.close()
    assert _differences(url) == []
    from alembic import command

    from kiln.serve.store.migrate import alembic_config

    engine = create_engine(url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0003")
    assert {"ix_cases_tenant", "ix_cases_brand", "ix_cases_verdict"} <= {i["name"] for i in inspect(engine).get_indexes("cases")}
    engine.dispose()


@pytest.mark.services
def test_postgresql_gets_the_same_schema_as_sqlite(database: str, tmp_path: Path) -> None:
    from kiln.serve.store import open_store
    from kiln.serve.store.migrate import current_revision

    sqlite = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    postgres = open_store(pg_url(database))
    try:
        assert current_revision(postgres.engine) == "0005"
        assert _schema(postgres.engine) == _schema(sqlite.engine)
        assert _differences(pg_url(database)) == []
    finally:
        sqlite.close()
        postgres.close()
