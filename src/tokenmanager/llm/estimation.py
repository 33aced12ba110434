"""Token estimates from text, for calls whose upstream reported no usage. A heuristic, not a
tokenizer: nothing is downloaded at run time, and only running counts are kept, never the text.

Each character adds twelfths of a token by its class, close to what BPE tokenizers of the
GPT-4/GPT-4o and Claude families average on ordinary text (about 4 characters per token for
English, about 1 token per CJK character, digits in groups of up to 3):

    ASCII letters and whitespace                                   3/12  (4 per token)
    ASCII digits                                                   4/12  (3 per token)
    ASCII punctuation and symbols                                  6/12  (often merged)
    2-byte UTF-8 (accented Latin, Greek, Cyrillic, Hebrew, Arabic)  6/12
    3-byte UTF-8 (CJK, kana, Hangul, Thai, Indic, most symbols)    12/12
    4-byte UTF-8 (emoji, rare ideographs)                          24/12

Accuracy: expect about +-25 % on English prose and chat, worse on code, JSON, URLs, base64 and
mixed scripts (these can be off by 50 % or more either way). It has not been calibrated against
a real tokenizer here. Estimated figures are labelled `usage_source = "estimated"` for that
reason; use them for "roughly how much", never as an invoice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

_UNITS_PER_TOKEN = 12
# Classes by UTF-8 byte, counted with bytes.translate (C speed, no per-character Python).
_DIGITS = b"0123456789"
_PUNCT = bytes(b for b in range(0x21, 0x7F) if not chr(b).isalnum())
_LEAD_2 = bytes(range(0xC0, 0xE0))  # U+0080..U+07FF: accented Latin, Greek, Cyrillic, ...
_LEAD_3 = bytes(range(0xE0, 0xF0))  # U+0800..U+FFFF: CJK, kana, Hangul, Thai, Indic, ...
_LEAD_4 = bytes(range(0xF0, 0xF8))  # outside the BMP: emoji, rare ideographs


def _count(data: bytes, members: bytes) -> int:
    return len(data) - len(data.translate(None, members))


def _units(text: str) -> int:
    data = text.encode("utf-8", "surrogatepass")
    units = _count(data, _DIGITS) + 3 * _count(data, _PUNCT)
    if text.isascii():
        return units + 3 * len(data)
    two, three, four = _count(data, _LEAD_2), _count(data, _LEAD_3), _count(data, _LEAD_4)
    ascii_chars = len(data) - 2 * two - 3 * three - 4 * four
    return units + 3 * ascii_chars + 6 * two + 12 * three + 24 * four


# Chat formats wrap each message in a few tokens (role, separators), and prime the reply.
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3


# Stream deltas are a few characters each: they are counted in batches of up to this many
# characters (cheaper than a count per delta; the count is per character, so batching does not
# change it), which bounds what is held.
_BATCH_CHARS = 4096


class TokenEstimator:
    """Running token estimate over text seen piece by piece (pieces may split anywhere)."""

    __slots__ = ("_batch", "_batch_chars", "_units", "pieces")

    def __init__(self) -> None:
        self._units = 0
        self._batch: list[str] = []
        self._batch_chars = 0
        self.pieces = 0  # how many pieces of text were counted (0: nothing seen)

    def add(self, text: str) -> None:
        if text:
            self._batch.append(text)
            self._batch_chars += len(text)
            self.pieces += 1
            if self._batch_chars >= _BATCH_CHARS:
                self._count_batch()

    def _count_batch(self) -> None:
        if self._batch:
            self._units += _units("".join(self._batch))
            self._batch.clear()
            self._batch_chars = 0

    def add_tokens(self, tokens: int) -> None:
        """Add a known number of tokens (token-id arrays, per-message overhead)."""
        self._units += tokens * _UNITS_PER_TOKEN
        self.pieces += 1

    @property
    def tokens(self) -> int:
        self._count_batch()
        return -(-self._units // _UNITS_PER_TOKEN)


def estimate_tokens(text: str) -> int:
    """The estimate for one text (0 for the empty text)."""
    estimator = TokenEstimator()
    estimator.add(text)
    return estimator.tokens


# Keys whose values are what a model reads; everything else in a content part (image URLs,
# base64 data, cache_control, ids) is skipped: an image's bytes are not its token count.
_TEXT_KEYS = ("text", "content", "input", "arguments", "output", "thinking", "name")


def add_content(estimator: TokenEstimator, value: Any, *, depth: int = 0) -> None:
    """Count the text of a message content: a string, content parts, or nested blocks."""
    if depth > 16:  # bodies are client input: no unbounded recursion
        return
    if isinstance(value, str):
        estimator.add(value)
    elif isinstance(value, list):
        for part in value:
            add_content(estimator, part, depth=depth + 1)
    elif isinstance(value, dict):
        for key in _TEXT_KEYS:
            item = value.get(key)
            if isinstance(item, dict) and key in ("input", "arguments"):
                # A tool call's arguments: the model wrote (or reads) them as JSON text.
                estimator.add(json.dumps(item, ensure_ascii=False))
            elif item is not None:
                add_content(estimator, item, depth=depth + 1)


def add_token_arrays(estimator: TokenEstimator, values: Iterable[Any]) -> bool:
    """Count token-id arrays (embeddings and legacy completions accept them) exactly; False
    when `values` holds anything else."""
    items = list(values)
    if items and all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        estimator.add_tokens(len(items))
        return True
    if items and all(isinstance(item, list) for item in items):
        return all(add_token_arrays(estimator, item) for item in items)
    return False
