"""Running the pinned wrangler from an edge project (`node_modules/.bin/wrangler`, never npx,
so signals reach it) with telemetry and update checks off, so local runs stay on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import tokenmanager
from tokenmanager.errors import ConfigurationError

# docs/edge.md lists them; with these, wrangler and workerd talk to loopback only.
OFFLINE_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
}
WRANGLER_TIMEOUT_S = 120.0


class WranglerError(ConfigurationError):
    """wrangler failed or is missing; the message carries the end of its output."""


def source_project() -> Path:
    """The `edge/` npm project next to the source tree (an editable or repository install)."""
    candidate = Path(tokenmanager.__file__).resolve().parents[2] / "edge"
    if not (candidate / "src" / "index.js").is_file():
        raise ConfigurationError(
            f"the edge Worker's source is not at {candidate}: install Token Manager from its "
            "repository (scripts/install) to use the edge commands"
        )
    return candidate


def wrangler_binary(project: Path) -> Path:
    binary = project / "node_modules" / ".bin" / "wrangler"
    if not binary.exists():
        raise WranglerError(f"{binary} is missing: run `npm ci` in {project}")
    return binary


def wrangler_env(project: Path) -> dict[str, str]:
    """The process environment plus the offline settings; wrangler's own config and logs stay
    in the project (XDG_CONFIG_HOME) unless the operator chose a place."""
    env = {**os.environ, **OFFLINE_ENV}
    env.setdefault("XDG_CONFIG_HOME", str(project / ".config"))
    return env


async def run_wrangler(project: Path, args: Sequence[str]) -> str:
    """wrangler's output; WranglerError (with the end of its output) if it fails."""
    process = await asyncio.create_subprocess_exec(
        str(wrangler_binary(project)),
        *args,
        cwd=project,
        env=wrangler_env(project),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), WRANGLER_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise WranglerError(
            f"wrangler {args[0]} did not finish in {WRANGLER_TIMEOUT_S:.0f} s"
        ) from None
    except asyncio.CancelledError:
        # Stopping (SIGTERM): wrangler must not outlive the command that started it.
        if process.returncode is None:
            process.kill()
            await asyncio.shield(process.wait())
        raise
    text = output.decode("utf-8", "replace")
    if process.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-8:])
        raise WranglerError(f"wrangler {' '.join(args[:3])} failed: {tail}")
    return text


class PersistentKvWriter:
    """`edge/scripts/kv-writer.mjs` kept running: wrangler's own API (getPlatformProxy) writing
    the same local store as `wrangler kv bulk put --local`, without wrangler's start-up per
    write. For `edge dev`'s sync loop; a remote store is always written with `kv bulk put`."""

    def __init__(self, project: Path, config: Path, persist_dir: Path) -> None:
        self._project = project
        self._config = config
        self._persist_dir = persist_dir
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise WranglerError("node is not installed (the edge commands need Node.js 20+)")
        self._process = await asyncio.create_subprocess_exec(
            node,
            str(self._project / "scripts" / "kv-writer.mjs"),
            str(self._config.resolve()),
            str(self._persist_dir.resolve()),
            cwd=self._project,
            env=wrangler_env(self._project),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        if await self._read_line() != "ready":
            await self.stop()
            raise WranglerError("the local KV writer did not start")

    async def _read_line(self) -> str:
        """The writer's next answer (`ready`, `ok`, `error: …`); wrangler's own log lines on
        the same stream are skipped. "" if the writer exited."""
        assert self._process is not None
        assert self._process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self._process.stdout.readline(), WRANGLER_TIMEOUT_S)
            line = raw.decode("utf-8", "replace").strip()
            if not raw or line in ("ready", "ok") or line.startswith(("ok ", "error: ")):
                return line

    async def _command(self, command: dict[str, object]) -> str:
        """The answer's payload after `ok` ("" for writes)."""
        async with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.returncode is not None:
                raise WranglerError("the local KV writer is not running")
            process.stdin.write(json.dumps(command).encode() + b"\n")
            await process.stdin.drain()
            answer = await self._read_line()
        if answer != "ok" and not answer.startswith("ok "):
            raise WranglerError(f"local KV write failed: {answer or 'no answer'}")
        return answer[3:]

    async def list_keys(self, prefix: str) -> list[str]:
        return [
            str(key) for key in json.loads(await self._command({"op": "list", "prefix": prefix}))
        ]

    async def put(self, entries: list[dict[str, str]]) -> None:
        await self._command({"op": "put", "entries": entries})

    async def delete(self, keys: list[str]) -> None:
        await self._command({"op": "delete", "keys": keys})

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # end of input: the writer disposes of its runtime and exits
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
