"""A labelled, seeded synthetic usage history for evaluating the detectors: normal traffic for a
set of tokens over `days` days (office-hours, round-the-clock and nightly-batch tokens, a few
routes with their own latency and error rates) with optional anomalies of each detector kind
injected near its end, each recorded as a `Label`. `score` turns findings into precision and
recall per detector.

Built here because no shared synthetic-history generator existed when the detectors were
written; the injectors are plain functions over the event list, and `PlannedAnomaly` plants
them in a `tokenmanager.usage.synthetic` plan (`tokenmanager usage generate --inject`). Pure
except `store_events`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tokenmanager.security.detectors import floor_time
from tokenmanager.security.models import DetectorKind, Finding
from tokenmanager.storage.database import Database
from tokenmanager.storage.usage import insert_usage_events
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.synthetic import HOUR, Anomaly, Injection, TrafficPlan, event_id_at

MATCH_SLACK = timedelta(hours=1)
Injector = Callable[["Scenario", random.Random], None]
_AGENTS = ("python-requests/2.{v}.0", "n8n/1.{v}.2", "OpenAI/Python 1.{v}.0", "curl/8.{v}.1",
           "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/12{v}.0.0.0 Safari/537.36")  # fmt: skip
# route: (median latency ms, server error rate)
ROUTES = {"/api/openai": (320.0, 0.01), "/api/aws": (90.0, 0.005), "/api/search": (150.0, 0.01)}


@dataclass(frozen=True, slots=True)
class SyntheticToken:
    """A real token (already issued in the store) the history is generated for."""

    token_id: int
    token_hash: str


@dataclass(frozen=True, slots=True)
class TokenProfile:
    token: SyntheticToken
    schedule: str  # "office" (weekdays 07-17 UTC), "always", "nightly" (01-03 UTC)
    calls_per_hour: float
    ips: tuple[str, ...]
    agent: str  # a template with {v} for the version
    routes: tuple[str, ...]
    # route: (median latency ms, server error rate); ROUTES when None
    route_figures: Mapping[str, tuple[float, float]] | None = None

    def rate_at(self, hour: datetime) -> float:
        if self.schedule == "office":
            is_on = hour.weekday() < 5 and 7 <= hour.hour <= 17
            return self.calls_per_hour if is_on else 0.0
        if self.schedule == "nightly":
            return self.calls_per_hour if 1 <= hour.hour <= 3 else 0.0
        return self.calls_per_hour * (0.75 + 0.25 * math.sin(2 * math.pi * hour.hour / 24))


@dataclass(frozen=True, slots=True)
class Label:
    """One injected anomaly: the detector that should report it, its subject and its span."""

    kind: DetectorKind
    start: datetime
    end: datetime
    token_id: int | None = None
    route_path: str | None = None
    ip_address: str | None = None

    def is_matched_by(self, finding: Finding) -> bool:
        return (
            finding.kind == self.kind
            and (self.token_id is None or finding.token_id == self.token_id)
            and (self.route_path is None or finding.route_path == self.route_path)
            and (self.ip_address is None or finding.ip_address == self.ip_address)
            and finding.first_seen <= self.end + MATCH_SLACK
            and finding.last_seen >= self.start - MATCH_SLACK
        )


@dataclass(slots=True)
class Scenario:
    start: datetime
    end: datetime
    profiles: list[TokenProfile]
    events: list[UsageEvent] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    # Tokens the caller must rotate (grace_secret_use) once the history is stored.
    tokens_to_rotate: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DetectorScore:
    true_positives: int
    false_positives: int
    missed: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.missed
        return self.true_positives / expected if expected else 1.0


def build_profiles(tokens: Sequence[SyntheticToken], rng: random.Random) -> list[TokenProfile]:
    """Every third token works office hours, one in six runs nightly batches, the rest run
    round the clock; each has its home network, its client and one or two routes."""
    profiles = []
    route_names = list(ROUTES)
    for index, token in enumerate(tokens):
        schedule = ("always", "office", "always", "office", "office", "nightly")[index % 6]
        if index % 7 == 6:
            home = [f"2001:db8:{index:x}::{host}" for host in (10, 11)]
        else:
            home = [f"81.{20 + index}.{rng.randint(1, 250)}.{host}" for host in (10, 11, 12)]
        first_route = route_names[index % len(route_names)]
        second_route = route_names[(index + 1) % len(route_names)]
        routes = (first_route, second_route) if index % 2 else (first_route,)
        profiles.append(
            TokenProfile(
                token=token,
                schedule=schedule,
                calls_per_hour=rng.uniform(10.0, 30.0),
                ips=tuple(home),
                agent=_AGENTS[index % len(_AGENTS)],
                routes=routes,
            )
        )
    return profiles


def _call(
    rng: random.Random,
    profile: TokenProfile,
    used_at: datetime,
    *,
    status: int | None = None,
    latency_ms: float | None = None,
    **overrides: object,
) -> UsageEvent:
    route = rng.choice(profile.routes)
    median_ms, error_rate = (profile.route_figures or ROUTES)[route]
    if status is None:
        roll = rng.random()
        status = rng.choice((500, 502)) if roll < error_rate else 200
        if error_rate <= roll < error_rate + 0.01:
            status = rng.choice((400, 404))
    if latency_ms is None:
        latency_ms = rng.lognormvariate(math.log(median_ms), 0.4)
    event = UsageEvent(
        token_hash=profile.token.token_hash,
        token_id=profile.token.token_id,
        route_path=route,
        used_at=used_at,
        response_status=status,
        response_time_ms=max(1, round(latency_ms)),
        ip_address=rng.choice(profile.ips),
        user_agent=profile.agent.format(v=rng.randint(0, 9)),
        request_method="POST",
        failure_kind="upstream_error" if status >= 500 else None,
    )
    for name, value in overrides.items():
        setattr(event, name, value)
    return event


def build_scenario(
    tokens: Sequence[SyntheticToken],
    *,
    end: datetime,
    days: int = 30,
    seed: int = 7,
    inject: Collection[DetectorKind] = (),
) -> Scenario:
    """`days` of normal traffic up to `end` (exclusive), plus the anomalies in `inject`, each
    placed in the last four days on a token or route of its own. Needs at least 9 tokens."""
    if len(tokens) < 9:
        raise ValueError("the scenario needs at least 9 tokens")
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    end = floor_time(end, 3600)
    start = end - timedelta(days=days)
    profiles = build_profiles(tokens, rng)
    scenario = Scenario(start, end, profiles)
    for profile in profiles:
        hour = start
        while hour < end:
            rate = profile.rate_at(hour)
            moment = hour
            while rate > 0:
                moment += timedelta(seconds=rng.expovariate(rate / 3600))
                if moment >= hour + timedelta(hours=1):
                    break
                scenario.events.append(_call(rng, profile, moment))
            hour += timedelta(hours=1)
    for kind in DetectorKind:
        if kind in inject:
            _INJECTORS[kind](scenario, rng)
    scenario.events.sort(key=lambda event: event.used_at)
    return scenario


def _active_hour(profile: TokenProfile, scenario: Scenario, hours_back: int) -> datetime:
    """The latest hour at least `hours_back` hours before the end in which the token is busy."""
    hour = scenario.end - timedelta(hours=hours_back)
    while profile.rate_at(hour) < 10:
        hour -= timedelta(hours=1)
    return hour


def _spread(hour: datetime, count: int, span_s: float, rng: random.Random) -> list[datetime]:
    return sorted(hour + timedelta(seconds=rng.uniform(0, span_s)) for _ in range(count))


def _inject_volume(scenario: Scenario, rng: random.Random) -> None:
    profile = scenario.profiles[0]
    hour = _active_hour(profile, scenario, 30)
    extra = max(250, round(10 * profile.rate_at(hour)))
    for moment in _spread(hour, extra, 3599, rng):
        scenario.events.append(_call(rng, profile, moment, status=200))
    scenario.labels.append(
        Label(DetectorKind.VOLUME_SPIKE, hour, hour + timedelta(hours=1), profile.token.token_id)
    )


def _inject_new_network(scenario: Scenario, rng: random.Random) -> None:
    profile = scenario.profiles[1]
    hour = _active_hour(profile, scenario, 40)
    moments = _spread(hour, 6, 3000, rng)
    for moment in moments:
        scenario.events.append(_call(rng, profile, moment, status=200, ip_address="45.77.3.19"))
    scenario.labels.append(
        Label(DetectorKind.NEW_NETWORK, moments[0], moments[-1], profile.token.token_id)
    )


def _inject_new_agent(scenario: Scenario, rng: random.Random) -> None:
    profile = scenario.profiles[2]
    hour = _active_hour(profile, scenario, 50)
    moments = _spread(hour, 6, 3000, rng)
    for moment in moments:
        scenario.events.append(
            _call(rng, profile, moment, status=200, user_agent="Go-http-client/1.1")
        )
    scenario.labels.append(
        Label(DetectorKind.NEW_USER_AGENT, moments[0], moments[-1], profile.token.token_id)
    )


def _inject_auth_burst(scenario: Scenario, rng: random.Random) -> None:
    """Credential stuffing: one address tries 150 made-up tokens within three minutes."""
    start = scenario.end - timedelta(hours=60) + timedelta(minutes=1)
    moments = _spread(start, 150, 180, rng)
    ip_address = "185.220.101.7"
    for moment in moments:
        scenario.events.append(
            UsageEvent(
                token_hash="",
                route_path=None,
                used_at=moment,
                response_status=401,
                response_time_ms=1,
                ip_address=ip_address,
                user_agent="python-httpx/0.27.0",
                request_method="GET",
                error_message="missing or invalid API token",
                failure_kind="not_found",
            )
        )
    scenario.labels.append(
        Label(DetectorKind.AUTH_FAILURE_BURST, moments[0], moments[-1], ip_address=ip_address)
    )


def _refusals(
    scenario: Scenario,
    rng: random.Random,
    profile: TokenProfile,
    moments: list[datetime],
    status: int,
    failure_kind: str,
) -> None:
    for moment in moments:
        scenario.events.append(
            _call(
                rng, profile, moment, status=status, latency_ms=1, failure_kind=failure_kind,
                route_path=None if status == 401 else profile.routes[0],
            )
        )  # fmt: skip


def _inject_rate_limit_burst(scenario: Scenario, rng: random.Random) -> None:
    profile = scenario.profiles[3]
    hour = _active_hour(profile, scenario, 20)
    moments = _spread(hour + timedelta(minutes=5), 80, 240, rng)
    _refusals(scenario, rng, profile, moments, 429, "rate_limited")
    scenario.labels.append(
        Label(DetectorKind.RATE_LIMIT_BURST, moments[0], moments[-1], profile.token.token_id)
    )


def _inject_off_hours(scenario: Scenario, rng: random.Random) -> None:
    profile = scenario.profiles[4]  # an office-hours token
    day = floor_time(scenario.end - timedelta(hours=36), 86400)
    hour = day + timedelta(hours=2)
    moments = _spread(hour, 8, 3000, rng)
    for moment in moments:
        scenario.events.append(_call(rng, profile, moment, status=200))
    scenario.labels.append(
        Label(DetectorKind.OFF_HOURS, moments[0], moments[-1], profile.token.token_id)
    )


def _route_window(scenario: Scenario, route_path: str, hours_back: int) -> datetime:
    """The start of a 15-minute window at a busy hour of the route."""
    hour = scenario.end - timedelta(hours=hours_back)
    while sum(p.rate_at(hour) for p in scenario.profiles if route_path in p.routes) < 30:
        hour -= timedelta(hours=1)
    return hour + timedelta(minutes=15)


def _route_users(scenario: Scenario, route_path: str) -> list[TokenProfile]:
    return [p for p in scenario.profiles if p.routes == (route_path,)]


def _inject_route_errors(scenario: Scenario, rng: random.Random) -> None:
    route_path = "/api/aws"
    window = _route_window(scenario, route_path, 26)
    users = _route_users(scenario, route_path)
    moments = _spread(window, 60, 600, rng)
    for index, moment in enumerate(moments):
        scenario.events.append(
            _call(rng, users[index % len(users)], moment, status=502, route_path=route_path)
        )
    scenario.labels.append(
        Label(DetectorKind.ROUTE_ERROR_SPIKE, moments[0], moments[-1], route_path=route_path)
    )


def _inject_route_latency(scenario: Scenario, rng: random.Random) -> None:
    route_path = "/api/search"
    window = _route_window(scenario, route_path, 45)
    users = _route_users(scenario, route_path)
    moments = _spread(window, 60, 600, rng)
    for index, moment in enumerate(moments):
        scenario.events.append(
            _call(
                rng, users[index % len(users)], moment, status=200, route_path=route_path,
                latency_ms=rng.uniform(2500, 6000),
            )
        )  # fmt: skip
    scenario.labels.append(
        Label(DetectorKind.ROUTE_LATENCY_SPIKE, moments[0], moments[-1], route_path=route_path)
    )


def _inject_grace_use(scenario: Scenario, rng: random.Random) -> None:
    """The token is rotated (by the caller) but its client keeps the old secret: every call
    after the rotation, in the history's last hours, still uses it."""
    profile = scenario.profiles[5]
    scenario.tokens_to_rotate.append(profile.token.token_id)
    hour = _active_hour(profile, scenario, 3)
    moments = _spread(hour, 5, 3000, rng)
    for moment in moments:
        scenario.events.append(_call(rng, profile, moment, status=200))
    scenario.labels.append(
        Label(DetectorKind.GRACE_SECRET_USE, scenario.start, moments[-1], profile.token.token_id)
    )


