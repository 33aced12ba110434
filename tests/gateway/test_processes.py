"""The gateway as real processes (`tokenmanager gateway`), the way it is deployed:

- revocation reaches two gateway processes within 1 s, by polling and through Redis;
- SIGTERM during a slow request: the request completes, the exit code is 0, the usage row is in;
- `--workers N`: /metrics on any worker counts every worker's requests;
- a per-minute rate limit shared through Redis holds across two gateway processes;
- `--workers` defaults to the cores; with two workers a burst is recorded exactly once;
- the open-file limit is raised at start, or one line says what to change.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services, build_services
from tokenmanager.mock_upstream.app import build_mock_upstream
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs
from tokenmanager.testing import TEST_SECRET_KEY, free_port, make_settings, running_mock_upstream
from tokenmanager.tokens.models import IssuedToken

TEAM_ID = "process-team"
SCOPE = "echo:read"
STARTUP_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 30.0
REVOCATION_BUDGET_S = 1.0
REDIS_URL = os.environ.get("TOKENMANAGER_TEST_REDIS_URL")


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


StartGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The control plane's settings (loopback upstreams allowed, for the mock)."""
    return make_settings(tmp_path / "control", database_url, upstream_allow="127.0.0.0/8")


@pytest.fixture
async def start_gateway(tmp_path: Path, database_url: str) -> AsyncIterator[StartGateway]:
    """`await start_gateway(name, workers=1, redis_url=None, open_files=None)`: a `tokenmanager
    gateway` process on a free port (`workers=None`: the default count; `open_files`: its
    starting soft and hard RLIMIT_NOFILE), answering /healthz; terminated (then killed) after
    the test."""
    started: list[GatewayProcess] = []

    async def start(
        name: str,
        *,
        workers: int | None = 1,
        redis_url: str | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> GatewayProcess:
        port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TOKENMANAGER_") and key != "PROMETHEUS_MULTIPROC_DIR"
        }
        env |= {
            "TOKENMANAGER_DATA_DIR": str(tmp_path / name),
            "TOKENMANAGER_DATABASE_URL": database_url,
            "TOKENMANAGER_SECRET_KEY": TEST_SECRET_KEY,
            "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
            "TOKENMANAGER_LOG_LEVEL": "WARNING",
        }
        if redis_url is not None:
            env["TOKENMANAGER_REDIS_URL"] = redis_url
        log_path = tmp_path / f"{name}.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tokenmanager",
                "gateway",
                "--port",
                str(port),
                *(["--workers", str(workers)] if workers is not None else []),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=(
                    (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files))
                    if open_files is not None
                    else None
                ),
            )
        finally:
            os.close(log_fd)  # the child has its own copy
        gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log_path)
        started.append(gateway)
        await wait_until_healthy(gateway)
        return gateway

    yield start
    for gateway in started:
        await stop_process(gateway.process)


async def wait_until_healthy(gateway: GatewayProcess) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if gateway.process.returncode is not None:
                raise AssertionError(f"the gateway exited at start:\n{gateway.log()}")
            try:
                if (await client.get(f"{gateway.url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start:\n{gateway.log()}")
            await asyncio.sleep(0.05)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), EXIT_DEADLINE_S)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest.fixture
async def team(services: Services, admin: Actor) -> str:
    await services.teams.create(admin, team_id=TEAM_ID, name="Process team")
    return TEAM_ID


@pytest.fixture
async def mock_upstream() -> AsyncIterator[str]:
    async with running_mock_upstream() as url:
        yield url


@pytest.fixture
async def echo_route(services: Services, admin: Actor, mock_upstream: str) -> str:
    """`/api/echo` -> the mock's /echo, needing `echo:read`; created before any gateway starts."""
    await services.routes.create(
        admin,
        path_prefix="/api/echo",
        upstream_url=f"{mock_upstream}/echo",
        required_scopes=[SCOPE],
    )
    return "/api/echo"


