"""Budget checks and spend ledgers, without a gateway: the store's spend is a dict here (the
store-backed SQL has its own contract tests), Redis is the real one when configured."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tokenmanager.changes import build_redis
from tokenmanager.gateway.budgets import (
    BudgetGuard,
    GuardedBudget,
    RedisLedger,
    StoreLedger,
    spend_keys,
)
from tokenmanager.usage.costs import PeriodCutter, SpendKey
from tokenmanager.usage.events import UsageEvent

REDIS_URL = os.environ.get("TOKENMANAGER_TEST_REDIS_URL")
NOW = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
DOLLAR_PUSD = 10**12


class FakeStore:
    """`usage_spend` as a dict; counts reads so tests can see when the store was asked."""

    def __init__(self) -> None:
        self.spend: dict[SpendKey, int] = {}
        self.reads = 0
        self.is_down = False

    async def read(self, keys: list[SpendKey]) -> dict[SpendKey, int]:
        self.reads += 1
        if self.is_down:
            raise ConnectionError("store down")
        return {key: self.spend[key] for key in keys if key in self.spend}

    def write(self, event: UsageEvent, clock: PeriodCutter) -> None:
        """What a recorder's batch write does to usage_spend for one event."""
        assert event.token_id is not None
        assert event.cost_pusd is not None
        for key in spend_keys(event.token_id, event.team_id, clock, event.used_at):
            self.spend[key] = self.spend.get(key, 0) + event.cost_pusd


def call(cost_pusd: int, *, token_id: int = 7, team_id: str = "team-a") -> UsageEvent:
    event = UsageEvent("a" * 64, "/api/openai", NOW, 200, 12, token_id=token_id, team_id=team_id)
    event.cost_pusd = cost_pusd
    return event


@pytest.fixture
def clock() -> PeriodCutter:
    return PeriodCutter(ZoneInfo("Asia/Taipei"))


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def guard(store: FakeStore, clock: PeriodCutter) -> BudgetGuard:
    ledger = StoreLedger(store.read, poll_interval_s=3600)  # polled by hand below
    return BudgetGuard(ledger, clock)


# 1 USD a day
TOKEN_BUDGET = GuardedBudget("token", "7", limit_micro_usd=1_000_000, period="day")
TEAM_BUDGET = GuardedBudget("team", "team-a", limit_micro_usd=5_000_000, period="month")


async def test_a_budget_not_yet_spent_lets_the_call_through(guard: BudgetGuard) -> None:
    assert await guard.check((TOKEN_BUDGET, TEAM_BUDGET), NOW) is None


async def test_the_store_spend_reaching_the_limit_refuses_with_the_local_period_end(
    guard: BudgetGuard, store: FakeStore, clock: PeriodCutter
) -> None:
    store.write(call(DOLLAR_PUSD), clock)
    exceeded = await guard.check((TOKEN_BUDGET,), NOW)
    assert exceeded is not None
    assert exceeded.budget == TOKEN_BUDGET
    # Taipei is UTC+8: 10:30 UTC on Dec 6 is 18:30 local, so the day ends at 16:00 UTC.
    assert exceeded.period_end == datetime(2026, 12, 6, 16, 0, tzinfo=UTC)


