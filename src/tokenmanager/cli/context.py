"""Building the services a CLI command needs, with the schema checked first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tokenmanager.composition import Services, build_services
from tokenmanager.settings import load_settings
from tokenmanager.storage.migrate import ensure_at_head


@asynccontextmanager
async def open_services() -> AsyncIterator[Services]:
    """Services on the configured database; SchemaNotReadyError if it is not migrated."""
    services = build_services(load_settings())
    try:
        await ensure_at_head(services.database.engine)
        yield services
    finally:
        await services.close()
