"""Integration: real Tansu + Faust workers + ClickHouse (chDB or a server)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stocktake import sources
from stocktake.broker import create_topics
from stocktake.services import inventory
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay
from tests.pipeline_helpers import (
    DISCOVERED,
    coordinates_unique,
    doubly_valid,
    expected_counts,
    impressions,
    read_topic,
    retopic,
    run_pipeline,
    stored_counts,
    wait_rows,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rees46_slice() -> list[sources.ReplayEvent]:
    return sources.load_events("rees46")[:6000]


def test_replay_with_faults_counts_exactly(broker, store, make_settings, rees46_slice):  # type: ignore[no-untyped-def]
    settings = make_settings()
    prefix = settings.topic_prefix
    messages = retopic(list(replay.to_messages(
        rees46_slice, faults={"duplicates": 0.03, "malformed": 0.01}, seed=7)), prefix)
    want = expected_counts(messages)
    assert want[("behaviour", "duplicate")] > 0 and want[("behaviour", "invalid")] > 0

    run_pipeline(broker, store, settings, messages)
    time.sleep(1.0)  # nothing more may arrive: the worker has stopped
    assert stored_counts(store, prefix) == want
    rows, distinct = coordinates_unique(store, prefix)
    assert rows == distinct == sum(want.values())

    # Every malformed event is a dead letter with its reason and coordinates, once.
    invalid = sum(n for (_, status), n in want.items() if status == "invalid")
    letters = read_topic(broker.bootstrap, settings.deadletter_topic, settings.partitions, invalid)
    assert len(letters) == invalid
    reasons = set()
    for letter in letters:
        headers = dict(letter.headers())
        reasons.add(headers["stocktake.reason"].decode())
        assert headers["stocktake.topic"].decode().startswith(prefix + ".")
        assert int(headers["stocktake.offset"]) >= 0
    assert reasons <= {"invalid_json", "not_an_object", "invalid_ts", "missing_field:user_id",
                       "missing_field:product_id", "missing_field:order_id"}
    assert len(reasons) >= 3

    # The inventory is scoped to this test's topic prefix in the shared store.
    doc = inventory.build(store, settings)
    assets = {a["asset"]: a for a in doc["assets"]}
    for stream in ("behaviour", "product", "transaction"):
        assert assets[stream]["valid"] == want[(stream, "valid")]
        assert assets[stream]["duplicates"] == want.get((stream, "duplicate"), 0)
        assert assets[stream]["invalid"] == want.get((stream, "invalid"), 0)
    views = sum(1 for e in rees46_slice if e.stream == "behaviour" and e.event["event_type"] == "view")
    assert assets["behaviour/event_type=view"]["valid"] == views


def test_rebalance_mid_stream_loses_nothing_and_counts_once(broker, store, make_settings, rees46_slice):  # type: ignore[no-untyped-def]
    """A second worker joins mid-stream, then leaves; two Faust apps in one
    process (one consumer group) share the one chDB store."""
    settings = make_settings(partitions=4)
    prefix = settings.topic_prefix
    # with a stream no contract names, discovered under the prefix (created before the workers)
    create_topics(broker.bootstrap, {settings.topic(DISCOVERED): 3})
    messages = retopic(list(replay.to_messages(
        rees46_slice + impressions(rees46_slice[:1500]), faults={"duplicates": 0.03, "malformed": 0.01},
        seed=11)), prefix)
    want = expected_counts(messages)
    assert want[(DISCOVERED, "valid")] > 0 and want[(DISCOVERED, "duplicate")] > 0
    total = sum(want.values())

    def produce_paced() -> None:
        # ~12 s of traffic so both rebalances land mid-stream.
        chunk = max(1, len(messages) // 60)
        for i in range(0, len(messages), chunk):
            replay.produce(broker.bootstrap, messages[i:i + chunk])
            time.sleep(0.2)

    async def run() -> tuple[int, int]:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app1, sink1 = await runtime.start_worker()
        topics = runtime.stream_topics()
        try:
            await wait_until_assigned([sink1], settings.partitions, topics=topics)
            producer = threading.Thread(target=produce_paced)
            producer.start()
            await asyncio.sleep(2.0)
            app2, sink2 = await runtime.start_worker()
            deadline = time.monotonic() + 60
            while not (sink1.assigned and sink2.assigned) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert sink1.assigned and sink2.assigned, "second worker never got partitions"
            await asyncio.sleep(3.0)
            stored_mid = sum(stored_counts(store, prefix).values())
            await runtime.stop_worker(app2, sink2)
            await wait_until_assigned([sink1], settings.partitions, topics=topics)
            await asyncio.to_thread(producer.join)
            await wait_rows(store, prefix, total, timeout=120)
            await asyncio.sleep(1.0)
            return sink2.stats.rows_inserted, stored_mid
        finally:
            await runtime.stop_all()

    rows_by_second, stored_mid = asyncio.run(run())
    assert rows_by_second > 0, "the second worker stored nothing: no real rebalance happened"
    assert 0 < stored_mid < total, "the rebalance did not happen mid-stream"
    assert stored_counts(store, prefix) == want, doubly_valid(store, prefix)
    rows, distinct = coordinates_unique(store, prefix)
    assert rows == distinct == total
