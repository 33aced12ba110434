"""The usage recorder: the original design's `waitUntil`, without its losses.

    record(event) -> bounded queue -> writer task -> one transaction per batch (store),
                                                     up to `writers` batches at a time
                                                  '-> durable spool when the store fails
                                        replay task <-'  (backoff; idempotent on event_id)

`record` never blocks the caller. Policies, each counted in metrics: a full queue drops the new
event (reason "queue_full"); a full spool drops the batch (reason "spool_full"), and so does a
spool that cannot be written at all (reason "spool_error"). `stop` drains
the queue to the store or, failing that, the spool.

A batch the store refuses for its data (`RefusedBatchError`: a value the database cannot hold,
not an outage) would otherwise be retried forever and hold up every segment spooled after it.
Replay then writes that batch's events one by one and sets the refused ones aside in the
spool's `rejected/` folder (reason "rejected"), where an operator can read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.spool import Spool, SpoolFullError

logger = logging.getLogger(__name__)

WriteBatch = Callable[[Sequence[UsageEvent]], Awaitable[int]]


class RefusedBatchError(Exception):
    """Raised by a `WriteBatch` when the store refused the batch's data, not because it is down:
    writing the same events again would fail again."""


REPLAY_BACKOFF_INITIAL_S = 0.5
REPLAY_BACKOFF_MAX_S = 30.0


@dataclass(slots=True)
class RecorderStats:
    """Counters since start; the gateway's /metrics exports them."""

    recorded: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    store_failures: int = 0
    dropped: dict[str, int] = field(
        default_factory=lambda: {"queue_full": 0, "spool_full": 0, "spool_error": 0, "rejected": 0}
    )


