"""Running workers: broker (embedded or not), store, topics, Faust apps.

``Runtime`` owns what one process needs: the store (chDB allows one per
process), the embedded broker when STOCKTAKE_KAFKA is unset, and any number
of Faust apps (workers of one consumer group) started in this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
from collections.abc import Iterable, Mapping

from stocktake.broker import EmbeddedBroker, create_topics, free_port, list_topics
from stocktake.clickhouse import rollups
from stocktake.clickhouse.store import Store
from stocktake.processors.contract_spec import shipped
from stocktake.settings import Settings
from stocktake.streams.app import StocktakeApp, create_app
from stocktake.streams.discovery import worker_file, write_worker_file
from stocktake.streams.sink import Sink

log = logging.getLogger("stocktake.runtime")


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        kafka_port: int | None = None,
        store: Store | None = None,
        bootstrap: str | None = None,
    ):
        self.settings = settings
        self.kafka_port = kafka_port
        self.broker: EmbeddedBroker | None = None
        self.store: Store | None = store
        self._owns_store = store is None
        self._bootstrap = bootstrap
        self.workers: list[tuple[StocktakeApp, Sink]] = []
        # (topic, partition) -> the highest offset stored from a log the embedded broker lost
        self.lost_logs: dict[tuple[str, int], int] = {}
        self.http_url: str | None = None
        self.broker_failure: str | None = None
        # The API's bearer token: random per worker process, handed over in worker.json only.
        self.api_token = secrets.token_urlsafe(32)

    @property
    def bootstrap(self) -> str:
        if self.broker is not None:
            return self.broker.bootstrap
        return self._bootstrap or self.settings.kafka

    def open(self) -> Runtime:
        """Start/connect broker and store, migrate, create topics. Blocking."""
        tune_gc()
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.embedded_kafka and not self._bootstrap:
            self.broker = EmbeddedBroker(self.kafka_port, log_path=s.data_dir / "tansu.log").start()
        if self.store is None:
            self.store = Store(s.clickhouse_dsn, retry_for=s.connect_timeout_s, cluster=s.clickhouse_cluster)
        rollups.prepare(self.store, raw_retention_s=s.raw_retention_s)
        if self.broker is not None:
            self._lose_logs()
        self.open_topics()
        return self

    def heal_broker(self) -> bool:
        """The embedded broker died (killed, crashed): start it again on the same address and
        create the topics. Called on the loop's thread (the broker dies with the thread that
        started it). Its topics restart empty; the sink stores their offsets after the stored
        ones (Sink._rebase). True if it had to."""
        if self.broker is None or self.broker.alive():
            return False
        log.error("the embedded Kafka (Tansu) exited with code %s; restarting it on %s (its topics restart "
                  "empty: new offsets are stored after the stored ones, nothing stored is lost)",
                  self.broker.returncode, self.broker.bootstrap)
        self.broker.stop()
        self.broker.start()
        self._lose_logs()
        self.open_topics()
        return True

    def _lose_logs(self) -> None:
        """A started embedded broker holds no log: everything stored so far came from logs it
        lost (its storage is memory). Its workers store each partition's new log after the
        stored offsets (Sink._rebase), whatever Kafka says of the log's length."""
        assert self.store is not None
        self.lost_logs = self.store.all_watermarks()
        for _app, sink in self.workers:
            sink.lost_logs = self.lost_logs

    def open_topics(self) -> None:
        """Create the settings' topics: the three default streams and stocktake's own outputs.
        Workers consume every stream topic there is (discovery), not only these."""
        s = self.settings
        topics = dict.fromkeys(default_stream_topics(s), s.partitions)
        topics[s.deadletter_topic] = s.partitions
        topics[s.alerts_topic] = 1  # one ordered history of alert transitions
        for topic in s.score_topics:
            topics[topic] = s.partitions
        create_topics(self.bootstrap, topics, connect_timeout=s.connect_timeout_s)

    def stream_topics(self) -> dict[str, int]:
        """The broker's topics that are streams (settings.stream_of), with their partition
        counts: what the workers consume now (wait_until_assigned(..., topics=this))."""
        return {topic: n for topic, n in list_topics(self.bootstrap).items() if self.settings.stream_of(topic)}

    async def start_worker(self, *, web: bool = False) -> tuple[StocktakeApp, Sink]:
        assert self.store is not None, "open() first"
        web_port = None
        if web:
            web_port = self.settings.http_port or free_port(self.settings.http_host)
            self.http_url = f"http://{self.settings.http_host}:{web_port}"
        app, sink = create_app(self.settings, self.store, self.bootstrap, web_port=web_port,
                               api_token=self.api_token)
        sink.lost_logs = self.lost_logs
        await app.start()
        self.workers.append((app, sink))
        if web:
            self._write_worker_file()
        return app, sink

    async def stop_worker(self, app: StocktakeApp, sink: Sink) -> None:
        """Graceful: flush every buffer (insert + commit), then stop taking work, then
        leave the group. What arrives in between is re-read by the next owner."""
        with contextlib.suppress(Exception):
            await sink.close()
        if app.handover is not None:
            await app.handover.stop()
        await app.stop()
        self.workers = [w for w in self.workers if w[0] is not app]

    async def stop_all(self) -> None:
        for app, sink in list(reversed(self.workers)):
            await self.stop_worker(app, sink)

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            worker_file(self.settings.data_dir).unlink()
        if self.store is not None and self._owns_store:
            self.store.close()
        self.store = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    # -- discovery of a running worker by other commands ---------------------------------

    def _write_worker_file(self) -> None:
        info = {"pid": os.getpid(), "http": self.http_url, "kafka": self.bootstrap, "token": self.api_token}
        write_worker_file(self.settings.data_dir, info)


def tune_gc() -> None:
    """Fewer, later collections: the hot path allocates ~10 short-lived objects per
    event, and CPython's default gen-0 threshold (700) made GC a third of the
    envelope path's time (judged events/s: 105k at 700, 123k at 50k, 145k at 200k). Objects alive
    at start-up (Faust, chDB, pyarrow) are frozen out of collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 50)


def default_stream_topics(settings: Settings) -> tuple[str, ...]:
    """The topics of the shipped contracts' streams: created at start-up (the demo's)."""
    return tuple(settings.topic(stream) for stream in shipped())


async def wait_until_assigned(sinks: list[Sink], partitions: int, timeout: float = 60,
                              *, topics: Mapping[str, int] | Iterable[str] | None = None) -> None:
    """Wait until the group owns every partition of ``topics``: names (``partitions`` partitions
    each) or name -> partition count (Runtime.stream_topics(): the streams actually there). By
    default the three default stream topics of the sinks' settings."""
    if topics is None:
        topics = default_stream_topics(sinks[0].settings) if sinks else ()
    counts = topics if isinstance(topics, Mapping) else dict.fromkeys(topics, partitions)
    want = {(topic, p) for topic, n in counts.items() for p in range(n)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while missing := want.difference(*(s.assigned for s in sinks)):
        if loop.time() > deadline:
            raise TimeoutError(f"partitions not assigned within {timeout:.0f}s: {len(missing)} missing, "
                               f"e.g. {sorted(missing)[:3]}")
        await asyncio.sleep(0.1)
