"""The usage recorder with a fake store: flushes by size and by interval, spools when the store
fails and replays exactly once when it is back, counts every drop, drains on stop, and replays
what a crashed process left in the spool."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokenmanager.usage import recorder as recorder_module
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.recorder import RefusedBatchError, UsageRecorder
from tokenmanager.usage.spool import REJECTED_DIRECTORY, Spool

DEADLINE_S = 5.0
LONG_INTERVAL_S = 60.0  # longer than any test: nothing is flushed by time
SPOOL_MAX_BYTES = 10 * 1024 * 1024
REFUSED_ROUTE = "/refused"  # FakeStore refuses any batch holding an event on this route


class FakeStore:
    """A `write_batch` that records every batch it accepts; `is_down` makes it fail, `gate`
    (when set) holds each write until it opens."""

    def __init__(self) -> None:
        self.batches: list[list[UsageEvent]] = []
        self.is_down = False
        self.attempts = 0
        self.in_flight = 0
        self.gate: asyncio.Event | None = None
        self.refused_route: str | None = REFUSED_ROUTE

    async def write_batch(self, events: Sequence[UsageEvent]) -> int:
        self.attempts += 1
        self.in_flight += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.is_down:
                raise ConnectionError("the store is down")
            if any(event.route_path == self.refused_route for event in events):
                raise RefusedBatchError("a value the store cannot hold")
            self.batches.append(list(events))
            return len(events)
        finally:
            self.in_flight -= 1

    @property
    def written_ids(self) -> list[str]:
        return [event.event_id for batch in self.batches for event in batch]


def make_events(count: int, route: str = "/api/echo") -> list[UsageEvent]:
    return [
        UsageEvent(
            token_hash="a" * 64,
            route_path=route,
            used_at=datetime.now(UTC),
            response_status=200,
            response_time_ms=index,
        )
        for index in range(count)
    ]


async def wait_until(condition: Callable[[], bool], what: str) -> float:
    """Poll until the condition holds; seconds it took. Fails after DEADLINE_S."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > DEADLINE_S:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def spooled_ids(root: Path) -> list[str]:
    """What the spool under root holds, read as a restarted process would (and left there)."""
    reader = Spool(root, max_bytes=SPOOL_MAX_BYTES)
    try:
        return [e.event_id for segment in reader.take_segments() for e in segment.events]
    finally:
        reader.close()


def assert_each_once(written: list[str], expected: list[str]) -> None:
    duplicates = [event_id for event_id, n in Counter(written).items() if n > 1]
    assert duplicates == []
    assert sorted(written) == sorted(expected)


