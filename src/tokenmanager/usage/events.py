"""A usage event: one answered (or refused) call, as the gateway and the ingestion API record it.

Pure data plus its JSON form for the spool. Column names follow the seed's token_usage_logs.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then randomness."""
    unix_ms = time.time_ns() // 1_000_000
    # Unique, not secret: the fast PRNG (seeded from the OS per process) is enough here.
    # Formatted directly (one per gateway call): version nibble 7, then 12 random bits, then
    # the RFC 9562 variant bits 10 and 62 random bits.
    time_part = unix_ms & 0xFFFF_FFFF_FFFF
    random_a = random.getrandbits(12)
    random_b = random.getrandbits(62) | 0x8000_0000_0000_0000
    digits = f"{time_part:012x}7{random_a:03x}{random_b:016x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass(slots=True)
class UsageEvent:
    token_hash: str
    route_path: str | None
    used_at: datetime
    response_status: int | None
    response_time_ms: int | None
    event_id: str = field(default_factory=uuid7)
    token_id: int | None = None
    ttfb_ms: int | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    request_method: str | None = None
    error_message: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    failure_kind: str | None = None
    source: str = "gateway"
    # LLM calls (issue 13). All None on a call that is not an LLM call; on an LLM call an
    # unknown count or cost is None too, never 0.
    team_id: str | None = None  # the token's team at call time (the team charged)
    model: str | None = None
    prompt_tokens: int | None = None  # all input tokens, cached ones included
    completion_tokens: int | None = None  # all output tokens, reasoning included
    cached_prompt_tokens: int | None = None  # the part of prompt_tokens read from a cache
    reasoning_tokens: int | None = None  # the part of completion_tokens spent on reasoning
    usage_source: str | None = None  # "reported" | "estimated" | "missing"; None: not an LLM
    cost_pusd: int | None = None  # pico-dollars, fixed when recorded; None: no price or counts

    @property
    def is_llm_call(self) -> bool:
        return self.usage_source is not None

    @property
    def is_error(self) -> bool:
        """4xx, 5xx, a named failure, or no status but an error message."""
        if self.failure_kind is not None:
            return True
        if self.response_status is None:
            return self.error_message is not None
        return self.response_status >= 400

    @property
    def status_class(self) -> int:
        """1-5 for 1xx-5xx; 0 when there is no status."""
        status = self.response_status
        return status // 100 if status is not None and 100 <= status <= 599 else 0

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["used_at"] = self.used_at.isoformat()
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> UsageEvent:
        """The event of `to_json`'s form; files written before a field existed lack its key
        and load with its default."""
        used_at = datetime.fromisoformat(values["used_at"])
        return cls(
            **{**values, "used_at": used_at if used_at.tzinfo else used_at.replace(tzinfo=UTC)}
        )
