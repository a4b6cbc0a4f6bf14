"""In-stream scoring in the worker: scores published on the score topics with the
documented JSON, stored in ClickHouse, and the inventory path unaffected."""

from __future__ import annotations

import orjson
import pytest

from stocktake import sources
from stocktake.tools import replay
from tests.pipeline_helpers import expected_counts, read_topic, retopic, run_pipeline, stored_counts

pytestmark = pytest.mark.integration


def test_worker_scores_users_and_products(broker, store, make_settings, tmp_path):  # type: ignore[no-untyped-def]
    settings = make_settings(scoring=True, device="cpu", models_dir=str(tmp_path / "models"),
                             score_interval_s=0.2)
    events = sources.load_events("rees46")[:3000]
    messages = retopic(list(replay.to_messages(events, envelope=20)), settings.topic_prefix)
    run_pipeline(broker, store, settings, messages)
    assert stored_counts(store, settings.topic_prefix) == expected_counts(messages)

    users = {str(e.event["user_id"]) for e in events if e.stream == "behaviour"}
    products = {str(e.event["product_id"]) for e in events if e.stream == "product"}
    rows = store.rows("SELECT entity, uniqExact(id), min(score), max(score), any(model), any(model_version), "
                      "any(device) FROM scores WHERE topic_prefix = {p:String} GROUP BY entity",
                      {"p": settings.topic_dot_prefix})
    by_entity = {r[0]: r[1:] for r in rows}
    assert set(by_entity) == {"user", "product"}
    n_users, low, high, model, version, device = by_entity["user"]
    assert 0 < n_users <= len(users) and 0.0 <= low <= high <= 1.0
    assert model == "user_propensity" and version and device == "cpu"
    assert 0 < by_entity["product"][0] <= len(products | {str(e.event.get("product_id")) for e in events})

    users_topic, products_topic = settings.score_topics
    message = orjson.loads(read_topic(broker.bootstrap, users_topic, settings.partitions, 1, timeout=10)[0].value())
    assert set(message) == {"id", "entity", "score", "model", "model_version", "features_ts", "scored_at"}
    assert message["entity"] == "user" and message["id"] in users and 0.0 <= message["score"] <= 1.0
    assert message["features_ts"].endswith("Z") and message["scored_at"].endswith("Z")
    assert read_topic(broker.bootstrap, products_topic, settings.partitions, 1, timeout=10)
