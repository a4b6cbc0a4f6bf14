"""The sink judges while an insert is in flight, and what it judged meanwhile leaves in one
insert as soon as that one is stored (no timer needed); past a bound it waits (#16).

Real chDB store (the session's); the insert is held at a gate to make "in flight" last."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson

from stocktake.clickhouse.store import Store
from stocktake.processors.judge import Record
from stocktake.settings import Settings
from stocktake.streams.sink import BACKLOG_BATCHES, Sink
from stocktake.streams.transport import FetchBatch

BATCH_ROWS = 2


def _records(first: int, n: int) -> list[Record]:
    return [Record(o, None, orjson.dumps({"event_id": f"e{o}", "event_type": "view", "user_id": 1, "product_id": 2,
                                          "ts": 1569888000000 + o, "source": "web"})) for o in range(first, first + n)]


class GatedStore:
    """The real store, whose event inserts wait at a gate; records each insert's partitions."""

    def __init__(self, store: Store):
        self.store = store
        self.gate = threading.Event()
        self.inserts: list[list[tuple[int, int]]] = []    # per insert: (partition, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def insert_arrow(self, table: str, data: Any, dedup_token: str | None = None) -> None:
        assert self.gate.wait(30), "the test never opened the gate"
        parts = data.column("partition").to_pylist()
        self.inserts.append(sorted((p, parts.count(p)) for p in set(parts)))
        self.store.insert_arrow(table, data, dedup_token)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.01)


def test_judging_goes_on_while_an_insert_is_in_flight(
        make_settings: Callable[..., Settings], store: Store) -> None:
    # A flush interval no test waits for: every flush here is by size or by an insert's end.
    settings = make_settings(batch_rows=BATCH_ROWS, flush_interval_s=600.0, commit_offsets=False)
    topic = settings.topic("behaviour")
    gated = GatedStore(store)

    async def nothing(*_args: Any) -> bool:
        return True

    async def run() -> tuple[Sink, int]:
        sink = Sink(settings, gated, nothing, nothing)  # type: ignore[arg-type]
        await sink.on_assigned([(topic, 0), (topic, 1)])
        await sink.add(FetchBatch(topic, 0, _records(0, BATCH_ROWS), 0))   # full: its insert starts
        assert sink.inserting
        # In flight: more batches are judged and buffered, not waited on, even full ones.
        async with asyncio.timeout(5):
            await sink.add(FetchBatch(topic, 0, _records(BATCH_ROWS, BATCH_ROWS), 0))
            await sink.add(FetchBatch(topic, 1, _records(0, 1), 0))
        assert sink.buffered_rows == BATCH_ROWS + 1
        gated.gate.set()
        # The first insert's end sends both partitions' buffers on, in one insert.
        await _until(lambda: sink.stats.inserts == 2)
        assert gated.inserts == [[(0, BATCH_ROWS)], [(0, BATCH_ROWS), (1, 1)]]
        assert sink.buffered_rows == 0

        # Past BACKLOG_BATCHES batches buffered behind an insert, judging waits for it.
        gated.gate.clear()
        await sink.add(FetchBatch(topic, 1, _records(1, BATCH_ROWS), 0))   # starts insert 3
        offset = 1 + BATCH_ROWS
        while sink.buffered_rows < (BACKLOG_BATCHES - 1) * BATCH_ROWS:
            async with asyncio.timeout(5):
                await sink.add(FetchBatch(topic, 1, _records(offset, BATCH_ROWS), 0))
            offset += BATCH_ROWS
        held = asyncio.ensure_future(sink.add(FetchBatch(topic, 1, _records(offset, BATCH_ROWS), 0)))
        await asyncio.sleep(0.5)
        assert not held.done(), "a full backlog must wait for the insert in flight"
        gated.gate.set()
        await asyncio.wait_for(held, 20)
        await sink.flush_all()
        await sink.close()
        return sink, offset + BATCH_ROWS

    sink, partition_1_rows = asyncio.run(run())
    assert sink.failure is None
    expected = 2 * BATCH_ROWS + partition_1_rows
    assert store.rows("SELECT count(), uniqExact(partition, offset) FROM ingest_log WHERE topic = {t:String}",
                      {"t": topic}) == [(expected, expected)]
    assert store.rows("SELECT sum(n) FROM partition_rollup WHERE topic = {t:String}", {"t": topic}) == [(expected,)]
