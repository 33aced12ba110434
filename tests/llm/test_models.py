"""The LLM usage types: their values are contracts (stored in the database, sent in JSON)."""

from __future__ import annotations

import dataclasses

import pytest

from tokenmanager.llm import LlmUsage, Provider, UsageSource


def test_enum_values_are_the_contract_spellings() -> None:
    assert [p.value for p in Provider] == ["openai", "anthropic"]
    assert [s.value for s in UsageSource] == ["reported", "estimated", "missing"]
    assert Provider("anthropic") is Provider.ANTHROPIC
    assert str(UsageSource.MISSING) == "missing"  # StrEnum: stored as its value


def test_usage_is_immutable_and_compares_by_value() -> None:
    usage = LlmUsage("gpt-4o", 1, 2, None, None, UsageSource.REPORTED)
    assert usage == LlmUsage("gpt-4o", 1, 2, None, None, UsageSource.REPORTED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.prompt_tokens = 5  # type: ignore[misc]
