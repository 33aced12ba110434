"""Usage events (ids, JSON form, error classes) and the hourly rollup, checked against a
plain-Python oracle."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from time_machine import TimeMachineFixture

from tokenmanager.usage.costs import build_cost_rollup
from tokenmanager.usage.events import UsageEvent, uuid7
from tokenmanager.usage.histogram import BUCKET_COLUMNS, BUCKET_UPPER_BOUNDS_MS
from tokenmanager.usage.rollup import build_rollup, regroup

HOUR_0 = datetime(2030, 3, 1, 0, 0, tzinfo=UTC)  # midnight: an hour and a day boundary


def make_event(**fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "token_hash": "a" * 64,
        "route_path": "/api/echo",
        "used_at": HOUR_0,
        "response_status": 200,
        "response_time_ms": 12,
    }
    return UsageEvent(**(values | fields))


# -- event ids -------------------------------------------------------------------------------


def test_uuid7_has_version_7_and_the_rfc_variant() -> None:
    for _ in range(200):
        value = uuid.UUID(uuid7())
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_creation_millisecond(time_machine: TimeMachineFixture) -> None:
    moment = datetime(2031, 7, 4, 12, 30, 15, 123000, tzinfo=UTC)
    time_machine.move_to(moment, tick=False)
    value = uuid.UUID(uuid7())
    assert value.int >> 80 == int(moment.timestamp() * 1000)


def test_uuid7_sorts_in_creation_order_across_milliseconds(
    time_machine: TimeMachineFixture,
) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    created = []
    for step_ms in range(0, 5000, 7):
        time_machine.move_to(start + timedelta(milliseconds=step_ms), tick=False)
        created.append(uuid7())
    assert sorted(created) == created
    assert len(set(created)) == len(created)


def test_uuid7_is_unique_within_one_millisecond(time_machine: TimeMachineFixture) -> None:
    time_machine.move_to(datetime(2030, 1, 1, tzinfo=UTC), tick=False)
    created = {uuid7() for _ in range(10_000)}
    assert len(created) == 10_000


# -- JSON form -------------------------------------------------------------------------------


def test_usage_event_survives_a_json_round_trip_with_every_field_set() -> None:
    event = UsageEvent(
        token_hash="b" * 64,
        route_path="/v1",
        used_at=datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        response_status=502,
        response_time_ms=1500,
        token_id=42,
        ttfb_ms=30,
        ip_address="2001:db8::1",
        user_agent='agent "quoted" \u00e9\n',
        request_method="POST",
        error_message="could not connect to the upstream",
        bytes_in=10,
        bytes_out=2**40,
        failure_kind="connect_error",
        source="ingest",
    )
    restored = UsageEvent.from_json(json.loads(json.dumps(event.to_json())))
    assert restored == event
    assert restored.used_at.tzinfo is not None


def test_usage_event_round_trip_keeps_none_fields() -> None:
    event = make_event(route_path=None, response_status=None, response_time_ms=None)
    assert UsageEvent.from_json(json.loads(json.dumps(event.to_json()))) == event


def test_usage_event_from_json_reads_a_naive_time_as_utc() -> None:
    values = make_event().to_json() | {"used_at": "2030-03-01T10:15:00"}
    assert UsageEvent.from_json(values).used_at == datetime(2030, 3, 1, 10, 15, tzinfo=UTC)


# -- error classes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "failure_kind", "error_message", "is_error"),
    [
        (200, None, None, False),
        (204, None, None, False),
        (301, None, None, False),
        (399, None, None, False),
        (400, None, None, True),
        (404, None, "no route", True),
        (499, "client_disconnect", "gone", True),
        (503, None, None, True),
        (200, "upstream_reset", None, True),
        (None, None, None, False),
        (None, None, "the upstream did not answer", True),
        (None, "timeout", None, True),
    ],
)
def test_is_error_follows_status_failure_kind_and_message(
    status: int | None, failure_kind: str | None, error_message: str | None, is_error: bool
) -> None:
    event = make_event(
        response_status=status, failure_kind=failure_kind, error_message=error_message
    )
    assert event.is_error is is_error


@pytest.mark.parametrize(
    ("status", "status_class"),
    [(None, 0), (99, 0), (100, 1), (200, 2), (299, 2), (302, 3), (429, 4), (599, 5), (600, 0)],
)
def test_status_class_is_the_hundreds_digit_or_zero(status: int | None, status_class: int) -> None:
    assert make_event(response_status=status).status_class == status_class


# -- rollup against an oracle ----------------------------------------------------------------


def oracle_bucket(latency_ms: int) -> int:
    for index, bound in enumerate(BUCKET_UPPER_BOUNDS_MS):
        if latency_ms <= bound:
            return index
    raise AssertionError("the last bucket is open-ended")


def oracle_rollup(
    events: list[UsageEvent], period_s: int = 3600
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollup written the slow, obvious way: group by period start, then count."""
    groups: dict[tuple[Any, ...], list[UsageEvent]] = defaultdict(list)
    for event in events:
        epoch_s = int(event.used_at.timestamp())
        hour = datetime.fromtimestamp(epoch_s - epoch_s % period_s, UTC)
        status = event.response_status
        status_class = status // 100 if status is not None and 100 <= status <= 599 else 0
        groups[(hour, event.token_hash, event.route_path or "", status_class)].append(event)
    expected = {}
    for key, members in groups.items():
        latencies = [e.response_time_ms for e in members if e.response_time_ms is not None]
        buckets = [0] * len(BUCKET_COLUMNS)
        for latency in latencies:
            buckets[oracle_bucket(latency)] += 1
        expected[key] = {
            "calls": len(members),
            "errors": sum(
                1
                for e in members
                if e.failure_kind is not None
                or (e.response_status is not None and e.response_status >= 400)
                or (e.response_status is None and e.error_message is not None)
            ),
            "sum_latency_ms": sum(latencies),
            "max_latency_ms": max(latencies, default=0),
            "bytes_in": sum(e.bytes_in or 0 for e in members),
            "bytes_out": sum(e.bytes_out or 0 for e in members),
            "buckets": buckets,
        }
    return expected


