"""Catalog findings in the worker (#15): likely duplicates, indistinct text and category
mismatches, kept as the product text encoder attaches vectors.

- ``CatalogService.add`` is the embedder's hook: every product that gets a vector (freshly encoded
  or from the cache) goes into the index (processors/catalog.py), with the category of the product
  event that carried its text.
- ``snapshot()`` runs from the embedder's step (every scoring step): at most every
  ``WRITE_INTERVAL_S`` seconds, and only when the index changed and its findings with it, it turns
  the findings into the rows of one snapshot of ``catalog_findings`` (migration 014).
- At start a thread rebuilds the index from ``product_embeddings``: the newest text of each
  product (of this deployment and encoder), read in pages of ``PAGE`` products, ordered by product
  id. Products the stream brought meanwhile are newer and are kept. No snapshot is written before
  the rebuild is done: until then readers see the one written before the restart.
- ``read_findings`` is the inventory's read: the rows of the newest snapshot (at most 34), turned
  back into the documented ``catalog`` document.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from stocktake.clickhouse.store import Store
from stocktake.processors.catalog import FINDINGS, CatalogIndex
from stocktake.settings import Settings

log = logging.getLogger("stocktake.catalog")

WRITE_INTERVAL_S = 10.0   # at most one snapshot this often
EXAMPLES = 10             # examples kept per finding
PAGE = 5_000              # products read per query while rebuilding

LOAD_SQL = """
SELECT product_id, text_hash, text, category, embedding
FROM product_embeddings
WHERE topic_prefix = {prefix:String} AND encoder = {encoder:String} AND product_id > {after:String}
ORDER BY product_id, encoded_at DESC, ts DESC
LIMIT 1 BY product_id
LIMIT {page:UInt32}
"""

# The newest snapshot of a deployment: its updated_at first (the sort key's prefix bounds both reads).
READ_SQL = """
SELECT finding, rank, threshold, items, products, similarity, product_ids, texts, related, detail, updated_at
FROM catalog_findings
WHERE topic_prefix = {prefix:String}
  AND updated_at = (SELECT max(updated_at) FROM catalog_findings WHERE topic_prefix = {prefix:String})
