"""`tokenmanager demo`: the whole product on a SQLite file (gateway and mock upstream in processes
of their own), with 30 days of synthetic history, for a first look. It only ever deletes a data
dir it created itself (marked by its state file), and keeps its tokens' secrets there, mode
0600, so a rerun can print working snippets again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tokenmanager.access.actor import Role, cli_actor
from tokenmanager.cli.output import EXIT_CONFIG, EXIT_CONFLICT, exit_code_for, fail, stderr
from tokenmanager.cli.servers import check_port_free, stop_on_signals, uvicorn_server
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.errors import ConfigurationError, TokenManagerError
from tokenmanager.settings import Settings, load_settings
from tokenmanager.tokens.codec import hash_token
from tokenmanager.usage.synthetic import (
    BurstFromNewIp,
    CallerProfile,
    ModelProfile,
    RouteProfile,
    TrafficPlan,
    count_events,
    generate_events,
)

STATE_FILE = "demo.json"
LOCK_FILE = "demo.lock"
DATABASE_FILES = ("tokenmanager.db", "tokenmanager.db-wal", "tokenmanager.db-shm")
HOST = "127.0.0.1"
HISTORY = timedelta(days=30)
HISTORY_EVENTS = 60_000  # ~2000 calls a day: a small company's automations
ADMIN_USERNAME = "admin"
LOOPBACK = "127.0.0.0/8"  # the mock upstream; allowed for the demo's own process only
READY_DEADLINE_S = 30

TEAMS = (("backend-team", "Backend"), ("data-team", "Data"), ("research-team", "Research"))


@dataclass(frozen=True, slots=True)
class DemoRoute:
    profile: RouteProfile
    upstream_path: str  # on the mock upstream
    scope: str
    description: str
    # A made-up upstream key the gateway injects, to show injection (the mock accepts any). Not
    # on the echo service, which would show it to the caller.
    injects_credential: bool = True
    provider: str | None = None  # an LLM route: the gateway meters tokens and cost


# The models the LLM routes' history calls (costs at the shipped default prices); the mock
# upstream answers any model name.
OPENAI_MODELS = (
    ModelProfile("gpt-4o-mini", weight=6, prompt_median=900, completion_median=220,
                 cached_share=0.3),
    ModelProfile("gpt-4o", weight=1.5, prompt_median=1600, completion_median=420,
                 cached_share=0.2),
    ModelProfile("text-embedding-3-small", weight=2.5, prompt_median=350, completion_median=0),
)  # fmt: skip
ANTHROPIC_MODELS = (
    ModelProfile("claude-sonnet-4-5-20250929", weight=3, prompt_median=2200,
                 completion_median=520, cached_share=0.4),
    ModelProfile("claude-3-5-haiku-20241022", weight=1, prompt_median=800, completion_median=180),
)  # fmt: skip
ESTIMATED_SHARE = 0.03  # streams that ended without a usage report: counts estimated
SNIPPET_MODEL = "gpt-4o-mini"
ANTHROPIC_SNIPPET_MODEL = "claude-sonnet-4-5-20250929"

ROUTES = (
    DemoRoute(
        RouteProfile(
            "/api/openai",
            median_ms=850,
            sigma=0.55,
            weight=3,
            error_rate=0.022,
            models=OPENAI_MODELS,
            estimated_share=ESTIMATED_SHARE,
        ),
        "/v1",
        "openai:chat",
        "OpenAI-compatible LLM API: chat, responses, embeddings (the built-in mock)",
        provider="openai",
    ),
    DemoRoute(
        RouteProfile(
            "/api/anthropic",
            median_ms=1100,
            sigma=0.5,
            weight=1.5,
            error_rate=0.02,
            models=ANTHROPIC_MODELS,
            estimated_share=ESTIMATED_SHARE,
        ),
        "",
        "anthropic:messages",
        "Anthropic Messages API: POST /api/anthropic/v1/messages (the built-in mock)",
        provider="anthropic",
    ),
    DemoRoute(
        RouteProfile("/api/echo", median_ms=45, sigma=0.4, weight=2, error_rate=0.012),
        "/echo",
        "echo:read",
        "a generic JSON service (the mock echoes the request back)",
        injects_credential=False,
    ),
    DemoRoute(
        RouteProfile("/api/reports", median_ms=1400, sigma=0.8, weight=1, error_rate=0.029),
        "/delay",
        "reports:read",
        "a slow JSON service: /api/reports/{ms} answers after ms milliseconds",
    ),
)


@dataclass(frozen=True, slots=True)
class DemoToken:
    name: str
    team_id: str
    routes: tuple[str, ...]  # also its scopes, through ROUTES
    weight: float
    ip_addresses: tuple[str, ...]
    user_agent: str
    idle_for: timedelta | None = None  # silent for this long before now


TOKENS = (
    DemoToken(
        "n8n production", "backend-team", ("/api/openai", "/api/anthropic", "/api/echo"), 6,
        ("10.20.0.11", "10.20.0.12"), "n8n/1.64.0",
    ),
    DemoToken(
        "billing service", "backend-team", ("/api/echo", "/api/reports"), 3,
        ("10.20.1.5",), "Go-http-client/2.0",
    ),
    DemoToken(
        "analytics notebook", "data-team", ("/api/openai", "/api/anthropic"), 2,
        ("10.30.4.17",), "openai-python/1.40.0",
    ),
    DemoToken(
        "etl pipeline", "data-team", ("/api/echo", "/api/reports"), 2.5,
        ("10.30.9.2",), "python-requests/2.32.3",
    ),
    DemoToken(
        "research sandbox", "research-team",
        ("/api/openai", "/api/anthropic", "/api/echo", "/api/reports"), 1,
        ("10.40.2.8",), "openai-python/1.40.0",
    ),
    DemoToken(
        "legacy cron", "research-team", ("/api/reports",), 0.5,
        ("10.40.7.30",), "curl/8.5.0", idle_for=timedelta(days=18),
    ),
)  # fmt: skip
SNIPPET_TOKEN_NAME = "n8n production"  # noqa: S105 - a name; it may call every snippet's route
BURST_TOKEN_NAME = "research sandbox"  # noqa: S105 - a name
# A monthly budget set after the history so that this token has spent ~85 % of it: the
# budget_threshold detector reports it, and the dashboard's budget bar shows it near full.
BUDGET_TOKEN_NAME = "analytics notebook"  # noqa: S105 - a name
BUDGET_SPENT_PERCENT = 85
BURST_IP = "203.0.113.50"  # documentation range: a new address, never used before
BURST_AGO = timedelta(days=4, hours=5)
DETECT_SLICE = timedelta(hours=6)


# -- the data dir: lock, state file, reset -------------------------------------------------------


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".demo-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        fail(
            f"data dir {data_dir} is not writable ({exc.strerror}); choose another with --data-dir",
            EXIT_CONFIG,
        )


def _lock(data_dir: Path) -> IO[str]:
    """An exclusive lock on the data dir, held until this process exits."""
    lock_file = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "another process"
        fail(
            f"a tokenmanager demo ({holder}) is already running on data dir {data_dir}; stop "
            "it first, or use another --data-dir",
            EXIT_CONFLICT,
        )
    lock_file.truncate(0)
    lock_file.write(f"pid {os.getpid()}")
    lock_file.flush()
    return lock_file


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        fail(f"cannot read {data_dir / STATE_FILE} ({exc}); start over with --reset", EXIT_CONFIG)
    return state


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Atomically, mode 0600 from the start: it holds the demo tokens' secrets."""
    staged = data_dir / f".{STATE_FILE}.{os.getpid()}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as state_file:
        json.dump(state, state_file, indent=2)
    staged.replace(data_dir / STATE_FILE)


