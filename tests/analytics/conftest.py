"""An empty database per hypothesis example, so that examples never see each other's rows."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tokenmanager.composition import Services, build_services
from tokenmanager.storage.schema import metadata
from tokenmanager.testing import PostgresDatabases, copy_sqlite_template, make_settings

from .cases import FreshServices


@pytest.fixture
async def fresh_services(
    backend: str,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_databases: PostgresDatabases | None,
) -> AsyncIterator[FreshServices]:
    """`async with fresh_services() as services:` services on a migrated database of the current
    backend with no rows in it. Call it inside the example's own event loop.

    SQLite: a fresh copy of the template each time. PostgreSQL: one database per test, every
    table truncated (identities restarted) on each use, since creating a database from the
    template takes seconds.
    """
    numbers = itertools.count()
    postgres_url = None
    if backend == "postgres":
        assert postgres_databases is not None
        postgres_url = await postgres_databases.create_database()

    @asynccontextmanager
    async def open_services(**overrides: Any) -> AsyncIterator[Services]:
        directory = tmp_path / f"example-{next(numbers)}"
        directory.mkdir()
        if postgres_url is None:
            url = copy_sqlite_template(sqlite_template, directory / "tm.db")
        else:
            url = postgres_url
        services = build_services(make_settings(directory / "data", url, **overrides))
        try:
            if postgres_url is not None:
                names = ", ".join(table.name for table in metadata.sorted_tables)
                async with services.database.write() as connection:
                    await connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            yield services
        finally:
            await services.close()

    yield open_services
    if postgres_url is not None:
        assert postgres_databases is not None
        await postgres_databases.drop_database(postgres_url)
