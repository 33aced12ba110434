"""Building the services a CLI command needs, with the schema checked first, and running a
command's work on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from tokenmanager.cli.output import run
from tokenmanager.composition import Services, build_services
from tokenmanager.errors import NotFoundError
from tokenmanager.settings import load_settings
from tokenmanager.storage.migrate import ensure_at_head

T = TypeVar("T")


@asynccontextmanager
async def open_services() -> AsyncIterator[Services]:
    """Services on the configured database; SchemaNotReadyError if it is not migrated."""
    services = build_services(load_settings())
    try:
        await ensure_at_head(services.database.engine)
        yield services
    finally:
        await services.close()


def run_on_services(work: Callable[[Services], Awaitable[T]]) -> T:
    """`work` on freshly opened services; product errors become a message and an exit code
    (`run`)."""

    async def body() -> T:
        async with open_services() as services:
            return await work(services)

    return run(body)


def read_one(kind: str, key: object, read: Callable[[Services], Awaitable[T | None]]) -> T:
    """`run_on_services` for reading one object: "<kind> <key> not found" if there is none."""

    async def body() -> T:
        async with open_services() as services:
            found = await read(services)
        if found is None:
            raise NotFoundError(f"{kind} {key} not found")
        return found

    return run(body)
