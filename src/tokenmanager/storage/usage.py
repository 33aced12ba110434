"""SQL for usage: the batched, idempotent insert that keeps `tokens.last_used`, the hourly and
daily rollups, the per-model cost rollup and the spend per token and team current in the same
transaction (on PostgreSQL in one statement). Only rows that were really inserted (new
`event_id`s) reach the rollups and the spend, so replaying a batch never counts a call twice.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.calendar import UTC_ZONE
from tokenmanager.errors import ConflictError
from tokenmanager.storage.database import Database
from tokenmanager.storage.schema import (
    COST_ROLLUP_COLUMNS,
    LLM_ROLLUP_COLUMNS,
    token_usage_logs,
    tokens,
    usage_cost_hourly,
    usage_daily,
    usage_hourly,
    usage_spend,
)
from tokenmanager.usage.costs import (
    CostKey,
    CostRow,
    PeriodCutter,
    SpendKey,
    build_cost_rollup,
    build_spend,
)
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.histogram import BUCKET_COLUMNS, BUCKET_UPPER_BOUNDS_MS
from tokenmanager.usage.recorder import RefusedBatchError
from tokenmanager.usage.rollup import RollupKey, RollupRow, build_rollup, regroup

_EVENT_COLUMNS = (
    "event_id", "token_hash", "token_id", "route_path", "used_at", "response_status",
    "response_time_ms", "ttfb_ms", "ip_address", "user_agent", "request_method",
    "error_message", "bytes_in", "bytes_out", "failure_kind", "source",
    "team_id", "model", "prompt_tokens", "completion_tokens", "cached_prompt_tokens",
    "reasoning_tokens", "usage_source", "cost_pusd",
)  # fmt: skip
_event_values = operator.attrgetter(*_EVENT_COLUMNS)
# A batch without LLM calls writes these only (the LLM columns keep their NULL default).
_PLAIN_COLUMNS = _EVENT_COLUMNS[: _EVENT_COLUMNS.index("team_id") + 1]
_plain_values = operator.attrgetter(*_PLAIN_COLUMNS)
_LLM_ONLY = operator.attrgetter(*_EVENT_COLUMNS[len(_PLAIN_COLUMNS) :])


def _has_llm_values(event: UsageEvent) -> bool:
    return any(value is not None for value in _LLM_ONLY(event))


async def _resolve_token_ids(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    """Fill in token_id for events that carry only a hash (ingested from external gateways),
    and the token's team for those and for LLM calls recorded without one: the team charged is
    the token's team when the call is recorded."""
    unknown = {e.token_hash for e in events if e.token_id is None and e.token_hash}
    teamless = {
        e.token_id for e in events if e.team_id is None and e.token_id is not None and e.is_llm_call
    }
    if not unknown and not teamless:
        return
    columns = (tokens.c.id, tokens.c.team_id, tokens.c.token_hash, tokens.c.previous_token_hash)
    conditions = []
    if unknown:
        conditions += [tokens.c.token_hash.in_(unknown), tokens.c.previous_token_hash.in_(unknown)]
    if teamless:
        conditions.append(tokens.c.id.in_(teamless))
    rows = list(await connection.execute(sa.select(*columns).where(sa.or_(*conditions))))
    ids: dict[str, int] = {}
    teams = {row.id: row.team_id for row in rows}
    for row in rows:
        ids[row.token_hash] = row.id
        if row.previous_token_hash:
            ids[row.previous_token_hash] = row.id
    for event in events:
        if event.token_id is None:
            event.token_id = ids.get(event.token_hash)
            if event.team_id is None and event.token_id is not None:
                event.team_id = teams.get(event.token_id)
        elif event.team_id is None and event.is_llm_call:
            event.team_id = teams.get(event.token_id)


def _is_refused_data(exc: BaseException) -> bool:
    """Whether the store refused a batch for its data (a value it cannot hold, a constraint:
    SQLSTATE classes 22 and 23) rather than being unreachable; writing it again fails again."""
    if isinstance(exc, ConflictError | sa.exc.IntegrityError | sa.exc.DataError):
        return True  # `Database.write` turns IntegrityError into ConflictError
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


