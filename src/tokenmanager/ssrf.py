"""The SSRF guard: which upstream addresses the gateway (and webhooks) may connect to.

Refused unless allow-listed: loopback, private, link-local (cloud metadata), CGNAT, unique-local,
multicast, unspecified and reserved addresses, IPv4-mapped and NAT64/6to4 forms that embed one of
those, and hosts written as integers (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`) that
resolvers accept but people do not read as addresses. Checked when a route is saved and again at
connect time on the address actually connected to (see `gateway/upstream.py`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenUpstreamError(OSError):
    """The upstream's address is not one the guard lets the gateway reach."""


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address if `host` is a canonical IP literal (brackets allowed for IPv6), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_obfuscated_ip(host: str) -> bool:
    """True for integer, octal, hex or shortened IPv4 forms that inet_aton accepts."""
    if parse_ip_literal(host) is not None:
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: IPAddress) -> bool:
    """Whether an address is on the public internet (and so reachable without allow-listing)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return False  # IPv4-mapped forms are refused outright, whatever they embed
        embedded = _embedded_ipv4(address)
        if embedded is not None and not is_public_address(embedded):
            return False
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    """The operator's allow-list (`TOKENMANAGER_UPSTREAM_ALLOW`) over the default refusals."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: str) -> UpstreamPolicy:
        """From "127.0.0.0/8, ::1, internal.example"; ValueError naming a bad entry."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (part.strip() for part in raw.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry or not entry.replace("-", "").replace(".", "").isalnum():
                    raise ValueError(f"not a CIDR or host name: {entry!r}") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def is_host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_hosts

    def check_address(self, host: str, address: IPAddress) -> None:
        """ForbiddenUpstreamError unless `address` (which `host` resolved to) may be reached."""
        if self.is_host_allowed(host) or is_public_address(address):
            return
        if any(address in network for network in self.allowed_networks):
            return
        raise ForbiddenUpstreamError(
            f"upstream {host} resolves to {address}, a non-public address; allow it with "
            "TOKENMANAGER_UPSTREAM_ALLOW"
        )

    def check_host_literal(self, host: str) -> IPAddress | None:
        """Checks that need no DNS: obfuscated forms are refused, IP literals checked.

        Returns the literal address, or None for a host name that needs resolving.
        """
        if self.is_host_allowed(host):
            return None
        if is_obfuscated_ip(host):
            raise ForbiddenUpstreamError(
                f"upstream host {host!r} is an IP address in integer, octal or hex form; "
                "write it as a dotted quad"
            )
        address = parse_ip_literal(host)
        if address is not None:
            self.check_address(host, address)
        return address

    async def check_host(self, host: str, port: int) -> None:
        """The save-time check: the literal checks, then every address the name resolves to.

        A name that does not resolve now passes: it is checked again at connect time.
        """
        if self.check_host_literal(host) is not None or self.is_host_allowed(host):
            return
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return
        for *_, sockaddr in answers:
            self.check_address(host, ipaddress.ip_address(sockaddr[0]))
