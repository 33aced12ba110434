"""The Database: one async engine and the two ways to use it (a read, or a write transaction)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenmanager.errors import ConflictError
from tokenmanager.storage.engine import READ_ONLY_OPTION, create_engine


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(create_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; on SQLite it does not take the write lock."""
        async with self.engine.connect() as connection:
            await connection.execution_options(**{READ_ONLY_OPTION: True})
            yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed on success; unique violations become ConflictError."""
        try:
            async with self.engine.begin() as connection:
                yield connection
        except IntegrityError as exc:
            raise ConflictError(_describe_conflict(exc)) from None

    async def ping(self) -> None:
        async with self.read() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _describe_conflict(exc: IntegrityError) -> str:
    text = str(exc.orig).lower()
    if "foreign key" in text:
        return "the object is still referenced by others"
    return "an object with the same unique value already exists"