async def write_usage_batch(
    database: Database, events: Sequence[UsageEvent], *, zone: ZoneInfo = UTC_ZONE
) -> int:
    """A recorder's `WriteBatch`: the batch in one transaction, spend periods cut in `zone`
    (TOKENMANAGER_TIMEZONE). RefusedBatchError when the store refuses its data; any other
    failure (the store is down) as it came."""
    try:
        async with database.write() as connection:
            return await insert_usage_events(connection, events, zone=zone)
    except Exception as exc:
        if _is_refused_data(exc):
            raise RefusedBatchError(type(exc).__name__) from exc
        raise


async def insert_usage_events(
    connection: AsyncConnection, events: Sequence[UsageEvent], *, zone: ZoneInfo = UTC_ZONE
) -> int:
    """Insert events not stored yet, update last_used, the rollups and the spend (periods cut
    in `zone`); return how many were new."""
    if not events:
        return 0
    await _resolve_token_ids(connection, events)
    unique = list({event.event_id: event for event in events}.values())
    if connection.dialect.name == "postgresql":
        return await _insert_postgres(connection, unique, zone)
    return await _insert_sqlite(connection, unique, zone)


# -- SQLite: driver-level statements ----------------------------------------------------------
# SQLAlchemy's per-row parameter handling and per-call statement building cost several times
# what SQLite itself spends on a batch, so these statements are plain SQL with positional
# parameters, and timestamps are bound as the text SQLAlchemy's SQLite DATETIME stores (always
# with six fractional digits: stored values are compared as text).

_SQLITE_ROWS_PER_INSERT = 500  # x 24 columns: well under SQLite's 32766 bound parameters
_USED_AT = _EVENT_COLUMNS.index("used_at")


