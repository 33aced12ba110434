"""The SSRF guard (`tokenmanager.ssrf`): refused when a route is saved, and again when the gateway
connects — a listener planted at the target sees no connection. The gateway here runs with the
default policy: no allow-list."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.gateway.upstream import GuardedResolver
from tokenmanager.ssrf import (
    ForbiddenUpstreamError,
    UpstreamPolicy,
    is_obfuscated_ip,
    is_public_address,
)
from tokenmanager.storage.schema import routes as routes_table
from tokenmanager.testing import running_asgi_server
from tokenmanager.tokens.models import IssuedToken

from .stage import PlantedListener, UsageRows

PUBLIC_UPSTREAM = "http://93.184.216.34"  # a public literal: saving it needs no DNS


@pytest.fixture
def upstream_allow() -> str:
    return ""  # the default policy


# -- at route creation -----------------------------------------------------------------------

REFUSED_UPSTREAMS = [
    "http://127.0.0.1",
    "http://localhost",
    "http://[::1]",
    "http://10.0.0.1",
    "http://172.16.0.1",
    "http://192.168.1.1",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1",
    "http://[fc00::1]",
    "http://[fe80::1]",
    "http://[::ffff:127.0.0.1]",
    "http://[::ffff:169.254.169.254]",
    "http://[64:ff9b::a9fe:a9fe]",  # NAT64 form of the metadata address
    "http://[2002:7f00:1::]",  # 6to4 form of 127.0.0.1
    "http://2130706433",
    "http://0x7f000001",
    "http://0177.0.0.1",
    "http://127.1",
    "http://0.0.0.0",
    "http://user@127.0.0.1",
    "http://user:pw@example.com",
    "ftp://example.com",
    "file:///etc/passwd",
    "gopher://127.0.0.1",
]


@pytest.mark.parametrize("upstream_url", REFUSED_UPSTREAMS)
async def test_route_creation_refuses_an_unsafe_upstream_under_the_default_policy(
    services: Services, admin: Actor, upstream_url: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        await services.routes.create(admin, path_prefix="/api/x", upstream_url=upstream_url)

    assert refused.value.field == "upstream_url"
    assert await services.routes.list(admin) == []


async def test_route_creation_accepts_a_public_upstream_under_the_default_policy(
    services: Services, admin: Actor
) -> None:
    route = await services.routes.create(admin, path_prefix="/api/x", upstream_url=PUBLIC_UPSTREAM)
    assert route.upstream_url == PUBLIC_UPSTREAM


@pytest.mark.parametrize("upstream_url", ["http://169.254.169.254", "http://localhost:8080"])
async def test_route_change_refuses_an_unsafe_upstream_under_the_default_policy(
    services: Services, admin: Actor, upstream_url: str
) -> None:
    route = await services.routes.create(admin, path_prefix="/api/x", upstream_url=PUBLIC_UPSTREAM)

    with pytest.raises(InvalidInputError) as refused:
        await services.routes.update(admin, route.id, {"upstream_url": upstream_url})

    assert refused.value.field == "upstream_url"
    stored = await services.routes.read(admin, route.id)
    assert stored is not None
    assert stored.upstream_url == PUBLIC_UPSTREAM


# -- at connect time -------------------------------------------------------------------------


async def insert_route_directly(services: Services, path_prefix: str, upstream_url: str) -> None:
    """A route saved as if under an older, looser policy: straight into the table."""
    now = utcnow()
    async with services.database.write() as connection:
        await connection.execute(
            routes_table.insert().values(
                path_prefix=path_prefix,
                upstream_url=upstream_url,
                required_scopes=[],
                upstream_auth_header=None,
                upstream_auth_query_param=None,
                upstream_auth_value_encrypted=None,
                connect_timeout_s=2.0,
                read_timeout_s=5.0,
                total_timeout_s=5.0,
                is_enabled=True,
                description="",
                created_at=now,
                updated_at=now,
            )
        )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "127.1"]
)
async def test_gateway_refuses_to_connect_to_a_stored_private_upstream(
    services: Services,
    gateway_app: GatewayApp,
    token: IssuedToken,
    planted_listener: PlantedListener,
    usage_rows: UsageRows,
    host: str,
) -> None:
    await insert_route_directly(services, "/api/planted", f"http://{host}:{planted_listener.port}")

    async with (
        running_asgi_server(gateway_app) as gateway,
        httpx.AsyncClient(base_url=gateway) as client,
    ):
        answer = await client.get("/api/planted/x", headers={"X-API-Key": token.token_secret})

    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "bad_gateway"
    assert planted_listener.connections == 0
    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind, row.route_path) == (
        502,
        "upstream_forbidden",
        "/api/planted",
    )


@pytest.fixture
async def redirecting_upstream(planted_listener: PlantedListener) -> AsyncIterator[int]:
    """A loopback server answering every request with a redirect to the planted listener;
    yields its port."""

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: " + planted_listener.url.encode() + b"/\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("upstream_allow", ["localhost"])  # the redirecting host, by name only
async def test_gateway_relays_a_redirect_to_a_private_address_without_following_it(
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
    token: IssuedToken,
    planted_listener: PlantedListener,
    redirecting_upstream: int,
    usage_rows: UsageRows,
) -> None:
    await services.routes.create(
        admin, path_prefix="/api/redirect", upstream_url=f"http://localhost:{redirecting_upstream}"
    )

    async with (
        running_asgi_server(gateway_app) as gateway,
        httpx.AsyncClient(base_url=gateway) as client,
    ):
        answer = await client.get("/api/redirect", headers={"X-API-Key": token.token_secret})

    assert answer.status_code == 302
    assert answer.headers["location"] == f"{planted_listener.url}/"
    assert planted_listener.connections == 0
    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind) == (302, None)


class _FixedResolver:
    """Stands in for DNS: answers every name with the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[Any]:
        return [
            {"hostname": host, "host": address, "port": port, "family": family, "proto": 0,
             "flags": 0}
            for address in self._addresses
        ]  # fmt: skip

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("answers", [("10.0.0.1",), ("93.184.216.34", "169.254.169.254"), ("::1",)])
async def test_guarded_resolver_refuses_a_name_whose_answer_turned_private(
    answers: tuple[str, ...],
) -> None:
    resolver = GuardedResolver(UpstreamPolicy())
    resolver._inner = _FixedResolver(*answers)  # type: ignore[assignment]  # DNS rebinding

    with pytest.raises(ForbiddenUpstreamError):
        await resolver.resolve("api.example.com", 443)


