"""Usage batches written by a child process, so the gateway's event loop only queues events.

Writing a batch (SQLAlchemy statements, the rollups, `last_used`) costs ~50-100 µs of Python
per event: on the event loop that is a third of a proxied call's CPU and a stall of several
milliseconds per batch. The child pays it on another core; the loop pays a pickle.

    recorder -> write_batch -> [length-prefixed pickle over the child's stdin]
             <- new-row count, or the failure's name and whether the store refused the data
             <- child: Database.write + insert

Nothing else changes for the recorder: a failed write (the store's, or the child's) raises, so
the batch goes to the spool as before and is replayed through here. A child that died is
started again for the next batch. The child ignores SIGINT/SIGTERM (the gateway drains its queue
through it on shutdown) and exits when its stdin closes, also when the gateway is killed.
The database URL travels through the pipe, never on a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import pickle
import signal
import struct
import sys
from collections.abc import Sequence
from typing import Any

from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.recorder import RefusedBatchError

logger = logging.getLogger(__name__)

_FRAME_HEADER = struct.Struct("!I")
# Events cross the pipe as tuples of their field values: pickling the dataclass itself runs
# its Python-level __getstate__ per event, which costs more than everything else here.
_EVENT_FIELDS = tuple(field.name for field in dataclasses.fields(UsageEvent))
_event_values = operator.attrgetter(*_EVENT_FIELDS)
STOP_TIMEOUT_S = 30.0


class UsageWriterError(Exception):
    """The child could not write the batch (the store failed, or the child is gone)."""


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME_HEADER.pack(len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (length,) = _FRAME_HEADER.unpack(await reader.readexactly(_FRAME_HEADER.size))
    return pickle.loads(await reader.readexactly(length))  # noqa: S301 - our own child's pipe


class UsageWriterProcess:
    """`write_batch` for the recorder, backed by one child process: started with the gateway
    (`start`), and again on the next write if it ends."""

    def __init__(self, database_url: str, zone_name: str = "UTC") -> None:
        self._database_url = database_url
        self._zone_name = zone_name  # TOKENMANAGER_TIMEZONE: spend periods are cut there
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one batch at a time on the pipe

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start the child and wait until it can write: a first batch must not wait for its
        imports (seconds on a busy machine), or budgets would see spend that late."""
        async with self._lock:
            await self._running_process()

    async def write_batch(self, events: Sequence[UsageEvent]) -> int:
        async with self._lock:
            process = await self._running_process()
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                process.stdin.write(_frame([_event_values(event) for event in events]))
                await process.stdin.drain()
                written, failure, refused = await _read_frame(process.stdout)
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                self._discard(process)
                raise UsageWriterError("the usage writer process ended") from exc
            except BaseException:
                self._discard(process)  # cancelled mid-frame: the pipe is out of step
                raise
        if refused:
            raise RefusedBatchError(failure)
        if failure is not None:
            raise UsageWriterError(f"the usage store failed ({failure})")
        return int(written)

    async def close(self) -> None:
        """Let the child finish and exit (its stdin closes); kill it if it does not."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("the usage writer process did not stop; killing it")
            process.kill()
            await process.wait()

    async def _running_process(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._process.returncode is None:
            return self._process
        if self._process is not None:
            logger.warning("usage writer process exited (%s); starting it again",
                           self._process.returncode)  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(_frame((self._database_url, self._zone_name)))
        try:
            await process.stdin.drain()
            await _read_frame(process.stdout)  # "ready"
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            self._discard(process)
            raise UsageWriterError("the usage writer process did not start") from exc
        self._process = process
        return process

    def _discard(self, process: asyncio.subprocess.Process) -> None:
        if self._process is process:
            self._process = None
        with contextlib.suppress(ProcessLookupError):
            process.kill()


# -- the child -------------------------------------------------------------------------------


async def _serve_parent() -> None:
    from zoneinfo import ZoneInfo

    from tokenmanager.storage.database import Database
    from tokenmanager.storage.usage import write_usage_batch

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout.buffer
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    database_url, zone_name = await _read_frame(reader)
    database = Database.from_url(database_url)
    zone = ZoneInfo(zone_name)
    writer.write(_frame("ready"))
    await writer.drain()
    try:
        while True:
            try:
                events = [UsageEvent(*values) for values in await _read_frame(reader)]
            except asyncio.IncompleteReadError:
                return  # the gateway closed the pipe: done
            answer: tuple[int, str | None, bool]
            try:
                answer = (await write_usage_batch(database, events, zone=zone), None, False)
            except RefusedBatchError as exc:
                answer = (0, str(exc), True)
            except Exception as exc:  # noqa: BLE001 - reported to the gateway, which spools
                answer = (0, type(exc).__name__, False)
            writer.write(_frame(answer))
            await writer.drain()
    finally:
        await database.dispose()


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve_parent())


if __name__ == "__main__":
    main()