def _naive_utc(moment: datetime) -> datetime:
    """As the UTCDateTime column type binds it."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _sqlite_moment(moment: datetime) -> str:
    return _naive_utc(moment).isoformat(" ", "microseconds")


@functools.lru_cache(maxsize=16)
def _sqlite_insert_sql(row_count: int) -> str:
    row = "(" + ", ".join("?" * len(_EVENT_COLUMNS)) + ")"
    return (
        f"INSERT INTO token_usage_logs ({', '.join(_EVENT_COLUMNS)}) "  # noqa: S608 - fixed names
        f"VALUES {', '.join([row] * row_count)} "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )


async def _insert_sqlite(
    connection: AsyncConnection, events: list[UsageEvent], zone: ZoneInfo
) -> int:
    """Multi-row INSERTs returning the event ids really inserted; last_used and the rollups
    from those rows only."""
    new_ids: set[str] = set()
    for start in range(0, len(events), _SQLITE_ROWS_PER_INSERT):
        chunk = events[start : start + _SQLITE_ROWS_PER_INSERT]
        parameters: list[Any] = []
        for event in chunk:
            values = list(_event_values(event))
            values[_USED_AT] = _sqlite_moment(values[_USED_AT])
            parameters += values
        result = await connection.exec_driver_sql(_sqlite_insert_sql(len(chunk)), tuple(parameters))
        new_ids.update(result.scalars())
    inserted = [event for event in events if event.event_id in new_ids]
    await _update_last_used(connection, inserted)
    await _add_to_rollup(connection, inserted)
    await write_cost_rollup(connection, build_cost_rollup(inserted))
    await add_spend(connection, build_spend(inserted, zone))
    return len(inserted)


def _array_type(column: sa.Column[Any]) -> str:
    """`VARCHAR[]` for a VARCHAR(36) column: unbounded, so that a value too long for the column
    fails the insert (as a plain INSERT does) instead of being cut short by the cast."""
    compiled: str = column.type.compile(dialect=PGDialect())  # type: ignore[no-untyped-call]
    return compiled.split("(")[0] + "[]"


def _bucket_condition(index: int) -> str:
    """SQL for "the latency falls in bucket `index`", as histogram.bucket_index decides it."""
    upper = BUCKET_UPPER_BOUNDS_MS[index]
    conditions = []
    if index:
        conditions.append(f"response_time_ms > {BUCKET_UPPER_BOUNDS_MS[index - 1]:g}")
    if upper != float("inf"):
        conditions.append(f"response_time_ms <= {upper:g}")
    return " AND ".join(conditions)


def _rollup_updates(table: str, greatest: str) -> str:
    """The DO UPDATE of a rollup upsert: sums added, the maximum kept, the first token id."""
    updates = [f"{c} = {table}.{c} + excluded.{c}" for c in _ROLLUP_ADDITIVE]
    updates.append(f"max_latency_ms = {greatest}({table}.max_latency_ms, excluded.max_latency_ms)")
    updates.append(f"token_id = COALESCE({table}.token_id, excluded.token_id)")
    return ", ".join(updates)


def _rollup_conflict(table: str, period: str) -> str:
    """Add a delta row to the stored one."""
    return (
        f"ON CONFLICT ({period}, token_hash, route_path, status_class) "
        f"DO UPDATE SET {_rollup_updates(table, 'GREATEST')}"
    )


def _ingest_sql(*, llm: bool) -> str:
    """One statement for a whole batch on PostgreSQL: insert the rows (column arrays, unnest)
    whose event_id is new, add exactly those rows to the hourly and daily rollups, move
    tokens.last_used forward, and return how many rows were new.

    The database computes the rollup deltas from the rows the insert returned (what
    `RollupRow.add` does per event in Python: the oracle tests compare both with a brute-force
    computation), so no per-event Python work is left but building the arrays, and a batch is
    one round trip. Rollup rows are written, and the tokens whose last_used moves are locked,
    in key order (ORDER BY), so concurrent writers (the recorder runs several) take their locks
    in one order and cannot deadlock.

    With `llm`, the statement also writes the LLM columns, their rollup sums, the per-model
    cost rollup and the spend; a batch without any LLM call takes the statement without them
    (the columns' defaults), which costs what the write path cost before LLM usage existed.
    """
    names = _EVENT_COLUMNS if llm else _PLAIN_COLUMNS
    columns = ", ".join(names)
    arrays = ", ".join(
        f"${index}::{_array_type(token_usage_logs.c[name])}"
        for index, name in enumerate(names, start=1)
    )
    # UsageEvent.status_class and .is_error
    status_class = (
        "CASE WHEN response_status BETWEEN 100 AND 599 THEN response_status / 100 ELSE 0 END"
    )
    is_error = (
        "failure_kind IS NOT NULL OR response_status >= 400 "
        "OR (response_status IS NULL AND error_message IS NOT NULL)"
    )
    buckets = ", ".join(
        f"count(*) FILTER (WHERE {_bucket_condition(index)}) AS {name}"
        for index, name in enumerate(BUCKET_COLUMNS)
    )
    llm_rollup = f", {', '.join(LLM_ROLLUP_COLUMNS)}" if llm else ""
    rollup_columns = (
        "token_hash, route_path, status_class, token_id, calls, errors, sum_latency_ms, "
        f"max_latency_ms, bytes_in, bytes_out, {', '.join(BUCKET_COLUMNS)}{llm_rollup}"
    )
    bucket_sums = ", ".join(f"sum({name})" for name in BUCKET_COLUMNS)
    returning = (
        "RETURNING token_hash, token_id, route_path, used_at, response_status, "
        "response_time_ms, error_message, bytes_in, bytes_out, failure_kind"
    )
    if llm:
        count = len(names)
        spend_arrays = f"${count + 1}::timestamp[], ${count + 2}::timestamp[]"
        rows = (
            # The batch's arrays as rows, with the local day and month each costed call is
            # charged to (computed in Python by tokenmanager.calendar: one definition).
            f"WITH input AS (SELECT * FROM unnest({arrays}, {spend_arrays}) "  # noqa: S608 - fixed names
            f"AS t({columns}, spend_day, spend_month)), new_rows AS ("
            f"INSERT INTO token_usage_logs ({columns}) SELECT {columns} FROM input "
            f"ON CONFLICT (event_id) DO NOTHING {returning}, event_id, team_id, model, "
            "prompt_tokens, completion_tokens, cached_prompt_tokens, reasoning_tokens, "
            "usage_source, cost_pusd)"
        )
        llm_measures = f", {_LLM_MEASURES}"
        llm_sums = ", " + ", ".join(f"sum({name})" for name in LLM_ROLLUP_COLUMNS)
    else:
        rows = (
            "WITH new_rows AS ("  # noqa: S608 - fixed names
            f"INSERT INTO token_usage_logs ({columns}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT (event_id) DO NOTHING {returning})"
        )
        llm_measures = llm_sums = ""
    return (
        f"{rows}, hourly AS ("  # noqa: S608 - fixed names
        "SELECT date_trunc('hour', used_at) AS hour, token_hash, "
        f"coalesce(route_path, '') AS route_path, {status_class} AS status_class, "
        f"max(token_id) AS token_id, count(*) AS calls, count(*) FILTER (WHERE {is_error}) "
        "AS errors, coalesce(sum(response_time_ms), 0) AS sum_latency_ms, "
        "coalesce(max(response_time_ms), 0) AS max_latency_ms, "
        "coalesce(sum(bytes_in), 0) AS bytes_in, coalesce(sum(bytes_out), 0) AS bytes_out, "
        f"{buckets}{llm_measures} FROM new_rows GROUP BY 1, 2, 3, 4"
        "), hourly_upsert AS ("
        f"INSERT INTO usage_hourly (hour, {rollup_columns}) "
        f"SELECT hour, {rollup_columns} FROM hourly ORDER BY 1, 2, 3, 4 "
        f"{_rollup_conflict('usage_hourly', 'hour')}"
        "), daily_upsert AS ("
        f"INSERT INTO usage_daily (day, {rollup_columns}) "
        "SELECT date_trunc('day', hour), token_hash, route_path, status_class, max(token_id), "
        "sum(calls), sum(errors), sum(sum_latency_ms), max(max_latency_ms), sum(bytes_in), "
        f"sum(bytes_out), {bucket_sums}{llm_sums} FROM hourly GROUP BY 1, 2, 3, 4 "
        f"ORDER BY 1, 2, 3, 4 {_rollup_conflict('usage_daily', 'day')}"
        f"){_cost_and_spend_sql() if llm else ''}, latest AS ("
        "SELECT token_id, max(used_at) AS used_at FROM new_rows WHERE token_id IS NOT NULL "
        "GROUP BY token_id"
        "), moved AS ("
        "SELECT tokens.id, latest.used_at FROM tokens JOIN latest ON tokens.id = latest.token_id "
        "WHERE tokens.last_used IS NULL OR tokens.last_used < latest.used_at "
        "ORDER BY tokens.id FOR NO KEY UPDATE OF tokens"
        "), last_used AS ("
        "UPDATE tokens SET last_used = moved.used_at FROM moved WHERE tokens.id = moved.id"
        ") SELECT count(*) FROM new_rows"
    )


def _cost_and_spend_sql() -> str:
    """The CTEs adding new LLM rows to usage_cost_hourly and usage_spend, in key order."""
    cost_columns = ", ".join(COST_ROLLUP_COLUMNS)
    cost_updates = ", ".join(
        f"{c} = usage_cost_hourly.{c} + excluded.{c}" for c in COST_ROLLUP_COLUMNS
    )
    return (
        ", cost_upsert AS ("  # noqa: S608 - fixed names
        # CostRow.add as SQL: LLM calls only, '' and 0 for unknown keys.
        "INSERT INTO usage_cost_hourly (hour, token_id, team_id, route_path, model, "
        f"{cost_columns}) "
        "SELECT date_trunc('hour', used_at), coalesce(token_id, 0), coalesce(team_id, ''), "
        "coalesce(route_path, ''), coalesce(model, ''), count(*), "
        "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
        "coalesce(sum(cached_prompt_tokens), 0), coalesce(sum(reasoning_tokens), 0), "
        "coalesce(sum(cost_pusd), 0), count(*) FILTER (WHERE cost_pusd IS NULL), "
        "count(*) FILTER (WHERE usage_source = 'estimated'), "
        "count(*) FILTER (WHERE usage_source = 'missing') "
        "FROM new_rows WHERE usage_source IS NOT NULL GROUP BY 1, 2, 3, 4, 5 "
        "ORDER BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (hour, token_id, team_id, route_path, model) "
        f"DO UPDATE SET {cost_updates}"
        "), spend_upsert AS ("
        # costs.build_spend as SQL: the token (by id) and the team, per day and month.
        "INSERT INTO usage_spend (scope, subject, period, period_start, cost_pusd, calls) "
        "SELECT v.scope, v.subject, v.period, v.period_start, sum(new_rows.cost_pusd), count(*) "
        "FROM new_rows JOIN input USING (event_id) CROSS JOIN LATERAL (VALUES "
        "('token', new_rows.token_id::text, 'day', input.spend_day), "
        "('token', new_rows.token_id::text, 'month', input.spend_month), "
        "('team', new_rows.team_id, 'day', input.spend_day), "
        "('team', new_rows.team_id, 'month', input.spend_month)"
        ") AS v(scope, subject, period, period_start) "
        "WHERE new_rows.cost_pusd IS NOT NULL AND v.subject <> '' "
        "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 "
        "ON CONFLICT (scope, subject, period, period_start) DO UPDATE SET "
        "cost_pusd = usage_spend.cost_pusd + excluded.cost_pusd, "
        "calls = usage_spend.calls + excluded.calls"
        ")"
    )


async def _insert_postgres(
    connection: AsyncConnection, events: list[UsageEvent], zone: ZoneInfo
) -> int:
    """The batch as one array per column, in one statement (`_ingest_sql`)."""
    has_llm = any(map(_has_llm_values, events))
    values = _event_values if has_llm else _plain_values
    arrays: list[list[Any]] = [list(column) for column in zip(*map(values, events), strict=True)]
    arrays[_USED_AT] = [_naive_utc(moment) for moment in arrays[_USED_AT]]
    if not has_llm:
        result = await connection.exec_driver_sql(_INGEST_SQL_PLAIN, tuple(arrays))
        return int(result.scalar_one())
    cutter = PeriodCutter(zone)
    for period in ("day", "month"):
        arrays.append(
            [
                None if e.cost_pusd is None else _naive_utc(cutter.start(period, e.used_at))
                for e in events
            ]
        )
    result = await connection.exec_driver_sql(_INGEST_SQL, tuple(arrays))
    return int(result.scalar_one())


async def _update_last_used(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    """SQLite: move tokens.last_used forward to each token's newest event."""
    latest: dict[int, datetime] = {}
    for event in events:
        if event.token_id is None:
            continue
        known = latest.get(event.token_id)
        if known is None or event.used_at > known:
            latest[event.token_id] = event.used_at
    if not latest:
        return
    await connection.exec_driver_sql(
        "UPDATE tokens SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)",
        [
            (moment, token_id, moment)
            for token_id, moment in sorted(
                (token_id, _sqlite_moment(used_at)) for token_id, used_at in latest.items()
            )
        ],
    )


async def _add_to_rollup(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    hourly = build_rollup(events, "hour")
    await write_rollup(connection, hourly, "hour")
    await write_rollup(connection, regroup(hourly, "day"), "day")


async def write_rollup(
    connection: AsyncConnection, rollup: dict[RollupKey, RollupRow], period: str
) -> None:
    """Add rollup rows to the stored ones (upsert) in the hourly or daily table."""
    # Sorted keys: concurrent writers lock rollup rows in one order and cannot deadlock.
    items = sorted(rollup.items())
    if not items:
        return
    if connection.dialect.name == "postgresql":
        await _upsert_rollup_arrays(connection, period, _rollup_tuples(items, _naive_utc))
        return
    rows = _rollup_tuples(items, _sqlite_moment)
    await connection.exec_driver_sql(_ROLLUP_SQLITE_SQL[period], rows)


_ROLLUP_ADDITIVE = (
    "calls", "errors", "sum_latency_ms", "bytes_in", "bytes_out", *BUCKET_COLUMNS,
    *LLM_ROLLUP_COLUMNS,
)  # fmt: skip
# RollupRow.add's LLM sums as SQL over inserted rows (the order of LLM_ROLLUP_COLUMNS).
_LLM_MEASURES = (
    "coalesce(sum(prompt_tokens) FILTER (WHERE usage_source IS NOT NULL), 0) AS prompt_tokens, "
    "coalesce(sum(completion_tokens) FILTER (WHERE usage_source IS NOT NULL), 0) "
    "AS completion_tokens, coalesce(sum(cost_pusd), 0) AS cost_pusd, "
    "count(*) FILTER (WHERE usage_source IS NOT NULL) AS llm_calls, "
    "count(*) FILTER (WHERE usage_source IS NOT NULL AND cost_pusd IS NULL) AS unpriced_calls, "
    "count(*) FILTER (WHERE usage_source = 'estimated') AS estimated_calls, "
    "count(*) FILTER (WHERE usage_source = 'missing') AS missing_calls"
)
_ROLLUP_ARRAY_TYPES = {
    # column: PostgreSQL array element type, in the order the rows are sent
    "token_hash": "varchar", "route_path": "varchar", "status_class": "smallint",
    "token_id": "integer", "calls": "bigint", "errors": "bigint", "sum_latency_ms": "bigint",
    "max_latency_ms": "integer", "bytes_in": "bigint", "bytes_out": "bigint",
    **{name: "bigint" for name in BUCKET_COLUMNS},
    **{name: "bigint" for name in LLM_ROLLUP_COLUMNS},
}  # fmt: skip


def _rollup_array_sql(table: sa.Table, period: str) -> str:
    """PostgreSQL: one INSERT … SELECT FROM unnest(column arrays) ON CONFLICT DO UPDATE for the
    whole batch, one statement instead of one per rollup row. unnest keeps the arrays' order,
    so rows are still locked in key order."""
    columns = (period, *_ROLLUP_ARRAY_TYPES)
    arrays = ", ".join(
        f"${index}::{kind}[]"
        for index, kind in enumerate(("timestamp", *_ROLLUP_ARRAY_TYPES.values()), start=1)
    )
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "  # noqa: S608 - fixed names
        f"{_rollup_conflict(table.name, period)}"
    )


def _rollup_sqlite_sql(table: sa.Table, period: str) -> str:
    """SQLite: the same upsert for one row, run for every row (executemany); SQLite's
    two-argument max() is PostgreSQL's GREATEST."""
    columns = (period, *_ROLLUP_ARRAY_TYPES)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608 - fixed names
        f"VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({period}, token_hash, route_path, status_class) "
        f"DO UPDATE SET {_rollup_updates(table.name, 'max')}"
    )


