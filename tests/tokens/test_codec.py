"""The token secret format: shape, uniqueness, checksum, hash and display prefix."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.tokens.codec import (
    BASE62_ALPHABET,
    build_token_secret,
    display_prefix,
    encode_base62,
    has_valid_checksum,
    hash_token,
    is_token_hash,
)

TOKEN_PATTERN = re.compile(r"^ntk_[0-9A-Za-z]{43}[0-9A-Za-z]{6}$")
BODY_START = len("ntk_")


def token_from_random_part(random_part: str) -> str:
    """A token built by the documented scheme, independently of the codec's own helper."""
    return "ntk_" + random_part + encode_base62(zlib.crc32(random_part.encode()), 6)


random_parts = st.text(alphabet=BASE62_ALPHABET, min_size=43, max_size=43)
valid_tokens = st.one_of(st.builds(build_token_secret), random_parts.map(token_from_random_part))


def substitutions(token: str) -> Iterator[str]:
    """Every token that differs from `token` in exactly one base62 character after the prefix."""
    for position in range(BODY_START, len(token)):
        for replacement in BASE62_ALPHABET:
            if replacement != token[position]:
                yield token[:position] + replacement + token[position + 1 :]


def transpositions(token: str) -> Iterator[str]:
    """Every token made by swapping two different neighbouring characters after the prefix."""
    for position in range(BODY_START, len(token) - 1):
        first, second = token[position], token[position + 1]
        if first != second:
            yield token[:position] + second + first + token[position + 2 :]


def test_build_token_secret_matches_the_documented_format() -> None:
    for _ in range(200):
        token = build_token_secret()
        assert TOKEN_PATTERN.match(token), token
        assert token == token_from_random_part(token[4:47])
        assert has_valid_checksum(token)


def test_build_token_secret_never_repeats_over_many_tokens() -> None:
    tokens = {build_token_secret() for _ in range(20_000)}
    assert len(tokens) == 20_000


@pytest.mark.parametrize(
    ("number", "width", "expected"),
    [(0, 3, "000"), (61, 2, "0z"), (62, 2, "10"), (62**6 - 1, 6, "zzzzzz")],
)
def test_encode_base62_is_fixed_width_most_significant_first(
    number: int, width: int, expected: str
) -> None:
    assert encode_base62(number, width) == expected


def test_encode_base62_refuses_a_number_wider_than_width() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_base62(62**3, 3)


@given(token=valid_tokens)
def test_has_valid_checksum_rejects_every_single_character_substitution(token: str) -> None:
    assert has_valid_checksum(token)
    assert not any(has_valid_checksum(changed) for changed in substitutions(token))


@given(token=valid_tokens)
def test_has_valid_checksum_rejects_every_neighbour_transposition(token: str) -> None:
    assert has_valid_checksum(token)
    assert not any(has_valid_checksum(changed) for changed in transpositions(token))


@pytest.mark.parametrize(
    "make_bad",
    [
        pytest.param(lambda t: "NTK_" + t[4:], id="upper-case prefix"),
        pytest.param(lambda t: "tok_" + t[4:], id="other prefix"),
        pytest.param(lambda t: t[4:], id="no prefix"),
        pytest.param(lambda t: t[:-1], id="one short"),
        pytest.param(lambda t: t + "0", id="one long"),
        pytest.param(lambda t: " " + t[:-1], id="leading space"),
        pytest.param(lambda t: t[:-1] + "\n", id="trailing newline"),
        pytest.param(lambda _t: "", id="empty"),
    ],
)
def test_has_valid_checksum_rejects_wrong_prefix_or_length(make_bad: Callable[[str], str]) -> None:
    token = build_token_secret()
    assert not has_valid_checksum(make_bad(token))


# The last two are a digit and a letter to str.isalnum(), but not base62.
@pytest.mark.parametrize("intruder", ["-", "_", "+", "/", "=", "é", "\u0663", "\uff21"])
def test_has_valid_checksum_rejects_non_base62_characters_even_with_a_matching_crc(
    intruder: str,
) -> None:
    random_part = intruder + "a" * 42
    assert not has_valid_checksum(token_from_random_part(random_part))


def test_hash_token_is_the_sha256_hex_digest() -> None:
    token = build_token_secret()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert is_token_hash(hash_token(token))


@pytest.mark.parametrize(
    "value",
    ["", "a" * 63, "a" * 65, "A" * 64, "g" * 64, hash_token("x")[:-1] + " "],
)
def test_is_token_hash_rejects_anything_but_64_lower_case_hex_characters(value: str) -> None:
    assert not is_token_hash(value)


def test_display_prefix_reveals_at_most_ten_characters_of_the_token() -> None:
    token = build_token_secret()
    shown = display_prefix(token)
    assert token.startswith(shown)
    assert shown.startswith("ntk_")
    assert len(shown) <= 10
