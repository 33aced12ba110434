"""Metering one LLM response as the gateway relays it: incremental over the relayed chunks,
bounded in memory for any length, and, when the gateway asked for stream usage on the
client's behalf, giving the client exactly the stream it would have had without asking."""

from __future__ import annotations

import json
import re
from typing import Any

from tokenmanager.llm.bodies import BodyCapture
from tokenmanager.llm.models import LlmUsage, Provider, UsageSource
from tokenmanager.llm.reports import UsageReader
from tokenmanager.llm.requests import PreparedRequest
from tokenmanager.llm.sse import Edit, SseScanner, Verdict

_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')
_SPACE = b" \t\r\n"


class ResponseMeter:
    """Reads one response's model and token usage from the bytes relayed to the client.

    feed() returns the bytes to relay now: its input, unchanged and at once, except when
    `request.usage_option_added` on a 2xx event stream. Then the current incomplete event is
    held back and each event is relayed when it ends, minus what asking for usage added: the
    usage-only chunk (`"choices": []` with a usage object) is dropped, and the top-level
    `"usage": null` OpenAI adds to every other chunk is cut out byte-exactly, the edit checked
    by parsing the result (an event whose edit cannot be checked is relayed unchanged). Call
    flush() at the normal end of the stream for what is still held.

    result():
    - `reported`: the upstream's own figures (a final usage report was read).
    - `estimated`: no final report (the stream ended early, the client left, the upstream
      broke off, a provider ignored the option, a JSON body without usage). Completion tokens
      are estimated from the text actually relayed (content, refusals, tool-call arguments,
      reasoning text where sent), the prompt from the upstream's partial report (Anthropic's
      message_start) or else `request.prompt_estimate_tokens`. A stream that relayed no text
      at all is estimated at 0 completion tokens: nothing was sent, so the estimate of what
      was sent is 0 (the upstream may still bill what it generated and never sent).
    - `missing`: nothing to estimate from (no prompt estimate, or a JSON body too large to
      keep or unreadable, e.g. compressed): every count None, never 0.
    - Non-2xx responses: OpenAI and Anthropic bill nothing for a request they refuse or fail,
      so the result is 0 prompt and 0 completion tokens, `reported` (the error status is the
      upstream's statement), unless the error body itself carries a usage report, which wins.
    The model is the one the upstream says it served, else the requested one.
    """

    __slots__ = (
        "_body",
        "_body_text_known",
        "_is_success",
        "_reader",
        "_request",
        "_sse",
        "_strips",
    )

    def __init__(
        self,
        provider: Provider,
        request: PreparedRequest,
        *,
        status: int,
        content_type: str | None,
    ) -> None:
        self._request = request
        self._reader = UsageReader(provider)
        self._is_success = 200 <= status < 300
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        is_sse = mime == "text/event-stream" or (not mime and request.is_stream)
        self._strips = is_sse and self._is_success and request.usage_option_added
        self._sse: SseScanner | None = None
        self._body: BodyCapture | None = None
        self._body_text_known: bool | None = None  # set once the body was read
        if is_sse:
            self._sse = SseScanner(self._on_event, holds_events=self._strips)
        else:
            self._body = BodyCapture()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in memory now (bounded: one capped event, or a capped body head/tail)."""
        if self._sse is not None:
            return self._sse.buffered_bytes
        assert self._body is not None
        return self._body.buffered_bytes

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to relay to the client now."""
        if self._sse is not None:
            return self._sse.feed(chunk)
        assert self._body is not None
        self._body.feed(chunk)
        return chunk

    def flush(self) -> bytes:
        """Held-back bytes at the normal end of the stream (b"" unless events are held)."""
        if self._sse is not None:
            return self._sse.flush()
        return b""

    def result(self) -> LlmUsage:
        """Reported, else estimated, else missing (see the class docstring)."""
        reader = self._reader
        text_is_known = self._sse is not None
        if self._body is not None:
            if self._body_text_known is None:  # read the body once, whatever calls follow
                body, self._body_text_known = self._body.read()
                reader.read_body(body, with_text=self._body_text_known)
            text_is_known = self._body_text_known
        model = reader.served_model or self._request.requested_model
        if reader.is_complete:
            return LlmUsage(
                model=model,
                prompt_tokens=reader.prompt_tokens,
                completion_tokens=reader.completion_tokens,
                cached_prompt_tokens=reader.cached_prompt_tokens,
                reasoning_tokens=reader.reasoning_tokens,
                usage_source=UsageSource.REPORTED,
            )
        if not self._is_success:
            return LlmUsage(model, 0, 0, None, None, UsageSource.REPORTED)
        prompt = reader.prompt_tokens
        if prompt is None:
            prompt = self._request.prompt_estimate_tokens
        completion = reader.output.tokens if text_is_known else None
        if prompt is None or completion is None:
            return LlmUsage(model, None, None, None, None, UsageSource.MISSING)
        return LlmUsage(
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_prompt_tokens=reader.cached_prompt_tokens,
            reasoning_tokens=None,
            usage_source=UsageSource.ESTIMATED,
        )

    # -- events --------------------------------------------------------------------------

    def _on_event(self, event_type: bytes, data: bytes) -> Verdict | Edit:
        if not self._is_success:
            return Verdict.KEEP
        stripped = data.lstrip(_SPACE)
        if not stripped.startswith(b"{"):
            return Verdict.KEEP  # "[DONE]", pings
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return Verdict.KEEP
        self._reader.read_event(event)
        if not self._strips or not isinstance(event, dict) or "usage" not in event:
            return Verdict.KEEP
        usage = event["usage"]
        if isinstance(usage, dict) and event.get("choices") == []:
            return Verdict.DROP  # the usage-only chunk the client did not ask for
        if usage is None:
            return _cut_usage_null(data, event) or Verdict.KEEP
        return Verdict.KEEP


_LAST_USAGE_NULL = b',"usage":null}'


def _cut_usage_null(data: bytes, event: dict[str, Any]) -> Edit | None:
    """Where to cut `"usage": null` (with one neighbouring comma) out of `data` so that it
    parses to `event` without "usage", or None when no cut checks out.

    OpenAI's own shape, `...,"usage":null}` at the very end with one "usage" in the data, needs
    no second parse: `data` parsed as an object, so its last byte closes the top-level object,
    the `null` before it is that object's last value and `,"usage":` its key and separator
    (a string would end in a quote), and cutting them leaves exactly the other members.
    Any other shape is cut only when the edited data parses back to the expected object.
    """
    end = len(data.rstrip(_SPACE))
    if data.endswith(_LAST_USAGE_NULL, 0, end) and data.count(b'"usage"') == 1:
        return end - len(_LAST_USAGE_NULL), len(_LAST_USAGE_NULL) - 1
    expected = {key: value for key, value in event.items() if key != "usage"}
    for match in _USAGE_NULL.finditer(data):
        start, end = match.start(), match.end()
        before = len(data[:start].rstrip(_SPACE))
        if before and data[before - 1 : before] == b",":
            cut = (before - 1, end)  # ...,"usage":null}
        else:
            after = len(data) - len(data[end:].lstrip(_SPACE))
            if data[after : after + 1] != b",":
                continue
            after += 1
            after = len(data) - len(data[after:].lstrip(_SPACE))
            cut = (start, after)  # {"usage":null,...
        edited = data[: cut[0]] + data[cut[1] :]
        try:
            if json.loads(edited) == expected:
                return cut[0], cut[1] - cut[0]
        except (ValueError, RecursionError):
            continue
    return None
