"""SIGKILL the worker process mid-stream, restart it: nothing lost, nothing twice.

The worker runs as a real `stocktake worker` process (its own chDB store, or
the server named by STOCKTAKE_TEST_CLICKHOUSE); the test talks to it over its
HTTP API on 127.0.0.1, as `stocktake query` does.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import orjson
import pytest

from stocktake import sources
from stocktake.broker import create_topics
from stocktake.tools import replay
from tests.pipeline_helpers import DISCOVERED, expected_counts, impressions, retopic
from tests.worker_helpers import produce_paced, start_worker, wait_assigned, worker_api, worker_env, worker_query

pytestmark = pytest.mark.integration


def test_sigkill_mid_stream_then_restart_is_exact(broker, tmp_path):  # type: ignore[no-untyped-def]
    prefix = f"k{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path / "worker"
    env = worker_env(broker, data_dir, prefix, STOCKTAKE_BATCH_ROWS="200",
                      # First run commits no offsets: after the kill, EVERY stored record comes
                      # back and only the ClickHouse watermark keeps it from being counted twice.
                      STOCKTAKE_COMMIT_OFFSETS="false")
    events = sources.load_events("rees46")[:6000]
    # with a stream no contract names, discovered under the prefix
    create_topics(broker.bootstrap, {f"{prefix}.{DISCOVERED}": 3})
    messages = retopic(list(replay.to_messages(
        events + impressions(events[:1500]), faults={"duplicates": 0.03, "malformed": 0.01}, seed=3)), prefix)
    want = expected_counts(messages)
    assert want[(DISCOVERED, "valid")] > 0
    total = sum(want.values())
    where = f"startsWith(topic, '{prefix}.')"

    first = start_worker(env, tmp_path / "worker1.log")
    try:
        wait_assigned(first, data_dir)
        producer = produce_paced(broker, messages)
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline:
            stored = worker_query(data_dir, f"SELECT count() FROM ingest_log WHERE {where}")[0][0]
            if stored >= total * 0.3:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        producer.join()
        assert 0 < stored < total, f"kill did not land mid-stream ({stored}/{total})"
    finally:
        if first.poll() is None:
            first.kill()

    env["STOCKTAKE_COMMIT_OFFSETS"] = "true"
    second = start_worker(env, tmp_path / "worker2.log")
    try:
        wait_assigned(second, data_dir)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if worker_query(data_dir, f"SELECT count() FROM ingest_log WHERE {where}")[0][0] >= total:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a double insert would land now
        rows = worker_query(data_dir, f"SELECT stream, toString(status), count() FROM ingest_log "
                            f"WHERE {where} GROUP BY stream, status")
        (n, distinct), = worker_query(data_dir, f"SELECT count(), uniqExact(topic, partition, offset, idx) "
                                      f"FROM ingest_log WHERE {where}")
        # What the inventory reads: the rollups the same inserts filled, and their proof.
        rolled = worker_query(data_dir, f"SELECT stream, toString(status), sum(n) FROM asset_rollup "
                              f"WHERE startsWith(topic, '{prefix}.') AND asset = stream GROUP BY stream, status")
        proof = worker_api(data_dir, "/api/reconcile")
        stats = worker_api(data_dir, "/api/stats")["sink"]
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert {(s, st): c for s, st, c in rows} == want
    assert {(s, st): int(c) for s, st, c in rolled} == want
    assert proof["ok"] and proof["differences"] == [], proof["differences"]
    assert n == distinct == total
    assert stats["skipped_stored"] > 0, "the restart never exercised the watermark"
    assert not (tmp_path / "worker" / "worker.json").exists()


def test_scores_after_sigkill_and_restart_equal_those_of_a_scorer_that_never_stopped(  # type: ignore[no-untyped-def]
        broker, store, tmp_path):
    """The worker scores (#15): killed mid-stream with SIGKILL, restarted, it gives every user and
    product the final score one uninterrupted scorer gives the same stored events."""
    from stocktake.models.dataset import stored_event
    from stocktake.services.scoring import ScoringService
    from stocktake.settings import Settings
    from tests.scoring_helpers import final_scores, fold_all, store_valid

    prefix = f"s{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path / "worker"
    env = worker_env(broker, data_dir, prefix, STOCKTAKE_SCORING="true", STOCKTAKE_TEXT_ENCODER="false",
                      STOCKTAKE_DEVICE="cpu", STOCKTAKE_SCORE_INTERVAL="0.2", STOCKTAKE_SCORE_IDLE="1",
                      STOCKTAKE_SCORE_SNAPSHOT_INTERVAL="0.5")
    # single events, produced in event-time order: an envelope of a sparse stream (10 transactions)
    # spans minutes of event time and would arrive late by the design of its producer
    messages = retopic(list(replay.to_messages(sources.load_events("rees46")[:3000], envelope=1)), prefix)
    total = sum(max(m.events, 1) for m in messages)
    where = f"startsWith(topic, '{prefix}.')"

    def scoring() -> dict[str, Any]:
        return dict(worker_api(data_dir, "/api/stats")["scoring"])

    first = start_worker(env, tmp_path / "worker1.log")
    try:
        wait_assigned(first, data_dir)
        producer = produce_paced(broker, messages)
        deadline = time.monotonic() + 60
        folded = 0
        while time.monotonic() < deadline:
            state = scoring()
            folded = state["events"]
            if state["snapshots"] >= 1 and folded >= total * 0.3:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        producer.join()
        assert 0 < folded < total, f"kill did not land mid-stream ({folded}/{total} folded)"
    finally:
        if first.poll() is None:
            first.kill()

    second = start_worker(env, tmp_path / "worker2.log")
    try:
        wait_assigned(second, data_dir)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            (valid,), = worker_query(data_dir, f"SELECT countIf(status = 'valid') FROM ingest_log WHERE {where}")
            state = scoring()
            done = state["restored_events"] + state["events"] + state["unreadable"]
            if valid and sum(worker_query(data_dir, f"SELECT count() FROM ingest_log WHERE {where}")[0]) >= total \
                    and done >= valid and state["order"] and state["order"]["released"] >= state["order"]["read"]:
                break
            time.sleep(0.2)
        time.sleep(1.0)   # the last step's scores stored
        state = scoring()
        got = {(e, i): (float(s), ts) for e, i, s, ts in worker_query(
            data_dir, "SELECT entity, id, argMax(score, (features_ts, scored_at)), toString(max(features_ts)) "
                      f"FROM scores WHERE topic_prefix = '{prefix}.' GROUP BY entity, id")}
        stored = worker_query(data_dir, "SELECT stream, partition, offset, idx, toUnixTimestamp64Milli(ts), payload "
                                  f"FROM ingest_log WHERE {where} AND status = 'valid' ORDER BY stream, partition, "
                                  "offset, idx")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert state["restored_events"] > 0, "the restart did not start from a snapshot"
    assert state["order"]["late"] == 0

    # One scorer that never stopped, over the same stored events (this test's own store).
    reference = Settings.from_env({}, data_dir=tmp_path / "reference", topic_prefix=f"r{prefix}", scoring=True,
                                  text_encoder=False, device="cpu", score_idle_s=0.2,
                                  models_dir=str(tmp_path / "reference-models"), raw_retention_s=0)
    events = [(stream, partition, offset, stored_event(stream, payload, ts), orjson.loads(payload))
              for stream, partition, offset, _, ts, payload in stored]
    store_valid(store, reference, [e for e in events if e[3] is not None])   # type: ignore[misc]
    assert all(e[3] is not None for e in events)

    async def publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        pass

    asyncio.run(fold_all(ScoringService(reference, store, publish), len(stored)))
    want = final_scores(store, reference.topic_dot_prefix)
    assert want and got.keys() == want.keys()
    for key, (score, features_ts) in want.items():
        assert got[key][1] == features_ts, key
        assert got[key][0] == pytest.approx(score, abs=1e-6), key

