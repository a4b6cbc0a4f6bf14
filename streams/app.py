"""The Faust app: topic discovery, rebalance hooks, timers and the worker's HTTP API.

The consumer subscribes by pattern to every stream topic (settings.stream_of, found again
as topics are created) and hands each fetched partition batch straight to the sink
(streams/transport.py): no agents, so a topic discovered at run time needs no channel.

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

from stocktake.broker import KAFKA_LOG, fetched_log_ends
from stocktake.clickhouse.store import Store, StoreError
from stocktake.processors.judge import DeadLetter
from stocktake.services.alerting import AlertRunner
from stocktake.services.gapconfig import load_monitor
from stocktake.services.outbox import BATCH, CONCURRENCY, POLL_S, Outbox
from stocktake.settings import Settings
from stocktake.streams import api
from stocktake.streams.sink import Key, Sink
from stocktake.streams.transport import FetchBatch, Handover, Routing, batching_transport

log = logging.getLogger("stocktake.worker")

# Fetched partition batches waiting for the sink (streams/transport.py Handover).
HANDOVER_BATCHES = 16


class StocktakeApp(faust.App):
    """faust.App whose consumer subscribes by pattern and delivers fetch batches of stream topics."""

    routing: Routing
    handover: Handover | None = None

    def _new_transport(self) -> Any:
        cls = batching_transport(self.routing)
        return cls(self.conf.broker_consumer, self)


def create_app(
    settings: Settings,
    store: Store,
    bootstrap: str,
    *,
    web_port: int | None = None,
    api_token: str = "",
) -> tuple[StocktakeApp, Sink]:
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
        # Faust's own pages (routing info, table contents, stats) would be open to anyone who
        # reaches the port; our API is behind a token (streams/api.py).
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        # Tansu holds JoinGroup for session.timeout/2: keep it short (DESIGN.md).
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_max_poll_records=5000,
        broker_commit_every=10**9,     # offsets of our topics are committed by the sink
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        # How often the consumer's metadata (the cluster's topics) is refreshed: a topic created
        # meanwhile that the subscription pattern matches is then assigned (discovery).
        consumer_metadata_max_age_ms=int(settings.discovery_interval_s * 1000),
        producer_linger_ms=5,
        stream_wait_empty=False,
        table_standby_replicas=0,
    )
    app.routing = Routing(settings.stream_of, settings.subscription_pattern)
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

    def tps(keys: set[tuple[str, int]]) -> set[TP]:
        return {TP(t, p) for t, p in keys}  # Faust's own TP: its active-partition set asserts the type

    sink = Sink(settings, store, publish, commit,
                generation=lambda: app.consumer_generation_id, name=f"worker-{id(app) % 10000}",
                pause=lambda keys: app.consumer.pause_partitions(tps(keys)),
                resume=lambda keys: app.consumer.resume_partitions(tps(keys)))

    async def ingest(batch: FetchBatch) -> None:
        """Every fetched batch of every stream topic, handed over by the consumer's fetch loop."""
        if sink.closed:
            return
        try:
            await sink.add(batch)
        except Exception as exc:  # never dies quietly: the sink stops for good and the worker exits
            sink.fail(exc)

    app.handover = Handover(ingest, HANDOVER_BATCHES)
    app.routing.deliver = app.handover.deliver

    async def _assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await sink.on_assigned([(tp.topic, tp.partition) for tp in assigned],
                               lambda keys: _log_bounds(app, bootstrap, [TP(t, p) for t, p in keys]))

    async def _revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        await sink.on_revoked((tp.topic, tp.partition) for tp in revoked)

    app.on_partitions_assigned.connect(_assigned)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(_revoked)  # type: ignore[arg-type]

    # Checked five times an interval: a buffer leaves at most a fifth of it late (checked once
    # an interval, an event waited up to two intervals: p99 2.1 s at 10k events/s, bench --latency).
    @app.timer(interval=min(settings.flush_interval_s, 1.0) / 5)
    async def _flush_due() -> None:
        try:
            await sink.flush_due()
        except Exception as exc:
            sink.fail(exc)

    monitor = load_monitor(settings.gaps_config)  # a bad gaps config fails at start, in one line
    alerting = Alerting(settings, store, sink, monitor, app)

    @app.timer(interval=settings.gap_interval_s)
    async def _alerting() -> None:
        await alerting.step()

    @app.timer(interval=POLL_S)
    async def _pages() -> None:
        await alerting.deliver()

    scoring = _start_scoring(settings, store, sink, app, bootstrap)
    app.stocktake_scoring = scoring  # type: ignore[attr-defined]  # for bench/API introspection
    if scoring is not None:
        @app.timer(interval=settings.score_interval_s)
        async def _scoring() -> None:
            try:
                await scoring.step()
            except Exception as exc:  # scoring is derived data: never take the worker down
                log.exception("scoring step failed: %s", exc)

        async def _last_snapshot(sender: Any, **kwargs: Any) -> None:
            try:   # a clean stop leaves the next scorer nothing to redo
                await scoring.snapshot()
            except Exception as exc:
                log.error("scoring snapshot at stop failed: %s", exc)

        app.on_before_shutdown.connect(_last_snapshot)  # type: ignore[arg-type]

    if web:
        if not api_token:
            raise ValueError("the worker's HTTP API needs a token")
        api.register(app, store, sink, settings, alerting, scoring, token=api_token)
    return app, sink