async def issue(services: Services, admin: Actor, team: str, **fields: object) -> IssuedToken:
    return await services.tokens.issue(
        admin, name="process test", team_id=team, scopes=[SCOPE], **fields
    )


def auth(token: IssuedToken) -> dict[str, str]:
    return {"X-API-Key": token.token_secret}


# -- (a) revocation reaches every process ----------------------------------------------------


@pytest.mark.parametrize("change_channel", ["polling", "redis"])
async def test_revocation_reaches_two_gateway_processes_within_one_second(
    change_channel: str,
    settings: Settings,
    services: Services,
    admin: Actor,
    team: str,
    echo_route: str,
    start_gateway: StartGateway,
) -> None:
    redis_url: str | None = None
    control = services
    if change_channel == "redis":
        if REDIS_URL is None:
            pytest.skip("set TOKENMANAGER_TEST_REDIS_URL to test change notifications over Redis")
        redis_url = REDIS_URL
        # The control plane announces changes over Redis only when it is configured with it.
        control = build_services(settings.model_copy(update={"redis_url": redis_url}))
    try:
        token = await issue(control, admin, team)
        gateways = await asyncio.gather(
            start_gateway("gw-a", redis_url=redis_url), start_gateway("gw-b", redis_url=redis_url)
        )
        async with httpx.AsyncClient(headers=auth(token), timeout=5.0) as client:

            async def statuses() -> list[int]:
                answers = await asyncio.gather(
                    *(client.get(f"{g.url}{echo_route}/ping") for g in gateways)
                )
                return [answer.status_code for answer in answers]

            assert await statuses() == [200, 200]
            assert await statuses() == [200, 200]  # now from each process's cache

            await control.tokens.revoke(admin, token.token.id)
            revoked_at = time.monotonic()
            while (seen := await statuses()) != [401, 401]:
                assert set(seen) <= {200, 401}, seen
                elapsed_s = time.monotonic() - revoked_at
                assert elapsed_s <= REVOCATION_BUDGET_S, f"still {seen} after {elapsed_s:.3f} s"
                await asyncio.sleep(0.005)
            latency_s = time.monotonic() - revoked_at
            print(f"revocation seen by both gateways ({change_channel}) after {latency_s:.3f} s")
            assert latency_s <= REVOCATION_BUDGET_S
            assert await statuses() == [401, 401]  # and it stays revoked
    finally:
        if control is not services:
            await control.close()


# -- (b) SIGTERM finishes in-flight requests -------------------------------------------------


@asynccontextmanager
async def running_observed_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """The mock upstream, plus an event set when a request reaches it."""
    arrived = asyncio.Event()

    @web.middleware
    async def note_arrival(request: web.Request, handler: object) -> web.StreamResponse:
        arrived.set()
        return await handler(request)  # type: ignore[operator,no-any-return]

    app = build_mock_upstream()
    app.middlewares.append(note_arrival)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", arrived
    finally:
        await runner.cleanup()


async def test_sigterm_lets_the_in_flight_request_finish_records_it_and_exits_0(
    services: Services, admin: Actor, team: str, start_gateway: StartGateway
) -> None:
    token = await issue(services, admin, team)
    async with running_observed_upstream() as (upstream, arrived):
        await services.routes.create(
            admin, path_prefix="/api/slow", upstream_url=upstream, required_scopes=[SCOPE]
        )
        gateway = await start_gateway("gw-term")
        async with httpx.AsyncClient(headers=auth(token), timeout=30.0) as client:
            in_flight = asyncio.create_task(client.get(f"{gateway.url}/api/slow/delay/1000"))
            await asyncio.wait_for(arrived.wait(), 10.0)
            gateway.process.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(in_flight, 10.0)
        assert answer.status_code == 200
        exit_code = await asyncio.wait_for(gateway.process.wait(), EXIT_DEADLINE_S)
    assert exit_code == 0, gateway.log()

    async with services.database.read() as connection:
        rows = list(
            await connection.execute(
                token_usage_logs.select().where(token_usage_logs.c.token_id == token.token.id)
            )
        )
    assert len(rows) == 1, gateway.log()
    (row,) = rows
    assert (row.route_path, row.response_status, row.failure_kind) == ("/api/slow", 200, None)
    assert row.response_time_ms >= 1000


