"""SQL for the admin price table. It is a history: every change appends a row and a removal
appends a tombstone (`is_removed`), so the price in force at any moment can be read back. The
current table is the latest row per model laid over the shipped defaults."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.pricing.changes import PriceChange
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.pricing.models import Price
from tokenmanager.storage.schema import prices

ADMIN_SOURCE = "admin"


def _to_price(row: Any) -> Price:
    return Price(
        model=row.model,
        input_micro_usd_per_mtok=row.input_micro_usd_per_mtok,
        output_micro_usd_per_mtok=row.output_micro_usd_per_mtok,
        cached_input_micro_usd_per_mtok=row.cached_input_micro_usd_per_mtok,
        effective_from=row.effective_from,
        source=ADMIN_SOURCE,
    )


def _to_change(row: Any) -> PriceChange:
    return PriceChange(
        model=row.model,
        effective_from=row.effective_from,
        price=None if row.is_removed else _to_price(row),
        created_by=row.created_by,
    )


async def _next_effective_from(connection: AsyncConnection, model: str, now: datetime) -> datetime:
    """`now`, or just after the model's latest change when that is not earlier (two changes in
    one clock tick, or a clock that stepped back): the history's key must stay unique and in
    order."""
    query = sa.select(sa.func.max(prices.c.effective_from)).where(prices.c.model == model)
    latest: datetime | None = (await connection.execute(query)).scalar()
    if latest is not None and latest >= now:
        return latest + timedelta(microseconds=1)
    return now


async def create_price_change(
    connection: AsyncConnection,
    *,
    model: str,
    now: datetime,
    created_by: str,
    price: Price | None,
) -> PriceChange:
    """Append `price` for `model` (or, with None, a tombstone) effective from about `now`."""
    effective_from = await _next_effective_from(connection, model, now)
    values: dict[str, Any] = {
        "model": model,
        "effective_from": effective_from,
        "is_removed": price is None,
        "created_by": created_by,
        "input_micro_usd_per_mtok": price.input_micro_usd_per_mtok if price else None,
        "output_micro_usd_per_mtok": price.output_micro_usd_per_mtok if price else None,
        "cached_input_micro_usd_per_mtok": (
            price.cached_input_micro_usd_per_mtok if price else None
        ),
    }
    row = (await connection.execute(prices.insert().values(**values).returning(*prices.c))).one()
    return _to_change(row)


async def read_current_prices(connection: AsyncConnection) -> dict[str, Price]:
    """Every model's price now: the latest admin row per model overrides its default, and a
    tombstone removes the model, default or not."""
    latest = (
        sa.select(prices.c.model, sa.func.max(prices.c.effective_from).label("effective_from"))
        .group_by(prices.c.model)
        .subquery()
    )
    query = prices.select().join(
        latest,
        sa.and_(
            prices.c.model == latest.c.model, prices.c.effective_from == latest.c.effective_from
        ),
    )
    current = {price.model: price for price in DEFAULT_PRICES}
    for row in await connection.execute(query):
        if row.is_removed:
            current.pop(row.model, None)
        else:
            current[row.model] = _to_price(row)
    return current


async def read_price_history(connection: AsyncConnection, model: str) -> list[PriceChange]:
    """The admin changes to `model`'s price, oldest first (defaults are not part of it)."""
    query = prices.select().where(prices.c.model == model).order_by(prices.c.effective_from)
    return [_to_change(row) for row in await connection.execute(query)]
