"""The detectors: pure functions from usage rows and baselines to observations. They never
query or write; `security.monitor` feeds them and stores what they return.

Each detector names its subject in the observation's fingerprint (kind + token, IP or route),
so a condition that persists across runs updates one finding.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from tokenmanager.pricing.money import format_usd, micro_to_pusd
from tokenmanager.security.models import DetectorKind, Observation, Severity, Thresholds
from tokenmanager.usage.histogram import percentile

AUTH_FAILURE_STATUSES = frozenset({401, 403})
RATE_LIMITED_STATUS = 429
_PRODUCT = re.compile(r"[A-Za-z][A-Za-z0-9._+-]*")
# Browser families, most specific first: every Chromium UA also says "Safari".
_BROWSER_MARKERS = (("edg/", "edge"), ("opr/", "opera"), ("chrome/", "chrome"),
                    ("firefox/", "firefox"), ("safari/", "safari"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The columns of a raw usage row the detectors read."""

    used_at: datetime
    token_id: int | None
    token_hash: str
    route_path: str | None
    response_status: int | None
    response_time_ms: int | None
    ip_address: str | None
    user_agent: str | None
    failure_kind: str | None

    @property
    def is_served(self) -> bool:
        """Answered by the upstream (not refused by the gateway) without a server error."""
        status = self.response_status
        return self.failure_kind is None and status is not None and status < 400


@dataclass(frozen=True, slots=True)
class RouteBaseline:
    calls: int
    server_errors: int
    buckets: tuple[int, ...]
    max_latency_ms: int

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.calls if self.calls else 0.0

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.buckets, 0.95, self.max_latency_ms)


@dataclass(frozen=True, slots=True)
class BudgetedSubject:
    """A token or team with a budget, as the budget detector reads it."""

    scope: str  # "token" | "team"
    subject: str  # the token id (as text) or the team id: usage_spend's `subject`
    name: str
    team_id: str
    token_id: int | None
    budget_micro_usd: int
    period: str  # "day" | "month"


@dataclass(frozen=True, slots=True)
class Sighting:
    token_id: int
    kind: str  # "network" or "agent"
    value: str
    first_seen: datetime
    last_seen: datetime


