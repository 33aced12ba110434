"""The token lifecycle: issue, list, read, update, revoke, rotate, delete, import.

Every mutation writes its audit entry and a change-feed row in the same transaction. Viewers act
only on their teams' tokens; other teams' tokens are reported as not found.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from tokenmanager.access.actor import Actor
from tokenmanager.budgets.models import (
    Budget,
    BudgetPeriod,
    UsdInput,
    budget_columns,
    build_budget,
    change_budget,
)
from tokenmanager.clock import utcnow
from tokenmanager.errors import ConflictError, InvalidInputError, NotFoundError
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import teams as teams_sql
from tokenmanager.storage import tokens as tokens_sql
from tokenmanager.storage.database import Database
from tokenmanager.tokens import codec
from tokenmanager.tokens.models import IssuedToken, Token, TokenState
from tokenmanager.tokens.scopes import parse_scopes

UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "scopes",
        "description",
        "metadata",
        "expires_at",
        "team_id",
        "rate_limit_per_s",
        "rate_limit_per_min",
        "budget_usd",
        "budget_period",
    }
)


def audit_view(token: Token) -> dict[str, Any]:
    view = asdict(token)
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in view.items()
    }


def _check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    try:
        return parse_scopes(scopes)
    except ValueError as exc:
        raise InvalidInputError("scopes", str(exc)) from None


class TokenService:
    def __init__(self, database: Database, *, rotation_grace_s: int) -> None:
        self._db = database
        self._rotation_grace = timedelta(seconds=rotation_grace_s)

    async def issue(
        self,
        actor: Actor,
        *,
        name: str,
        team_id: str,
        scopes: list[str] | tuple[str, ...] = (),
        description: str = "",
        metadata: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        rate_limit_per_s: int | None = None,
        rate_limit_per_min: int | None = None,
        budget_usd: UsdInput | None = None,
        budget_period: str | BudgetPeriod | None = None,
    ) -> IssuedToken:
        """A new token; the returned secret is not stored anywhere and cannot be shown again.
        A budget without a period is per calendar month."""
        token_secret = codec.build_token_secret()
        token = await self._create(
            actor,
            action="token.issue",
            name=name,
            team_id=team_id,
            scopes=scopes,
            description=description,
            metadata=metadata,
            expires_at=expires_at,
            token_hash=codec.hash_token(token_secret),
            display_prefix=codec.display_prefix(token_secret),
            is_imported=False,
            rate_limits=(rate_limit_per_s, rate_limit_per_min),
            budget=build_budget(budget_usd, budget_period),
        )
        return IssuedToken(token=token, token_secret=token_secret)

    async def import_hash(
        self,
        actor: Actor,
        *,
        token_hash: str,
        name: str,
        team_id: str,
        scopes: list[str] | tuple[str, ...] = (),
        description: str = "",
        expires_at: datetime | None = None,
    ) -> Token:
        """Adopt a token of the original design known only by its SHA-256 hex digest."""
        token_hash = token_hash.strip().lower()
        if not codec.is_token_hash(token_hash):
            raise InvalidInputError("token_hash", "must be 64 hexadecimal characters (SHA-256)")
        return await self._create(
            actor,
            action="token.import",
            name=name,
            team_id=team_id,
            scopes=scopes,
            description=description,
            metadata=None,
            expires_at=expires_at,
            token_hash=token_hash,
            display_prefix="",
            is_imported=True,
            rate_limits=(None, None),
            budget=None,
        )

    async def _create(
        self,
        actor: Actor,
        *,
        action: str,
        name: str,
        team_id: str,
        scopes: list[str] | tuple[str, ...],
        description: str,
        metadata: dict[str, Any] | None,
        expires_at: datetime | None,
        token_hash: str,
        display_prefix: str,
        is_imported: bool,
        rate_limits: tuple[int | None, int | None],
        budget: Budget | None,
    ) -> Token:
        actor.require_token_manager(team_id, "team")
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise InvalidInputError("expires_at", "must be in the future")
        async with self._db.write() as connection:
            if await teams_sql.read_team(connection, team_id) is None:
                raise NotFoundError("team not found")
            token = await tokens_sql.create_token(
                connection,
                {
                    "name": name,
                    "team_id": team_id,
                    "token_hash": token_hash,
                    "display_prefix": display_prefix,
                    "scopes": list(_check_scopes(scopes)),
                    "description": description,
                    "metadata": metadata or {},
                    "created_at": now,
                    "created_by": actor.name,
                    "expires_at": expires_at,
                    "is_imported": is_imported,
                    "rate_limit_per_s": rate_limits[0],
                    "rate_limit_per_min": rate_limits[1],
                    **budget_columns(budget),
                },
            )
            await audit_sql.create_audit_entry(
                connection, actor, action, "token", token.id, after=audit_view(token)
            )
            await audit_sql.append_change(connection, "token", token.id)
        return token

    async def list(
        self,
        actor: Actor,
        *,
        team_id: str | None = None,
        state: TokenState | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Token]:
        team_ids: list[str] | None = None
        if team_id is not None:
            if not actor.can_view_team(team_id):
                return []
            team_ids = [team_id]
        elif actor.visible_team_ids is not None:
            team_ids = sorted(actor.visible_team_ids)
        async with self._db.read() as connection:
            return await tokens_sql.list_tokens(
                connection, now=utcnow(), team_ids=team_ids, state=state, limit=limit, offset=offset
            )

    async def read(self, actor: Actor, token_id: int) -> Token | None:
        """None when the token does not exist or belongs to a team the actor cannot see."""
        async with self._db.read() as connection:
            token = await tokens_sql.read_token(connection, token_id)
        if token is None or not actor.can_view_team(token.team_id):
            return None
        return token

    async def update(self, actor: Actor, token_id: int, changes: dict[str, Any]) -> Token:
        """Change name, scopes, description, metadata, expiry, rate limits and budget (admins
        also team); never the hash. Budget changes follow `budgets.models.change_budget`."""
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidInputError(sorted(unknown)[0], "cannot be changed")
        if "team_id" in changes and not actor.is_admin:
            raise InvalidInputError("team_id", "only an admin can move a token to another team")
        if changes.get("expires_at") is not None and changes["expires_at"] <= utcnow():
            raise InvalidInputError("expires_at", "must be in the future")  # as at issue
        values = {k: v for k, v in changes.items() if k not in ("budget_usd", "budget_period")}
        if "scopes" in values:
            values["scopes"] = list(_check_scopes(values["scopes"]))
        if values.get("metadata") is None and "metadata" in values:
            values["metadata"] = {}
        async with self._db.write() as connection:
            before = await self._read_for_change(connection, actor, token_id)
            if "budget_usd" in changes or "budget_period" in changes:
                current = Budget.of_columns(before.budget_micro_usd, before.budget_period)
                values.update(budget_columns(change_budget(current, changes)))
            if (
                "team_id" in values
                and await teams_sql.read_team(connection, values["team_id"]) is None
            ):
                raise NotFoundError("team not found")
            after = (
                await tokens_sql.update_token(connection, token_id, values) if values else before
            )
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "token.update",
                "token",
                token_id,
                before=audit_view(before),
                after=audit_view(after),
            )
            await audit_sql.append_change(connection, "token", token_id)
        return after

    async def revoke(self, actor: Actor, token_id: int) -> Token:
        """Idempotent: revoking a revoked token keeps the first revocation time."""
        async with self._db.write() as connection:
            before = await self._read_for_change(connection, actor, token_id)
            if before.revoked_at is not None:
                return before
            after = await tokens_sql.update_token(
                connection,
                token_id,
                {
                    "revoked_at": utcnow(),
                    "previous_token_hash": None,
                    "previous_hash_expires_at": None,
                },
            )
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "token.revoke",
                "token",
                token_id,
                before=audit_view(before),
                after=audit_view(after),
            )
            await audit_sql.append_change(connection, "token", token_id)
        return after

    async def rotate(
        self, actor: Actor, token_id: int, *, grace_s: int | None = None
    ) -> IssuedToken:
        """A new secret; the old one keeps working for the grace period (default from settings).

        A second rotation within the grace period ends the first old secret at once.
        """
        grace = self._rotation_grace if grace_s is None else timedelta(seconds=grace_s)
        if grace < timedelta(0):
            raise InvalidInputError("grace_period_s", "must not be negative")
        token_secret = codec.build_token_secret()
        now = utcnow()
        async with self._db.write() as connection:
            before = await self._read_for_change(connection, actor, token_id)
            if before.revoked_at is not None:
                raise ConflictError("a revoked token cannot be rotated")
            old_hash, _ = await tokens_sql.read_token_hashes(connection, token_id)
            keeps_old = grace > timedelta(0)
            after = await tokens_sql.update_token(
                connection,
                token_id,
                {
                    "token_hash": codec.hash_token(token_secret),
                    "display_prefix": codec.display_prefix(token_secret),
                    "previous_token_hash": old_hash if keeps_old else None,
                    "previous_hash_expires_at": now + grace if keeps_old else None,
                    "is_imported": False,
                },
            )
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "token.rotate",
                "token",
                token_id,
                before=audit_view(before),
                after=audit_view(after),
            )
            await audit_sql.append_change(connection, "token", token_id)
        return IssuedToken(token=after, token_secret=token_secret)

    async def delete(self, actor: Actor, token_id: int) -> None:
        async with self._db.write() as connection:
            before = await self._read_for_change(connection, actor, token_id)
            await tokens_sql.delete_token(connection, token_id)
            await audit_sql.create_audit_entry(
                connection, actor, "token.delete", "token", token_id, before=audit_view(before)
            )
            await audit_sql.append_change(connection, "token", token_id)

    async def _read_for_change(self, connection: Any, actor: Actor, token_id: int) -> Token:
        """NotFoundError for a token the actor cannot see, PermissionDeniedError for a viewer."""
        token = await tokens_sql.read_token(connection, token_id)
        if token is None:
            raise NotFoundError("token not found")
        actor.require_token_manager(token.team_id, "token")
        return token
