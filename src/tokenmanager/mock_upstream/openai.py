"""The mock's OpenAI-compatible endpoints: chat completions, legacy completions, embeddings and
the Responses API, as JSON and as streams, with deterministic usage (rule in `llm.py`). Streams
follow OpenAI's shapes byte for byte where tests compare bytes: compact JSON, and with
`stream_options.include_usage` a `"usage":null` on every chunk plus a final usage-only chunk."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokenmanager.mock_upstream.llm import (
    CREATED,
    MESSAGE_TOKENS,
    MockOptions,
    MockStream,
    json_response,
    pieces,
    read_json_body,
    text_of,
    words,
)

SYSTEM_FINGERPRINT = "fp_mock"


def _usage(prompt: int, completion: int, options: MockOptions) -> dict[str, Any]:
    reasoning = options.reasoning_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion + (reasoning or 0),
        "total_tokens": prompt + completion + (reasoning or 0),
    }
    if options.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": min(options.cached_tokens, prompt)}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _includes_usage(body: dict[str, Any], options: MockOptions) -> bool:
    stream_options = body.get("stream_options")
    return (
        isinstance(stream_options, dict)
        and stream_options.get("include_usage") is True
        and not options.ignores_include_usage
    )


def _model(body: dict[str, Any]) -> str:
    return str(body.get("model", "mock-model"))


async def _stream_chunks(
    request: web.Request,
    body: dict[str, Any],
    options: MockOptions,
    *,
    obj: str,
    id_: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any],
) -> web.StreamResponse:
    """Chat or legacy completion chunks, then (when asked) the usage chunk, then [DONE]."""
    include_usage = _includes_usage(body, options)
    model = _model(body)

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": id_,
            "object": obj,
            "created": CREATED,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [choice],
        }
        if include_usage:
            data["usage"] = None  # OpenAI's shape: present on every chunk once asked for
        return data

    async def events(stream: MockStream) -> None:
        for index, choice in enumerate(choices):
            await stream.send(chunk(choice), is_content=0 < index < len(choices) - 1)
        if include_usage:
            await stream.send(
                {
                    "id": id_,
                    "object": obj,
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": usage,
                }
            )
        await stream.send("[DONE]")

    return await MockStream(request, options).run(events)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await read_json_body(request)
    except web.HTTPBadRequest:
        return json_response({"error": {"message": "invalid JSON"}}, status=400)
    options = MockOptions.parse(body)
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    prompt = sum(words(text_of(m.get("content"))) + MESSAGE_TOKENS for m in messages)
    reply = options.reply_to(text_of(messages[-1].get("content")) if messages else "")
    usage = _usage(prompt, words(reply), options)
    if not body.get("stream"):
        return json_response(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": CREATED,
                "model": _model(body),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )
    choices: list[dict[str, Any]] = [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        },
        *(
            {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
            for piece in pieces(reply)
        ),
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"},
    ]
    return await _stream_chunks(
        request,
        body,
        options,
        obj="chat.completion.chunk",
        id_="chatcmpl-mock",
        choices=choices,
        usage=usage,
    )


def _prompts(value: Any) -> list[Any]:
    """A prompt or input: one string or token array, or a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value) if isinstance(value, list) else []


def _prompt_tokens(items: list[Any]) -> int:
    return sum(len(item) if isinstance(item, list) else words(str(item)) for item in items)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json_body(request)
    options = MockOptions.parse(body)
    prompts = _prompts(body.get("prompt"))
    last = prompts[-1] if prompts and isinstance(prompts[-1], str) else ""
    reply = options.reply_to(last)
    usage = _usage(_prompt_tokens(prompts), words(reply), options)
    if not body.get("stream"):
        return json_response(
            {
                "id": "cmpl-mock",
                "object": "text_completion",
                "created": CREATED,
                "model": _model(body),
                "choices": [{"text": reply, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": usage,
            }
        )
    choices: list[dict[str, Any]] = [
        *(
            {"text": piece, "index": 0, "logprobs": None, "finish_reason": None}
            for piece in ["", *pieces(reply)]
        ),
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"},
    ]
    return await _stream_chunks(
        request, body, options, obj="text_completion", id_="cmpl-mock", choices=choices, usage=usage
    )


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    inputs = _prompts(body.get("input"))
    dimensions = body.get("dimensions", 8)
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 1_000_000:
        raise web.HTTPBadRequest(text="dimensions must be an integer from 1 to 1000000")
    prompt = _prompt_tokens(inputs)
    return json_response(
        {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": [round((index + 1) / (d + 1), 6) for d in range(dimensions)],
                }
                for index in range(len(inputs))
            ],
            "model": _model(body),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )


def _responses_prompt(body: dict[str, Any]) -> tuple[int, str]:
    """(prompt tokens, the last input text) of a Responses API request."""
    prompt = 0
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        prompt += words(instructions) + MESSAGE_TOKENS
    items = body.get("input")
    if isinstance(items, str):
        return prompt + words(items) + MESSAGE_TOKENS, items
    last = ""
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            last = text_of(item.get("content"))
            prompt += words(last) + MESSAGE_TOKENS
    return prompt, last


def _response_object(
    body: dict[str, Any], status: str, output: list[Any], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "model": _model(body),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


async def responses(request: web.Request) -> web.StreamResponse:
    body = await read_json_body(request)
    options = MockOptions.parse(body)
    prompt, last = _responses_prompt(body)
    reply = options.reply_to(last)
    reasoning = options.reasoning_tokens or 0
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": min(options.cached_tokens or 0, prompt)},
        "output_tokens": words(reply) + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + words(reply) + reasoning,
    }
    part = {"type": "output_text", "text": reply, "annotations": []}
    message = {
        "type": "message",
        "id": "msg_mock",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    if not body.get("stream"):
        return json_response(_response_object(body, "completed", [message], usage))

    async def events(stream: MockStream) -> None:
        sequence = iter(range(1_000_000_000))

        async def send(kind: str, data: dict[str, Any], *, is_content: bool = False) -> None:
            event = {"type": kind, "sequence_number": next(sequence), **data}
            await stream.send(event, event=kind, is_content=is_content)

        started = _response_object(body, "in_progress", [], None)
        await send("response.created", {"response": started})
        await send("response.in_progress", {"response": started})
        where = {"item_id": "msg_mock", "output_index": 0, "content_index": 0}
        await send(
            "response.output_item.added",
            {"output_index": 0, "item": {**message, "status": "in_progress", "content": []}},
        )
        await send("response.content_part.added", {**where, "part": {**part, "text": ""}})
        for piece in pieces(reply):
            await send("response.output_text.delta", {**where, "delta": piece}, is_content=True)
        await send("response.output_text.done", {**where, "text": reply})
        await send("response.content_part.done", {**where, "part": part})
        await send("response.output_item.done", {"output_index": 0, "item": message})
        completed = _response_object(body, "completed", [message], usage)
        await send("response.completed", {"response": completed})

    return await MockStream(request, options).run(events)
