"""Budgets at the gateway: a call whose token or team has spent its budget for the current
period is refused before it is forwarded.

Spend is shared by every gateway process, in one of two ways:

- Redis (when configured): one MGET per call of a budgeted token, and the cost of each call
  added with INCRBY right after it. Overspend is at most the cost of the calls already in flight
  when the limit was reached.
- The store: every recorder writes `usage_spend` in the same transaction as its usage batch;
  each process reads the spend of the budgets it guards every poll interval and adds its own
  calls not yet written. Other processes' calls are seen within flush interval + poll interval
  (0.2 s + 0.5 s by default), so overspend is at most what they spend in that lag.

Periods are calendar days or months in TOKENMANAGER_TIMEZONE. While the store (or Redis) cannot
be read, the last known spend is used; a budget never read at all lets calls through (the
gateway stays up, as it does for cached tokens) and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tokenmanager.calendar import PERIODS
from tokenmanager.pricing.money import micro_to_pusd
from tokenmanager.usage.costs import PeriodCutter, SpendKey, spend_subjects
from tokenmanager.usage.events import UsageEvent

logger = logging.getLogger(__name__)

# Redis counters outlive their period a little, for the self-service view and slow clocks.
_KEY_TTL_S = {"day": 3 * 86_400, "month": 33 * 86_400}
MAX_PENDING_EVENTS = 200_000
# A budget nobody asked about for this long is no longer polled (its token went quiet).
FORGET_AFTER_S = 120.0

ReadSpend = Callable[[list[SpendKey]], Awaitable[dict[SpendKey, int]]]


@dataclass(frozen=True, slots=True)
class GuardedBudget:
    scope: str  # "token" | "team"
    subject: str
    limit_micro_usd: int
    period: str  # "day" | "month"


@dataclass(frozen=True, slots=True)
class Exceeded:
    """The budget that is spent, and when its period ends (UTC)."""

    budget: GuardedBudget
    period_end: datetime


def spend_keys(
    token_id: int, team_id: str | None, clock: PeriodCutter, at: datetime
) -> list[SpendKey]:
    """Every spend counter a call made at `at` adds to: token and team, day and month (what
    the store's usage_spend adds too)."""
    return [
        (scope, subject, period, clock.start(period, at))
        for period in PERIODS
        for scope, subject in spend_subjects(token_id, team_id)
    ]


class SpendLedger(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def spent_pusd(self, keys: list[SpendKey]) -> list[int | None]:
        """Spend per key; None when it could never be read."""

    def add(self, event_id: str, keys: list[SpendKey], cost_pusd: int) -> None:
        """A finished call's cost (never blocks)."""

    def settle(self, events: Sequence[UsageEvent]) -> None:
        """These events are now in the store."""


class StoreLedger:
    """Spend from the store's `usage_spend`, polled, plus this process's calls not yet written.

    A call's cost is "pending" from `add` until the batch holding its event is written
    (`settle`). An event settled after a poll began may or may not be in what that poll read,
    so it stays counted until the next poll begins: never under the true spend, and over it
    only for the few milliseconds a poll takes.
    """

    def __init__(self, read_spend: ReadSpend, *, poll_interval_s: float) -> None:
        self._read_spend = read_spend
        self._poll_interval_s = poll_interval_s
        self._stored: dict[SpendKey, int] = {}
        self._last_asked: dict[SpendKey, float] = {}
        self._pending_events: dict[str, tuple[list[SpendKey], int]] = {}
        self._pending: dict[SpendKey, int] = {}
        # Costs settled per poll generation, and their sum per key (read on every check).
        self._settled: dict[int, dict[SpendKey, int]] = {}
        self._settled_sum: dict[SpendKey, int] = {}
        self._generation = 0
        self._first_reads: dict[SpendKey, asyncio.Future[None]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_loop(), name="budget-spend-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def spent_pusd(self, keys: list[SpendKey]) -> list[int | None]:
        now = time.monotonic()
        for key in keys:
            self._last_asked[key] = now
        unread = [key for key in keys if key not in self._stored]
        if unread:
            await self._read_first(unread)
        return [self._local_total(key) for key in keys]

    def _local_total(self, key: SpendKey) -> int | None:
        stored = self._stored.get(key)
        if stored is None:
            return None
        return stored + self._pending.get(key, 0) + self._settled_sum.get(key, 0)

    def add(self, event_id: str, keys: list[SpendKey], cost_pusd: int) -> None:
        if len(self._pending_events) >= MAX_PENDING_EVENTS:
            # Only reached when the store has been unwritable for a long time; the oldest
            # calls' cost then counts through the store once their spool is replayed.
            oldest = next(iter(self._pending_events))
            self._unpend(*self._pending_events.pop(oldest))
        self._pending_events[event_id] = (keys, cost_pusd)
        for key in keys:
            self._pending[key] = self._pending.get(key, 0) + cost_pusd

    def settle(self, events: Sequence[UsageEvent]) -> None:
        for event in events:
            entry = self._pending_events.pop(event.event_id, None)
            if entry is not None:
                self._unpend(*entry)
                keys, cost_pusd = entry
                settled = self._settled.setdefault(self._generation, {})
                for key in keys:
                    settled[key] = settled.get(key, 0) + cost_pusd
                    self._settled_sum[key] = self._settled_sum.get(key, 0) + cost_pusd

    def _unpend(self, keys: list[SpendKey], cost_pusd: int) -> None:
        for key in keys:
            left = self._pending.get(key, 0) - cost_pusd
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    async def _read_first(self, keys: list[SpendKey]) -> None:
        """One store read per key however many calls ask at once."""
        waiting = [self._first_reads[key] for key in keys if key in self._first_reads]
        missing = [key for key in keys if key not in self._first_reads]
        if missing:
            future = asyncio.get_running_loop().create_future()
            for key in missing:
                self._first_reads[key] = future
            try:
                self._stored.update(await self._read(missing))
            finally:
                for key in missing:
                    self._first_reads.pop(key, None)
                future.set_result(None)
        for other in waiting:
            await asyncio.shield(other)

    async def _read(self, keys: list[SpendKey]) -> dict[SpendKey, int]:
        try:
            values = await self._read_spend(keys)
        except Exception as exc:  # noqa: BLE001 - the last known spend keeps serving
            if not self._failing:
                logger.warning("cannot read budget spend from the store (%s)", type(exc).__name__)
            self._failing = True
            return {}
        if self._failing:
            logger.warning("reading budget spend from the store again")
        self._failing = False
        return {key: values.get(key, 0) for key in keys}

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            await self.poll()

    async def poll(self) -> None:
        """Read every guarded key again; forget the ones nobody asked about lately (quiet
        tokens, ended periods)."""
        cutoff = time.monotonic() - FORGET_AFTER_S
        for key in [key for key, at in self._last_asked.items() if at < cutoff]:
            del self._last_asked[key]
            self._stored.pop(key, None)
        if not self._stored:
            return
        self._generation += 1
        generation = self._generation
        values = await self._read(list(self._stored))
        if not values:
            return
        self._stored.update(values)
        for old in [g for g in self._settled if g < generation]:
            for key, cost_pusd in self._settled.pop(old).items():
                left = self._settled_sum[key] - cost_pusd
                if left:
                    self._settled_sum[key] = left
                else:
                    del self._settled_sum[key]


class RedisLedger:
    """Spend counters in Redis, shared by every gateway process; the store seeds a counter the
    first time it is needed (after a Redis restart too). Falls back to `store` while Redis fails.
    """

    _INCREMENT_EXISTING = (
        "for i, key in ipairs(KEYS) do "
        "if redis.call('EXISTS', key) == 1 then "
        "redis.call('INCRBY', key, ARGV[i]) end end return 0"
    )

    def __init__(self, redis: Any, store: StoreLedger, read_spend: ReadSpend) -> None:
        self._redis = redis
        self._store = store
        self._read_spend = read_spend
        self._unflushed: dict[SpendKey, int] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        await self._store.start()
        self._flusher = asyncio.create_task(self._flush_loop(), name="budget-spend-redis")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush_once()
        await self._store.stop()

    @staticmethod
    def redis_key(key: SpendKey) -> str:
        scope, subject, period, start = key
        return f"tm:spend:{scope}:{subject}:{period}:{int(start.timestamp())}"

    async def spent_pusd(self, keys: list[SpendKey]) -> list[int | None]:
        names = [self.redis_key(key) for key in keys]
        try:
            values = await self._redis.mget(names)
            missing = [key for key, value in zip(keys, values, strict=True) if value is None]
            if missing:
                await self._seed(missing)
                values = await self._redis.mget(names)
        except Exception as exc:  # noqa: BLE001 - the store's view serves meanwhile
            self._note_failure(exc)
            return await self._store.spent_pusd(keys)
        self._note_success()
        return [
            None if value is None else int(value) + self._unflushed.get(key, 0)
            for key, value in zip(keys, values, strict=True)
        ]

    async def _seed(self, keys: list[SpendKey]) -> None:
        stored = await self._read_spend(keys)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(self.redis_key(key), stored.get(key, 0), nx=True, ex=_KEY_TTL_S[key[2]])
            await pipe.execute()

    def add(self, event_id: str, keys: list[SpendKey], cost_pusd: int) -> None:
        self._store.add(event_id, keys, cost_pusd)
        for key in keys:
            self._unflushed[key] = self._unflushed.get(key, 0) + cost_pusd
        self._wake.set()

    def settle(self, events: Sequence[UsageEvent]) -> None:
        self._store.settle(events)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush_once()

    async def _flush_once(self) -> None:
        """Add what accumulated since the last flush, in one round trip: under load, the calls
        that finish while one flush is on the wire go together in the next."""
        if not self._unflushed:
            return
        batch, self._unflushed = self._unflushed, {}
        try:
            await self._redis.eval(
                self._INCREMENT_EXISTING,
                len(batch),
                *(self.redis_key(key) for key in batch),
                *batch.values(),
            )
        except Exception as exc:  # noqa: BLE001 - the store has every cost anyway
            self._note_failure(exc)
            return
        self._note_success()

    def _note_failure(self, exc: Exception) -> None:
        if not self._failing:
            logger.warning(
                "budget spend in Redis unavailable (%s); using the store", type(exc).__name__
            )
        self._failing = True

    def _note_success(self) -> None:
        if self._failing:
            logger.warning("budget spend in Redis available again")
        self._failing = False


class BudgetGuard:
    """Checks a token's budgets before a call and charges the call's cost after it."""

    def __init__(self, ledger: SpendLedger, clock: PeriodCutter) -> None:
        self.ledger = ledger
        self.clock = clock
        self._never_read_logged = False

    async def check(self, budgets: tuple[GuardedBudget, ...], now: datetime) -> Exceeded | None:
        """The first budget whose period's spend has reached its limit, or None."""
        bounds = [self.clock.bounds(budget.period, now) for budget in budgets]
        keys = [
            (budget.scope, budget.subject, budget.period, start)
            for budget, (start, _) in zip(budgets, bounds, strict=True)
        ]
        spent = await self.ledger.spent_pusd(keys)
        for budget, (_, end), spent_pusd in zip(budgets, bounds, spent, strict=True):
            if spent_pusd is None:
                if not self._never_read_logged:
                    logger.warning(
                        "budget spend unknown (store unreachable): letting calls through"
                    )
                    self._never_read_logged = True
                continue
            if spent_pusd >= micro_to_pusd(budget.limit_micro_usd):
                return Exceeded(budget, end)
        return None

    def charge(self, event: UsageEvent) -> None:
        if event.cost_pusd is None or event.cost_pusd <= 0 or event.token_id is None:
            return
        keys = spend_keys(event.token_id, event.team_id, self.clock, event.used_at)
        self.ledger.add(event.event_id, keys, event.cost_pusd)
