"""In-stream scoring in the worker: scores published on the score topics with the
documented JSON, stored in ClickHouse, and the inventory path unaffected."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from stocktake import sources
from stocktake.services.scoring import ScoringService
from stocktake.tools import replay
from tests.pipeline_helpers import expected_counts, read_topic, retopic, stored_counts
from tests.scoring_helpers import final_scores, fold_all, rees46_events, run_scoring_workers, store_valid

pytestmark = pytest.mark.integration


def test_worker_scores_users_and_products(broker, store, make_settings, tmp_path):  # type: ignore[no-untyped-def]
    settings = make_settings(scoring=True, device="cpu", models_dir=str(tmp_path / "models"),
                             score_interval_s=0.2, score_idle_s=1.5)
    events = sources.load_events("rees46")[:3000]
    produced = list(replay.to_messages(events, envelope=20))
    messages = retopic(produced, settings.topic_prefix)
    scorer = run_scoring_workers(broker, store, settings, messages, workers=1)
    assert stored_counts(store, settings.topic_prefix) == expected_counts(messages)
    assert scorer.merger.stats["late"] == 0

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

    # Two workers share the same input: one of them scores it all, as the one worker did.
    two = make_settings(scoring=True, device="cpu", models_dir=str(tmp_path / "models"),
                        score_interval_s=0.2, score_idle_s=1.5)
    scorer = run_scoring_workers(broker, store, two, retopic(produced, two.topic_prefix), workers=2)
    assert scorer.merger.stats["late"] == 0
    want, got = final_scores(store, settings.topic_dot_prefix), final_scores(store, two.topic_dot_prefix)
    assert got.keys() == want.keys() and len(want) == n_users + by_entity["product"][0]
    for key, (score, features_ts) in want.items():
        assert got[key][1] == features_ts, key
        assert got[key][0] == pytest.approx(score, abs=1e-6), key


# --------------------------------------------------------------------------- restarts, N workers


def test_a_scorer_restarted_from_its_snapshot_scores_as_one_that_never_stopped(store, make_settings, tmp_path):  # type: ignore[no-untyped-def]
    models = str(tmp_path / "models")
    events = rees46_events(3000, partitions=3)
    # cut where event time moves on: a pause in the input, not a late event
    cut = next(i for i in range(len(events) // 2, len(events)) if events[i][3].ts_ms > events[i - 1][3].ts_ms)

    async def uninterrupted() -> dict[tuple[str, str], tuple[float, str]]:
        settings = make_settings(scoring=True, device="cpu", models_dir=models, score_idle_s=0.3)
        store_valid(store, settings, events)
        service = ScoringService(settings, store, _publish)
        await fold_all(service, len(events))
        assert service.merger is not None and service.merger.stats["late"] == 0
        return final_scores(store, settings.topic_dot_prefix)

    async def restarted() -> dict[tuple[str, str], tuple[float, str]]:
        settings = make_settings(scoring=True, device="cpu", models_dir=models, score_idle_s=0.3)
        store_valid(store, settings, events[:cut])
        first = ScoringService(settings, store, _publish)
        await fold_all(first, cut)
        await first.snapshot()
        store_valid(store, settings, events[cut:])
        for _ in range(3):          # some of the rest folded in and scored, then a crash: no snapshot
            await first.step()
        second = ScoringService(settings, store, _publish)
        await fold_all(second, len(events))
        assert second.stats["restored_events"] == cut and second.merger is not None
        assert second.merger.stats["late"] == 0
        return final_scores(store, settings.topic_dot_prefix)

    want = asyncio.run(uninterrupted())
    got = asyncio.run(restarted())
    assert {e for e, _ in want} == {"user", "product"}
    assert got.keys() == want.keys()
    for key, (score, features_ts) in want.items():
        assert got[key][1] == features_ts, key
        assert got[key][0] == pytest.approx(score, abs=1e-6), key


async def _publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    pass
