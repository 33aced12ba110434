"""Schema migrations through Alembic's API on the product's own async engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenmanager.errors import SchemaNotReadyError

_MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to `revision` (default: the latest)."""
    await _run(engine, lambda config: command.upgrade(config, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run(engine, lambda config: command.downgrade(config, revision))


async def _run(engine: AsyncEngine, step: Callable[[Config], None]) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_run_in_transaction, step)


def _run_in_transaction(connection: sa.Connection, step: Callable[[Config], None]) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    if is_sqlite:
        # SQLite alters a table by copying it; with foreign keys on, dropping the old copy of a
        # referenced table fails. They go off for the migration (the pragma is ignored inside a
        # transaction, hence before BEGIN) and the result is checked before commit.
        _sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            step(_alembic_config(connection))
            if is_sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                raise RuntimeError("migration left rows that break a foreign key")
    finally:
        if is_sqlite:
            _sqlite_pragma(connection, "PRAGMA foreign_keys=ON")


def _sqlite_pragma(connection: sa.Connection, pragma: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(pragma)
    finally:
        cursor.close()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision; None for an empty (never migrated) database."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def ensure_at_head(engine: AsyncEngine) -> None:
    """Raise SchemaNotReadyError, naming the fix, unless the schema is at the latest revision."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        state = "has no schema yet" if current is None else f"is at revision {current}"
        raise SchemaNotReadyError(
            f"the database {state}, this version needs {head}: "
            "run `tokenmanager migrate` (or `tokenmanager serve --migrate`)"
        )
