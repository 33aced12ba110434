"""The long-running commands: `serve` (control plane, gateway in child processes), `gateway`,
`mock-upstream`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tokenmanager.cli.output import EXIT_CONFIG, EXIT_INVALID, exit_code_for, fail, stdout
from tokenmanager.errors import ConfigurationError, TokenManagerError
from tokenmanager.settings import Settings, load_settings

if TYPE_CHECKING:
    from tokenmanager.cli.gateway_process import GatewayProcess

GATEWAY_READY_DEADLINE_S = 60
EDGE_SYNC_STOP_S = 30  # edge sync --watch finishes the write under way, then exits


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


def stop_on_signals(
    servers: list[Any], stopping: asyncio.Event, gateways: Sequence[GatewayProcess] = ()
) -> None:
    """Ctrl-C or SIGTERM sets `stopping` and asks every server in `servers` (also those added
    later) and every gateway process to finish its in-flight requests and stop; a second Ctrl-C
    stops them at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        hurry = stopping.is_set() and signum == signal.SIGINT
        stopping.set()
        for server in servers:
            server.should_exit = True
            server.force_exit = server.force_exit or hurry
        for gateway_process in gateways:
            gateway_process.stop(force=hurry)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def serve(
    host: Annotated[str, typer.Option(help="Address both planes listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Control-plane port.")] = 8000,
    gateway_port: Annotated[int, typer.Option(min=1, max=65535, help="Gateway port.")] = 8787,
    gateway_workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Gateway worker processes (default: half the cores, at least 1)."
        ),
    ] = None,
    no_gateway: Annotated[
        bool, typer.Option("--no-gateway", help="Run the control plane only.")
    ] = False,
    run_migrations: Annotated[
        bool, typer.Option("--migrate", help="Upgrade the schema first instead of refusing.")
    ] = False,
    edge_sync: Annotated[
        Path | None,
        typer.Option(
            "--edge-sync",
            help="Edge project (from `edge init`) whose KV follows every token and route change.",
        ),
    ] = None,
) -> None:
    """Run the control plane (admin API) and, in processes of its own, the gateway (and, with
    --edge-sync, `tokenmanager edge sync --watch` for the edge Worker)."""
    from tokenmanager.api.app import create_app
    from tokenmanager.cli.gateway_process import GatewayProcess, default_gateway_workers
    from tokenmanager.composition import build_services
    from tokenmanager.gateway.server import raise_open_file_limit

    settings = _settings()
    if edge_sync is not None and not (edge_sync / "wrangler.toml").is_file():
        fail(f"--edge-sync: {edge_sync} has no wrangler.toml; create it with `tokenmanager edge "
             "init DIR`", EXIT_INVALID)  # fmt: skip
    _prepare_database(settings, run_migrations)
    check_port_free(host, port, "--port")
    if not no_gateway:
        check_port_free(host, gateway_port, "--gateway-port")
    raise_open_file_limit(settings.gateway_max_connections)  # the gateway inherits it
    try:
        servers = [uvicorn_server(create_app(settings, build_services(settings)), host, port)]
    except ConfigurationError as exc:
        fail(exc.message, EXIT_CONFIG)
    workers = gateway_workers or default_gateway_workers()
    gateways = [] if no_gateway else [GatewayProcess(settings, host, gateway_port, workers)]
    if asyncio.run(_serve_all(servers, gateways, host, port, edge_sync)) != 0:
        raise typer.Exit(1)


async def _serve_all(
    servers: list[Any],
    gateways: list[GatewayProcess],
    host: str,
    port: int,
    edge_project: Path | None = None,
) -> int:
    """Serve until a signal; 0 if every gateway process also stopped cleanly."""
    stopping = asyncio.Event()
    stop_on_signals(servers, stopping, gateways)
    edge_watcher = await _start_edge_sync(edge_project) if edge_project is not None else None
    for gateway_process in gateways:
        await gateway_process.start()
    supervising = [asyncio.create_task(g.supervise()) for g in gateways]
    try:
        for gateway_process in gateways:
            if not await gateway_process.wait_ready(GATEWAY_READY_DEADLINE_S):
                if stopping.is_set():
                    return 0
                fail("the gateway did not start (see the messages above)", EXIT_CONFIG)
        stdout.print(f"Control plane on http://{host}:{port} (API docs at /docs)")
        for gateway_process in gateways:
            stdout.print(
                f"Gateway on http://{gateway_process.host}:{gateway_process.port} "
                f"with {gateway_process.workers} worker(s)"
            )
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        for gateway_process in gateways:
            gateway_process.stop()  # also when the control plane ended on its own
        returncodes = await asyncio.gather(*supervising)
        if edge_watcher is not None:
            await _stop_process(edge_watcher)
    if any(returncodes):
        logging.getLogger(__name__).warning("the gateway stopped with exit code %s", returncodes)
    return 1 if any(returncodes) else 0


async def _start_edge_sync(project: Path) -> asyncio.subprocess.Process:
    """`tokenmanager edge sync --watch` beside the control plane: a process of its own, so a
    slow wrangler never holds up the control plane's loop."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenmanager", "edge", "sync", "--project", str(project), "--watch",
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), EDGE_SYNC_STOP_S)
        except TimeoutError:
            process.kill()
            await process.wait()


def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Gateway port.")] = 8787,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default: the number of cores)."),
    ] = None,
) -> None:
    """Run the gateway alone (several worker processes share the port)."""
    import uvicorn

    from tokenmanager.cli.gateway_process import available_cores
    from tokenmanager.gateway.server import (
        GRACEFUL_SHUTDOWN_S,
        multiprocess_metrics_dir,
        raise_open_file_limit,
    )

    settings = _settings()
    _prepare_database(settings, run_migrations=False)
    check_port_free(host, port, "--port")
    workers = workers or available_cores()
    raise_open_file_limit(settings.gateway_max_connections)  # the workers inherit it
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
