"""User records. The password hash stays in storage; a `User` never carries it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tokenmanager.access.actor import Role


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    team_ids: tuple[str, ...]
    created_at: datetime
