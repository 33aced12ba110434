"""Route field checks: each refusal is an InvalidInputError naming the offending field."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tokenmanager.errors import InvalidInputError
from tokenmanager.routes.models import MAX_TIMEOUT_S
from tokenmanager.routes.validation import (
    check_credential,
    check_path_prefix,
    check_required_scopes,
    check_timeouts,
    check_upstream_url,
)


@contextmanager
def refused(field: str, reason: str = "") -> Iterator[None]:
    with pytest.raises(InvalidInputError) as caught:
        yield
    assert caught.value.field == field
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("http://10.0.0.5:8080/", "http://10.0.0.5:8080"),
        (" https://api.example.com/v1/ ", "https://api.example.com/v1"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_check_upstream_url_accepts_http_and_https_without_trailing_slash(
    raw: str, expected: str
) -> None:
    assert check_upstream_url(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://files.example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://example.com:70/_",
        "data:text/plain,hello",
        "ws://example.com/socket",
        "//example.com/no-scheme",
        "example.com",
    ],
)
def test_check_upstream_url_refuses_other_schemes(raw: str) -> None:
    with refused("upstream_url", "http:// or https://"):
        check_upstream_url(raw)


@pytest.mark.parametrize(
    "raw", ["http://user:secret@example.com", "http://user@example.com", "http://:pw@example.com"]
)
def test_check_upstream_url_refuses_userinfo(raw: str) -> None:
    with refused("upstream_url", "credentials"):
        check_upstream_url(raw)


@pytest.mark.parametrize("raw", ["https://example.com/#top", "https://example.com/v1#"])
def test_check_upstream_url_refuses_a_fragment(raw: str) -> None:
    with refused("upstream_url", "fragment"):
        check_upstream_url(raw)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (
            "https://example.com/v1?api-version=2024-06-01",
            "https://example.com/v1?api-version=2024-06-01",
        ),
        ("https://example.com/v1/?api-version=2", "https://example.com/v1?api-version=2"),
        ("https://example.com/v1?", "https://example.com/v1"),
    ],
)
def test_check_upstream_url_keeps_a_query_before_which_the_path_goes(
    raw: str, normalised: str
) -> None:
    assert check_upstream_url(raw) == normalised


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("http://", "must name a host"),
        ("http:///path", "must name a host"),
        ("http://example.com:0", "port"),
        ("http://example.com:65536", "not a valid URL"),
        ("http://example.com:port", "not a valid URL"),
        ("http://exa mple.com", "spaces or control characters"),
        ("http://example.com/a\tb", "spaces or control characters"),
        ("http://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_check_upstream_url_refuses_unusable_urls(raw: str, reason: str) -> None:
    with refused("upstream_url", reason):
        check_upstream_url(raw)


def test_check_path_prefix_names_the_path_prefix_field() -> None:
    assert check_path_prefix("/api/") == "/api"
    with refused("path_prefix", "start with /"):
        check_path_prefix("api")


def test_check_required_scopes_sorts_and_refuses_wildcards_and_malformed_scopes() -> None:
    assert check_required_scopes(["write", "read"]) == ("read", "write")
    with refused("required_scopes", "wildcard"):
        check_required_scopes(["files:*"])
    with refused("required_scopes", "wildcard"):
        check_required_scopes(["*"])
    with refused("required_scopes", "invalid scope"):
        check_required_scopes(["Files"])


@pytest.mark.parametrize(
    ("header", "query_param"),
    [("Authorization", None), ("X-Upstream-Key", None), (None, "api_key"), (None, "key.v2~x")],
)
def test_check_credential_accepts_one_injection_place_with_a_value(
    header: str | None, query_param: str | None
) -> None:
    check_credential(header, query_param, "Bearer sk-live-0123456789")


def test_check_credential_accepts_no_credential_at_all() -> None:
    check_credential(None, None, None)


def test_check_credential_refuses_a_header_and_a_query_parameter_together() -> None:
    with refused("upstream_auth_query_param", "not both"):
        check_credential("Authorization", "api_key", "secret")


@pytest.mark.parametrize("control", ["\r", "\n", "\r\n", "\x00", "\t", "\x7f"])
def test_check_credential_refuses_control_characters_in_the_value(control: str) -> None:
    with refused("upstream_auth_value", "control characters"):
        check_credential("Authorization", None, f"Bearer x{control}X-Injected: yes")


@pytest.mark.parametrize(
    "header",
    [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "keep-alive",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "X-API-Key",
    ],
)
def test_check_credential_refuses_headers_the_gateway_owns(header: str) -> None:
    with refused("upstream_auth_header", "managed by the gateway"):
        check_credential(header, None, "secret")


@pytest.mark.parametrize("header", ["", "X Key", "X-Key:", "X-Key\n", "X-Kéy", "(Key)", "a" * 101])
def test_check_credential_refuses_invalid_header_names(header: str) -> None:
    with refused("upstream_auth_header", "not a valid HTTP header name"):
        check_credential(header, None, "secret")


@pytest.mark.parametrize("query_param", ["", "api key", "a&b", "a=b", "key\n", "a" * 101])
def test_check_credential_refuses_invalid_query_parameter_names(query_param: str) -> None:
    with refused("upstream_auth_query_param", "letters, digits"):
        check_credential(None, query_param, "secret")


def test_check_credential_refuses_a_value_without_a_place_to_inject_it() -> None:
    with refused("upstream_auth_value", "needs upstream_auth_header"):
        check_credential(None, None, "secret")


@pytest.mark.parametrize(("header", "query_param"), [("Authorization", None), (None, "key")])
def test_check_credential_refuses_a_place_without_a_value(
    header: str | None, query_param: str | None
) -> None:
    with refused("upstream_auth_value", "is required"):
        check_credential(header, query_param, None)


@pytest.mark.parametrize("value", ["", "x" * 8193])
def test_check_credential_refuses_empty_or_oversized_values(value: str) -> None:
    with refused("upstream_auth_value", "1-8192"):
        check_credential("Authorization", None, value)


def test_check_timeouts_accepts_values_up_to_the_maximum() -> None:
    check_timeouts(0.001, MAX_TIMEOUT_S, MAX_TIMEOUT_S)


@pytest.mark.parametrize(
    ("timeouts", "field"),
    [
        ((0, 1, 1), "connect_timeout_s"),
        ((-1, 1, 1), "connect_timeout_s"),
        ((1, 0, 1), "read_timeout_s"),
        ((1, 1, MAX_TIMEOUT_S + 1), "total_timeout_s"),
        ((1, math.nan, 1), "read_timeout_s"),
        ((1, 1, math.inf), "total_timeout_s"),
    ],
)
def test_check_timeouts_refuses_non_positive_or_too_long_values(
    timeouts: tuple[float, float, float], field: str
) -> None:
    with refused(field, "more than 0"):
        check_timeouts(*timeouts)


def test_check_timeouts_refuses_a_connect_timeout_longer_than_the_total() -> None:
    with refused("connect_timeout_s", "must not exceed total_timeout_s"):
        check_timeouts(10, 1, 5)
