"""Catalog findings in the worker (services/catalog.py): fed by the embedder, written to
catalog_findings, rebuilt from product_embeddings after a restart, read by the inventory and drawn
by the report. The session's chDB store; a stand-in encoder (seeded vectors per text), so no torch."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from stocktake.clickhouse.store import Store
from stocktake.processors.catalog import CatalogIndex
from stocktake.processors.contract import Event
from stocktake.services import inventory
from stocktake.services.catalog import EXAMPLES, CatalogService, read_findings
from stocktake.services.embedding import ProductEmbedder, text_hash

T0 = 1_569_888_000_000
DIM = 384


class Encoder:
    """A vector per text: seeded by its first word (the same word: cosine ~0.99), so texts that
    share a first word are near-duplicates and all others are far apart."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            head = np.random.default_rng(text_hash(text.split()[0])).standard_normal(DIM)
            tail = np.random.default_rng(text_hash(text)).standard_normal(DIM)
            v = head / np.linalg.norm(head) + 0.1 * tail / np.linalg.norm(tail)
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32)


class Features:
    def set_embedding(self, product_id: str, vector: np.ndarray) -> None:
        pass


def product(i: int, product_id: str, title: str, category: str | None = "kitchen", brand: str = "") -> Event:
    f = {"event_id": f"p{i}", "product_id": product_id, "op": "upsert", "ts": T0 + i, "source": "t",
         "title": title, "category": category, "brand": brand, "price": 10.0}
    return Event(f"p{i}", "upsert", "t", "", product_id, "", T0 + i, f)


def embedder(settings: Any, store: Store, catalog: CatalogService) -> ProductEmbedder:
    return ProductEmbedder(settings, store, Features(), encoder=Encoder(), catalog=catalog)


def feed(e: ProductEmbedder, events: list[Event]) -> None:
    e.offer(events)
    while e.queued_texts:
        asyncio.run(e.step())
    asyncio.run(e.step())


def catalog_events() -> list[Event]:
    events = [product(1, "k1", "kettle steel large"), product(2, "k2", "kettle steel big"),    # near-identical
              product(3, "k3", "kettle steel large"),                                           # identical to k1
              product(4, "h1", "hose garden 20m", "garden")]
    events += [product(10 + i, f"g{i}", f"item{i} plain", "garden") for i in range(6)]
    return events


def test_the_embedder_feeds_the_catalog_and_a_snapshot_is_written(store: Store, make_settings: Any) -> None:
    settings = make_settings(scoring=True, text_encoder=True)
    catalog = CatalogService(settings, store, load=False, write_interval_s=0)
    e = embedder(settings, store, catalog)
    assert e.stats["catalog"] is catalog.stats
    feed(e, catalog_events())
    assert catalog.index.products == 10 and catalog.stats["snapshots"] == 1
    # the category went to product_embeddings with the text
    rows = store.rows("SELECT product_id, category FROM product_embeddings WHERE topic_prefix = {p:String} "
                      "ORDER BY product_id", {"p": settings.topic_dot_prefix})
    assert dict(rows)["h1"] == "garden" and dict(rows)["k1"] == "kitchen"

    doc = read_findings(store, settings)
    assert doc["status"] == "ok" and (doc["products"], doc["texts"]) == (10, 9)
    dup = doc["likely_duplicates"]
    assert (dup["threshold"], dup["groups"], dup["products"], dup["texts"]) == (0.97, 1, 3, 2)
    (group,) = dup["examples"]
    assert sorted(p["id"] for p in group["products"]) == ["k1", "k2", "k3"]
    assert {p["text"] for p in group["products"]} == {"kettle steel large kitchen", "kettle steel big kitchen"}
    assert 0.97 <= group["similarity"] < 1 and (group["size"], group["texts"]) == (3, 2)
    assert doc == {**catalog.index.findings(), "status": "ok", "updated_at": doc["updated_at"], "evicted": 0,
                   "max_products": settings.catalog_max_products}


def test_a_snapshot_is_written_only_when_the_findings_changed(store: Store, make_settings: Any) -> None:
    settings = make_settings(scoring=True, text_encoder=True)
    catalog = CatalogService(settings, store, load=False, write_interval_s=10)
    rng = np.random.default_rng(1)
    base = rng.standard_normal(DIM).astype(np.float32)
    catalog.add("a", 1, "a", "c", base)
    catalog.add("b", 2, "b", "c", base + 0.01)
    assert catalog.write(now=100.0)
    catalog.add("c", 3, "c", "c", rng.standard_normal(DIM).astype(np.float32))
    assert not catalog.write(now=105.0)                     # too soon
    assert catalog.write(now=111.0)                         # due, and the product count changed
    catalog.add("c", 3, "c", "c", rng.standard_normal(DIM).astype(np.float32))   # unchanged text: no change
    assert not catalog.write(now=130.0)
    assert read_findings(store, settings)["likely_duplicates"]["groups"] == 1
    with catalog.lock:
        catalog.index.remove("b")                           # the group goes: its example row must go too
    assert catalog.write(now=140.0)
    doc = read_findings(store, settings)
    assert doc["products"] == 2
    assert doc["likely_duplicates"]["groups"] == 0 and doc["likely_duplicates"]["examples"] == []