@functools.lru_cache(maxsize=65536)
def network_of(ip_address: str | None) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to; None if it is not an address."""
    if not ip_address:
        return None
    try:
        address = ipaddress.ip_address(ip_address)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@functools.lru_cache(maxsize=65536)
def user_agent_family(user_agent: str | None) -> str:
    """A user agent without its versions: "python-requests/2.31.0" -> "python-requests",
    a Chrome UA -> "chrome". "(none)" when absent."""
    if not user_agent or not user_agent.strip():
        return "(none)"
    lowered = user_agent.lower()
    if lowered.startswith("mozilla/"):
        for marker, family in _BROWSER_MARKERS:
            if marker in lowered:
                return family
    match = _PRODUCT.search(user_agent)
    return match.group(0).lower()[:100] if match else "(other)"


def floor_time(moment: datetime, step_s: int) -> datetime:
    """The start of the fixed window of `step_s` seconds (a divisor of a day) holding a UTC
    `moment`."""
    offset_s = (moment.hour * 3600 + moment.minute * 60 + moment.second) % step_s
    return moment.replace(microsecond=0) - timedelta(seconds=offset_s)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# -- bursts --------------------------------------------------------------------------------


def _densest_window(hits: Sequence[UsageRow], window_s: int, new_since: datetime) -> slice:
    """The most hits within any `window_s` span that ends at a hit at or after `new_since`
    (hits sorted by time)."""
    window = timedelta(seconds=window_s)
    best = slice(0, 0)
    first = 0
    for last, hit in enumerate(hits):
        while hit.used_at - hits[first].used_at > window:
            first += 1
        if hit.used_at >= new_since and last + 1 - first > best.stop - best.start:
            best = slice(first, last + 1)
    return best


def detect_bursts(
    rows: Sequence[UsageRow], new_since: datetime, thresholds: Thresholds
) -> list[Observation]:
    """401/403 bursts from one IP or against one token, and 429 bursts for one token: the most
    such calls within any `burst_window_s` (a sliding window). `rows` (sorted by time) start a
    window before `new_since` so that a burst split across two runs is counted whole; only
    windows that end at a new row are reported."""
    window_s = thresholds.burst_window_s
    subjects: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    for row in rows:
        if row.response_status in AUTH_FAILURE_STATUSES:
            if row.ip_address:
                subjects[("auth", "ip:" + row.ip_address)].append(row)
            if row.token_id is not None:
                subjects[("auth", f"token:{row.token_id}")].append(row)
        elif row.response_status == RATE_LIMITED_STATUS and row.token_id is not None:
            subjects[("rate", f"token:{row.token_id}")].append(row)
    observations = []
    for (family, subject), all_hits in subjects.items():
        is_auth = family == "auth"
        minimum = thresholds.auth_burst_min_failures if is_auth else thresholds.rate_limit_burst_min
        if len(all_hits) < minimum or all_hits[-1].used_at < new_since:
            continue
        hits = all_hits[_densest_window(all_hits, window_s, new_since)]
        if len(hits) < minimum:
            continue
        kind = DetectorKind.AUTH_FAILURE_BURST if is_auth else DetectorKind.RATE_LIMIT_BURST
        severity = Severity.HIGH if is_auth else Severity.MEDIUM
        if is_auth and len(hits) >= thresholds.auth_burst_critical_failures:
            severity = Severity.CRITICAL
        by_status: dict[str, int] = defaultdict(int)
        for hit in hits:
            by_status[str(hit.response_status)] += 1
        is_ip = subject.startswith("ip:")
        observations.append(
            Observation(
                kind=kind,
                severity=severity,
                fingerprint=f"{kind}:{subject}",
                first_seen=hits[0].used_at,
                last_seen=hits[-1].used_at,
                token_id=None if is_ip else hits[0].token_id,
                ip_address=hits[0].ip_address if is_ip else None,
                evidence={
                    "count": len(hits),
                    "threshold": minimum,
                    "window_s": window_s,
                    "window_start": _iso(hits[0].used_at),
                    "by_status": dict(by_status),
                    "distinct_ips": len({h.ip_address for h in hits if h.ip_address}),
                    "distinct_tokens": len({h.token_hash for h in hits if h.token_hash}),
                },
            )
        )
    return observations


# -- stale credentials ------------------------------------------------------------------------


def detect_stale_credentials(
    rows: Iterable[UsageRow], previous_hashes: dict[int, str]
) -> list[Observation]:
    """Calls with a revoked or expired token (the gateway refused them), and calls that got in
    with a rotated token's old secret during its grace period (`previous_hashes`: token id ->
    the rotated-out hash)."""
    groups: dict[tuple[DetectorKind, int], list[UsageRow]] = defaultdict(list)
    for row in rows:
        if row.token_id is None:
            continue
        if row.failure_kind == "revoked":
            groups[(DetectorKind.REVOKED_TOKEN_USE, row.token_id)].append(row)
        elif row.failure_kind == "expired":
            groups[(DetectorKind.EXPIRED_TOKEN_USE, row.token_id)].append(row)
        elif (
            row.failure_kind is None
            and row.token_hash
            and previous_hashes.get(row.token_id) == row.token_hash
        ):
            groups[(DetectorKind.GRACE_SECRET_USE, row.token_id)].append(row)
    severities = {
        DetectorKind.REVOKED_TOKEN_USE: Severity.HIGH,
        DetectorKind.EXPIRED_TOKEN_USE: Severity.MEDIUM,
        DetectorKind.GRACE_SECRET_USE: Severity.LOW,
    }
    return [
        Observation(
            kind=kind,
            severity=severities[kind],
            fingerprint=f"{kind}:token:{token_id}",
            first_seen=hits[0].used_at,
            last_seen=hits[-1].used_at,
            token_id=token_id,
            evidence={
                "count": len(hits),
                "ips": sorted({h.ip_address for h in hits if h.ip_address})[:10],
                "routes": sorted({h.route_path for h in hits if h.route_path})[:10],
                "is_old_secret": previous_hashes.get(token_id) == hits[0].token_hash,
            },
        )
        for (kind, token_id), hits in groups.items()
    ]


# -- new networks and user agents ----------------------------------------------------------


def detect_new_sightings(
    rows: Iterable[UsageRow],
    known: dict[tuple[int, str], set[str]],
    token_first_seen: dict[int, datetime],
    thresholds: Thresholds,
) -> tuple[list[Observation], list[Sighting]]:
    """First use of a token from a network or user-agent family it has not used before.

    `known` maps (token id, "network" | "agent") to the values seen in earlier runs and
    `token_first_seen` gives each token's first sighting; both are updated in place. A token
    seen for less than `learning_days` is still learning its usual and raises nothing.
    Returns the observations and the sightings to store (first and last seen per value).
    """
    learning = timedelta(days=thresholds.learning_days)
    seen: dict[tuple[int, str, str], list[datetime]] = {}
    new: dict[tuple[int, str, str], list[UsageRow]] = defaultdict(list)
    for row in rows:
        if row.token_id is None or not row.is_served:
            continue
        first = token_first_seen.setdefault(row.token_id, row.used_at)
        is_established = row.used_at - first >= learning
        for kind, value in (("network", network_of(row.ip_address)),
                            ("agent", user_agent_family(row.user_agent))):  # fmt: skip
            if value is None:
                continue
            key = (row.token_id, kind, value)
            span = seen.get(key)
            if span is None:
                seen[key] = [row.used_at, row.used_at]
            else:
                span[0] = min(span[0], row.used_at)
                span[1] = max(span[1], row.used_at)
            values = known.setdefault((row.token_id, kind), set())
            if value not in values:
                values.add(value)
                if is_established:
                    new[key].append(row)
            elif key in new:
                new[key].append(row)
    observations = []
    for (token_id, kind, value), hits in new.items():
        detector = DetectorKind.NEW_NETWORK if kind == "network" else DetectorKind.NEW_USER_AGENT
        observations.append(
            Observation(
                kind=detector,
                severity=Severity.MEDIUM if kind == "network" else Severity.LOW,
                fingerprint=f"{detector}:token:{token_id}:{value}",
                first_seen=hits[0].used_at,
                last_seen=hits[-1].used_at,
                token_id=token_id,
                ip_address=hits[0].ip_address if kind == "network" else None,
                evidence={
                    kind: value,
                    "count": len(hits),
                    "known": sorted(known[(token_id, kind)] - {value})[:20],
                    "user_agent": (hits[0].user_agent or "")[:200],
                },
            )
        )
    sightings = [Sighting(t, k, v, span[0], span[1]) for (t, k, v), span in seen.items()]
    return observations, sightings


# -- volume against the hour-of-week baseline ------------------------------------------------


def baseline_hours(hour: datetime, thresholds: Thresholds) -> list[tuple[int, datetime]]:
    """(weeks back, hour) pairs whose volume forms `hour`'s baseline: the same hour of the week
    and the hours either side, in each of the previous `baseline_weeks` weeks."""
    return [
        (weeks, hour - timedelta(weeks=weeks) + timedelta(hours=offset))
        for weeks in range(1, thresholds.baseline_weeks + 1)
        for offset in (-1, 0, 1)
    ]


def volume_threshold(samples: Sequence[int], thresholds: Thresholds) -> tuple[float, float, float]:
    """(threshold, median, MAD) for samples of hourly volume. The spread is at least the
    Poisson noise of the median, so a steady token does not alarm on ordinary jitter."""
    median = statistics.median(samples)
    mad = statistics.median(abs(sample - median) for sample in samples)
    spread = max(1.4826 * mad, math.sqrt(max(median, 1.0)))
    threshold = max(
        float(thresholds.volume_min_calls),
        median * thresholds.volume_ratio,
        median + thresholds.volume_mad_k * spread,
    )
    return threshold, median, mad


def detect_volume(
    hour_calls: dict[tuple[int, datetime], int],
    history_calls: dict[tuple[int, datetime], int],
    token_first_seen: dict[int, datetime],
    thresholds: Thresholds,
) -> list[Observation]:
    """Served calls of a token in an hour far above its baseline for that hour of the week.
    Hours absent from `history_calls` count as zero; weeks before the token's first sighting do
    not count, and a token with fewer than `min_baseline_weeks` weeks has no baseline yet."""
    observations = []
    for (token_id, hour), calls in hour_calls.items():
        if calls < thresholds.volume_min_calls:
            continue
        first = token_first_seen.get(token_id)
        if first is None:
            continue
        samples = [
            history_calls.get((token_id, sample_hour), 0)
            for weeks, sample_hour in baseline_hours(hour, thresholds)
            if hour - timedelta(weeks=weeks) >= floor_time(first, 3600)
        ]
        if len(samples) < 3 * thresholds.min_baseline_weeks:
            continue
        threshold, median, mad = volume_threshold(samples, thresholds)
        if calls <= threshold:
            continue
        ratio = calls / max(median, 1.0)
        is_critical = ratio >= thresholds.volume_critical_ratio and calls >= 4 * (
            thresholds.volume_min_calls
        )
        observations.append(
            Observation(
                kind=DetectorKind.VOLUME_SPIKE,
                severity=Severity.CRITICAL if is_critical else Severity.HIGH,
                fingerprint=f"{DetectorKind.VOLUME_SPIKE}:token:{token_id}",
                first_seen=hour,
                last_seen=hour + timedelta(hours=1) - timedelta(microseconds=1),
                token_id=token_id,
                evidence={
                    "hour": _iso(hour),
                    "calls": calls,
                    "baseline_median": median,
                    "baseline_mad": mad,
                    "threshold": round(threshold, 1),
                    "ratio": round(ratio, 1),
                    "samples": samples,
                },
            )
        )
    return observations


# -- use outside usual hours ---------------------------------------------------------------


def usual_hours(active_hours: Iterable[datetime], thresholds: Thresholds) -> tuple[set[int], int]:
    """(usual hours of the day, days with any use) from the hours a token was used in."""
    days_by_hour: dict[int, set[date]] = defaultdict(set)
    days: set[date] = set()
    for hour in active_hours:
        day = hour.date()
        days_by_hour[hour.hour].add(day)
        days.add(day)
    usual = {h for h, seen in days_by_hour.items() if len(seen) >= thresholds.usual_hour_min_days}
    return usual, len(days)


def detect_off_hours(
    hour_calls: dict[tuple[int, datetime], int],
    active_hours: dict[int, list[datetime]],
    thresholds: Thresholds,
) -> list[Observation]:
    """Served calls in an hour of the day (UTC) that is not usual for the token, nor next to a
    usual one. `active_hours` holds each token's used hours before the day being judged."""
    observations = []
    usual_by_token: dict[int, tuple[set[int], int]] = {}
    for (token_id, hour), calls in hour_calls.items():
        if calls < thresholds.off_hours_min_calls:
            continue
        if token_id not in usual_by_token:
            usual_by_token[token_id] = usual_hours(active_hours.get(token_id, ()), thresholds)
        usual, days = usual_by_token[token_id]
        if days < thresholds.usual_hours_min_history_days:
            continue
        if any((hour.hour + offset) % 24 in usual for offset in (-1, 0, 1)):
            continue
        observations.append(
            Observation(
                kind=DetectorKind.OFF_HOURS,
                severity=Severity.MEDIUM,
                fingerprint=f"{DetectorKind.OFF_HOURS}:token:{token_id}",
                first_seen=hour,
                last_seen=hour + timedelta(hours=1) - timedelta(microseconds=1),
                token_id=token_id,
                evidence={
                    "hour": _iso(hour),
                    "calls": calls,
                    "usual_hours_utc": sorted(usual),
                    "history_days": days,
                },
            )
        )
    return observations


