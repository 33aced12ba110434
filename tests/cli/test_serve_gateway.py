"""`tokenmanager serve` runs the gateway in processes of its own, and keeps it whole:

- the control plane's process frozen (SIGSTOP), or busy with exports and detector runs: the
  gateway keeps answering;
- Ctrl-C or SIGTERM during load: exit 0, every answered call recorded exactly once; a second
  Ctrl-C cuts a request that would never end;
- a gateway worker killed (SIGKILL): restarted, and no answered call lost or doubled;
- 100 concurrent streams, 10 clients leaving mid-stream: byte-exact, the leavers recorded as
  499, every upstream stream closed.
"""

from __future__ import annotations

import asyncio
import json
import os
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

from tokenmanager.access.actor import Actor, Role
from tokenmanager.composition import Services
from tokenmanager.mock_upstream.app import build_mock_upstream
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs
from tokenmanager.testing import (
    TEST_SECRET_KEY,
    free_port,
    make_settings,
    running_mock_upstream,
)
from tokenmanager.tokens.models import IssuedToken

START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
SCOPE = "echo:read"


@dataclass
class Serve:
    process: asyncio.subprocess.Process
    control_url: str
    gateway_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def gateway_pid(self) -> int | None:
        """The `tokenmanager gateway` child (for one worker, the worker itself), if running."""
        found = [child for child in children(self.process.pid) if b"gateway" in cmdline(child)]
        assert len(found) <= 1, found
        return found[0] if found else None

    def worker_pids(self, workers: int) -> list[int]:
        gateway = self.gateway_pid()
        if gateway is None or workers == 1:
            return [] if gateway is None else [gateway]
        return [child for child in children(gateway) if b"spawn_main" in cmdline(child)]


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


StartServe = Callable[..., Awaitable[Serve]]


@pytest.fixture
async def start_serve(tmp_path: Path, database_url: str) -> AsyncIterator[StartServe]:
    """`await start_serve(workers=1)`: `tokenmanager serve` on free ports, both planes
    answering; stopped (then killed) after the test."""
    started: list[Serve] = []

    async def start(*, workers: int = 1) -> Serve:
        port, gateway_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMANAGER_")}
        env |= {
            "TOKENMANAGER_DATA_DIR": str(tmp_path / "serve"),
            "TOKENMANAGER_DATABASE_URL": database_url,
            "TOKENMANAGER_SECRET_KEY": TEST_SECRET_KEY,
            "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
            "TOKENMANAGER_LOG_LEVEL": "WARNING",
        }
        log_path = tmp_path / "serve.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tokenmanager", "serve",
                "--port", str(port), "--gateway-port", str(gateway_port),
                "--gateway-workers", str(workers),
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        serve = Serve(
            process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gateway_port}", log_path
        )
        started.append(serve)
        await wait_until_answering(serve, f"{serve.control_url}/readyz")
        await wait_until_answering(serve, f"{serve.gateway_url}/healthz")
        return serve

    yield start
    for serve in started:
        if serve.process.returncode is None:
            with_signal(serve, signal.SIGCONT)
            serve.process.terminate()
            try:
                await asyncio.wait_for(serve.process.wait(), STOP_DEADLINE_S)
            except TimeoutError:
                serve.process.kill()
                await serve.process.wait()


def with_signal(serve: Serve, signum: int) -> None:
    os.kill(serve.process.pid, signum)


