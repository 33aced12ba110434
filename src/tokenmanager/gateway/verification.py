"""Token verification without a database query per request.

    checksum pre-check -> in-process cache (positive and negative) -> store on a miss

Failures are data: `verify` returns a `Verification` whose status the edge maps to an HTTP answer
through `STATUS_ANSWERS`. Unknown, revoked, expired and malformed tokens get the same answer so a
caller learns nothing from which one it was. Cached entries are dropped when the change feed
says their token changed; while the store is down, cached tokens keep working.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from tokenmanager.clock import utcnow
from tokenmanager.gateway.budgets import GuardedBudget
from tokenmanager.tokens import codec
from tokenmanager.tokens.scopes import has_scopes

NEGATIVE_TTL_S = 30.0
MAX_CACHED_TOKENS = 100_000
MAX_NEGATIVE_ENTRIES = 100_000


class VerifyStatus(Enum):
    VALID = "valid"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    REVOKED = "revoked"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


_UNAUTHORIZED = (401, "unauthorized", "missing or invalid API token")
STATUS_ANSWERS: dict[VerifyStatus, tuple[int, str, str]] = {
    VerifyStatus.NOT_FOUND: _UNAUTHORIZED,
    VerifyStatus.EXPIRED: _UNAUTHORIZED,
    VerifyStatus.REVOKED: _UNAUTHORIZED,
    VerifyStatus.INSUFFICIENT_SCOPE: (403, "forbidden", "the token lacks a scope this route needs"),
    VerifyStatus.RATE_LIMITED: (429, "too_many_requests", "rate limit exceeded"),
    VerifyStatus.UNAVAILABLE: (503, "unavailable", "token verification is unavailable"),
}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the gateway knows about one token secret (current or rotated-out)."""

    token_id: int
    team_id: str
    token_hash: str  # the hash that was presented
    scopes: tuple[str, ...]
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_per_s: int | None
    rate_limit_per_min: int | None
    team_rate_limit_per_s: int | None
    team_rate_limit_per_min: int | None
    budgets: tuple[GuardedBudget, ...] = ()  # the token's and its team's, when set

    def status_at(self, now: datetime) -> VerifyStatus:
        if self.revoked_at is not None:
            return VerifyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return VerifyStatus.EXPIRED
        return VerifyStatus.VALID

    def has_scopes(self, required: tuple[str, ...]) -> bool:
        return has_scopes(self.scopes, required)


def build_token_record(row: Any, presented_hash: str) -> TokenRecord:
    """The record for a token row; a rotated-out hash carries its grace-period end as expiry."""
    expires_at = row.expires_at
    if presented_hash != row.token_hash:
        grace_end = row.previous_hash_expires_at
        expires_at = grace_end if expires_at is None else min(expires_at, grace_end)
    return TokenRecord(
        token_id=row.id,
        team_id=row.team_id,
        token_hash=presented_hash,
        scopes=tuple(row.scopes),
        expires_at=expires_at,
        revoked_at=row.revoked_at,
        rate_limit_per_s=row.rate_limit_per_s,
        rate_limit_per_min=row.rate_limit_per_min,
        team_rate_limit_per_s=row.team_rate_limit_per_s,
        team_rate_limit_per_min=row.team_rate_limit_per_min,
        budgets=build_budgets(row),
    )


def build_budgets(row: Any) -> tuple[GuardedBudget, ...]:
    budgets = []
    if row.budget_micro_usd is not None:
        budgets.append(GuardedBudget("token", str(row.id), row.budget_micro_usd, row.budget_period))
    if row.team_budget_micro_usd is not None:
        budgets.append(
            GuardedBudget("team", row.team_id, row.team_budget_micro_usd, row.team_budget_period)
        )
    return tuple(budgets)


@dataclass(frozen=True, slots=True)
class Verification:
    status: VerifyStatus
    token_hash: str  # "" when no well-formed token was presented
    record: TokenRecord | None = None


LookupToken = Callable[[str], Awaitable[TokenRecord | None]]


class TokenVerifier:
    def __init__(self, lookup: LookupToken, *, monotonic: Callable[[], float]) -> None:
        self._lookup = lookup
        self._monotonic = monotonic
        self._positive: OrderedDict[str, TokenRecord] = OrderedDict()
        self._negative: dict[str, float] = {}
        self._hashes_by_token: dict[int, set[str]] = {}
        self._in_flight: dict[str, asyncio.Future[TokenRecord | None]] = {}
        self.imported_hashes: frozenset[str] = frozenset()
        self.cache_hits = 0
        self.cache_misses = 0

    async def verify(self, token_secret: str | None) -> Verification:
        if not token_secret:
            return Verification(VerifyStatus.NOT_FOUND, "")
        token_hash = codec.hash_token(token_secret)
        # Only a stored token's hash enters the positive cache, so a hit needs no checksum.
        record = self._positive.get(token_hash)
        if record is not None:
            self.cache_hits += 1
        else:
            if (
                not codec.has_valid_checksum(token_secret)
                and token_hash not in self.imported_hashes
            ):
                return Verification(VerifyStatus.NOT_FOUND, "")  # a typo or a guess: no lookup
            negative_until = self._negative.get(token_hash)
            if negative_until is not None and negative_until > self._monotonic():
                self.cache_hits += 1
                return Verification(VerifyStatus.NOT_FOUND, token_hash)
            self.cache_misses += 1
            try:
                record = await self._lookup_once(token_hash)
            except Exception:  # noqa: BLE001 - the store is down: unknown tokens cannot be checked
                return Verification(VerifyStatus.UNAVAILABLE, token_hash)
            if record is None:
                return Verification(VerifyStatus.NOT_FOUND, token_hash)
        return Verification(record.status_at(utcnow()), token_hash, record)

    async def _lookup_once(self, token_hash: str) -> TokenRecord | None:
        """One store lookup per hash at a time: concurrent misses share it."""
        pending = self._in_flight.get(token_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(token_hash))
            self._in_flight[token_hash] = pending
            try:
                record = await pending
            finally:
                del self._in_flight[token_hash]
            if record is None:
                self._remember_unknown(token_hash)
            else:
                self._remember(record)
            return record
        return await asyncio.shield(pending)

    def _remember(self, record: TokenRecord) -> None:
        self._positive[record.token_hash] = record
        self._hashes_by_token.setdefault(record.token_id, set()).add(record.token_hash)
        if len(self._positive) > MAX_CACHED_TOKENS:
            evicted = self._positive.popitem(last=False)[1]
            self._hashes_by_token.get(evicted.token_id, set()).discard(evicted.token_hash)

    def _remember_unknown(self, token_hash: str) -> None:
        if len(self._negative) >= MAX_NEGATIVE_ENTRIES:
            self._negative.clear()  # bounded: a flood of random tokens costs lookups, not memory
        self._negative[token_hash] = self._monotonic() + NEGATIVE_TTL_S

    def invalidate_token(self, token_id: int) -> None:
        """Forget a changed token; also every negative entry (it may be a new secret)."""
        for token_hash in self._hashes_by_token.pop(token_id, set()):
            self._positive.pop(token_hash, None)
        self._negative.clear()

    def invalidate_team(self, team_id: str) -> None:
        """Forget every token of a changed team (its limits and budget are on their records)."""
        for record in [r for r in self._positive.values() if r.team_id == team_id]:
            self.invalidate_token(record.token_id)

    def invalidate_all(self) -> None:
        self._positive.clear()
        self._negative.clear()
        self._hashes_by_token.clear()
