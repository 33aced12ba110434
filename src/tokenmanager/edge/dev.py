"""`tokenmanager edge dev`: the Worker on the local Workers runtime (wrangler dev, Miniflare),
its KV kept in step with the store by a sync loop, usage posted to a control plane."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tokenmanager.edge.project import build_wrangler_toml
from tokenmanager.edge.sync import EdgeSync, sync_forever
from tokenmanager.edge.wrangler import wrangler_binary, wrangler_env

# A check is one small query; a write goes through the long-lived local KV writer, so a
# revocation reaches the local Worker within a few hundred milliseconds.
SYNC_INTERVAL_S = 0.1
STOP_GRACE_S = 10.0
DEV_KV_NAMESPACE_ID = "tokenmanager-edge-dev"


def sync_state_path(data_dir: Path, config: Path, persist_dir: Path | None) -> Path:
    """One sync state per KV target, kept in the data dir (never in the operator's project)."""
    where = f"{config.resolve()}|{persist_dir.resolve() if persist_dir else 'remote'}"
    return data_dir / "edge-sync" / f"{hashlib.sha256(where.encode()).hexdigest()[:16]}.json"


@dataclass(frozen=True, slots=True)
class DevSetup:
    project: Path
    dev_dir: Path
    port: int
    control_plane_url: str
    use_queue: bool

    @property
    def config(self) -> Path:
        return self.dev_dir / "wrangler.toml"

    @property
    def persist_dir(self) -> Path:
        return self.dev_dir / "state"


def write_dev_files(setup: DevSetup, edge_key: str, ingest_key: str) -> None:
    """wrangler.toml pointing at the source Worker, and `.dev.vars` (0600) with the secrets."""
    setup.dev_dir.mkdir(parents=True, exist_ok=True)
    setup.config.write_text(
        build_wrangler_toml(
            name="tokenmanager-edge-dev",
            main=str((setup.project / "src" / "index.js").resolve()),
            control_plane_url=setup.control_plane_url,
            kv_namespace_id=DEV_KV_NAMESPACE_ID,
            use_queue=setup.use_queue,
        )
    )
    dev_vars = setup.dev_dir / ".dev.vars"
    fd = os.open(dev_vars, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f'EDGE_KEY="{edge_key}"\nINGEST_KEY="{ingest_key}"\n')


async def run_dev(setup: DevSetup, syncer: EdgeSync) -> int:
    """Run wrangler dev until it exits or SIGTERM/SIGINT arrives (forwarded to it); the sync
    loop runs meanwhile. Returns wrangler's exit code (0 after a requested stop)."""
    await syncer.sync(full=True)
    process = await asyncio.create_subprocess_exec(
        str(wrangler_binary(setup.project)),
        "dev",
        "--config", str(setup.config.resolve()),
        "--local",
        "--ip", "127.0.0.1",
        "--port", str(setup.port),
        "--inspector-port", "0",
        "--show-interactive-dev-session=false",
        "--persist-to", str(setup.persist_dir.resolve()),
        cwd=setup.dev_dir,
        env=wrangler_env(setup.project),
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    sync_task = asyncio.create_task(sync_forever(syncer, SYNC_INTERVAL_S), name="edge-sync")
    exited = asyncio.create_task(process.wait())
    stop_requested = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({exited, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sync_task.cancel()
        stop_requested.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync_task
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # wrangler passes it on and stops workerd
            try:
                await asyncio.wait_for(exited, STOP_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0 if stopping.is_set() else (process.returncode or 0)
