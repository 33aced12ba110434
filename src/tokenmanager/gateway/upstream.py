"""The upstream client: one pooled aiohttp session whose resolver applies the SSRF guard to
every address it hands out, so the address checked is the address connected to. IP literals
never reach a resolver, so the gateway checks them before it connects (`check_host_literal`).
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from tokenmanager.ssrf import UpstreamPolicy

MAX_CONNECTIONS = 1000
KEEPALIVE_S = 30.0


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: UpstreamPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            # ForbiddenUpstreamError (an OSError) surfaces as aiohttp.ClientConnectorError.
            self._policy.check_address(host, ipaddress.ip_address(answer["host"]))
        return answers

    async def close(self) -> None:
        await self._inner.close()


def build_upstream_session(policy: UpstreamPolicy) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=MAX_CONNECTIONS,
        keepalive_timeout=KEEPALIVE_S,
        resolver=GuardedResolver(policy),
        ttl_dns_cache=10,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # bytes pass through as the upstream encoded them
        cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies to another
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
    )
