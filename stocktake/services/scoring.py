"""In-stream scoring: features from valid events, ONNX Runtime micro-batches,
scores published on the settings' score topics (``<prefix>.scores.users`` / ``.products``)
and stored.

Scoring never holds back the inventory path: the sink's hook only appends the
batch's valid events to a bounded queue (the oldest are dropped, and counted,
if scoring falls behind); a separate task updates features, scores the
entities that changed in micro-batches (ONNX Runtime runs in a thread and
releases the GIL), and publishes. Scores are derived data: at-least-once, keyed
by entity id, each carrying the event time its features describe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import iso_utc
from stocktake.processors.contract import Event
from stocktake.settings import Settings

if TYPE_CHECKING:
    from stocktake.services.embedding import ProductEmbedder

log = logging.getLogger("stocktake.scoring")

MODELS = {"user": "user_propensity", "product": "product_demand"}
Publish = Callable[[str, list[tuple[bytes, bytes]]], Awaitable[None]]


class ScoringService:
    #: Share of each scoring interval the feature updates may take: beyond it, events stay
    #: queued (and the bounded queue sheds the oldest), so ingestion keeps its CPU.
    DUTY = 0.3

    def __init__(self, settings: Settings, store: Store, publish: Publish, *, max_queue: int = 200_000,
                 max_batch: int = 4096):
        from stocktake.models.registry import ModelRegistry, Scorer
        from stocktake.processors.features import STREAMS, FeatureState

        self.settings = settings
        self.store = store
        self.publish = publish
        self.features = FeatureState()
        self.streams = STREAMS
        self.registry = ModelRegistry(settings.model_registry)
        self.registry.ensure_defaults()
        self.scorers = {entity: Scorer(self.registry, name, settings.device) for entity, name in MODELS.items()}
        self.queue: deque[tuple[str, list[Event]]] = deque()
        self.queued_events = 0
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.stats = {"events": 0, "dropped_events": 0, "scored_users": 0, "scored_products": 0,
                      "batches": 0, "score_seconds": 0.0}
        self.embedder: ProductEmbedder | None = None
        if settings.text_encoder:
            from stocktake.services.embedding import ProductEmbedder

            self.embedder = ProductEmbedder(settings, store, self.features)

    # The sink calls this at judge time with each batch's valid events: O(1), never blocks.
    def on_valid(self, stream: str, events: list[Event]) -> None:
        if not events or stream not in self.streams:  # a stream without features (schemaless, a user's own)
            return
        self.queue.append((stream, events))
        self.queued_events += len(events)
        while self.queued_events > self.max_queue and self.queue:
            _, dropped = self.queue.popleft()
            self.queued_events -= len(dropped)
            self.stats["dropped_events"] += len(dropped)

    async def step(self) -> None:
        """Drain the queue, update features, score what changed, publish and store."""
        users: set[str] = set()
        products: set[str] = set()
        newest = 0
        deadline = time.perf_counter() + self.DUTY * self.settings.score_interval_s
        while self.queue and time.perf_counter() < deadline:
            stream, events = self.queue.popleft()
            self.queued_events -= len(events)
            self.stats["events"] += len(events)
            changed_users, changed_products = self.features.update(stream, events)
            if stream == "product" and self.embedder is not None:
                self.embedder.offer(events)
            users |= changed_users
            products |= changed_products
            newest = max(newest, max(e.ts_ms for e in events))
        for scorer in self.scorers.values():
            if scorer.maybe_reload():
                log.warning("scoring with %s version %s", scorer.name, scorer.version)
        if users:
            await self._score("user", sorted(users), newest)
        if products:
            await self._score("product", sorted(products), newest)
        if self.embedder is not None:
            await self.embedder.step()

    async def _score(self, entity: str, ids: list[str], features_ms: int) -> None:
        scorer = self.scorers[entity]
        users_topic, products_topic = self.settings.score_topics
        topic = users_topic if entity == "user" else products_topic
        for start in range(0, len(ids), self.max_batch):
            chunk = ids[start:start + self.max_batch]
            matrix = (self.features.user_matrix(chunk, features_ms) if entity == "user"
                      else self.features.product_matrix(chunk, features_ms))
            began = time.perf_counter()
            scores = await asyncio.to_thread(scorer.score, matrix)
            elapsed = time.perf_counter() - began
            self.stats["batches"] += 1
            self.stats["score_seconds"] += elapsed
            self.stats["scored_users" if entity == "user" else "scored_products"] += len(chunk)
            await self._deliver(entity, topic, chunk, np.asarray(scores), features_ms, elapsed, scorer)

    async def _deliver(self, entity: str, topic: str, ids: list[str], scores: np.ndarray, features_ms: int,
                       elapsed: float, scorer: Any) -> None:
        now = dt.datetime.now(dt.UTC)
        features_at = dt.datetime.fromtimestamp(features_ms / 1000, dt.UTC)
        features_iso, scored_iso = iso_utc(features_at), iso_utc(now)
        messages = [(id_.encode(), orjson.dumps({
            "id": id_, "entity": entity, "score": round(float(score), 6), "model": scorer.name,
            "model_version": scorer.version, "features_ts": features_iso, "scored_at": scored_iso,
        })) for id_, score in zip(ids, scores, strict=True)]
        await self.publish(topic, messages)
        n = len(ids)
        table = pa.table({
            "topic_prefix": pa.repeat(pa.scalar(self.settings.topic_dot_prefix), n),
            "entity": pa.repeat(pa.scalar(entity), n), "id": pa.array(ids, pa.string()),
            "score": pa.array(scores.astype(np.float32)), "model": pa.repeat(pa.scalar(scorer.name), n),
            "model_version": pa.repeat(pa.scalar(str(scorer.version)), n),
            "features_ts": pa.repeat(pa.scalar(features_at, pa.timestamp("ms", tz="UTC")), n),
            "scored_at": pa.repeat(pa.scalar(now, pa.timestamp("ms", tz="UTC")), n),
            "latency_ms": pa.repeat(pa.scalar(elapsed * 1000, pa.float32()), n),
            "device": pa.repeat(pa.scalar(scorer.device), n),
        })
        await asyncio.to_thread(self.store.insert_arrow, "scores", table)
