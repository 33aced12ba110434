"""Turning a usage record posted by an external gateway (the seed's body, plus optional LLM
fields) into a UsageEvent. Pure; raises IngestError listing every bad field, so a batch can
report each item's problems. An LLM call's cost is computed here, from the prices handed in
(today's table): stored with the event, it never changes when prices do.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.pricing.models import Price, compute_cost_pusd, match_price
from tokenmanager.usage.events import UsageEvent, uuid7

SEED_FIELDS = frozenset(
    {
        "token_hash", "route", "timestamp", "response_status", "response_time_ms", "ip_address",
        "user_agent", "request_method", "error_message", "event_id",
    }
)  # fmt: skip
# What an edge gateway may add for an LLM call (all optional).
LLM_FIELDS = frozenset(
    {
        "model", "prompt_tokens", "completion_tokens", "cached_prompt_tokens",
        "reasoning_tokens", "usage_source",
    }
)  # fmt: skip
# One call's tokens: far above any model's context, and within the INT column.
MAX_TOKENS = 1_000_000_000
_COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens")
# What our own edge Worker (edge/) adds to the seed's record, so its calls carry the same detail
# as the Python gateway's. `source` may only name a gateway that posts records.
EDGE_FIELDS = frozenset({"failure_kind", "ttfb_ms", "bytes_in", "bytes_out", "source"})
ACCEPTED_FIELDS = SEED_FIELDS | LLM_FIELDS | EDGE_FIELDS
INGEST_SOURCES = frozenset({"ingest", "edge"})
MAX_BYTES = 2**62
_FAILURE_KIND = re.compile(r"[a-z_]{1,32}")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_RESPONSE_TIME_MS = 24 * 3600 * 1000
# Seconds since 1970 stay below this until the year 5138; milliseconds passed it in 1973.
_MILLISECONDS_FROM = 100_000_000_000
_HASH = re.compile(r"[0-9a-fA-F]{64}")
_METHOD = re.compile(r"[A-Za-z]{1,10}")
_LIMITS = {"route": 255, "user_agent": 4096, "error_message": 4096, "model": 200}


class IngestError(ValueError):
    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['message']}" for f in fields))
        self.fields = fields


@dataclass(frozen=True, slots=True)
class _Problems:
    items: list[dict[str, str]]

    def add(self, field: str, message: str) -> None:
        self.items.append({"field": field, "message": message})


def parse_timestamp(value: Any, now: datetime) -> datetime:
    """Seconds or milliseconds since the epoch (number or digit string) or ISO-8601 (naive
    means UTC). ValueError outside 2000-01-01 .. now + 5 minutes."""
    if isinstance(value, bool):
        raise ValueError("must be a number or an ISO-8601 string")
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        value = float(value)
    if isinstance(value, int | float):
        seconds = value / 1000 if value >= _MILLISECONDS_FROM else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("is out of range") from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("is neither epoch seconds/milliseconds nor ISO-8601") from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    else:
        raise ValueError("must be a number or an ISO-8601 string")
    if moment < EARLIEST:
        raise ValueError("is before 2000-01-01")
    if moment > now + MAX_CLOCK_SKEW:
        raise ValueError("is in the future")
    return moment


def _optional_int(
    problems: _Problems, record: dict[str, Any], field: str, low: int, high: int
) -> int | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        problems.add(field, "must be an integer")
        return None
    if not low <= value <= high:
        problems.add(field, f"must be between {low} and {high}")
        return None
    return int(value)


def _optional_text(problems: _Problems, record: dict[str, Any], field: str) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(field, "must be a string")
        return None
    limit = _LIMITS.get(field)
    if limit is not None and len(value) > limit:
        problems.add(field, f"must be at most {limit} characters")
        return None
    if "\x00" in value:  # PostgreSQL's text cannot hold it: the store would refuse the event
        problems.add(field, "must not contain NUL characters")
        return None
    return value


def _llm_usage(problems: _Problems, record: dict[str, Any]) -> LlmUsage | None:
    """The LLM fields of a record (None when it has none). Counts given without a source are
    "reported"; a model without counts is "missing" (unknown, never 0)."""
    if not any(record.get(name) is not None for name in LLM_FIELDS):
        return None
    model = _optional_text(problems, record, "model")
    counts = {name: _optional_int(problems, record, name, 0, MAX_TOKENS) for name in _COUNT_FIELDS}
    prompt, completion = counts["prompt_tokens"], counts["completion_tokens"]
    cached, reasoning = counts["cached_prompt_tokens"], counts["reasoning_tokens"]
    if cached is not None and prompt is not None and cached > prompt:
        problems.add("cached_prompt_tokens", "must not be more than prompt_tokens")
    if reasoning is not None and completion is not None and reasoning > completion:
        problems.add("reasoning_tokens", "must not be more than completion_tokens")
    has_counts = prompt is not None or completion is not None
    raw_source = record.get("usage_source")
    source = UsageSource.REPORTED if has_counts else UsageSource.MISSING
    if raw_source is not None:
        try:
            source = UsageSource(raw_source)
        except ValueError:
            problems.add("usage_source", "must be reported, estimated or missing")
        else:
            if source is UsageSource.MISSING and has_counts:
                problems.add("usage_source", "is missing, but token counts are given")
            elif source is not UsageSource.MISSING and not has_counts:
                problems.add("usage_source", f"is {source}, but no token counts are given")
    return LlmUsage(
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        reasoning_tokens=reasoning,
        usage_source=source,
    )


def parse_usage_record(  # noqa: C901 - one check per optional field, each its own 422
    record: Any, now: datetime, prices: Mapping[str, Price] | None = None
) -> UsageEvent:
    """The event for one posted record, an LLM call's cost computed from `prices` (no prices:
    cost unknown); IngestError naming each bad field."""
    if not isinstance(record, dict):
        raise IngestError([{"field": "body", "message": "must be a JSON object"}])
    problems = _Problems([])
    for unknown in sorted(set(record) - ACCEPTED_FIELDS):
        problems.add(unknown, "unknown field")
    token_hash = record.get("token_hash")
    # "" is a call that presented no well-formed token (refused), as the gateway records it.
    if not isinstance(token_hash, str) or not (token_hash == "" or _HASH.fullmatch(token_hash)):
        problems.add("token_hash", "must be the token's SHA-256 as 64 hexadecimal characters")
    used_at = now
    if record.get("timestamp") is not None:
        try:
            used_at = parse_timestamp(record["timestamp"], now)
        except ValueError as exc:
            problems.add("timestamp", str(exc))
    status = _optional_int(problems, record, "response_status", 100, 599)
    latency = _optional_int(problems, record, "response_time_ms", 0, MAX_RESPONSE_TIME_MS)
    route = _optional_text(problems, record, "route")
    user_agent = _optional_text(problems, record, "user_agent")
    error_message = _optional_text(problems, record, "error_message")
    ip_address = _optional_text(problems, record, "ip_address")
    if ip_address is not None:
        try:
            ip_address = str(ipaddress.ip_address(ip_address))
        except ValueError:
            problems.add("ip_address", "must be an IPv4 or IPv6 address")
    method = _optional_text(problems, record, "request_method")
    if method is not None and not _METHOD.fullmatch(method):
        problems.add("request_method", "must be an HTTP method such as GET or POST")
    ttfb_ms = _optional_int(problems, record, "ttfb_ms", 0, MAX_RESPONSE_TIME_MS)
    bytes_in = _optional_int(problems, record, "bytes_in", 0, MAX_BYTES)
    bytes_out = _optional_int(problems, record, "bytes_out", 0, MAX_BYTES)
    failure_kind = _optional_text(problems, record, "failure_kind")
    if failure_kind is not None and not _FAILURE_KIND.fullmatch(failure_kind):
        problems.add("failure_kind", "must be a failure kind such as not_found or connect_error")
    source = record.get("source") or "ingest"
    if source not in INGEST_SOURCES:
        problems.add("source", f"must be one of {', '.join(sorted(INGEST_SOURCES))}")
    event_id = record.get("event_id")
    if event_id is not None:
        try:
            event_id = str(uuid.UUID(str(event_id)))
        except ValueError:
            problems.add("event_id", "must be a UUID")
    usage = _llm_usage(problems, record)
    if problems.items:
        raise IngestError(problems.items)
    assert isinstance(token_hash, str)
    llm: dict[str, Any] = {}
    if usage is not None:
        llm = {
            "model": usage.model,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_prompt_tokens": usage.cached_prompt_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "usage_source": usage.usage_source.value,
            "cost_pusd": compute_cost_pusd(match_price(usage.model, prices or {}), usage),
        }
    return UsageEvent(
        token_hash=token_hash.lower(),
        route_path=route,
        used_at=used_at,
        response_status=status,
        response_time_ms=latency,
        event_id=event_id or uuid7(),
        ip_address=ip_address,
        user_agent=user_agent,
        request_method=method.upper() if method else None,
        error_message=error_message,
        ttfb_ms=ttfb_ms,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        failure_kind=failure_kind,
        source=source,
        **llm,
    )
