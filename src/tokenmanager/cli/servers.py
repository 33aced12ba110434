"""The long-running commands: `serve` (control plane and gateway), `gateway`, `mock-upstream`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from tokenmanager.cli.output import EXIT_CONFIG, exit_code_for, fail, stdout
from tokenmanager.errors import ConfigurationError, TokenManagerError
from tokenmanager.settings import Settings, load_settings


def exit_cleanly_after_signals() -> None:
    """uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully; with these handlers
    that ends the command normally, so a clean stop exits 0 instead of dying by the signal."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        fail(exc.message, EXIT_CONFIG)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def check_port_free(host: str, port: int, option: str) -> None:
    """Exit with a message naming the port when something else listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another with {option}",
                EXIT_CONFIG,
            )


def _prepare_database(settings: Settings, run_migrations: bool) -> None:
    from tokenmanager.storage import migrate as migrations
    from tokenmanager.storage.database import Database

    async def prepare() -> None:
        database = Database.from_url(settings.resolved_database_url)
        try:
            if run_migrations:
                await migrations.upgrade(database.engine)
            await migrations.ensure_at_head(database.engine)
        finally:
            await database.dispose()

    try:
        asyncio.run(prepare())
    except TokenManagerError as exc:
        fail(exc.message, exit_code_for(exc))
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", EXIT_CONFIG)


def uvicorn_server(app: Any, host: str, port: int, *, proxy_headers: bool = True) -> Any:
    """A uvicorn server that leaves signals to its caller (see `stop_on_signals`)."""
    import uvicorn

    from tokenmanager.gateway.server import GRACEFUL_SHUTDOWN_S

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        proxy_headers=proxy_headers,
    )
    return _signal_free_server_class()(config)


@functools.cache
def _signal_free_server_class() -> type:
    import uvicorn

    class SignalFreeServer(uvicorn.Server):
        # Each uvicorn server would install its own handlers and re-raise the signal into the
        # previous one's when done; with several servers in one loop that chain can deliver one
        # Ctrl-C twice to a server, which then skips its application's shutdown.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return SignalFreeServer


def stop_on_signals(servers: list[Any], stopping: asyncio.Event) -> None:
    """Ctrl-C or SIGTERM sets `stopping` and asks every server in `servers` (also those added
    later) to finish its in-flight requests and stop; a second Ctrl-C stops them at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        hurry = stopping.is_set() and signum == signal.SIGINT
        stopping.set()
        for server in servers:
            server.should_exit = True
            server.force_exit = server.force_exit or hurry

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def serve(
    host: Annotated[str, typer.Option(help="Address both planes listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Control-plane port.")] = 8000,
    gateway_port: Annotated[int, typer.Option(min=1, max=65535, help="Gateway port.")] = 8787,
    no_gateway: Annotated[
        bool, typer.Option("--no-gateway", help="Run the control plane only.")
    ] = False,
    run_migrations: Annotated[
        bool, typer.Option("--migrate", help="Upgrade the schema first instead of refusing.")
    ] = False,
) -> None:
    """Run the control plane (admin API) and the gateway in one process."""
    from tokenmanager.api.app import create_app
    from tokenmanager.composition import build_gateway_app, build_services

    settings = _settings()
    _prepare_database(settings, run_migrations)
    check_port_free(host, port, "--port")
    if not no_gateway:
        check_port_free(host, gateway_port, "--gateway-port")
    try:
        servers = [uvicorn_server(create_app(settings, build_services(settings)), host, port)]
        if not no_gateway:
            servers.append(
                uvicorn_server(build_gateway_app(settings), host, gateway_port, proxy_headers=False)
            )
    except ConfigurationError as exc:
        fail(exc.message, EXIT_CONFIG)
    stdout.print(f"Control plane on http://{host}:{port} (API docs at /docs)")
    if not no_gateway:
        stdout.print(f"Gateway on http://{host}:{gateway_port}")
    asyncio.run(_serve_all(servers))


async def _serve_all(servers: list[Any]) -> None:
    stop_on_signals(servers, asyncio.Event())
    await asyncio.gather(*(server.serve() for server in servers))


def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Gateway port.")] = 8787,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Run the gateway alone (several worker processes share the port)."""
    import uvicorn

    from tokenmanager.gateway.server import GRACEFUL_SHUTDOWN_S, multiprocess_metrics_dir

    settings = _settings()
    _prepare_database(settings, run_migrations=False)
    check_port_free(host, port, "--port")
    exit_cleanly_after_signals()
    stdout.print(f"Gateway on http://{host}:{port} with {workers} worker(s)")
    if workers == 1:
        # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done; left to
        # the default action, that would end a clean stop with status -15 instead of 0.
        signal.signal(signal.SIGTERM, _exit_after_sigterm)
    # Only separate worker processes need shared metric files: prometheus_client chooses its
    # value store when first imported, which this process has done already (above), so a
    # single in-process worker keeps its metrics in memory and must render them from there.
    metrics_dir = multiprocess_metrics_dir() if workers > 1 else contextlib.nullcontext()
    with metrics_dir:
        uvicorn.run(
            "tokenmanager.gateway.server:create_gateway_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,
            # The gateway decides whom to believe about X-Forwarded-For itself
            # (TOKENMANAGER_TRUSTED_PROXIES); uvicorn's default would trust any loopback peer.
            proxy_headers=False,
        )


def _exit_after_sigterm(_signal_number: int, _frame: object) -> None:
    raise SystemExit(0)


def mock_upstream(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 9000,
) -> None:
    """Run the mock upstream (OpenAI-compatible and HTTP test endpoints)."""
    from aiohttp import web

    from tokenmanager.mock_upstream.app import build_mock_upstream

    check_port_free(host, port, "--port")
    stdout.print(f"Mock upstream on http://{host}:{port}")
    web.run_app(
        build_mock_upstream(),
        host=host,
        port=port,
        print=None,
        access_log=None,
        handler_cancellation=True,  # /hang and /stall end when their client goes away
    )
