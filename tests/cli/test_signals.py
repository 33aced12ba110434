"""Several uvicorn servers in one loop (`serve`, `demo`) stop together on one Ctrl-C, each
through its application's shutdown; a second Ctrl-C stops them without waiting."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx

from tokenmanager.cli.servers import stop_on_signals, uvicorn_server

DEADLINE_S = 30


class RecordingApp:
    """An ASGI app that notes its lifespan shutdown and holds `/hang` open until told."""

    def __init__(self) -> None:
        self.shut_down = False
        self.request_arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.shut_down = True
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.request_arrived.set()
        if scope["path"] == "/hang":
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def start(apps: list[RecordingApp]) -> tuple[list[Any], asyncio.Event, asyncio.Future[Any]]:
    servers: list[Any] = [uvicorn_server(app, "127.0.0.1", 0) for app in apps]
    stopping = asyncio.Event()
    stop_on_signals(servers, stopping)
    running = asyncio.gather(*(server.serve() for server in servers))
    async with asyncio.timeout(DEADLINE_S):
        # uvicorn offers a flag, not an event, for "listening".
        while not all(server.started for server in servers):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return servers, stopping, running


def port_of(server: Any) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


async def test_one_ctrl_c_stops_every_server_through_its_application_shutdown() -> None:
    apps = [RecordingApp(), RecordingApp()]
    servers, stopping, running = await start(apps)

    os.kill(os.getpid(), signal.SIGINT)
    async with asyncio.timeout(DEADLINE_S):
        await running

    assert stopping.is_set()
    assert [app.shut_down for app in apps] == [True, True]
    assert not any(server.force_exit for server in servers)


async def test_a_second_ctrl_c_stops_without_waiting_for_requests_in_flight() -> None:
    app = RecordingApp()
    (server,), _, running = await start([app])
    async with httpx.AsyncClient() as client:
        in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{port_of(server)}/hang"))
        async with asyncio.timeout(DEADLINE_S):
            await app.request_arrived.wait()

        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(DEADLINE_S):
            await running

        assert server.force_exit
        assert not in_flight.done()  # it stopped while the request still hung
        app.release.set()
        in_flight.cancel()