async def wait_until_answering(serve: Serve, url: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if serve.process.returncode is not None:
                raise AssertionError(f"serve exited:\n{serve.log()}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url} did not answer:\n{serve.log()}"
            await asyncio.sleep(0.05)


async def wait_until_refused(url: str) -> None:
    deadline = time.monotonic() + STOP_DEADLINE_S
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            try:
                await client.get(f"{url}/healthz")
            except httpx.ConnectError:
                return
            assert time.monotonic() < deadline, f"{url} still answers"
            await asyncio.sleep(0.05)


async def stop(serve: Serve, signum: int = signal.SIGTERM) -> None:
    with_signal(serve, signum)
    exit_code = await asyncio.wait_for(serve.process.wait(), STOP_DEADLINE_S)
    assert exit_code == 0, serve.log()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The test's own settings (loopback upstreams allowed, for the mock)."""
    return make_settings(tmp_path / "control", database_url, upstream_allow="127.0.0.0/8")


@pytest.fixture
async def token(services: Services, admin: Actor) -> IssuedToken:
    await services.teams.create(admin, team_id="serve-team", name="Serve team")
    return await services.tokens.issue(
        admin, name="serve test", team_id="serve-team", scopes=[SCOPE]
    )


@pytest.fixture
async def mock_upstream(services: Services, admin: Actor) -> AsyncIterator[str]:
    """The mock upstream (in this test's loop), routed as `/api/mock`; yields its URL."""
    async with running_mock_upstream() as url:
        await services.routes.create(
            admin, path_prefix="/api/mock", upstream_url=url, required_scopes=[SCOPE]
        )
        yield url


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
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", arrived
    finally:
        await runner.cleanup()


async def recorded_agents(services: Services, token: IssuedToken) -> list[str]:
    async with services.database.read() as connection:
        rows = await connection.execute(
            sa.select(token_usage_logs.c.user_agent).where(
                token_usage_logs.c.token_id == token.token.id
            )
        )
        return sorted(rows.scalars())


async def call(client: httpx.AsyncClient, agent: str) -> int:
    answer = await client.get("/api/mock/echo/x", headers={"User-Agent": agent})
    return answer.status_code


# -- the control plane cannot stall the gateway ----------------------------------------------


async def test_the_gateway_answers_while_the_control_plane_process_is_frozen(
    services: Services, token: IssuedToken, mock_upstream: str, start_serve: StartServe
) -> None:
    serve = await start_serve()
    headers = {"X-API-Key": token.token_secret}
    async with httpx.AsyncClient(base_url=serve.gateway_url, headers=headers) as client:
        assert await call(client, "before") == 200
        with_signal(serve, signal.SIGSTOP)  # the control plane's process, loop and all
        try:
            async with httpx.AsyncClient(timeout=0.5) as control:
                with pytest.raises(httpx.TimeoutException):
                    await control.get(f"{serve.control_url}/healthz")
            statuses = await asyncio.gather(*(call(client, f"frozen-{i}") for i in range(50)))
        finally:
            with_signal(serve, signal.SIGCONT)
    assert statuses == [200] * 50
    await stop(serve)
    assert len(await recorded_agents(services, token)) == 51


async def test_the_gateway_answers_while_the_control_plane_exports_and_runs_detectors(
    services: Services,
    admin: Actor,
    token: IssuedToken,
    mock_upstream: str,
    start_serve: StartServe,
) -> None:
    password = "busy admin password 123"
    await services.users.create(admin, username="busy", password=password, role=Role.ADMIN)
    serve = await start_serve()
    gateway_headers = {"X-API-Key": token.token_secret}
    async with (
        httpx.AsyncClient(base_url=serve.control_url, timeout=60.0) as control,
        httpx.AsyncClient(
            base_url=serve.gateway_url, headers=gateway_headers, timeout=30.0
        ) as gateway,
    ):
        login = await control.post(
            "/api/auth/login", json={"username": "busy", "password": password}
        )
        assert login.status_code == 200, login.text
        control.cookies.clear()
        admin_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        done = asyncio.Event()
        control_work: list[int] = []

        async def keep_control_plane_busy() -> None:
            while not done.is_set():
                export = await control.get(
                    "/api/usage/export", params={"window": "30d"}, headers=admin_headers
                )
                run = await control.post("/api/security/run", headers=admin_headers)
                control_work.extend((export.status_code, run.status_code))

        async def gateway_calls(worker: int) -> list[int]:
            return [await call(gateway, f"busy-{worker}-{index}") for index in range(50)]

        busy = [asyncio.create_task(keep_control_plane_busy()) for _ in range(3)]
        try:
            statuses = await asyncio.gather(*(gateway_calls(worker) for worker in range(4)))
        finally:
            done.set()
            await asyncio.gather(*busy)
    assert [status for batch in statuses for status in batch] == [200] * 200
    assert control_work
    assert set(control_work) == {200}
    await stop(serve)
    assert len(await recorded_agents(services, token)) == 200


# -- stopping under load -----------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_stop_during_load_exits_0_and_records_every_answered_call_once(
    signum: int,
    services: Services,
    token: IssuedToken,
    mock_upstream: str,
    start_serve: StartServe,
) -> None:
    serve = await start_serve(workers=2)
    answered: list[str] = []
    enough = asyncio.Event()

    async def client_loop(index: int) -> None:
        headers = {"X-API-Key": token.token_secret}
        async with httpx.AsyncClient(
            base_url=serve.gateway_url, headers=headers, timeout=10.0
        ) as client:
            for sequence in range(10_000):
                agent = f"load-{index}-{sequence}"
                try:
                    status = await call(client, agent)
                except httpx.TransportError:
                    return  # the gateway has stopped listening
                assert status == 200
                answered.append(agent)
                if len(answered) >= 200:
                    enough.set()

    clients = [asyncio.create_task(client_loop(index)) for index in range(8)]
    await asyncio.wait_for(enough.wait(), START_DEADLINE_S)
    with_signal(serve, signum)
    exit_code = await asyncio.wait_for(serve.process.wait(), STOP_DEADLINE_S)
    await asyncio.gather(*clients)
    assert exit_code == 0, serve.log()
    assert await recorded_agents(services, token) == sorted(answered)


async def test_a_second_ctrl_c_stops_serve_without_waiting_for_a_hanging_request(
    services: Services, admin: Actor, token: IssuedToken, start_serve: StartServe
) -> None:
    async with running_observed_upstream() as (upstream, arrived):
        await services.routes.create(
            admin, path_prefix="/api/observed", upstream_url=upstream, required_scopes=[SCOPE]
        )
        serve = await start_serve(workers=2)
        headers = {"X-API-Key": token.token_secret}
        async with httpx.AsyncClient(base_url=serve.gateway_url, headers=headers) as client:
            # The mock's /hang never answers; a graceful stop alone would wait for it.
            hanging = asyncio.create_task(client.get("/api/observed/hang", timeout=None))
            await asyncio.wait_for(arrived.wait(), START_DEADLINE_S)
            with_signal(serve, signal.SIGINT)
            # Two signals sent at once to another process may arrive as one: the second goes
            # once the first was taken (the control plane, with nothing in flight, has closed).
            await wait_until_refused(serve.control_url)
            with_signal(serve, signal.SIGINT)
            # Below uvicorn's 30 s graceful timeout: the stop did not wait for the request.
            try:
                exit_code = await asyncio.wait_for(serve.process.wait(), 20)
            except TimeoutError:
                raise AssertionError(f"serve did not stop:\n{serve.log()}") from None
            with pytest.raises(httpx.TransportError):
                await asyncio.wait_for(hanging, 20)
    assert exit_code == 0, serve.log()


# -- a crashed worker ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_killed_gateway_worker_is_restarted_and_no_answered_call_is_lost(
    workers: int,
    services: Services,
    token: IssuedToken,
    mock_upstream: str,
    start_serve: StartServe,
) -> None:
    serve = await start_serve(workers=workers)
    headers = {"X-API-Key": token.token_secret}
    async with httpx.AsyncClient(base_url=serve.gateway_url, headers=headers) as client:
        before = [f"before-{i}" for i in range(30)]
        assert [await call(client, agent) for agent in before] == [200] * 30
        # Recorded (flushed to the store) before the kill: a SIGKILL loses what is only queued.
        deadline = time.monotonic() + STOP_DEADLINE_S
        while len(await recorded_agents(services, token)) < len(before):
            assert time.monotonic() < deadline, serve.log()
            await asyncio.sleep(0.05)
        old_workers = serve.worker_pids(workers)
        assert len(old_workers) == workers
        os.kill(old_workers[0], signal.SIGKILL)

        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            current = serve.worker_pids(workers) if serve.process.returncode is None else []
            if len(current) == workers and old_workers[0] not in current:
                break
            assert time.monotonic() < deadline, f"no worker restarted:\n{serve.log()}"
            await asyncio.sleep(0.05)
        await wait_until_answering(serve, f"{serve.gateway_url}/healthz")
        after = [f"after-{i}" for i in range(30)]
        assert [await call(client, agent) for agent in after] == [200] * 30
    await stop(serve)
    assert await recorded_agents(services, token) == sorted(before + after)