async def test_sigterm_right_after_a_burst_drains_every_event_and_exits_0(
    services: Services, admin: Actor, team: str, echo_route: str, start_gateway: StartGateway
) -> None:
    """The stop comes while the recorder is busy with the burst's events (collecting a batch,
    or writing one): each still reaches the store, and the process still exits promptly."""
    token = await issue(services, admin, team)
    gateway = await start_gateway("gw-burst")
    burst = 200
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(token), timeout=10.0) as client:
        answers = await asyncio.gather(
            *(client.get(f"{echo_route}/{index}") for index in range(burst))
        )
    assert [answer.status_code for answer in answers] == [200] * burst
    gateway.process.send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(gateway.process.wait(), 10.0)
    assert exit_code == 0, gateway.log()
    async with services.database.read() as connection:
        stored = await connection.execute(
            sa.select(sa.func.count())
            .select_from(token_usage_logs)
            .where(token_usage_logs.c.token_id == token.token.id)
        )
        assert stored.scalar_one() == burst, gateway.log()


async def test_a_forged_forwarded_for_from_a_loopback_peer_is_not_recorded(
    services: Services, admin: Actor, team: str, echo_route: str, start_gateway: StartGateway
) -> None:
    """No trusted proxies are configured, so the peer's own address is recorded: the server in
    front of the pipeline (uvicorn) must not believe X-Forwarded-For on its own either."""
    token = await issue(services, admin, team)
    gateway = await start_gateway("gw-forwarded")
    forged = {**auth(token), "X-Forwarded-For": "203.0.113.9"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=forged, timeout=10.0) as client:
        assert (await client.get(f"{echo_route}/who")).status_code == 200
    gateway.process.send_signal(signal.SIGTERM)  # drains the recorder
    assert await asyncio.wait_for(gateway.process.wait(), EXIT_DEADLINE_S) == 0, gateway.log()
    async with services.database.read() as connection:
        addresses = await connection.execute(
            sa.select(token_usage_logs.c.ip_address).where(
                token_usage_logs.c.token_id == token.token.id
            )
        )
        assert list(addresses.scalars()) == ["127.0.0.1"], gateway.log()


# -- (c) metrics across workers --------------------------------------------------------------