def _refuse_foreign_database(data_dir: Path) -> None:
    """Exit if the data dir has a database but no demo state: someone's real data."""
    if (data_dir / DATABASE_FILES[0]).exists() and _read_state(data_dir) is None:
        fail(
            f"data dir {data_dir} holds a database the demo did not create; the demo neither "
            "uses nor deletes it: choose another --data-dir",
            EXIT_CONFLICT,
        )


def _delete_demo(data_dir: Path) -> None:
    """Remove what the demo created (never a database it did not create)."""
    _refuse_foreign_database(data_dir)
    for name in (*DATABASE_FILES, STATE_FILE):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "spool", ignore_errors=True)


# -- setting up: teams, users, routes, tokens, history -------------------------------------------


def _upstream_url(upstream_port: int, route: DemoRoute) -> str:
    return f"http://{HOST}:{upstream_port}{route.upstream_path}"


async def _create_objects(
    services: Services, upstream_port: int, start: datetime
) -> tuple[str, list[dict[str, Any]]]:
    """The admin (its password returned), teams, routes and tokens (secrets returned)."""
    from tokenmanager.storage.teams import update_team
    from tokenmanager.storage.tokens import update_token

    actor = cli_actor()
    admin_password = secrets.token_urlsafe(15)
    await services.users.create(
        actor, username=ADMIN_USERNAME, password=admin_password, role=Role.ADMIN
    )
    for team_id, name in TEAMS:
        await services.teams.create(actor, team_id=team_id, name=name)
    scopes = {route.profile.path: route.scope for route in ROUTES}
    for route in ROUTES:
        await services.routes.create(
            actor,
            path_prefix=route.profile.path,
            upstream_url=_upstream_url(upstream_port, route),
            required_scopes=[route.scope],
            upstream_auth_header="Authorization" if route.injects_credential else None,
            upstream_auth_value=(
                f"Bearer mock-{secrets.token_urlsafe(24)}" if route.injects_credential else None
            ),
            description=route.description,
            provider=route.provider,
        )
    tokens: list[dict[str, Any]] = []
    for demo_token in TOKENS:
        issued = await services.tokens.issue(
            actor,
            name=demo_token.name,
            team_id=demo_token.team_id,
            scopes=[scopes[path] for path in demo_token.routes],
            description="created by tokenmanager demo",
        )
        tokens.append(
            {
                "id": issued.token.id,
                "name": demo_token.name,
                "team_id": demo_token.team_id,
                "scopes": list(issued.token.scopes),
                "token_secret": issued.token_secret,
            }
        )
    # The history starts 30 days ago: so must the tokens and teams, or every token would look
    # younger than its own usage (and none could be idle).
    async with services.database.write() as connection:
        for token in tokens:
            await update_token(connection, token["id"], {"created_at": start})
        for team_id, _ in TEAMS:
            await update_team(connection, team_id, {"created_at": start})
    return admin_password, tokens