def actual_rollup(
    events: list[UsageEvent], period: str = "hour"
) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {
        key: {
            "calls": row.calls,
            "errors": row.errors,
            "sum_latency_ms": row.sum_latency_ms,
            "max_latency_ms": row.max_latency_ms,
            "bytes_in": row.bytes_in,
            "bytes_out": row.bytes_out,
            "buckets": list(row.buckets),
        }
        for key, row in build_rollup(events, period).items()
    }


# Latencies cluster on and around the bucket bounds, where an off-by-one would show.
_BOUNDS = [int(b) for b in BUCKET_UPPER_BOUNDS_MS[:-1]]
latencies = st.one_of(
    st.none(),
    st.sampled_from(_BOUNDS),
    st.sampled_from(_BOUNDS).map(lambda b: b + 1),
    st.integers(min_value=0, max_value=300_000),
)
events_strategy = st.builds(
    UsageEvent,
    event_id=st.uuids(version=4).map(str),  # drawn, not from uuid7()'s own randomness
    token_hash=st.sampled_from(["a" * 64, "b" * 64, ""]),
    route_path=st.sampled_from(["/api/echo", "/v1", None, ""]),
    # Up to two hours either side of an hour boundary, to the microsecond.
    used_at=st.integers(min_value=-7200 * 10**6, max_value=7200 * 10**6).map(
        lambda us: HOUR_0 + timedelta(microseconds=us)
    ),
    response_status=st.one_of(st.none(), st.sampled_from([200, 201, 304, 400, 429, 499, 502])),
    response_time_ms=latencies,
    error_message=st.one_of(st.none(), st.just("failed")),
    failure_kind=st.one_of(st.none(), st.sampled_from(["timeout", "connect_error"])),
    bytes_in=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    bytes_out=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(events_strategy, max_size=60))