def requests_total(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "tokenmanager_gateway_requests_total"
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_metrics_from_any_worker_count_every_workers_requests(
    workers: int,
    services: Services,
    admin: Actor,
    team: str,
    echo_route: str,
    start_gateway: StartGateway,
) -> None:
    token = await issue(services, admin, team)
    gateway = await start_gateway("gw-workers", workers=workers)
    sent = 60
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        # New connections each time, so the kernel spreads them over the workers.
        for index in range(sent):
            answer = await client.get(
                f"{echo_route}/{index}", headers=auth(token) | {"Connection": "close"}
            )
            assert answer.status_code == 200

        async def total() -> float:
            answer = await client.get("/metrics", headers={"Connection": "close"})
            assert answer.status_code == 200
            return requests_total(answer.text)

        # A request is counted just after its response is sent: allow a moment.
        deadline = time.monotonic() + 5.0
        while (seen := await total()) != sent:
            assert seen < sent, seen
            assert time.monotonic() < deadline, f"/metrics counts {seen} of {sent} requests"
            await asyncio.sleep(0.05)
        assert [await total() for _ in range(8)] == [sent] * 8


# -- (d) rate limits shared through Redis ----------------------------------------------------


async def clear_rate_limit_counters(token_id: int) -> None:
    import redis.asyncio

    assert REDIS_URL is not None
    client = redis.asyncio.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"tm:rl:token:{token_id}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_a_per_minute_limit_holds_across_two_gateways_sharing_redis(
    services: Services, admin: Actor, team: str, echo_route: str, start_gateway: StartGateway
) -> None:
    if REDIS_URL is None:
        pytest.skip("set TOKENMANAGER_TEST_REDIS_URL to test rate limits shared through Redis")
    limit = 10
    token = await issue(services, admin, team, rate_limit_per_min=limit)
    # Token ids restart in every test database; counters of an earlier test must not count.
    await clear_rate_limit_counters(token.token.id)
    gateways = await asyncio.gather(
        start_gateway("gw-rl-a", redis_url=REDIS_URL), start_gateway("gw-rl-b", redis_url=REDIS_URL)
    )
    async with httpx.AsyncClient(headers=auth(token), timeout=5.0) as client:
        for _attempt in range(2):
            minute = int(time.time() // 60)
            answers = [
                await client.get(f"{gateways[index % 2].url}{echo_route}/{index}")
                for index in range(2 * limit)
            ]
            if int(time.time() // 60) == minute:
                break
            # The minute window turned during the run: counts restarted; run again.
            await clear_rate_limit_counters(token.token.id)
        else:
            pytest.fail("two runs in a row crossed a minute boundary")

    codes = [answer.status_code for answer in answers]
    assert codes.count(200) == limit, codes
    assert codes.count(429) == limit, codes
    # Both processes served part of the budget, so it really was shared.
    assert {index % 2 for index, code in enumerate(codes) if code == 200} == {0, 1}
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1


# -- (e) a budget holds across processes -----------------------------------------------------

BUDGET_MODEL = "budget-test-model"
# The store's lag: a usage batch is written within the flush interval (0.2 s), and every
# process reads spend every poll interval (0.5 s); docs/costs.md promises at most 1 s.
STORE_LAG_S = 1.0
CALL_PACE_S = 0.05


async def clear_spend_counters() -> None:
    """Spend counters of earlier tests (token ids restart in every test database)."""
    import redis.asyncio

    assert REDIS_URL is not None
    client = redis.asyncio.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match="tm:spend:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.mark.parametrize("spend_channel", ["store", "redis"])
async def test_a_budget_holds_across_two_gateway_processes(
    spend_channel: str,
    services: Services,
    admin: Actor,
    team: str,
    mock_upstream: str,
    start_gateway: StartGateway,
) -> None:
    if spend_channel == "redis":
        if REDIS_URL is None:
            pytest.skip("set TOKENMANAGER_TEST_REDIS_URL to test spend shared through Redis")
        await clear_spend_counters()
    await services.routes.create(
        admin,
        path_prefix="/api/llm",
        upstream_url=f"{mock_upstream}/v1",
        required_scopes=[SCOPE],
        provider="openai",
    )
    await services.prices.set(
        admin, BUDGET_MODEL, input_usd_per_mtok="1000", output_usd_per_mtok="1000"
    )
    body = {"model": BUDGET_MODEL, "messages": [{"role": "user", "content": "spend a little"}]}
    async with httpx.AsyncClient(timeout=5.0) as direct:
        usage = (await direct.post(f"{mock_upstream}/v1/chat/completions", json=body)).json()
    call_cost_pusd = (usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]) * (
        10**9
    )
    # Crossed by the 10th call: a budget in whole micro-dollars, 9.5 calls' worth.
    budget_micro_usd = call_cost_pusd * 19 // 2 // 10**6
    token = await issue(
        services, admin, team, budget_usd=f"{budget_micro_usd / 10**6:.6f}", budget_period="day"
    )
    redis_url = REDIS_URL if spend_channel == "redis" else None
    gateways = await asyncio.gather(
        start_gateway("gw-budget-a", redis_url=redis_url),
        start_gateway("gw-budget-b", redis_url=redis_url),
    )

    answered: list[tuple[float, float, int]] = []  # (started, ended, status)
    async with httpx.AsyncClient(headers=auth(token), timeout=5.0) as client:
        for index in range(120):
            started = time.monotonic()
            answer = await client.post(
                f"{gateways[index % 2].url}/api/llm/chat/completions", json=body
            )
            answered.append((started, time.monotonic(), answer.status_code))
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "budget_exceeded"
                assert int(answer.headers["Retry-After"]) >= 1
            await asyncio.sleep(CALL_PACE_S)
        # Afterwards, both refuse.
        for gateway in gateways:
            answer = await client.post(f"{gateway.url}/api/llm/chat/completions", json=body)
            assert answer.status_code == 429, answer.text

    successes = [(started, ended) for started, ended, status in answered if status == 200]
    needed = -(-budget_micro_usd * 10**6 // call_cost_pusd)  # calls that reach the budget
    assert len(successes) >= needed  # never refused before the budget was spent
    crossed_at = successes[needed - 1][1]
    late = [started for started, _ in successes[needed:]]
    if spend_channel == "redis":
        # Only the call whose cost was still on its way to Redis may slip through.
        assert len(late) <= 1, late
    else:
        assert all(started <= crossed_at + STORE_LAG_S for started in late), [
            round(started - crossed_at, 3) for started in late
        ]


# -- (e) workers: their default count, and usage recorded across them ------------------------


def worker_pids(gateway: GatewayProcess) -> list[int]:
    """uvicorn's worker processes under a multi-worker gateway (none for one worker)."""
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


async def test_workers_default_to_the_number_of_cores(start_gateway: StartGateway) -> None:
    cores = len(os.sched_getaffinity(0))
    gateway = await start_gateway("gw-default", workers=None)
    # uvicorn starts its workers one after the other; the port answers once the first does.
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while len(workers := worker_pids(gateway)) < cores and cores > 1:
        assert time.monotonic() < deadline, gateway.log()
        await asyncio.sleep(0.05)
    assert len(workers) == (cores if cores > 1 else 0)
    assert f"with {cores} worker(s)" in gateway.log()


async def test_a_burst_over_two_workers_is_recorded_exactly_once_after_sigterm(
    services: Services, admin: Actor, team: str, echo_route: str, start_gateway: StartGateway
) -> None:
    token = await issue(services, admin, team)
    gateway = await start_gateway("gw-two", workers=2)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while len(worker_pids(gateway)) < 2:
        assert time.monotonic() < deadline, gateway.log()
        await asyncio.sleep(0.05)
    burst = 200
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per call: both serve
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=auth(token), timeout=10.0, limits=limits
    ) as client:
        answers = await asyncio.gather(
            *(
                client.get(f"{echo_route}/{index}", headers={"User-Agent": f"burst-{index}"})
                for index in range(burst)
            )
        )
    assert [answer.status_code for answer in answers] == [200] * burst
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.process.wait(), EXIT_DEADLINE_S) == 0, gateway.log()
    async with services.database.read() as connection:
        agents = await connection.execute(
            sa.select(token_usage_logs.c.user_agent).where(
                token_usage_logs.c.token_id == token.token.id
            )
        )
        assert sorted(agents.scalars()) == sorted(f"burst-{index}" for index in range(burst))


# -- (f) open files ----------------------------------------------------------------------------


def soft_open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


async def test_the_open_files_soft_limit_is_raised_to_the_hard_limit(
    start_gateway: StartGateway,
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 2048:
        pytest.skip("needs a finite hard limit of at least 2048 open files")
    gateway = await start_gateway("gw-files", open_files=(1024, hard))
    assert soft_open_files_limit(gateway.process.pid) == hard
    if hard >= 2 * 8_000 + 200:  # enough for the default TOKENMANAGER_GATEWAY_MAX_CONNECTIONS
        assert "open-file limit" not in gateway.log()


async def test_a_hard_limit_too_low_for_the_configured_connections_is_named_in_one_line(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway("gw-few-files", open_files=(1024, 1024))
    lines = [line for line in gateway.log().splitlines() if "open-file limit" in line]
    assert len(lines) == 1, gateway.log()
    (line,) = lines
    assert "is 1024" in line
    assert "TOKENMANAGER_GATEWAY_MAX_CONNECTIONS=8000" in line
    assert "LimitNOFILE=16200" in line
