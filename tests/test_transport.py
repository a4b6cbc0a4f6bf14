"""The batching consumer survives a partition revoked while flow is paused.

Seen in CI: a rebalance revoked a partition between Faust pausing flow and the consumer's
seek to committed offsets; aiokafka raised IllegalStateError from getmany, the Fetcher
service crashed and the worker never consumed again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from stocktake.processors.judge import Record
from stocktake.streams.transport import BatchingConsumer, FetchBatch, Routing


class _Paused:
    """What getmany touches on a consumer whose flow is paused mid-rebalance."""

    _rewind_uncommitted = BatchingConsumer._rewind_uncommitted
    _seek_back = BatchingConsumer._seek_back

    def __init__(self, seek_error: Exception | None, records: dict[Any, list[Any]] | None = None,
                 committed: dict[Any, int] | None = None):
        self.app = SimpleNamespace(consumer_generation_id=3)
        self.should_stop = False
        self.flow_active = False
        self.seeks = 0
        self._seek_error = seek_error
        self._records = records or {}
        self._committed_offset = committed or {}
        self.rewound: list[tuple[str, int, int]] = []

    async def _wait_next_records(self, timeout: float) -> tuple[dict[Any, Any], set[Any] | None]:
        return self._records, None

    async def seek(self, tp: Any, offset: int) -> None:
        self.rewound.append((tp.topic, tp.partition, offset))

    async def perform_seek(self) -> None:
        self.seeks += 1
        if self._seek_error is not None:
            raise self._seek_error


def _drain(consumer: _Paused) -> list[Any]:
    async def run() -> list[Any]:
        return [m async for m in BatchingConsumer.getmany(consumer, 0.1)]  # type: ignore[arg-type]
    return asyncio.run(run())


def test_a_seek_raced_by_a_revocation_yields_nothing_and_does_not_raise() -> None:
    consumer = _Paused(IllegalStateError("No current assignment for partition t-2"))
    assert _drain(consumer) == []
    assert _drain(consumer) == [] and consumer.seeks == 2   # and the next pass seeks again


def test_other_seek_errors_still_raise() -> None:
    consumer = _Paused(RuntimeError("boom"))
    try:
        _drain(consumer)
    except RuntimeError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("a seek error that is not a revocation must not be swallowed")


def test_records_dropped_while_paused_are_fetched_again_where_nothing_was_committed() -> None:
    """perform_seek (aiokafka's seek_to_committed) skips partitions whose committed offset is
    none or 0: the consumer would go on after the dropped records. Those are sought back."""
    records = {TP("t", 0): [SimpleNamespace(offset=0), SimpleNamespace(offset=1)],
               TP("t", 1): [SimpleNamespace(offset=7)], TP("t", 2): []}
    consumer = _Paused(None, records, committed={TP("t", 1): 5})
    assert _drain(consumer) == []
    assert consumer.rewound == [("t", 0, 0)]   # t-1 was sought to its commit; t-2 fetched nothing


class _PausedMidFetch(_Paused):
    """Flow active, but the sink paused ``paused`` while the fetch was in flight."""

    _fetch_batch = staticmethod(BatchingConsumer._fetch_batch)

    def __init__(self, records: dict[Any, list[Any]], paused: set[Any] = frozenset()):  # type: ignore[assignment]
        super().__init__(None, records)
        self.flow_active = True
        self._active = set(records) - paused
        self._buffered_partitions: set[Any] = set()
        self.app.monitor = SimpleNamespace(track_tp_end_offset=lambda tp, offset: None)
        self.delivered: list[FetchBatch] = []

        async def deliver(batch: FetchBatch) -> None:
            self.delivered.append(batch)

        self.routing = Routing(lambda topic: topic if topic != "faust-own" else None, lambda _topics: "", deliver)

    def _to_message(self, tp: Any, record: Any) -> Any:
        return record.offset

    async def _wait_next_records(self, timeout: float) -> tuple[dict[Any, Any], set[Any]]:
        return self._records, self._active

    def highwater(self, tp: Any) -> int:
        return 0


def _record(offset: int, timestamp: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, key=None, value=b"{}", topic="t", partition=0,
                           timestamp=timestamp, timestamp_type=0)


def test_records_of_a_partition_paused_during_the_fetch_are_read_again() -> None:
    """aiokafka moved past them when it returned them; skipped without a seek they were lost
    (CI: a ClickHouse outage paused every partition mid-fetch, 680 events never stored)."""
    records = {TP("t", 0): [_record(4), _record(5)], TP("t", 1): [_record(9)]}
    consumer = _PausedMidFetch(records, paused={TP("t", 0)})
    assert _drain(consumer) == []
    assert [(b.topic, b.partition) for b in consumer.delivered] == [("t", 1)]
    assert consumer.rewound == [("t", 0, 4)]


def test_each_partition_batch_of_a_stream_topic_goes_to_the_handler_with_its_timestamps() -> None:
    """Stream topics (any name Routing.stream_of accepts, discovered or not) never reach Faust's
    conductor: one FetchBatch per partition, awaited in the fetch loop; Faust's own topics keep
    its per-message path."""
    records = {TP("clicks", 0): [_record(4, 1_700_000_000_123), _record(5, -1)],
               TP("faust-own", 0): [_record(1), _record(2)],
               TP("stocktake.impressions", 2): [_record(9)]}
    consumer = _PausedMidFetch(records)
    assert _drain(consumer) == [(TP("faust-own", 0), 1), (TP("faust-own", 0), 2)]   # through Faust
    assert consumer.delivered == [
        FetchBatch("clicks", 0, [Record(4, None, b"{}", 1_700_000_000_123), Record(5, None, b"{}", None)], 3),
        FetchBatch("stocktake.impressions", 2, [Record(9, None, b"{}", None)], 3),
    ]


def test_a_rebalance_during_delivery_stops_delivering_what_was_fetched_before() -> None:
    records = {TP("a", 0): [_record(1)], TP("b", 0): [_record(2)]}
    consumer = _PausedMidFetch(records)

    async def deliver(batch: FetchBatch) -> None:
        consumer.delivered.append(batch)
        consumer.app.consumer_generation_id += 1   # a rebalance finished meanwhile

    consumer.routing.deliver = deliver
    _drain(consumer)
    assert [b.topic for b in consumer.delivered] == ["a"]


def test_subscribe_is_by_one_pattern_with_fausts_topics_in_it() -> None:
    """aiokafka takes topics or a pattern, never both: the pattern must cover Faust's topics."""
    calls: list[tuple[Any, dict[str, Any]]] = []
    aiokafka_consumer = SimpleNamespace(subscribe="aiokafka.subscribe")

    async def call_thread(fn: Any, **kwargs: Any) -> None:
        calls.append((fn, kwargs))

    thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: aiokafka_consumer,
                             _rebalance_listener="listener")
    fake = SimpleNamespace(_thread=thread, routing=Routing(lambda t: None, lambda topics: f"^({'|'.join(topics)})$"))
    asyncio.run(BatchingConsumer.subscribe(fake, ["x-own"]))  # type: ignore[arg-type]
    assert calls == [("aiokafka.subscribe", {"pattern": "^(x-own)$", "listener": "listener"})]


