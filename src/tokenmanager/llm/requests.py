"""Reading an LLM request before it goes upstream: the model asked for, whether it streams,
an estimate of the prompt, and, for OpenAI-compatible streams that do not ask for usage, the
body rewritten to ask for it. Pure: bytes in, bytes out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenmanager.llm.estimation import (
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    TokenEstimator,
    add_content,
    add_token_arrays,
)
from tokenmanager.llm.models import Provider

# Inserted before the body's closing brace, so every other byte the client sent stays as is.
_USAGE_OPTION = b',"stream_options":{"include_usage":true}'


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    body: bytes  # what to send upstream (== the input unless the option was added)
    requested_model: str | None
    is_stream: bool
    usage_option_added: bool  # we added stream_options.include_usage: strip it from the reply
    prompt_estimate_tokens: int | None  # estimate of the prompt from the request text


def prepare_request(
    provider: Provider, path: str, body: bytes, *, add_stream_usage: bool
) -> PreparedRequest:
    """What the gateway needs to know about a request to an LLM route, and what to send.

    The body is rewritten only for an OpenAI-compatible chat or legacy completions request
    with `"stream": true` whose `stream_options.include_usage` is not already true, and only
    when `add_stream_usage`. The Responses API always reports usage in its final event, and
    Anthropic in `message_start`/`message_delta`: never rewritten. A body that is not a JSON
    object in UTF-8 goes through unchanged with nothing known; the path only helps tell the
    Responses API apart, and an unknown path is read like any other JSON body.
    """
    unknown = PreparedRequest(body, None, False, False, None)
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return unknown
    if not isinstance(parsed, dict):
        return unknown
    model = parsed.get("model")
    requested_model = model if isinstance(model, str) and model else None
    is_stream = parsed.get("stream") is True
    usage_option_added = False
    sent = body
    if (
        provider is Provider.OPENAI
        and is_stream
        and add_stream_usage
        and not _is_responses_api(path, parsed)
        and ("messages" in parsed or "prompt" in parsed)
        and not _asks_for_usage(parsed)
    ):
        rewritten = _with_usage_option(body, parsed)
        if rewritten is not None:
            sent, usage_option_added = rewritten, True
    return PreparedRequest(
        body=sent,
        requested_model=requested_model,
        is_stream=is_stream,
        usage_option_added=usage_option_added,
        prompt_estimate_tokens=estimate_prompt_tokens(parsed),
    )


def _is_responses_api(path: str, parsed: dict[str, Any]) -> bool:
    if path.split("?", 1)[0].rstrip("/").endswith("/responses"):
        return True
    return "input" in parsed and "messages" not in parsed and "prompt" not in parsed


def _asks_for_usage(parsed: dict[str, Any]) -> bool:
    options = parsed.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _with_usage_option(body: bytes, parsed: dict[str, Any]) -> bytes | None:
    """The body asking for usage, or None when it cannot be rewritten safely."""
    options = parsed.get("stream_options")
    if "stream_options" not in parsed:
        # `body` parsed as an object with members ("stream" at least), so its last non-space
        # byte is the closing brace of that object: one more member before it is valid JSON,
        # and no key is duplicated. No second parse needed.
        end = len(body.rstrip(b" \t\r\n"))
        if body[end - 1 : end] == b"}":
            return body[: end - 1] + _USAGE_OPTION + body[end - 1 :]
    if options is not None and not isinstance(options, dict):
        return None  # not ours to fix: the upstream will answer it as it would have
    # stream_options is present (other keys, or include_usage false): serialize again.
    rewritten = {**parsed, "stream_options": {**(options or {}), "include_usage": True}}
    return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode()


def estimate_prompt_tokens(parsed: dict[str, Any]) -> int | None:  # noqa: C901 - one branch per API's prompt field
    """An estimate of the prompt from the request's text: chat messages (content strings and
    part arrays), Anthropic's `system`, the Responses API's `instructions` and `input`,
    embeddings' and legacy completions' `input`/`prompt` (token-id arrays counted exactly),
    and tool definitions. None when the body has none of these."""
    estimator = TokenEstimator()
    found = False
    messages = parsed.get("messages")
    if isinstance(messages, list):
        found = True
        estimator.add_tokens(REPLY_PRIMING_TOKENS)
        for message in messages:
            estimator.add_tokens(MESSAGE_OVERHEAD_TOKENS)
            if isinstance(message, dict):
                add_content(estimator, message.get("content"))
                for call in message.get("tool_calls") or ():
                    add_content(estimator, call.get("function") if isinstance(call, dict) else None)
    for key in ("system", "instructions"):
        if key in parsed:
            found = True
            add_content(estimator, parsed[key])
    for key in ("input", "prompt"):
        value = parsed.get(key)
        if value is None:
            continue
        found = True
        if isinstance(value, list) and add_token_arrays(estimator, value):
            continue
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "content" in item:
                    estimator.add_tokens(MESSAGE_OVERHEAD_TOKENS)  # a Responses API message
                add_content(estimator, item)
        else:
            add_content(estimator, value)
    tools = parsed.get("tools") or parsed.get("functions")
    if isinstance(tools, list) and tools:
        # Providers render tool definitions into the prompt; their JSON is a fair proxy.
        estimator.add(json.dumps(tools, ensure_ascii=False, separators=(",", ":")))
    return estimator.tokens if found else None
