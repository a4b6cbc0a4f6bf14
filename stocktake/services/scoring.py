"""In-stream scoring: features from the stored valid events, ONNX Runtime micro-batches,
scores published on the settings' score topics (``<prefix>.scores.users`` / ``.products``)
and stored.

One scorer for a deployment, however many workers: the worker that owns partition 0 of the
behaviour topic (the rule alerting follows; Kafka's group protocol gives it to exactly one).
It reads the valid events every worker has stored in ``ingest_log`` and folds them into the
features in event-time order (``processors.event_order``), so that its features, and each
entity's score, are a function of the stored events alone:

- **N workers.** Each entity's features are computed once, by the scorer, from the events of
  all partitions, whichever worker stored them. A product's features need store-wide state
  (its category's mean price, the centroids of what sells) that splitting entities across
  workers would cut in parts.
- **Restarts and rebalances.** The features and the merger's read positions are snapshotted
  into ``scoring_state`` every ``score_snapshot_interval_s`` and when the worker stops; a new
  scorer loads the newest snapshot and reads the events stored after its positions. Redone
  work publishes the same scores again (scores are at-least-once, keyed by entity id).
- **Back-pressure, no drops.** The scorer reads at its own pace: events wait in the store,
  never in a queue that sheds them. Folding takes at most ``DUTY`` of each scoring interval,
  so ingestion keeps its CPU; a scorer that falls behind lags, and its lag (events stored and
  not yet folded in, and event time behind the newest stored) is in ``/api/stats``,
  ``stocktake status`` and the Scores dashboard (``scoring_lag``).

Each entity is scored as of its own newest event (``features_ts``), with its comparisons
to the rest of the store taken at that event, as training reads them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import iso_utc
from stocktake.processors.contract import Event
from stocktake.processors.event_order import EventTimeMerger, Row, row
from stocktake.settings import Settings

if TYPE_CHECKING:
    from stocktake.processors.features import FeatureState
    from stocktake.services.embedding import ProductEmbedder

log = logging.getLogger("stocktake.scoring")

MODELS = {"user": "user_propensity", "product": "product_demand"}
Publish = Callable[[str, list[tuple[bytes, bytes]]], Awaitable[None]]
# (topic, partition) pairs -> each one's Kafka log end offset (those it could ask for)
LogEnds = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]
SNAPSHOT_VERSION = 1
LAG_EVERY_S = 5.0     # how often the lag is measured and stored
RELEASE_CHUNK = 2048  # rows folded between two looks at the clock


def _strings(column: pa.ChunkedArray) -> list[str]:
    """A string column as Python strings (the client may hand String over as binary)."""
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        column = column.cast(pa.string())
    return list(column.to_pylist())


class ScoringService:
    #: Share of each scoring interval the reads and feature updates may take: beyond it, events
    #: stay in the store (the scorer lags), so ingestion keeps its CPU.
    DUTY = 0.3

    def __init__(self, settings: Settings, store: Store, publish: Publish, *,
                 leads: Callable[[], bool] = lambda: True, log_ends: LogEnds | None = None,
                 max_batch: int = 4096, read_rows: int = 8192, max_pending: int = 200_000):
        from stocktake.models.registry import ModelRegistry, Scorer
        from stocktake.processors.features import STREAMS

        self.settings = settings
        self.store = store
        self.publish = publish
        self.leads = leads
        # A partition with nothing new in the store for a while may still have rows on their way
        # (a worker catching up, a flush not yet due): its Kafka log end tells. Without it (no
        # broker to ask) silence alone decides, after score_idle_s.
        self.log_ends = log_ends
        self._ends: dict[tuple[str, int], int] = {}
        self.streams = sorted(STREAMS)
        self.topics = [settings.topic(s) for s in self.streams]
        self.registry = ModelRegistry(settings.model_registry)
        self.registry.ensure_defaults()
        self.scorers = {entity: Scorer(self.registry, name, settings.device) for entity, name in MODELS.items()}
        self.max_batch = max_batch
        self.read_rows = read_rows
        self.max_pending = max_pending
        # Held only while this worker is the scorer:
        self.features: FeatureState | None = None
        self.merger: EventTimeMerger | None = None
        self.folded = 0            # events folded in since the first start (carried by snapshots)
        self._snapshot_due = 0.0
        self._cut: set[tuple[str, int]] = set()   # partitions whose last read stopped at the limit
        self._late_logged, self._late_logged_at = 0, -60.0
        self._lag_due = 0.0
        self.lag: dict[str, Any] = {}
        self.stats: dict[str, Any] = {"events": 0, "unreadable": 0, "scored_users": 0, "scored_products": 0,
                                      "batches": 0, "score_seconds": 0.0, "snapshots": 0, "snapshot_seconds": 0.0,
                                      "snapshot_bytes": 0, "takeovers": 0, "restored_events": 0}
        # Made when this worker first becomes the scorer: the encoder and the catalog index it
        # feeds (rebuilt from the store, up to ~0.9 GB at 1 M products) live on that worker only.
        self.embedder: ProductEmbedder | None = None

    @property
    def leading(self) -> bool:
        return self.features is not None

    # ------------------------------------------------------------------ the step

    async def step(self) -> None:
        """Read what was stored since the last step, fold the ready events into the features in
        event-time order, score what changed, publish and store."""
        if not self.leads():
            if self.features is not None:
                log.warning("this worker no longer scores (another owns partition 0 of %s)", self.topics[0])
                self.features = self.merger = None
            return
        if self.features is None:
            await self._take_over()
        features, merger = self.features, self.merger
        assert features is not None and merger is not None
        # Read about what a step can fold: each read holds the store (whose one connection the
        # sink's inserts share) and its rows are turned into Python on the loop.
        if merger.waiting < self.read_rows:
            merger.add(await asyncio.to_thread(self._read, merger), time.monotonic())
        if self.log_ends is not None:
            await self._watch_logs(merger, self.log_ends)
        if merger.last_late is not None and time.monotonic() >= self._late_logged_at + 60:   # once a minute
            late = merger.stats["late"]
            log.warning("%d events came late to the scorer's event-time order (folded in as they came), the "
                        "newest in %s[%d], %d ms behind", late - self._late_logged, merger.last_late[0],
                        merger.last_late[1], merger.watermark - merger.last_late[2])
            self._late_logged, self._late_logged_at = late, time.monotonic()
            merger.last_late = None
        users: set[str] = set()
        products: set[str] = set()
        # the read ran in a thread; the fold has the loop: at least one chunk a step, so a slow
        # read never starves it
        deadline = time.perf_counter() + self.DUTY * self.settings.score_interval_s
        while ready := merger.release(time.monotonic(), RELEASE_CHUNK):
            self._fold(features, ready, users, products)
            if time.perf_counter() >= deadline:
                break
        for scorer in self.scorers.values():
            if scorer.maybe_reload():
                log.warning("scoring with %s version %s", scorer.name, scorer.version)
        if users:
            await self._score("user", sorted(users))
        if products:
            await self._score("product", sorted(products))
        if self.embedder is not None:
            await self.embedder.step()
        now = time.monotonic()
        if now >= self._lag_due:
            self._lag_due = now + LAG_EVERY_S
            await asyncio.to_thread(self._measure_lag)
        if now >= self._snapshot_due:
            await self.snapshot()

    def _fold(self, features: FeatureState, rows: list[Row], users: set[str], products: set[str]) -> None:
        """Rows in merger order into the features, runs of one stream at a time."""
        from stocktake.models.dataset import stored_event

        run: list[Event] = []
        run_stream = ""
        for r in rows:
            stream = r[6]
            if stream != run_stream and run:
                self._update(features, run_stream, run, users, products)
                run = []
            run_stream = stream
            ev = stored_event(stream, r[7], r[0])
            if ev is None:   # valid under the deployment's own contract, not under v1: no features
                self.stats["unreadable"] += 1
                continue
            run.append(ev)
        if run:
            self._update(features, run_stream, run, users, products)

    def _update(self, features: FeatureState, stream: str, events: list[Event], users: set[str],
                products: set[str]) -> None:
        changed_users, changed_products = features.update(stream, events)
        users |= changed_users
        products |= changed_products
        self.stats["events"] += len(events)
        self.folded += len(events)
        if stream == "product" and self.embedder is not None:
            self.embedder.offer(events)

    async def _watch_logs(self, merger: EventTimeMerger, log_ends: LogEnds) -> None:
        """Partitions quiet in the store for half the idle time whose Kafka log grew since the
        last look are still busy: rows are on their way."""
        now = time.monotonic()
        quiet = merger.idle(now, self.settings.score_idle_s / 2)
        if not quiet:
            return
        try:
            ends = await asyncio.to_thread(log_ends, quiet)
        except Exception as exc:   # the broker away: silence alone decides
            log.debug("log ends unavailable: %s", exc)
            return
        grew = [key for key, end in ends.items() if self._ends.get(key, end) != end]
        self._ends.update(ends)
        if grew:
            merger.touch(grew, now)

    # ------------------------------------------------------------------ reading the store

    def _partitions(self, merger: EventTimeMerger) -> tuple[list[tuple[str, int, int, int, int]], int]:
        """The partitions stored past the merger's position in each, as (topic, partition,
        offset, idx, newest valid ts), and the newest valid event time stored in any. From
        ``partition_rollup``: one row a partition, however long the history."""
        marks = self.store.rows(
            "SELECT topic, partition, max(offset_max), toUnixTimestamp64Milli(max(assumeNotNull(valid_ts_max))) "
            "FROM partition_rollup WHERE topic IN {t:Array(String)} GROUP BY topic, partition", {"t": self.topics})
        news = []
        newest = 0
        for topic, partition, offset_max, ts_max in marks:
            key = (topic, int(partition))
            offset, idx = merger.positions.get(key, (-1, -1))
            newest = max(newest, int(ts_max or 0))
            # a read cut inside an envelope leaves rows at the position's own offset
            if int(offset_max) > offset or key in self._cut:
                news.append((topic, int(partition), offset, idx, int(ts_max or 0)))
        return news, newest

    @staticmethod
    def _after(parts: list[tuple[str, int, int, int, int]], params: dict[str, Any]) -> str:
        """SQL: the rows after each partition's position (ingest_log's sort key starts with
        the partition and offset, so each term reads only the new rows)."""
        terms = []
        for i, (topic, partition, offset, idx, _) in enumerate(parts):
            terms.append(f"(topic = {{t{i}:String}} AND partition = {{p{i}:UInt32}} AND "
                         f"(offset, idx) > ({{o{i}:Int64}}, {{i{i}:Int64}}))")
            params.update({f"t{i}": topic, f"p{i}": partition, f"o{i}": offset, f"i{i}": idx})
        return " OR ".join(terms)

    def _read(self, merger: EventTimeMerger) -> list[Row]:
        """The valid events stored after the merger's positions: at most ``read_rows``, shared
        among the partitions that have new ones, each partition's in offset order. The cost is
        that of the new rows, not of the history."""
        news, _ = self._partitions(merger)
        if not news:
            return []
        per = max(1000, self.read_rows // len(news))
        params: dict[str, Any] = {"streams": self.streams, "per": per}
        # Arrow, turned into Python column by column: half the cost of the client's row tuples
        table = self.store.query_arrow(
            "SELECT stream, topic, partition, offset, idx, toUnixTimestamp64Milli(ts) AS ms, payload FROM ingest_log "
            f"WHERE status = 'valid' AND stream IN {{streams:Array(String)}} AND ({self._after(news, params)}) "
            "ORDER BY topic, partition, offset, idx LIMIT {per:UInt32} BY topic, partition", params)
        if not table.num_rows:
            self._cut = set()
            return []
        streams, topics, partitions, offsets, idxs, times, payloads = (
            _strings(table.column(i)) if i in (0, 1) else table.column(i).to_pylist() for i in range(7))
        counts: dict[tuple[str, int], int] = {}
        for key in zip(topics, partitions, strict=True):
            counts[key] = counts.get(key, 0) + 1
        self._cut = {key for key, n in counts.items() if n >= per}
        return list(map(row, streams, topics, partitions, offsets, idxs, times, payloads))

    def _measure_lag(self) -> None:
        merger = self.merger
        if merger is None:
            return
        news, newest = self._partitions(merger)
        params: dict[str, Any] = {"streams": self.streams}
        unread = 0
        if news:
            (unread,), = self.store.rows(
                "SELECT count() FROM ingest_log WHERE status = 'valid' AND stream IN {streams:Array(String)} "
                f"AND ({self._after(news, params)})", params)
        watermark = max(merger.watermark, 0)
        lag_events = int(unread) + merger.waiting
        lag_s = max(0.0, (int(newest or 0) - watermark) / 1000) if lag_events else 0.0
        now = dt.datetime.now(dt.UTC)
        self.lag = {"events": lag_events, "seconds": round(lag_s, 3),
                    "watermark": iso_utc(dt.datetime.fromtimestamp(watermark / 1000, dt.UTC)),
                    "waiting_in_memory": merger.waiting, "late_events": merger.stats["late"],
                    "forced_events": merger.stats["forced"], "measured_at": iso_utc(now)}
        self.store.insert_arrow("scoring_lag", pa.table({
            "topic_prefix": [self.settings.topic_dot_prefix],
            "at": pa.array([now], pa.timestamp("ms", tz="UTC")),
            "watermark": pa.array([watermark], pa.timestamp("ms", tz="UTC")),
            "lag_events": pa.array([lag_events], pa.uint64()), "lag_s": [lag_s]}))

    # ------------------------------------------------------------------ snapshots

    async def _take_over(self) -> None:
        """Become the scorer: from the newest snapshot, or from nothing."""
        from stocktake.processors.features import FeatureState

        now = time.monotonic()
        saved = await asyncio.to_thread(self._load_snapshot)
        idle = self.settings.score_idle_s
        if saved is None:
            self.features = FeatureState()
            self.merger = EventTimeMerger(idle_s=idle, max_pending=self.max_pending, now=now)
            self.folded = 0
        else:
            self.features = saved["features"]
            self.merger = EventTimeMerger.restore(saved["merger"], idle_s=idle, max_pending=self.max_pending, now=now)
            self.folded = int(saved["events"])
            self.stats["restored_events"] = self.folded
        # the topics' partitions as created here; a topic made elsewhere with more shows its
        # others as their rows come
        self.merger.expect([(t, p) for t in self.topics for p in range(self.settings.partitions)], now)
        if self.settings.text_encoder and self.embedder is None:
            from stocktake.services.embedding import ProductEmbedder

            self.embedder = ProductEmbedder(self.settings, self.store, self.features)
        if self.embedder is not None:
            self.embedder.features = self.features
        self.stats["takeovers"] += 1
        self._cut, self._ends, self._late_logged = set(), {}, self.merger.stats["late"]
        self._snapshot_due = now + self.settings.score_snapshot_interval_s
        log.warning("this worker scores %s: %s", ", ".join(self.topics),
                    "from nothing" if saved is None else f"from a snapshot of {self.folded:,} events")

    def _load_snapshot(self) -> dict[str, Any] | None:
        # The snapshot is this deployment's own (the store is trusted like its credentials).
        found = self.store.rows(
            "SELECT base64Encode(state) FROM scoring_state WHERE topic_prefix = {p:String} "
            "ORDER BY taken_at DESC LIMIT 1", {"p": self.settings.topic_dot_prefix})
        if not found:
            return None
        try:
            saved = pickle.loads(base64.b64decode(found[0][0]))
            if saved.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"snapshot version {saved.get('version')}")
            return dict(saved)
        except Exception as exc:   # derived data: start afresh rather than not at all
            log.error("scoring snapshot unreadable (%s): the features start from nothing", exc)
            return None

    async def snapshot(self) -> None:
        """Store the features and read positions (between two folds, so they agree)."""
        if self.features is None or self.merger is None or not self.leads():
            return
        began = time.perf_counter()
        saved = {"version": SNAPSHOT_VERSION, "features": self.features, "merger": self.merger.export(),
                 "events": self.folded}
        watermark = max(self.merger.watermark, 0)
        # pickling holds the GIL either way; in a thread it at least lets the store's I/O overlap
        blob = await asyncio.to_thread(pickle.dumps, saved, pickle.HIGHEST_PROTOCOL)
        table = pa.table({
            "topic_prefix": [self.settings.topic_dot_prefix],
            "taken_at": pa.array([dt.datetime.now(dt.UTC)], pa.timestamp("ms", tz="UTC")),
            "watermark": pa.array([watermark], pa.timestamp("ms", tz="UTC")),
            "events": pa.array([self.folded], pa.uint64()),
            "state": pa.array([blob], pa.binary()),
        })
        await asyncio.to_thread(self.store.insert_arrow, "scoring_state", table)
        self.stats["snapshots"] += 1
        self.stats["snapshot_bytes"] = len(blob)
        self.stats["snapshot_seconds"] = round(time.perf_counter() - began, 3)
        self._snapshot_due = time.monotonic() + self.settings.score_snapshot_interval_s

    # ------------------------------------------------------------------ scoring

    async def _score(self, entity: str, ids: list[str]) -> None:
        features, merger = self.features, self.merger
        assert features is not None and merger is not None
        scorer = self.scorers[entity]
        users_topic, products_topic = self.settings.score_topics
        topic = users_topic if entity == "user" else products_topic
        for start in range(0, len(ids), self.max_batch):
            chunk = ids[start:start + self.max_batch]
            times = features.feature_times(entity, chunk, max(merger.watermark - 1, 0))
            matrix = (features.user_matrix(chunk, times) if entity == "user"
                      else features.product_matrix(chunk, times))
            began = time.perf_counter()
            scores = await asyncio.to_thread(scorer.score, matrix)
            elapsed = time.perf_counter() - began
            self.stats["batches"] += 1
            self.stats["score_seconds"] += elapsed
            self.stats["scored_users" if entity == "user" else "scored_products"] += len(chunk)
            await self._deliver(entity, topic, chunk, np.asarray(scores), times, elapsed, scorer)

    async def _deliver(self, entity: str, topic: str, ids: list[str], scores: np.ndarray, times: list[int],
                       elapsed: float, scorer: Any) -> None:
        now = dt.datetime.now(dt.UTC)
        scored_iso = iso_utc(now)
        iso = {ms: iso_utc(dt.datetime.fromtimestamp(ms / 1000, dt.UTC)) for ms in set(times)}   # many share one
        messages = [(id_.encode(), orjson.dumps({
            "id": id_, "entity": entity, "score": round(score, 6), "model": scorer.name,
            "model_version": scorer.version, "features_ts": iso[ms], "scored_at": scored_iso,
        })) for id_, score, ms in zip(ids, scores.tolist(), times, strict=True)]
        await self.publish(topic, messages)
        n = len(ids)
        table = pa.table({
            "topic_prefix": pa.repeat(pa.scalar(self.settings.topic_dot_prefix), n),
            "entity": pa.repeat(pa.scalar(entity), n), "id": pa.array(ids, pa.string()),
            "score": pa.array(scores.astype(np.float32)), "model": pa.repeat(pa.scalar(scorer.name), n),
            "model_version": pa.repeat(pa.scalar(str(scorer.version)), n),
            "features_ts": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "scored_at": pa.repeat(pa.scalar(now, pa.timestamp("ms", tz="UTC")), n),
            "latency_ms": pa.repeat(pa.scalar(elapsed * 1000, pa.float32()), n),
            "device": pa.repeat(pa.scalar(scorer.device), n),
        })
        await asyncio.to_thread(self.store.insert_arrow, "scores", table)
