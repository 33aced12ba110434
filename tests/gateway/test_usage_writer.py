"""The usage writer process on both backends: it stores batches idempotently, reports a store
failure as an exception (so the recorder spools the batch) and a refusal of the data as
RefusedBatchError, survives its own death by starting
again for the next batch, and exits when the gateway closes it."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tokenmanager.composition import Services
from tokenmanager.gateway.usage_writer import UsageWriterError, UsageWriterProcess
from tokenmanager.storage.schema import token_usage_logs, usage_hourly
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.recorder import RefusedBatchError


def make_events(count: int) -> list[UsageEvent]:
    return [
        UsageEvent(
            token_hash="a" * 64,
            route_path="/api/echo",
            used_at=datetime(2030, 3, 1, 12, 0, second, tzinfo=UTC),
            response_status=200 if second % 3 else 502,
            response_time_ms=second,
            bytes_out=100,
            request_method="GET",
        )
        for second in range(count)
    ]


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[UsageWriterProcess]:
    process = UsageWriterProcess(database_url)
    yield process
    await process.close()


async def stored_event_ids(services: Services) -> set[str]:
    async with services.database.read() as connection:
        return set((await connection.execute(sa.select(token_usage_logs.c.event_id))).scalars())


async def test_a_batch_is_stored_once_with_its_rollup(
    writer: UsageWriterProcess, services: Services
) -> None:
    events = make_events(40)
    assert await writer.write_batch(events) == 40
    assert await writer.write_batch(events[:10]) == 0  # a replayed batch adds nothing
    assert await stored_event_ids(services) == {event.event_id for event in events}
    async with services.database.read() as connection:
        calls = (await connection.execute(sa.select(sa.func.sum(usage_hourly.c.calls)))).scalar()
    assert calls == 40


async def test_a_batch_the_store_refuses_for_its_data_raises_refused_batch(
    writer: UsageWriterProcess, services: Services
) -> None:
    events = make_events(3)
    events[1].token_hash = None  # type: ignore[assignment]  # NOT NULL in every store
    with pytest.raises(RefusedBatchError):
        await writer.write_batch(events)
    assert await stored_event_ids(services) == set()  # one transaction: nothing half-written
    assert await writer.write_batch([events[0], events[2]]) == 2  # the child lives on


async def test_a_store_failure_raises_so_the_recorder_spools(tmp_path: Path) -> None:
    # A file that is not a migrated database: the insert fails inside the child.
    writer = UsageWriterProcess(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(UsageWriterError, match="the usage store failed"):
            await writer.write_batch(make_events(3))
    finally:
        await writer.close()


async def test_a_dead_child_fails_its_batch_and_the_next_batch_starts_a_new_one(
    writer: UsageWriterProcess, services: Services
) -> None:
    first, second = make_events(20)[:10], make_events(20)[10:]
    assert await writer.write_batch(first) == 10
    child = writer.pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    with pytest.raises(UsageWriterError, match="ended"):
        await writer.write_batch(second)
    assert await writer.write_batch(second) == 10
    assert writer.pid not in (None, child)
    assert await stored_event_ids(services) == {e.event_id for e in first + second}


async def test_close_ends_the_child_and_ignores_sigterm_until_then(
    writer: UsageWriterProcess,
) -> None:
    assert await writer.write_batch(make_events(1)) == 1
    child = writer.pid
    assert child is not None
    os.kill(child, signal.SIGTERM)  # the gateway's own shutdown signal: the child stays
    assert await writer.write_batch(make_events(2)[1:]) == 1
    assert writer.pid == child
    await writer.close()
    assert writer.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
