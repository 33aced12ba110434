"""Unit tests of the gateway's pure request rewriting (`tokenmanager.gateway.rewriting`)."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlsplit

import pytest

from tokenmanager.gateway.rewriting import (
    FramingError,
    UnsafePathError,
    build_response_headers,
    build_upstream_headers,
    build_upstream_url,
    check_framing,
    client_address,
    extract_token,
)
from tokenmanager.routes.models import UpstreamCredential

UPSTREAM = "http://upstream.test/v1"
BEARER_CREDENTIAL = UpstreamCredential(
    header="Authorization", query_param=None, value="Bearer sk-u"
)
KEY_CREDENTIAL = UpstreamCredential(header="X-Upstream-Key", query_param=None, value="sk-injected")
QUERY_CREDENTIAL = UpstreamCredential(header=None, query_param="key", value="sk-query")
TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def _names(headers: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in headers]


def _values_of(headers: list[tuple[str, str]], wanted: str) -> list[str]:
    return [value for name, value in headers if name.lower() == wanted.lower()]


# -- extract_token ---------------------------------------------------------------------------


def test_extract_token_reads_x_api_key() -> None:
    assert extract_token([(b"x-api-key", b" ntk_abc ")]) == "ntk_abc"


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER"])
def test_extract_token_reads_bearer_authorization_in_any_case(scheme: bytes) -> None:
    assert extract_token([(b"authorization", scheme + b" ntk_abc")]) == "ntk_abc"


def test_extract_token_prefers_x_api_key_over_bearer() -> None:
    headers = [(b"authorization", b"Bearer ntk_bearer"), (b"x-api-key", b"ntk_key")]
    assert extract_token(headers) == "ntk_key"


@pytest.mark.parametrize(
    "headers",
    [[], [(b"authorization", b"Basic dXNlcjpwdw==")], [(b"user-agent", b"x")]],
    ids=["no headers", "basic auth", "unrelated header"],
)
def test_extract_token_returns_none_without_a_token(headers: list[tuple[bytes, bytes]]) -> None:
    assert extract_token(headers) is None


# -- check_framing ---------------------------------------------------------------------------


def test_check_framing_returns_the_declared_content_length() -> None:
    assert check_framing([(b"content-length", b"42")], 1024) == 42


def test_check_framing_returns_none_without_a_length_or_when_chunked() -> None:
    assert check_framing([(b"host", b"x")], 1024) is None
    assert check_framing([(b"transfer-encoding", b"chunked")], 1024) is None


def test_check_framing_accepts_identical_duplicate_content_lengths() -> None:
    assert check_framing([(b"content-length", b"5"), (b"content-length", b"5")], 1024) == 5


def test_check_framing_refuses_content_length_with_transfer_encoding() -> None:
    with pytest.raises(FramingError):
        check_framing([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], 1024)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"5, 6")],
    ],
    ids=["two headers", "one list"],
)
def test_check_framing_refuses_differing_content_lengths(
    headers: list[tuple[bytes, bytes]],
) -> None:
    with pytest.raises(FramingError):
        check_framing(headers, 1024)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b""])
def test_check_framing_refuses_a_malformed_content_length(value: bytes) -> None:
    with pytest.raises(FramingError):
        check_framing([(b"content-length", value)], 1024)


def test_check_framing_raises_overflow_when_headers_exceed_the_limit() -> None:
    headers = [(b"x-big", b"a" * 100)]
    with pytest.raises(OverflowError):
        check_framing(headers, 100)
    assert check_framing(headers, 200) is None


# -- build_upstream_headers ------------------------------------------------------------------


def test_build_upstream_headers_removes_hop_by_hop_headers() -> None:
    hop_by_hop = [
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
        (b"trailer", b"x-checksum"),
        (b"upgrade", b"websocket"),
        (b"proxy-authorization", b"Basic eA=="),
    ]
    upstream = build_upstream_headers([*hop_by_hop, (b"accept", b"*/*")], None)
    assert upstream == [("accept", "*/*")]


def test_build_upstream_headers_removes_headers_named_in_connection() -> None:
    headers = [
        (b"connection", b"close, X-Secret-Debug ,x-other"),
        (b"x-secret-debug", b"1"),
        (b"x-other", b"2"),
        (b"x-kept", b"3"),
    ]
    assert build_upstream_headers(headers, None) == [("x-kept", "3")]


def test_build_upstream_headers_removes_the_clients_credentials_host_and_length() -> None:
    headers = [
        (b"host", b"gateway.test"),
        (b"content-length", b"3"),
        (b"authorization", b"Bearer ntk_client"),
        (b"x-api-key", b"ntk_client"),
        (b"user-agent", b"tests"),
    ]
    assert build_upstream_headers(headers, None) == [("user-agent", "tests")]


def test_build_upstream_headers_keeps_other_headers_in_order() -> None:
    headers = [(b"accept", b"a"), (b"x-one", b"1"), (b"x-one", b"2"), (b"user-agent", b"u")]
    assert build_upstream_headers(headers, None) == [
        ("accept", "a"),
        ("x-one", "1"),
        ("x-one", "2"),
        ("user-agent", "u"),
    ]


@pytest.mark.parametrize(
    "client_headers",
    [
        [(b"connection", b"close, Authorization")],
        [(b"connection", b"authorization"), (b"authorization", b"Bearer ntk_client")],
        [(b"authorization", b"Bearer sk-client-chosen")],
        [],
    ],
    ids=["named in Connection", "named and sent", "client sends its own", "plain"],
)
def test_build_upstream_headers_always_carries_exactly_the_injected_authorization(
    client_headers: list[tuple[bytes, bytes]],
) -> None:
    upstream = build_upstream_headers(client_headers, BEARER_CREDENTIAL)
    assert _values_of(upstream, "authorization") == ["Bearer sk-u"]
    assert "connection" not in _names(upstream)


@pytest.mark.parametrize(
    "client_headers",
    [
        [(b"connection", b"X-Upstream-Key")],
        [(b"connection", b"close, x-upstream-key"), (b"x-upstream-key", b"sk-client")],
        [(b"x-upstream-key", b"sk-client")],
    ],
    ids=["named in Connection", "named and sent", "client sends its own"],
)
def test_build_upstream_headers_injects_a_custom_header_credential_whatever_the_client_sends(
    client_headers: list[tuple[bytes, bytes]],
) -> None:
    upstream = build_upstream_headers(
        [*client_headers, (b"x-api-key", b"ntk_client")], KEY_CREDENTIAL
    )
    assert _values_of(upstream, "x-upstream-key") == ["sk-injected"]
    assert "x-api-key" not in _names(upstream)


def test_build_upstream_headers_injects_no_header_for_a_query_credential() -> None:
    upstream = build_upstream_headers([(b"authorization", b"Bearer ntk_x")], QUERY_CREDENTIAL)
    assert upstream == []


# -- build_response_headers ------------------------------------------------------------------


def test_build_response_headers_drops_hop_by_hop_and_connection_named_headers() -> None:
    relayed = build_response_headers(
        [
            (b"Content-Type", b"application/json"),
            (b"Connection", b"keep-alive, X-Internal"),
            (b"X-Internal", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Server", b"upstream"),
            (b"X-Request-Id", b"abc"),
        ]
    )
    assert relayed == [(b"content-type", b"application/json"), (b"x-request-id", b"abc")]


# -- build_upstream_url ----------------------------------------------------------------------


def test_build_upstream_url_appends_the_rest_of_the_path_and_the_query() -> None:
    url = build_upstream_url(UPSTREAM, "/api/echo", "/api/echo/a/b", b"/api/echo/a/b", b"x=1", None)
    assert url == f"{UPSTREAM}/a/b?x=1"


def test_build_upstream_url_maps_the_bare_prefix_to_the_upstream_url() -> None:
    assert build_upstream_url(UPSTREAM, "/api/echo", "/api/echo", None, b"", None) == UPSTREAM


def test_build_upstream_url_passes_the_whole_path_on_a_root_route() -> None:
    assert build_upstream_url(UPSTREAM, "/", "/a/b", b"/a/b", b"", None) == f"{UPSTREAM}/a/b"


def test_build_upstream_url_keeps_the_clients_percent_encoding() -> None:
    url = build_upstream_url(
        UPSTREAM, "/api/echo", "/api/echo/a/b c", b"/api/echo/a%2Fb%20c", b"", None
    )
    assert url == f"{UPSTREAM}/a%2Fb%20c"


def test_build_upstream_url_encodes_the_path_when_there_is_no_raw_path() -> None:
    url = build_upstream_url(UPSTREAM, "/api/echo", "/api/echo/a b", None, b"", None)
    assert url == f"{UPSTREAM}/a%20b"


@pytest.mark.parametrize(
    ("path", "raw_path"),
    [
        ("/api/echo/../admin", b"/api/echo/../admin"),
        ("/api/echo/..", b"/api/echo/.."),
        ("/api/echo/a/../../x", b"/api/echo/a/../../x"),
        ("/api/echo/./x", b"/api/echo/./x"),
        ("/api/echo/../x", b"/api/echo/%2e%2e/x"),  # decoded by the server
    ],
)
def test_build_upstream_url_refuses_dot_segments(path: str, raw_path: bytes) -> None:
    with pytest.raises(UnsafePathError):
        build_upstream_url(UPSTREAM, "/api/echo", path, raw_path, b"", None)


def test_build_upstream_url_puts_the_upstreams_own_query_before_the_clients() -> None:
    url = build_upstream_url(
        "https://upstream.test/v1?api-version=2", "/api", "/api/a/b", b"/api/a/b", b"x=1", None
    )
    assert url == "https://upstream.test/v1/a/b?api-version=2&x=1"


def test_build_upstream_url_injects_a_query_credential() -> None:
    url = build_upstream_url(UPSTREAM, "/api", "/api/x", b"/api/x", b"x=1", QUERY_CREDENTIAL)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{UPSTREAM}/x"
    assert parse_qsl(parts.query) == [("x", "1"), ("key", "sk-query")]


def test_build_upstream_url_replaces_a_client_sent_query_credential() -> None:
    url = build_upstream_url(
        UPSTREAM, "/api", "/api/x", b"/api/x", b"key=sk-client&x=1&key=again", QUERY_CREDENTIAL
    )
    assert parse_qsl(urlsplit(url).query) == [("x", "1"), ("key", "sk-query")]


# -- client_address --------------------------------------------------------------------------


def test_client_address_ignores_forwarded_for_from_an_untrusted_peer() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", TRUSTED) == "203.0.113.9"


def test_client_address_ignores_forwarded_for_when_no_proxy_is_trusted() -> None:
    assert client_address("10.0.0.1", "198.51.100.1", ()) == "10.0.0.1"


def test_client_address_honours_forwarded_for_from_a_trusted_proxy() -> None:
    assert client_address("10.0.0.1", "198.51.100.1", TRUSTED) == "198.51.100.1"


def test_client_address_takes_the_rightmost_untrusted_forwarded_address() -> None:
    forwarded = "192.0.2.66, 198.51.100.1, 10.0.0.7"  # the left-most is the client's to forge
    assert client_address("10.0.0.1", forwarded, TRUSTED) == "198.51.100.1"


def test_client_address_falls_back_to_the_peer_for_a_malformed_forwarded_address() -> None:
    assert client_address("10.0.0.1", "not-an-address", TRUSTED) == "10.0.0.1"


def test_client_address_is_the_peer_without_forwarded_for_and_none_without_a_peer() -> None:
    assert client_address("10.0.0.1", None, TRUSTED) == "10.0.0.1"
    assert client_address(None, "198.51.100.1", TRUSTED) is None
