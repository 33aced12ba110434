"""Synthetic usage history: seeded, pure generation of `UsageEvent`s for the demo, `usage
generate`, benchmarks and tests. No I/O and no global state: the caller decides where the
events go (the store, the ingestion API, a list), and the same plan always gives the same events.

    TrafficPlan(callers, routes, start, end, events, seed, injectors)
      generate_events(plan) -> hourly batches, oldest first: normal traffic (diurnal and weekday
                               pattern, lognormal latency per route, errors of several kinds)
                               with every injector's events merged in by time
      inject(plan)          -> what each injector planted: its `Anomaly` label and its events

A route with `models` is an LLM route: its successful calls carry a model, token counts
(lognormal per model, a few estimated as streams without a usage report) and the cost at the
plan's prices (`PriceBook.cost_for`, the gateway's rule); its refused calls bill 0 tokens, and
calls that never got an answer carry only the requested model. These fields are drawn from a
generator of their own per call, so giving a route models never changes the rest of the traffic.

Anomalies are added by injectors: any object with `inject(plan, rng) -> Injection` (see
`AnomalyInjector`; `BurstFromNewIp` is one). An injector gets its own random generator, seeded
from the plan's seed and its position, so adding one never changes the normal traffic.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.pricing.book import PriceBook
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.pricing.models import Price, compute_cost_pusd, match_price
from tokenmanager.usage.events import UsageEvent

HOUR = timedelta(hours=1)


DEFAULT_PRICE_BOOK = PriceBook.of(DEFAULT_PRICES)


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """One model an LLM route serves: its share of the route's calls and the medians of its
    lognormal token counts (an embedding model completes 0 tokens)."""

    model: str
    weight: float = 1.0
    prompt_median: int = 800
    completion_median: int = 250
    sigma: float = 0.7
    cached_share: float = 0.0  # of the calls, how many read part of the prompt from a cache


@dataclass(frozen=True, slots=True)
class RouteProfile:
    """How one route behaves: lognormal latency around `median_ms`, its share of the calls of
    the callers that use it, and how often it fails. With `models`, an LLM route; of its
    successful calls, `estimated_share` have estimated counts (streams without a report)."""

    path: str
    median_ms: float
    sigma: float = 0.5
    weight: float = 1.0
    error_rate: float = 0.02
    post_share: float = 0.85
    timeout_ms: int = 60_000
    models: tuple[ModelProfile, ...] = ()
    estimated_share: float = 0.0


@dataclass(frozen=True, slots=True)
class CallerProfile:
    """One token (or an unknown hash posted by an external gateway) and its habits. `routes`
    empty means every route of the plan; from the first clock hour that starts at or after
    `active_until` the caller is silent (an idle token)."""

    token_hash: str
    token_id: int | None = None
    weight: float = 1.0
    routes: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ("10.0.0.10",)
    user_agent: str = "python-requests/2.32.3"
    active_until: datetime | None = None
    source: str = "gateway"


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One way a call fails. The failed call's latency is the route's draw times
    `latency_factor`; a factor of 0 means it ran into the route's timeout."""

    status: int
    failure_kind: str | None
    message: str
    weight: float
    latency_factor: float


ERROR_KINDS: tuple[ErrorKind, ...] = (
    ErrorKind(429, None, "rate limit exceeded", 4, 0.05),
    ErrorKind(500, None, "upstream returned 500 Internal Server Error", 2, 0.8),
    ErrorKind(400, None, "invalid request body", 2, 0.1),
    ErrorKind(503, None, "upstream overloaded", 1, 0.2),
    ErrorKind(502, "upstream_reset", "the upstream broke off the response", 1, 1.5),
    ErrorKind(504, "timeout", "the upstream did not answer in time", 1, 0.0),
)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Ground truth for one planted anomaly: what a detector should find, where and when."""

    kind: str
    token_hash: str
    token_id: int | None
    start: datetime
    end: datetime
    description: str


@dataclass(frozen=True, slots=True)
class Injection:
    anomaly: Anomaly
    events: list[UsageEvent] = field(repr=False)


class AnomalyInjector(Protocol):
    """Plants one anomaly in a plan's history. Must be deterministic given `rng`, and should
    stay inside [plan.start, plan.end)."""

    def inject(self, plan: TrafficPlan, rng: random.Random) -> Injection: ...


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """Normal traffic of `callers` on `routes` over [start, end): `events` calls in all (the
    injectors' events come on top), weighted by hour of day and day of week."""

    callers: tuple[CallerProfile, ...]
    routes: tuple[RouteProfile, ...]
    start: datetime
    end: datetime
    events: int
    seed: int = 0
    error_kinds: tuple[ErrorKind, ...] = ERROR_KINDS
    weekend_factor: float = 0.4
    injectors: tuple[AnomalyInjector, ...] = ()
    prices: Mapping[str, Price] | None = None  # None: the shipped default prices

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be aware datetimes")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if not self.routes:
            raise ValueError("a plan needs at least one route")
        if self.events and not self.callers:
            raise ValueError("a plan with events needs at least one caller")
        known = {route.path for route in self.routes}
        for caller in self.callers:
            unknown = set(caller.routes) - known
            if unknown:
                raise ValueError(f"caller routes not in the plan: {', '.join(sorted(unknown))}")
            if not caller.ip_addresses:
                raise ValueError("every caller needs at least one IP address")

    def route(self, path: str) -> RouteProfile:
        """The plan's route with this path; KeyError if there is none."""
        for route in self.routes:
            if route.path == path:
                return route
        raise KeyError(path)


USER_AGENTS = (
    "python-requests/2.32.3",
    "axios/1.7.2",
    "openai-python/1.40.0",
    "curl/8.5.0",
    "Go-http-client/2.0",
    "n8n/1.64.0",
)


def draw_routes(paths: Sequence[str], rng: random.Random) -> tuple[RouteProfile, ...]:
    """Plausible profiles for routes known only by path: medians from 40 ms to ~2 s, 1-3 %
    errors, uneven popularity."""
    return tuple(
        RouteProfile(
            path=path,
            median_ms=round(math.exp(rng.uniform(math.log(40), math.log(2000)))),
            sigma=rng.uniform(0.35, 0.7),
            weight=rng.uniform(0.5, 3.0),
            error_rate=rng.uniform(0.01, 0.03),
        )
        for path in paths
    )


def draw_callers(
    tokens: Sequence[tuple[str, int | None]],
    route_paths: Sequence[str],
    rng: random.Random,
    *,
    max_routes: int = 4,
    source: str = "gateway",
) -> tuple[CallerProfile, ...]:
    """Callers for (token hash, token id) pairs: Zipf-like popularity in a random order (not
    tied to creation order), each calling 1 to `max_routes` of the routes from 1-3 addresses."""
    order = list(range(len(tokens)))
    rng.shuffle(order)
    callers = []
    for rank, index in enumerate(order, start=1):
        token_hash, token_id = tokens[index]
        count = min(len(route_paths), rng.randint(1, max_routes))
        callers.append(
            CallerProfile(
                token_hash=token_hash,
                token_id=token_id,
                weight=1.0 / rank**1.1,
                routes=tuple(rng.sample(list(route_paths), count)),
                ip_addresses=tuple(
                    f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                    for _ in range(rng.randint(1, 3))
                ),
                user_agent=rng.choice(USER_AGENTS),
                source=source,
            )
        )
    return tuple(callers)


def hour_weight(moment: datetime, weekend_factor: float = 0.4) -> float:
    """Relative traffic in the hour starting at `moment`: diurnal (peak ~14:00 UTC, trough
    ~02:00) times a weekday factor."""
    diurnal = 0.25 + 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * ((moment.hour - 2) % 24) / 24))
    return diurnal * (weekend_factor if moment.weekday() >= 5 else 1.0)


def _is_active(caller: CallerProfile, moment: datetime) -> bool:
    return caller.active_until is None or moment < caller.active_until


def hour_counts(plan: TrafficPlan) -> list[tuple[datetime, datetime, int]]:
    """(start, end, calls) per clock hour of the plan, the first and last partial, summing to
    plan.events exactly. Hours in which no caller is active get none."""
    spans: list[tuple[datetime, datetime, float]] = []
    start = plan.start.astimezone(UTC)
    end = plan.end.astimezone(UTC)
    hour_start = start.replace(minute=0, second=0, microsecond=0)
    while hour_start < end:
        span_start, span_end = max(hour_start, start), min(hour_start + HOUR, end)
        share = (span_end - span_start) / HOUR
        anyone = any(_is_active(caller, span_start) for caller in plan.callers)
        weight = hour_weight(hour_start, plan.weekend_factor) * share if anyone else 0.0
        spans.append((span_start, span_end, weight))
        hour_start += HOUR
    total = sum(weight for _, _, weight in spans)
    if total == 0:
        return [(s, e, 0) for s, e, _ in spans]
    exact = [plan.events * weight / total for _, _, weight in spans]
    counts = [int(x) for x in exact]
    # Largest remainders get the calls rounding left over, so the sum is exact.
    for index in sorted(range(len(spans)), key=lambda i: counts[i] - exact[i])[
        : plan.events - sum(counts)
    ]:
        counts[index] += 1
    return [(s, e, count) for (s, e, _), count in zip(spans, counts, strict=True)]


def event_id_at(moment: datetime, rng: random.Random) -> str:
    """A UUIDv7 for `moment` from `rng`: time-ordered like the gateway's, and reproducible, so
    posting the same plan twice stores each event once."""
    unix_ms = int(moment.timestamp() * 1000)
    value = (unix_ms & (2**48 - 1)) << 80 | rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    digits = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, at a third of the cost
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _lognormal(rng: random.Random, mu: float, sigma: float) -> float:
    # gauss() is about twice as fast as lognormvariate()'s normalvariate(), same distribution.
    return math.exp(mu + sigma * rng.gauss())


def build_call(
    plan: TrafficPlan,
    rng: random.Random,
    caller: CallerProfile,
    route: RouteProfile,
    used_at: datetime,
    *,
    ip_address: str | None = None,
    error_rate: float | None = None,
) -> UsageEvent:
    """One call of `caller` on `route` at `used_at`, drawn like normal traffic; injectors use
    it too, overriding the source address or the error rate."""
    latency_ms = int(_lognormal(rng, math.log(route.median_ms), route.sigma)) + 1
    status, failure_kind, message = 200, None, None
    if rng.random() < (route.error_rate if error_rate is None else error_rate):
        kinds = plan.error_kinds
        kind = rng.choices(kinds, weights=[k.weight for k in kinds])[0]
        status, failure_kind, message = kind.status, kind.failure_kind, kind.message
        latency_ms = (
            route.timeout_ms
            if kind.latency_factor == 0
            else max(1, int(latency_ms * kind.latency_factor))
        )
    ips = caller.ip_addresses
    event = UsageEvent(
        token_hash=caller.token_hash,
        route_path=route.path,
        used_at=used_at,
        response_status=status,
        response_time_ms=latency_ms,
        event_id=event_id_at(used_at, rng),
        token_id=caller.token_id,
        ttfb_ms=latency_ms // 3 if status < 400 else None,
        ip_address=ip_address or (ips[0] if len(ips) == 1 else rng.choice(ips)),
        user_agent=caller.user_agent,
        request_method="POST" if rng.random() < route.post_share else "GET",
        error_message=message,
        bytes_in=int(_lognormal(rng, 7.0, 0.8)),
        bytes_out=int(_lognormal(rng, 8.0, 1.0)) if status < 400 else 120,
        failure_kind=failure_kind,
        source=caller.source,
    )
    if route.models:
        _meter(plan, route, event)
    return event


def _meter(plan: TrafficPlan, route: RouteProfile, event: UsageEvent) -> None:
    """An LLM route's call: model, counts and cost, as the gateway records them, drawn from the
    call's own generator (seeded by its event id)."""
    rng = random.Random(event.event_id)  # noqa: S311 - synthetic data
    profile = rng.choices(route.models, weights=[m.weight for m in route.models])[0]
    event.model = profile.model
    if event.failure_kind is not None:
        return  # no answer from the upstream: nothing metered, as in the gateway
    if event.response_status is not None and event.response_status >= 400:
        prompt = completion = 0  # a refused or failed request bills nothing
        cached: int | None = 0
        source = UsageSource.REPORTED
    else:
        prompt = max(1, round(_lognormal(rng, math.log(profile.prompt_median), profile.sigma)))
        completion = (
            max(1, round(_lognormal(rng, math.log(profile.completion_median), profile.sigma)))
            if profile.completion_median
            else 0
        )
        estimated = rng.random() < route.estimated_share
        source = UsageSource.ESTIMATED if estimated else UsageSource.REPORTED
        cached = None if estimated else 0
        if not estimated and rng.random() < profile.cached_share:
            cached = prompt * rng.randint(2, 8) // 10
    usage = LlmUsage(
        model=profile.model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        reasoning_tokens=None,
        usage_source=source,
    )
    prices = DEFAULT_PRICE_BOOK.prices if plan.prices is None else plan.prices
    event.prompt_tokens = prompt
    event.completion_tokens = completion
    event.cached_prompt_tokens = cached
    event.usage_source = source.value
    event.cost_pusd = compute_cost_pusd(match_price(profile.model, prices), usage)  # as PriceBook


def _normal_traffic(plan: TrafficPlan, rng: random.Random) -> Iterator[list[UsageEvent]]:
    routes = {route.path: route for route in plan.routes}
    mixes: dict[str, tuple[list[RouteProfile], list[float]]] = {}
    for caller in plan.callers:
        chosen = [routes[path] for path in caller.routes] if caller.routes else list(plan.routes)
        mixes[caller.token_hash] = (
            chosen,
            list(itertools.accumulate(route.weight for route in chosen)),
        )
    active: list[CallerProfile] = []
    active_cum: list[float] = []
    for span_start, span_end, count in hour_counts(plan):
        if count == 0:
            yield []
            continue
        now_active = [caller for caller in plan.callers if _is_active(caller, span_start)]
        if now_active != active:
            active = now_active
            active_cum = list(itertools.accumulate(caller.weight for caller in active))
        span_s = (span_end - span_start).total_seconds()
        offsets = sorted(rng.random() * span_s for _ in range(count))
        callers = rng.choices(active, cum_weights=active_cum, k=count)
        batch = []
        for offset, caller in zip(offsets, callers, strict=True):
            used_at = span_start + timedelta(seconds=offset)
            chosen, cum = mixes[caller.token_hash]
            route = chosen[0] if len(chosen) == 1 else rng.choices(chosen, cum_weights=cum)[0]
            batch.append(build_call(plan, rng, caller, route, used_at))
        yield batch


def inject(plan: TrafficPlan) -> list[Injection]:
    """Every injector's anomaly and events, in the plan's order; deterministic."""
    return [
        injector.inject(plan, random.Random(f"{plan.seed}/injector/{index}"))  # noqa: S311 - synthetic data
        for index, injector in enumerate(plan.injectors)
    ]


def generate_events(plan: TrafficPlan) -> Iterator[list[UsageEvent]]:
    """The plan's events in batches, one per clock hour, oldest first (within a batch too):
    normal traffic plus every injector's events. Injected events outside the plan's range are
    dropped."""
    rng = random.Random(plan.seed)  # noqa: S311 - synthetic data, not secrets
    injected = sorted(
        (
            event
            for injection in inject(plan)
            for event in injection.events
            if plan.start <= event.used_at < plan.end
        ),
        key=lambda event: event.used_at,
    )
    position = 0
    for batch, (_, span_end, _) in zip(_normal_traffic(plan, rng), hour_counts(plan), strict=True):
        until = bisect.bisect_left(injected, span_end, lo=position, key=lambda e: e.used_at)
        if until > position:
            batch = list(
                heapq.merge(batch, injected[position:until], key=lambda event: event.used_at)
            )
            position = until
        if batch:
            yield batch


def count_events(plan: TrafficPlan) -> int:
    """How many events `generate_events(plan)` yields (for progress bars)."""
    injected = sum(
        plan.start <= event.used_at < plan.end
        for injection in inject(plan)
        for event in injection.events
    )
    return plan.events + injected


def rebatch(batches: Iterable[Sequence[UsageEvent]], size: int) -> Iterator[list[UsageEvent]]:
    """The same events, in order, in batches of `size` (the last one smaller)."""
    pending: list[UsageEvent] = []
    for batch in batches:
        pending.extend(batch)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


@dataclass(frozen=True, slots=True)
class BurstFromNewIp:
    """A token suddenly called much more than usual, from an address it never used, for a short
    while: a leaked token being abused. Calls are evenly spread over the burst with jitter and
    fail more often (the abuser probes)."""

    token_hash: str
    start: datetime
    duration: timedelta
    calls: int
    ip_address: str
    route_path: str
    user_agent: str = "python-httpx/0.28.1"
    error_rate: float = 0.08

    def inject(self, plan: TrafficPlan, rng: random.Random) -> Injection:
        caller = next(c for c in plan.callers if c.token_hash == self.token_hash)
        burst_caller = CallerProfile(
            token_hash=caller.token_hash,
            token_id=caller.token_id,
            ip_addresses=(self.ip_address,),
            user_agent=self.user_agent,
            source=caller.source,
        )
        route = plan.route(self.route_path)
        span_s = self.duration.total_seconds()
        offsets = sorted(rng.random() * span_s for _ in range(self.calls))
        events = [
            build_call(
                plan,
                rng,
                burst_caller,
                route,
                self.start + timedelta(seconds=offset),
                error_rate=self.error_rate,
            )
            for offset in offsets
        ]
        anomaly = Anomaly(
            kind="burst_from_new_ip",
            token_hash=caller.token_hash,
            token_id=caller.token_id,
            start=self.start,
            end=self.start + self.duration,
            description=(
                f"{self.calls} calls to {self.route_path} in {span_s / 60:.0f} min "
                f"from {self.ip_address}, an address this token never used"
            ),
        )
        return Injection(anomaly, events)
