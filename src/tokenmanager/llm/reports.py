"""Reading what an LLM upstream reports: served model, token usage and the text it sent, from
parsed JSON bodies and stream events of the OpenAI-compatible APIs (chat completions, legacy
completions, embeddings, Responses) and Anthropic Messages. Pure: parsed JSON in, figures out."""

from __future__ import annotations

from typing import Any

from tokenmanager.llm.estimation import TokenEstimator, add_content
from tokenmanager.llm.models import Provider

# Responses API stream events whose "delta" is text the model produced.
_RESPONSES_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.audio.transcript.delta",
    }
)
_OPENAI_TEXT_FIELDS = frozenset({"content", "refusal", "reasoning_content", "reasoning"})
_ANTHROPIC_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _count(value: Any) -> int | None:
    """A token count as reported, or None for anything that is not a non-negative integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _nested(usage: dict[str, Any], details: str, key: str) -> int | None:
    part = usage.get(details)
    return _count(part.get(key)) if isinstance(part, dict) else None


class UsageReader:
    """What one response said so far. `is_complete` once a final usage report was read;
    `output` estimates the text the model sent (kept as a running count, not as text)."""

    __slots__ = (
        "_anthropic",
        "cached_prompt_tokens",
        "completion_tokens",
        "is_complete",
        "output",
        "prompt_tokens",
        "provider",
        "reasoning_tokens",
        "served_model",
    )

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.served_model: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_prompt_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.is_complete = False
        self.output = TokenEstimator()
        self._anthropic: dict[str, int] = {}

    # -- stream events -------------------------------------------------------------------

    def read_event(self, event: Any) -> None:
        """One stream event's parsed data (a chunk, a Responses event, an Anthropic event)."""
        if not isinstance(event, dict):
            return
        if self.provider is Provider.ANTHROPIC:
            self._read_anthropic_event(event)
            return
        kind = event.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            self._read_responses_event(kind, event)
            return
        self._note_model(event.get("model"))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._read_openai_usage(usage)
        choices = event.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._read_openai_choice(choice)

    def _read_openai_choice(self, choice: dict[str, Any]) -> None:
        text = choice.get("text")  # legacy completions
        if isinstance(text, str):
            self.output.add(text)
        message = choice.get("delta") or choice.get("message")
        if not isinstance(message, dict):
            return
        for field, value in message.items():
            # reasoning_content (DeepSeek, vLLM), reasoning (OpenRouter): sent text too.
            if field in _OPENAI_TEXT_FIELDS and value:
                if isinstance(value, str):
                    self.output.add(value)  # the common case: one content delta
                else:
                    add_content(self.output, value)
            elif field == "tool_calls" and isinstance(value, list):
                for call in value:
                    if isinstance(call, dict):
                        add_content(self.output, call.get("function"))
            elif field == "function_call":
                add_content(self.output, value)

    def _read_responses_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind in _RESPONSES_TEXT_DELTAS:
            delta = event.get("delta")
            if isinstance(delta, str):
                self.output.add(delta)
            return
        response = event.get("response")
        if isinstance(response, dict):
            self._note_model(response.get("model"))
            usage = response.get("usage")
            if isinstance(usage, dict):  # response.completed, .incomplete, .failed
                self._read_openai_usage(usage)

    def _read_anthropic_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self._note_model(message.get("model"))
                self._merge_anthropic(message.get("usage"), is_final=False)
        elif kind == "content_block_start":
            add_content(self.output, event.get("content_block"))
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for field in ("text", "partial_json", "thinking"):
                    add_content(self.output, delta.get(field))
        elif kind == "message_delta":
            # Its output_tokens is the final count (message_start's is a placeholder).
            self._merge_anthropic(event.get("usage"), is_final=True)

    # -- whole JSON bodies ---------------------------------------------------------------

    def read_body(self, body: Any, *, with_text: bool) -> None:
        """A whole JSON response (or its top-level "model" and "usage" only, `with_text`
        False, when the body was too large to keep)."""
        if not isinstance(body, dict):
            return
        self._note_model(body.get("model"))
        usage = body.get("usage")
        if self.provider is Provider.ANTHROPIC:
            self._merge_anthropic(usage, is_final=True)
        elif isinstance(usage, dict):
            self._read_openai_usage(usage)
        if not with_text or self.is_complete:
            return  # the text is only needed to estimate what was not reported
        if self.provider is Provider.ANTHROPIC:
            add_content(self.output, body.get("content"))
            return
        choices = body.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._read_openai_choice(choice)
        output = body.get("output")  # Responses API items: messages, tool calls, reasoning
        if isinstance(output, list):
            for item in output:
                if isinstance(item, dict):
                    add_content(self.output, item.get("content"))
                    add_content(self.output, item.get("arguments"))
                    add_content(self.output, item.get("summary"))

    # -- usage objects -------------------------------------------------------------------

    def _note_model(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self.served_model = model

    def _read_openai_usage(self, usage: dict[str, Any]) -> None:
        if "input_tokens" in usage or "output_tokens" in usage:  # Responses API
            prompt = _count(usage.get("input_tokens"))
            completion = _count(usage.get("output_tokens"))
            cached = _nested(usage, "input_tokens_details", "cached_tokens")
            reasoning = _nested(usage, "output_tokens_details", "reasoning_tokens")
        else:
            prompt = _count(usage.get("prompt_tokens"))
            completion = _count(usage.get("completion_tokens"))
            total = _count(usage.get("total_tokens"))
            if completion is None and prompt is not None and total is not None:
                # Embeddings report prompt and total only: what is left is the output (0).
                completion = total - prompt if total >= prompt else None
            cached = _nested(usage, "prompt_tokens_details", "cached_tokens")
            reasoning = _nested(usage, "completion_tokens_details", "reasoning_tokens")
        if prompt is None or completion is None:
            return
        self.prompt_tokens, self.completion_tokens = prompt, completion
        self.cached_prompt_tokens, self.reasoning_tokens = cached, reasoning
        self.is_complete = True

    def _merge_anthropic(self, usage: Any, *, is_final: bool) -> None:
        """Anthropic's usage, the last value of each field winning; prompt_tokens counts every
        input token: input_tokens + cache_read_input_tokens + cache_creation_input_tokens."""
        if not isinstance(usage, dict):
            return
        for field in _ANTHROPIC_FIELDS:
            value = _count(usage.get(field))
            if value is not None:
                self._anthropic[field] = value
        fields = self._anthropic
        if "input_tokens" in fields:
            self.prompt_tokens = (
                fields["input_tokens"]
                + fields.get("cache_read_input_tokens", 0)
                + fields.get("cache_creation_input_tokens", 0)
            )
            self.cached_prompt_tokens = fields.get("cache_read_input_tokens")
        if is_final and "output_tokens" in fields:
            self.completion_tokens = fields["output_tokens"]
            self.is_complete = self.prompt_tokens is not None
