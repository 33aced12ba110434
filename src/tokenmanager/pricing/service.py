"""Price management: admins set and remove prices per model, everyone signed in reads them.
Every change is audited and appended to the change feed (kind "price"), so gateways reload the
price table; past costs are never touched (they were fixed when each call was recorded).
"""

from __future__ import annotations

import builtins
from decimal import Decimal
from typing import Any

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.errors import InvalidInputError, NotFoundError
from tokenmanager.pricing.book import PriceBook
from tokenmanager.pricing.changes import PriceChange, check_model_name
from tokenmanager.pricing.models import Price
from tokenmanager.pricing.money import format_micro_usd, parse_usd, usd_to_micro
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import prices as prices_sql
from tokenmanager.storage.database import Database

PRICE_CHANGE_KIND = "price"
# audit_log.target_id and change_feed.key hold 64 characters; the full name is in the entry.
_KEY_CHARS = 64


def audit_view(price: Price) -> dict[str, Any]:
    return {
        "model": price.model,
        "input_usd_per_mtok": format_micro_usd(price.input_micro_usd_per_mtok),
        "output_usd_per_mtok": format_micro_usd(price.output_micro_usd_per_mtok),
        "cached_input_usd_per_mtok": (
            format_micro_usd(price.cached_input_micro_usd_per_mtok)
            if price.cached_input_micro_usd_per_mtok is not None
            else None
        ),
        "source": price.source,
        "effective_from": price.effective_from.isoformat() if price.effective_from else None,
    }


def checked_model(model: str) -> str:
    try:
        return check_model_name(model)
    except ValueError as exc:
        raise InvalidInputError("model", str(exc)) from None


def _micro(field: str, value: str | int | float | Decimal) -> int:
    try:
        return usd_to_micro(parse_usd(value))
    except ValueError as exc:
        raise InvalidInputError(field, str(exc)) from None


class PriceService:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def set(
        self,
        actor: Actor,
        model: str,
        *,
        input_usd_per_mtok: str | int | float | Decimal,
        output_usd_per_mtok: str | int | float | Decimal,
        cached_input_usd_per_mtok: str | int | float | Decimal | None = None,
    ) -> Price:
        """The model's price from now on (USD per million tokens, at most 6 decimals). Without
        a cached-input price, cached input tokens cost the input price."""
        actor.require_admin()
        model = checked_model(model)
        price = Price(
            model=model,
            input_micro_usd_per_mtok=_micro("input_usd_per_mtok", input_usd_per_mtok),
            output_micro_usd_per_mtok=_micro("output_usd_per_mtok", output_usd_per_mtok),
            cached_input_micro_usd_per_mtok=(
                _micro("cached_input_usd_per_mtok", cached_input_usd_per_mtok)
                if cached_input_usd_per_mtok is not None
                else None
            ),
            effective_from=None,
            source=prices_sql.ADMIN_SOURCE,
        )
        async with self._db.write() as connection:
            before = (await prices_sql.read_current_prices(connection)).get(model)
            change = await prices_sql.create_price_change(
                connection, model=model, now=utcnow(), created_by=actor.name, price=price
            )
            assert change.price is not None
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "price.set",
                "price",
                model[:_KEY_CHARS],
                before=audit_view(before) if before else None,
                after=audit_view(change.price),
            )
            await audit_sql.append_change(connection, PRICE_CHANGE_KIND, model[:_KEY_CHARS])
        return change.price

    async def list(self, actor: Actor) -> list[Price]:
        """Every price in force now (admin prices and the defaults not overridden), by model."""
        async with self._db.read() as connection:
            current = await prices_sql.read_current_prices(connection)
        return [current[model] for model in sorted(current)]

    async def current(self) -> PriceBook:
        """Today's prices, read now: what the control plane computes costs with (ingestion,
        reprice). Every control-plane process reads the same table, so none has a stale one."""
        async with self._db.read() as connection:
            return PriceBook(await prices_sql.read_current_prices(connection))

    async def read(self, actor: Actor, model: str) -> Price | None:
        async with self._db.read() as connection:
            return (await prices_sql.read_current_prices(connection)).get(model)

    async def history(self, actor: Actor, model: str) -> builtins.list[PriceChange]:
        """The admin changes to one model's price, oldest first."""
        async with self._db.read() as connection:
            return await prices_sql.read_price_history(connection, model)

    async def remove(self, actor: Actor, model: str) -> None:
        """From now on the model has no price (calls to it cost null), even if it has a
        default. NotFoundError when it has no price now."""
        actor.require_admin()
        async with self._db.write() as connection:
            before = (await prices_sql.read_current_prices(connection)).get(model)
            if before is None:
                raise NotFoundError(f"no price for model {model!r}")
            await prices_sql.create_price_change(
                connection, model=model, now=utcnow(), created_by=actor.name, price=None
            )
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "price.remove",
                "price",
                model[:_KEY_CHARS],
                before=audit_view(before),
            )
            await audit_sql.append_change(connection, PRICE_CHANGE_KIND, model[:_KEY_CHARS])