def test_the_handover_lets_the_fetch_loop_go_on_keeps_order_and_is_bounded() -> None:
    """Batches go to the sink through a bounded queue, judged by a task of its own: the fetch
    loop is not held while the sink works (it was: fetching and judging took turns), the
    order is kept, and a full queue holds the fetch loop (backpressure)."""
    from stocktake.streams.transport import Handover

    async def scenario() -> None:
        release = asyncio.Event()
        handled: list[int] = []

        async def slow_sink(batch: FetchBatch) -> None:
            await release.wait()
            handled.append(batch.partition)

        handover = Handover(slow_sink, maxsize=2)
        batch = [FetchBatch("t", p, [], 0) for p in range(4)]
        for b in batch[:3]:   # one taken by the sink, two waiting: none holds the fetch loop
            await asyncio.wait_for(handover.deliver(b), 1.0)
        blocked = asyncio.ensure_future(handover.deliver(batch[3]))
        await asyncio.sleep(0.05)
        assert not blocked.done()          # the queue is full: the fetch loop waits
        release.set()
        await asyncio.wait_for(blocked, 1.0)
        for _ in range(100):
            if len(handled) == 4:
                break
            await asyncio.sleep(0.01)
        assert handled == [0, 1, 2, 3]
        release.clear()
        await handover.deliver(FetchBatch("t", 9, [], 0))
        await handover.deliver(FetchBatch("t", 10, [], 0))
        await handover.stop()              # what waits is dropped (never committed: read again)
        await handover.deliver(FetchBatch("t", 11, [], 0))   # and what comes while the worker stops
        release.set()
        await asyncio.sleep(0.05)
        assert handled == [0, 1, 2, 3]

    asyncio.run(scenario())
