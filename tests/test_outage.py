"""ClickHouse away while events keep arriving: the worker pauses its partitions, keeps its
group membership, resumes when the store is back, and loses and doubles nothing. And a
failure retrying cannot fix stops the sink for good (the worker exits; nothing is stored
past what the failure lost)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stocktake import sources
from stocktake.clickhouse.store import Store, StoreError
from stocktake.processors.judge import Record
from stocktake.settings import Settings
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.streams.sink import Sink, SinkFailed
from stocktake.streams.transport import FetchBatch
from stocktake.tools import replay
from tests.pipeline_helpers import coordinates_unique, expected_counts, retopic, stored_counts, wait_rows

# The issue asks for 60 s; STOCKTAKE_TEST_OUTAGE_S=60 runs that. The default keeps the suite short:
# the backoff reaches its longer waits (0.5, 1, 2, 4, 8 s) within it all the same.
OUTAGE_S = float(os.environ.get("STOCKTAKE_TEST_OUTAGE_S", "15"))


class FailingStore:
    """The real store behind a switch: while ``down``, every call raises StoreError, as a
    ClickHouse server that went away would (the same Store interface)."""

    def __init__(self, store: Store):
        self._store = store
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.refused += 1
                raise StoreError("Connection refused (the test's store is down)")
            return attr(*args, **kwargs)
        return call


@pytest.mark.integration
def test_store_away_pauses_keeps_the_group_and_loses_nothing(
        broker: Any, store: Store, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(batch_rows=200, flush_interval_s=0.1)
    events = sources.load_events("rees46")[:4000]
    messages = retopic(list(replay.to_messages(events, faults={"duplicates": 0.03, "malformed": 0.01}, seed=5)),
                       settings.topic_prefix)
    want = expected_counts(messages)
    total = sum(want.values())
    half = len(messages) // 2
    failing = FailingStore(store)

    async def scenario() -> None:
        runtime = Runtime(settings, store=failing, bootstrap=broker.bootstrap).open()  # type: ignore[arg-type]
        app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            generation = app.consumer_generation_id
            await asyncio.to_thread(replay.produce, broker.bootstrap, messages[:half])
            first = sum(max(m.events, 1) for m in messages[:half])
            assert await wait_rows(store, settings.topic_prefix, first) == first

            failing.down = True
            await asyncio.to_thread(replay.produce, broker.bootstrap, messages[half:])
            deadline = time.monotonic() + OUTAGE_S
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                assert sink.failure is None
            assert failing.refused > 0 and sink.store_down_since is not None
            assert sink.paused == sink.assigned and len(sink.assigned) == 3 * settings.partitions
            paused = {(tp.topic, tp.partition) for tp in app.consumer._paused_partitions}  # type: ignore[attr-defined]
            assert sink.paused <= paused
            assert sum(stored_counts(store, settings.topic_prefix).values()) == first  # nothing got in

            failing.down = False
            got = await wait_rows(store, settings.topic_prefix, total)
            assert got == total, (got, sink.failure, sink.paused, sink.store_down_since, sink.stats.as_dict(),
                                  {tp: b.rows for tp, b in sink.buffers.items()})
            assert sink.store_down_since is None and not sink.paused
            assert app.consumer_generation_id == generation, "a rebalance happened during the outage"
            await asyncio.sleep(1.0)  # anything stored twice would show up by now
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    assert stored_counts(store, settings.topic_prefix) == want
    rows, distinct = coordinates_unique(store, settings.topic_prefix)
    assert rows == distinct == total


def _event(event_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "event_type": "view", "user_id": 1, "product_id": 2,
                         "ts": 1569888000000, "source": "web"})


def test_a_failure_retrying_cannot_fix_stops_the_sink_for_good(
        make_settings: Callable[..., Settings], store: Store) -> None:
    """Dead letters the broker refuses: the sink stops (the worker then exits non-zero) and
    stores nothing after the batch it lost, not even on close: a later insert would raise
    the stored watermark past the lost events and they would be skipped for ever."""
    settings = make_settings(commit_offsets=False)
    topic = settings.topic("behaviour")

    async def refuse(_dead: list[Any]) -> None:
        raise RuntimeError("MESSAGE_TOO_LARGE")

    async def commit(_offsets: dict[Any, int]) -> bool:
        return True

    async def run() -> Sink:
        sink = Sink(settings, store, refuse, commit)
        await sink.on_assigned([(topic, 0)])
        await sink.add(FetchBatch(topic, 0, [Record(0, None, b"{not json"), Record(1, None, _event("a"))], 0))
        with pytest.raises(SinkFailed):
            await sink.flush_all()
        assert sink.failure is not None and sink.closed
        await sink.add(FetchBatch(topic, 0, [Record(2, None, _event("b"))], 0))
        with pytest.raises(SinkFailed):
            await sink._flush(list(sink.buffers), wait=True)
        await sink.close()
        return sink

    sink = asyncio.run(run())
    assert "MESSAGE_TOO_LARGE" in str(sink.failure)
    assert store.rows("SELECT count() FROM ingest_log WHERE topic = {t:String}", {"t": topic}) == [(0,)]
    assert store.watermarks(topic) == {}


def test_a_retried_insert_is_stored_once_in_the_log_and_every_rollup(
        make_settings: Callable[..., Settings], store: Store) -> None:
    """A server that stored a batch but whose answer was lost: the retry carries the same
    token (the batch's coordinates) and is dropped, in ingest_log and in the rollups."""
    settings = make_settings(commit_offsets=False)
    topic = settings.topic("behaviour")

    class LostAnswer:
        """Stores the first insert, then says it failed (the answer lost on the way back)."""

        def __init__(self) -> None:
            self.inserts = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def insert_arrow(self, table: str, data: Any, dedup_token: str | None = None) -> None:
            self.inserts += 1
            store.insert_arrow(table, data, dedup_token)
            if self.inserts == 1:
                raise StoreError("Connection reset by peer (after the server stored the batch)")

    async def nothing(*_args: Any) -> bool:
        return True

    lossy = LostAnswer()

    async def run() -> None:
        sink = Sink(settings, lossy, nothing, nothing)  # type: ignore[arg-type]
        await sink.on_assigned([(topic, 0)])
        await sink.add(FetchBatch(topic, 0, [Record(i, None, _event(f"e{i}")) for i in range(5)], 0))
        await sink.flush_all()
        assert sink.failure is None

    asyncio.run(run())
    assert lossy.inserts == 2
    where = {"t": topic}
    assert store.rows("SELECT count() FROM ingest_log WHERE topic = {t:String}", where) == [(5,)]
    assert store.rows("SELECT sum(n) FROM partition_rollup WHERE topic = {t:String}", where) == [(5,)]
    for rollup in ("asset_rollup", "asset_minute_rollup"):  # each event counts once per asset it is in
        per_asset = store.rows(f"SELECT asset, sum(n) FROM {rollup} WHERE topic = {{t:String}} GROUP BY asset", where)
        assert per_asset and all(n == 5 for _asset, n in per_asset), (rollup, per_asset)
