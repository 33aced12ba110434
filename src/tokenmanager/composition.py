"""The composition root: settings in, every service out. The API app and the CLI both build
their services here, so there is one place where the product's parts are wired together.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenmanager.analytics.service import AnalyticsService
from tokenmanager.audit.service import AuditService
from tokenmanager.changes import ChangePublisher, build_redis
from tokenmanager.crypto import Keyring
from tokenmanager.errors import ConfigurationError
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.gateway.budgets import (
    BudgetGuard,
    RedisLedger,
    SpendLedger,
    StoreLedger,
)
from tokenmanager.gateway.directory import Directory
from tokenmanager.gateway.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from tokenmanager.gateway.selfservice import SelfService
from tokenmanager.gateway.usage_writer import UsageWriterProcess
from tokenmanager.ingest_keys.service import IngestKeyService
from tokenmanager.pricing.service import PriceService
from tokenmanager.routes.service import RouteService
from tokenmanager.security.models import parse_auto_suspend
from tokenmanager.security.monitor import SecurityMonitor
from tokenmanager.security.service import FindingService, SecurityAudit
from tokenmanager.security.webhooks import WebhookService
from tokenmanager.settings import Settings, load_secret_key
from tokenmanager.ssrf import IPNetwork, UpstreamPolicy
from tokenmanager.storage import spend as spend_sql
from tokenmanager.storage.database import Database
from tokenmanager.storage.usage import write_usage_batch
from tokenmanager.teams.service import TeamService
from tokenmanager.tokens.service import TokenService
from tokenmanager.usage.costs import PeriodCutter, SpendKey
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.recorder import UsageRecorder, WriteBatch
from tokenmanager.usage.spool import Spool
from tokenmanager.usage.upkeep import UsageUpkeep
from tokenmanager.users.passwords import Passwords
from tokenmanager.users.service import UserService


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    keyring: Keyring
    teams: TeamService
    users: UserService
    tokens: TokenService
    routes: RouteService
    ingest_keys: IngestKeyService
    audit: AuditService
    analytics: AnalyticsService
    recorder: UsageRecorder
    upkeep: UsageUpkeep
    security: SecurityAudit
    prices: PriceService
    redis: Any | None = None

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.database.dispose()


def parse_networks(raw: str, setting: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ConfigurationError(f"{setting}: {exc}") from None


def upstream_policy(settings: Settings) -> UpstreamPolicy:
    try:
        return UpstreamPolicy.parse(settings.upstream_allow)
    except ValueError as exc:
        raise ConfigurationError(f"TOKENMANAGER_UPSTREAM_ALLOW: {exc}") from None


def build_services(settings: Settings) -> Services:
    """Wire every service to one database; raises ConfigurationError for unusable settings."""
    database = Database.from_url(
        settings.resolved_database_url, postgres_work_mem=settings.postgres_work_mem or None
    )
    keyring = Keyring(load_secret_key(settings))
    redis = build_redis(settings.redis_url) if settings.redis_url else None
    if redis is not None:
        database.on_change = ChangePublisher(redis).publish
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    return Services(
        settings=settings,
        database=database,
        keyring=keyring,
        teams=TeamService(database),
        users=UserService(database, passwords, session_ttl_s=settings.session_ttl_s),
        tokens=TokenService(database, rotation_grace_s=settings.rotation_grace_s),
        routes=RouteService(database, keyring, upstream_policy(settings)),
        ingest_keys=IngestKeyService(database),
        audit=AuditService(database),
        analytics=AnalyticsService(database),
        recorder=build_recorder(settings, database, build_spool(settings)),
        upkeep=UsageUpkeep(
            database,
            raw_days=settings.retention_raw_days,
            rollup_days=settings.retention_rollup_days,
        ),
        security=build_security(settings, database, keyring),
        prices=PriceService(database),
        redis=redis,
    )


def build_security(settings: Settings, database: Database, keyring: Keyring) -> SecurityAudit:
    """The detectors, findings and alerts; webhook URLs pass the same SSRF guard as routes."""
    return SecurityAudit(
        monitor=SecurityMonitor(
            database, max_rows=settings.security_detect_max_rows, zone=settings.zone
        ),
        findings=FindingService(
            database, auto_suspend=parse_auto_suspend(settings.security_auto_suspend)
        ),
        webhooks=WebhookService(database, keyring, upstream_policy(settings)),
    )


def build_spool(settings: Settings) -> Spool:
    return Spool(settings.data_dir / "spool", max_bytes=settings.spool_max_bytes)


def build_recorder(
    settings: Settings,
    database: Database,
    spool: Spool,
    write_batch: WriteBatch | None = None,
    on_written: Callable[[Sequence[UsageEvent]], None] | None = None,
) -> UsageRecorder:
    """The usage recorder of one process (gateway or control plane); batches are written in
    this process unless `write_batch` writes them elsewhere. `on_written` hears of every batch
    once it is in the store."""
    write = write_batch or functools.partial(write_usage_batch, database, zone=settings.zone)
    if on_written is not None:
        write = _announcing(write, on_written)
    return UsageRecorder(
        write,
        spool,
        batch_size=settings.usage_batch_size,
        flush_interval_s=settings.usage_flush_interval_s,
        queue_size=settings.usage_queue_size,
        # SQLite takes one write transaction at a time, and a gateway's usage-writer child
        # writes one batch at a time: more writers would only queue there.
        writers=(
            settings.usage_writers
            if write_batch is None and database.dialect == "postgresql"
            else 1
        ),
    )


def _announcing(
    write: WriteBatch, on_written: Callable[[Sequence[UsageEvent]], None]
) -> WriteBatch:
    async def write_then_announce(events: Sequence[UsageEvent]) -> int:
        written = await write(events)
        on_written(events)
        return written

    return write_then_announce


def build_budget_guard(settings: Settings, database: Database, redis: Any | None) -> BudgetGuard:
    """Budget checks for one gateway process: spend through Redis when configured, else
    through the store."""

    async def read_spend(keys: list[SpendKey]) -> dict[SpendKey, int]:
        async with database.read() as connection:
            return await spend_sql.read_spend(connection, keys)

    store = StoreLedger(read_spend, poll_interval_s=settings.change_poll_interval_s)
    ledger: SpendLedger = RedisLedger(redis, store, read_spend) if redis is not None else store
    return BudgetGuard(ledger, PeriodCutter(settings.zone))


def build_gateway_app(
    settings: Settings, *, usage_writer: UsageWriterProcess | None = None
) -> GatewayApp:
    """The gateway with its own engine, cache, recorder and spool (one per process); with a
    `usage_writer`, usage batches are written by its child process."""
    database = Database.from_url(settings.resolved_database_url)
    keyring = Keyring(load_secret_key(settings))
    redis = build_redis(settings.redis_url) if settings.redis_url else None
    local_limiter = LocalRateLimiter()
    limiter: RateLimiter = (
        RedisRateLimiter(redis, fallback=local_limiter) if redis is not None else local_limiter
    )
    spool = build_spool(settings)
    budgets = build_budget_guard(settings, database, redis)
    recorder = build_recorder(
        settings,
        database,
        spool,
        usage_writer.write_batch if usage_writer else None,
        on_written=budgets.ledger.settle,
    )

    async def close() -> None:
        if usage_writer is not None:
            await usage_writer.close()  # after the recorder drained its queue through it
        if redis is not None:
            await redis.aclose()
        await database.dispose()

    policy = upstream_policy(settings)
    directory = Directory(
        database, keyring, policy, poll_interval_s=settings.change_poll_interval_s, redis=redis
    )
    return GatewayApp(
        directory=directory,
        recorder=recorder,
        spool=spool,
        limiter=limiter,
        upstream_policy=policy,
        trusted_proxies=parse_networks(settings.trusted_proxies, "TOKENMANAGER_TRUSTED_PROXIES"),
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        default_rate_limits=(settings.rate_limit_per_s, settings.rate_limit_per_min),
        budgets=budgets,
        self_service=SelfService(database, budgets),
        on_startup=usage_writer.start if usage_writer is not None else None,
        on_shutdown=close,
    )
