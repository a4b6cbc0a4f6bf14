"""The worker's ingest path (the transport hands each fetched batch to Routing.deliver, which
feeds the sink): no broker is contacted.

The app is built by streams.app.create_app against the session chDB store;
every test uses its own uuid topic prefix (make_settings), so it sees only its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from stocktake.clickhouse.store import Store
from stocktake.processors.judge import Record
from stocktake.settings import Settings
from stocktake.streams.app import StocktakeApp, create_app
from stocktake.streams.sink import Sink
from stocktake.streams.transport import FetchBatch

T0 = 1569888000000  # 2019-10-01T00:00:00Z


def ev(event_id: str, ts: int) -> bytes:
    return orjson.dumps({"event_id": event_id, "event_type": "view", "user_id": 1,
                         "product_id": 2, "ts": ts, "source": "web"})


# Offsets 0..3: three distinct events and a repeat of the first.
RECORDS = [
    Record(0, b"u1", ev("a", T0)),
    Record(1, b"u1", ev("b", T0 + 1000)),
    Record(2, b"u1", ev("a", T0 + 2000)),
    Record(3, b"u2", ev("c", T0 + 3000)),
]


def stored(store: Store, topic: str) -> list[tuple[int, int, str, str]]:
    rows = store.rows(
        "SELECT partition, offset, toString(status), event_id FROM ingest_log "
        "WHERE topic = {t:String} ORDER BY partition, offset, idx", {"t": topic})
    return [(int(p), int(o), s, e) for p, o, s, e in rows]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the sink to have handled what was delivered."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the sink did not handle the batch in time"
        await asyncio.sleep(0.01)


async def build(settings: Settings, store: Store) -> tuple[StocktakeApp, Sink, Any, str]:
    app, sink = create_app(settings, store, "127.0.0.1:1")  # unreachable: nothing may connect
    topic = settings.topic("behaviour")
    await sink.on_assigned([(topic, 0)])
    return app, sink, _Deliver(app), topic


class _Deliver:
    """What the transport does with a fetched batch of a stream topic: app.routing.deliver."""

    def __init__(self, app: StocktakeApp):
        self.app = app

    @contextlib.asynccontextmanager
    async def test_context(self) -> AsyncIterator[_Deliver]:
        yield self

    async def put(self, batch: FetchBatch) -> None:
        assert self.app.routing.deliver is not None
        await self.app.routing.deliver(batch)


def test_the_app_has_no_agents_and_routes_every_stream_topic_to_the_sink(
        make_settings: Callable[..., Settings], store: Store) -> None:
    """Discovered topics have no Faust channel: batches go from the consumer to the sink."""
    settings = make_settings(commit_offsets=False, topics=r"ext\..+")

    async def run() -> None:
        app, _sink = create_app(settings, store, "127.0.0.1:1")
        assert not app.agents
        routing = app.routing
        assert routing.deliver is not None
        topics = (settings.topic("impressions"), "ext.clicks", settings.deadletter_topic)
        assert [routing.stream_of(t) for t in topics] == ["impressions", "ext.clicks", None]
        assert routing.pattern([]) == settings.subscription_pattern()
        assert app.conf.consumer_metadata_max_age_ms == int(settings.discovery_interval_s * 1000)

    asyncio.run(run())


def test_an_error_in_the_sink_stops_it_for_good_instead_of_vanishing(
        make_settings: Callable[..., Settings], store: Store, monkeypatch: Any) -> None:
    settings = make_settings(commit_offsets=False)

    async def run() -> Sink:
        app, sink, deliver, topic = await build(settings, store)

        async def broken(_batch: FetchBatch) -> None:
            raise RuntimeError("a bug in the sink")

        monkeypatch.setattr(sink, "add", broken)
        await deliver.put(FetchBatch(topic, 0, RECORDS, generation_id=app.consumer_generation_id))
        return sink

    sink = asyncio.run(run())
    assert isinstance(sink.failure, RuntimeError) and sink.closed


def test_agent_stores_batch_then_skips_redelivery(
        make_settings: Callable[..., Settings], store: Store) -> None:
    settings = make_settings(commit_offsets=False)

    async def run() -> None:
        app, sink, agent, topic = await build(settings, store)
        assert sink.assigned == {(topic, 0)}
        assert (topic, 0) not in sink.watermarks  # nothing stored for this topic yet
        gen = app.consumer_generation_id

        async with agent.test_context() as agent_ctx:
            await agent_ctx.put(FetchBatch(topic, 0, RECORDS, generation_id=gen))
            await until(lambda: sink.stats.skipped_stored + sum(
                b.rows for b in sink.buffers.values()) >= 4)
            await sink.flush_all()

            assert stored(store, topic) == [
                (0, 0, "valid", "a"),
                (0, 1, "valid", "b"),
                (0, 2, "duplicate", "a"),
                (0, 3, "valid", "c"),
            ]
            assert (sink.stats.valid, sink.stats.duplicate, sink.stats.invalid) == (3, 1, 0)
            assert sink.stats.per_stream == {"behaviour": {"valid": 3, "duplicate": 1, "invalid": 0}}
            assert (sink.stats.inserts, sink.stats.rows_inserted) == (1, 4)
            assert sink.watermarks[(topic, 0)] == 3
            assert store.watermarks(topic) == {0: 3}

            # Redelivery of offsets 2..3 (e.g. after a crash before the commit): all skipped.
            await agent_ctx.put(FetchBatch(topic, 0, RECORDS[2:], generation_id=gen))
            await until(lambda: sink.stats.skipped_stored >= 2)
            await sink.flush_all()
            assert sink.stats.skipped_stored == 2
            assert sink.stats.inserts == 1  # nothing new to insert
            assert len(stored(store, topic)) == 4
            # A batch overlapping the watermark keeps only the new offset.
            await agent_ctx.put(FetchBatch(
                topic, 0, [*RECORDS[3:], Record(4, None, ev("d", T0 + 4000))], generation_id=gen))
            await until(lambda: sink.stats.skipped_stored >= 3 and bool(sink.buffers[(topic, 0)].rows))
            await sink.flush_all()

        assert sink.stats.skipped_stored == 3
        assert sink.stats.rows_inserted == 5
        assert [row[1:] for row in stored(store, topic)] == [
            (0, "valid", "a"), (1, "valid", "b"), (2, "duplicate", "a"), (3, "valid", "c"),
            (4, "valid", "d"),
        ]
        assert sink.stats.dropped_stale == 0

    asyncio.run(run())


def test_agent_rebuilds_from_store_after_reassignment(
        make_settings: Callable[..., Settings], store: Store) -> None:
    """A new worker (new app, same topic) resumes from ClickHouse alone: the watermark
    skips what is stored and the rebuilt dedupe window still knows the stored ids."""
    settings = make_settings(commit_offsets=False)

    async def first() -> str:
        app, sink, agent, topic = await build(settings, store)
        async with agent.test_context() as agent_ctx:
            await agent_ctx.put(FetchBatch(topic, 0, RECORDS[:2], generation_id=app.consumer_generation_id))
            await until(lambda: bool(sink.buffers) and sink.buffers[(topic, 0)].rows == 2)
            await sink.flush_all()
        return topic

    topic = asyncio.run(first())

    async def second() -> Sink:
        app, sink, agent, _ = await build(settings, store)
        assert sink.watermarks[(topic, 0)] == 1
        assert "a" in sink.dedupe["behaviour"] and "b" in sink.dedupe["behaviour"]
        async with agent.test_context() as agent_ctx:
            await agent_ctx.put(FetchBatch(topic, 0, RECORDS, generation_id=app.consumer_generation_id))
            await until(lambda: sink.stats.skipped_stored == 2 and bool(sink.buffers))
            await sink.flush_all()
        return sink

    sink = asyncio.run(second())
    assert (sink.stats.valid, sink.stats.duplicate, sink.stats.skipped_stored) == (1, 1, 2)
    assert stored(store, topic) == [
        (0, 0, "valid", "a"), (0, 1, "valid", "b"), (0, 2, "duplicate", "a"), (0, 3, "valid", "c")]


def test_agent_drops_stale_generation_and_unassigned_partition(
        make_settings: Callable[..., Settings], store: Store) -> None:
    settings = make_settings(commit_offsets=False)

    async def run() -> Sink:
        app, sink, agent, topic = await build(settings, store)
        gen = app.consumer_generation_id
        async with agent.test_context() as agent_ctx:
            # Fetched before a rebalance: an older (or other) generation.
            await agent_ctx.put(FetchBatch(topic, 0, RECORDS, generation_id=gen + 1))
            await until(lambda: sink.stats.dropped_stale == 4)
            # A partition this worker was never assigned.
            await agent_ctx.put(FetchBatch(topic, 1, RECORDS[:3], generation_id=gen))
            await until(lambda: sink.stats.dropped_stale == 7)
            # Revoked partitions are not ours any more either.
            await sink.on_revoked([(topic, 0)])
            await agent_ctx.put(FetchBatch(topic, 0, RECORDS[:1], generation_id=gen))
            await until(lambda: sink.stats.dropped_stale == 8)
            await sink.flush_all()
        assert stored(store, topic) == []
        return sink

    sink = asyncio.run(run())
    assert sink.buffers == {}
    assert (sink.stats.valid, sink.stats.duplicate, sink.stats.rows_inserted) == (0, 0, 0)
    assert sink.stats.skipped_stored == 0