def build_demo_plan(
    tokens: list[dict[str, Any]], start: datetime, end: datetime, *, events: int, seed: int
) -> TrafficPlan:
    """The demo's traffic over [start, end); the burst only when it falls inside."""
    now = utcnow()
    by_name = {token["name"]: token for token in tokens}
    callers = []
    for demo_token in TOKENS:
        token = by_name[demo_token.name]
        callers.append(
            CallerProfile(
                token_hash=hash_token(token["token_secret"]),
                token_id=token["id"],
                weight=demo_token.weight,
                routes=demo_token.routes,
                ip_addresses=demo_token.ip_addresses,
                user_agent=demo_token.user_agent,
                active_until=now - demo_token.idle_for if demo_token.idle_for else None,
            )
        )
    burst = BurstFromNewIp(
        token_hash=hash_token(by_name[BURST_TOKEN_NAME]["token_secret"]),
        start=now - BURST_AGO,
        duration=timedelta(minutes=40),
        calls=1500,
        ip_address=BURST_IP,
        route_path="/api/openai",
    )
    return TrafficPlan(
        callers=tuple(callers),
        routes=tuple(route.profile for route in ROUTES),
        start=start,
        end=end,
        events=events,
        seed=seed,
        injectors=(burst,) if start <= burst.start < end else (),
    )


class SetupInterruptedError(Exception):
    """Ctrl-C or SIGTERM while the demo was setting up, taken between two transactions."""


async def _write_history(
    services: Services, plan: TrafficPlan, label: str, stop: asyncio.Event
) -> int:
    from tokenmanager.cli.usage import write_events

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
    )

    def on_written(count: int) -> None:
        progress.advance(task, count)
        if stop.is_set():
            raise SetupInterruptedError

    with progress:
        task = progress.add_task(label, total=count_events(plan))
        return await write_events(services, generate_events(plan), on_written)


