"""A bounded capture of a JSON response body and the top-level fields read from it: small
bodies are kept whole; a large one (embeddings run to megabytes) keeps only its head and tail,
where an LLM API puts "model" and "usage"."""

from __future__ import annotations

import json
import re
from typing import Any

WHOLE_BODY_BYTES = 256 * 1024
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024

_DECODER = json.JSONDecoder()


class BodyCapture:
    __slots__ = ("_head", "_tail", "_whole", "total_bytes")

    def __init__(self) -> None:
        self._whole: bytearray | None = bytearray()
        self._head = b""
        self._tail = bytearray()
        self.total_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        whole = len(self._whole) if self._whole is not None else 0
        return whole + len(self._head) + len(self._tail)

    def feed(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        if self._whole is not None:
            self._whole += chunk
            if len(self._whole) <= WHOLE_BODY_BYTES:
                return
            self._head = bytes(self._whole[:HEAD_BYTES])
            self._tail = self._whole[-TAIL_BYTES:]
            self._whole = None
            return
        if len(chunk) >= TAIL_BYTES:
            self._tail = bytearray(chunk[-TAIL_BYTES:])
            return
        self._tail += chunk
        if len(self._tail) > 2 * TAIL_BYTES:  # trim now and then, not on every chunk
            del self._tail[:-TAIL_BYTES]

    def read(self) -> tuple[Any, bool]:
        """(the parsed body, True) when kept whole, else ({"model", "usage"} found at the top
        level of head and tail, False). Anything unreadable reads as {}."""
        if self._whole is not None:
            try:
                return json.loads(bytes(self._whole)), True
            except (ValueError, RecursionError):
                return {}, False
        head = self._head.decode("utf-8", "replace")
        tail = bytes(self._tail[-TAIL_BYTES:]).decode("utf-8", "replace")
        found: dict[str, Any] = {}
        for key in ("model", "usage"):
            value = _top_level_in_tail(tail, key)
            if value is _ABSENT:
                value = _top_level_in_head(head, key)
            if value is not _ABSENT:
                found[key] = value
        return found, False


_ABSENT = object()


# Each candidate costs a parse of up to 64 KiB: a body full of nested decoys is not worth more.
_MAX_CANDIDATES = 8


def _values(text: str, key: str, *, last: bool) -> list[tuple[int, int, Any]]:
    """(key start, value end, value) for the first (or last) few `"key": value` in text that
    parse."""
    found = []
    matches = list(re.finditer(rf'"{key}"\s*:\s*', text))
    for match in matches[-_MAX_CANDIDATES:] if last else matches[:_MAX_CANDIDATES]:
        try:
            value, end = _DECODER.raw_decode(text, match.end())
        except (ValueError, RecursionError):
            continue
        found.append((match.start(), end, value))
    return found


def _top_level_in_tail(tail: str, key: str) -> Any:
    """The last `"key": value` after which the text closes exactly one object: top level."""
    for _start, end, value in reversed(_values(tail, key, last=True)):
        rest = tail[end:].lstrip()
        rest = rest[1:] if rest.startswith(",") else rest
        try:
            closed = json.loads("{" + rest)
        except (ValueError, RecursionError):
            continue
        if isinstance(closed, dict):
            return value
    return _ABSENT


def _top_level_in_head(head: str, key: str) -> Any:
    """The first `"key": value` that, closed right after it, makes the head a JSON object."""
    for _start, end, value in _values(head, key, last=False):
        try:
            whole = json.loads(head[:end] + "}")
        except (ValueError, RecursionError):
            continue
        if isinstance(whole, dict) and whole.get(key) == value:
            return value
    return _ABSENT
