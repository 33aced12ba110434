"""The Alembic chain on both backends: it round-trips, matches schema.py, and guards start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenmanager.errors import SchemaNotReadyError
from tokenmanager.storage import migrate
from tokenmanager.storage.engine import create_engine
from tokenmanager.storage.schema import metadata, users
from tokenmanager.testing import PostgresDatabases


@pytest.fixture
async def empty_database_url(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> AsyncIterator[str]:
    """A database of the current backend that has never been migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert postgres_databases is not None
    url = await postgres_databases.create_database(migrated=False)
    yield url
    await postgres_databases.drop_database(url)


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def empty_engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with opened(empty_database_url) as engine:
        yield engine


@pytest.fixture
async def migrated_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with opened(database_url) as engine:
        yield engine


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    return set(names) - {"alembic_version"}


async def test_upgrade_downgrade_to_base_and_upgrade_again_round_trips(
    empty_engine: AsyncEngine,
) -> None:
    await migrate.upgrade(empty_engine)
    tables_at_head = await table_names(empty_engine)
    assert tables_at_head == set(metadata.tables)

    await migrate.downgrade(empty_engine, "base")
    assert await table_names(empty_engine) == set()
    assert await migrate.current_revision(empty_engine) is None

    await migrate.upgrade(empty_engine)
    assert await table_names(empty_engine) == tables_at_head
    assert await migrate.current_revision(empty_engine) == migrate.head_revision()


async def test_migrated_schema_matches_schema_module(migrated_engine: AsyncEngine) -> None:
    def differences(sync_connection: sa.Connection) -> list[object]:
        context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with migrated_engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_ensure_at_head_passes_on_a_migrated_database(migrated_engine: AsyncEngine) -> None:
    await migrate.ensure_at_head(migrated_engine)


async def test_ensure_at_head_on_an_empty_database_says_to_run_migrate(
    empty_engine: AsyncEngine,
) -> None:
    with pytest.raises(SchemaNotReadyError, match="has no schema yet") as caught:
        await migrate.ensure_at_head(empty_engine)
    assert "tokenmanager migrate" in caught.value.message


async def test_ensure_at_head_on_an_older_revision_names_it(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine, "0001")
    with pytest.raises(SchemaNotReadyError, match="is at revision 0001") as caught:
        await migrate.ensure_at_head(empty_engine)
    assert "tokenmanager migrate" in caught.value.message


async def test_sqlite_connections_use_wal_and_enforce_foreign_keys(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'pragmas.db'}") as engine:
        async with engine.connect() as connection:
            journal_mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert journal_mode == "wal"
        assert foreign_keys == 1


async def test_sqlite_foreign_keys_are_back_on_after_a_migration(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'after.db'}") as engine:
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


async def test_migration_0009_turns_viewers_into_members_and_back(
    empty_engine: AsyncEngine,
) -> None:
    await migrate.upgrade(empty_engine, "0006")
    now = datetime.now(UTC)
    async with empty_engine.begin() as connection:
        await connection.execute(
            users.insert(),
            [
                {
                    "username": name,
                    "password_hash": "x",
                    "role": role,
                    "created_at": now,
                }
                for name, role in (("ada", "admin"), ("vic", "viewer"))
            ],
        )

    async def roles() -> dict[str, str]:
        async with empty_engine.connect() as connection:
            rows = await connection.execute(sa.select(users.c.username, users.c.role))
            return {row.username: row.role for row in rows}

    await migrate.upgrade(empty_engine)
    assert await roles() == {"ada": "admin", "vic": "member"}
    await migrate.downgrade(empty_engine, "0006")
    assert await roles() == {"ada": "admin", "vic": "viewer"}
