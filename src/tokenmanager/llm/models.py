"""The types LLM accounting speaks in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Provider(StrEnum):
    """The API family a route speaks; None on a route means "not an LLM, parse nothing"."""

    OPENAI = "openai"  # any OpenAI-compatible API: OpenAI, Azure, vLLM, OpenRouter, Groq, ...
    ANTHROPIC = "anthropic"


class UsageSource(StrEnum):
    REPORTED = "reported"  # the upstream's own figures
    ESTIMATED = "estimated"  # counted by us from the text relayed and the prompt sent
    MISSING = "missing"  # neither: the counts are unknown (None), never 0


@dataclass(frozen=True, slots=True)
class LlmUsage:
    """What one call used. Counts are None when unknown."""

    model: str | None
    prompt_tokens: int | None  # all input tokens, cached ones included
    completion_tokens: int | None  # all output tokens, reasoning included
    cached_prompt_tokens: int | None  # the part of prompt_tokens read from a cache
    reasoning_tokens: int | None  # the part of completion_tokens spent on reasoning
    usage_source: UsageSource
