"""Team records and the team id format (the seed's `backend-team`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

TEAM_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    description: str
    created_at: datetime
    rate_limit_per_s: int | None = None
    rate_limit_per_min: int | None = None
    budget_micro_usd: int | None = None  # spending budget per budget_period; None: none
    budget_period: str | None = None  # "day" | "month" (calendar, TOKENMANAGER_TIMEZONE)


def is_valid_team_id(team_id: str) -> bool:
    return bool(TEAM_ID_PATTERN.fullmatch(team_id))
