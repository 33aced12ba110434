"""Token estimates from text, for calls whose upstream reported no usage. A heuristic, not a
tokenizer: nothing is downloaded at run time, and only running counts are kept, never the text.

Each character adds twelfths of a token by its class, close to what BPE tokenizers of the
GPT-4/GPT-4o and Claude families average on ordinary text (about 4 characters per token for
English, about 1 token per CJK character, digits in groups of up to 3):

    ASCII letters and whitespace     3/12   (4 per token)
    ASCII digits                     4/12   (3 per token)
    ASCII punctuation and symbols    6/12   (often merged with a neighbour, sometimes not)
    CJK ideographs, kana, Hangul    12/12
    other characters (accented Latin, Cyrillic, Greek, Arabic, ...)   6/12
    characters outside the BMP (emoji, rare ideographs)              24/12

Accuracy: expect about +-25 % on English prose and chat, worse on code, JSON, URLs, base64 and
mixed scripts (these can be off by 50 % or more either way). It has not been calibrated against
a real tokenizer here. Estimated figures are labelled `usage_source = "estimated"` for that
reason; use them for "roughly how much", never as an invoice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_UNITS_PER_TOKEN = 12
_ASCII_DIGIT = re.compile(r"[0-9]")
_ASCII_PUNCT = re.compile(r"[!-/:-@\[-`{-~]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_CJK = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\uff66-\uff9f]"
)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

# Chat formats wrap each message in a few tokens (role, separators), and prime the reply.
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3


def _units(text: str) -> int:
    units = 3 * len(text)
    units += len(_ASCII_DIGIT.findall(text)) + 3 * len(_ASCII_PUNCT.findall(text))
    if not text.isascii():
        non_ascii = len(_NON_ASCII.findall(text))
        cjk = len(_CJK.findall(text))
        astral = len(_ASTRAL.findall(text))
        # Every non-ASCII character counted 3 above: other +3, CJK +9, astral +21.
        units += 3 * non_ascii + 6 * cjk + 18 * astral
    return units


class TokenEstimator:
    """Running token estimate over text seen piece by piece (pieces may split anywhere)."""

    __slots__ = ("_units", "pieces")

    def __init__(self) -> None:
        self._units = 0
        self.pieces = 0  # how many pieces of text were counted (0: nothing seen)

    def add(self, text: str) -> None:
        if text:
            self._units += _units(text)
            self.pieces += 1

    def add_tokens(self, tokens: int) -> None:
        """Add a known number of tokens (token-id arrays, per-message overhead)."""
        self._units += tokens * _UNITS_PER_TOKEN
        self.pieces += 1

    @property
    def tokens(self) -> int:
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