async def _log_bounds(app: faust.App, bootstrap: str, tps: list[TP]) -> dict[tuple[str, int], tuple[int, int]] | None:
    """Kafka's (log start, log end) of ``tps``: how the sink sees a log that lost its records."""
    if not tps:
        return {}
    consumer: Any = app.consumer
    try:
        starts, ends = await consumer.earliest_offsets(*tps), await consumer.highwaters(*tps)
        # ListOffsets' ends, checked by a fetch (Tansu lists less than its log holds)
        listed = {(tp.topic, tp.partition): int(ends[tp]) for tp in tps if tp in ends}
        fetched = await asyncio.to_thread(fetched_log_ends, bootstrap, listed)
    except Exception as exc:  # not fatal: the offsets are checked at the next assignment
        log.warning("could not read the log bounds of %d partitions: %s", len(tps), exc)
        return None
    return {key: (int(starts[TP(*key)]), end) for key, end in fetched.items() if TP(*key) in starts}


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

    # The scorer asks the broker how far each quiet partition's log reaches (one short request a
    # partition, from a thread); not a group member, it takes no partitions.
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{settings.group_id}.scorer-log-ends",
                        "enable.auto.commit": False, "logger": KAFKA_LOG})

    def log_ends(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        ends = {}
        for topic, partition in partitions:
            try:
                ends[(topic, partition)] = int(watcher.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1.0, cached=False)[1])
            except KafkaException:   # not there (yet): silence decides for it
                continue
        return ends

    try:
        return ScoringService(settings, store, publish, leads=lambda: leads(settings, sink), log_ends=log_ends)
    except Exception as exc:
        log.error("scoring disabled: %s", exc)
        return None


def leads(settings: Settings, sink: Sink) -> bool:
    """Whether this worker runs the deployment's one alerting and one scoring: it owns
    partition 0 of the behaviour topic (Kafka's group protocol gives that to exactly one)."""
    return (settings.topic("behaviour"), 0) in sink.assigned and not sink.closed


class Alerting:
    """Runs the AlertRunner on the one worker that `leads`."""

    def __init__(self, settings: Settings, store: Store, sink: Sink, monitor: Any, app: faust.App):
        self.settings = settings
        self.store = store
        self.sink = sink
        self.first_monitor = monitor
        self.app = app
        self.runner: AlertRunner | None = None
        # The webhook's deliverer: made when this worker becomes the alerting one (pages a
        # previous owner left go out while the detectors relearn); kept through a stop for
        # the last round.
        self.outbox: Outbox | None = None
        app.on_before_shutdown.connect(self._last_round)  # type: ignore[arg-type]

    async def publish(self, messages: list[dict[str, Any]]) -> None:
        producer = self.app.producer
        futures = [await producer.send(self.settings.alerts_topic, m["alert_id"].encode(),
                                       orjson.dumps(m), None, None, None) for m in messages]
        await producer.flush()
        for future in futures:
            await future

    async def step(self) -> None:
        if not leads(self.settings, self.sink):
            self.runner = None
            if not self.sink.closed:  # a stopping worker keeps it for the last round
                self.outbox = None
            return
        try:
            if self.runner is None:
                monitor = self.first_monitor or load_monitor(self.settings.gaps_config)
                self.first_monitor = None
                self.outbox = self.outbox or Outbox(self.settings, self.store)
                runner = AlertRunner(self.settings, self.store, monitor, self.publish, self.outbox)
                await runner.take_over()
                self.runner = runner
            else:
                await self.runner.tick()
        except StoreError as exc:  # ClickHouse away: try again next tick
            log.error("alerting skipped a tick: %s", exc)

    async def deliver(self) -> None:
        """Due pages, on a timer of their own: a slow or unreachable receiver holds up this
        timer, never the alerting step."""
        if self.outbox is not None and not self.sink.closed:
            await self._deliver(self.outbox, BATCH)

    async def _last_round(self, sender: Any, **kwargs: Any) -> None:
        """Stopping: the pages due now (the last transitions'), at most one round of concurrent
        POSTs, so a hanging receiver delays the stop by one timeout; the rest stay pending for
        the next owner."""
        if self.outbox is not None:
            await self._deliver(self.outbox, CONCURRENCY)

    async def _deliver(self, outbox: Outbox, limit: int) -> None:
        try:
            await outbox.deliver_due(limit)
        except Exception as exc:  # the pages stay pending for the next round; the worker goes on
            log.error("page delivery skipped a round: %s", exc)
