"""The detector loop: reads the raw usage rows of the next time slice (and the rollup
baselines they need), runs every detector, folds the observations into findings, then hands new
and escalated findings to the automatic response and the alerts.

Work per run is bounded: a slice covers at most `max_slice_s` and `max_rows` rows, and the
detectors read only the tokens and routes seen in it. A failing alert or response never stops
detection; late rows (older than the cursor when they arrive) are not looked at again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.calendar import period_bounds
from tokenmanager.clock import utcnow
from tokenmanager.security import detectors
from tokenmanager.security.detectors import Sighting, UsageRow, floor_time
from tokenmanager.security.models import (
    DetectorKind,
    Finding,
    Observation,
    RunResult,
    Severity,
    Thresholds,
)
from tokenmanager.storage import security as security_sql
from tokenmanager.storage import spend as spend_sql
from tokenmanager.storage.database import Database

logger = logging.getLogger(__name__)

CURSOR = "usage"
OnFinding = Callable[[Finding], Awaitable[None]]


class SecurityMonitor:
    def __init__(
        self,
        database: Database,
        *,
        thresholds: Thresholds | None = None,
        lag_s: float = 30.0,
        max_slice_s: float = 3600.0,
        max_rows: int = 50_000,
        initial_lookback_s: float = 3600.0,
        zone: ZoneInfo = ZoneInfo("UTC"),
    ) -> None:
        self._db = database
        self._zone = zone  # budget periods are calendar days and months here
        self.thresholds = thresholds or Thresholds()
        self._lag = timedelta(seconds=lag_s)
        self._max_slice = timedelta(seconds=max_slice_s)
        self._max_rows = max_rows
        self._initial_lookback = timedelta(seconds=initial_lookback_s)
        self.on_finding: list[OnFinding] = []
        self._active_day: datetime | None = None
        self._active_by_token: dict[int, list[datetime]] = {}

    async def start_at(self, position: datetime) -> None:
        """Move the cursor: the next run reads rows from `position` on."""
        async with self._db.write() as connection:
            await security_sql.write_cursor(connection, CURSOR, position)

    async def run_once(self, now: datetime | None = None) -> RunResult:
        """Detect over the next slice and advance the cursor past it."""
        now = now or utcnow()
        async with self._db.read() as connection:
            start = await security_sql.read_cursor(connection, CURSOR)
            start = start or now - self._initial_lookback
            end = min(now - self._lag, start + self._max_slice)
            # Budgets are judged on every run, whether or not there is a new slice to read.
            budget_observations = await self._observe_budgets(connection, now)
            if end <= start:
                if not budget_observations:
                    return RunResult(start, start, is_caught_up=True)
                rows: Sequence[UsageRow] = []
                observations: list[Observation] = []
                teams: dict[int, str] = {}
                sightings: list[Sighting] = []
                end = start
            else:
                rows = await security_sql.read_usage_rows(
                    connection, start, end, self._max_rows + 1
                )
                if len(rows) > self._max_rows:
                    end = rows[self._max_rows].used_at
                    rows = [row for row in rows if row.used_at < end]
                    if not rows:  # more rows than max_rows share one timestamp: take them all
                        end += timedelta(microseconds=1)
                        rows = await security_sql.read_usage_rows(connection, start, end)
                observations, teams, sightings = await self._observe(connection, rows, start)
            observations += budget_observations
        result = RunResult(start, end, rows=len(rows), observations=len(observations))
        result.is_caught_up = end >= now - self._lag - timedelta(seconds=1) or end == start
        changed = await self._store(observations, teams, sightings, end, result)
        for finding in changed:
            for handler in self.on_finding:
                try:
                    await handler(finding)
                except Exception as exc:  # noqa: BLE001 - responses and alerts never stop detection
                    logger.warning("security: finding handler failed (%s)", type(exc).__name__)
        return result

    async def run_until_caught_up(
        self,
        now: datetime | None = None,
        *,
        after_each: Callable[[RunResult], None] | None = None,
    ) -> list[RunResult]:
        """Runs until the cursor reaches `now`; `after_each` sees every run's result (to show
        progress, or to raise and stop between runs)."""
        results = []
        while True:
            result = await self.run_once(now)
            results.append(result)
            if after_each is not None:
                after_each(result)
            if result.is_caught_up:
                return results

    async def run_periodically(self, interval_s: float) -> None:
        """Run forever (a control-plane background task); failures are logged and retried."""
        while True:
            try:
                result = await self.run_once()
                if not result.is_caught_up:
                    continue  # behind: read the next slice at once
            except Exception as exc:  # noqa: BLE001 - try again at the next interval
                logger.warning("security detector run failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def _observe(
        self, connection: AsyncConnection, rows: Sequence[UsageRow], start: datetime
    ) -> tuple[list[Observation], dict[int, str], list[Sighting]]:
        """Every detector's observations for the slice starting at `start`, the teams of the
        tokens in it, and the sightings to store."""
        th = self.thresholds
        # Windowed detectors see the burst window before the slice, and the whole fixed route
        # window the slice starts in.
        context_start = min(
            start - timedelta(seconds=th.burst_window_s), floor_time(start, th.route_window_s)
        )
        context = await security_sql.read_usage_rows(
            connection, context_start, start, self._max_rows, keep_newest=True
        )
        windowed = [*context, *rows]
        observations = detectors.detect_bursts(windowed, start, th)

        routes = sorted({row.route_path for row in windowed if row.route_path})
        baseline_end = floor_time(context_start, 86400)  # whole days: the daily rollup
        baselines = await security_sql.read_route_baselines(
            connection, routes, baseline_end - timedelta(days=th.route_baseline_days), baseline_end
        )
        observations += detectors.detect_route_spikes(windowed, start, baselines, th)

        token_ids = sorted({row.token_id for row in rows if row.token_id is not None})
        facts = await security_sql.read_token_facts(connection, token_ids)
        previous = {i: f.previous_token_hash for i, f in facts.items() if f.previous_token_hash}
        observations += detectors.detect_stale_credentials(rows, previous)

        known, first_seen = await security_sql.read_sightings(connection, token_ids)
        new_sightings, sightings = detectors.detect_new_sightings(rows, known, first_seen, th)
        observations += new_sightings

        touched = {
            (row.token_id, floor_time(row.used_at, 3600))
            for row in rows
            if row.token_id is not None and row.is_served
        }
        if touched:
            hours = sorted({hour for _, hour in touched})
            served_ids = sorted({token_id for token_id, _ in touched})
            current = await security_sql.read_hour_calls(connection, served_ids, hours)
            hour_calls = {key: current.get(key, 0) for key in touched}
            sample_hours = [h for hour in hours for _, h in detectors.baseline_hours(hour, th)]
            history = await security_sql.read_hour_calls(connection, served_ids, sample_hours)
            observations += detectors.detect_volume(hour_calls, history, first_seen, th)
            day = floor_time(hours[0], 86400)
            active = await self._active_hours(connection, served_ids, day)
            observations += detectors.detect_off_hours(hour_calls, active, th)
        return observations, {i: f.team_id for i, f in facts.items()}, sightings

    async def _observe_budgets(
        self, connection: AsyncConnection, now: datetime
    ) -> list[Observation]:
        """Budgets reached in the current periods (read each run: spend is a small table)."""
        subjects = await spend_sql.read_budgeted_subjects(connection)
        if not subjects:
            return []
        bounds = {period: period_bounds(period, now, self._zone) for period in ("day", "month")}
        spend = await spend_sql.read_period_spend(
            connection, {period: start for period, (start, _) in bounds.items()}
        )
        return detectors.detect_budget_thresholds(subjects, spend, bounds, now, self.thresholds)

    async def _active_hours(
        self, connection: AsyncConnection, token_ids: list[int], day: datetime
    ) -> dict[int, list[datetime]]:
        """Each token's used hours in the `usual_hours_days` before `day`. They change only
        when the day does, so they are kept for the day: a run a minute reads only new
        tokens' (the largest query of a run otherwise)."""
        if day != self._active_day:
            self._active_day, self._active_by_token = day, {}
        missing = [token_id for token_id in token_ids if token_id not in self._active_by_token]
        if missing:
            since = day - timedelta(days=self.thresholds.usual_hours_days)
            read = await security_sql.read_active_hours(connection, missing, since, day)
            for token_id in missing:
                self._active_by_token[token_id] = read.get(token_id, [])
        return {token_id: self._active_by_token[token_id] for token_id in token_ids}

    async def _store(
        self,
        observations: list[Observation],
        teams: dict[int, str],
        sightings: list[Sighting],
        end: datetime,
        result: RunResult,
    ) -> list[Finding]:
        """Fold observations into findings and advance the cursor, in one transaction.
        Returns the findings that are new or whose severity rose."""
        changed_ids = []
        async with self._db.write() as connection:
            await security_sql.write_sightings(connection, sightings)
            # A budget threshold is reported once per period: an existing finding (even a
            # resolved one) with its fingerprint means it was already.
            reported = await security_sql.read_known_fingerprints(
                connection,
                [o.fingerprint for o in observations if o.kind is DetectorKind.BUDGET_THRESHOLD],
            )
            for observation in observations:
                if observation.fingerprint in reported:
                    continue
                existing = await security_sql.read_open_finding(connection, observation.fingerprint)
                if existing is None:
                    team_id = observation.team_id or (
                        teams.get(observation.token_id) if observation.token_id else None
                    )
                    finding_id = await security_sql.create_finding(connection, observation, team_id)
                    result.created.append(finding_id)
                    changed_ids.append(finding_id)
                    continue
                severity = max(Severity(existing.severity), observation.severity, key=_rank)
                await security_sql.update_finding(connection, existing, observation, severity)
                result.updated.append(existing.id)
                if severity != existing.severity:
                    changed_ids.append(existing.id)
            await security_sql.write_cursor(connection, CURSOR, end)
            changed = [await security_sql.read_finding(connection, i) for i in changed_ids]
        return [finding for finding in changed if finding is not None]


def _rank(severity: Severity) -> int:
    return severity.rank
