"""Ingest key records; the key's hash stays in storage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class IngestKey:
    id: int
    name: str
    display_prefix: str
    created_at: datetime
    created_by: str
    last_used: datetime | None
