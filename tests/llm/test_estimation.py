"""The heuristic token estimate: its per-class rule, and that pieces add up to the whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.llm.estimation import TokenEstimator, estimate_tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abcd", 1),  # 4 letters: one token
        ("abcde", 2),  # rounded up
        ("hello world, how are you?", 7),  # 23 letters and spaces, 2 punctuation: 81/12
        ("123", 1),  # digits in threes
        ("你好世界", 4),  # one per CJK character
        ("こんにちは", 5),
        ("안녕", 2),
        ("😀", 2),  # outside the BMP
        ("héllo", 2),  # accented letter counts half a token
    ],
)
def test_estimate_follows_the_documented_rule(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_english_prose_lands_near_four_characters_per_token() -> None:
    prose = (
        "The quick brown fox jumps over the lazy dog while the farmer watches from the porch "
        "and wonders whether the weather will hold until the harvest is finally done."
    )
    assert len(prose) / 5 < estimate_tokens(prose) < len(prose) / 3


@given(st.lists(st.text(max_size=50), max_size=20))
def test_pieces_add_up_to_the_whole(pieces: list[str]) -> None:
    estimator = TokenEstimator()
    for piece in pieces:
        estimator.add(piece)
    assert estimator.tokens == estimate_tokens("".join(pieces))
    assert estimator.pieces == sum(1 for piece in pieces if piece)


def test_known_token_counts_add_exactly() -> None:
    estimator = TokenEstimator()
    estimator.add_tokens(7)
    estimator.add("abcd")
    assert estimator.tokens == 8
