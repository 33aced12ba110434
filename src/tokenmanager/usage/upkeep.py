"""Keeping usage data in shape: retention (raw rows for `raw_days`, rollups for `rollup_days`)
and rebuilding the rollups from the raw rows. The control plane prunes once an hour;
`tokenmanager usage prune` and `tokenmanager rollup rebuild` do it on demand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tokenmanager.clock import utcnow
from tokenmanager.storage import maintenance
from tokenmanager.storage.database import Database
from tokenmanager.usage.rollup import day_of

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class PruneResult:
    raw_rows: int
    rollup_rows: int


class UsageUpkeep:
    def __init__(self, database: Database, *, raw_days: int, rollup_days: int) -> None:
        self._db = database
        self._raw_days = raw_days
        self._rollup_days = rollup_days

    async def prune(self, now: datetime | None = None) -> PruneResult:
        """Delete raw rows and rollup rows past their retention, in short transactions."""
        now = now or utcnow()
        raw = await maintenance.delete_raw_before(self._db, now - timedelta(days=self._raw_days))
        rollup = await maintenance.delete_rollups_before(
            self._db, day_of(now - timedelta(days=self._rollup_days))
        )
        return PruneResult(raw, rollup)

    async def days_to_rebuild(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[datetime]:
        """The UTC days `rebuild` would recompute: those with raw rows in [since, until), and
        only days wholly inside the raw retention (an older day's raw rows may be gone, or
        partly gone, and its rollup is all that is left of it)."""
        async with self._db.read() as connection:
            first, last = await maintenance.raw_span(connection)
        if first is None or last is None:
            return []
        raw_cutoff = utcnow() - timedelta(days=self._raw_days)
        first_whole_day = day_of(raw_cutoff - timedelta(microseconds=1)) + timedelta(days=1)
        day = max(day_of(since or first), first_whole_day)
        end = day_of(until - timedelta(microseconds=1)) if until else day_of(last)
        days = []
        while day <= end:
            days.append(day)
            day += timedelta(days=1)
        return days

    async def rebuild(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        on_day: Callable[[datetime, int], None] | None = None,
    ) -> int:
        """Recompute the rollups of `days_to_rebuild` from the raw rows, one transaction per
        day. Returns the raw rows read."""
        total = 0
        for day in await self.days_to_rebuild(since, until):
            async with self._db.write() as connection:
                count = await maintenance.rebuild_rollup_day(connection, day)
            total += count
            if on_day is not None:
                on_day(day, count)
        return total

    async def prune_periodically(self, interval_s: float = PRUNE_INTERVAL_S) -> None:
        """Run forever (a control-plane background task); failures are logged and retried."""
        while True:
            try:
                result = await self.prune()
                if result.raw_rows or result.rollup_rows:
                    logger.info(
                        "retention: deleted %d raw and %d rollup rows",
                        result.raw_rows,
                        result.rollup_rows,
                    )
            except Exception as exc:  # noqa: BLE001 - try again at the next interval
                logger.warning("retention run failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval_s)