_INGEST_SQL = _ingest_sql(llm=True)
_INGEST_SQL_PLAIN = _ingest_sql(llm=False)
_ROLLUP_ARRAY_SQL = {
    "hour": _rollup_array_sql(usage_hourly, "hour"),
    "day": _rollup_array_sql(usage_daily, "day"),
}
_ROLLUP_SQLITE_SQL = {
    "hour": _rollup_sqlite_sql(usage_hourly, "hour"),
    "day": _rollup_sqlite_sql(usage_daily, "day"),
}


def _rollup_tuples(
    items: list[tuple[RollupKey, RollupRow]], bind_moment: Callable[[datetime], Any]
) -> list[tuple[Any, ...]]:
    """Rollup rows as parameter tuples, in the column order of `_ROLLUP_ARRAY_TYPES`."""
    return [
        (bind_moment(start), token_hash, route_path, status_class, row.token_id, row.calls,
         row.errors, row.sum_latency_ms, row.max_latency_ms, row.bytes_in, row.bytes_out,
         *row.buckets, *row.llm_values())
        for (start, token_hash, route_path, status_class), row in items
    ]  # fmt: skip


async def _upsert_rollup_arrays(
    connection: AsyncConnection, period: str, rows: list[tuple[Any, ...]]
) -> None:
    """PostgreSQL: the batch's rollup rows as one array per column, in one statement. Row by
    row (executemany) costs a statement execution per rollup row, and a batch of 1000 events
    makes hundreds of them in each of the two rollup tables."""
    fairy = await connection.get_raw_connection()
    driver: Any = fairy.driver_connection
    await driver.execute(
        _ROLLUP_ARRAY_SQL[period], *(list(column) for column in zip(*rows, strict=True))
    )


