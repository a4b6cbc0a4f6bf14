"""A Faust transport that hands agents whole fetch batches.

Faust's cost is per Kafka message (~200 µs of task scheduling here, see
DESIGN.md), far above the ~5 µs the bare client needs. For topics listed in
``batch_topics`` this consumer turns each fetched partition batch into ONE
Faust message whose value is a ``FetchBatch``; the ``raw`` codec passes it
through untouched. Those topics are declared with ``acks=False``: the sink
commits their offsets itself, after the ClickHouse insert succeeded.
Other topics keep Faust's per-message path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from stocktake.processors.judge import Record

log = logging.getLogger("stocktake.transport")


class FetchBatch(NamedTuple):
    topic: str
    partition: int
    records: list[Record]
    generation_id: int


class BatchingConsumer(faust_aiokafka.Consumer):
    batch_topics: frozenset[str] = frozenset()

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
        batch_topics = self.batch_topics
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
            if tp.topic in batch_topics:
                yield tp, self._batch_message(tp, tp_records, generation_id)
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

    def _batch_message(self, tp: TP, tp_records: list[Any], generation_id: int) -> Message:
        last = tp_records[-1]
        batch = FetchBatch(
            tp.topic, tp.partition,
            [Record(r.offset, r.key, r.value) for r in tp_records],
            generation_id,
        )
        # Offset of the last record keeps Faust's read-offset bookkeeping monotonic.
        timestamp = last.timestamp / 1000.0 if last.timestamp is not None else 0.0
        return faust_aiokafka.ConsumerMessage(
            last.topic, last.partition, last.offset, timestamp,
            last.timestamp_type, [], None, batch,  # type: ignore[arg-type]  # raw codec passes it on
            None, 0, 0, tp,
            generation_id=generation_id,
        )


def batching_transport(batch_topics: frozenset[str]) -> type[faust_aiokafka.Transport]:
    """A Transport class whose consumer batches ``batch_topics``."""
    consumer_cls = type("BatchingConsumer", (BatchingConsumer,), {"batch_topics": batch_topics})
    return type("BatchingTransport", (faust_aiokafka.Transport,), {"Consumer": consumer_cls})
