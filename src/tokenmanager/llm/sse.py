"""An incremental server-sent-events scanner over relayed bytes: chunks may split anywhere
(inside a line, a CRLF, a UTF-8 sequence). It holds only the current incomplete event, capped;
an event past the cap is skipped (and, when events are held, relayed unchanged)."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum

MAX_EVENT_BYTES = 1024 * 1024

_EOL = re.compile(rb"[\r\n]")


class Verdict(Enum):
    KEEP = "keep"  # relay the event as it came
    DROP = "drop"  # relay nothing of it


# An event's handler sees its type and data; with held events it may also return an edit:
# (offset in the data, bytes removed there), applied to the raw bytes at the same place.
Edit = tuple[int, int]
Handler = Callable[[bytes, bytes], "Verdict | Edit"]


class SseScanner:
    """Splits an event stream into events for `handler`.

    With `holds_events` False, feed() returns its input at once and the scanner only reads.
    With it True, feed() holds back the bytes of the current incomplete event and relays each
    event when it ends, unchanged, dropped, or edited as the handler says.
    """

    __slots__ = (
        "_data",
        "_data_offset",
        "_event_type",
        "_handler",
        "_holds_events",
        "_last_dropped",
        "_line",
        "_line_bytes",
        "_line_start",
        "_pending_cr",
        "_raw",
        "_size",
        "_skipping",
        "max_event_bytes",
    )

    def __init__(
        self, handler: Handler, *, holds_events: bool, max_event_bytes: int = MAX_EVENT_BYTES
    ) -> None:
        self._handler = handler
        self._holds_events = holds_events
        self.max_event_bytes = max_event_bytes
        self._line = bytearray()  # the current incomplete line (without holding events)
        self._raw = bytearray()  # the current event's raw bytes (holding events)
        self._line_start = 0  # where the current line starts in _raw
        # The data lines' values: copies, or (holding events) spans of _raw, not held twice.
        self._data: list[bytes | tuple[int, int]] = []
        self._data_offset = -1  # where the only data line's value starts in _raw
        self._event_type = b""
        self._size = 0  # bytes of the current event so far
        self._line_bytes = 0  # bytes of the current line so far, its terminator included
        self._skipping = False  # the current event passed the cap
        self._pending_cr = False  # the last byte was CR: a following LF belongs to it
        self._last_dropped = False

    @property
    def buffered_bytes(self) -> int:
        copies = sum(len(part) for part in self._data if isinstance(part, bytes))
        return len(self._line) + len(self._raw) + copies

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        start = 0
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                start = 1
                if self._holds_events and not self._size:
                    # The LF of a CRLF that ended the previous event: it goes where that went.
                    if not self._last_dropped:
                        out += b"\n"
                elif self._holds_events:
                    self._size += 1
                    if self._skipping:
                        out += b"\n"
                    else:
                        self._raw += b"\n"
                        self._line_start = len(self._raw)
        position = start
        length = len(chunk)
        while position < length:
            match = _EOL.search(chunk, position)
            if match is None:
                self._take(chunk, position, length, out)
                break
            end = match.start()
            if chunk[end] == 13:  # CR
                if end + 1 < length:
                    after = end + 2 if chunk[end + 1] == 10 else end + 1
                else:
                    after = end + 1
                    self._pending_cr = True
            else:
                after = end + 1
            self._take(chunk, position, after, out)
            self._end_line(after - end, out)
            position = after
        if not self._holds_events:
            return chunk
        return bytes(out)

    def flush(self) -> bytes:
        """At the normal end: read (and relay) an event the stream did not terminate."""
        out = bytearray()
        if self._line or self._raw[self._line_start :]:
            self._end_line(0, out, at_end=True)
        if self._size and not self._skipping:
            self._dispatch(out)
        elif self._holds_events:
            out += self._raw
        self._reset()
        return bytes(out)

    # -- internals -----------------------------------------------------------------------

    def _take(self, chunk: bytes, start: int, end: int, out: bytearray) -> None:
        """Bytes of the current line (terminator included when there is one)."""
        self._size += end - start
        self._line_bytes += end - start
        if self._skipping:
            if self._holds_events:
                out += chunk[start:end]
            return
        if self._size > self.max_event_bytes:
            # Past the cap: stop reading this event; relay what was held and what follows.
            self._skipping = True
            if self._holds_events:
                out += self._raw
                out += chunk[start:end]
            self._raw.clear()
            self._line.clear()
            self._data.clear()
            return
        if self._holds_events:
            self._raw += chunk[start:end]
        else:
            self._line += chunk[start:end]

    def _end_line(self, eol_bytes: int, out: bytearray, *, at_end: bool = False) -> None:
        """A line ended (its terminator was `eol_bytes` long); blank lines end an event."""
        is_blank = self._line_bytes == eol_bytes
        self._line_bytes = 0
        if self._skipping:
            if is_blank and not at_end:
                self._last_dropped = False
                self._reset()
            return
        if self._holds_events:
            line = bytes(self._raw[self._line_start : len(self._raw) - eol_bytes])
            line_start = self._line_start
            self._line_start = len(self._raw)
        else:
            line = bytes(self._line[: len(self._line) - eol_bytes])
            line_start = 0
            self._line.clear()
        if not line:
            if not at_end:
                self._dispatch(out)
            return
        if line[:1] == b":":
            return  # a comment
        field, colon, value = line.partition(b":")
        value_start = line_start + len(field) + len(colon)
        if value[:1] == b" ":
            value = value[1:]
            value_start += 1
        if field == b"data":
            self._data_offset = value_start if not self._data else -1
            if self._holds_events:
                self._data.append((value_start, value_start + len(value)))
            else:
                self._data.append(value)
        elif field == b"event":
            self._event_type = value

    def _dispatch(self, out: bytearray) -> None:
        raw = self._raw
        if self._data:
            data = b"\n".join(
                part if isinstance(part, bytes) else bytes(raw[part[0] : part[1]])
                for part in self._data
            )
            verdict = self._handler(self._event_type, data)
        else:
            verdict = Verdict.KEEP
        if self._holds_events:
            if verdict is Verdict.DROP:
                self._last_dropped = True
            else:
                self._last_dropped = False
                if isinstance(verdict, tuple) and self._data_offset >= 0:
                    offset, removed = verdict
                    at = self._data_offset + offset
                    out += raw[:at]
                    out += raw[at + removed :]
                else:
                    out += raw
        self._reset()

    def _reset(self) -> None:
        self._raw = bytearray()
        self._line.clear()
        self._line_start = 0
        self._data = []
        self._data_offset = -1
        self._event_type = b""
        self._size = 0
        self._line_bytes = 0
        self._skipping = False