def _inject_stale(kind: DetectorKind, index: int, failure_kind: str, hours_back: int) -> Injector:
    def inject(scenario: Scenario, rng: random.Random) -> None:
        profile = scenario.profiles[index]
        hour = _active_hour(profile, scenario, hours_back)
        moments = _spread(hour, 5, 3000, rng)
        _refusals(scenario, rng, profile, moments, 401, failure_kind)
        scenario.labels.append(Label(kind, moments[0], moments[-1], profile.token.token_id))

    return inject


# The detectors that read usage rows, and so can be planted in a synthetic history.
# budget_threshold reads budgets and spend instead (tests/security/test_budget_threshold.py).
ANOMALY_KINDS: tuple[DetectorKind, ...] = tuple(
    kind for kind in DetectorKind if kind is not DetectorKind.BUDGET_THRESHOLD
)

_INJECTORS: dict[DetectorKind, Injector] = {
    DetectorKind.VOLUME_SPIKE: _inject_volume,
    DetectorKind.NEW_NETWORK: _inject_new_network,
    DetectorKind.NEW_USER_AGENT: _inject_new_agent,
    DetectorKind.AUTH_FAILURE_BURST: _inject_auth_burst,
    DetectorKind.RATE_LIMIT_BURST: _inject_rate_limit_burst,
    DetectorKind.OFF_HOURS: _inject_off_hours,
    DetectorKind.ROUTE_ERROR_SPIKE: _inject_route_errors,
    DetectorKind.ROUTE_LATENCY_SPIKE: _inject_route_latency,
    DetectorKind.GRACE_SECRET_USE: _inject_grace_use,
    DetectorKind.EXPIRED_TOKEN_USE: _inject_stale(DetectorKind.EXPIRED_TOKEN_USE, 6, "expired", 28),
    DetectorKind.REVOKED_TOKEN_USE: _inject_stale(DetectorKind.REVOKED_TOKEN_USE, 7, "revoked", 33),
}


