"""The Workers KV records the edge Worker reads, built from store rows. Pure: no I/O.

`token:<sha256 hex>` holds one token secret's record (a rotated-out hash carries its grace end
as expiry); `config` holds the routes, with each upstream credential sealed under the edge key
(AES-256-GCM, the route's prefix as associated data), and the imported tokens' hashes.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_KEY_PREFIX = "token:"  # noqa: S105 - a KV key prefix
CONFIG_KEY = "config"
EDGE_KEY_BYTES = 32
_NONCE_BYTES = 12


def build_edge_key() -> str:
    """A fresh edge key: 32 random bytes, base64url without padding (the Worker's EDGE_KEY)."""
    return _b64(secrets.token_bytes(EDGE_KEY_BYTES))


def parse_edge_key(edge_key: str) -> bytes:
    """The raw key; ValueError if it is not 32 bytes of base64url."""
    try:
        raw = base64.urlsafe_b64decode(edge_key + "=" * (-len(edge_key) % 4))
    except (ValueError, TypeError):
        raise ValueError("the edge key is not base64url") from None
    if len(raw) != EDGE_KEY_BYTES:
        raise ValueError(f"the edge key must be {EDGE_KEY_BYTES} bytes")
    return raw


def seal_secret(edge_key: str, plaintext: str, associated: str) -> str:
    """`v1.<nonce>.<ciphertext+tag>` (base64url), as edge/src/secrets.js decrypts it."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(parse_edge_key(edge_key)).encrypt(
        nonce, plaintext.encode("utf-8"), associated.encode("utf-8")
    )
    return f"v1.{_b64(nonce)}.{_b64(sealed)}"


def open_secret(edge_key: str, sealed: str, associated: str) -> str:
    """The plaintext of `seal_secret`'s output; raises if the key or associated data differ."""
    version, nonce, ciphertext = sealed.split(".")
    if version != "v1":
        raise ValueError("unknown sealed secret format")
    plaintext = AESGCM(parse_edge_key(edge_key)).decrypt(
        _unb64(nonce), _unb64(ciphertext), associated.encode("utf-8")
    )
    return plaintext.decode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def build_token_entries(row: Any) -> dict[str, dict[str, Any]]:
    """KV key -> record for one token row: its current hash, and its previous hash while the
    rotation grace period has not been cut (the previous record expires at the grace end)."""
    record = {
        "id": row.id,
        "team_id": row.team_id,
        "scopes": list(row.scopes),
        "expires_at": _iso(row.expires_at),
        "revoked_at": _iso(row.revoked_at),
        "rate_limit_per_s": row.rate_limit_per_s,
        "rate_limit_per_min": row.rate_limit_per_min,
        "team_rate_limit_per_s": row.team_rate_limit_per_s,
        "team_rate_limit_per_min": row.team_rate_limit_per_min,
    }
    entries = {TOKEN_KEY_PREFIX + row.token_hash: record}
    previous_hash = row.previous_token_hash
    if previous_hash and row.previous_hash_expires_at is not None:
        grace_end = row.previous_hash_expires_at
        expires_at = grace_end if row.expires_at is None else min(row.expires_at, grace_end)
        entries[TOKEN_KEY_PREFIX + previous_hash] = {**record, "expires_at": _iso(expires_at)}
    return entries


@dataclass(frozen=True, slots=True)
class EdgeRoute:
    """A route as the Worker needs it; `credential_value` is plaintext, memory only."""

    path_prefix: str
    upstream_url: str
    required_scopes: tuple[str, ...]
    is_enabled: bool
    total_timeout_s: float
    credential_header: str | None
    credential_query_param: str | None
    credential_value: str | None = field(repr=False)


def build_config(
    routes: Iterable[EdgeRoute], imported_hashes: Iterable[str], edge_key: str, synced_at: datetime
) -> dict[str, Any]:
    """The `config` record: routes with sealed credentials, and imported hashes (tokens not in
    the `ntk_` format, which skip the checksum pre-check)."""
    built = []
    for route in sorted(routes, key=lambda r: r.path_prefix):
        credential = None
        if route.credential_value is not None:
            credential = {
                "header": route.credential_header,
                "query_param": route.credential_query_param,
                "sealed_value": seal_secret(edge_key, route.credential_value, route.path_prefix),
            }
        built.append(
            {
                "path_prefix": route.path_prefix,
                "upstream_url": route.upstream_url,
                "required_scopes": list(route.required_scopes),
                "is_enabled": route.is_enabled,
                "total_timeout_s": route.total_timeout_s,
                "credential": credential,
            }
        )
    return {
        "routes": built,
        "imported_hashes": sorted(imported_hashes),
        "synced_at": synced_at.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class KvChanges:
    """What one sync writes and deletes, and the token hashes known afterwards."""

    puts: dict[str, Any]
    deletes: list[str]
    keys_by_token: dict[int, list[str]]


def build_kv_changes(
    token_rows: Iterable[Any],
    changed_token_ids: Iterable[int] | None,
    known_keys_by_token: Mapping[int, list[str]],
    config: dict[str, Any],
) -> KvChanges:
    """Puts and deletes for the given token rows and config.

    `changed_token_ids=None` means a full snapshot: every token is in `token_rows`, and every
    previously known key not written now is deleted. Otherwise only the changed ids are
    considered: their rows (if they still exist) are written, their stale keys deleted.
    """
    puts: dict[str, Any] = {CONFIG_KEY: config}
    keys_by_token = {token_id: list(keys) for token_id, keys in known_keys_by_token.items()}
    considered = set(changed_token_ids) if changed_token_ids is not None else None
    seen: set[int] = set()
    for row in token_rows:
        entries = build_token_entries(row)
        puts.update(entries)
        keys_by_token[row.id] = sorted(entries)
        seen.add(row.id)
    for token_id in list(keys_by_token):
        if (considered is None or token_id in considered) and token_id not in seen:
            del keys_by_token[token_id]
    written = set(puts)
    stale: set[str] = set()
    for token_id, keys in known_keys_by_token.items():
        if considered is None or token_id in considered:
            stale.update(key for key in keys if key not in written)
    return KvChanges(puts=puts, deletes=sorted(stale), keys_by_token=keys_by_token)
