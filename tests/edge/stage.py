"""Running the edge Worker for tests: `tokenmanager edge dev` as a child process (wrangler dev
on workerd, loopback only), started against the test's database and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tokenmanager.edge.wrangler import OFFLINE_ENV
from tokenmanager.settings import Settings
from tokenmanager.testing import TEST_SECRET_KEY, free_port

EDGE_PROJECT = Path(__file__).resolve().parents[2] / "edge"
# Generous: wrangler dev starts workerd, and the machine is shared (never a timed assertion).
START_DEADLINE_S = 90.0


def require_edge_runtime() -> None:
    """Skip when node or the edge project's packages are missing (an error under CI=true)."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (EDGE_PROJECT / "node_modules" / ".bin" / "wrangler").exists():
        missing = "edge/node_modules is missing (scripts/install test runs npm ci)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the edge tests: {missing}")
        pytest.skip(missing)


def edge_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV}
    env["TOKENMANAGER_DATA_DIR"] = str(settings.data_dir)
    env["TOKENMANAGER_DATABASE_URL"] = settings.resolved_database_url
    env["TOKENMANAGER_SECRET_KEY"] = TEST_SECRET_KEY
    env["XDG_CONFIG_HOME"] = str(settings.data_dir / "wrangler-config")
    return env


@contextlib.asynccontextmanager
async def running_edge_dev(
    settings: Settings, control_plane_url: str, *, use_queue: bool = True
) -> AsyncIterator[str]:
    """`tokenmanager edge dev` on a free port; yields its base URL once /healthz answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tokenmanager"), "edge", "dev",
        "--port", str(port), "--control-plane", control_plane_url,
        "--queue" if use_queue else "--no-queue",
        env=edge_env(settings),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output: list[bytes] = []

    async def collect() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            output.append(line)

    collector = asyncio.create_task(collect())
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(url, process)
    except BaseException:
        await _stop(process)
        await collector
        sys.stderr.write(b"".join(output).decode("utf-8", "replace"))
        raise
    try:
        yield url
    except BaseException:
        await _stop(process)
        await collector
        raise
    code = await _stop(process)
    await collector
    if code != 0:
        sys.stderr.write(b"".join(output).decode("utf-8", "replace"))
        raise AssertionError(f"edge dev exited with {code} after SIGTERM, not 0")


async def _wait_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_DEADLINE_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"edge dev exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            if loop.time() > deadline:
                raise RuntimeError("edge dev did not become healthy")
            await asyncio.sleep(0.2)


async def _stop(process: asyncio.subprocess.Process) -> int | None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode
