"""The synthetic history generator (tokenmanager.usage.synthetic): exact counts, time order,
determinism, the diurnal and weekday shape, per-route latency and error rates, idle callers and
injected anomalies. Pure: no database."""

from __future__ import annotations

import random
import statistics
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.pricing.book import PriceBook
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.security.evaluation import PLAN_KINDS, PlannedAnomaly
from tokenmanager.security.models import DetectorKind
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.synthetic import (
    BurstFromNewIp,
    CallerProfile,
    ModelProfile,
    RouteProfile,
    TrafficPlan,
    count_events,
    draw_callers,
    draw_routes,
    generate_events,
    hour_counts,
    inject,
    rebatch,
)

END = datetime(2026, 11, 27, 15, 20, tzinfo=UTC)  # a Friday afternoon
START = END - timedelta(days=28)  # four whole weeks
ROUTES = (
    RouteProfile("/api/fast", median_ms=40, sigma=0.3, weight=2, error_rate=0.01),
    RouteProfile("/api/slow", median_ms=1500, sigma=0.3, weight=1, error_rate=0.03),
)
BUSY = CallerProfile("a" * 64, token_id=1, weight=3, ip_addresses=("10.0.0.1", "10.0.0.2"))
QUIET = CallerProfile("b" * 64, token_id=2, weight=1, routes=("/api/slow",))
IDLE_SINCE = END - timedelta(days=10)
IDLE = CallerProfile("c" * 64, token_id=3, weight=1, active_until=IDLE_SINCE)


def plan(events: int = 20_000, **changes: object) -> TrafficPlan:
    values: dict[str, object] = {
        "callers": (BUSY, QUIET, IDLE),
        "routes": ROUTES,
        "start": START,
        "end": END,
        "events": events,
        "seed": 7,
    }
    values.update(changes)
    return TrafficPlan(**values)  # type: ignore[arg-type]


def flatten(traffic: TrafficPlan) -> list[UsageEvent]:
    return [event for batch in generate_events(traffic) for event in batch]


@pytest.fixture(scope="module")
def history() -> list[UsageEvent]:
    return flatten(plan())


def test_generates_exactly_the_planned_events_in_time_order_inside_the_range(
    history: list[UsageEvent],
) -> None:
    assert len(history) == 20_000
    times = [event.used_at for event in history]
    assert times == sorted(times)
    assert times[0] >= START
    assert times[-1] < END


def test_batches_are_clock_hours(history: list[UsageEvent]) -> None:
    for batch in generate_events(plan(2000)):
        hours = {event.used_at.replace(minute=0, second=0, microsecond=0) for event in batch}
        assert len(hours) == 1


def test_the_same_plan_gives_the_same_events_and_another_seed_different_ones(
    history: list[UsageEvent],
) -> None:
    again = flatten(plan())
    assert [e.event_id for e in again] == [e.event_id for e in history]
    assert [e.response_time_ms for e in again] == [e.response_time_ms for e in history]
    other = flatten(plan(seed=8))
    assert {e.event_id for e in other}.isdisjoint({e.event_id for e in history})


