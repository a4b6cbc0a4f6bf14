"""When the sink flushes: at the flush interval, at batch_rows in a partition, and early when
the store is idle and flush_idle_rows events wait (latency under load without paying an
insert's fixed cost for every trickle)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson

from stocktake.clickhouse.store import Store
from stocktake.processors.judge import Record
from stocktake.settings import Settings
from stocktake.streams.sink import Sink
from stocktake.streams.transport import FetchBatch


class GatedStore:
    """The real store; an insert into ingest_log waits until ``gate`` is open, and its rows are
    recorded once stored."""

    def __init__(self, store: Store):
        self._store = store
        self.gate = threading.Event()
        self.gate.set()
        self.inserted: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def insert_arrow(self, table: str, data: Any, dedup_token: str | None = None) -> None:
        assert self.gate.wait(30), "the test never opened the gate"
        self._store.insert_arrow(table, data, dedup_token)
        self.inserted.append(data.num_rows)


def _batch(topic: str, partition: int, first: int, n: int) -> FetchBatch:
    records = [Record(o, None, orjson.dumps({"event_id": f"{topic}-{partition}-{o}", "event_type": "view",
                                             "user_id": 1, "product_id": 2, "ts": 1569888000000}))
               for o in range(first, first + n)]
    return FetchBatch(topic, partition, records, 0)


async def _nothing(*_args: Any) -> bool:
    return True


def _gated_sink(make_settings: Callable[..., Settings], store: Store, idle_rows: int) -> tuple[Sink, GatedStore, str]:
    """A sink on the gated store whose buffers go only at batch_rows (1,000), or at idle_rows
    for an idle store: the flush interval (60 s) never passes in a test."""
    settings = make_settings(flush_interval_s=60.0, batch_rows=1000, flush_idle_rows=idle_rows, commit_offsets=False)
    gated = GatedStore(store)
    return Sink(settings, gated, _nothing, _nothing), gated, settings.topic("behaviour")  # type: ignore[arg-type]


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(3000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_an_idle_store_takes_the_buffers_once_enough_events_wait(
        make_settings: Callable[..., Settings], store: Store) -> None:
    sink, gated, topic = _gated_sink(make_settings, store, idle_rows=10)

    async def run() -> None:
        await sink.on_assigned([(topic, 0), (topic, 1)])
        await sink.add(_batch(topic, 0, 0, 6))
        await sink.flush_due()
        assert gated.inserted == [] and sink.buffers[(topic, 0)].rows == 6     # 6 < 10: it waits

        await sink.add(_batch(topic, 1, 0, 6))                                  # 12 in all
        await _until(lambda: gated.inserted == [12])                            # both partitions, one insert

        gated.gate.clear()                                                      # the next insert is slow
        await sink.add(_batch(topic, 0, 6, 12))
        await _until(lambda: sink._in_flight is not None)
        await sink.add(_batch(topic, 1, 6, 12))
        await sink.flush_due()
        assert sink.buffers[(topic, 1)].rows == 12, "flushed while an insert was in flight"

        gated.gate.set()
        await _until(lambda: gated.inserted == [12, 12])
        await sink.flush_due()                                                  # idle again: goes now
        await _until(lambda: gated.inserted == [12, 12, 12])
        await sink.close()

    asyncio.run(run())
    assert store.rows("SELECT count(), uniqExact(partition, offset) FROM ingest_log WHERE topic = {t:String}",
                      {"t": topic}) == [(36, 36)]


def test_without_flush_idle_rows_events_wait_for_the_interval(
        make_settings: Callable[..., Settings], store: Store) -> None:
    sink, gated, topic = _gated_sink(make_settings, store, idle_rows=0)

    async def run() -> None:
        await sink.on_assigned([(topic, 0)])
        await sink.add(_batch(topic, 0, 0, 500))
        await sink.flush_due()
        await asyncio.sleep(0.2)
        assert gated.inserted == []
        await sink.add(_batch(topic, 0, 500, 500))                              # batch_rows: this partition goes
        await _until(lambda: gated.inserted == [1000])
        await sink.close()

    asyncio.run(run())