@pytest.fixture(autouse=True)
def fast_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry replays every 20 ms instead of backing off from 0.5 s: tests stay short."""
    monkeypatch.setattr(recorder_module, "REPLAY_BACKOFF_INITIAL_S", 0.02)
    monkeypatch.setattr(recorder_module, "REPLAY_BACKOFF_MAX_S", 0.05)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    return tmp_path / "spool"


MakeRecorder = Callable[..., UsageRecorder]


@pytest.fixture
async def make_recorder(store: FakeStore, spool_root: Path) -> AsyncIterator[MakeRecorder]:
    """`make_recorder(batch_size=..., flush_interval_s=..., ...)`: a recorder over the fake
    store and a spool in tmp_path, not started; stopped after the test if it was started."""
    made: list[UsageRecorder] = []

    def make(
        *,
        batch_size: int = 100,
        flush_interval_s: float = LONG_INTERVAL_S,
        queue_size: int = 10_000,
        spool_max_bytes: int = SPOOL_MAX_BYTES,
        writers: int = 1,
    ) -> UsageRecorder:
        recorder = UsageRecorder(
            store.write_batch,
            Spool(spool_root, max_bytes=spool_max_bytes),
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            queue_size=queue_size,
            writers=writers,
        )
        made.append(recorder)
        return recorder

    yield make
    store.is_down, store.gate = False, None
    for recorder in made:
        await recorder.stop()  # idempotent enough: stops tasks, drains, closes the spool


def record_all(recorder: UsageRecorder, events: list[UsageEvent]) -> None:
    for event in events:
        assert recorder.record(event)


# -- flushing --------------------------------------------------------------------------------


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    make_recorder: MakeRecorder, store: FakeStore
) -> None:
    recorder = make_recorder(batch_size=5, flush_interval_s=LONG_INTERVAL_S)
    await recorder.start()
    events = make_events(12)
    record_all(recorder, events)
    await wait_until(lambda: len(store.batches) == 2, "two full batches written")
    assert [len(batch) for batch in store.batches] == [5, 5]
    assert store.written_ids == [e.event_id for e in events[:10]]
    assert recorder.stats.written == 10  # the last two wait for more, up to the interval


async def test_a_partial_batch_is_written_after_the_flush_interval(
    make_recorder: MakeRecorder, store: FakeStore
) -> None:
    recorder = make_recorder(batch_size=1000, flush_interval_s=0.1)
    await recorder.start()
    events = make_events(3)
    started = time.monotonic()
    record_all(recorder, events)
    await wait_until(lambda: len(store.written_ids) == 3, "the partial batch written")
    assert time.monotonic() - started >= 0.09  # it waited for more, up to the interval
    assert [len(batch) for batch in store.batches] == [3]
    # The next event, alone, is written within an interval too.
    later = make_events(1)
    record_all(recorder, later)
    await wait_until(lambda: len(store.written_ids) == 4, "the next event written")
    assert recorder.stats.recorded == recorder.stats.written == 4


async def test_with_two_writers_a_batch_is_written_while_another_waits_and_no_more(
    make_recorder: MakeRecorder, store: FakeStore
) -> None:
    recorder = make_recorder(batch_size=3, flush_interval_s=LONG_INTERVAL_S, writers=2)
    await recorder.start()
    store.gate = asyncio.Event()
    events = make_events(9)
    record_all(recorder, events)
    await wait_until(lambda: store.in_flight == 2, "two writes in flight")
    await asyncio.sleep(0.05)  # time enough for a third write to start, were it allowed
    assert store.attempts == 2
    store.gate.set()
    await wait_until(lambda: recorder.stats.written == 9, "every batch written")
    assert_each_once(store.written_ids, [e.event_id for e in events])


# -- store failures, spool and replay --------------------------------------------------------


async def test_a_failed_batch_is_spooled_and_replayed_exactly_once_when_the_store_returns(
    make_recorder: MakeRecorder, store: FakeStore, spool_root: Path
) -> None:
    recorder = make_recorder(batch_size=4, flush_interval_s=0.02)
    await recorder.start()
    store.is_down = True
    events = make_events(10)
    record_all(recorder, events)
    await wait_until(lambda: recorder.stats.spooled == 10, "every event spooled")
    assert recorder.stats.store_failures >= 1
    assert store.written_ids == []
    # Replays keep failing while the store is down, and the events stay spooled.
    attempts = store.attempts
    await wait_until(lambda: store.attempts > attempts + 2, "replay retried")
    assert recorder.stats.replayed == 0

    store.is_down = False
    await wait_until(lambda: recorder.stats.replayed == 10, "every event replayed")
    assert_each_once(store.written_ids, [e.event_id for e in events])
    assert recorder.stats.written == 0  # they reached the store by replay, not directly
    await wait_until(lambda: not Spool(spool_root, max_bytes=1).has_pending(), "spool empty")
    # Nothing is replayed a second time later on.
    record_all(recorder, more := make_events(2))
    await wait_until(lambda: len(store.written_ids) == 12, "later events written")
    assert_each_once(store.written_ids, [e.event_id for e in events + more])


def rejected_ids(spool_root: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for path in sorted((spool_root / REJECTED_DIRECTORY).glob("*.ndjson"))
        for line in path.read_text().splitlines()
    ]


async def test_a_batch_refused_for_its_data_sets_that_event_aside_and_holds_up_nothing(
    make_recorder: MakeRecorder, store: FakeStore, spool_root: Path
) -> None:
    recorder = make_recorder(batch_size=4, flush_interval_s=0.02)
    await recorder.start()
    good, refused = make_events(7), make_events(1, route=REFUSED_ROUTE)
    first = good[:3] + refused  # one batch of four, refused as a whole
    record_all(recorder, first)
    await wait_until(lambda: recorder.stats.dropped["rejected"] == 1, "the bad event set aside")
    assert rejected_ids(spool_root) == [refused[0].event_id]
    # Later events, spooled behind the refused batch during an outage, are not held up by it.
    store.is_down = True
    record_all(recorder, good[3:])
    await wait_until(lambda: recorder.stats.spooled == 8, "the outage's events spooled")
    store.is_down = False
    await wait_until(lambda: recorder.stats.replayed == 7, "every good event replayed")
    assert_each_once(store.written_ids, [e.event_id for e in good])
    await wait_until(lambda: not Spool(spool_root, max_bytes=1).has_pending(), "spool empty")
    assert spooled_ids(spool_root) == []  # the rejected folder is never replayed
    assert rejected_ids(spool_root) == [refused[0].event_id]

    # As docs/gateway.md says: once the cause is fixed, a rejected file moved into a folder of
    # its own under the spool is replayed by the next process to start, like a stopped one's.
    await recorder.stop()
    store.refused_route = None
    retry = spool_root / "w-retry"
    retry.mkdir()
    for path in (spool_root / REJECTED_DIRECTORY).glob("*.ndjson"):
        path.rename(retry / path.name)
    restarted = make_recorder(batch_size=4, flush_interval_s=0.02)
    await restarted.start()
    await wait_until(lambda: restarted.stats.replayed == 1, "the retried event replayed")
    assert_each_once(store.written_ids, [e.event_id for e in good + refused])


async def test_events_recorded_during_an_outage_and_after_it_each_arrive_once(
    make_recorder: MakeRecorder, store: FakeStore
) -> None:
    recorder = make_recorder(batch_size=3, flush_interval_s=0.01)
    await recorder.start()
    expected: list[str] = []
    for phase_is_down in (False, True, False, True, False):
        store.is_down = phase_is_down
        events = make_events(7)
        expected += [e.event_id for e in events]
        record_all(recorder, events)
        await wait_until(lambda: recorder.queue_depth == 0 and store.in_flight == 0, "queue empty")
    await wait_until(lambda: len(store.written_ids) >= len(expected), "all events stored")
    await wait_until(lambda: recorder.stats.written + recorder.stats.replayed == 35, "counted")
    assert_each_once(store.written_ids, expected)


async def test_a_full_queue_refuses_the_new_event_and_counts_it(
    make_recorder: MakeRecorder, store: FakeStore
) -> None:
    recorder = make_recorder(queue_size=3)  # not started: nothing drains the queue
    events = make_events(5)
    accepted = [recorder.record(event) for event in events]
    assert accepted == [True, True, True, False, False]
    assert recorder.stats.dropped["queue_full"] == 2
    assert recorder.stats.recorded == 3
    await recorder.start()
    await recorder.stop()
    assert store.written_ids == [e.event_id for e in events[:3]]


@pytest.mark.parametrize(
    "failure", [OSError(28, "No space left on device"), ValueError("not what the spool expects")]
)
async def test_a_spool_that_cannot_be_written_drops_the_batch_counts_it_and_writing_goes_on(
    make_recorder: MakeRecorder,
    store: FakeStore,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    def fail(*_: object) -> None:
        raise failure

    monkeypatch.setattr(Spool, "append", fail)
    recorder = make_recorder(batch_size=3, flush_interval_s=0.01, writers=2)
    await recorder.start()
    store.is_down = True
    record_all(recorder, make_events(3))
    await wait_until(lambda: recorder.stats.dropped["spool_error"] == 3, "the batch counted")
    store.is_down = False
    later = make_events(3)
    record_all(recorder, later)
    await wait_until(lambda: recorder.stats.written == 3, "the next batch written")
    assert store.written_ids == [e.event_id for e in later]


async def test_a_full_spool_drops_the_batch_and_counts_every_event(
    make_recorder: MakeRecorder, store: FakeStore, spool_root: Path
) -> None:
    one_event_bytes = len(json.dumps(make_events(1)[0].to_json(), separators=(",", ":"))) + 1
    recorder = make_recorder(
        batch_size=4, flush_interval_s=0.01, spool_max_bytes=6 * one_event_bytes
    )
    await recorder.start()
    store.is_down = True
    first = make_events(4)
    record_all(recorder, first)
    await wait_until(lambda: recorder.stats.spooled == 4, "the first batch spooled")
    second = make_events(4)  # 4 more would cross the limit of 6: the whole batch is dropped
    record_all(recorder, second)
    await wait_until(lambda: recorder.stats.dropped["spool_full"] == 4, "the drop counted")
    assert recorder.stats.spooled == 4
    assert recorder.stats.recorded == 8
    await recorder.stop()  # releases the spool directory so it can be read as after a restart
    assert sorted(spooled_ids(spool_root)) == sorted(e.event_id for e in first)


# -- stopping --------------------------------------------------------------------------------


async def test_stop_drains_queued_and_half_collected_events_to_the_store(
    make_recorder: MakeRecorder, store: FakeStore
) -> None:
    recorder = make_recorder(batch_size=1000, flush_interval_s=LONG_INTERVAL_S)
    await recorder.start()
    events = make_events(25)
    record_all(recorder, events)
    # The writer holds the first event and waits for more; the rest are queued.
    await wait_until(lambda: recorder.queue_depth < len(events), "the writer took an event")
    # The writer holds them, waiting for a full batch or the interval; stop must not lose them.
    await recorder.stop()
    assert_each_once(store.written_ids, [e.event_id for e in events])


@pytest.mark.parametrize("writers", [1, 2])
async def test_stop_during_slow_writes_writes_every_event_once(
    make_recorder: MakeRecorder, store: FakeStore, writers: int
) -> None:
    recorder = make_recorder(batch_size=3, flush_interval_s=0.01, writers=writers)
    await recorder.start()
    store.gate = asyncio.Event()
    events = make_events(3 * writers)
    record_all(recorder, events)
    await wait_until(lambda: store.in_flight == writers, "every writer's write in flight")
    later = make_events(4)
    record_all(recorder, later)
    stopping = asyncio.create_task(recorder.stop())
    await asyncio.sleep(0)  # let stop begin while the writes still hang
    store.gate.set()
    await asyncio.wait_for(stopping, DEADLINE_S)
    assert_each_once(store.written_ids, [e.event_id for e in events + later])
    assert recorder.stats.written == len(events + later)


async def test_stop_spools_the_queue_when_the_store_is_down(
    make_recorder: MakeRecorder, store: FakeStore, spool_root: Path
) -> None:
    recorder = make_recorder(batch_size=4, flush_interval_s=LONG_INTERVAL_S)
    await recorder.start()
    store.is_down = True
    events = make_events(10)
    record_all(recorder, events)
    # Two full batches fail and are spooled; the writer holds the next event, waiting for more.
    await wait_until(lambda: recorder.stats.spooled == 8, "two batches spooled")
    await wait_until(lambda: recorder.queue_depth < 2, "the writer took the next event")
    await recorder.stop()
    assert store.written_ids == []
    assert recorder.stats.spooled == 10
    assert sorted(spooled_ids(spool_root)) == sorted(e.event_id for e in events)


# -- restart ---------------------------------------------------------------------------------


CRASHING_RECORDER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from tokenmanager.usage.events import UsageEvent
    from tokenmanager.usage.recorder import UsageRecorder
    from tokenmanager.usage.spool import Spool

    async def failing_store(events):
        raise ConnectionError("the store is down")

    async def main():
        recorder = UsageRecorder(
            failing_store, Spool(Path(sys.argv[1]), max_bytes=10_000_000),
            batch_size=3, flush_interval_s=0.01, queue_size=100,
        )
        await recorder.start()
        events = [
            UsageEvent(token_hash="c" * 64, route_path="/crash", response_status=200,
                       used_at=datetime.now(UTC), response_time_ms=i)
            for i in range(8)
        ]
        for event in events:
            recorder.record(event)
        while recorder.stats.spooled < len(events):
            await asyncio.sleep(0.01)
        print(json.dumps([e.event_id for e in events]), flush=True)
        os._exit(0)  # a crash: no stop(), no close(); the kernel releases the spool lock

    asyncio.run(main())
    """
)


async def test_a_new_recorder_replays_what_a_crashed_process_spooled(
    make_recorder: MakeRecorder, store: FakeStore, spool_root: Path
) -> None:
    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_RECORDER,
        str(spool_root),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(crashed.communicate(), 60)
    assert crashed.returncode == 0
    spooled = json.loads(stdout)

    recorder = make_recorder(batch_size=5, flush_interval_s=0.01)
    await recorder.start()
    await wait_until(lambda: recorder.stats.replayed == len(spooled), "the old events replayed")
    assert_each_once(store.written_ids, spooled)
    assert spooled_ids(spool_root) == []
