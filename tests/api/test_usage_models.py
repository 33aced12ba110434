"""The analytics answers' models: the LLM figures the analytics service is gaining fit as they
are (counts, cost as a decimal string, null when unknown), absent ones are not invented, and a
field no model declares fails loudly instead of reaching a client unnoticed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tokenmanager.api.usage_models import UsageEntry, build_route_usage, build_usage_stats

WINDOW = {"since": "2026-12-05T05:00:00+00:00", "until": "2026-12-06T05:00:00+00:00"}
LATENCY = {
    "p50_response_time": 120.0,
    "p95_response_time": 480.5,
    "p99_response_time": None,
    "max_response_time": 900,
}
LLM = {"prompt_tokens": 1200, "completion_tokens": None, "cost_usd": "0.004210"}


def _stats(**overview_extra: Any) -> dict[str, Any]:
    return {
        "window": {**WINDOW, "bucket": "hour"},
        "overview": {
            "total_calls": 3, "total_errors": 1, "avg_response_time": 300.0,
            "success_rate": 66.67, "error_rate": 33.33, **LATENCY, "unique_tokens": 1,
            "active_tokens": 1, "idle_tokens": 0, "bytes_in": 10, "bytes_out": 20,
            **overview_extra,
        },
        "hourly_usage": [
            {"hour": WINDOW["since"], "call_count": 3, "error_count": 1,
             "avg_response_time": 300.0, "p50_response_time": 120.0, "p95_response_time": 480.5}
        ],
        "top_tokens": [
            {"token_id": None, "name": "unknown token", "team_id": None, "usage_count": 3,
             "error_count": 1, "avg_response_time": 300.0, "success_rate": 66.67,
             "token_hash_prefix": "9f86d081", **LLM}
        ],
        "top_routes": [],
    }  # fmt: skip


def test_stats_keep_llm_figures_and_invent_none_that_are_absent() -> None:
    built = build_usage_stats(_stats(**LLM))
    dumped = built.model_dump(exclude_unset=True)

    assert dumped["overview"]["cost_usd"] == "0.004210"
    assert dumped["overview"]["completion_tokens"] is None  # unknown stays null, never 0
    assert dumped["top_tokens"][0]["prompt_tokens"] == 1200
    assert "cost_usd" not in dumped["hourly_usage"][0]  # not reported: not in the answer


def test_a_field_no_model_declares_is_refused() -> None:
    with pytest.raises(ValidationError, match="renamed_calls"):
        build_usage_stats(_stats(renamed_calls=3))


def test_route_usage_rows_take_the_llm_call_fields() -> None:
    call = {
        "route_path": "/api/openai", "used_at": WINDOW["since"], "response_status": 200,
        "response_time_ms": 120, "request_method": "POST", "ip_address": None,
        "failure_kind": None, "error_message": None, "token_id": 1, "model": "gpt-x",
        "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": "0.000015",
        "usage_source": "reported",
    }  # fmt: skip
    errors = {"by_status": [], "by_failure_kind": [], "top_messages": []}
    answer = {
        "window": WINDOW,
        "route": {"route_path": "/api/openai"},
        "stats": {
            "total_calls": 1, "error_count": 0, "error_rate": 0.0, "success_rate": 100.0,
            "avg_response_time": 120.0, **LATENCY, **LLM,
        },
        "token_distribution": [],
        "latency_trend": [],
        "errors": errors,
    }  # fmt: skip
    assert build_route_usage(answer).stats.cost_usd == "0.004210"
    assert UsageEntry.model_validate(call).usage_source == "reported"
