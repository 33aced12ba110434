"""Rate limits per token and per team: fixed one-second and one-minute windows.

`LocalRateLimiter` counts in this process. `RedisRateLimiter` counts in Redis so that every
gateway process shares one budget; when Redis cannot be reached it falls back to local counts,
logs it once and exposes it (`is_degraded`), then goes back to Redis when it answers again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

REDIS_RETRY_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Limit:
    key: str  # e.g. "token:42", "team:backend-team"
    window_s: int  # 1 or 60
    max_requests: int


def build_limits(
    token_id: int,
    team_id: str,
    per_s: int | None,
    per_min: int | None,
    team_per_s: int | None,
    team_per_min: int | None,
) -> tuple[Limit, ...]:
    candidates = (
        (f"token:{token_id}", 1, per_s),
        (f"token:{token_id}", 60, per_min),
        (f"team:{team_id}", 1, team_per_s),
        (f"team:{team_id}", 60, team_per_min),
    )
    return tuple(Limit(key, window, n) for key, window, n in candidates if n)


class RateLimiter(Protocol):
    async def hit(self, limits: Sequence[Limit]) -> float | None:
        """Count one request against every limit; seconds to wait if one is exceeded."""
        ...

    @property
    def is_degraded(self) -> bool: ...


class LocalRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, int, int], int] = {}
        self._last_sweep_window = 0

    @property
    def is_degraded(self) -> bool:
        return False

    async def hit(self, limits: Sequence[Limit]) -> float | None:
        return self.hit_now(limits)

    def hit_now(self, limits: Sequence[Limit]) -> float | None:
        now = self._clock()
        self._sweep(int(now) // 60)
        retry_after: float | None = None
        for limit in limits:
            window = int(now // limit.window_s)
            key = (limit.key, limit.window_s, window)
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if count > limit.max_requests:
                wait = (window + 1) * limit.window_s - now
                retry_after = max(retry_after or 0.0, wait)
        return retry_after

    def _sweep(self, minute: int) -> None:
        # Drop finished windows once a minute so memory follows the active keys only.
        if minute != self._last_sweep_window:
            self._last_sweep_window = minute
            now = self._clock()
            self._counts = {k: v for k, v in self._counts.items() if (k[2] + 1) * k[1] > now - 1}


# KEYS: one counter key per limit; ARGV: window seconds per key. Returns the counts.
_REDIS_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, tonumber(ARGV[i]) + 1) end
  counts[i] = n
end
return counts
"""


class RedisRateLimiter:
    """Shared counters in Redis; local fallback when Redis is unreachable."""

    def __init__(
        self, redis: Any, *, fallback: LocalRateLimiter, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_REDIS_SCRIPT)
        self._fallback = fallback
        self._clock = clock
        self._degraded = False
        self._retry_redis_at = 0.0
        self.fallback_count = 0

    @property
    def is_degraded(self) -> bool:
        return self._degraded

    async def hit(self, limits: Sequence[Limit]) -> float | None:
        if not limits:
            return None
        now = self._clock()
        if self._degraded and now < self._retry_redis_at:
            return self._fallback.hit_now(limits)  # do not pay a failing round trip per request
        windows = [int(now // limit.window_s) for limit in limits]
        keys = [
            f"tm:rl:{limit.key}:{limit.window_s}:{window}"
            for limit, window in zip(limits, windows, strict=True)
        ]
        try:
            counts = await self._script(keys=keys, args=[limit.window_s for limit in limits])
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to local limits
            if not self._degraded:
                logger.warning(
                    "rate limiting falls back to per-process counts: Redis unreachable (%s)",
                    type(exc).__name__,
                )
                self._degraded = True
            self._retry_redis_at = now + REDIS_RETRY_INTERVAL_S
            self.fallback_count += 1
            return self._fallback.hit_now(limits)
        if self._degraded:
            logger.warning("rate limiting shares counts through Redis again")
            self._degraded = False
        retry_after: float | None = None
        for limit, window, count in zip(limits, windows, counts, strict=True):
            if int(count) > limit.max_requests:
                wait = (window + 1) * limit.window_s - now
                retry_after = max(retry_after or 0.0, wait)
        return retry_after


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
