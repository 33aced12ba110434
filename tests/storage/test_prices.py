"""The price table's history on both databases: appended changes, tombstones that remove a
default, the current table over the shipped defaults, and one model's history in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from time_machine import TimeMachineFixture

from tokenmanager.access.actor import Actor, Role
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.storage import prices as prices_sql

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DEFAULTS = {price.model: price for price in DEFAULT_PRICES}


@pytest.fixture
def frozen(time_machine: TimeMachineFixture) -> TimeMachineFixture:
    time_machine.move_to(T0, tick=False)
    return time_machine


async def test_current_prices_are_the_defaults_until_an_admin_changes_one(
    services: Services,
) -> None:
    async with services.database.read() as connection:
        current = await prices_sql.read_current_prices(connection)

    assert current == DEFAULTS


async def test_an_admin_price_overrides_the_default_and_a_removal_removes_both(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    price = await services.prices.set(
        admin, "gpt-4o", input_usd_per_mtok="3", output_usd_per_mtok="12.000001"
    )
    assert (price.input_micro_usd_per_mtok, price.output_micro_usd_per_mtok) == (
        3_000_000,
        12_000_001,
    )
    assert (price.cached_input_micro_usd_per_mtok, price.source) == (None, "admin")
    assert price.effective_from == T0
    assert (await services.prices.read(admin, "gpt-4o")) == price

    frozen.shift(timedelta(hours=1))
    await services.prices.remove(admin, "gpt-4o")
    await services.prices.remove(admin, "claude-3-haiku")  # a default never set by an admin

    async with services.database.read() as connection:
        current = await prices_sql.read_current_prices(connection)
    assert "gpt-4o" not in current
    assert "claude-3-haiku" not in current
    assert current["gpt-4o-mini"] == DEFAULTS["gpt-4o-mini"]
    with pytest.raises(NotFoundError):
        await services.prices.remove(admin, "gpt-4o")


async def test_history_keeps_every_change_in_order_even_within_one_clock_tick(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    await services.prices.set(admin, "m", input_usd_per_mtok=1, output_usd_per_mtok=2)
    await services.prices.set(admin, "m", input_usd_per_mtok=3, output_usd_per_mtok=4)
    await services.prices.remove(admin, "m")
    frozen.shift(timedelta(days=1))
    await services.prices.set(
        admin, "m", input_usd_per_mtok=5, output_usd_per_mtok=6, cached_input_usd_per_mtok=0
    )

    history = await services.prices.history(admin, "m")

    assert [change.effective_from for change in history] == [
        T0,
        T0 + timedelta(microseconds=1),
        T0 + timedelta(microseconds=2),
        T0 + timedelta(days=1),
    ]
    assert [change.is_removal for change in history] == [False, False, True, False]
    assert [c.price.input_micro_usd_per_mtok for c in history if c.price] == [
        1_000_000,
        3_000_000,
        5_000_000,
    ]
    assert history[-1].price is not None
    assert history[-1].price.cached_input_micro_usd_per_mtok == 0
    assert {change.created_by for change in history} == {admin.name}
    current = await services.prices.read(admin, "m")
    assert current is not None
    assert current.input_micro_usd_per_mtok == 5_000_000


@pytest.mark.parametrize(
    ("model", "amounts", "field"),
    [
        ("", ("1", "1"), "model"),
        ("a b", ("1", "1"), "model"),
        ("m", ("1.0000001", "1"), "input_usd_per_mtok"),
        ("m", ("1", "-0.5"), "output_usd_per_mtok"),
    ],
)
async def test_set_refuses_bad_names_and_amounts_naming_the_field(
    services: Services, admin: Actor, model: str, amounts: tuple[str, str], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await services.prices.set(
            admin, model, input_usd_per_mtok=amounts[0], output_usd_per_mtok=amounts[1]
        )
    assert caught.value.field == field
    assert await services.prices.history(admin, model) == []


async def test_a_viewer_cannot_change_prices(services: Services) -> None:
    viewer = Actor(name="vera", role=Role.VIEWER, team_ids=frozenset({"team-a"}))

    with pytest.raises(PermissionDeniedError):
        await services.prices.set(viewer, "m", input_usd_per_mtok=1, output_usd_per_mtok=1)
    with pytest.raises(PermissionDeniedError):
        await services.prices.remove(viewer, "gpt-4o")
    assert len(await services.prices.list(viewer)) == len(DEFAULTS)
