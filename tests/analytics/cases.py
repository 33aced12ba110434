"""Hypothesis cases for the analytics oracle tests: usage events over several weeks, as the
gateway records them (aware `used_at`, in UTC or another zone) and as external gateways post
them (parsed from naive, offset, `Z` and epoch-millisecond timestamps), for tokens of two
teams — one rotated, one revoked, one expired, one never used — and unknown hashes; inserted in
batches, with some events replayed. `load` builds the tokens, inserts the events and returns
the oracle's view of what was stored."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from tokenmanager.access.actor import Actor, Role
from tokenmanager.composition import Services
from tokenmanager.pricing.models import Price
from tokenmanager.storage.tokens import read_token_hashes
from tokenmanager.storage.usage import insert_usage_events
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.ingest import parse_usage_record

from .oracle import Call

# `async with fresh_services() as services:` (the fixture in conftest.py)
FreshServices = Callable[..., AbstractAsyncContextManager[Services]]
NOW = datetime(2030, 3, 10, 14, 25, 0, tzinfo=UTC)
SETUP_AT = NOW - timedelta(days=60)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TEAM_A, TEAM_B = "team-a", "team-b"
ADMIN = Actor(name="oracle-admin", role=Role.ADMIN)
VIEWER_A = Actor(name="oracle-viewer", role=Role.VIEWER, team_ids=frozenset({TEAM_A}))
ROUTES = ("/api/openai", "/api/chat/completions", "/v1/embeddings")
UNKNOWN_HASHES = {"unknown-1": "ab" * 32, "unknown-2": "0123456789abcdef" * 4}
# Slots the events name; `load` maps each to a real token's hash and id.
TOKEN_SLOTS = (
    "a1",
    "a2",
    "a-rotated:old",
    "a-rotated:new",
    "b1",
    "b-revoked",
    "b-expired",
    *UNKNOWN_HASHES,
)
ZONES = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)))
FORMS = (
    "gateway",  # a UsageEvent with token_id, aware used_at in `zone`
    "ingest-naive",  # parse_usage_record with a naive ISO-8601 string (UTC)
    "ingest-offset",  # ... with an ISO-8601 string in `zone`
    "ingest-z",  # ... with a trailing Z
    "ingest-epoch-ms",  # ... with epoch milliseconds
)


# LLM models the cases use: (input, output, cached input) in micro-USD per million tokens, as
# the oracle prices them by hand; None: no price. Ingestion gets the same prices under the base
# model names, so its dated-snapshot matching is exercised too.
LLM_MODELS: dict[str, tuple[int, int, int] | None] = {
    "gpt-4o-mini-2024-07-18": (150_000, 600_000, 75_000),
    "claude-3-5-haiku-20241022": (800_000, 4_000_000, 80_000),
    "in-house-7b": None,
}
INGEST_PRICES = {
    "gpt-4o-mini": Price("gpt-4o-mini", 150_000, 600_000, 75_000, None, "oracle"),
    "claude-3-5-haiku": Price("claude-3-5-haiku", 800_000, 4_000_000, 80_000, None, "oracle"),
}


@dataclass(frozen=True)
class LlmSpec:
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_prompt_tokens: int | None
    reasoning_tokens: int | None
    usage_source: str
    cost_pusd: int | None  # the gateway's (ingestion computes its own)


def oracle_cost(llm: LlmSpec) -> int | None:
    """What an ingested call costs, by hand: uncached input, cached input, output."""
    rates = LLM_MODELS.get(llm.model or "")
    if rates is None or llm.prompt_tokens is None or llm.completion_tokens is None:
        return None
    cached = llm.cached_prompt_tokens or 0
    return (
        (llm.prompt_tokens - cached) * rates[0]
        + cached * rates[2]
        + llm.completion_tokens * rates[1]
    )


@dataclass(frozen=True)
class EventSpec:
    number: int
    slot: str
    route_path: str | None
    moment: datetime
    form: str
    zone: timezone
    status: int | None
    latency_ms: int | None
    failure_kind: str | None
    error_message: str | None
    bytes_in: int | None
    bytes_out: int | None
    upper_case_hash: bool
    llm: LlmSpec | None = None

    @property
    def event_id(self) -> str:
        return str(uuid.UUID(int=self.number + 1))


@dataclass(frozen=True)
class Case:
    specs: list[EventSpec]
    batches: list[list[int]]  # indexes into specs, in insertion order; repeats are replays


@dataclass
class TokenInfo:
    token_id: int
    name: str
    team_id: str
    is_active: bool


@dataclass
class Loaded:
    calls: list[Call]
    tokens: dict[int, TokenInfo] = field(default_factory=dict)


# A whole hour on either side of midnight, the first and last microsecond of an hour.
_OFFSETS_IN_HOUR = st.one_of(
    st.sampled_from(
        [
            timedelta(0),
            timedelta(microseconds=1),
            timedelta(minutes=59, seconds=59, microseconds=999_999),
        ]
    ),
    st.integers(min_value=0, max_value=3600 * 10**6 - 1).map(lambda us: timedelta(microseconds=us)),
)
_HOURS = st.one_of(st.sampled_from([0, 1, 23]), st.integers(min_value=0, max_value=23))
_DAYS_BACK = st.one_of(
    st.integers(min_value=0, max_value=9), st.integers(min_value=0, max_value=45)
)
_LATENCIES = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 2, 10, 11, 100, 101, 1000, 120_000, 120_001]),
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=0, max_value=200_000),
)
_STATUSES = st.sampled_from([200, 200, 201, 204, 301, 400, 404, 429, 499, 500, 502, 504, None])


@st.composite
def _moments(draw: st.DrawFn) -> datetime:
    midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    moment = midnight - draw(_DAYS_BACK) * timedelta(days=1)
    moment += draw(_HOURS) * timedelta(hours=1) + draw(_OFFSETS_IN_HOUR)
    while moment > NOW:
        moment -= timedelta(days=1)
    return moment


@st.composite
def _llm_spec(draw: st.DrawFn, is_gateway: bool) -> LlmSpec:
    source = draw(st.sampled_from(["reported", "reported", "estimated", "missing"]))
    model = draw(st.sampled_from([*LLM_MODELS, None]))
    if source == "missing":
        return LlmSpec(model, None, None, None, None, source, None)
    prompt = draw(st.integers(0, 10**6))
    completion = draw(st.integers(0, 10**5))
    cached = draw(st.one_of(st.none(), st.integers(0, prompt)))
    reasoning = draw(st.one_of(st.none(), st.integers(0, completion)))
    cost = draw(st.one_of(st.none(), st.integers(0, 10**13))) if is_gateway else None
    return LlmSpec(model, prompt, completion, cached, reasoning, source, cost)


@st.composite
def _event_spec(draw: st.DrawFn, number: int) -> EventSpec:
    form = draw(st.sampled_from(FORMS))
    moment = draw(_moments())
    if form == "ingest-epoch-ms":
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    is_gateway = form == "gateway"
    return EventSpec(
        number=number,
        slot=draw(st.sampled_from(TOKEN_SLOTS)),
        route_path=draw(st.sampled_from([*ROUTES, None])),
        moment=moment,
        form=form,
        zone=draw(st.sampled_from(ZONES)),
        status=draw(_STATUSES),
        latency_ms=draw(_LATENCIES),
        failure_kind=draw(st.sampled_from([None, None, "timeout", "connect"]))
        if is_gateway
        else None,
        error_message=draw(st.sampled_from([None, None, "boom", "bad gateway"])),
        bytes_in=draw(st.one_of(st.none(), st.integers(0, 10**6))) if is_gateway else None,
        bytes_out=draw(st.one_of(st.none(), st.integers(0, 10**9))) if is_gateway else None,
        upper_case_hash=draw(st.booleans()) and not is_gateway,
        llm=draw(st.one_of(st.none(), _llm_spec(is_gateway))),
    )


@st.composite
def usage_cases(draw: st.DrawFn, max_events: int = 80) -> Case:
    count = draw(st.integers(min_value=0, max_value=max_events))
    specs = [draw(_event_spec(number)) for number in range(count)]
    order = list(range(count))
    if count:
        order += draw(st.lists(st.integers(min_value=0, max_value=count - 1), max_size=10))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(order)), max_size=3)))
    bounds = [0, *cuts, len(order)]
    batches = [order[start:end] for start, end in itertools.pairwise(bounds)]
    return Case(specs, [batch for batch in batches if batch])


def _build_event(spec: EventSpec, slots: dict[str, tuple[str, int | None]]) -> UsageEvent:
    """A fresh event each time: the insert fills in token ids on the objects it is given."""
    token_hash, token_id = slots[spec.slot]
    llm = spec.llm
    if spec.form == "gateway":
        llm_fields: dict[str, Any] = {}
        if llm is not None:
            llm_fields = {
                "model": llm.model,
                "prompt_tokens": llm.prompt_tokens,
                "completion_tokens": llm.completion_tokens,
                "cached_prompt_tokens": llm.cached_prompt_tokens,
                "reasoning_tokens": llm.reasoning_tokens,
                "usage_source": llm.usage_source,
                "cost_pusd": llm.cost_pusd,
            }
        return UsageEvent(
            token_hash=token_hash,
            route_path=spec.route_path,
            used_at=spec.moment.astimezone(spec.zone),
            response_status=spec.status,
            response_time_ms=spec.latency_ms,
            event_id=spec.event_id,
            token_id=token_id,
            request_method="POST",
            error_message=spec.error_message,
            bytes_in=spec.bytes_in,
            bytes_out=spec.bytes_out,
            failure_kind=spec.failure_kind,
            **llm_fields,
        )
    timestamp: Any
    if spec.form == "ingest-naive":
        timestamp = spec.moment.replace(tzinfo=None).isoformat()
    elif spec.form == "ingest-offset":
        timestamp = spec.moment.astimezone(spec.zone).isoformat()
    elif spec.form == "ingest-z":
        timestamp = spec.moment.replace(tzinfo=None).isoformat() + "Z"
    else:
        timestamp = (spec.moment - EPOCH) // timedelta(milliseconds=1)
    record = {
        "token_hash": token_hash.upper() if spec.upper_case_hash else token_hash,
        "route": spec.route_path,
        "timestamp": timestamp,
        "response_status": spec.status,
        "response_time_ms": spec.latency_ms,
        "request_method": "post",
        "error_message": spec.error_message,
        "event_id": spec.event_id,
    }
    if llm is not None:
        record |= {
            "model": llm.model,
            "prompt_tokens": llm.prompt_tokens,
            "completion_tokens": llm.completion_tokens,
            "cached_prompt_tokens": llm.cached_prompt_tokens,
            "reasoning_tokens": llm.reasoning_tokens,
            "usage_source": llm.usage_source,
        }
    return parse_usage_record(record, NOW, INGEST_PRICES)


async def _create_tokens(services: Services) -> tuple[dict[str, tuple[str, int | None]], Loaded]:
    """Tokens as of SETUP_AT (the clock must stand there); returns slot -> (hash, id)."""
    for team_id in (TEAM_A, TEAM_B):
        await services.teams.create(ADMIN, team_id=team_id, name=team_id.upper())
    loaded = Loaded(calls=[])
    slots: dict[str, tuple[str, int | None]] = dict.fromkeys(TOKEN_SLOTS, ("", None))
    for name, team_id, expires_at in (
        ("a1", TEAM_A, None),
        ("a2", TEAM_A, None),
        ("a-rotated", TEAM_A, None),
        ("a-idle", TEAM_A, None),
        ("b1", TEAM_B, None),
        ("b-revoked", TEAM_B, None),
        ("b-expired", TEAM_B, NOW - timedelta(days=1)),
    ):
        issued = await services.tokens.issue(
            ADMIN, name=name, team_id=team_id, scopes=["*"], expires_at=expires_at
        )
        token_id = issued.token.id
        async with services.database.read() as connection:
            token_hash, _ = await read_token_hashes(connection, token_id)
        if name == "a-rotated":
            await services.tokens.rotate(ADMIN, token_id, grace_s=90 * 24 * 3600)
            async with services.database.read() as connection:
                new_hash, _ = await read_token_hashes(connection, token_id)
            slots["a-rotated:old"] = (token_hash, token_id)
            slots["a-rotated:new"] = (new_hash, token_id)
        elif name == "b-revoked":
            await services.tokens.revoke(ADMIN, token_id)
        if name in slots:
            slots[name] = (token_hash, token_id)
        loaded.tokens[token_id] = TokenInfo(
            token_id, name, team_id, is_active=name not in {"b-revoked", "b-expired"}
        )
    for slot, token_hash in UNKNOWN_HASHES.items():
        slots[slot] = (token_hash, None)
    return slots, loaded


async def load(services: Services, case: Case, traveller: Any) -> Loaded:
    """Create the tokens at SETUP_AT, move the clock to NOW, insert the case's batches (checking
    each batch's count of new events) and return the oracle's calls and tokens."""
    slots, loaded = await _create_tokens(services)
    traveller.move_to(NOW)
    teams = {info.token_id: info.team_id for info in loaded.tokens.values()}
    stored: set[int] = set()
    for batch in case.batches:
        events = [_build_event(case.specs[index], slots) for index in batch]
        async with services.database.write() as connection:
            inserted = await insert_usage_events(connection, events)
        new = {index for index in batch if index not in stored}
        assert inserted == len(new), "the insert counts each new event_id once"
        stored |= new
    for index in sorted(stored):
        spec = case.specs[index]
        token_hash, token_id = slots[spec.slot]
        loaded.calls.append(
            Call(
                event_id=spec.event_id,
                token_hash=token_hash,
                token_id=token_id,
                team_id=teams.get(token_id) if token_id is not None else None,
                route_path=spec.route_path,
                used_at=spec.moment,
                status=spec.status,
                latency_ms=spec.latency_ms,
                failure_kind=spec.failure_kind,
                error_message=spec.error_message,
                bytes_in=spec.bytes_in,
                bytes_out=spec.bytes_out,
                **_llm_call_fields(spec),
            )
        )
    return loaded


def _llm_call_fields(spec: EventSpec) -> dict[str, Any]:
    llm = spec.llm
    if llm is None:
        return {}
    return {
        "model": llm.model,
        "prompt_tokens": llm.prompt_tokens,
        "completion_tokens": llm.completion_tokens,
        "cached_prompt_tokens": llm.cached_prompt_tokens,
        "reasoning_tokens": llm.reasoning_tokens,
        "usage_source": llm.usage_source,
        "cost_pusd": llm.cost_pusd if spec.form == "gateway" else oracle_cost(llm),
    }


def _spec(number: int, slot: str, moment: datetime, form: str, **fields: Any) -> EventSpec:
    values: dict[str, Any] = {
        "route_path": ROUTES[0],
        "zone": UTC,
        "status": 200,
        "latency_ms": 100,
        "failure_kind": None,
        "error_message": None,
        "bytes_in": None,
        "bytes_out": None,
        "upper_case_hash": False,
    }
    return EventSpec(number=number, slot=slot, moment=moment, form=form, **(values | fields))


_MIDNIGHT = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
# Run by every oracle test before the generated cases: each event once broke a figure.
REGRESSION_CASE = Case(
    specs=[
        # Midday of a whole day inside 7d: an hourly series must not put it on the midnight.
        _spec(0, "a-rotated:old", _MIDNIGHT - timedelta(days=3, hours=-12), "gateway"),
        # The same token's new hash (one token, not two); no status but a message (an error).
        _spec(
            1,
            "a-rotated:new",
            _MIDNIGHT - timedelta(days=3, hours=-12, minutes=-30),
            "ingest-naive",
            status=None,
            latency_ms=None,
            error_message="boom",
        ),
        # 01:00 UTC given as 17:00 the day before at -08:00: a UTC day's rollup, not a local one.
        _spec(
            2,
            "b-revoked",
            _MIDNIGHT - timedelta(days=2, hours=-1),
            "gateway",
            zone=timezone(timedelta(hours=-8)),
            status=502,
            latency_ms=30_000,
            failure_kind="connect",
        ),
        _spec(
            3,
            "unknown-1",
            _MIDNIGHT - timedelta(microseconds=1),
            "ingest-offset",
            zone=timezone(timedelta(hours=5, minutes=30)),
            status=404,
            latency_ms=7,
            route_path=None,
        ),
        _spec(4, "a1", NOW - timedelta(days=40), "ingest-epoch-ms"),
        _spec(
            5,
            "b-expired",
            _MIDNIGHT - timedelta(days=5),
            "ingest-z",
            status=500,
            latency_ms=120_001,
        ),
        # Calls with no latency at all: no max latency (not 0 ms), no percentiles.
        _spec(6, "a2", NOW - timedelta(hours=2), "gateway", status=204, latency_ms=None),
        # LLM calls: priced by ingestion through a dated snapshot, unpriced, missing counts,
        # and a gateway call's own cost.
        _spec(
            7,
            "a1",
            NOW - timedelta(hours=3),
            "ingest-z",
            llm=LlmSpec("gpt-4o-mini-2024-07-18", 1200, 350, 200, None, "reported", None),
        ),
        _spec(
            8,
            "b1",
            NOW - timedelta(hours=3),
            "ingest-naive",
            llm=LlmSpec("in-house-7b", 10, 5, None, None, "estimated", None),
        ),
        _spec(
            9,
            "unknown-2",
            NOW - timedelta(hours=4),
            "gateway",
            llm=LlmSpec("gpt-4o-mini-2024-07-18", None, None, None, None, "missing", None),
        ),
        _spec(
            10,
            "a1",
            NOW - timedelta(days=2),
            "gateway",
            llm=LlmSpec("claude-3-5-haiku-20241022", 5, 7, None, 3, "reported", 31_000_000),
        ),
    ],
    batches=[[0, 1, 2, 6, 7, 9], [3, 4, 5, 0, 2, 8, 10, 7]],
)
REGRESSION_BOUNDS = (datetime(2030, 3, 4, 10, 17), datetime(2030, 3, 9, 0, 30))