def test_event_ids_are_unique_uuid7_carrying_the_call_time(history: list[UsageEvent]) -> None:
    assert len({event.event_id for event in history}) == len(history)
    for event in history[:: len(history) // 50]:
        parsed = uuid.UUID(event.event_id)
        assert parsed.version == 7
        assert parsed.int >> 80 == int(event.used_at.timestamp() * 1000)


def test_afternoons_are_busier_than_nights_and_weekdays_than_weekends(
    history: list[UsageEvent],
) -> None:
    by_hour = Counter(event.used_at.hour for event in history)
    assert by_hour[14] > 2.5 * by_hour[2]
    weekday_days = Counter(event.used_at.date() for event in history if event.used_at.weekday() < 5)
    weekend_days = Counter(
        event.used_at.date() for event in history if event.used_at.weekday() >= 5
    )
    # Whole days only: the first and last day of the range are partial.
    whole = {(START + timedelta(days=d)).date() for d in range(1, 27)}
    weekday_mean = statistics.mean(n for day, n in weekday_days.items() if day in whole)
    weekend_mean = statistics.mean(n for day, n in weekend_days.items() if day in whole)
    assert 0.3 < weekend_mean / weekday_mean < 0.5  # the plan's weekend factor is 0.4


def test_each_route_has_its_own_latency_and_error_rate(history: list[UsageEvent]) -> None:
    for route in ROUTES:
        calls = [e for e in history if e.route_path == route.path]
        good = [e.response_time_ms or 0 for e in calls if not e.is_error]
        assert route.median_ms * 0.85 < statistics.median(good) < route.median_ms * 1.15
        error_rate = sum(e.is_error for e in calls) / len(calls)
        assert route.error_rate * 0.6 < error_rate < route.error_rate * 1.4


def test_errors_come_in_several_kinds(history: list[UsageEvent]) -> None:
    errors = [e for e in history if e.is_error]
    assert {e.response_status for e in errors} >= {429, 500, 400, 502, 503, 504}
    assert {e.failure_kind for e in errors} >= {None, "timeout", "upstream_reset"}
    assert all(e.error_message for e in errors)
    timeouts = [e for e in errors if e.failure_kind == "timeout"]
    assert all(e.response_time_ms == 60_000 for e in timeouts)


def test_callers_keep_to_their_routes_addresses_and_weights(history: list[UsageEvent]) -> None:
    quiet = [e for e in history if e.token_hash == QUIET.token_hash]
    assert {e.route_path for e in quiet} == {"/api/slow"}
    busy = [e for e in history if e.token_hash == BUSY.token_hash]
    assert {e.ip_address for e in busy} == set(BUSY.ip_addresses)
    assert {e.route_path for e in busy} == {"/api/fast", "/api/slow"}
    assert 2 < len(busy) / len(quiet) < 4.5  # weights 3 : 1, the idle caller aside
    assert all(e.token_id == 1 for e in busy)


def test_an_idle_caller_is_silent_after_its_last_active_hour(history: list[UsageEvent]) -> None:
    idle = [e for e in history if e.token_hash == IDLE.token_hash]
    assert idle, "it was active before"
    assert max(e.used_at for e in idle) < IDLE_SINCE + timedelta(hours=1)
    after = [e for e in history if e.used_at >= IDLE_SINCE + timedelta(hours=1)]
    assert after
    assert all(e.token_hash != IDLE.token_hash for e in after)


def test_hours_when_nobody_is_active_get_no_calls() -> None:
    only_idle = plan(1000, callers=(IDLE,))
    counts = hour_counts(only_idle)
    assert sum(count for _, _, count in counts) == 1000
    assert all(count == 0 for start, _, count in counts if start >= IDLE_SINCE + timedelta(hours=1))


BURST_START = END - timedelta(days=3, hours=2)


def burst_plan() -> TrafficPlan:
    burst = BurstFromNewIp(
        token_hash=QUIET.token_hash,
        start=BURST_START,
        duration=timedelta(minutes=30),
        calls=900,
        ip_address="203.0.113.9",
        route_path="/api/slow",
    )
    return plan(injectors=(burst,))


def test_an_injected_burst_comes_from_a_new_address_inside_its_labelled_span(
    history: list[UsageEvent],
) -> None:
    traffic = burst_plan()
    (injection,) = inject(traffic)
    label = injection.anomaly
    assert label.kind == "burst_from_new_ip"
    assert (label.token_hash, label.token_id) == (QUIET.token_hash, QUIET.token_id)
    assert (label.start, label.end) == (BURST_START, BURST_START + timedelta(minutes=30))
    events = flatten(traffic)
    assert len(events) == count_events(traffic) == 20_000 + 900
    burst = [e for e in events if e.ip_address == "203.0.113.9"]
    assert len(burst) == 900
    assert all(label.start <= e.used_at < label.end for e in burst)
    assert all(e.token_hash == QUIET.token_hash for e in burst)
    assert "203.0.113.9" not in {e.ip_address for e in history}
    # Merged in time order, and the normal traffic is exactly what it was without the burst.
    assert [e.used_at for e in events] == sorted(e.used_at for e in events)
    normal = [e.event_id for e in events if e.ip_address != "203.0.113.9"]
    assert normal == [e.event_id for e in history]


def test_injections_are_deterministic() -> None:
    first, second = inject(burst_plan()), inject(burst_plan())
    assert [e.event_id for e in first[0].events] == [e.event_id for e in second[0].events]


def test_a_custom_injector_only_needs_an_inject_method() -> None:
    from tokenmanager.usage.synthetic import Anomaly, Injection, build_call

    class NightOwl:
        """Calls at 03:00 from a caller that never works at night."""

        def inject(self, plan: TrafficPlan, rng: random.Random) -> Injection:
            at = (plan.end - timedelta(days=1)).replace(hour=3, minute=0)
            events = [
                build_call(plan, rng, BUSY, plan.route("/api/fast"), at + timedelta(seconds=i))
                for i in range(5)
            ]
            label = Anomaly("night_calls", BUSY.token_hash, 1, at, at + timedelta(seconds=5), "")
            return Injection(label, events)

    traffic = plan(1000, injectors=(NightOwl(),))
    assert len(flatten(traffic)) == 1005
    assert inject(traffic)[0].anomaly.kind == "night_calls"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"end": START}, "end must be after start"),
        ({"start": START.replace(tzinfo=None)}, "aware"),
        ({"routes": ()}, "at least one route"),
        ({"callers": ()}, "at least one caller"),
        ({"callers": (CallerProfile("d" * 64, routes=("/api/nope",)),)}, "/api/nope"),
        ({"events": -1}, "events"),
    ],
)
def test_a_plan_that_cannot_work_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(**changes)


