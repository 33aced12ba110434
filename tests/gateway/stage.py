"""What the gateway tests share besides fixtures: the names on the stage (team, route prefixes,
scopes, the injected upstream credential) and the types the fixtures hand out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tokenmanager.routes.models import Route

TEAM_ID = "gateway-team"
ECHO_PREFIX = "/api/echo"
ECHO_SCOPE = "echo:read"
MOCK_PREFIX = "/api/mock"
OPENAI_SCOPE = "openai:chat"
UPSTREAM_CREDENTIAL = "sk-upstream-0123456789abcdef"
USAGE_DEADLINE_S = 5.0

UsageRows = Callable[[int], Awaitable[list[sa.Row[Any]]]]
AddRoute = Callable[..., Awaitable[Route]]


@dataclass(slots=True)
class PlantedListener:
    """A loopback TCP listener that counts the connections it is offered."""

    port: int = 0
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