async def _detect(services: Services, start: datetime, stop: asyncio.Event) -> int:
    """The detectors over every usage row from `start` on, as `tokenmanager security run
    --since` does (the control plane's own runs look back only an hour, so the history's
    anomalies would never be read), handing findings to the same alerts and responses.
    Returns how many findings are open."""
    from tokenmanager.security.models import FindingStatus, RunResult
    from tokenmanager.security.monitor import SecurityMonitor

    live = services.security.monitor
    # Slices of DETECT_SLICE rather than the live monitor's hour: a quarter of the runs, the
    # same findings (each run's fixed cost, not the rows, dominates on a small history).
    monitor = SecurityMonitor(
        services.database,
        thresholds=live.thresholds,
        max_slice_s=DETECT_SLICE.total_seconds(),
        max_rows=services.settings.security_detect_max_rows,
    )
    monitor.on_finding = live.on_finding
    await monitor.start_at(start)
    span_s = max(1.0, (utcnow() - start).total_seconds())
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} %"),
        TimeElapsedColumn(),
        console=stderr,
    )
    with progress:
        task = progress.add_task("security detectors", total=span_s)

        def after_each(result: RunResult) -> None:
            progress.update(task, completed=(result.slice_end - start).total_seconds())
            if stop.is_set() and not result.is_caught_up:
                raise SetupInterruptedError

        await monitor.run_until_caught_up(after_each=after_each)
    _, open_findings = await services.security.findings.list(
        cli_actor(), status=FindingStatus.OPEN, limit=1
    )
    return open_findings


@dataclass(frozen=True, slots=True)
class Prepared:
    state: dict[str, Any]
    admin_password: str | None  # only on the run that created the admin
    history_events: int
    history_s: float
    detect_s: float
    open_findings: int


