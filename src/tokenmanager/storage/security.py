"""SQL for the security slice: the detectors' reads (raw rows of a time slice, hourly rollup
baselines, token facts), findings, sightings, the detector cursor, webhook destinations and
their deliveries. Writes run inside the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.clock import utcnow
from tokenmanager.security.detectors import RouteBaseline, Sighting, UsageRow
from tokenmanager.security.models import Finding, Observation
from tokenmanager.storage.schema import (
    security_cursors,
    security_deliveries,
    security_delivery_attempts,
    security_findings,
    security_sightings,
    security_webhooks,
    token_usage_logs,
    tokens,
    usage_daily,
    usage_hourly,
)
from tokenmanager.usage.histogram import BUCKET_COLUMNS

_SERVED_CLASSES = (1, 2, 3)


def _insert(connection: AsyncConnection, table: sa.Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# -- cursor --------------------------------------------------------------------------------


async def read_cursor(connection: AsyncConnection, name: str) -> datetime | None:
    return await connection.scalar(
        sa.select(security_cursors.c.position).where(security_cursors.c.name == name)
    )


async def write_cursor(connection: AsyncConnection, name: str, position: datetime) -> None:
    statement = _insert(connection, security_cursors).values(
        name=name, position=position, updated_at=utcnow()
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"position": position, "updated_at": statement.excluded.updated_at},
        )
    )


# -- detector reads --------------------------------------------------------------------------

_ROW_COLUMNS = (
    token_usage_logs.c.used_at, token_usage_logs.c.token_id, token_usage_logs.c.token_hash,
    token_usage_logs.c.route_path, token_usage_logs.c.response_status,
    token_usage_logs.c.response_time_ms, token_usage_logs.c.ip_address,
    token_usage_logs.c.user_agent, token_usage_logs.c.failure_kind,
)  # fmt: skip


async def read_usage_rows(
    connection: AsyncConnection,
    since: datetime,
    until: datetime,
    limit: int | None = None,
    *,
    keep_newest: bool = False,
) -> list[UsageRow]:
    """Raw rows with since <= used_at < until, oldest first: at most `limit`, the oldest ones
    (or the newest ones with `keep_newest`)."""
    newest_first = (token_usage_logs.c.used_at.desc(), token_usage_logs.c.id.desc())
    oldest_first = (token_usage_logs.c.used_at, token_usage_logs.c.id)
    query = (
        sa.select(*_ROW_COLUMNS)
        .where(token_usage_logs.c.used_at >= since, token_usage_logs.c.used_at < until)
        .order_by(*(newest_first if keep_newest else oldest_first))
    )
    if limit is not None:
        query = query.limit(limit)
    rows = [UsageRow(*row) for row in await connection.execute(query)]
    return rows[::-1] if keep_newest else rows


async def read_hour_calls(
    connection: AsyncConnection, token_ids: Sequence[int], hours: Sequence[datetime]
) -> dict[tuple[int, datetime], int]:
    """Served calls (1xx-3xx) per (token id, hour) for the given tokens and hours."""
    if not token_ids or not hours:
        return {}
    query = (
        sa.select(usage_hourly.c.token_id, usage_hourly.c.hour, sa.func.sum(usage_hourly.c.calls))
        .where(
            usage_hourly.c.hour.in_(sorted(set(hours))),
            usage_hourly.c.token_id.in_(sorted(set(token_ids))),
            usage_hourly.c.status_class.in_(_SERVED_CLASSES),
        )
        .group_by(usage_hourly.c.token_id, usage_hourly.c.hour)
    )
    return {(row[0], row[1]): int(row[2]) for row in await connection.execute(query)}


async def read_active_hours(
    connection: AsyncConnection, token_ids: Sequence[int], since: datetime, until: datetime
) -> dict[int, list[datetime]]:
    """The hours in [since, until) in which each token served at least one call."""
    if not token_ids:
        return {}
    query = (
        sa.select(usage_hourly.c.token_id, usage_hourly.c.hour)
        .where(
            usage_hourly.c.token_id.in_(sorted(set(token_ids))),
            usage_hourly.c.hour >= since,
            usage_hourly.c.hour < until,
            usage_hourly.c.status_class.in_(_SERVED_CLASSES),
        )
        .distinct()
    )
    hours: dict[int, list[datetime]] = defaultdict(list)
    for token_id, hour in await connection.execute(query):
        hours[token_id].append(hour)
    return dict(hours)


async def read_route_baselines(
    connection: AsyncConnection, route_paths: Sequence[str], since: datetime, until: datetime
) -> dict[str, RouteBaseline]:
    """Each route's calls, server errors and latency histogram over the whole UTC days in
    [since, until), from the daily rollup (a day's row there sums 24 hourly ones)."""
    if not route_paths:
        return {}
    bucket_sums = [sa.func.sum(usage_daily.c[name]) for name in BUCKET_COLUMNS]
    query = (
        sa.select(
            usage_daily.c.route_path,
            sa.func.sum(usage_daily.c.calls),
            sa.func.sum(sa.case((usage_daily.c.status_class == 5, usage_daily.c.calls), else_=0)),
            sa.func.max(usage_daily.c.max_latency_ms),
            *bucket_sums,
        )
        .where(
            usage_daily.c.route_path.in_(sorted(set(route_paths))),
            usage_daily.c.day >= since,
            usage_daily.c.day < until,
        )
        .group_by(usage_daily.c.route_path)
    )
    return {
        row[0]: RouteBaseline(
            calls=int(row[1] or 0),
            server_errors=int(row[2] or 0),
            max_latency_ms=int(row[3] or 0),
            buckets=tuple(int(value or 0) for value in row[4:]),
        )
        for row in await connection.execute(query)
    }


@dataclass(frozen=True, slots=True)
class TokenFacts:
    team_id: str
    previous_token_hash: str | None
    previous_hash_expires_at: datetime | None


async def read_token_facts(
    connection: AsyncConnection, token_ids: Sequence[int]
) -> dict[int, TokenFacts]:
    if not token_ids:
        return {}
    query = sa.select(
        tokens.c.id,
        tokens.c.team_id,
        tokens.c.previous_token_hash,
        tokens.c.previous_hash_expires_at,
    ).where(tokens.c.id.in_(sorted(set(token_ids))))
    return {row[0]: TokenFacts(*row[1:]) for row in await connection.execute(query)}


# -- sightings -------------------------------------------------------------------------------


async def read_sightings(
    connection: AsyncConnection, token_ids: Sequence[int]
) -> tuple[dict[tuple[int, str], set[str]], dict[int, datetime]]:
    """(known values per (token id, kind), each token's first sighting)."""
    known: dict[tuple[int, str], set[str]] = defaultdict(set)
    first_seen: dict[int, datetime] = {}
    if not token_ids:
        return known, first_seen
    query = sa.select(
        security_sightings.c.token_id,
        security_sightings.c.kind,
        security_sightings.c.value,
        security_sightings.c.first_seen,
    ).where(security_sightings.c.token_id.in_(sorted(set(token_ids))))
    for token_id, kind, value, first in await connection.execute(query):
        known[(token_id, kind)].add(value)
        if token_id not in first_seen or first < first_seen[token_id]:
            first_seen[token_id] = first
    return known, first_seen


async def write_sightings(connection: AsyncConnection, sightings: Sequence[Sighting]) -> None:
    if not sightings:
        return
    statement = _insert(connection, security_sightings)
    is_postgres = connection.dialect.name == "postgresql"
    least = sa.func.least if is_postgres else sa.func.min
    greatest = sa.func.greatest if is_postgres else sa.func.max
    statement = statement.on_conflict_do_update(
        index_elements=["token_id", "kind", "value"],
        set_={
            "first_seen": least(security_sightings.c.first_seen, statement.excluded.first_seen),
            "last_seen": greatest(security_sightings.c.last_seen, statement.excluded.last_seen),
        },
    )
    rows = [
        {"token_id": s.token_id, "kind": s.kind, "value": s.value,
         "first_seen": s.first_seen, "last_seen": s.last_seen}
        for s in sorted(sightings, key=lambda s: (s.token_id, s.kind, s.value))
    ]  # fmt: skip
    await connection.execute(statement, rows)


# -- findings --------------------------------------------------------------------------------


def _finding(row: Any) -> Finding:
    values = dict(row._mapping)
    values.pop("open_fingerprint")
    return Finding(**values)


async def read_finding(connection: AsyncConnection, finding_id: int) -> Finding | None:
    row = (
        await connection.execute(
            security_findings.select().where(security_findings.c.id == finding_id)
        )
    ).first()
    return _finding(row) if row is not None else None


async def read_open_finding(connection: AsyncConnection, fingerprint: str) -> Finding | None:
    """The open or acknowledged finding with this fingerprint."""
    row = (
        await connection.execute(
            security_findings.select().where(security_findings.c.open_fingerprint == fingerprint)
        )
    ).first()
    return _finding(row) if row is not None else None


async def read_known_fingerprints(
    connection: AsyncConnection, fingerprints: Sequence[str]
) -> set[str]:
    """Which of `fingerprints` any finding has had, whatever its status."""
    if not fingerprints:
        return set()
    query = sa.select(security_findings.c.fingerprint).where(
        security_findings.c.fingerprint.in_(sorted(set(fingerprints)))
    )
    return set((await connection.execute(query)).scalars())


async def create_finding(
    connection: AsyncConnection, observation: Observation, team_id: str | None
) -> int:
    now = utcnow()
    result = await connection.execute(
        security_findings.insert()
        .values(
            kind=str(observation.kind),
            severity=str(observation.severity),
            status="open",
            fingerprint=observation.fingerprint,
            open_fingerprint=observation.fingerprint,
            token_id=observation.token_id,
            team_id=team_id,
            route_path=observation.route_path,
            ip_address=observation.ip_address,
            evidence=observation.evidence,
            first_seen=observation.first_seen,
            last_seen=observation.last_seen,
            occurrences=1,
            created_at=now,
            updated_at=now,
        )
        .returning(security_findings.c.id)
    )
    return int(result.scalar_one())


async def update_finding(
    connection: AsyncConnection, finding: Finding, observation: Observation, severity: str
) -> None:
    """Fold a repeated observation into its open finding: the newest evidence, the widest
    first/last seen, the highest severity."""
    await connection.execute(
        security_findings.update()
        .where(security_findings.c.id == finding.id)
        .values(
            severity=severity,
            evidence=observation.evidence,
            first_seen=min(finding.first_seen, observation.first_seen),
            last_seen=max(finding.last_seen, observation.last_seen),
            occurrences=security_findings.c.occurrences + 1,
            updated_at=utcnow(),
        )
    )


async def set_finding_status(
    connection: AsyncConnection, finding: Finding, status: str, changed_by: str
) -> None:
    await connection.execute(
        security_findings.update()
        .where(security_findings.c.id == finding.id)
        .values(
            status=status,
            open_fingerprint=None if status == "resolved" else finding.fingerprint,
            status_changed_by=changed_by,
            updated_at=utcnow(),
        )
    )


async def set_finding_response(
    connection: AsyncConnection, finding_id: int, response: dict[str, Any]
) -> None:
    await connection.execute(
        security_findings.update()
        .where(security_findings.c.id == finding_id)
        .values(response=response, updated_at=utcnow())
    )


@dataclass(frozen=True, slots=True)
class FindingFilter:
    status: str | None = None
    kind: str | None = None
    min_severity_levels: tuple[str, ...] | None = None
    token_id: int | None = None
    route_path: str | None = None
    team_ids: frozenset[str] | None = None  # None: every team and team-less findings
    since: datetime | None = None
    until: datetime | None = None


async def list_findings(
    connection: AsyncConnection, where: FindingFilter, *, limit: int, offset: int
) -> tuple[list[Finding], int]:
    """(a page of findings, most recently seen first; the total matching)."""
    conditions: list[Any] = []
    table = security_findings
    if where.status is not None:
        conditions.append(table.c.status == where.status)
    if where.kind is not None:
        conditions.append(table.c.kind == where.kind)
    if where.min_severity_levels is not None:
        conditions.append(table.c.severity.in_(where.min_severity_levels))
    if where.token_id is not None:
        conditions.append(table.c.token_id == where.token_id)
    if where.route_path is not None:
        conditions.append(table.c.route_path == where.route_path)
    if where.team_ids is not None:
        conditions.append(table.c.team_id.in_(sorted(where.team_ids)))
    if where.since is not None:
        conditions.append(table.c.last_seen >= where.since)
    if where.until is not None:
        conditions.append(table.c.first_seen < where.until)
    query = (
        table.select()
        .where(*conditions)
        .order_by(table.c.last_seen.desc(), table.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await connection.scalar(
        sa.select(sa.func.count()).select_from(table).where(*conditions)
    )
    return [_finding(row) for row in await connection.execute(query)], int(total or 0)


# -- webhooks --------------------------------------------------------------------------------


async def create_webhook(connection: AsyncConnection, values: dict[str, Any]) -> int:
    now = utcnow()
    result = await connection.execute(
        security_webhooks.insert()
        .values(**values, created_at=now, updated_at=now)
        .returning(security_webhooks.c.id)
    )
    return int(result.scalar_one())


async def list_webhooks(connection: AsyncConnection) -> list[dict[str, Any]]:
    rows = await connection.execute(security_webhooks.select().order_by(security_webhooks.c.id))
    return [dict(row._mapping) for row in rows]


async def read_webhook(connection: AsyncConnection, webhook_id: int) -> dict[str, Any] | None:
    row = (
        await connection.execute(
            security_webhooks.select().where(security_webhooks.c.id == webhook_id)
        )
    ).first()
    return dict(row._mapping) if row is not None else None


async def delete_webhook(connection: AsyncConnection, webhook_id: int) -> None:
    await connection.execute(
        security_deliveries.delete().where(security_deliveries.c.webhook_id == webhook_id)
    )
    await connection.execute(security_webhooks.delete().where(security_webhooks.c.id == webhook_id))


async def last_delivery_at(
    connection: AsyncConnection, webhook_id: int, dedup_key: str
) -> datetime | None:
    latest: datetime | None = await connection.scalar(
        sa.select(sa.func.max(security_deliveries.c.created_at)).where(
            security_deliveries.c.webhook_id == webhook_id,
            security_deliveries.c.dedup_key == dedup_key,
        )
    )
    return latest


async def create_delivery(connection: AsyncConnection, values: dict[str, Any]) -> int:
    now = utcnow()
    result = await connection.execute(
        security_deliveries.insert()
        .values(
            **values, status="pending", attempts=0, next_attempt_at=now, created_at=now,
            updated_at=now,
        )
        .returning(security_deliveries.c.id)
    )  # fmt: skip
    return int(result.scalar_one())


async def read_delivery(connection: AsyncConnection, delivery_id: int) -> dict[str, Any] | None:
    row = (
        await connection.execute(
            security_deliveries.select().where(security_deliveries.c.id == delivery_id)
        )
    ).first()
    return dict(row._mapping) if row is not None else None


async def list_due_deliveries(
    connection: AsyncConnection, now: datetime, limit: int
) -> list[dict[str, Any]]:
    rows = await connection.execute(
        security_deliveries.select()
        .where(
            security_deliveries.c.status == "pending", security_deliveries.c.next_attempt_at <= now
        )
        .order_by(security_deliveries.c.next_attempt_at, security_deliveries.c.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


async def record_attempt(
    connection: AsyncConnection,
    delivery_id: int,
    *,
    attempted_at: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    status: str,
    next_attempt_at: datetime | None,
) -> None:
    await connection.execute(
        security_delivery_attempts.insert().values(
            delivery_id=delivery_id,
            attempted_at=attempted_at,
            status_code=status_code,
            error=error[:200] if error else None,
            duration_ms=duration_ms,
        )
    )
    await connection.execute(
        security_deliveries.update()
        .where(security_deliveries.c.id == delivery_id)
        .values(
            status=status,
            attempts=security_deliveries.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            updated_at=attempted_at,
        )
    )


async def list_deliveries(
    connection: AsyncConnection, webhook_id: int, limit: int
) -> list[dict[str, Any]]:
    """A webhook's deliveries, newest first, each with its attempts (oldest first)."""
    rows = await connection.execute(
        security_deliveries.select()
        .where(security_deliveries.c.webhook_id == webhook_id)
        .order_by(security_deliveries.c.id.desc())
        .limit(limit)
    )
    deliveries = [dict(row._mapping) for row in rows]
    if not deliveries:
        return deliveries
    attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    attempt_rows = await connection.execute(
        security_delivery_attempts.select()
        .where(security_delivery_attempts.c.delivery_id.in_([d["id"] for d in deliveries]))
        .order_by(security_delivery_attempts.c.id)
    )
    for row in attempt_rows:
        values = dict(row._mapping)
        attempts[values.pop("delivery_id")].append(values)
    for delivery in deliveries:
        delivery["attempt_log"] = attempts.get(delivery["id"], [])
    return deliveries