async def test_guarded_resolver_passes_public_and_allowed_answers() -> None:
    resolver = GuardedResolver(UpstreamPolicy.parse("10.0.0.0/8"))
    resolver._inner = _FixedResolver("93.184.216.34", "10.1.2.3")  # type: ignore[assignment]

    answers = await resolver.resolve("api.example.com", 443)

    assert [answer["host"] for answer in answers] == ["93.184.216.34", "10.1.2.3"]


# -- the policy's pure parts -----------------------------------------------------------------


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_is_public_address_accepts_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "255.255.255.255", "224.0.0.1", "198.18.0.1", "::1", "::", "fc00::1",  # noqa: S104
        "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8", "64:ff9b::7f00:1",
        "2002:a9fe:a9fe::",
    ],
)  # fmt: skip
def test_is_public_address_refuses_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1"])
def test_is_obfuscated_ip_spots_integer_octal_hex_and_short_forms(host: str) -> None:
    assert is_obfuscated_ip(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "8.8.8.8", "::1", "[::1]", "example.com"])
def test_is_obfuscated_ip_leaves_canonical_addresses_and_names_alone(host: str) -> None:
    assert not is_obfuscated_ip(host)


def test_policy_parse_reads_cidrs_addresses_and_host_names() -> None:
    policy = UpstreamPolicy.parse(" 127.0.0.0/8, ::1 ,fd00::/8, Internal.Example., mock-1 ,")

    assert policy.allowed_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert policy.allowed_hosts == frozenset({"internal.example", "mock-1"})
    assert UpstreamPolicy.parse("") == UpstreamPolicy()


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "not a host", "a/b", "host_name!"])
def test_policy_parse_refuses_entries_that_are_neither_cidr_nor_host(raw: str) -> None:
    with pytest.raises(ValueError, match="not a CIDR or host name"):
        UpstreamPolicy.parse(raw)


def test_allowed_networks_let_their_addresses_through_and_no_others() -> None:
    policy = UpstreamPolicy.parse("10.0.0.0/8, 127.0.0.1")

    policy.check_address("internal", ipaddress.ip_address("10.1.2.3"))
    policy.check_address("loopback", ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(ForbiddenUpstreamError):
        policy.check_address("internal", ipaddress.ip_address("192.168.0.1"))
    with pytest.raises(ForbiddenUpstreamError):
        policy.check_address("loopback", ipaddress.ip_address("127.0.0.2"))


def test_allowed_host_names_let_that_name_through_whatever_it_resolves_to() -> None:
    policy = UpstreamPolicy.parse("internal.example")

    policy.check_address("Internal.Example.", ipaddress.ip_address("10.0.0.5"))
    assert policy.check_host_literal("internal.example") is None
    with pytest.raises(ForbiddenUpstreamError):
        policy.check_address("other.example", ipaddress.ip_address("10.0.0.5"))


def test_check_host_literal_refuses_obfuscated_forms_even_inside_an_allowed_network() -> None:
    policy = UpstreamPolicy.parse("127.0.0.0/8")

    assert policy.check_host_literal("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    with pytest.raises(ForbiddenUpstreamError):
        policy.check_host_literal("2130706433")


def test_default_policy_checks_literals_without_dns() -> None:
    policy = UpstreamPolicy()

    assert policy.check_host_literal("example.com") is None  # a name: resolved later
    assert policy.check_host_literal("[2606:4700:4700::1111]") is not None
    with pytest.raises(ForbiddenUpstreamError):
        policy.check_host_literal("[::ffff:169.254.169.254]")
