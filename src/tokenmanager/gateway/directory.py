"""What a gateway process knows: the route table and its token cache, kept current.

Loaded at start; afterwards only the change feed is read (every `poll_interval_s`, or at once
when Redis announces a change). A token change drops that token from the cache; a route change
reloads the route table, which is small. While the store is down the last known state serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tokenmanager.changes import CHANNEL
from tokenmanager.crypto import Keyring
from tokenmanager.gateway.verification import TokenRecord, TokenVerifier, build_token_record
from tokenmanager.llm.models import Provider
from tokenmanager.pricing.book import PriceBook
from tokenmanager.routes.matching import match_route
from tokenmanager.routes.models import UpstreamCredential
from tokenmanager.routes.service import decrypt_credential
from tokenmanager.ssrf import ForbiddenUpstreamError, UpstreamPolicy
from tokenmanager.storage import gateway as gateway_sql
from tokenmanager.storage import prices as prices_sql
from tokenmanager.storage.audit import read_change_version
from tokenmanager.storage.database import Database

logger = logging.getLogger(__name__)

REDIS_POLL_SLOWDOWN = 5  # with Redis announcing changes, the feed is polled this much less


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    id: int
    path_prefix: str
    upstream_url: str
    upstream_host: str
    required_scopes: tuple[str, ...]
    credential: UpstreamCredential | None
    timeout: aiohttp.ClientTimeout
    is_enabled: bool
    # Why the SSRF guard refuses the host as written (an IP literal or an integer form), or
    # None. Host names are checked by the guarded resolver on every connection instead.
    forbidden_reason: str | None
    provider: Provider | None = None  # an LLM API: its calls are metered and priced
    include_stream_usage: bool = True


def build_gateway_route(row: Any, keyring: Keyring, policy: UpstreamPolicy) -> GatewayRoute:
    host = urlsplit(row.upstream_url).hostname or ""
    try:
        policy.check_host_literal(host)
        forbidden_reason = None
    except ForbiddenUpstreamError as exc:
        forbidden_reason = str(exc)
    return GatewayRoute(
        id=row.id,
        path_prefix=row.path_prefix,
        upstream_url=row.upstream_url,
        upstream_host=host,
        required_scopes=tuple(row.required_scopes),
        credential=decrypt_credential(row, keyring),
        timeout=aiohttp.ClientTimeout(
            total=row.total_timeout_s,
            connect=row.connect_timeout_s,
            sock_read=row.read_timeout_s,
        ),
        is_enabled=row.is_enabled,
        forbidden_reason=forbidden_reason,
        provider=Provider(row.provider) if row.provider else None,
        include_stream_usage=row.include_stream_usage,
    )


class Directory:
    def __init__(
        self,
        database: Database,
        keyring: Keyring,
        policy: UpstreamPolicy,
        *,
        poll_interval_s: float,
        redis: Any | None = None,
    ) -> None:
        self._db = database
        self._keyring = keyring
        self._policy = policy
        self._poll_interval_s = poll_interval_s * (REDIS_POLL_SLOWDOWN if redis else 1)
        self._redis = redis
        self._routes: list[tuple[str, GatewayRoute]] = []
        self._last_change_id = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.verifier = TokenVerifier(self._lookup_token, monotonic=time.monotonic)
        self.prices = PriceBook({})

    async def _lookup_token(self, token_hash: str) -> TokenRecord | None:
        async with self._db.read() as connection:
            row = await gateway_sql.read_token_by_hash(connection, token_hash)
        return build_token_record(row, token_hash) if row else None

    def match(self, path: str) -> GatewayRoute | None:
        found = match_route(self._routes, path)
        return found[1] if found else None

    async def start(self) -> None:
        """Load routes and the change position; then keep them current in the background."""
        async with self._db.read() as connection:
            self._last_change_id = await read_change_version(connection)
        await self._reload_routes()
        await self._reload_prices()
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="gateway-changes"))
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="gateway-redis"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _reload_routes(self) -> None:
        async with self._db.read() as connection:
            rows = await gateway_sql.list_route_rows(connection)
            imported = await gateway_sql.list_imported_hashes(connection)
        self._routes = [
            (row.path_prefix, build_gateway_route(row, self._keyring, self._policy)) for row in rows
        ]
        self.verifier.imported_hashes = frozenset(imported)

    async def refresh(self) -> None:
        """Apply every change recorded since the last refresh."""
        async with self._db.read() as connection:
            changes = await gateway_sql.read_changes_since(connection, self._last_change_id)
        if not changes:
            return
        for change in changes:
            if change.kind == "token":
                self.verifier.invalidate_token(int(change.key))
            elif change.kind == "team":
                self.verifier.invalidate_team(change.key)
        self._last_change_id = changes[-1].id
        await self._reload_routes()  # routes and imported hashes: both small
        if any(change.kind == "price" for change in changes):
            await self._reload_prices()

    async def _reload_prices(self) -> None:
        async with self._db.read() as connection:
            self.prices.replace(await prices_sql.read_current_prices(connection))

    async def _poll_loop(self) -> None:
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the last known state
                if not failing:
                    logger.warning("cannot read changes from the store (%s)", type(exc).__name__)
                failing = True
            else:
                if failing:
                    logger.warning("reading changes from the store again")
                failing = False

    async def _listen_loop(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers the gap
                logger.info("Redis change channel unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