def test_build_rollup_equals_the_oracle(events: list[UsageEvent]) -> None:
    assert actual_rollup(events) == oracle_rollup(events)


@settings(max_examples=100, deadline=None)
@given(st.lists(events_strategy, max_size=60))
def test_build_rollup_by_day_equals_the_oracle(events: list[UsageEvent]) -> None:
    assert actual_rollup(events, "day") == oracle_rollup(events, period_s=86400)


@settings(max_examples=100, deadline=None)
@given(st.lists(events_strategy, max_size=60))
def test_hourly_rows_regrouped_by_day_equal_the_events_folded_by_day(
    events: list[UsageEvent],
) -> None:
    assert regroup(build_rollup(events, "hour"), "day") == build_rollup(events, "day")


@settings(max_examples=100, deadline=None)
@given(st.lists(events_strategy, max_size=60))
def test_rollup_buckets_count_every_event_with_a_latency(events: list[UsageEvent]) -> None:
    rows = build_rollup(events).values()
    assert sum(sum(row.buckets) for row in rows) == sum(
        1 for e in events if e.response_time_ms is not None
    )
    assert sum(row.calls for row in rows) == len(events)


def test_rollup_splits_events_at_the_hour_boundary() -> None:
    before = make_event(used_at=HOUR_0 - timedelta(microseconds=1))
    at = make_event(used_at=HOUR_0)
    rows = build_rollup([before, at])
    hours = sorted(key[0] for key in rows)
    assert hours == [HOUR_0 - timedelta(hours=1), HOUR_0]


def test_rollup_latency_on_a_bound_falls_in_that_bounds_bucket() -> None:
    rows = build_rollup([make_event(response_time_ms=100), make_event(response_time_ms=101)])
    (row,) = rows.values()
    assert row.buckets[BUCKET_UPPER_BOUNDS_MS.index(100)] == 1
    assert row.buckets[BUCKET_UPPER_BOUNDS_MS.index(150)] == 1


# -- LLM sums ---------------------------------------------------------------------------------

_counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6))


@st.composite
def llm_events(draw: st.DrawFn) -> UsageEvent:
    event = draw(events_strategy)
    source = draw(st.sampled_from([None, "reported", "estimated", "missing"]))
    if source is None:
        return event
    event.usage_source = source
    event.model = draw(st.sampled_from(["gpt-4o", "claude-sonnet-4", None]))
    event.token_id = draw(st.sampled_from([None, 1, 2]))
    event.team_id = draw(st.sampled_from([None, "a", "b"]))
    if source != "missing":
        event.prompt_tokens, event.completion_tokens = draw(_counts), draw(_counts)
        event.cost_pusd = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=10**15)))
    return event


@settings(max_examples=100, deadline=None)
@given(st.lists(llm_events(), max_size=60))
def test_llm_sums_regroup_by_day_and_agree_with_the_cost_rollup(events: list[UsageEvent]) -> None:
    hourly = build_rollup(events, "hour")
    assert regroup(hourly, "day") == build_rollup(events, "day")
    costs = build_cost_rollup(events).values()
    llm = [e for e in events if e.usage_source is not None]
    assert sum(r.llm_calls for r in hourly.values()) == sum(r.calls for r in costs) == len(llm)
    assert (
        sum(r.cost_pusd for r in hourly.values())
        == sum(r.cost_pusd for r in costs)
        == sum(e.cost_pusd or 0 for e in llm)
    )
    assert sum(r.unpriced_calls for r in hourly.values()) == sum(r.unpriced_calls for r in costs)
    assert sum(r.unpriced_calls for r in costs) == sum(e.cost_pusd is None for e in llm)
    assert sum(r.prompt_tokens for r in hourly.values()) == sum(e.prompt_tokens or 0 for e in llm)
    assert sum(r.missing_calls for r in costs) == sum(e.usage_source == "missing" for e in llm)
