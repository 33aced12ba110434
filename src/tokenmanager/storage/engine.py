"""Async engines: the URLs people write, mapped to the async drivers, with SQLite set up for
concurrent use (WAL, foreign keys and a busy timeout on every connection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenmanager.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 10_000

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def parse_database_url(raw_url: str) -> URL:
    """Map `sqlite:///x.db` / `postgresql://…` to the async driver.

    ConfigurationError for anything else.
    """
    try:
        url = make_url(raw_url)
    except ArgumentError:
        raise ConfigurationError(
            "TOKENMANAGER_DATABASE_URL is not a database URL; "
            "expected sqlite:///path/tm.db or postgresql://user@host:5432/db"
        ) from None
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigurationError(
            f"TOKENMANAGER_DATABASE_URL: unsupported database {url.drivername!r}; "
            "use sqlite:/// or postgresql://"
        )
    url = url.set(drivername=driver)
    if driver.startswith("postgresql") and "sslmode" in url.query:
        # libpq spelling, which asyncpg calls `ssl`.
        query = dict(url.query)
        query["ssl"] = query.pop("sslmode")
        url = url.set(query=query)
    if driver.startswith("sqlite") and url.database in (None, ""):
        raise ConfigurationError("TOKENMANAGER_DATABASE_URL: a SQLite URL needs a file path")
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_engine(
    raw_url: str, *, postgres_work_mem: str | None = None, **engine_options: Any
) -> AsyncEngine:
    """An AsyncEngine for the URL; the SQLite file's folder is created if missing. On
    PostgreSQL, `postgres_work_mem` (e.g. "32MB") is set on every session."""
    url = parse_database_url(raw_url)
    if is_sqlite(url):
        database = url.database or ""
        if database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"cannot create the folder of {database}: {exc}") from None
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **engine_options
        )
        sa.event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINTs; take it over.
        sa.event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
        return engine
    engine_options.setdefault("pool_pre_ping", True)
    if postgres_work_mem:
        engine_options["connect_args"] = {"server_settings": {"work_mem": postgres_work_mem}}
    return create_async_engine(url, **engine_options)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


READ_ONLY_OPTION = "tokenmanager_read_only"


def _begin_sqlite_transaction(connection: sa.Connection) -> None:
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        # IMMEDIATE takes the write lock up front: a transaction that reads and then writes would
        # otherwise fail at once with "database is locked" if another writer went first.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
