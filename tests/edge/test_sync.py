"""`tokenmanager edge init` and `edge sync --local`, run as the real command against a real
local KV store (wrangler's Miniflare state), read back through wrangler."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.edge.wrangler import wrangler_binary
from tokenmanager.settings import Settings
from tokenmanager.tokens import codec

from .conftest import UPSTREAM_CREDENTIAL, EdgeStage
from .stage import EDGE_PROJECT, edge_env


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenmanager", *args],
        env={**edge_env(settings), "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _kv(settings: Settings, project: Path, store: Path, *args: str) -> str:
    result = subprocess.run(
        [str(wrangler_binary(EDGE_PROJECT)), "kv", "key", *args, "--binding", "TOKENS",
         "--local", "--persist-to", str(store), "--config", str(project / "wrangler.toml")],
        env=edge_env(settings),
        cwd=EDGE_PROJECT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    return result.stdout


def test_init_writes_a_project_and_keys_without_secrets_in_its_files(
    settings: Settings, stage: EdgeStage, tmp_path: Path
) -> None:
    project = tmp_path / "worker"
    result = _cli(settings, "edge", "init", str(project), "--kv-namespace-id", "ns-123")
    assert result.returncode == 0, result.stderr
    edge_key = (settings.data_dir / "edge_key").read_text().strip()
    assert stat.S_IMODE((settings.data_dir / "edge_key").stat().st_mode) == 0o600
    assert edge_key in result.stdout
    assert "wrangler secret put EDGE_KEY" in " ".join(result.stdout.split())
    config = (project / "wrangler.toml").read_text()
    assert 'id = "ns-123"' in config
    assert 'binding = "USAGE_QUEUE"' in config
    assert edge_key not in config
    assert (project / "src" / "index.js").read_text() == (
        EDGE_PROJECT / "src" / "index.js"
    ).read_text()
    assert (project / "package-lock.json").exists()
    again = _cli(settings, "edge", "init", str(project))
    assert again.returncode != 0
    assert "exists" in again.stderr


async def test_sync_writes_a_snapshot_then_only_the_changes(
    services: Services, admin: Actor, settings: Settings, stage: EdgeStage, tmp_path: Path
) -> None:
    project = tmp_path / "worker"
    store = tmp_path / "store"
    assert _cli(settings, "edge", "init", str(project)).returncode == 0
    first = _cli(settings, "edge", "sync", "--project", str(project), "--local", str(store))
    assert first.returncode == 0, first.stderr
    assert "full snapshot" in first.stdout
    keys = {entry["name"] for entry in json.loads(_kv(settings, project, store, "list"))}
    token_hash = codec.hash_token(stage.token.token_secret)
    assert {"config", f"token:{token_hash}"} <= keys
    config = _kv(settings, project, store, "get", "config")
    assert UPSTREAM_CREDENTIAL not in config
    routes = {route["path_prefix"]: route for route in json.loads(config)["routes"]}
    assert routes["/api/echo"]["credential"]["sealed_value"].startswith("v1.")

    await services.tokens.revoke(admin, stage.token.token.id)
    second = _cli(settings, "edge", "sync", "--project", str(project), "--local", str(store))
    assert second.returncode == 0, second.stderr
    assert "changes" in second.stdout
    assert "2 key(s) written" in second.stdout  # the config and the revoked token
    record = json.loads(_kv(settings, project, store, "get", f"token:{token_hash}"))
    assert record["revoked_at"] is not None
    unchanged = _cli(settings, "edge", "sync", "--project", str(project), "--local", str(store))
    assert "0 key(s) written" in unchanged.stdout

    # A snapshot without the sync's state (lost, or another machine's) still removes the keys
    # of a token deleted meanwhile.
    shutil.rmtree(settings.data_dir / "edge-sync")
    await services.tokens.delete(admin, stage.narrow_token.token.id)
    snapshot = _cli(settings, "edge", "sync", "--project", str(project), "--local", str(store))
    assert "full snapshot" in snapshot.stdout, snapshot.stderr
    assert "1 deleted" in snapshot.stdout
    keys = {entry["name"] for entry in json.loads(_kv(settings, project, store, "list"))}
    assert f"token:{codec.hash_token(stage.narrow_token.token_secret)}" not in keys
    assert f"token:{token_hash}" in keys


async def test_watch_syncs_a_revocation_and_stops_on_sigterm(
    services: Services, admin: Actor, settings: Settings, stage: EdgeStage, tmp_path: Path
) -> None:
    project = tmp_path / "worker"
    store = tmp_path / "store"
    assert _cli(settings, "edge", "init", str(project)).returncode == 0
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenmanager", "edge", "sync", "--project", str(project),
        "--local", str(store), "--watch", "--interval-s", "0.2",
        env={**edge_env(settings), "COLUMNS": "200"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert watcher.stdout is not None
    first_line = await asyncio.wait_for(watcher.stdout.readline(), 120)
    assert b"Watching for changes" in first_line
    await services.tokens.revoke(admin, stage.token.token.id)
    token_hash = codec.hash_token(stage.token.token_secret)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    revoked_at = None
    while revoked_at is None and loop.time() < deadline:
        record = await asyncio.to_thread(
            _kv, settings, project, store, "get", f"token:{token_hash}"
        )
        revoked_at = json.loads(record)["revoked_at"]
    watcher.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(watcher.communicate(), 60)
    assert revoked_at is not None
    assert watcher.returncode == 0, rest
    assert b"Stopped watching." in rest