ORDER BY finding, rank
LIMIT 1 BY finding, rank
"""

_TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([
    ("topic_prefix", pa.string()), ("finding", pa.string()), ("rank", pa.uint16()), ("threshold", pa.float32()),
    ("items", pa.uint64()), ("products", pa.uint64()), ("similarity", pa.float32()),
    ("product_ids", pa.list_(pa.string())), ("texts", pa.list_(pa.string())), ("related", pa.list_(pa.string())),
    ("detail", pa.string()), ("updated_at", _TS),
])


def index_for(settings: Settings) -> CatalogIndex:
    return CatalogIndex(duplicate_similarity=settings.catalog_duplicate_similarity,
                        indistinct_similarity=settings.catalog_indistinct_similarity,
                        indistinct_neighbours=settings.catalog_indistinct_neighbours,
                        mismatch_similarity=settings.catalog_mismatch_similarity,
                        min_category=settings.catalog_min_category,
                        max_products=settings.catalog_max_products, examples=EXAMPLES)


class CatalogService:
    def __init__(self, settings: Settings, store: Store, *, index: CatalogIndex | None = None,
                 encoder: str = "all-MiniLM-L6-v2", write_interval_s: float = WRITE_INTERVAL_S, load: bool = True):
        self.settings, self.store, self.encoder = settings, store, encoder
        self.index = index if index is not None else index_for(settings)
        self.write_interval_s = write_interval_s
        self.lock = threading.Lock()          # the loader thread and the event loop both add
        self.loaded = threading.Event()
        self.stats: dict[str, Any] = {"state": "loading", "loaded": 0, "load_seconds": 0.0, "snapshots": 0,
                                      "index": self.index.stats}
        self._written: dict[str, Any] | None = None
        self._written_version = self.index.version      # an index that never changed writes nothing
        self._last_write = -math.inf
        if load:
            threading.Thread(target=self.load, name="stocktake-catalog-load", daemon=True).start()
        else:
            self._ready()

    def _ready(self) -> None:
        self.stats["state"] = "ready"
        self.loaded.set()

    def add(self, product_id: str, text_hash: int, text: str, category: str, vector: np.ndarray) -> None:
        with self.lock:
            self.index.add(product_id, text_hash, text, category, vector)

    def load(self) -> None:
        """Rebuild the index from product_embeddings (this deployment, this encoder)."""
        began, after, n = time.monotonic(), "", 0
        try:
            while True:
                page = self.store.query_arrow(LOAD_SQL, {"prefix": self.settings.topic_dot_prefix,
                                                         "encoder": self.encoder, "after": after, "page": PAGE})
                if page.num_rows == 0:
                    break
                ids, hashes = page.column("product_id").to_pylist(), page.column("text_hash").to_pylist()
                texts, cats = page.column("text").to_pylist(), page.column("category").to_pylist()
                flat = page.column("embedding").combine_chunks()
                vectors = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                offsets = flat.offsets.to_numpy()
                for i, pid in enumerate(ids):
                    vector = vectors[offsets[i]:offsets[i + 1]]
                    with self.lock:
                        if pid not in self.index:      # not brought by the stream since the start
                            self.index.add(pid, int(hashes[i]), texts[i], cats[i], vector)
                n += len(ids)
                self.stats["loaded"] = n
                after = ids[-1]
            self.stats["load_seconds"] = round(time.monotonic() - began, 3)
            log.info("catalog findings: %d products rebuilt from product_embeddings in %.1fs", n,
                     self.stats["load_seconds"])
        except Exception as exc:   # derived data: the findings go on with what the stream brings
            log.warning("catalog findings: rebuild from product_embeddings failed after %d products: %s", n, exc)
            self.stats["load_error"] = f"{type(exc).__name__}: {exc}"[:300]
        self._ready()

    def snapshot(self, now: float | None = None) -> pa.Table | None:
        """The rows of a new snapshot when one is due and the findings changed; else None."""
        now = time.monotonic() if now is None else now
        if not self.loaded.is_set() or now - self._last_write < self.write_interval_s:
            return None
        with self.lock:
            if self.index.version == self._written_version:
                return None
            version, doc = self.index.version, self.index.findings()
            doc["evicted"] = self.index.stats["evicted"]
            doc["max_products"] = self.index.max_products
        self._written_version = version
        if doc == self._written:
            return None
        self._written, self._last_write = doc, now
        self.stats["snapshots"] += 1
        return snapshot_table(self.settings.topic_dot_prefix, doc, dt.datetime.now(dt.UTC))

    def write(self, now: float | None = None) -> bool:
        """snapshot() and its insert, in one call (tests, tools)."""
        table = self.snapshot(now)
        if table is not None:
            self.store.insert_arrow("catalog_findings", table)
        return table is not None


# -- the rows of a snapshot, and back -------------------------------------------------------------

_EXTRA = {  # rank 0's counts beyond items/products, kept as JSON in `detail`
    "catalog": ("evicted", "max_products"),
    "likely_duplicates": ("texts",),
    "indistinct_text": ("neighbours",),
    "category_mismatch": ("min_category", "categories", "judged"),
}
_COUNTED = {"catalog": ("products", "texts"), "likely_duplicates": ("groups", "products"),
            "indistinct_text": ("texts", "products"), "category_mismatch": ("products", "products")}


def snapshot_table(prefix: str, doc: dict[str, Any], at: dt.datetime) -> pa.Table:
    """One snapshot: per finding its counts (rank 0) and EXAMPLES example ranks (empty when unused)."""
    rows: list[dict[str, Any]] = []

    def row(finding: str, rank: int, **values: Any) -> None:
        rows.append({"topic_prefix": prefix, "finding": finding, "rank": rank, "threshold": 0.0, "items": 0,
                     "products": 0, "similarity": 0.0, "product_ids": [], "texts": [], "related": [],
                     "detail": "", "updated_at": at, **values})

    items, products = _COUNTED["catalog"]
    row("catalog", 0, items=doc[items], products=doc[products],
        detail=orjson.dumps({k: doc.get(k) for k in _EXTRA["catalog"]}).decode())
    for finding in FINDINGS:
        f = doc[finding]
        items, products = _COUNTED[finding]
        row(finding, 0, threshold=f["threshold"], items=f[items], products=f[products],
            detail=orjson.dumps({k: f[k] for k in _EXTRA[finding]}).decode())
        examples = f["examples"][:EXAMPLES]
        for rank in range(1, EXAMPLES + 1):
            if rank > len(examples):
                row(finding, rank)
                continue
            x = examples[rank - 1]
            listed = x["products"]
            values: dict[str, Any] = {"similarity": x["similarity"], "product_ids": [p["id"] for p in listed],
                                      "texts": [p["text"] for p in listed]}
            if finding == "likely_duplicates":
                values.update(items=x["texts"], products=x["size"])
            elif finding == "indistinct_text":
                values.update(items=x["neighbours"], products=x["size"], related=x["like"])
            else:
                values.update(items=1, products=1, detail=x["category"])
            row(finding, rank, **values)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def empty_findings(settings: Settings, status: str) -> dict[str, Any]:
    """The ``catalog`` document with zeros: nothing found (yet), and why."""
    return {
        "status": status, "updated_at": None, "products": 0, "texts": 0, "evicted": 0,
        "max_products": settings.catalog_max_products,
        "likely_duplicates": {"threshold": settings.catalog_duplicate_similarity, "groups": 0, "texts": 0,
                              "products": 0, "examples": []},
        "indistinct_text": {"threshold": settings.catalog_indistinct_similarity,
                            "neighbours": settings.catalog_indistinct_neighbours, "texts": 0, "products": 0,
                            "examples": []},
        "category_mismatch": {"threshold": settings.catalog_mismatch_similarity,
                              "min_category": settings.catalog_min_category, "categories": 0, "judged": 0,
                              "products": 0, "examples": []},
    }


def read_findings(store: Store, settings: Settings) -> dict[str, Any]:
    """The inventory's ``catalog``: the newest snapshot the worker wrote (a bounded read)."""
    if not settings.scoring:
        return empty_findings(settings, "off: scoring is off (STOCKTAKE_SCORING)")
    if not settings.text_encoder:
        return empty_findings(settings, "off: the text encoder is off (STOCKTAKE_TEXT_ENCODER)")
    found = store.rows(READ_SQL, {"prefix": settings.topic_dot_prefix})
    if not found:
        return empty_findings(settings, "waiting: no product text encoded yet")
    doc = empty_findings(settings, "ok")
    for finding, rank, threshold, items, products, similarity, ids, texts, related, detail, updated_at in found:
        if rank == 0:
            extra = orjson.loads(detail) if detail else {}
            a, b = _COUNTED[finding]
            if finding == "catalog":
                doc.update(extra, updated_at=updated_at, **{a: int(items), b: int(products)})
            else:
                doc[finding].update(extra, threshold=round(float(threshold), 4), **{a: int(items), b: int(products)})
            continue
        if not ids:
            continue
        listed = [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]
        example: dict[str, Any] = {"similarity": round(float(similarity), 4)}
        if finding == "likely_duplicates":
            example.update(texts=int(items), size=int(products), products=listed)
        elif finding == "indistinct_text":
            example.update(neighbours=int(items), size=int(products), text=texts[0] if texts else "",
                           like=list(related), products=listed)
        else:
            example.update(category=detail, products=listed)
        doc[finding]["examples"].append(example)
    return doc
