"""Pushing tokens and routes into the Worker's KV namespace through wrangler's `kv bulk put`:
a full snapshot, or the changes recorded in the change feed since the last sync. One code path
for a local Miniflare store (`--local --persist-to DIR`) and the operator's account (remote).

The position in the change feed and the KV keys written per token live in a small state file,
so a deleted token's keys (or a rotated-out hash) are deleted from KV too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokenmanager.clock import utcnow
from tokenmanager.crypto import Keyring
from tokenmanager.edge.records import (
    TOKEN_KEY_PREFIX,
    EdgeRoute,
    build_config,
    build_edge_key,
    build_kv_changes,
    parse_edge_key,
)
from tokenmanager.edge.wrangler import run_wrangler
from tokenmanager.errors import ConfigurationError
from tokenmanager.routes.service import decrypt_credential
from tokenmanager.settings import Settings
from tokenmanager.storage import edge as edge_sql
from tokenmanager.storage import gateway as gateway_sql
from tokenmanager.storage.audit import read_change_version
from tokenmanager.storage.database import Database

logger = logging.getLogger(__name__)

EDGE_KEY_FILE = "edge_key"
KV_BINDING = "TOKENS"
# wrangler's bulk put takes up to 10,000 pairs per request; it splits larger files itself.
CHANGE_PAGE = 1000


def edge_key_path(settings: Settings) -> Path:
    return settings.data_dir / EDGE_KEY_FILE


def create_edge_key(settings: Settings, *, replace: bool = False) -> str | None:
    """A new edge key written 0600 to the data dir; None if one exists and `replace` is off."""
    path = edge_key_path(settings)
    if path.exists() and not replace:
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    edge_key = build_edge_key()
    staged = path.with_name(f".{EDGE_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as key_file:
        key_file.write(edge_key)
    staged.replace(path)
    return edge_key


def load_edge_key(settings: Settings) -> str:
    """The edge key from the data dir; ConfigurationError if missing, readable by others or bad."""
    path = edge_key_path(settings)
    if not path.exists():
        raise ConfigurationError(f"no edge key at {path}: run `tokenmanager edge init DIR` first")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
        )
    edge_key = path.read_text().strip()
    try:
        parse_edge_key(edge_key)
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    return edge_key


@dataclass(frozen=True, slots=True)
class KvTarget:
    """Where a sync writes: the namespace bound as TOKENS in `config` (a wrangler.toml);
    `persist_dir` set means a local Miniflare store, None the operator's account
    (CLOUDFLARE_API_TOKEN). `project` is the npm project whose wrangler runs."""

    project: Path
    config: Path
    persist_dir: Path | None
    state_path: Path

    def location_args(self) -> list[str]:
        args = ["--config", str(self.config.resolve()), "--binding", KV_BINDING]
        if self.persist_dir is None:
            return [*args, "--remote"]
        return [*args, "--local", "--persist-to", str(self.persist_dir.resolve())]


@dataclass(frozen=True, slots=True)
class SyncResult:
    is_full: bool
    written: int
    deleted: int
    change_id: int


class KvWriter(Protocol):
    """Writes KV entries (values are JSON text) and deletes keys; raises if it could not."""

    async def put(self, entries: list[dict[str, str]]) -> None: ...

    async def delete(self, keys: list[str]) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]: ...


class WranglerBulkWriter:
    """`wrangler kv bulk put` / `bulk delete`: one wrangler run per call, local or remote."""

    def __init__(self, target: KvTarget) -> None:
        self._target = target

    async def put(self, entries: list[dict[str, str]]) -> None:
        await self._bulk("put", entries)

    async def delete(self, keys: list[str]) -> None:
        await self._bulk("delete", keys)

    async def list_keys(self, prefix: str) -> list[str]:
        output = await run_wrangler(
            self._target.project,
            ["kv", "key", "list", "--prefix", prefix, *self._target.location_args()],
        )
        # wrangler prints the JSON array after any notices of its own.
        listed, _ = json.JSONDecoder().raw_decode(output[output.index("[") :])
        return [str(entry["name"]) for entry in listed]

    async def _bulk(self, operation: str, payload: list[Any]) -> None:
        name = _write_payload(payload)
        try:
            args = ["kv", "bulk", operation, str(name), *self._target.location_args()]
            if operation == "delete":
                args.append("--force")
            await run_wrangler(self._target.project, args)
        finally:
            name.unlink(missing_ok=True)


class EdgeSync:
    def __init__(
        self,
        database: Database,
        keyring: Keyring,
        edge_key: str,
        target: KvTarget,
        writer: KvWriter | None = None,
    ) -> None:
        self._db = database
        self._keyring = keyring
        self._edge_key = edge_key
        self._target = target
        self._writer = writer or WranglerBulkWriter(target)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._target.state_path.read_text()))
        except FileNotFoundError:
            return None

    def _write_state(self, state: dict[str, Any]) -> None:
        self._target.state_path.parent.mkdir(parents=True, exist_ok=True)
        staged = self._target.state_path.with_suffix(".tmp")
        staged.write_text(json.dumps(state))
        staged.replace(self._target.state_path)

    async def sync(self, *, full: bool = False) -> SyncResult:
        """Write what changed since the last sync (everything when `full` or never synced).
        The feed position is read before the rows, so a change made meanwhile comes again."""
        state = self._read_state()
        is_full = full or state is None
        last_id = 0 if state is None else int(state["change_id"])
        known = {} if state is None else {int(k): v for k, v in state["keys_by_token"].items()}
        async with self._db.read() as connection:
            version = await read_change_version(connection)
            changed_ids: set[int] | None = None
            if not is_full and version == last_id:
                return SyncResult(False, 0, 0, version)
            if not is_full:
                changed_ids = set()
                after = last_id
                while True:
                    page = await gateway_sql.read_changes_since(connection, after, CHANGE_PAGE)
                    changed_ids.update(int(c.key) for c in page if c.kind == "token")
                    if len(page) < CHANGE_PAGE:
                        break
                    after = page[-1].id
            token_rows = await edge_sql.list_edge_token_rows(connection, changed_ids)
            route_rows = await edge_sql.list_edge_route_rows(connection)
            imported = await gateway_sql.list_imported_hashes(connection)
        routes = []
        for row in route_rows:
            credential = decrypt_credential(row, self._keyring)
            routes.append(
                EdgeRoute(
                    path_prefix=row.path_prefix,
                    upstream_url=row.upstream_url,
                    required_scopes=tuple(row.required_scopes),
                    is_enabled=row.is_enabled,
                    total_timeout_s=row.total_timeout_s,
                    credential_header=credential.header if credential else None,
                    credential_query_param=credential.query_param if credential else None,
                    credential_value=credential.value if credential else None,
                )
            )
        config = build_config(routes, imported, self._edge_key, utcnow())
        changes = build_kv_changes(token_rows, changed_ids, known, config)
        deletes = list(changes.deletes)
        if is_full:
            # A snapshot also removes token keys this state never knew (a lost state file, a
            # store written by another control plane), so no deleted token lingers at the edge.
            written = set(changes.puts)
            present = await self._writer.list_keys(TOKEN_KEY_PREFIX)
            deletes = sorted(set(deletes) | {key for key in present if key not in written})
        await self._writer.put(
            [{"key": key, "value": json.dumps(value)} for key, value in changes.puts.items()]
        )
        if deletes:
            await self._writer.delete(deletes)
        self._write_state(
            {
                "change_id": version,
                "keys_by_token": {str(k): v for k, v in changes.keys_by_token.items()},
            }
        )
        return SyncResult(is_full, len(changes.puts), len(deletes), version)


def _write_payload(payload: list[Any]) -> Path:
    # The file holds sealed credentials only, but stays private (0600) all the same.
    fd, name = tempfile.mkstemp(prefix="tm-edge-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    return Path(name)


async def sync_forever(syncer: EdgeSync, interval_s: float) -> None:
    """Sync every `interval_s` until cancelled; wrangler runs only when the feed moved. A failed
    sync is reported once (and its recovery), and the last synced state keeps serving."""
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            result = await syncer.sync()
        except Exception as exc:  # noqa: BLE001 - keep trying; KV keeps the last good state
            if not failing:
                logger.warning("edge sync failed (%s); retrying", exc)
            failing = True
            continue
        if failing:
            logger.warning("edge sync working again")
        failing = False
        if result.written or result.deleted:
            logger.info("edge sync: %d written, %d deleted", result.written, result.deleted)