# -- the same injectors in a usage.synthetic plan ------------------------------------------------

PLAN_KINDS = (
    DetectorKind.VOLUME_SPIKE,
    DetectorKind.NEW_NETWORK,
    DetectorKind.NEW_USER_AGENT,
    DetectorKind.AUTH_FAILURE_BURST,
    DetectorKind.RATE_LIMIT_BURST,
    DetectorKind.EXPIRED_TOKEN_USE,
    DetectorKind.REVOKED_TOKEN_USE,
)
"""What `PlannedAnomaly` can plant in any plan. Not the route kinds (their injectors pick this
module's routes and their users), off_hours (a plan's callers call at every hour, so no hour
is unusual) nor grace_secret_use (the token must be rotated after the history is stored)."""
PLAN_MIN_SPAN = timedelta(days=7)  # injected up to 60 h before the end, after 3 learning days


@dataclass(frozen=True, slots=True)
class PlannedAnomaly:
    """This module's injector for `kind` as a `tokenmanager.usage.synthetic.AnomalyInjector`:
    planted on the plan's caller at `caller_index` (wrapping around) in the plan's last days,
    at the caller's own rate, addresses, client and routes. The events get reproducible ids,
    so the same plan gives the same events."""

    kind: DetectorKind
    caller_index: int = 0

    def inject(self, plan: TrafficPlan, rng: random.Random) -> Injection:
        if self.kind not in PLAN_KINDS:
            raise ValueError(f"{self.kind} cannot be planted in a plan")
        if plan.end - plan.start < PLAN_MIN_SPAN:
            raise ValueError(
                f"planting an anomaly needs a plan of at least {PLAN_MIN_SPAN.days} days"
            )
        caller = plan.callers[self.caller_index % len(plan.callers)]
        share = caller.weight / sum(c.weight for c in plan.callers)
        mean_per_hour = plan.events * share / ((plan.end - plan.start) / HOUR)
        profile = TokenProfile(
            token=SyntheticToken(caller.token_id or 0, caller.token_hash),
            schedule="always",
            # about the caller's busiest hours (twice the mean: the plan's diurnal curve)
            calls_per_hour=max(20.0, 2 * mean_per_hour),
            ips=caller.ip_addresses,
            agent=caller.user_agent.replace("{", "{{").replace("}", "}}"),
            routes=caller.routes or tuple(route.path for route in plan.routes),
            route_figures={
                route.path: (route.median_ms, route.error_rate) for route in plan.routes
            },
        )
        scenario = Scenario(plan.start, floor_time(plan.end, 3600), [profile] * 9)
        _INJECTORS[self.kind](scenario, rng)
        (label,) = scenario.labels
        events = sorted(scenario.events, key=lambda event: event.used_at)
        for event in events:
            if event.token_hash:  # not the made-up tokens of a credential-stuffing burst
                event.token_id = caller.token_id
            event.event_id = event_id_at(event.used_at, rng)
            event.source = caller.source
        subject = label.ip_address or f"token {caller.token_id or caller.token_hash[:12]}"
        anomaly = Anomaly(
            kind=str(self.kind),
            token_hash=caller.token_hash if label.token_id is not None else "",
            token_id=caller.token_id if label.token_id is not None else None,
            start=label.start,
            end=label.end,
            description=f"{self.kind}: {len(events)} planted calls ({subject})",
        )
        return Injection(anomaly, events)


def score(
    findings: Sequence[Finding], labels: Sequence[Label]
) -> dict[DetectorKind, DetectorScore]:
    """Precision and recall per detector: a finding is a true positive when it matches a label
    of its kind (subject and time); a label is missed when no finding matches it."""
    scores = {}
    for kind in ANOMALY_KINDS:
        kind_findings = [f for f in findings if f.kind == kind]
        kind_labels = [label for label in labels if label.kind == kind]
        true_positives = sum(
            1 for f in kind_findings if any(label.is_matched_by(f) for label in kind_labels)
        )
        missed = sum(
            1 for label in kind_labels if not any(label.is_matched_by(f) for f in kind_findings)
        )
        scores[kind] = DetectorScore(true_positives, len(kind_findings) - true_positives, missed)
    return scores


async def store_events(
    database: Database, events: Sequence[UsageEvent], batch_size: int = 5000
) -> None:
    """Insert through the recorder's own path, so the rollups are kept as in production."""
    for offset in range(0, len(events), batch_size):
        async with database.write() as connection:
            await insert_usage_events(connection, events[offset : offset + batch_size])