async def test_own_calls_count_before_they_are_written_and_once_after(
    guard: BudgetGuard, store: FakeStore, clock: PeriodCutter
) -> None:
    assert await guard.check((TOKEN_BUDGET,), NOW) is None  # the key is now guarded
    event = call(DOLLAR_PUSD // 2)
    guard.charge(event)
    guard.charge(call(DOLLAR_PUSD // 2))
    assert await guard.check((TOKEN_BUDGET,), NOW) is not None  # pending, not yet in the store

    ledger = guard.ledger
    assert isinstance(ledger, StoreLedger)
    store.write(event, clock)
    ledger.settle([event])
    await ledger.poll()
    spent = await ledger.spent_pusd([("token", "7", "day", clock.bounds("day", NOW)[0])])
    assert spent == [DOLLAR_PUSD]  # one written + one pending: neither lost nor doubled


async def test_a_call_written_during_a_poll_is_never_counted_short(
    store: FakeStore, clock: PeriodCutter
) -> None:
    ledger = StoreLedger(store.read, poll_interval_s=3600)
    key = ("token", "7", "day", clock.bounds("day", NOW)[0])
    assert await ledger.spent_pusd([key]) == [0]
    event = call(300)
    ledger.add(event.event_id, [key], 300)
    # Written and settled while a poll may or may not have seen it: still counted.
    ledger.settle([event])
    assert await ledger.spent_pusd([key]) == [300]
    store.spend[key] = 300
    await ledger.poll()  # this poll began after the settle: it saw the write
    await ledger.poll()
    assert await ledger.spent_pusd([key]) == [300]


async def test_settling_an_unknown_or_replayed_event_changes_nothing(
    store: FakeStore, clock: PeriodCutter
) -> None:
    ledger = StoreLedger(store.read, poll_interval_s=3600)
    key = ("token", "7", "day", clock.bounds("day", NOW)[0])
    event = call(100)
    ledger.add(event.event_id, [key], 100)
    ledger.settle([event])
    ledger.settle([event, call(999)])  # a spool replay of the same batch, a stranger
    await ledger.poll()
    assert await ledger.spent_pusd([key]) == [100 + 0]  # the store read 0: nothing written


async def test_an_unreadable_store_lets_calls_through_and_keeps_the_last_known_spend(
    guard: BudgetGuard, store: FakeStore, clock: PeriodCutter
) -> None:
    store.is_down = True
    assert await guard.check((TOKEN_BUDGET,), NOW) is None  # never read: calls go through
    store.is_down = False
    store.write(call(DOLLAR_PUSD), clock)
    assert await guard.check((TOKEN_BUDGET,), NOW) is not None
    store.is_down = True
    ledger = guard.ledger
    assert isinstance(ledger, StoreLedger)
    await ledger.poll()
    assert await guard.check((TOKEN_BUDGET,), NOW) is not None  # the last known spend holds


async def test_a_new_period_starts_from_zero(
    guard: BudgetGuard, store: FakeStore, clock: PeriodCutter
) -> None:
    store.write(call(DOLLAR_PUSD), clock)
    assert await guard.check((TOKEN_BUDGET,), NOW) is not None
    tomorrow = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)  # local midnight in Taipei
    assert await guard.check((TOKEN_BUDGET,), tomorrow) is None


async def test_calls_without_a_cost_charge_nothing(guard: BudgetGuard, store: FakeStore) -> None:
    event = call(0)
    event.cost_pusd = None
    guard.charge(event)
    assert await guard.check((TOKEN_BUDGET,), NOW) is None


@pytest.fixture
async def redis_ledgers(store: FakeStore) -> AsyncIterator[tuple[RedisLedger, RedisLedger]]:
    """Two processes' ledgers on one Redis (each with its own store fallback)."""
    if not REDIS_URL:
        pytest.skip("set TOKENMANAGER_TEST_REDIS_URL to run against Redis")
    redis = build_redis(REDIS_URL)
    ledgers = tuple(
        RedisLedger(redis, StoreLedger(store.read, poll_interval_s=3600), store.read)
        for _ in range(2)
    )
    for ledger in ledgers:
        await ledger.start()
    yield ledgers[0], ledgers[1]
    for ledger in ledgers:
        await ledger.stop()
    await redis.aclose()


async def test_redis_shares_one_processes_spend_with_another(
    redis_ledgers: tuple[RedisLedger, RedisLedger], store: FakeStore, clock: PeriodCutter
) -> None:
    first, second = redis_ledgers
    subject = uuid.uuid4().hex  # a fresh counter in a shared Redis
    key = ("token", subject, "day", clock.bounds("day", NOW)[0])
    store.spend[key] = 40  # written before Redis knew the counter: seeds it
    assert await first.spent_pusd([key]) == [40]
    assert await second.spent_pusd([key]) == [40]
    first.add("event-1", [key], 60)
    await first._flush_once()  # what its flush task does at once
    assert await second.spent_pusd([key]) == [100]
    assert await first.spent_pusd([key]) == [100]


async def test_redis_counts_a_cost_not_yet_flushed_in_its_own_process(
    redis_ledgers: tuple[RedisLedger, RedisLedger], clock: PeriodCutter
) -> None:
    first, _ = redis_ledgers
    key = ("team", uuid.uuid4().hex, "month", clock.bounds("month", NOW)[0])
    assert await first.spent_pusd([key]) == [0]
    first._unflushed[key] = 25  # added, flush not yet run
    assert await first.spent_pusd([key]) == [25]
