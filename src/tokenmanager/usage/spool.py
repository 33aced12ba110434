"""The durable spool: where usage batches wait while the store is unreachable.

Each process appends to segment files in a directory of its own, which it holds an exclusive
`flock` on while it lives. Replay takes segments from its own directory and from directories whose
owner died (their lock is free), so events spooled before a crash are ingested after a restart.
Appends are fsynced; a torn last line (crash mid-write) is skipped and counted. Replay is
idempotent because the store ignores `event_id`s it already has.

Blocking file I/O: callers run these methods in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tokenmanager.usage.events import UsageEvent

logger = logging.getLogger(__name__)

SEGMENT_MAX_BYTES = 8 * 1024 * 1024
_LOCK_FILE = ".lock"
_PROCESS_PREFIX = "w-"  # each process's own directory; `rejected/` is not one
_PENDING_GLOB = f"{_PROCESS_PREFIX}*/*.ndjson"
REJECTED_DIRECTORY = "rejected"


def _as_lines(events: list[UsageEvent]) -> str:
    return "".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in events)


@dataclass(frozen=True, slots=True)
class SpooledSegment:
    path: Path
    events: list[UsageEvent]
    torn_lines: int


class SpoolFullError(Exception):
    pass


class Spool:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self._max_bytes = max_bytes
        self._directory: Path | None = None
        self._lock_handle: IO[str] | None = None
        self._segment: IO[str] | None = None
        self._sequence = 0
        self._lock = threading.Lock()  # append and replay run in different worker threads

    def _own_directory(self) -> Path:
        if self._directory is None:
            directory = self.root / f"{_PROCESS_PREFIX}{uuid.uuid4().hex[:12]}"
            directory.mkdir(parents=True, exist_ok=True)
            handle = open(directory / _LOCK_FILE, "w")  # noqa: SIM115 - held for the process's life
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._directory, self._lock_handle = directory, handle
        return self._directory

    def size_bytes(self) -> int:
        if not self.root.exists():
            return 0
        total = 0
        for path in self.root.glob(_PENDING_GLOB):
            # A replay in another thread or process may delete a segment between glob and stat.
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def append(self, events: list[UsageEvent]) -> None:
        """Write events durably (fsync). SpoolFullError if the spool is at its size limit."""
        payload = _as_lines(events)
        with self._lock:
            if self.size_bytes() + len(payload) > self._max_bytes:
                raise SpoolFullError(f"spool at its limit of {self._max_bytes} bytes")
            if self._segment is None or self._segment.tell() > SEGMENT_MAX_BYTES:
                self._roll()
            assert self._segment is not None
            self._segment.write(payload)
            self._segment.flush()
            os.fsync(self._segment.fileno())

    def _roll(self) -> None:
        self._close_segment()
        self._sequence += 1
        path = self._own_directory() / f"{self._sequence:08d}.ndjson"
        self._segment = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across appends
        # Make the new file's directory entry durable too.
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None

    def has_pending(self) -> bool:
        return self.root.exists() and any(self.root.glob(_PENDING_GLOB))

    def take_segments(self) -> Iterator[SpooledSegment]:
        """Segments to replay: this process's (its open one is closed first) and dead owners'.

        Delete each with `remove` once its events are in the store.
        """
        if not self.root.exists():
            return
        with self._lock:
            # Closing and listing under one lock: an append that comes later opens a segment
            # not in this list, so no segment handed out here is still being written.
            self._close_segment()
            own_paths = sorted(self._directory.glob("*.ndjson")) if self._directory else []
        directories = (p for p in self.root.iterdir() if p.name.startswith(_PROCESS_PREFIX))
        for directory in sorted(p for p in directories if p.is_dir()):
            if directory != self._directory and not self._adopt(directory):
                continue  # a live process owns it
            paths = (
                own_paths if directory == self._directory else sorted(directory.glob("*.ndjson"))
            )
            if not paths and directory != self._directory:
                shutil.rmtree(directory, ignore_errors=True)  # a dead owner's, fully replayed
            for path in paths:
                yield self._read(path)

    def _adopt(self, directory: Path) -> bool:
        """True if the directory's owner is gone (we could take its lock)."""
        try:
            handle = open(directory / _LOCK_FILE, "a")  # noqa: SIM115
        except OSError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.close()  # closing releases it; the directory is ours to drain
        return True

    @staticmethod
    def _read(path: Path) -> SpooledSegment:
        events: list[UsageEvent] = []
        torn = 0
        with open(path, encoding="utf-8") as segment:
            for line in segment:
                try:
                    events.append(UsageEvent.from_json(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    torn += 1
        if torn:
            logger.warning("spool segment %s: skipped %d unreadable line(s)", path.name, torn)
        return SpooledSegment(path=path, events=events, torn_lines=torn)

    def reject(self, events: list[UsageEvent]) -> Path:
        """Keep events the store refused in `<root>/rejected/`, out of every replay: one
        NDJSON file per call, fsynced, never deleted by the product."""
        directory = self.root / REJECTED_DIRECTORY
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = directory / f"{stamp}-{uuid.uuid4().hex[:8]}.ndjson"
        payload = _as_lines(events)
        with open(path, "w", encoding="utf-8") as rejected:
            rejected.write(payload)
            rejected.flush()
            os.fsync(rejected.fileno())
        return path

    @staticmethod
    def remove(segment: SpooledSegment) -> None:
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release this process's directory (left behind only if it still holds events)."""
        with self._lock:
            self._close_segment()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None
        if self._directory is not None and not any(self._directory.glob("*.ndjson")):
            shutil.rmtree(self._directory, ignore_errors=True)
        self._directory = None
