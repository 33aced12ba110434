"""The gateway as a child process of `serve` and `demo` (`tokenmanager gateway`, one or more
uvicorn workers): started, restarted when it dies, drained on stop. It must not share a process
with the control plane: that process's loop, collections and usage writes stalled its requests."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from tokenmanager.settings import Settings

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0  # between a crash and the restart: a crash loop must not spin a core
# A forced stop: uvicorn's own still waits (on uvloop) for open connections to close, up to its
# graceful timeout; after this long the gateway's server processes are killed instead.
FORCE_GRACE_S = 2.0
READY_POLL_S = 0.05
ENV_PREFIX = "TOKENMANAGER_"


def default_gateway_workers() -> int:
    """Gateway workers `serve` runs by default: half the cores, at least one. The control
    plane, each worker's usage-writer child and an embedded database need CPU too, and a
    gateway worker without a core of its own only adds context switches to its tail."""
    return max(1, available_cores() // 2)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow)."""
    return len(os.sched_getaffinity(0))


def settings_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with `settings` spelled as TOKENMANAGER_* variables, so a
    child loads exactly these settings (also ones given as arguments, as the demo does)."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)
    }
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, enum.Enum):
            text = str(value.value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Path):
            text = str(value.resolve())
        else:
            text = str(value)
        environment[f"{ENV_PREFIX}{name.upper()}"] = text
    return environment


def _is_usage_writer(pid: int) -> bool:
    try:
        return b"tokenmanager.gateway.usage_writer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [grandchild for child in children for grandchild in (child, *_descendants(child))]


class GatewayProcess:
    """One `tokenmanager gateway` child: `start`, then `supervise` until `stop`."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int) -> None:
        self.host = host
        self.port = port
        self.workers = workers
        self._environment = settings_environment(settings)
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._forced = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tokenmanager",
            "gateway",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its banner; `serve` prints its own. Logs go to stderr.
            env=self._environment,
        )

    async def wait_ready(self, deadline_s: float) -> bool:
        """True once the gateway accepts connections; False if it exited or took too long."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self._process is None or self._process.returncode is not None:
                return False
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                return True
            await asyncio.sleep(READY_POLL_S)
        return False

    async def supervise(self) -> int:
        """Restart the gateway whenever it exits before `stop`; its exit code after `stop`
        (0 when a forced stop had to kill it).

        A restarted gateway replays what the dead one spooled (its spool directory's lock is
        free), and its workers' usage-writer children exit with it (their stdin closes)."""
        while True:
            assert self._process is not None
            returncode = await self._process.wait()
            if self._stopping.is_set():
                # Killed on a forced stop: what the user asked for, as uvicorn's own is (0).
                return 0 if self._forced and returncode == -signal.SIGKILL else returncode
            self.restarts += 1
            logger.warning("the gateway exited (%s); starting it again", returncode)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RESTART_DELAY_S)
            if self._stopping.is_set():
                return 0
            await self.start()

    def stop(self, *, force: bool = False) -> None:
        """Ask the gateway to finish its in-flight requests, drain its usage queue and exit;
        with `force` (a second Ctrl-C), to stop without waiting for requests."""
        first = not self._stopping.is_set()
        self._stopping.set()
        if force and not self._forced:
            self._forced = True
            # uvicorn stops at once on a SIGINT that follows a stop request: the workers of a
            # multi-worker gateway get it directly, since their supervisor only waits for them.
            self._signal(signal.SIGINT, including_workers=True)
            asyncio.get_running_loop().call_later(FORCE_GRACE_S, self._kill_servers)
        elif first:
            self._signal(signal.SIGTERM, including_workers=False)

    def _kill_servers(self) -> None:
        """Kill the gateway and its workers, not their usage writers: those finish the batch
        under way and exit when their pipe closes. Usage still queued in memory is lost."""
        pid = self.pid
        if pid is None:
            return
        logger.warning("the gateway did not stop when forced; killing it")
        for target in [pid, *_descendants(pid)]:
            if not _is_usage_writer(target):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)

    def _signal(self, signum: int, *, including_workers: bool) -> None:
        pid = self.pid
        if pid is None:
            return
        targets = [pid, *(_descendants(pid) if including_workers else [])]
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signum)
