"""The actor behind a call: a signed-in user, or the local CLI (acting as an admin).

Roles: `admin` may do everything; `member` reads its teams' objects and manages its teams'
tokens (issue, update, rotate, revoke, delete) and their security findings; `viewer` only reads
its teams' objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tokenmanager.errors import NotFoundError, PermissionDeniedError


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    role: Role
    team_ids: frozenset[str] = field(default_factory=frozenset)
    client_ip: str | None = None
    user_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_view_team(self, team_id: str) -> bool:
        return self.is_admin or team_id in self.team_ids

    @property
    def can_manage_tokens(self) -> bool:
        """Whether the actor may manage some team's tokens (admins and members)."""
        return self.role in (Role.ADMIN, Role.MEMBER)

    def can_manage_tokens_of(self, team_id: str) -> bool:
        return self.is_admin or (self.role is Role.MEMBER and team_id in self.team_ids)

    def require_token_manager(self, team_id: str, what: str) -> None:
        """NotFoundError for another team's object (as `require_team`), PermissionDeniedError
        for a viewer of this team."""
        self.require_team(team_id, what)
        if not self.can_manage_tokens_of(team_id):
            raise PermissionDeniedError("this action needs the member or admin role")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDeniedError("this action needs the admin role")

    def require_team(self, team_id: str, what: str) -> None:
        """NotFoundError (not 403) so that other teams' objects cannot be probed."""
        if not self.can_view_team(team_id):
            raise NotFoundError(f"{what} not found")

    @property
    def visible_team_ids(self) -> frozenset[str] | None:
        """None means every team."""
        return None if self.is_admin else self.team_ids


def cli_actor() -> Actor:
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(name=f"cli:{user}", role=Role.ADMIN)