# -- route error rate and latency ------------------------------------------------------------


def _p95(latencies: list[int]) -> float:
    ordered = sorted(latencies)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)])


def detect_route_spikes(
    rows: Sequence[UsageRow],
    new_since: datetime,
    baselines: dict[str, RouteBaseline],
    thresholds: Thresholds,
) -> list[Observation]:
    """A route's server-error rate or p95 latency in a fixed window far above its baseline
    (the previous `route_baseline_days` days from the hourly rollup)."""
    windows: dict[tuple[str, datetime], list[UsageRow]] = defaultdict(list)
    for row in rows:
        if row.route_path:
            windows[(row.route_path, floor_time(row.used_at, thresholds.route_window_s))].append(
                row
            )
    observations = []
    for (route_path, window), hits in windows.items():
        baseline = baselines.get(route_path)
        if (
            hits[-1].used_at < new_since
            or len(hits) < thresholds.route_min_calls
            or baseline is None
            or baseline.calls < 4 * thresholds.route_min_calls
        ):
            continue
        common = {"window_start": _iso(window), "window_s": thresholds.route_window_s,
                  "calls": len(hits), "baseline_calls": baseline.calls}  # fmt: skip
        errors = sum(1 for h in hits if (h.response_status or 0) >= 500)
        rate = errors / len(hits)
        base_rate = baseline.error_rate
        if rate >= base_rate + thresholds.error_rate_min_increase and rate >= (
            thresholds.error_rate_ratio * base_rate
        ):
            observations.append(
                Observation(
                    kind=DetectorKind.ROUTE_ERROR_SPIKE,
                    severity=Severity.HIGH,
                    fingerprint=f"{DetectorKind.ROUTE_ERROR_SPIKE}:route:{route_path}",
                    first_seen=hits[0].used_at,
                    last_seen=hits[-1].used_at,
                    route_path=route_path,
                    evidence={
                        **common,
                        "server_errors": errors,
                        "error_rate": round(rate, 4),
                        "baseline_error_rate": round(base_rate, 4),
                    },
                )
            )
        latencies = [h.response_time_ms for h in hits if h.response_time_ms is not None]
        base_p95 = baseline.p95_ms
        if len(latencies) < thresholds.route_min_calls or base_p95 is None:
            continue
        p95 = _p95(latencies)
        if p95 >= base_p95 * thresholds.latency_ratio and p95 >= (
            base_p95 + thresholds.latency_min_increase_ms
        ):
            observations.append(
                Observation(
                    kind=DetectorKind.ROUTE_LATENCY_SPIKE,
                    severity=Severity.MEDIUM,
                    fingerprint=f"{DetectorKind.ROUTE_LATENCY_SPIKE}:route:{route_path}",
                    first_seen=hits[0].used_at,
                    last_seen=hits[-1].used_at,
                    route_path=route_path,
                    evidence={**common, "p95_ms": p95, "baseline_p95_ms": round(base_p95, 1)},
                )
            )
    return observations


