"""Usage records for this package's tests: the seed's ingestion body, posting records the way an
external gateway does, and reading back what the recorder stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from tokenmanager.composition import Services
from tokenmanager.storage.schema import token_usage_logs

UNKNOWN_TOKEN_HASH = "ab" * 32


def seed_record(**changes: Any) -> dict[str, Any]:
    """The body of spec §4 (`POST /api/usage-log`), with `changes` applied."""
    record: dict[str, Any] = {
        "token_hash": UNKNOWN_TOKEN_HASH,
        "route": "/api/openai",
        "timestamp": None,
        "response_status": 200,
        "response_time_ms": 1500,
        "ip_address": "1.2.3.4",
        "user_agent": "n8n/1.0",
        "request_method": "POST",
        "error_message": None,
    }
    record.update(changes)
    return record


def ingest_headers(key_secret: str) -> dict[str, str]:
    return {"X-Ingest-Key": key_secret}


async def post_records(
    client: httpx.AsyncClient,
    services: Services,
    key_secret: str,
    records: Sequence[dict[str, Any]],
) -> None:
    """Post `records` as one batch, which must accept all of them, and write them to the store
    (the test app runs no lifespan, so the recorder's writer task is not running)."""
    answer = await client.post(
        "/api/usage-log/batch", json=list(records), headers=ingest_headers(key_secret)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == 0, answer.text
    await services.recorder.flush()


async def stored_rows(services: Services) -> list[Any]:
    """Every raw usage row, oldest insert first, after writing what the recorder holds."""
    await services.recorder.flush()
    async with services.database.read() as connection:
        query = token_usage_logs.select().order_by(token_usage_logs.c.id)
        return list(await connection.execute(query))