def test_the_index_is_rebuilt_from_product_embeddings_after_a_restart(store: Store, make_settings: Any) -> None:
    settings = make_settings(scoring=True, text_encoder=True, catalog_min_category=3)
    first = CatalogService(settings, store, load=False, write_interval_s=0)
    e = embedder(settings, store, first)
    events = catalog_events()
    feed(e, events)
    feed(e, [product(50, "k2", "hose garden 20m", "garden")])     # k2's text changed (to h1's): the newest counts
    before = first.index.findings()
    dup = before["likely_duplicates"]
    assert (dup["groups"], dup["products"]) == (2, 4) and before["category_mismatch"]["judged"] > 0

    restarted = CatalogService(settings, store, write_interval_s=0)   # loads in its thread
    assert restarted.loaded.wait(30) and restarted.stats["state"] == "ready"
    assert restarted.stats["loaded"] == 10 and "load_error" not in restarted.stats
    assert restarted.index.text_of("k2") == "hose garden 20m"
    after = restarted.index.findings()
    for key in ("products", "texts", "likely_duplicates", "indistinct_text"):
        assert after[key] == before[key], key
    assert after["category_mismatch"]["judged"] == before["category_mismatch"]["judged"]
    # another deployment's embeddings are not this one's
    other = CatalogService(make_settings(scoring=True, text_encoder=True), store)
    assert other.loaded.wait(30) and other.index.products == 0


def test_products_the_stream_brings_during_the_rebuild_win(store: Store, make_settings: Any) -> None:
    settings = make_settings(scoring=True, text_encoder=True)
    feed(embedder(settings, store, CatalogService(settings, store, load=False)), [product(1, "a", "old text")])
    catalog = CatalogService(settings, store, load=False)
    catalog.add("a", 7, "new text", "kitchen", Encoder().encode(["new text"])[0])   # from the stream first
    catalog.load()
    assert catalog.index.text_of("a") == "new text"


def test_the_inventory_has_a_catalog_key_in_every_state(store: Store, make_settings: Any) -> None:
    off = inventory.build(store, make_settings(scoring=False))["catalog"]
    assert off["status"].startswith("off: scoring") and off["products"] == 0
    settings = make_settings(scoring=True, text_encoder=True)
    waiting = inventory.build(store, settings)["catalog"]
    assert waiting["status"].startswith("waiting") and waiting["updated_at"] is None
    shape = {"status", "updated_at", "products", "texts", "evicted", "max_products", "likely_duplicates",
             "indistinct_text", "category_mismatch"}
    assert set(waiting) == shape
    assert set(waiting["likely_duplicates"]) == {"threshold", "groups", "texts", "products", "examples"}
    assert set(waiting["indistinct_text"]) == {"threshold", "neighbours", "texts", "products", "examples"}
    assert set(waiting["category_mismatch"]) == {"threshold", "min_category", "categories", "judged", "products",
                                                 "examples"}
    catalog = CatalogService(settings, store, load=False, write_interval_s=0)
    feed(embedder(settings, store, catalog), catalog_events())
    doc = inventory.build(store, settings)["catalog"]
    assert set(doc) == shape and doc["status"] == "ok" and doc["products"] == 10
    assert isinstance(doc["updated_at"], str) and doc["updated_at"].endswith("Z")
    (x,) = doc["likely_duplicates"]["examples"]
    assert set(x) == {"similarity", "texts", "size", "products"} and set(x["products"][0]) == {"id", "text"}


def test_reading_the_findings_reads_one_snapshot(store: Store, make_settings: Any) -> None:
    """A read costs the rows of the newest snapshot, whatever the history: 34 rows."""
    settings = make_settings(scoring=True, text_encoder=True)
    catalog = CatalogService(settings, store, load=False, write_interval_s=0,
                             index=CatalogIndex(min_category=2, examples=EXAMPLES))
    rng = np.random.default_rng(2)
    for i in range(40):
        catalog.add(f"p{i}", i % 25, f"t{i % 25}", f"c{i % 2}", rng.standard_normal(DIM).astype(np.float32))
        catalog.write(now=float(i))
    doc = read_findings(store, settings)
    assert doc["products"] == 40 and len(doc["likely_duplicates"]["examples"]) == EXAMPLES
    assert doc["likely_duplicates"]["groups"] == 15 and doc["likely_duplicates"]["products"] == 30
    from stocktake.services.catalog import READ_SQL
    _, rows = store.query(READ_SQL, {"prefix": settings.topic_dot_prefix})
    assert len(rows) == 1 + 3 * (1 + EXAMPLES)


def test_the_report_shows_the_catalog_findings(store: Store, make_settings: Any) -> None:
    from stocktake import report

    settings = make_settings(scoring=True, text_encoder=True)
    empty = report.render({"inventory": inventory.build(store, settings)})
    section = empty[empty.index("<h2>Catalog</h2>"):]
    assert "waiting: no product text encoded yet" in section[:2000]
    catalog = CatalogService(settings, store, load=False, write_interval_s=0)
    evil = "<script>alert(1)</script> kettle"
    events = [*catalog_events(), product(30, "evil1", evil), product(31, "evil2", evil)]   # a duplicate pair
    feed(embedder(settings, store, catalog), events)
    html = report.render({"inventory": inventory.build(store, settings)})
    section = html[html.index("<h2>Catalog</h2>"):html.index("</section>", html.index("<h2>Catalog</h2>"))]
    assert "kettle steel big kitchen" in section and "k3" in section
    assert "evil2" in section and "<script" not in section and "&lt;script" in section
    for label in ("<h3>Likely duplicates</h3>", "<h3>Indistinct text</h3>", "<h3>Category mismatches</h3>"):
        assert label in section


def test_a_catalog_service_without_embeddings_loads_nothing(store: Store, make_settings: Any) -> None:
    catalog = CatalogService(make_settings(scoring=True, text_encoder=True), store)
    assert catalog.loaded.wait(30) and catalog.stats["loaded"] == 0
    assert catalog.index.products == 0 and catalog.snapshot() is None   # nothing to write