def test_rebatch_keeps_order_and_sizes() -> None:
    events = flatten(plan(2500))
    batches = list(rebatch(generate_events(plan(2500)), 1000))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert [e.event_id for b in batches for e in b] == [e.event_id for e in events]


def test_drawn_profiles_are_plausible_and_seeded() -> None:
    paths = ["/api/a", "/api/b", "/api/c"]
    tokens = [(f"{i:064x}", i) for i in range(20)]
    routes = draw_routes(paths, random.Random(1))
    assert [r.path for r in routes] == paths
    assert all(40 <= r.median_ms <= 2000 and 0.01 <= r.error_rate <= 0.03 for r in routes)
    callers = draw_callers(tokens, paths, random.Random(1))
    assert sorted(c.token_id for c in callers) == list(range(20))
    assert all(set(c.routes) <= set(paths) and c.routes for c in callers)
    assert draw_callers(tokens, paths, random.Random(1)) == callers


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_the_detectors_evaluation_injectors_plant_into_a_plan(kind: DetectorKind) -> None:
    traffic = plan(5000, injectors=(PlannedAnomaly(kind, caller_index=1),))
    (injection,) = inject(traffic)
    anomaly, planted = injection.anomaly, injection.events
    assert anomaly.kind == kind
    assert planted
    assert all(START <= event.used_at < END for event in planted)
    assert all(
        anomaly.start <= event.used_at <= anomaly.end + timedelta(hours=1) for event in planted
    )
    if kind == DetectorKind.AUTH_FAILURE_BURST:  # made-up tokens, no caller's
        assert {event.token_hash for event in planted} == {""}
        assert anomaly.token_id is None
    else:
        assert {(event.token_hash, event.token_id) for event in planted} == {(QUIET.token_hash, 2)}
        assert anomaly.token_id == QUIET.token_id
        assert {event.route_path for event in planted} <= {*QUIET.routes, None}
    # Planted on top of the normal traffic, which stays as it was; and reproducibly.
    assert count_events(traffic) == 5000 + len(planted)
    assert [e.event_id for e in flatten(traffic)] == [e.event_id for e in flatten(traffic)]
    normal = {e.event_id for e in flatten(plan(5000))}
    assert normal <= {e.event_id for e in flatten(traffic)}


