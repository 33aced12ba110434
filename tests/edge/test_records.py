"""KV records for the Worker: token entries (rotation grace included), the config with sealed
credentials, and the puts/deletes of a full or incremental sync. Pure; no wrangler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from tokenmanager.edge.records import (
    CONFIG_KEY,
    EdgeRoute,
    build_config,
    build_edge_key,
    build_kv_changes,
    build_token_entries,
    open_secret,
    parse_edge_key,
    seal_secret,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _row(token_id: int, token_hash: str, **extra: Any) -> SimpleNamespace:
    values = {
        "id": token_id,
        "team_id": "t",
        "token_hash": token_hash,
        "scopes": ["echo:read"],
        "expires_at": None,
        "revoked_at": None,
        "previous_token_hash": None,
        "previous_hash_expires_at": None,
        "rate_limit_per_s": None,
        "rate_limit_per_min": 60,
        "team_rate_limit_per_s": None,
        "team_rate_limit_per_min": None,
    }
    values.update(extra)
    return SimpleNamespace(**values)


def test_a_sealed_secret_opens_only_with_its_key_and_route() -> None:
    key = build_edge_key()
    sealed = seal_secret(key, "sk-secret", "/api/a")
    assert "sk-secret" not in sealed
    assert open_secret(key, sealed, "/api/a") == "sk-secret"
    with pytest.raises(InvalidTag):
        open_secret(key, sealed, "/api/b")
    with pytest.raises(InvalidTag):
        open_secret(build_edge_key(), sealed, "/api/a")


def test_an_edge_key_is_32_bytes_of_base64url() -> None:
    assert len(parse_edge_key(build_edge_key())) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        parse_edge_key("c2hvcnQ")


def test_a_rotated_token_keeps_its_old_hash_until_the_grace_end() -> None:
    grace_end = NOW + timedelta(hours=1)
    entries = build_token_entries(
        _row(1, "a" * 64, previous_token_hash="b" * 64, previous_hash_expires_at=grace_end)
    )
    assert entries["token:" + "a" * 64]["expires_at"] is None
    assert entries["token:" + "b" * 64]["expires_at"] == grace_end.isoformat()
    assert entries["token:" + "a" * 64]["rate_limit_per_min"] == 60


def test_the_config_never_holds_a_credential_in_clear() -> None:
    key = build_edge_key()
    route = EdgeRoute("/api/a", "https://u", ("s",), True, 30.0, "X-Key", None, "sk-plain")
    config = build_config([route], ["c" * 64], key, NOW)
    assert "sk-plain" not in str(config)
    sealed = config["routes"][0]["credential"]["sealed_value"]
    assert open_secret(key, sealed, "/api/a") == "sk-plain"
    assert config["imported_hashes"] == ["c" * 64]


def test_a_full_sync_deletes_keys_of_tokens_that_are_gone() -> None:
    known = {1: ["token:" + "a" * 64], 2: ["token:" + "b" * 64]}
    changes = build_kv_changes([_row(1, "a" * 64)], None, known, {"routes": []})
    assert set(changes.puts) == {CONFIG_KEY, "token:" + "a" * 64}
    assert changes.deletes == ["token:" + "b" * 64]
    assert changes.keys_by_token == {1: ["token:" + "a" * 64]}


def test_an_incremental_sync_touches_only_changed_tokens() -> None:
    known = {1: ["token:" + "a" * 64, "token:" + "0" * 64], 2: ["token:" + "b" * 64]}
    # Token 1 changed (its rotated-out hash is past its grace), token 3 is new, 2 is untouched.
    rows = [_row(1, "a" * 64), _row(3, "c" * 64)]
    changes = build_kv_changes(rows, {1, 3}, known, {"routes": []})
    assert set(changes.puts) == {CONFIG_KEY, "token:" + "a" * 64, "token:" + "c" * 64}
    assert changes.deletes == ["token:" + "0" * 64]
    assert changes.keys_by_token[2] == ["token:" + "b" * 64]
    deleted = build_kv_changes([], {2}, changes.keys_by_token, {"routes": []})
    assert deleted.deletes == ["token:" + "b" * 64]
    assert 2 not in deleted.keys_by_token
