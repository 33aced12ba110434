"""Running the pinned wrangler from an edge project (`node_modules/.bin/wrangler`, never npx,
so signals reach it) with telemetry and update checks off, so local runs stay on loopback."""

from __future__ import annotations

import asyncio
import os
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
