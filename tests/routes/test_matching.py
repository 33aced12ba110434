"""Route matching at `/` boundaries, longest prefix first, and path-prefix normalisation."""

from __future__ import annotations

import re
from itertools import permutations

import pytest

from tokenmanager.routes.matching import match_route, parse_path_prefix, prefix_matches


@pytest.mark.parametrize("path", ["/api/echo", "/api/echo/", "/api/echo/a", "/api/echo/a/b"])
def test_prefix_matches_the_prefix_itself_and_paths_below_it(path: str) -> None:
    assert prefix_matches("/api/echo", path)


@pytest.mark.parametrize("path", ["/api/echoes", "/api/ech", "/api/echo.json", "/api", "/", ""])
def test_prefix_matches_nothing_that_continues_past_a_slash_boundary(path: str) -> None:
    assert not prefix_matches("/api/echo", path)


@pytest.mark.parametrize("path", ["/", "/anything", "/a/b/c"])
def test_root_prefix_matches_every_path(path: str) -> None:
    assert prefix_matches("/", path)


ROUTES = [("/", "root"), ("/api", "api"), ("/api/echo", "echo"), ("/api/echo/deep", "deep")]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/echo/deep/x", "deep"),
        ("/api/echo/deeper", "echo"),
        ("/api/echo", "echo"),
        ("/api/echoes", "api"),
        ("/apis", "root"),
        ("/other", "root"),
    ],
)
def test_match_route_picks_the_longest_matching_prefix_whatever_the_order(
    path: str, expected: str
) -> None:
    for ordering in permutations(ROUTES):
        assert match_route(ordering, path) == next(r for r in ROUTES if r[1] == expected)


def test_match_route_returns_none_when_no_prefix_matches() -> None:
    assert match_route([("/api/echo", 1), ("/v1", 2)], "/api/echoes") is None
    assert match_route([], "/anything") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/api/echo", "/api/echo"),
        ("/api/echo/", "/api/echo"),
        ("/api/echo//", "/api/echo"),
        ("  /api/echo  ", "/api/echo"),
        ("/", "/"),
        (" / ", "/"),
        ("/v1/users:batch/~me/%2F", "/v1/users:batch/~me/%2F"),
    ],
)
def test_parse_path_prefix_normalises_whitespace_and_trailing_slashes(
    raw: str, expected: str
) -> None:
    assert parse_path_prefix(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "start with /"),
        ("api/echo", "start with /"),
        ("//", "start with /"),
        ("/" + "a" * 255, "at most 255"),
        ("/api//echo", "empty, '.' or '..'"),
        ("/api/./echo", "empty, '.' or '..'"),
        ("/api/../admin", "empty, '.' or '..'"),
        ("/..", "empty, '.' or '..'"),
        ("/api echo", "only URL path characters"),
        ("/api?x=1", "only URL path characters"),
        ("/api#top", "only URL path characters"),
        ("/api\\echo", "only URL path characters"),
        ("/api/\x00", "only URL path characters"),
        ("/api\n/echo", "only URL path characters"),
        ("/café", "only URL path characters"),
    ],
)
def test_parse_path_prefix_rejects_paths_that_are_not_clean(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_path_prefix(raw)


def test_parse_path_prefix_accepts_exactly_255_characters() -> None:
    prefix = "/" + "a" * 254
    assert parse_path_prefix(prefix) == prefix
