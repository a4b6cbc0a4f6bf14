"""The stocktake on the shared real data: numbers computed independently from
the CSVs here equal what the pipeline stored and the inventory reports."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from stocktake import sources
from stocktake.services import inventory
from stocktake.sources import DATA_DIR
from stocktake.tools import replay
from tests.pipeline_helpers import retopic, run_pipeline

pytestmark = pytest.mark.integration


def _csv(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_rees46_completeness_and_catalog_match_the_csv(broker, store, make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings()
    rows = _csv(DATA_DIR / "rees46" / "2019-Oct-sample.csv.gz")
    messages = retopic(list(replay.to_messages(sources.load_events("rees46"), envelope=50)),
                       settings.topic_prefix)
    run_pipeline(broker, store, settings, messages)
    doc = inventory.build(store, settings)

    fields = {(f["stream"], f["field"]): f for f in doc["fields"]}
    blank_category = sum(1 for r in rows if not r["category_code"])
    blank_brand = sum(1 for r in rows if not r["brand"])
    assert fields[("behaviour", "category_code")]["completeness"] == round(1 - blank_category / len(rows), 4)
    assert fields[("behaviour", "category_code")]["types"] == {"string": len(rows) - blank_category,
                                                               "null": blank_category}
    assert fields[("behaviour", "brand")]["completeness"] == round(1 - blank_brand / len(rows), 4)
    assert fields[("behaviour", "event_id")]["contract"] is True
    assert fields[("behaviour", "category_code")]["contract"] is False
    assert all(f["sensitive"] is None for f in doc["fields"])  # nothing personal in this data

    entities = _by(doc["entities"], "entity")
    assert entities["users"]["distinct"] == len({r["user_id"] for r in rows})
    products = entities["products"]
    assert products["catalog"] == len({r["product_id"] for r in rows})
    assert products["orphans"] == 0  # every product is announced before it is referenced
    last_row = {}
    for r in rows:  # the catalog keeps each product's latest attributes
        last_row[r["product_id"]] = r
    assert products["without_category"] == sum(1 for r in last_row.values() if not r["category_code"])
    assert products["without_brand"] == sum(1 for r in last_row.values() if not r["brand"])
    assert entities["orders"]["amount_mismatch"] == 0

    behaviour = _by(doc["assets"], "asset")["behaviour"]
    assert behaviour["valid"] == len(rows)
    q = behaviour["quality"]
    assert 0 <= q["score"] <= 100 and set(q["components"]) == set(q["weights"])
    assert any("category_code" in line for line in q["explain"])  # the real gap is named


def test_olist_orphans_match_the_csv(broker, store, make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings()
    orders = {r["order_id"] for r in _csv(DATA_DIR / "olist" / "olist_orders_dataset.csv.gz")}
    items = [r for r in _csv(DATA_DIR / "olist" / "olist_order_items_dataset.csv.gz")
             if r["order_id"] in orders]
    catalog = {r["product_id"] for r in _csv(DATA_DIR / "olist" / "olist_products_dataset.csv.gz")}
    orphans = {r["product_id"] for r in items} - catalog
    assert orphans, "the shipped olist slice is known to reference unknown products"

    messages = retopic(list(replay.to_messages(sources.load_events("olist"), envelope=20)),
                       settings.topic_prefix)
    run_pipeline(broker, store, settings, messages)
    doc = inventory.build(store, settings)
    products = _by(doc["entities"], "entity")["products"]
    assert products["orphans"] == len(orphans)
    assert {e["product_id"] for e in products["orphan_examples"]} <= orphans
    # Two transaction events per order item (created + final status), each naming the product.
    orphan_items = sum(1 for r in items if r["product_id"] in orphans)
    assert products["orphan_events"] == {"transaction": 2 * orphan_items}
    transaction = _by(doc["assets"], "asset")["transaction"]
    assert transaction["quality"]["components"]["consistency"] < 1.0
    assert any("consistency" in line for line in transaction["quality"]["explain"])


def test_drift_appears_when_a_field_is_added_or_changes_type(broker, store, make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings(drift_grace_s=60)
    t0 = 1_700_000_000_000
    events = []
    for i in range(300):  # one event every 2 s of event time: 10 minutes
        event: dict[str, Any] = {"event_id": f"d{i}", "event_type": "view", "user_id": i % 7,
                                 "product_id": "p1", "ts": t0 + 2000 * i, "source": "app",
                                 "price": 10.5}
        if i >= 150:                       # 5 minutes in: a new field and a type change
            event["coupon"] = "SPRING"
            event["price"] = "10.50"       # price now arrives as a string
        events.append(sources.ReplayEvent("behaviour", str(i % 7), event))
    messages = [replay.Message(settings.topic("behaviour"), e.key.encode() if e.key else None,
                               orjson.dumps(e.event), 1, "event") for e in events]
    run_pipeline(broker, store, settings, messages)
    drift = inventory.build(store, settings)["drift"]
    found = {(d["field"], d["kind"]) for d in drift}
    assert ("coupon", "new_field") in found
    assert ("price", "type_change") in found
    price = next(d for d in drift if d["field"] == "price")
    assert price["type"] == "string" and price["at"].startswith("2023-11-14T22:18")
    assert not any(d["field"] in ("event_id", "user_id", "ts") for d in drift)
