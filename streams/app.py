"""The Faust app: topics, thin agents, rebalance hooks and the worker's HTTP API.

No module-level app: ``create_app`` builds one per worker, so a test can run
two workers (two apps, one consumer group) in one process sharing one store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import orjson
from faust.types import TP

from stocktake.broker import KAFKA_LOG
from stocktake.clickhouse.store import Store, StoreError
from stocktake.processors.contract import STREAMS
from stocktake.processors.judge import DeadLetter
from stocktake.services.alerting import AlertRunner
from stocktake.services.gapconfig import load_monitor
from stocktake.settings import Settings
from stocktake.streams import api
from stocktake.streams.sink import Key, Sink
from stocktake.streams.transport import FetchBatch, batching_transport

log = logging.getLogger("stocktake.worker")


class StocktakeApp(faust.App):
    """faust.App whose consumer transport delivers fetch batches for our topics."""

    batch_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> Any:
        cls = batching_transport(self.batch_topics)
        return cls(self.conf.broker_consumer, self)


def create_app(
    settings: Settings,
    store: Store,
    bootstrap: str,
    *,
    web_port: int | None = None,
) -> tuple[StocktakeApp, Sink]:
    topics = {settings.topic(s): s for s in STREAMS}
    web = web_port is not None
    app = StocktakeApp(
        settings.group_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        # Faust makes a per-app folder even with memory tables: keep it in our data dir.
        datadir=str(settings.data_dir / "faust"),
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        web_enabled=web,
        web_bind=settings.http_host,
        web_port=web_port or 6066,
        web_host=settings.http_host,
        # Tansu holds JoinGroup for session.timeout/2: keep it short (DESIGN.md).
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_max_poll_records=5000,
        broker_commit_every=10**9,     # offsets of our topics are committed by the sink
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        stream_wait_empty=False,
        table_standby_replicas=0,
    )
    app.batch_topics = frozenset(topics)
    deadletter = settings.deadletter_topic

    async def publish(dead_letters: list[DeadLetter]) -> None:
        producer = app.producer
        futures = [
            await producer.send(deadletter, dl.key, dl.value, None, None, dl.headers)
            for dl in dead_letters
        ]
        await producer.flush()
        for future in futures:
            await future  # raises if the broker refused one: nothing is committed then

    async def commit(offsets: dict[Key, int]) -> bool:
        # Faust's own commit path (producer flush, assignment check, bookkeeping);
        # our topics have acks off, so nothing else commits them.
        consumer: Any = app.consumer
        return bool(await consumer._commit_offsets(
            {consumer._new_topicpartition(t, p): o for (t, p), o in offsets.items()}
        ))

    sink = Sink(settings, store, topics, publish, commit,
                generation=lambda: app.consumer_generation_id, name=f"worker-{id(app) % 10000}")

    for topic_name, stream in topics.items():
        channel = app.topic(topic_name, value_serializer="raw", key_serializer="raw", acks=False)

        async def ingest(batches: Any) -> None:
            async for batch in batches:
                if isinstance(batch, FetchBatch):
                    await sink.add(batch)

        app.agent(channel, name=f"stocktake.ingest.{stream}")(ingest)

    async def _assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await sink.on_assigned((tp.topic, tp.partition) for tp in assigned)

    async def _revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        await sink.on_revoked((tp.topic, tp.partition) for tp in revoked)

    app.on_partitions_assigned.connect(_assigned)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(_revoked)  # type: ignore[arg-type]

    @app.timer(interval=min(settings.flush_interval_s, 1.0))
    async def _flush_due() -> None:
        await sink.flush_due()

    monitor = load_monitor(settings.gaps_config)  # a bad gaps config fails at start, in one line
    alerting = Alerting(settings, store, sink, monitor, app)

    @app.timer(interval=settings.gap_interval_s)
    async def _alerting() -> None:
        await alerting.step()

    scoring = _start_scoring(settings, store, sink, app, bootstrap)
    app.stocktake_scoring = scoring  # type: ignore[attr-defined]  # for bench/API introspection
    if scoring is not None:
        @app.timer(interval=settings.score_interval_s)
        async def _scoring() -> None:
            try:
                await scoring.step()
            except Exception as exc:  # scoring is derived data: never take the worker down
                log.exception("scoring step failed: %s", exc)

    if web:
        api.register(app, store, sink, settings, alerting, scoring)
    return app, sink


def _start_scoring(settings: Settings, store: Store, sink: Sink, app: faust.App, bootstrap: str) -> Any:
    if not settings.scoring:
        return None
    try:
        from stocktake.services.scoring import ScoringService
    except ImportError as exc:
        log.warning("scoring disabled: %s (install the project's ml extra)", exc)
        return None

    # Scores go out through librdkafka (C, its own threads), not Faust's producer on the
    # event loop: thousands of per-id messages must not cost the ingest loop.
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "logger": KAFKA_LOG})

    def produce(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        for key, value in messages:
            while True:
                try:
                    producer.produce(topic, value, key=key)
                    break
                except BufferError:  # local queue full: let it drain
                    producer.poll(0.05)
        producer.flush(10)  # in the scoring thread: delivered before the step ends

    async def publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        await asyncio.to_thread(produce, topic, messages)

    try:
        service = ScoringService(settings, store, publish)
    except Exception as exc:
        log.error("scoring disabled: %s", exc)
        return None
    sink.valid_hooks.append(service.on_valid)
    return service


class Alerting:
    """Runs the AlertRunner on the one worker that owns partition 0 of the behaviour topic."""

    def __init__(self, settings: Settings, store: Store, sink: Sink, monitor: Any, app: faust.App):
        self.settings = settings
        self.store = store
        self.sink = sink
        self.first_monitor = monitor
        self.app = app
        self.runner: AlertRunner | None = None

    async def publish(self, messages: list[dict[str, Any]]) -> None:
        producer = self.app.producer
        futures = [await producer.send(self.settings.alerts_topic, m["alert_id"].encode(),
                                       orjson.dumps(m), None, None, None) for m in messages]
        await producer.flush()
        for future in futures:
            await future

    async def step(self) -> None:
        leader = (self.settings.topic("behaviour"), 0) in self.sink.assigned and not self.sink.closed
        if not leader:
            self.runner = None
            return
        try:
            if self.runner is None:
                monitor = self.first_monitor or load_monitor(self.settings.gaps_config)
                self.first_monitor = None
                runner = AlertRunner(self.settings, self.store, monitor, self.publish)
                await runner.take_over()
                self.runner = runner
            else:
                await self.runner.tick()
        except StoreError as exc:  # ClickHouse away: try again next tick
            log.error("alerting skipped a tick: %s", exc)
