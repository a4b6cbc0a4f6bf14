"""The worker's product text embeddings (services/embedding.py): the real all-MiniLM-L6-v2
encoder (exported once for the module) and the session's chDB store."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from stocktake.clickhouse.store import Store
from stocktake.models.encoder import TextEncoder, export_text_encoder, product_text
from stocktake.processors.contract import Event
from stocktake.processors.features import FeatureState
from stocktake.services.embedding import ProductEmbedder, text_hash
from stocktake.services.scoring import ScoringService
from tests.scoring_helpers import fold_all, store_valid

T0 = 1_569_888_000_000


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_text_encoder(tmp_path_factory.mktemp("models") / "encoder")


def product(i: int, product_id: str, title: str, category: str = "electronics.smartphone",
            brand: str = "acme") -> Event:
    f = {"event_id": f"p{i}", "product_id": product_id, "op": "upsert", "ts": T0 + i, "source": "t",
         "title": title, "category": category, "brand": brand, "price": 10.0}
    return Event(f"p{i}", "upsert", "t", "", product_id, "", T0 + i, f)


def stored(store: Store, prefix: str) -> list[tuple[Any, ...]]:
    return store.rows("SELECT product_id, text_hash, text, encoder, encoder_version, embedding "
                      "FROM product_embeddings WHERE topic_prefix = {p:String} ORDER BY product_id, encoded_at",
                      {"p": prefix})


def test_texts_are_encoded_once_cached_and_stored(store: Store, make_settings: Any, encoder_path: Path) -> None:
    settings = make_settings()
    encoder = TextEncoder(encoder_path, device="cpu")
    features = FeatureState()
    embedder = ProductEmbedder(settings, store, features, encoder=encoder, batch=2)
    first = [product(1, "a", "Galaxy S10 phone"), product(2, "b", "garden hose 20m", "home.garden", "hoseco"),
             product(3, "c", "Galaxy S10 phone")]              # c: a's text, another product
    features.update("product", first)
    embedder.offer(first)
    assert embedder.queued_texts == 2                           # two texts, three products
    assert asyncio.run(embedder.step()) == 2
    rows = stored(store, settings.topic_dot_prefix)
    assert [r[0] for r in rows] == ["a", "b", "c"]
    want = encoder.encode([product_text(e.fields) for e in first])
    for (pid, h, text, name, version, vector), e, w in zip(rows, first, want, strict=True):
        assert (pid, h, text) == (e.product_id, text_hash(product_text(e.fields)), product_text(e.fields))
        assert name == "all-MiniLM-L6-v2" and version not in ("", "unknown")
        np.testing.assert_allclose(np.asarray(vector), w, atol=1e-5)
        assert features.has_embedding(pid)
    # the same text again: nothing to do; another product with a known text: from the cache
    again = [product(4, "a", "Galaxy S10 phone"), product(5, "d", "garden hose 20m", "home.garden", "hoseco")]
    features.update("product", again)
    embedder.offer(again)
    assert embedder.queued_texts == 0
    assert (embedder.stats["unchanged"], embedder.stats["cache_hits"]) == (1, 1)
    assert asyncio.run(embedder.step()) == 0 and embedder.stats["texts_encoded"] == 2
    assert [r[0] for r in stored(store, settings.topic_dot_prefix)] == ["a", "b", "c", "d"]
    # a changed text is encoded again
    changed = [product(6, "a", "Galaxy S20 phone")]
    features.update("product", changed)
    embedder.offer(changed)
    assert embedder.queued_texts == 1 and asyncio.run(embedder.step()) == 1


def test_waiting_texts_are_bounded_until_the_encoder_is_ready(store: Store, make_settings: Any) -> None:
    embedder = ProductEmbedder(make_settings(), store, FeatureState(), encoder=object(), max_pending=3)
    embedder.encoder = None                                     # not loaded yet
    colours = ["red", "green", "blue", "black", "white"]
    embedder.offer([product(i, f"p{i}", f"kettle {colour}") for i, colour in enumerate(colours)])
    assert embedder.queued_texts == 3 and embedder.stats["pending_dropped"] == 2
    assert asyncio.run(embedder.step()) == 0 and embedder.queued_texts == 3


def test_the_scoring_service_embeds_product_text_in_the_stream(store: Store, make_settings: Any,
                                                                encoder_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(encoder_path.parent, models / "encoder")    # exported already: loading is quick
    settings = make_settings(scoring=True, text_encoder=True, models_dir=str(models), device="cpu",
                             score_idle_s=0.2)

    async def publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        pass

    service = ScoringService(settings, store, publish)
    assert service.embedder is None                             # not the scorer yet: no encoder held
    asyncio.run(service.step())                                 # it leads: becomes the scorer
    assert service.embedder is not None
    deadline = time.monotonic() + 60
    while service.embedder.stats["encoder"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.embedder.stats["encoder"] == "ready"
    name = f"x{uuid.uuid4().hex[:6]}"
    event = product(1, name, "stainless kettle 1.7 l", "appliances.kitchen", "kettleco")
    store_valid(store, settings, [("product", 0, 0, event, event.fields)])
    asyncio.run(fold_all(service, 1))
    assert service.features is not None and service.features.has_embedding(name)
    assert [r[0] for r in stored(store, settings.topic_dot_prefix)] == [name]
    assert service.features.product_matrix([name], T0 + 10)[0].any()
