"""`tokenmanager serve` as a real process: it refuses an un-migrated database and a busy port,
and with `--migrate` it starts, answers the health checks over HTTP and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Cli, cli_environment, message

START_DEADLINE_S = 60
STOP_DEADLINE_S = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """A fresh, never migrated SQLite database in the data dir."""
    return cli_environment(tmp_path, f"sqlite:///{tmp_path / 'serve.db'}")


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """Something else already listening on a loopback port."""
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        yield occupant


def wait_until_ready(server: subprocess.Popen[bytes], url: str, stderr_path: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"serve exited with {server.returncode}: {stderr_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer 200 within {START_DEADLINE_S} s")


def test_serve_refuses_an_unmigrated_database_naming_migrate(environment: dict[str, str]) -> None:
    result = Cli(environment)("serve", "--port", str(free_port()), "--no-gateway")
    assert result.returncode == 5
    assert "tokenmanager migrate" in message(result)


def test_serve_with_migrate_answers_health_checks_and_stops_on_sigterm(
    environment: dict[str, str], tmp_path: Path
) -> None:
    port, gateway_port = free_port(), free_port()
    stdout_path, stderr_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "tokenmanager", "serve", "--migrate",
                "--port", str(port), "--gateway-port", str(gateway_port),
            ],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )  # fmt: skip
    try:
        wait_until_ready(server, f"http://127.0.0.1:{port}/readyz", stderr_path)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json() == {"status": "ready"}
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/healthz").status_code == 200

        server.send_signal(signal.SIGTERM)
        # A graceful stop is a normal exit, so supervisors and scripts see success.
        assert server.wait(timeout=STOP_DEADLINE_S) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert "Traceback" not in stderr_path.read_text()
    assert f"http://127.0.0.1:{port}" in stdout_path.read_text()


@pytest.mark.parametrize("option", ["--port", "--gateway-port"])
def test_serve_on_an_occupied_port_exits_naming_the_port(
    environment: dict[str, str], listening_socket: socket.socket, option: str
) -> None:
    busy_port = listening_socket.getsockname()[1]
    ports = {"--port": free_port(), "--gateway-port": free_port(), option: busy_port}
    arguments = [str(part) for pair in ports.items() for part in pair]
    result = Cli(environment)("serve", "--migrate", *arguments)
    assert result.returncode == 5
    assert f"127.0.0.1:{busy_port}" in message(result)
    assert option in message(result)


def test_serve_refuses_an_edge_sync_directory_that_is_not_an_edge_project(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenmanager", "serve", "--edge-sync", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENMANAGER_DATA_DIR": str(tmp_path / "data")},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "has no wrangler.toml" in result.stderr
    assert "edge init" in result.stderr
