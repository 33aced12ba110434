"""Shared pieces of the API's request models: strict bodies (unknown fields are refused, so
nothing like `token_hash` can be mass-assigned) and UTC handling of datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from tokenmanager.pricing.money import format_micro_usd, parse_usd


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UTCDatetime = Annotated[datetime, AfterValidator(_as_utc)]
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
