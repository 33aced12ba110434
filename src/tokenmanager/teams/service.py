"""Team management: admins create, change and delete; viewers read their own teams.

A change appends a change-feed row (kind "team", key the team id): gateways cache each token
with its team's rate limits and budget, and drop that team's tokens when it changes.
"""

from __future__ import annotations

from dataclasses import asdict
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
from tokenmanager.teams.models import Team, is_valid_team_id

UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "rate_limit_per_s",
        "rate_limit_per_min",
        "budget_usd",
        "budget_period",
    }
)


def audit_view(team: Team) -> dict[str, Any]:
    view = asdict(team)
    view["created_at"] = team.created_at.isoformat()
    return view


class TeamService:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        actor: Actor,
        *,
        team_id: str,
        name: str,
        description: str = "",
        rate_limit_per_s: int | None = None,
        rate_limit_per_min: int | None = None,
        budget_usd: UsdInput | None = None,
        budget_period: str | BudgetPeriod | None = None,
    ) -> Team:
        """A budget without a period is per calendar month."""
        actor.require_admin()
        if not is_valid_team_id(team_id):
            raise InvalidInputError(
                "id", "use 1-64 lower-case letters, digits, '-' or '_', e.g. backend-team"
            )
        budget = build_budget(budget_usd, budget_period)
        async with self._db.write() as connection:
            if await teams_sql.read_team(connection, team_id) is not None:
                raise ConflictError(f"team {team_id!r} already exists")
            team = await teams_sql.create_team(
                connection,
                {
                    "id": team_id,
                    "name": name,
                    "description": description,
                    "created_at": utcnow(),
                    "rate_limit_per_s": rate_limit_per_s,
                    "rate_limit_per_min": rate_limit_per_min,
                    **budget_columns(budget),
                },
            )
            await audit_sql.create_audit_entry(
                connection, actor, "team.create", "team", team.id, after=audit_view(team)
            )
        return team

    async def list(self, actor: Actor) -> list[Team]:
        async with self._db.read() as connection:
            return await teams_sql.list_teams(connection, actor.visible_team_ids)

    async def read(self, actor: Actor, team_id: str) -> Team | None:
        if not actor.can_view_team(team_id):
            return None
        async with self._db.read() as connection:
            return await teams_sql.read_team(connection, team_id)

    async def update(self, actor: Actor, team_id: str, changes: dict[str, Any]) -> Team:
        """Change name, description, rate limits or budget (`budget_usd`, `budget_period`, as
        `budgets.models.change_budget` says)."""
        actor.require_admin()
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidInputError(sorted(unknown)[0], "cannot be changed")
        values = {k: v for k, v in changes.items() if k not in ("budget_usd", "budget_period")}
        async with self._db.write() as connection:
            before = await teams_sql.read_team(connection, team_id)
            if before is None:
                raise NotFoundError("team not found")
            if "budget_usd" in changes or "budget_period" in changes:
                current = Budget.of_columns(before.budget_micro_usd, before.budget_period)
                values.update(budget_columns(change_budget(current, changes)))
            after = await teams_sql.update_team(connection, team_id, values) if values else before
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "team.update",
                "team",
                team_id,
                before=audit_view(before),
                after=audit_view(after),
            )
            await audit_sql.append_change(connection, "team", team_id)
        return after

    async def delete(self, actor: Actor, team_id: str) -> None:
        """ConflictError while the team still owns tokens: they must be deleted or moved first."""
        actor.require_admin()
        async with self._db.write() as connection:
            before = await teams_sql.read_team(connection, team_id)
            if before is None:
                raise NotFoundError("team not found")
            owned = await tokens_sql.count_tokens_for_team(connection, team_id)
            if owned:
                raise ConflictError(
                    f"team {team_id!r} still owns {owned} token(s); delete or move them first"
                )
            await teams_sql.delete_team(connection, team_id)
            await audit_sql.create_audit_entry(
                connection, actor, "team.delete", "team", team_id, before=audit_view(before)
            )
