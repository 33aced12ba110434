"""ResponseMeter over the mock upstream's real bytes: exact counts for every format under any
chunk split, the client's bytes untouched (or exactly as without the added usage option),
bounded memory, and honest estimates when no usage is reported."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenmanager.llm import LlmUsage, PreparedRequest, Provider, ResponseMeter, UsageSource
from tokenmanager.llm.estimation import estimate_tokens
from tokenmanager.llm.sse import MAX_EVENT_BYTES

from .conftest import Exchange

REPORTED = UsageSource.REPORTED


def usage(
    model: str,
    prompt: int | None,
    completion: int | None,
    cached: int | None = None,
    reasoning: int | None = None,
    source: UsageSource = REPORTED,
) -> LlmUsage:
    return LlmUsage(model, prompt, completion, cached, reasoning, source)


EXPECTED_REPORTS = {
    "chat_json": usage("gpt-4o", 5, 5),
    "chat_json_details": usage("o3", 5, 12, cached=2, reasoning=7),
    "chat_sse_added": usage("gpt-4o", 5, 5),
    "chat_sse_asked": usage("gpt-4o", 5, 5, cached=3),
    "chat_sse_long": usage("gpt-4o", 5, 300),
    "completions_json": usage("gpt-3.5-turbo-instruct", 4, 7),
    "completions_sse_added": usage("gpt-3.5-turbo-instruct", 4, 7),
    "embeddings_json": usage("text-embedding-3-small", 7, 0),
    "embeddings_large": usage("text-embedding-3-large", 120, 0),
    "responses_json": usage("gpt-5", 10, 16, cached=4, reasoning=11),
    "responses_sse": usage("gpt-5", 5, 5, cached=0, reasoning=0),
    # Anthropic: prompt = input 5 + cache read 4 + cache creation 2; cached = the cache reads.
    "messages_json": usage("claude-sonnet-4-20250514", 5, 5, cached=0),
    "messages_sse": usage("claude-sonnet-4-20250514", 11, 5, cached=4),
    # An error status bills nothing.
    "messages_error": usage("claude-sonnet-4-20250514", 0, 0),
}
# What the client must receive: the bytes it would have had without the added option.
CLIENT_BYTES_AS = {
    "chat_sse_added": "chat_sse_plain",
    "chat_sse_long": "chat_sse_long_plain",
    "completions_sse_added": "completions_sse_plain",
    "chat_sse_ignored": "chat_sse_plain",
}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def meter_for(exchange: Exchange, prepared: PreparedRequest | None = None) -> ResponseMeter:
    return ResponseMeter(
        exchange.provider,
        prepared or exchange.prepared,
        status=exchange.status,
        content_type=exchange.content_type,
    )


def run(exchange: Exchange, chunks: list[bytes]) -> tuple[bytes, LlmUsage]:
    meter = meter_for(exchange)
    relayed = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    return relayed, meter.result()


def test_the_mock_answers_every_case_as_expected(exchanges: dict[str, Exchange]) -> None:
    assert exchanges["messages_error"].status == 400
    assert all(x.status == 200 for name, x in exchanges.items() if name != "messages_error")
    added = exchanges["chat_sse_added"]
    assert added.prepared.usage_option_added
    assert b'"choices":[]' in added.body
    assert added.body.count(b'"usage":null') == 7  # role, 5 words, stop
    assert b'"usage"' not in exchanges["chat_sse_plain"].body
    assert len(exchanges["embeddings_large"].body) > 1024 * 1024


@pytest.mark.parametrize("name", sorted(EXPECTED_REPORTS))
def test_exact_counts_when_fed_whole(exchanges: dict[str, Exchange], name: str) -> None:
    relayed, result = run(exchanges[name], [exchanges[name].body])
    assert result == EXPECTED_REPORTS[name]
    expected_bytes = exchanges[CLIENT_BYTES_AS[name]].body if name in CLIENT_BYTES_AS else None
    assert relayed == (expected_bytes or exchanges[name].body)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(EXPECTED_REPORTS)),
    cuts=st.lists(st.integers(0, 10**7), max_size=40),
)
def test_exact_counts_and_bytes_under_any_chunk_split(
    exchanges: dict[str, Exchange], name: str, cuts: list[int]
) -> None:
    exchange = exchanges[name]
    relayed, result = run(exchange, split(exchange.body, cuts))
    assert result == EXPECTED_REPORTS[name]
    expected_bytes = (
        exchanges[CLIENT_BYTES_AS[name]].body if name in CLIENT_BYTES_AS else exchange.body
    )
    assert relayed == expected_bytes


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(
        ["chat_sse_added", "completions_sse_added", "messages_sse", "responses_sse"]
    ),
    newline=st.sampled_from([b"\r\n", b"\r", b"\n"]),
    data=st.data(),
)
def test_every_line_ending_reads_and_strips_alike(
    exchanges: dict[str, Exchange], name: str, newline: bytes, data: st.DataObject
) -> None:
    exchange = exchanges[name]
    body = exchange.body.replace(b"\n", newline)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    relayed, result = run(exchange, split(body, cuts))
    assert result == EXPECTED_REPORTS[name]
    plain = exchanges[CLIENT_BYTES_AS[name]].body if name in CLIENT_BYTES_AS else exchange.body
    assert relayed == plain.replace(b"\n", newline)


def test_usage_only_chunk_and_usage_null_are_all_that_is_taken_out(
    exchanges: dict[str, Exchange],
) -> None:
    added, plain = exchanges["chat_sse_added"].body, exchanges["chat_sse_plain"].body
    relayed, _ = run(exchanges["chat_sse_added"], [added])
    assert relayed == plain
    assert added.replace(b',"usage":null', b"").split(b"\n\n") == [
        *plain.split(b"\n\n")[:-2],
        added.split(b"\n\n")[-3],  # the usage-only chunk, absent from what the client gets
        b"data: [DONE]",
        b"",
    ]


def test_without_the_added_option_feed_returns_its_input_at_once(
    exchanges: dict[str, Exchange],
) -> None:
    for name in ("chat_sse_asked", "chat_sse_plain", "messages_sse", "responses_sse", "chat_json"):
        meter = meter_for(exchanges[name])
        body = exchanges[name].body
        for chunk in split(body, list(range(0, len(body), 7))):
            assert meter.feed(chunk) is chunk
        assert meter.flush() == b""


def test_an_edit_that_cannot_be_checked_relays_the_event_unchanged(
    exchanges: dict[str, Exchange],
) -> None:
    # Duplicate keys: cutting either "usage":null leaves one behind, so no cut checks out.
    odd = b'data: {"usage":null,"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
    nested = (
        b'data: {"choices":[{"index":0,"delta":{"content":"\\"usage\\":null"}}],"usage":null}\n\n'
    )
    meter = meter_for(exchanges["chat_sse_added"])
    assert meter.feed(odd) == odd
    assert meter.feed(nested) == (
        b'data: {"choices":[{"index":0,"delta":{"content":"\\"usage\\":null"}}]}\n\n'
    )


@pytest.mark.parametrize(
    ("event", "relayed"),
    [
        (b'{"usage":null,"id":"a","choices":[]}', b'{"id":"a","choices":[]}'),
        (b'{"id":"a", "usage" : null , "obfuscation":"xy"}', b'{"id":"a" , "obfuscation":"xy"}'),
        (b'{"id":"a","usage":null}', b'{"id":"a"}'),
        (b'{"id":"a","usage":null}  ', b'{"id":"a"}  '),
        (b'{"usage":null}', b'{"usage":null}'),  # nothing to cut it from: relayed unchanged
    ],
)
def test_usage_null_is_cut_wherever_it_sits(
    exchanges: dict[str, Exchange], event: bytes, relayed: bytes
) -> None:
    meter = meter_for(exchanges["chat_sse_added"])
    assert meter.feed(b"data: " + event + b"\n\n") == b"data: " + relayed + b"\n\n"
    assert json.loads(relayed).keys() <= json.loads(event).keys()


def test_a_client_leaving_mid_stream_is_estimated_from_the_text_relayed(
    exchanges: dict[str, Exchange],
) -> None:
    exchange = exchanges["chat_sse_added"]
    events = exchange.body.split(b"\n\n")
    cut = b"\n\n".join(events[:4]) + b"\n\n" + events[4][:20]  # role + 3 words, then gone
    meter = meter_for(exchange)
    relayed = meter.feed(cut)  # no flush: the stream did not end normally
    assert json.loads(relayed.split(b"\n\n")[3][6:])["choices"][0]["delta"]["content"] == " to:"
    result = meter.result()
    assert result.usage_source is UsageSource.ESTIMATED
    assert result.model == "gpt-4o"
    assert result.prompt_tokens == exchange.prepared.prompt_estimate_tokens
    assert result.completion_tokens == estimate_tokens("mock reply to:")
    assert result.completion_tokens > 0
    assert result.cached_prompt_tokens is None
    assert result.reasoning_tokens is None


def test_a_provider_ignoring_the_option_is_estimated(exchanges: dict[str, Exchange]) -> None:
    exchange = exchanges["chat_sse_ignored"]
    relayed, result = run(exchange, [exchange.body])
    assert relayed == exchanges["chat_sse_plain"].body
    assert result == usage(
        "gpt-4o",
        exchange.prepared.prompt_estimate_tokens,
        estimate_tokens("mock reply to: hello there"),
        source=UsageSource.ESTIMATED,
    )


def test_anthropic_stream_cut_after_message_start_keeps_the_reported_prompt(
    exchanges: dict[str, Exchange],
) -> None:
    exchange = exchanges["messages_sse"]
    events = exchange.body.split(b"\n\n")
    meter = meter_for(exchange)
    meter.feed(b"\n\n".join(events[:6]) + b"\n\n")  # start, block start, ping, 3 deltas
    result = meter.result()
    assert result == usage(
        "claude-sonnet-4-20250514",
        11,
        estimate_tokens("mock reply to:"),
        cached=4,
        source=UsageSource.ESTIMATED,
    )


def test_responses_stream_cut_before_completed_is_estimated(exchanges: dict[str, Exchange]) -> None:
    exchange = exchanges["responses_sse"]
    body = exchange.body
    meter = meter_for(exchange)
    meter.feed(body[: body.index(b"event: response.output_text.done")])
    result = meter.result()
    assert result.usage_source is UsageSource.ESTIMATED
    assert result.model == "gpt-5"
    assert result.completion_tokens == estimate_tokens("mock reply to: hello there")
    assert result.prompt_tokens == exchange.prepared.prompt_estimate_tokens


def test_a_stream_that_relayed_nothing_is_estimated_at_zero_output(
    exchanges: dict[str, Exchange],
) -> None:
    meter = meter_for(exchanges["chat_sse_added"])
    result = meter.result()
    assert result.usage_source is UsageSource.ESTIMATED
    assert result.completion_tokens == 0
    assert result.prompt_tokens == exchanges["chat_sse_added"].prepared.prompt_estimate_tokens


def test_nothing_estimable_is_missing_never_zero(exchanges: dict[str, Exchange]) -> None:
    unknown_request = PreparedRequest(b"not json", None, True, False, None)
    meter = meter_for(exchanges["chat_sse_plain"], unknown_request)
    meter.feed(exchanges["chat_sse_plain"].body[:300])
    assert meter.result() == LlmUsage("gpt-4o", None, None, None, None, UsageSource.MISSING)
    # A JSON body cut short: its text cannot be read, so its output cannot be estimated.
    truncated = meter_for(exchanges["chat_json"])
    truncated.feed(exchanges["chat_json"].body[:-40])
    result = truncated.result()
    assert result.usage_source is UsageSource.MISSING
    assert (result.prompt_tokens, result.completion_tokens) == (None, None)
    assert result.model == "gpt-4o"


def test_a_json_body_without_usage_is_estimated_from_its_text(
    exchanges: dict[str, Exchange],
) -> None:
    exchange = exchanges["chat_json"]
    body = json.loads(exchange.body)
    del body["usage"]
    meter = meter_for(exchange)
    meter.feed(json.dumps(body).encode())
    assert meter.result() == usage(
        "gpt-4o",
        exchange.prepared.prompt_estimate_tokens,
        estimate_tokens("mock reply to: hello there"),
        source=UsageSource.ESTIMATED,
    )


def test_result_is_the_same_when_asked_twice(exchanges: dict[str, Exchange]) -> None:
    for name in ("chat_json", "embeddings_large", "messages_sse"):
        meter = meter_for(exchanges[name])
        meter.feed(exchanges[name].body)
        meter.flush()
        assert meter.result() == meter.result() == EXPECTED_REPORTS[name]


def test_model_falls_back_to_the_requested_one(exchanges: dict[str, Exchange]) -> None:
    exchange = exchanges["chat_json"]
    body = json.loads(exchange.body)
    del body["model"]
    meter = meter_for(exchange)
    meter.feed(json.dumps(body).encode())
    assert meter.result() == usage("gpt-4o", 5, 5)
    assert exchange.prepared.requested_model == "gpt-4o"


# -- memory ----------------------------------------------------------------------------


def test_memory_stays_bounded_over_a_very_long_stream(exchanges: dict[str, Exchange]) -> None:
    exchange = exchanges["chat_sse_long"]
    word_event = exchange.body.split(b"\n\n")[5] + b"\n\n"  # " w4" with "usage":null
    plain_event = word_event.replace(b',"usage":null', b"")
    events = 100_000
    stream = memoryview(word_event * events)
    step = len(word_event) - 5  # chunk boundaries wander through the events
    meter = meter_for(exchange)
    largest = 0
    relayed_bytes = 0
    for start in range(0, len(stream), step):
        relayed_bytes += len(meter.feed(bytes(stream[start : start + step])))
        largest = max(largest, meter.buffered_bytes)
    relayed_bytes += len(meter.flush())
    assert len(stream) // step >= events
    assert 0 < largest < len(word_event)  # never more than the current incomplete event
    assert relayed_bytes == events * len(plain_event)
    result = meter.result()
    assert result.usage_source is UsageSource.ESTIMATED
    # " w4": a space and a letter at 3/12 each, a digit at 4/12.
    assert result.completion_tokens == -(-events * 10 // 12)


@pytest.mark.parametrize("name", ["chat_sse_added", "chat_sse_plain", "messages_sse"])
def test_an_event_past_the_cap_is_relayed_unchanged_and_skipped(
    exchanges: dict[str, Exchange], name: str
) -> None:
    exchange = exchanges[name]
    huge = b"data: {" + b'"pad":"' + b"x" * (3 * MAX_EVENT_BYTES) + b'"}\n\n'
    meter = meter_for(exchange)
    relayed = bytearray()
    for start in range(0, len(huge), 64 * 1024):
        relayed += meter.feed(huge[start : start + 64 * 1024])
        assert meter.buffered_bytes <= MAX_EVENT_BYTES
    relayed += meter.feed(exchange.body) + meter.flush()
    plain = exchanges[CLIENT_BYTES_AS[name]].body if name in CLIENT_BYTES_AS else exchange.body
    assert bytes(relayed) == huge + plain
    assert meter.result() == EXPECTED_REPORTS.get(name, meter.result())


def test_a_large_json_body_keeps_only_head_and_tail(exchanges: dict[str, Exchange]) -> None:
    exchange = exchanges["embeddings_large"]
    meter = meter_for(exchange)
    for start in range(0, len(exchange.body), 16 * 1024):
        meter.feed(exchange.body[start : start + 16 * 1024])
        assert meter.buffered_bytes <= 400 * 1024
    assert meter.result() == EXPECTED_REPORTS["embeddings_large"]


@settings(max_examples=30, deadline=None)
@given(
    padding=st.integers(300 * 1024, 3 * 1024 * 1024),
    model_first=st.booleans(),
    cuts=st.lists(st.integers(0, 10**8), max_size=20),
)
def test_top_level_model_and_usage_are_found_at_either_end(
    padding: int, model_first: bool, cuts: list[int]
) -> None:
    # Decoys: a nested "usage" and "model" inside the large middle must not be taken.
    middle = {
        "data": [
            {
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                "model": "decoy",
                "text": "z" * padding,
            }
        ]
    }
    head = {"model": "served"} if model_first else {}
    tail = {} if model_first else {"model": "served"}
    body = json.dumps({**head, **middle, **tail, "usage": {"prompt_tokens": 9, "total_tokens": 9}})
    prepared = PreparedRequest(b"{}", "asked", False, False, None)
    meter = ResponseMeter(Provider.OPENAI, prepared, status=200, content_type="application/json")
    for chunk in split(body.encode(), cuts):
        meter.feed(chunk)
    assert meter.result() == usage("served", 9, 0)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=30), max_size=8),
    obfuscation=st.none() | st.text(max_size=8),
    ascii_only=st.booleans(),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(0, 10**6), max_size=25),
)
def test_any_stream_with_the_option_reaches_the_client_as_without_it(
    texts: list[str],
    obfuscation: str | None,
    ascii_only: bool,
    newline: bytes,
    cuts: list[int],
) -> None:
    def event(data: dict[str, object]) -> bytes:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=ascii_only).encode()
        return b"data: " + encoded + newline + newline

    def chunk(text: str, *, asked: bool) -> bytes:
        data: dict[str, object] = {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}}],
        }
        if asked:
            data["usage"] = None
        if obfuscation is not None:
            data["obfuscation"] = obfuscation  # OpenAI sends it after "usage"
        return event(data)

    done = b"data: [DONE]" + newline + newline
    plain = b"".join(chunk(text, asked=False) for text in texts) + done
    usage_chunk = event(
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 8}}
    )
    asked = b"".join(chunk(text, asked=True) for text in texts) + usage_chunk + done
    prepared = PreparedRequest(b"{}", "m", True, True, 4)
    meter = ResponseMeter(Provider.OPENAI, prepared, status=200, content_type="text/event-stream")
    relayed = b"".join(meter.feed(part) for part in split(asked, cuts)) + meter.flush()
    assert relayed == plain
    assert meter.result() == usage("m", 3, 8)
