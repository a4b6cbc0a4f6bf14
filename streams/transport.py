"""A Faust transport that subscribes by pattern and hands whole fetch batches to the sink.

Faust's cost is per Kafka message (~200 µs of task scheduling here, see
DESIGN.md), far above the ~5 µs the bare client needs. For every topic that is a
stream (``Routing.stream_of``) this consumer turns each fetched partition batch into
ONE ``FetchBatch`` and awaits ``Routing.deliver`` with it, in the fetch loop: no
Faust message, conductor or agent in between (Faust's conductor routes only topics
named by its channels, and discovered topics are not). The sink commits their
offsets itself, after the ClickHouse insert succeeded. Other topics (Faust's own
channels, if any) keep Faust's per-message path.

Discovery: Faust's aiokafka driver subscribes by topic list only ("pattern does not
work"); ``subscribe`` here subscribes aiokafka by ONE regex (``Routing.pattern``, which
also matches the topics Faust asked for), with Faust's rebalance listener. aiokafka
matches it against the cluster's metadata, refreshed every ``metadata_max_age_ms``
(STOCKTAKE_DISCOVERY_INTERVAL), and rejoins the group when the matching set changes:
a topic created later is assigned without a restart, through Faust's usual
on_partitions_assigned path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from stocktake.processors.judge import Record

log = logging.getLogger("stocktake.transport")
_new = tuple.__new__


class FetchBatch(NamedTuple):
    topic: str
    partition: int
    records: list[Record]
    generation_id: int


BatchHandler = Callable[[FetchBatch], Awaitable[None]]


@dataclass
class Routing:
    """What the consumer needs of the worker: which topics are streams (settings.stream_of),
    the subscription regex given the topics Faust asks for (settings.subscription_pattern), and
    who takes the batches (set once the sink exists; it must not raise: see app.create_app)."""

    stream_of: Callable[[str], str | None]
    pattern: Callable[[Iterable[str]], str]
    deliver: BatchHandler | None = None


class Handover:
    """Batches from the consumer's fetch loop to the sink through a bounded queue, judged by a
    task of their own: the fetch loop goes on fetching while the sink judges and inserts.
    Awaited in the fetch loop, judging a batch and the next broker fetch took turns (aiokafka
    fetches a partition again only once its records were taken): envelopes ran at 27-29k
    events/s against 41-44k (bench, 300k events, same machine). ``maxsize`` batches wait at
    most (one partition's records of one fetch each, at most broker_max_poll_records): a
    full queue holds the fetch loop, which is the backpressure."""

    def __init__(self, handle: BatchHandler, maxsize: int):
        self._handle = handle
        self._queue: asyncio.Queue[FetchBatch] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def deliver(self, batch: FetchBatch) -> None:
        if self._stopped:   # the worker is stopping: the partitions' next owner reads it again
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stocktake-handover")
        await self._queue.put(batch)

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            await self._handle(batch)   # must not raise (see app.create_app: it fails the sink)

    async def stop(self) -> None:
        """Drop what waits and what comes (never committed: the partitions' next owner reads it
        again)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            self._queue.get_nowait()


# How long the broker may hold a fetch waiting for data. Faust passes aiokafka 1,500 ms, with
# no setting for it. Kafka answers as soon as there is a byte (fetch.min.bytes=1), so there it
# changes nothing; embedded Tansu held fetches 0.4-0.7 s with data waiting (a bare aiokafka
# consumer, a message every 100 ms: median 394 ms from produced to fetched, 3 ms at 100).
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS   # read by start(), which builds its fetcher
        return consumer


class BatchingConsumer(faust_aiokafka.Consumer):
    routing: Routing   # set by batching_transport

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Subscribe aiokafka by pattern: every stream topic, found and re-found as topics are
        created (aiokafka takes topics or a pattern, never both: Faust's are in the pattern)."""
        pattern = self.routing.pattern(topics)
        log.info("subscribing to topics matching %s", pattern)
        thread = self._thread
        await thread.call_thread(
            thread._ensure_consumer().subscribe,
            pattern=pattern,
            listener=thread._rebalance_listener,
        )

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()
            except IllegalStateError:
                # A partition was revoked while flow was paused (a rebalance in flight). Raised
                # here it crashed the Fetcher and the worker stopped consuming for good; the
                # next pass seeks the new assignment, and the sink skips what is stored.
                log.info("seek skipped: the assignment changed during a rebalance")
            await self._rewind_uncommitted(records)
            return
        stream_of, deliver = self.routing.stream_of, self.routing.deliver
        for tp, tp_records in records.items():
            if self.app.consumer_generation_id != generation_id:
                break  # a rebalance started: what we fetched may no longer be ours
            if not tp_records:
                continue
            if not (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                # Paused while the fetch was in flight (the sink pauses every partition when
                # ClickHouse goes away). aiokafka has already moved past these records: dropped
                # here without a seek they were never read again (seen in CI: 680 of 4,145
                # events missing after an outage).
                await self._seek_back(tp, tp_records[0].offset)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if stream_of(tp.topic) is not None:
                if deliver is None:
                    raise RuntimeError("the batching consumer has no Routing.deliver: its records would be lost")
                await deliver(self._fetch_batch(tp, tp_records, generation_id))
            else:
                for record in tp_records:
                    yield tp, self._to_message(tp, record)

    async def _rewind_uncommitted(self, records: Mapping[TP, list[Any]]) -> None:
        """Fetched while flow was paused, these records are dropped. perform_seek rewinds only
        partitions with a committed offset above 0 (aiokafka's seek_to_committed): a partition
        never committed would go on after them and lose them. Seek it back to the first one
        (seen in the rebalance test: offsets 0-1 of a partition nobody had committed)."""
        for tp, tp_records in records.items():
            if tp_records and not self._committed_offset.get(tp):
                await self._seek_back(tp, tp_records[0].offset)

    async def _seek_back(self, tp: TP, offset: int) -> None:
        """Read ``tp`` again from ``offset``, unless it is no longer ours (its next owner reads it)."""
        try:
            # aiokafka's seek wants its own TopicPartition type
            await self.seek(TopicPartition(tp.topic, tp.partition), offset)  # type: ignore[arg-type]
        except IllegalStateError:
            pass

    @staticmethod
    def _fetch_batch(tp: TP, tp_records: list[Any], generation_id: int) -> FetchBatch:
        return FetchBatch(
            tp.topic, tp.partition,
            # Kafka's record timestamp (CreateTime or LogAppendTime, ms); -1/None: the record has none.
            # tuple.__new__: Record's own __new__ is Python, and this runs once a record
            [_new(Record, (r.offset, r.key, r.value, r.timestamp if r.timestamp is not None and r.timestamp >= 0
                           else None)) for r in tp_records],
            generation_id,
        )


def batching_transport(routing: Routing) -> type[faust_aiokafka.Transport]:
    """A Transport class whose consumer subscribes and delivers as ``routing`` says."""
    consumer_cls = type("BatchingConsumer", (BatchingConsumer,), {"routing": routing})
    return type("BatchingTransport", (faust_aiokafka.Transport,), {"Consumer": consumer_cls})