class UsageRecorder:
    def __init__(
        self,
        write_batch: WriteBatch,
        spool: Spool,
        *,
        batch_size: int,
        flush_interval_s: float,
        queue_size: int,
        writers: int = 1,
    ) -> None:
        self._write_batch = write_batch
        self._spool = spool
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._queue: asyncio.Queue[UsageEvent] = asyncio.Queue(maxsize=queue_size)
        # Events the writer took from the queue for the batch it is still collecting: `stop`
        # cancels the writer, possibly mid-batch, and must not lose them.
        self._in_hand: list[UsageEvent] = []
        self._writes: set[asyncio.Future[int]] = set()  # store writes under way
        # Batches being stored or spooled. While one batch's transaction waits on the database,
        # the next one's can run: the store's work spreads over its cores.
        self._flushes: set[asyncio.Task[None]] = set()
        self._writer_slots = asyncio.Semaphore(writers)
        self._writer: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._spool_has_data = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._last_drop_log = 0.0
        self.stats = RecorderStats()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def record(self, event: UsageEvent) -> bool:
        """Queue an event; False (and counted) if the queue is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._count_drop("queue_full", 1)
            return False
        self.stats.recorded += 1
        if self._queue.qsize() >= self._batch_size:
            self._batch_full.set()
        return True

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="usage-writer")
        self._replayer = asyncio.create_task(self._replay_loop(), name="usage-replayer")
        if await asyncio.to_thread(self._spool.has_pending):
            self._spool_has_data.set()

    async def stop(self) -> None:
        """Drain the queue to the store (or the spool) and stop the background tasks.

        Batches being written are finished, not cut short (a replay's write too). Then the
        batch the writer was still collecting and the queue are written (or spooled).
        """
        for task in (self._writer, self._replayer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._finish_flushes()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        in_hand, self._in_hand = self._in_hand, []
        await self._flush(in_hand)
        while not self._queue.empty():
            await self._flush(self._take_ready(self._batch_size))
        await asyncio.to_thread(self._spool.close)

    async def flush(self) -> None:
        """Write everything queued now, and wait for the batches being written (tests and
        shutdown use it)."""
        while not self._queue.empty():
            await self._flush(self._take_ready(self._batch_size))
        await self._finish_flushes()

    async def _finish_flushes(self) -> None:
        """Wait for the batches being written now (not for those a running writer starts
        meanwhile: under steady traffic that would never end)."""
        if self._flushes:
            await asyncio.gather(*set(self._flushes), return_exceptions=True)

    def _take_ready(self, limit: int) -> list[UsageEvent]:
        batch: list[UsageEvent] = []
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _write_loop(self) -> None:
        while True:
            await self._writer_slots.acquire()  # a free writer first, so batches fill meanwhile
            self._in_hand = batch = [await self._queue.get()]
            if self._queue.qsize() + 1 < self._batch_size:
                # One timer per batch, not a wake-up per event: wait out the flush interval
                # unless `record` reports a full batch first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval_s):
                        await self._batch_full.wait()
            self._batch_full.clear()
            batch.extend(self._take_ready(self._batch_size - 1))
            flush = asyncio.create_task(self._flush(batch), name="usage-batch")
            self._in_hand = []
            self._flushes.add(flush)
            flush.add_done_callback(self._flush_done)

    def _flush_done(self, flush: asyncio.Task[None]) -> None:
        self._flushes.discard(flush)
        self._writer_slots.release()
        if not flush.cancelled() and (exc := flush.exception()) is not None:
            logger.error("usage batch task failed", exc_info=exc)  # `_flush` handles all it knows

    async def _flush(self, batch: list[UsageEvent]) -> None:
        if not batch:
            return
        try:
            await self._store(batch)
            self.stats.written += len(batch)
            return
        except RefusedBatchError as exc:
            self.stats.store_failures += 1
            logger.warning(
                "usage store refused a batch (%s); spooling its %d event(s) for the replay to "
                "set the refused ones aside",
                exc,
                len(batch),
            )
        except Exception as exc:  # noqa: BLE001 - any store failure sends the batch to the spool
            self.stats.store_failures += 1
            logger.warning(
                "usage store unavailable (%s); spooling %d event(s)", type(exc).__name__, len(batch)
            )
        try:
            await asyncio.to_thread(self._spool.append, batch)
        except SpoolFullError:
            self._count_drop("spool_full", len(batch))
            return
        except OSError as exc:
            # Disk full, permissions: the writer must live on, so the batch is dropped, counted.
            logger.error("cannot write the usage spool (%s)", exc.strerror or type(exc).__name__)
            self._count_drop("spool_error", len(batch))
            return
        except Exception:
            # Anything else the spool raises: still counted, never a silent loss.
            logger.exception("cannot write the usage spool")
            self._count_drop("spool_error", len(batch))
            return
        self.stats.spooled += len(batch)
        self._spool_has_data.set()

    async def _replay_loop(self) -> None:
        backoff_s = REPLAY_BACKOFF_INITIAL_S
        while True:
            await self._spool_has_data.wait()
            if await self._replay_once():
                self._spool_has_data.clear()
                backoff_s = REPLAY_BACKOFF_INITIAL_S
                if await asyncio.to_thread(self._spool.has_pending):
                    self._spool_has_data.set()  # new data arrived while replaying
            else:
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, REPLAY_BACKOFF_MAX_S)

    async def _replay_once(self) -> bool:
        """Replay every available segment; False if the store failed (retry later)."""
        segments = await asyncio.to_thread(lambda: list(self._spool.take_segments()))
        for segment in segments:
            refused = 0
            try:
                for start in range(0, len(segment.events), self._batch_size):
                    refused += await self._replay_batch(
                        segment.events[start : start + self._batch_size]
                    )
            except Exception as exc:  # noqa: BLE001
                logger.info(
                    "spool replay deferred: store still unavailable (%s)", type(exc).__name__
                )
                return False
            await asyncio.to_thread(self._spool.remove, segment)
            self.stats.replayed += len(segment.events) - refused
        return True

    async def _replay_batch(self, events: list[UsageEvent]) -> int:
        """Store a spooled batch; if the store refuses its data, store its events one by one
        and set the refused ones aside. Returns how many were refused. An outage (any other
        failure) propagates: the segment stays for the next replay, and events already stored
        are not stored twice (the store ignores event_ids it has)."""
        try:
            await self._store(events)
            return 0
        except RefusedBatchError:
            pass
        refused: list[UsageEvent] = []
        reasons: set[str] = set()
        for event in events:
            try:
                await self._store([event])
            except RefusedBatchError as exc:
                refused.append(event)
                reasons.add(str(exc))
        if refused:
            path = await asyncio.to_thread(self._spool.reject, refused)
            logger.error(
                "%d usage event(s) refused by the store (%s), set aside in %s",
                len(refused), ", ".join(sorted(reasons)), path,
            )  # fmt: skip
            self._count_drop("rejected", len(refused))
        return len(refused)

    async def _store(self, events: Sequence[UsageEvent]) -> int:
        """`write_batch`, shielded from cancellation: `stop` waits for a write under way instead
        of cutting it short. A database call cancelled half-way can leave its connection
        unusable and, on SQLite, its worker thread alive, which keeps the process from exiting.
        """
        write = asyncio.ensure_future(self._write_batch(events))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        return await asyncio.shield(write)

    def _count_drop(self, reason: str, count: int) -> None:
        self.stats.dropped[reason] += count
        now = time.monotonic()
        if now - self._last_drop_log > 10:  # a drop storm must not become a log storm
            self._last_drop_log = now
            logger.error("usage events dropped (%s): %d so far", reason, self.stats.dropped[reason])