async def _prepare(settings: Settings, upstream_port: int) -> Prepared:
    """Migrate, then create the demo's objects and history (first run) or bring the history up
    to now and the routes to this run's mock upstream port (later runs)."""
    from tokenmanager.composition import build_services
    from tokenmanager.storage import migrate

    data_dir = settings.data_dir
    state = _read_state(data_dir)
    if state is not None and state.get("status") != "ready":
        stderr.print("The last demo setup did not finish: starting over.")
        _delete_demo(data_dir)
        state = None
    _refuse_foreign_database(data_dir)
    if state is None:
        _write_state(data_dir, {"status": "setting up"})  # marks what follows as the demo's
    # A stop request is taken between transactions: cancelling a database call half-way (what
    # asyncio.run does on Ctrl-C) leaves a connection that cannot even be closed cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    services = build_services(settings)
    try:
        await migrate.upgrade(services.database.engine)
        now = utcnow()
        admin_password = None
        started = time.perf_counter()
        if state is None:
            start = now - HISTORY
            admin_password, tokens = await _create_objects(services, upstream_port, start)
            plan = build_demo_plan(tokens, start, now, events=HISTORY_EVENTS, seed=1)
            written = await _write_history(services, plan, "30 days of usage", stop)
            await _set_near_budget(services, tokens, now)
            detect_from = start
            state = {"status": "ready", "tokens": tokens, "history_until": now.isoformat()}
        else:
            await _point_routes_at(services, upstream_port)
            detect_from = max(datetime.fromisoformat(state["history_until"]), now - HISTORY)
            written = await _catch_up(services, state, now, stop)
        history_s = time.perf_counter() - started
        open_findings = await _detect(services, detect_from, stop)
        detect_s = time.perf_counter() - started - history_s
        state["history_until"] = now.isoformat()
        _write_state(data_dir, state)
        return Prepared(state, admin_password, written, history_s, detect_s, open_findings)
    finally:
        await services.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _set_near_budget(services: Services, tokens: list[dict[str, Any]], now: datetime) -> None:
    """Give BUDGET_TOKEN_NAME a monthly budget it has spent ~BUDGET_SPENT_PERCENT of (its
    spend this month read back from the history just written, the budget rounded up)."""
    from tokenmanager.calendar import period_start
    from tokenmanager.pricing.money import format_micro_usd
    from tokenmanager.storage.spend import read_spend

    token = next(t for t in tokens if t["name"] == BUDGET_TOKEN_NAME)
    key = ("token", str(token["id"]), "month", period_start("month", now, services.settings.zone))
    async with services.database.read() as connection:
        spent_pusd = (await read_spend(connection, [key]))[key]
    if spent_pusd <= 0:
        return  # the first minutes of a month: nothing spent yet, no budget to sit near
    # Whole cents when that moves the share by under 1 % (a budget of a dollar or more), else
    # micro-dollars (early in a month, little is spent yet).
    micro_pusd, cent_micro = 10**6, 10**4
    budget_micro = -(-spent_pusd * 100 // (BUDGET_SPENT_PERCENT * micro_pusd))  # ceiling
    if budget_micro >= 100 * cent_micro:
        budget_micro = -(-budget_micro // cent_micro) * cent_micro
    await services.tokens.update(
        cli_actor(), token["id"], {"budget_usd": format_micro_usd(budget_micro)}
    )


async def _point_routes_at(services: Services, upstream_port: int) -> None:
    actor = cli_actor()
    wanted = {route.profile.path: _upstream_url(upstream_port, route) for route in ROUTES}
    for route in await services.routes.list(actor):
        url = wanted.get(route.path_prefix)
        if url is not None and route.upstream_url != url:
            await services.routes.update(actor, route.id, {"upstream_url": url})


async def _catch_up(
    services: Services, state: dict[str, Any], now: datetime, stop: asyncio.Event
) -> int:
    """History from the last run to now, at the demo's usual rate, so the charts have no gap."""
    last = datetime.fromisoformat(state["history_until"])
    start = max(last, now - HISTORY)
    if now - start < timedelta(minutes=5):
        return 0
    events = round(HISTORY_EVENTS * ((now - start) / HISTORY))
    plan = build_demo_plan(state["tokens"], start, now, events=events, seed=int(start.timestamp()))
    return await _write_history(services, plan, "usage since the last run", stop)


# -- running -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _mock_upstream(port: int) -> AsyncIterator[None]:
    """The mock upstream in a process of its own (`tokenmanager mock-upstream`), so that the
    control plane's process can slow neither the gateway nor the upstream it calls."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenmanager", "mock-upstream", "--host", HOST, "--port", str(port),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while process.returncode is None and time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        else:
            fail("the demo's mock upstream did not start (see the messages above)", EXIT_CONFIG)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def _run(settings: Settings, ports: dict[str, int], banner: str) -> None:
    from tokenmanager.api.app import create_app
    from tokenmanager.cli.gateway_process import GatewayProcess, default_gateway_workers
    from tokenmanager.composition import build_services

    servers: list[Any] = []
    gateway = GatewayProcess(settings, HOST, ports["--gateway-port"], default_gateway_workers())
    stop_requested = asyncio.Event()
    stop_on_signals(servers, stop_requested, [gateway])
    servers.append(
        uvicorn_server(create_app(settings, build_services(settings)), HOST, ports["--port"])
    )
    async with _mock_upstream(ports["--upstream-port"]):
        await gateway.start()
        supervising = asyncio.create_task(gateway.supervise())
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        try:
            ready = await gateway.wait_ready(READY_DEADLINE_S)
            deadline = time.monotonic() + READY_DEADLINE_S
            while ready and not stop_requested.is_set():
                if all(server.started for server in servers):
                    break
                if any(task.done() for task in tasks) or time.monotonic() > deadline:
                    ready = False
                await asyncio.sleep(0.05)
            if not stop_requested.is_set():
                if not ready:
                    for server in servers:
                        server.should_exit = True
                    await asyncio.gather(*tasks, return_exceptions=True)
                    fail("the demo's servers did not start (see the messages above)", EXIT_CONFIG)
                typer.echo(banner)
            await asyncio.gather(*tasks)
        finally:
            gateway.stop()  # also when the control plane ended on its own
            await supervising


def _demo_settings(data_dir: Path | None) -> Settings:
    """The configured settings, with the demo's own: a SQLite file in the data dir, and
    loopback allowed as an upstream (this process only; nothing is written to a config)."""
    try:
        configured = load_settings(**({"data_dir": data_dir} if data_dir else {}))
        allowed = ",".join(part for part in (configured.upstream_allow, LOOPBACK) if part)
        return load_settings(
            data_dir=configured.data_dir.resolve(), database_url=None, upstream_allow=allowed
        )
    except ConfigurationError as exc:
        fail(exc.message, EXIT_CONFIG)


def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its state (default: TOKENMANAGER_DATA_DIR)."),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Control-plane port.")] = 8000,
    gateway_port: Annotated[int, typer.Option(min=1, max=65535, help="Gateway port.")] = 8787,
    upstream_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Mock upstream port.")
    ] = 9000,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the demo's data and start over.")
    ] = False,
) -> None:
    """Run the whole product with a mock upstream and 30 days of synthetic usage."""
    settings = _demo_settings(data_dir)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _prepare_data_dir(settings.data_dir)
    lock = _lock(settings.data_dir)
    ports = {"--port": port, "--gateway-port": gateway_port, "--upstream-port": upstream_port}
    if len(set(ports.values())) < len(ports):
        fail("--port, --gateway-port and --upstream-port must differ", EXIT_CONFIG)
    for option, number in ports.items():
        check_port_free(HOST, number, option)
    if reset:
        _delete_demo(settings.data_dir)
    try:
        prepared = asyncio.run(_prepare(settings, upstream_port))
        asyncio.run(_run(settings, ports, format_banner(settings, ports, prepared)))
    except (SetupInterruptedError, KeyboardInterrupt):
        stderr.print("Stopped before the demo was ready.")
    except TokenManagerError as exc:
        fail(exc.message, exit_code_for(exc))
    finally:
        lock.close()


# -- what it prints ------------------------------------------------------------------------------


def format_banner(settings: Settings, ports: dict[str, int], prepared: Prepared) -> str:
    """Plain text, never wrapped, so every command and snippet can be pasted as printed."""
    control = f"http://{HOST}:{ports['--port']}"
    gateway = f"http://{HOST}:{ports['--gateway-port']}"
    tokens = prepared.state["tokens"]
    token = next(t for t in tokens if t["name"] == SNIPPET_TOKEN_NAME)
    secret = token["token_secret"]
    if prepared.admin_password is not None:
        login = f"{ADMIN_USERNAME} / {prepared.admin_password}   (shown this once)"
    else:
        login = (
            f"{ADMIN_USERNAME} (password shown on the first run; `tokenmanager demo --reset` "
            "starts over)"
        )
    history = (
        f"{prepared.history_events} usage events written in {prepared.history_s:.1f} s"
        if prepared.history_events
        else "history up to date"
    )
    lines = [
        "",
        f"Token Manager demo is running ({history}). Ctrl-C stops it.",
        "",
        f"  Dashboard      {control}/",
        f"  API docs       {control}/docs",
        f"  Gateway        {gateway}",
        f"  Mock upstream  http://{HOST}:{ports['--upstream-port']}",
        f"  Security       {control}/security   ({prepared.open_findings} open finding(s); "
        f"the detectors read the history in {prepared.detect_s:.1f} s)",
        f"  Admin login    {login}",
        f"  Data dir       {settings.data_dir} (token secrets in {STATE_FILE}, mode 0600)",
        "",
        "Demo tokens:",
        *(
            f"  id {t['id']:<3} {t['name']:<20} {t['team_id']:<14} {', '.join(t['scopes'])}"
            for t in tokens
        ),
        f"  ('{BURST_TOKEN_NAME}' had a burst of calls from {BURST_IP} "
        f"{BURST_AGO.days} days ago; '{TOKENS[-1].name}' has been idle for "
        f"{TOKENS[-1].idle_for.days if TOKENS[-1].idle_for else 0} days; "
        f"'{BUDGET_TOKEN_NAME}' has spent ~{BUDGET_SPENT_PERCENT} % of its monthly budget.)",
        "",
        f"Token '{token['name']}' (id {token['id']}): {secret}",
        "",
        "Call the OpenAI-compatible mock through the gateway:",
        "",
        f"  curl -s {gateway}/api/openai/chat/completions -H 'Authorization: Bearer {secret}' "
        "-H 'Content-Type: application/json' "
        f"""-d '{{"model": "{SNIPPET_MODEL}", """
        """"messages": [{"role": "user", "content": "Hello"}]}'""",
        "",
        "The Anthropic-compatible mock (X-API-Key, as the anthropic package sends it):",
        "",
        f"  curl -s {gateway}/api/anthropic/v1/messages -H 'X-API-Key: {secret}' "
        "-H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' "
        f"""-d '{{"model": "{ANTHROPIC_SNIPPET_MODEL}", "max_tokens": 256, """
        """"messages": [{"role": "user", "content": "Hello"}]}'""",
        "",
        "Call the JSON service (X-API-Key works as well as Authorization: Bearer):",
        "",
        f"  curl -s {gateway}/api/echo/orders/42 -H 'X-API-Key: {secret}'",
        "",
        "The same from Python with the openai package (pip install openai):",
        "",
        "from openai import OpenAI",
        f'client = OpenAI(base_url="{gateway}/api/openai", api_key="{secret}")',
        f'reply = client.chat.completions.create(model="{SNIPPET_MODEL}", '
        'messages=[{"role": "user", "content": "Hello"}])',
        "print(reply.choices[0].message.content)",
        "",
    ]
    return "\n".join(lines)
