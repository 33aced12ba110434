"""Scope parsing and matching."""

from __future__ import annotations

import re

import pytest

from tokenmanager.tokens.scopes import MAX_SCOPES, grants, has_scopes, parse_scopes


def test_parse_scopes_sorts_and_removes_duplicates() -> None:
    assert parse_scopes(["write", "read:all", "read:all", "*", "a.b-c_d:*"]) == (
        "*",
        "a.b-c_d:*",
        "read:all",
        "write",
    )


def test_parse_scopes_accepts_nested_actions_and_the_longest_names() -> None:
    longest = "a" * 64
    assert parse_scopes(["files:read:meta", f"{longest}:{longest}"]) == (
        f"{longest}:{longest}",
        "files:read:meta",
    )


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "Read",
        "read all",
        " read",
        ":read",
        "read:",
        "read::all",
        "-read",
        "read:-all",
        "a" * 65,
        "**",
        "read*",
        "*:read",
        "read:*:meta",
        "read:*x",
        "réad",
        "read\n",
    ],
)
def test_parse_scopes_rejects_a_malformed_scope_naming_it(scope: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid scope {scope!r}")):
        parse_scopes(["fine", scope])


def test_parse_scopes_rejects_a_non_string() -> None:
    with pytest.raises(ValueError, match="invalid scope 7"):
        parse_scopes([7])  # type: ignore[list-item]


def test_parse_scopes_allows_at_most_max_scopes_distinct_scopes() -> None:
    allowed = [f"s{i}" for i in range(MAX_SCOPES)]
    assert len(parse_scopes([*allowed, *allowed])) == MAX_SCOPES
    with pytest.raises(ValueError, match=f"at most {MAX_SCOPES}"):
        parse_scopes([*allowed, "one-more"])


@pytest.mark.parametrize(
    ("granted", "required"),
    [
        ("read", "read"),
        ("*", "read"),
        ("*", "files:read:meta"),
        ("files:*", "files"),
        ("files:*", "files:read"),
        ("files:*", "files:read:meta"),
        ("files:read:*", "files:read:meta"),
    ],
)
def test_grants_covers_equal_and_wildcard_scopes(granted: str, required: str) -> None:
    assert grants(granted, required)


@pytest.mark.parametrize(
    ("granted", "required"),
    [
        ("read", "write"),
        ("files", "files:read"),
        ("files:read", "files"),
        ("files:read", "files:read:meta"),
        ("files:*", "filesystem"),
        ("files:*", "filesystem:read"),
        ("files:read:*", "files:write"),
        ("files:read:*", "files"),
        ("read:*", "write:read"),
    ],
)
def test_grants_refuses_other_names_and_broader_scopes(granted: str, required: str) -> None:
    assert not grants(granted, required)


def test_has_scopes_needs_every_required_scope_covered() -> None:
    granted = ["files:*", "users:read"]
    assert has_scopes(granted, ["files:write", "users:read"])
    assert not has_scopes(granted, ["files:write", "users:write"])


def test_has_scopes_with_nothing_required_is_true_even_with_nothing_granted() -> None:
    assert has_scopes([], [])


def test_has_scopes_with_nothing_granted_refuses_any_requirement() -> None:
    assert not has_scopes([], ["read"])


def test_has_scopes_accepts_a_one_shot_iterable_of_granted_scopes() -> None:
    assert has_scopes(iter(["read", "write"]), ["read", "write"])
