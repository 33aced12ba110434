"""Object ids: positive INTEGER primary keys, 32-bit on PostgreSQL. A larger number cannot
name a row, and the database refuses to compare with it (an error, not a miss), so the edges
refuse it first."""

from __future__ import annotations

MAX_ID = 2**31 - 1


def is_object_id(value: int) -> bool:
    return 1 <= value <= MAX_ID
