"""Token records as the services see them. No secret or hash is ever part of a `Token`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    name: str
    team_id: str
    display_prefix: str
    scopes: tuple[str, ...]
    description: str
    metadata: dict[str, Any]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used: datetime | None
    previous_hash_expires_at: datetime | None = None
    is_imported: bool = False
    rate_limit_per_s: int | None = None
    rate_limit_per_min: int | None = None
    budget_micro_usd: int | None = None  # spending budget per budget_period; None: none
    budget_period: str | None = None  # "day" | "month" (calendar, TOKENMANAGER_TIMEZONE)

    def state_at(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return TokenState.EXPIRED
        return TokenState.ACTIVE


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token together with its secret: exists only in memory, on issue and rotate."""

    token: Token
    token_secret: str = field(repr=False)
