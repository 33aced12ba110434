"""Schema migrations through Alembic's API on the product's own async engine."""

from __future__ import annotations

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
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision)
        )


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync_conn: command.downgrade(_alembic_config(sync_conn), revision)
        )


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
