"""Shared pieces of the API's request models: strict bodies (unknown fields are refused, so
nothing like `token_hash` can be mass-assigned), UTC handling of datetimes, and the bounds of
object ids in paths and queries (a 21-digit id is a 422, never a database overflow)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from tokenmanager.ids import MAX_ID
from tokenmanager.pricing.money import format_micro_usd, parse_usd

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _iso_only(value: object) -> object:
    # The document promises an ISO-8601 date-time; pydantic would also take 0.5 as a Unix time.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("not an ISO-8601 date-time")
    return value


def _as_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time: bad input, not a crash
        raise ValueError("out of range") from None


UTCDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_as_utc)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=2000)]


def _usd(value: Any) -> Decimal:
    return parse_usd(value)  # ValueError: pydantic turns it into a 422 naming the field


# Money in: a JSON number or a decimal string, at most 6 decimals, 0 to 1000000 (else 422).
# Money out is a string holding the exact decimal (`usd_text`), never a float.
UsdAmount = Annotated[
    Decimal,
    BeforeValidator(_usd),
    Field(
        description="US dollars: a number or a decimal string, at most 6 decimals, 0 to 1000000",
        examples=["12.5"],
    ),
]


def usd_text(micro_usd: int | None) -> str | None:
    return format_micro_usd(micro_usd) if micro_usd is not None else None


ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
ObjectIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
# Offsets past a million rows are not a page anyone reads; bounded, they stay a plain OFFSET.
MAX_OFFSET = 1_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
