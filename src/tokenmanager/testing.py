"""Factories for tests, shipped with the package so every test suite builds things one way.

Not used by the product itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tokenmanager.settings import Settings, load_settings
from tokenmanager.storage import migrate
from tokenmanager.storage.engine import create_engine, parse_database_url

TEST_SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105 - tests only

# argon2's floor: tests hash many passwords and must not spend 0.35 s on each.
FAST_PASSWORD_HASHING: dict[str, Any] = {"argon2_time_cost": 1, "argon2_memory_kib": 64}


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "secret_key": TEST_SECRET_KEY,
        **FAST_PASSWORD_HASHING,
    }
    values.update(overrides)
    return load_settings(**values)


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def build_sqlite_template(path: Path) -> Path:
    """A migrated SQLite file to copy per test (faster than migrating each time)."""
    asyncio.run(_migrate(f"sqlite:///{path}"))
    return path


def copy_sqlite_template(template: Path, target: Path) -> str:
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


class PostgresDatabases:
    """Creates throw-away PostgreSQL databases from one migrated template database."""

    def __init__(self, server_url: str) -> None:
        self._server_url = parse_database_url(server_url)
        self.template_name = f"tm_template_{uuid.uuid4().hex[:8]}"
        self._created: list[str] = []

    def _url_for(self, name: str) -> str:
        return self._server_url.set(database=name).render_as_string(hide_password=False)

    async def _admin(self, *statements: str) -> None:
        engine = create_async_engine(
            self._server_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as connection:
                for statement in statements:
                    await connection.execute(sa.text(statement))
        finally:
            await engine.dispose()

    def create_template(self) -> None:
        asyncio.run(self._admin(f'CREATE DATABASE "{self.template_name}"'))
        asyncio.run(_migrate(self._url_for(self.template_name)))

    async def create_database(self, *, migrated: bool = True) -> str:
        name = f"tm_test_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self.template_name}"' if migrated else ""
        await self._admin(f'CREATE DATABASE "{name}"{template}')
        self._created.append(name)
        return self._url_for(name)

    async def drop_database(self, url: str) -> None:
        name = parse_database_url(url).database
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        names = [*self._created, self.template_name]
        asyncio.run(self._admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def running_mock_upstream() -> AsyncIterator[str]:
    """The mock upstream on a free loopback port, in this event loop; yields its base URL."""
    from aiohttp import web

    from tokenmanager.mock_upstream.app import build_mock_upstream

    # Handlers end when their client goes away: /hang and /stall would otherwise outlive the
    # gateway's connection and hold up cleanup for aiohttp's 60 s shutdown timeout.
    runner = web.AppRunner(build_mock_upstream(), access_log=None, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_asgi_server(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in this event loop (lifespan
    included); yields its base URL. Real HTTP, so streaming and disconnects are real too."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    # Leave the test runner's signal handlers alone.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # re-raises why it could not start
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class CuttableTcpProxy:
    """A loopback TCP proxy in front of a server that a test can cut and restore, to take a
    dependency (PostgreSQL, Redis) away from one client without stopping the shared server.

    `cut()` closes every proxied connection and stops listening, so new connections are refused;
    `restore()` listens again on the same port. Use as `async with CuttableTcpProxy(port) as p`.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def __aenter__(self) -> CuttableTcpProxy:
        await self.restore()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cut()

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every open connection (both sides, at once)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(client)
        upstream: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            self._writers.add(upstream)
            await asyncio.gather(_pipe(client_reader, upstream), _pipe(upstream_reader, client))
        except OSError:
            pass  # refused upstream or a cut: the client sees its connection close
        finally:
            for writer in (client, upstream):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._connections.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        # Either side ending ends the whole connection; a cut aborts both anyway.
        writer.transport.abort()