# -- long streams and clients that leave -----------------------------------------------------


def expected_stream(chunks: int) -> bytes:
    return b"".join(f"data: {json.dumps({'index': i})}\n\n".encode() for i in range(chunks))


async def test_concurrent_streams_arrive_byte_exact_and_leavers_are_recorded_as_499(
    services: Services,
    token: IssuedToken,
    mock_upstream: str,
    start_serve: StartServe,
) -> None:
    serve = await start_serve()
    streams, leavers, chunks = 100, 10, 40
    path = f"/api/mock/stream/{chunks}?interval_ms=25"
    headers = {"X-API-Key": token.token_secret}
    limits = httpx.Limits(max_connections=streams)
    async with httpx.AsyncClient(
        base_url=serve.gateway_url, headers=headers, limits=limits, timeout=30.0
    ) as client:

        async def read_all() -> bytes:
            async with client.stream("GET", path) as answer:
                assert answer.status_code == 200
                return b"".join([part async for part in answer.aiter_raw()])

        async def leave_early() -> int:
            async with client.stream("GET", path) as answer:
                assert answer.status_code == 200
                received = 0
                async for part in answer.aiter_raw():
                    received += len(part)
                    if received >= 3 * len(b'data: {"index": 0}\n\n'):
                        break  # closing the response drops the connection mid-stream
                return received

        bodies, _ = await asyncio.gather(
            asyncio.gather(*(read_all() for _ in range(streams - leavers))),
            asyncio.gather(*(leave_early() for _ in range(leavers))),
        )
    assert all(body == expected_stream(chunks) for body in bodies)

    async with httpx.AsyncClient(base_url=mock_upstream) as upstream:
        deadline = time.monotonic() + STOP_DEADLINE_S
        while (await upstream.get("/stats")).json()["open_streams"] != 0:
            assert time.monotonic() < deadline, "the gateway kept upstream streams open"
            await asyncio.sleep(0.05)
    await stop(serve)
    async with services.database.read() as connection:
        rows = list(
            await connection.execute(
                sa.select(token_usage_logs.c.response_status, token_usage_logs.c.bytes_out).where(
                    token_usage_logs.c.token_id == token.token.id
                )
            )
        )
    full = len(expected_stream(chunks))
    assert sorted(status for status, _ in rows) == [200] * (streams - leavers) + [499] * leavers
    assert all(sent == full for status, sent in rows if status == 200)
    assert all(sent < full for status, sent in rows if status == 499)
