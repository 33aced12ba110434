"""The token secret format: `ntk_` + 43 base62 characters of 256 random bits + 6 base62
characters of CRC32 over the random part (GitHub's scheme). Pure functions, no I/O.

The checksum lets the gateway reject a mistyped or made-up token without any lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

TOKEN_PREFIX = "ntk_"  # noqa: S105 - the public prefix
BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_BITS = 256
RANDOM_CHARS = 43  # ceil(256 / log2(62))
CHECKSUM_CHARS = 6  # ceil(32 / log2(62))
TOKEN_LENGTH = len(TOKEN_PREFIX) + RANDOM_CHARS + CHECKSUM_CHARS
DISPLAY_PREFIX_CHARS = len(TOKEN_PREFIX) + 6
_BASE62_SET = frozenset(BASE62_ALPHABET)


def encode_base62(number: int, width: int) -> str:
    """Fixed-width base62, most significant digit first. ValueError if it does not fit."""
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62_ALPHABET[remainder])
    if number:
        raise ValueError("number does not fit in the given width")
    return "".join(reversed(digits))


def build_token_secret() -> str:
    """A fresh token secret from the OS's CSPRNG."""
    random_part = encode_base62(secrets.randbits(RANDOM_BITS), RANDOM_CHARS)
    return TOKEN_PREFIX + random_part + _checksum(random_part)


def _checksum(random_part: str) -> str:
    return encode_base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_CHARS)


def has_valid_checksum(token_secret: str) -> bool:
    """True if the string is shaped like an `ntk_` token and its checksum matches."""
    if len(token_secret) != TOKEN_LENGTH or not token_secret.startswith(TOKEN_PREFIX):
        return False
    body = token_secret[len(TOKEN_PREFIX) :]
    if not _BASE62_SET.issuperset(body):
        return False
    random_part, checksum = body[:RANDOM_CHARS], body[RANDOM_CHARS:]
    return secrets.compare_digest(_checksum(random_part), checksum)


def hash_token(token_secret: str) -> str:
    """The stored form: SHA-256 hex digest (the seed's `token_hash`)."""
    return hashlib.sha256(token_secret.encode("utf-8")).hexdigest()


def display_prefix(token_secret: str) -> str:
    """The short, non-secret part shown in lists, e.g. `ntk_3fQ9aZ`."""
    return token_secret[:DISPLAY_PREFIX_CHARS]


def is_token_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