# -- the cost rollup and the spend ------------------------------------------------------------


def _adding_upsert(connection: AsyncConnection, table: sa.Table, keys: tuple[str, ...]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE adding every other column to the stored value."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert: Any = dialect.insert(table)
    added = [c.name for c in table.columns if c.name not in keys]
    return insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.c[name] + insert.excluded[name] for name in added},
    )


_COST_KEYS = ("hour", "token_id", "team_id", "route_path", "model")
_SPEND_KEYS = ("scope", "subject", "period", "period_start")


async def write_cost_rollup(connection: AsyncConnection, rows: dict[CostKey, CostRow]) -> None:
    """Add per-model cost rows to the stored ones, in key order (no deadlock between writers)."""
    if not rows:
        return
    parameters = [
        dict(zip(_COST_KEYS, key, strict=True))
        | dict(zip(COST_ROLLUP_COLUMNS, row.values(), strict=True))
        for key, row in sorted(rows.items())
    ]
    await connection.execute(_adding_upsert(connection, usage_cost_hourly, _COST_KEYS), parameters)


async def add_spend(connection: AsyncConnection, spend: dict[SpendKey, list[int]]) -> None:
    """Add {(scope, subject, period, period_start): [cost_pusd, calls]} to usage_spend (a
    negative delta takes spend back, as a reprice may), in key order."""
    if not spend:
        return
    parameters = [
        dict(zip(_SPEND_KEYS, key, strict=True)) | {"cost_pusd": cost, "calls": calls}
        for key, (cost, calls) in sorted(spend.items())
    ]
    await connection.execute(_adding_upsert(connection, usage_spend, _SPEND_KEYS), parameters)
