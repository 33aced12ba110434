"""The durable spool: fsynced appends, replay after a restart (a dead owner's directory is
adopted, a live owner's is left alone), torn last lines skipped and counted, the size limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokenmanager.usage import spool as spool_module
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.spool import Spool, SpooledSegment, SpoolFullError

MAX_BYTES = 10 * 1024 * 1024


def make_events(count: int, route: str = "/api/echo") -> list[UsageEvent]:
    return [
        UsageEvent(
            token_hash="a" * 64,
            route_path=route,
            used_at=datetime(2030, 1, 1, 12, 0, index % 60, tzinfo=UTC),
            response_status=200,
            response_time_ms=index,
        )
        for index in range(count)
    ]


def drain(spool: Spool) -> list[SpooledSegment]:
    """Take every replayable segment and delete it, as a successful replay does."""
    segments = list(spool.take_segments())
    for segment in segments:
        spool.remove(segment)
    return segments


def event_ids(segments: list[SpooledSegment]) -> list[str]:
    return [event.event_id for segment in segments for event in segment.events]


def segment_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.ndjson"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "spool"


OpenSpool = Callable[..., Spool]


@pytest.fixture
def open_spool(root: Path) -> Iterator[OpenSpool]:
    """`open_spool(max_bytes=...)`: a Spool on `root`, closed after the test (even a failed one)."""
    opened: list[Spool] = []

    def open_one(max_bytes: int = MAX_BYTES) -> Spool:
        opened.append(Spool(root, max_bytes=max_bytes))
        return opened[-1]

    yield open_one
    for spool in opened:
        spool.close()


def test_append_fsyncs_the_segment_before_returning(
    root: Path, open_spool: OpenSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = open_spool()
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", recording_fsync)
    spool.append(make_events(3))
    (segment,) = segment_files(root)
    # The last fsync covered the whole segment, with the three lines in it.
    assert synced
    assert synced[-1] == segment.stat().st_size
    assert len(segment.read_text().splitlines()) == 3
    spool.close()


def test_appended_events_come_back_whole_and_in_order(open_spool: OpenSpool) -> None:
    spool = open_spool()
    first, second = make_events(5), make_events(4, route="/v1")
    spool.append(first)
    spool.append(second)
    segments = drain(spool)
    assert [event for segment in segments for event in segment.events] == first + second
    assert all(segment.torn_lines == 0 for segment in segments)
    assert not spool.has_pending()
    spool.close()


def test_events_survive_a_crashed_process_and_are_replayed_by_the_next(
    root: Path, open_spool: OpenSpool
) -> None:
    # A real process appends and dies without closing anything: the kernel releases its lock.
    script = textwrap.dedent(
        """
        import json, os, sys
        from datetime import UTC, datetime
        from pathlib import Path
        from tokenmanager.usage.events import UsageEvent
        from tokenmanager.usage.spool import Spool

        spool = Spool(Path(sys.argv[1]), max_bytes=10_000_000)
        events = [
            UsageEvent(token_hash="c" * 64, route_path="/crash", response_status=200,
                       used_at=datetime(2030, 1, 1, tzinfo=UTC), response_time_ms=i)
            for i in range(7)
        ]
        spool.append(events)
        print(json.dumps([e.event_id for e in events]), flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    spooled_ids = json.loads(done.stdout)
    assert len(segment_files(root)) == 1

    restarted = open_spool()
    assert restarted.has_pending()
    assert event_ids(drain(restarted)) == spooled_ids
    assert not restarted.has_pending()
    # The adopted directory, now empty, is cleaned up on the next pass.
    assert list(restarted.take_segments()) == []
    assert [p for p in root.iterdir() if p.is_dir()] == []
    restarted.close()


def test_a_dead_owners_directory_is_adopted_in_process(open_spool: OpenSpool) -> None:
    first = open_spool()
    events = make_events(6)
    first.append(events)
    # What the kernel does when the owner dies: its lock (and files) are released, nothing
    # is removed.
    assert first._lock_handle is not None
    assert first._segment is not None
    first._segment.close()
    first._lock_handle.close()

    second = open_spool()
    assert event_ids(drain(second)) == [e.event_id for e in events]
    second.close()


def test_a_live_owners_directory_is_not_taken(root: Path, open_spool: OpenSpool) -> None:
    owner = open_spool()
    owner.append(make_events(3))
    other = open_spool()
    assert list(other.take_segments()) == []
    assert len(segment_files(root)) == 1  # left alone
    # Once the owner closes (its events still unreplayed), the directory is free to adopt.
    owner.close()
    assert len(event_ids(drain(other))) == 3
    other.close()


def test_an_owner_replays_its_own_segments(open_spool: OpenSpool) -> None:
    spool = open_spool()
    events = make_events(4)
    spool.append(events)
    assert event_ids(drain(spool)) == [e.event_id for e in events]
    later = make_events(2, route="/later")
    spool.append(later)  # after a replay the next append opens a new segment
    assert event_ids(drain(spool)) == [e.event_id for e in later]
    spool.close()


def test_a_torn_last_line_is_skipped_and_counted(root: Path, open_spool: OpenSpool) -> None:
    spool = open_spool()
    events = make_events(5)
    spool.append(events)
    spool.close()  # keeps the directory: it still holds events
    (segment_path,) = segment_files(root)
    whole_line = json.dumps(make_events(1)[0].to_json())
    with segment_path.open("a", encoding="utf-8") as segment:
        segment.write(whole_line[: len(whole_line) // 2])  # the crash hit mid-write

    restarted = open_spool()
    (segment,) = drain(restarted)
    assert segment.events == events
    assert segment.torn_lines == 1
    restarted.close()


def test_append_at_the_size_limit_raises_and_writes_nothing(open_spool: OpenSpool) -> None:
    one_event_bytes = len(json.dumps(make_events(1)[0].to_json(), separators=(",", ":"))) + 1
    spool = open_spool(10 * one_event_bytes + one_event_bytes // 2)
    for _ in range(10):
        spool.append(make_events(1))
    size = spool.size_bytes()
    with pytest.raises(SpoolFullError):
        spool.append(make_events(1))
    assert spool.size_bytes() == size
    # A batch that would cross the limit is refused whole, not cut.
    drain(spool)
    with pytest.raises(SpoolFullError):
        spool.append(make_events(11))
    assert spool.size_bytes() == 0
    spool.append(make_events(10))
    spool.close()


def test_the_size_limit_counts_other_owners_segments(open_spool: OpenSpool) -> None:
    owner = open_spool()
    owner.append(make_events(20))
    other = open_spool(owner.size_bytes() + 10)
    with pytest.raises(SpoolFullError):
        other.append(make_events(1))
    owner.close()
    other.close()


def test_close_removes_an_empty_directory_and_keeps_one_with_events(
    root: Path, open_spool: OpenSpool
) -> None:
    emptied = open_spool()
    emptied.append(make_events(1))
    drain(emptied)
    emptied.close()
    assert [p for p in root.iterdir() if p.is_dir()] == []

    holding = open_spool()
    holding.append(make_events(2))
    holding.close()
    assert len(segment_files(root)) == 1


def write_dead_owner_directory(root: Path, name: str, events: list[UsageEvent]) -> None:
    """The layout a crashed process leaves: its directory, its (unlocked) lock file, a segment."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / ".lock").touch()
    lines = "".join(json.dumps(e.to_json()) + "\n" for e in events)
    (directory / "00000001.ndjson").write_text(lines, encoding="utf-8")


def test_an_append_during_a_replay_pass_is_not_lost(root: Path, open_spool: OpenSpool) -> None:
    """Replay hands out segments one by one; an append may come between two of them (the
    recorder appends and replays in different threads). The segment that append opens must
    not be handed out and deleted while it is still being written."""
    spool = open_spool()
    before, during, after = make_events(2), make_events(3, "/during"), make_events(4, "/after")
    dead = make_events(1, "/dead")
    spool.append(before)
    write_dead_owner_directory(root, "w-000000000000", dead)  # sorts before the spool's own

    replayed: list[str] = []
    segments = spool.take_segments()
    first = next(segments)
    assert [e.event_id for e in first.events] == [e.event_id for e in dead]
    replayed.extend(e.event_id for e in first.events)
    spool.remove(first)
    spool.append(during)
    for segment in segments:
        replayed.extend(e.event_id for e in segment.events)
        spool.remove(segment)
    spool.append(after)
    replayed.extend(event_ids(drain(spool)))

    expected = [e.event_id for e in dead + before + during + after]
    assert sorted(replayed) == sorted(expected)
    spool.close()


def test_replay_while_appending_loses_no_event(open_spool: OpenSpool) -> None:
    """The writer appends while the replayer takes and removes segments in another thread
    (as the recorder's two tasks do): every event is replayed exactly once."""
    spool = open_spool(100 * MAX_BYTES)
    appended: list[str] = []
    replayed: list[str] = []
    stop = threading.Event()

    def replay_until_stopped() -> None:
        while not stop.is_set():
            replayed.extend(event_ids(drain(spool)))

    replayer = threading.Thread(target=replay_until_stopped)
    replayer.start()
    try:
        for _ in range(500):
            batch = make_events(2)
            spool.append(batch)
            appended.extend(e.event_id for e in batch)
    finally:
        stop.set()
        replayer.join()
    replayed.extend(event_ids(drain(spool)))
    assert sorted(replayed) == sorted(appended)
    spool.close()
