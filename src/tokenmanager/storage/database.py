"""The Database: one async engine and the two ways to use it (a read, or a write transaction)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenmanager.errors import ConflictError
from tokenmanager.storage.engine import READ_ONLY_OPTION, create_engine

# Set on a connection by `storage.audit.append_change`; `Database.write` announces the change
# after commit (Redis pub/sub), so gateways need not wait for their next poll.
CHANGED_FLAG = "tokenmanager_changed"

OnChange = Callable[[], Awaitable[None]]


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.on_change: OnChange | None = None

    @classmethod
    def from_url(cls, url: str, *, postgres_work_mem: str | None = None) -> Database:
        return cls(create_engine(url, postgres_work_mem=postgres_work_mem))

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
        changed = False
        try:
            async with self.engine.begin() as connection:
                try:
                    yield connection
                finally:
                    changed = connection.info.pop(CHANGED_FLAG, False)
        except IntegrityError as exc:
            raise ConflictError(_describe_conflict(exc)) from None
        if changed and self.on_change is not None:
            await self.on_change()

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