# -- budgets -------------------------------------------------------------------------------


def detect_budget_thresholds(
    subjects: Iterable[BudgetedSubject],
    spend: dict[tuple[str, str, str], tuple[int, int]],
    bounds: dict[str, tuple[datetime, datetime]],
    now: datetime,
    thresholds: Thresholds,
) -> list[Observation]:
    """Tokens and teams whose spend in the current period reached `budget_warning_percent`
    (medium) or `budget_exhausted_percent` (high) of their budget: one observation per subject,
    for the highest threshold reached. The fingerprint names subject, period and threshold, so
    each is reported once per period.

    `spend` maps (scope, subject, period) to the current period's (cost in pUSD, calls) and
    `bounds` each period to its current (start, end). Nothing spent reports nothing, even on a
    budget of 0.
    """
    levels = (
        (thresholds.budget_exhausted_percent, Severity.HIGH),
        (thresholds.budget_warning_percent, Severity.MEDIUM),
    )
    observations = []
    for subject in subjects:
        cost_pusd, calls = spend.get((subject.scope, subject.subject, subject.period), (0, 0))
        if cost_pusd <= 0:
            continue
        budget_pusd = micro_to_pusd(subject.budget_micro_usd)
        # Integer comparison: cost / budget >= percent / 100, with nothing rounded.
        reached = [(p, s) for p, s in levels if cost_pusd * 100 >= budget_pusd * p]
        if not reached:
            continue
        percent, severity = reached[0]
        start, end = bounds[subject.period]
        observations.append(
            Observation(
                kind=DetectorKind.BUDGET_THRESHOLD,
                severity=severity,
                fingerprint=(
                    f"{DetectorKind.BUDGET_THRESHOLD}:{subject.scope}:{subject.subject}:"
                    f"{subject.period}:{start.date().isoformat()}:{percent}"
                ),
                first_seen=now,
                last_seen=now,
                token_id=subject.token_id,
                team_id=subject.team_id,
                evidence={
                    "scope": subject.scope,
                    "subject": subject.subject,
                    "name": subject.name,
                    "period": subject.period,
                    "period_start": _iso(start),
                    "period_end": _iso(end),
                    "threshold_percent": percent,
                    "budget_usd": format_usd(budget_pusd),
                    "spend_usd": format_usd(cost_pusd),
                    "spent_percent": (cost_pusd * 100 // budget_pusd if budget_pusd else None),
                    "calls": calls,
                },
            )
        )
    return observations
