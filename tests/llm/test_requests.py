"""prepare_request: what is read from a request, and the usage option added byte-exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.llm import PreparedRequest, Provider, prepare_request
from tokenmanager.llm.estimation import estimate_tokens

OPENAI, ANTHROPIC = Provider.OPENAI, Provider.ANTHROPIC
CHAT = "/v1/chat/completions"


def prepare(
    body: object, *, path: str = CHAT, provider: Provider = OPENAI, add: bool = True
) -> PreparedRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return prepare_request(provider, path, raw, add_stream_usage=add)


def test_a_stream_without_usage_gets_the_option_inserted_and_nothing_else_changes() -> None:
    raw = (
        b'{ "model" : "gpt-4o",\n "stream": true, '
        b'"messages": [{"role":"user","content":"hi \\u00e9"}] }\n'
    )
    prepared = prepare(raw)
    assert prepared.usage_option_added
    assert prepared.body == raw[:-3] + b' ,"stream_options":{"include_usage":true}}\n'
    assert json.loads(prepared.body) == {
        **json.loads(raw),
        "stream_options": {"include_usage": True},
    }
    assert prepared.requested_model == "gpt-4o"
    assert prepared.is_stream


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
        ({}, {"include_usage": True}),
    ],
)
def test_other_stream_options_are_kept(options: dict[str, bool], expected: dict[str, bool]) -> None:
    body = {"model": "m", "stream": True, "messages": [], "stream_options": options}
    prepared = prepare(body)
    assert prepared.usage_option_added
    assert json.loads(prepared.body) == {**body, "stream_options": expected}


@pytest.mark.parametrize(
    ("body", "path", "provider", "add"),
    [
        (
            {
                "model": "m",
                "stream": True,
                "messages": [],
                "stream_options": {"include_usage": True},
            },
            CHAT,
            OPENAI,
            True,
        ),
        ({"model": "m", "stream": True, "messages": []}, CHAT, OPENAI, False),  # route says no
        ({"model": "m", "stream": False, "messages": []}, CHAT, OPENAI, True),
        ({"model": "m", "messages": []}, CHAT, OPENAI, True),
        ({"model": "m", "stream": "true", "messages": []}, CHAT, OPENAI, True),  # not a stream
        ({"model": "m", "stream": True, "input": "hi"}, "/v1/responses", OPENAI, True),
        (
            {"model": "m", "stream": True, "input": "hi"},
            "/openai/x",
            OPENAI,
            True,
        ),  # Responses shape
        ({"model": "m", "stream": True, "messages": []}, "/v1/responses?x=1", OPENAI, True),
        (
            {"model": "m", "stream": True, "messages": [], "max_tokens": 5},
            "/v1/messages",
            ANTHROPIC,
            True,
        ),
        ({"model": "m", "stream": True}, "/v1/other", OPENAI, True),  # no chat or prompt shape
        (
            {"model": "m", "stream": True, "messages": [], "stream_options": "odd"},
            CHAT,
            OPENAI,
            True,
        ),
    ],
)
def test_the_body_is_left_alone_otherwise(
    body: dict[str, object], path: str, provider: Provider, add: bool
) -> None:
    raw = json.dumps(body).encode()
    prepared = prepare(raw, path=path, provider=provider, add=add)
    assert prepared.body is raw
    assert not prepared.usage_option_added
    assert prepared.requested_model == "m"


def test_legacy_completions_streams_get_the_option_too() -> None:
    prepared = prepare({"model": "i", "prompt": "hi", "stream": True}, path="/v1/completions")
    assert prepared.usage_option_added


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe{}",
        b'\xef\xbb\xbf{"model": "m"}',
        b"{" * 100_000,
    ],
)
def test_a_body_that_is_not_a_json_object_passes_through_with_nothing_known(raw: bytes) -> None:
    assert prepare(raw) == PreparedRequest(raw, None, False, False, None)


def test_duplicate_stream_options_keys_are_serialized_again_not_appended() -> None:
    raw = b'{"model":"m","stream":true,"messages":[],"stream_options":{},"stream_options":{"a":1}}'
    prepared = prepare(raw)
    assert prepared.body.count(b"stream_options") == 1
    assert json.loads(prepared.body)["stream_options"] == {"a": 1, "include_usage": True}


def test_a_non_string_model_is_not_a_model() -> None:
    assert prepare({"model": 5, "messages": []}).requested_model is None
    assert prepare({"model": "", "messages": []}).requested_model is None


def test_prompt_estimate_counts_messages_parts_and_tools_but_not_images() -> None:
    text_only = prepare({"messages": [{"role": "user", "content": "describe this picture please"}]})
    with_image = prepare(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe this picture please"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + "A" * 50_000},
                        },
                    ],
                }
            ]
        }
    )
    assert text_only.prompt_estimate_tokens == with_image.prompt_estimate_tokens
    assert text_only.prompt_estimate_tokens == 3 + 3 + estimate_tokens(
        "describe this picture please"
    )
    with_tools = prepare(
        {
            "messages": [{"role": "user", "content": "describe this picture please"}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        }
    )
    assert with_tools.prompt_estimate_tokens is not None
    assert with_tools.prompt_estimate_tokens > text_only.prompt_estimate_tokens


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"input": [1, 2, 3, 4, 5]}, 5),  # token ids count exactly
        ({"input": [[1, 2], [3, 4, 5]]}, 5),
        ({"prompt": [7, 8, 9]}, 3),
        ({"input": "hello"}, estimate_tokens("hello")),
        ({"input": ["a", "b"]}, estimate_tokens("ab")),  # twelfths add up before rounding
        ({"system": "be brief", "messages": []}, 3 + estimate_tokens("be brief")),
        (
            {"system": [{"type": "text", "text": "be brief"}], "messages": []},
            3 + estimate_tokens("be brief"),
        ),
        (
            {"instructions": "be brief", "input": [{"role": "user", "content": "hi"}]},
            estimate_tokens("be brief") + 3 + estimate_tokens("hi"),
        ),
        ({"model": "m"}, None),  # nothing that reads as a prompt
        ({"messages": []}, 3),
    ],
)
def test_prompt_estimate_per_shape(body: dict[str, object], expected: int | None) -> None:
    assert prepare(body).prompt_estimate_tokens == expected


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=30,
    ),
    st.booleans(),
)
def test_any_json_body_is_prepared_without_error_and_stays_equivalent(
    body: object, stream: bool
) -> None:
    document = {"model": "m", "stream": stream, "messages": body, "prompt": body}
    raw = json.dumps(document).encode()
    prepared = prepare(raw)
    parsed = json.loads(prepared.body)
    assert {k: v for k, v in parsed.items() if k != "stream_options"} == document
    assert prepared.usage_option_added == stream
    estimate = prepared.prompt_estimate_tokens
    assert estimate is None if body is None else estimate is not None and estimate >= 0
