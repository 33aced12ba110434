"""Change notifications over Redis pub/sub: the control plane announces that tokens or routes
changed; gateways react at once instead of at their next poll of the change feed. The feed in
the database stays the source of truth, so a lost message only delays a change by one poll.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

CHANNEL = "tokenmanager:changes"


def build_redis(url: str) -> Any:
    """A redis.asyncio client with short timeouts: a hung Redis must not stall requests."""
    import redis.asyncio

    return redis.asyncio.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


class ChangePublisher:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def publish(self) -> None:
        try:
            await self._redis.publish(CHANNEL, b"changed")
        except Exception as exc:  # noqa: BLE001 - gateways still see it at their next poll
            logger.warning("could not announce a change over Redis (%s)", type(exc).__name__)
