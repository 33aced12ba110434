"""The edge Worker's additions to the seed's usage record: accepted, validated, and kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenmanager.usage.ingest import IngestError, parse_usage_record

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HASH = "ab" * 32


def test_edge_fields_are_kept_on_the_event() -> None:
    event = parse_usage_record(
        {
            "token_hash": HASH,
            "route": "/api/echo",
            "response_status": 502,
            "failure_kind": "connect_error",
            "ttfb_ms": 12,
            "bytes_in": 5,
            "bytes_out": 0,
            "source": "edge",
            "event_id": "0193a1b2-0000-7000-8000-000000000001",
        },
        NOW,
    )
    assert (event.failure_kind, event.ttfb_ms, event.bytes_in, event.bytes_out, event.source) == (
        "connect_error",
        12,
        5,
        0,
        "edge",
    )
    assert event.is_error


def test_a_refusal_without_a_well_formed_token_has_an_empty_hash() -> None:
    event = parse_usage_record({"token_hash": "", "response_status": 401}, NOW)
    assert event.token_hash == ""
    assert event.source == "ingest"


@pytest.mark.parametrize(
    ("field", "value"),
    [("source", "gateway"), ("failure_kind", "Not Found"), ("bytes_in", -1), ("ttfb_ms", "1")],
)
def test_bad_edge_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(IngestError) as caught:
        parse_usage_record({"token_hash": HASH, field: value}, NOW)
    assert [f["field"] for f in caught.value.fields] == [field]
