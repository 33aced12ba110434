"""The incremental SSE scanner: the event stream grammar under any chunk split."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.llm.sse import SseScanner, Verdict

STREAM = (
    b": a comment first\n"
    b"event: first\n"
    b"data:no space\n"
    b"\n"
    b"data: line one\r\n"
    b"data:  two spaces keep one\r\n"
    b"id: 7\r\n"
    b"\r\n"
    b"event: third\r"
    b'data: {"x": "\xe2\x82\xac"}\r'  # a multi-byte UTF-8 character, split anywhere
    b"\r"
    b"retry: 10\n"
    b"\n"
    b"data: last, never terminated"
)
EVENTS = [
    (b"first", b"no space"),
    (b"", b"line one\n two spaces keep one"),
    (b"third", '{"x": "€"}'.encode()),
]


def scan(chunks: list[bytes], *, holds: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    seen: list[tuple[bytes, bytes]] = []

    def handler(event_type: bytes, data: bytes) -> Verdict:
        seen.append((event_type, data))
        return Verdict.KEEP

    scanner = SseScanner(handler, holds_events=holds)
    relayed = b"".join(scanner.feed(chunk) for chunk in chunks)
    return seen, relayed + scanner.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(cuts=st.lists(st.integers(0, 1000), max_size=len(STREAM)), holds=st.booleans())
def test_events_are_the_same_whatever_the_chunks(cuts: list[int], holds: bool) -> None:
    seen, relayed = scan(split(STREAM, cuts), holds=holds)
    # flush() reads the unterminated last event too: the upstream did send it.
    assert seen == [*EVENTS, (b"", b"last, never terminated")]
    assert relayed == STREAM


def test_every_single_byte_split_at_once() -> None:
    seen, relayed = scan([bytes([byte]) for byte in STREAM], holds=True)
    assert seen[:3] == EVENTS
    assert relayed == STREAM


@given(cuts=st.lists(st.integers(0, 100), max_size=20))
def test_dropped_events_take_their_whole_crlf_with_them(cuts: list[int]) -> None:
    stream = b"data: keep 1\r\n\r\ndata: drop\r\n\r\ndata: keep 2\r\n\r\n"

    def handler(event_type: bytes, data: bytes) -> Verdict:
        return Verdict.DROP if data == b"drop" else Verdict.KEEP

    scanner = SseScanner(handler, holds_events=True)
    relayed = b"".join(scanner.feed(chunk) for chunk in split(stream, cuts)) + scanner.flush()
    assert relayed == b"data: keep 1\r\n\r\ndata: keep 2\r\n\r\n"


def test_an_edit_applies_at_the_data_offset_in_the_raw_event() -> None:
    def handler(event_type: bytes, data: bytes) -> tuple[int, int]:
        return data.index(b"CUT"), 3

    scanner = SseScanner(handler, holds_events=True)
    assert scanner.feed(b"event: e\ndata:   aCUTb\n\n") == b"event: e\ndata:   ab\n\n"


def test_an_event_past_the_cap_is_skipped_and_relayed_as_it_comes() -> None:
    seen: list[bytes] = []

    def handler(event_type: bytes, data: bytes) -> Verdict:
        seen.append(data)
        return Verdict.DROP

    scanner = SseScanner(handler, holds_events=True, max_event_bytes=100)
    big = b"data: " + b"x" * 300 + b"\n\n"
    relayed = b""
    for start in range(0, len(big), 30):
        relayed += scanner.feed(big[start : start + 30])
        assert scanner.buffered_bytes <= 100
    relayed += scanner.feed(b"data: small\n\n")
    assert relayed == big  # the big one relayed unchanged, the small one dropped
    assert seen == [b"small"]