def test_kinds_a_plan_cannot_carry_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be planted"):
        inject(plan(100, injectors=(PlannedAnomaly(DetectorKind.ROUTE_ERROR_SPIKE),)))
    short = plan(100, start=END - timedelta(days=2), injectors=(PlannedAnomaly(PLAN_KINDS[0]),))
    with pytest.raises(ValueError, match="at least 7 days"):
        inject(short)


LLM_ROUTE = RouteProfile(
    "/api/llm",
    median_ms=800,
    weight=2,
    error_rate=0.05,
    models=(
        ModelProfile("gpt-4o-mini", weight=3, prompt_median=900, completion_median=200,
                     cached_share=0.5),
        ModelProfile("text-embedding-3-small", weight=1, prompt_median=300, completion_median=0),
        ModelProfile("house-model", weight=1),
    ),
    estimated_share=0.05,
)  # fmt: skip


def test_an_llm_route_meters_its_calls_at_the_plan_prices_and_leaves_the_rest_unchanged() -> None:
    routes = (*ROUTES, LLM_ROUTE)
    plain = flatten(plan(5000, routes=(*ROUTES, replace(LLM_ROUTE, models=()))))
    metered = flatten(plan(5000, routes=routes))
    # The LLM fields come from each call's own generator: everything else is as without them.
    assert [(e.event_id, e.route_path, e.response_status) for e in plain] == [
        (e.event_id, e.route_path, e.response_status) for e in metered
    ]
    assert flatten(plan(5000, routes=routes)) == metered  # and they are seeded
    book = PriceBook.of(DEFAULT_PRICES)
    llm = [e for e in metered if e.route_path == "/api/llm"]
    assert all(e.model is None and e.usage_source is None for e in metered if e not in llm)
    assert {e.model for e in llm} == {"gpt-4o-mini", "text-embedding-3-small", "house-model"}
    sources: Counter[str | None] = Counter()
    for event in llm:
        sources[event.usage_source] += 1
        if event.failure_kind is not None:  # no answer: only the requested model is known
            assert (event.usage_source, event.prompt_tokens, event.cost_pusd) == (None, None, None)
            continue
        assert event.prompt_tokens is not None
        assert event.completion_tokens is not None
        if event.response_status is not None and event.response_status >= 400:
            assert (event.prompt_tokens, event.completion_tokens) == (0, 0)  # refused: no bill
        else:
            assert event.prompt_tokens > 0
        if event.model == "text-embedding-3-small":
            assert event.completion_tokens == 0
        usage = LlmUsage(
            model=event.model,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            cached_prompt_tokens=event.cached_prompt_tokens,
            reasoning_tokens=None,
            usage_source=UsageSource(event.usage_source),
        )
        assert event.cost_pusd == book.cost_for(usage)
        if event.model == "house-model":
            assert event.cost_pusd is None  # no price: unknown, never 0
        elif event.usage_source == "estimated":
            assert event.cached_prompt_tokens is None
    assert 0 < sources["estimated"] < sources["reported"] // 10
    assert any(e.cached_prompt_tokens for e in llm)
    # Other prices, other costs: the plan's prices are the ones used.
    doubled = {
        p.model: replace(p, input_micro_usd_per_mtok=2 * p.input_micro_usd_per_mtok)
        for p in DEFAULT_PRICES
    }
    repriced = flatten(plan(5000, routes=routes, prices=doubled))
    mini = [
        (a.cost_pusd, b.cost_pusd)
        for a, b in zip(metered, repriced, strict=True)
        if a.model == "gpt-4o-mini" and a.prompt_tokens
    ]
    assert mini
    assert all(after > before for before, after in mini if before is not None and after)
