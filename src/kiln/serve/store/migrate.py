"""Brings a database to the newest schema with Alembic (``upgrade head``), on SQLite and PostgreSQL.

Runs when a store opens. Concurrent openers (several workers starting at once) are serialised:
a transaction-scoped advisory lock on PostgreSQL, a lock file next to a SQLite database. A database
created before migrations existed (tables but no ``alembic_version``) is stamped at 0001 first.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6B696C6E  # "kiln"


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(Path(database).with_suffix(Path(database).suffix + ".migrate-lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrades the database behind ``engine`` to ``revision``."""
    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "cases" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")  # made by create_all before migrations existed
        command.upgrade(config, revision)
