"""Migration 008: the rollups ClickHouse keeps on every insert equal a recount of the raw
events by the queries the inventory used before (the oracle below), on real data; the
rules written in SQL there (the blamed field, the value type) agree with processors/; the
backfill of an existing store and the raw events' retention.

Store tests share the session store (tests/conftest.py) and isolate by topic prefix; the
retention and upgrade tests run in a child process with a store of their own (chDB: one
store per process, and a TTL would reach the other tests' rows).
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stocktake import sources
from stocktake.clickhouse import rollups
from stocktake.clickhouse.queries import late_sql
from stocktake.clickhouse.rows import ingest_log_table
from stocktake.clickhouse.store import Store
from stocktake.processors.contract_spec import shipped
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.judge import Record, judge_batch
from stocktake.processors.quality import bad_field

LATE_S = 300
CONTRACTS = shipped()


def _ingest(store: Store, prefix: str, events: list[sources.ReplayEvent], seed: int = 7) -> None:
    """Judge and store ``events`` as the sink does, in batches of 500 whose ingest time is
    their newest event time plus 0-10 minutes: some late, some not."""
    rng = random.Random(seed)
    by_stream: dict[str, list[bytes]] = {}
    for e in events:
        by_stream.setdefault(e.stream, []).append(orjson.dumps(e.event))
    dedupe = DedupeWindow(3_600_000, 1_000_000)
    for stream, values in by_stream.items():
        for start in range(0, len(values), 500):
            chunk = values[start:start + 500]
            times = [sources.ts_seconds(orjson.loads(v).get("ts")) for v in chunk]
            newest = max((t for t in times if t is not None), default=0.0)
            ingest_ms = int(newest * 1000) + rng.randrange(0, 600_000)
            records = [Record(start + i, None, v) for i, v in enumerate(chunk)]
            judged = judge_batch(CONTRACTS[stream], prefix + stream, 0, records, dedupe, ingest_ms)
            store.insert_arrow("ingest_log", ingest_log_table(judged.columns))


@pytest.fixture(scope="module")
def real(store: Store) -> str:
    """REES46 and Olist, with a few malformed and duplicated events, stored under one prefix."""
    prefix = f"r{uuid.uuid4().hex[:10]}."
    events = sources.load_events("rees46") + sources.load_events("olist")
    broken = [sources.ReplayEvent("behaviour", None, {"event_type": "view"}),        # missing fields
              sources.ReplayEvent("transaction", None, {"order_id": "x", "ts": "yesterday"})]
    _ingest(store, prefix, events + events[:50] + broken)
    return prefix


def _pairs(store: Store, sql: str, prefix: str) -> dict[tuple[Any, ...], Any]:
    return {tuple(r[:-1]): r[-1] for r in store.rows(sql, {"p": prefix})}


# The oracle: how the inventory counted from the raw events before the rollups.
_RAW_ASSETS = f"""
SELECT asset, toString(status), reason,
       (count(), countIf(status = 'valid' AND dateDiff('millisecond', ts, ingest_ts) > {LATE_S * 1000}),
        countIf(stream != 'product' AND product_id != ''), countIf(JSONType(payload) = 'Object'),
        min(ts), max(ts), min(ingest_ts), max(ingest_ts))
FROM prefixed_assets(prefix = {{p:String}}) GROUP BY asset, status, reason
"""
_LATE = late_sql("sumMapIf(lag_s, status = 'valid')", str(LATE_S))
_ROLLUP_ASSETS = f"""
SELECT asset, toString(status), reason,
       (sum(n), {_LATE}, sum(n_refs), sum(n_objects), min(ts_min), max(ts_max), min(ingest_min), max(ingest_max))
FROM asset_rollup WHERE startsWith(topic, {{p:String}}) GROUP BY asset, status, reason
"""


def test_asset_rollups_equal_the_raw_recount(store: Store, real: str) -> None:
    rollup = _pairs(store, _ROLLUP_ASSETS, real)
    raw = _pairs(store, _RAW_ASSETS, real)
    assert rollup == raw
    assert {k[1] for k in raw} == {"valid", "duplicate", "invalid"}
    late = sum(v[1] for v in raw.values())
    assert 0 < late < sum(v[0] for k, v in raw.items() if k[1] == "valid")
    # minutes add up to the all-time rows
    minute = _pairs(store, "SELECT asset, toString(status), reason, sum(n) FROM asset_minute_rollup "
                           "WHERE startsWith(topic, {p:String}) GROUP BY asset, status, reason", real)
    assert minute == {k: v[0] for k, v in raw.items()}


def test_field_rollups_equal_the_raw_recount(store: Store, real: str) -> None:
    json_type = """multiIf(JSONType(kv.2) IN ('Int64', 'UInt64', 'Double'), 'number', JSONType(kv.2) = 'String',
        'string', JSONType(kv.2) = 'Bool', 'boolean', JSONType(kv.2) = 'Null', 'null',
        JSONType(kv.2) = 'Array', 'array', 'object')"""
    raw = _pairs(store, f"""
        SELECT asset, kv.1 AS field, {json_type} AS type, (count(), uniqExact(kv.2), min(ts), max(ts))
        FROM prefixed_assets(prefix = {{p:String}})
        ARRAY JOIN JSONExtractKeysAndValuesRaw(payload) AS kv
        WHERE status != 'duplicate' GROUP BY asset, field, type""", real)
    rollup = _pairs(store, """
        SELECT asset, field, type, (sum(n), uniqCombinedMerge(distinct_values), min(ts_min), max(ts_max))
        FROM field_rollup WHERE startsWith(topic, {p:String}) GROUP BY asset, field, type""", real)
    assert rollup.keys() == raw.keys()
    for key, (n, distinct, first, last) in raw.items():
        got_n, got_distinct, got_first, got_last = rollup[key]
        assert (got_n, got_first, got_last) == (n, first, last), key
        if "/" not in key[0]:  # distinct values are kept for streams, approximately
            assert abs(got_distinct - distinct) <= max(2, 0.02 * distinct), key
    minute = _pairs(store, "SELECT asset, field, type, sum(n) FROM field_minute_rollup "
                           "WHERE startsWith(topic, {p:String}) GROUP BY asset, field, type", real)
    assert minute == {k: v[0] for k, v in raw.items()}


def test_entity_rollups_equal_the_raw_recount(store: Store, real: str) -> None:
    log = "prefixed_log(prefix = {p:String})"
    (users, orders, products, announced), = store.rows(f"""
        SELECT uniqExactIf(user_id, user_id != ''), uniqExactIf(order_id, stream = 'transaction' AND order_id != ''),
               uniqExactIf(product_id, product_id != ''), uniqExactIf(product_id, stream = 'product')
        FROM {log} WHERE status = 'valid'""", {"p": real})
    got = store.rows("""
        SELECT (SELECT count() FROM (SELECT user_id FROM user_rollup WHERE startsWith(topic, {p:String})
                                      GROUP BY user_id)),
               (SELECT count() FROM (SELECT order_id FROM order_rollup WHERE startsWith(topic, {p:String})
                                      GROUP BY order_id)),
               (SELECT count() FROM (SELECT product_id FROM product_rollup WHERE startsWith(topic, {p:String})
                                      GROUP BY product_id)),
               (SELECT count() FROM (SELECT product_id FROM product_rollup WHERE startsWith(topic, {p:String})
                                      GROUP BY product_id HAVING sum(n_catalog) > 0))
        """, {"p": real})
    assert got == [(users, orders, products, announced)]
    assert users > 1000 and orders > 100 and 0 < announced < products
    refs = _pairs(store, f"""SELECT asset, count() FROM prefixed_assets(prefix = {{p:String}})
                            WHERE status = 'valid' AND stream != 'product' AND product_id != ''
                              AND product_id NOT IN (SELECT product_id FROM {log}
                                                     WHERE status = 'valid' AND stream = 'product')
                            GROUP BY asset""", real)
    orphan_refs = _pairs(store, """
        SELECT asset, sum(v) FROM (SELECT sumMap(refs_by_asset) AS m, sum(n_catalog) AS c FROM product_rollup
                                   WHERE startsWith(topic, {p:String}) GROUP BY product_id)
        ARRAY JOIN mapKeys(m) AS asset, mapValues(m) AS v WHERE c = 0 GROUP BY asset""", real)
    assert orphan_refs == refs and refs


def test_partition_rollup_counts_messages_and_offsets(store: Store, real: str) -> None:
    raw = _pairs(store, "SELECT topic, partition, (count(), countIf(idx = 0), min(offset), max(offset)) "
                        "FROM prefixed_log(prefix = {p:String}) GROUP BY topic, partition", real)
    rollup = _pairs(store, "SELECT topic, partition, (sum(n), sum(n_messages), min(offset_min), max(offset_max)) "
                           "FROM partition_rollup WHERE startsWith(topic, {p:String}) GROUP BY topic, partition", real)
    assert rollup == raw and len(raw) == 3
    topic = real + "behaviour"
    assert store.watermarks(topic) == {0: raw[(topic, 0)][3]}


@pytest.mark.parametrize("reason", ["", "invalid_ts", "invalid_type:price", "invalid_value:quantity",
                                    "missing_field:user_id", "not_json", "invalid_type:", "weird:price"])
def test_the_blamed_field_in_sql_is_processors_quality(store: Store, reason: str) -> None:
    prefix = f"b{uuid.uuid4().hex[:10]}."
    now = datetime.now(UTC)
    payload = '{"ts": 1, "price": "x", "quantity": -1, "user_id": null}'
    store.insert_rows("ingest_log", [["behaviour", prefix + "behaviour", "invalid", reason, now, now, payload]],
                      ["stream", "topic", "status", "reason", "ts", "ingest_ts", "payload"])
    blamed = {f for f, in store.rows("SELECT field FROM field_rollup WHERE topic = {t:String} AND n_bad > 0",
                                      {"t": prefix + "behaviour"})}
    assert blamed == ({bad_field(reason)} if bad_field(reason) else set())


def test_value_types_match_the_json_types(store: Store) -> None:
    prefix = f"v{uuid.uuid4().hex[:10]}."
    now = datetime.now(UTC)
    payload = ('{"s": "a", "i": -3, "f": 1.5e3, "z": 0, "t": true, "fa": false, "n": null, "a": [1], '
               '"o": {"k": 1}, "e": ""}')
    store.insert_rows("ingest_log", [["behaviour", prefix + "behaviour", "valid", now, now, payload]],
                      ["stream", "topic", "status", "ts", "ingest_ts", "payload"])
    got = dict(store.rows("SELECT field, type FROM field_rollup WHERE topic = {t:String}", {"t": prefix + "behaviour"}))
    assert got == {"s": "string", "i": "number", "f": "number", "z": "number", "t": "boolean", "fa": "boolean",
                   "n": "null", "a": "array", "o": "object", "e": "string"}


def test_every_rollup_view_reads_ingest_log_or_a_facts_table() -> None:
    names = {v.name for v in rollups.views()}
    assert {v.name for v in rollups.log_views()} < names
    assert "asset_rollup" in rollups.targets() and "asset_facts" not in rollups.targets()
    with pytest.raises(ValueError):
        rollups.View("x", "y", "SELECT 1").over("1")


# -- in a store of their own ---------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, sys, time
    from datetime import UTC, datetime, timedelta
    from stocktake.clickhouse import rollups
    from stocktake.clickhouse.store import Store

    store = Store("chdb://" + sys.argv[1])
    out = {}
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    cols = ["stream", "topic", "partition", "offset", "status", "event_id", "user_id", "ts", "ingest_ts", "payload"]
    def row(p, o, user, at):
        return ["behaviour", "s.behaviour", p, o, "valid", f"{user}-{o}", user, at, at, json.dumps({"user_id": user})]
    rows = [row(0, o, "u1", old) for o in range(5)] + [row(1, o, "u2", now) for o in range(3)]
    if sys.argv[2] == "upgrade":
        # a store written before migration 008: events, no rollups
        store.migrate()
        for name in [v.name for v in rollups.views()] + list(rollups.targets()):
            store.command(f"DROP TABLE IF EXISTS {name}")
        store.command("DROP TABLE IF EXISTS asset_facts")
        store.command("DROP TABLE IF EXISTS field_facts")
        store.command("DELETE FROM schema_migrations WHERE version = 8")
        store.insert_rows("ingest_log", rows, cols)
        seen = []
        out["applied"] = rollups.prepare(store, raw_retention_s=0, progress=lambda d, t: seen.append([d, t]))
        out["progress"] = seen[-1]
        out["again"] = rollups.prepare(store, raw_retention_s=0)
    elif sys.argv[2] == "contracts":
        # a store written before contracts were files (migration 012): no contract columns, no
        # breach rollup, views naming sub-assets by stream
        store.migrate()
        for v in rollups.views():
            store.command(f"DROP VIEW IF EXISTS {v.name}")
        store.command("DROP TABLE breach_rollup")
        for column in ("contract_version", "kind_key", "warnings"):
            store.command(f"ALTER TABLE ingest_log DROP COLUMN {column}")
        store.command("DELETE FROM schema_migrations WHERE version = 12")
        bad = [["behaviour", "s.behaviour", 2, o, "invalid", "missing_field:user_id", "view", now, now, "{}"]
               for o in range(4)]
        store.insert_rows("ingest_log", bad, ["stream", "topic", "partition", "offset", "status", "reason", "kind",
                                              "ts", "ingest_ts", "payload"])
        out["applied"] = rollups.prepare(store, raw_retention_s=0)
        out["again"] = rollups.prepare(store, raw_retention_s=0)
        out["breaches"] = store.rows("SELECT asset, version, severity, rule, field, sum(n) FROM breach_rollup "
                                     "GROUP BY ALL ORDER BY asset")
        new = [[*r[:4], "valid", "", "view", "1", "event_type", ["missing_field:product_id@r"], r[-2], r[-2], "{}"]
               for r in bad]
        store.insert_rows("ingest_log", [[r[0], r[1], 3, *r[3:]] for r in new],
                          ["stream", "topic", "partition", "offset", "status", "reason", "kind", "contract_version",
                           "kind_key", "warnings", "ts", "ingest_ts", "payload"])
        out["warned"] = store.rows("SELECT asset, version, rule, rule_name, sum(n) FROM breach_rollup "
                                   "WHERE severity = 'warn' GROUP BY ALL ORDER BY asset")
        store.insert_rows("ingest_log", rows, cols)
    else:
        rollups.prepare(store, raw_retention_s=7 * 86400)
        store.insert_rows("ingest_log", rows, cols)
        store.command("OPTIMIZE TABLE ingest_log FINAL")
        out["raw"] = store.rows("SELECT partition, count() FROM ingest_log GROUP BY partition ORDER BY partition")
        out["retention"] = store.raw_retention()
        out["watermarks"] = store.watermarks("s.behaviour")
        out["progress"] = store.event_time_progress("s.behaviour", [0, 1])
    out["assets"] = store.rows("SELECT asset, sum(n) FROM asset_rollup GROUP BY asset ORDER BY asset")
    out["users"] = store.rows("SELECT user_id, sum(n) FROM user_rollup GROUP BY user_id ORDER BY user_id")
    print(json.dumps(out, default=str))
""")


def _child(tmp_path: Path, mode: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "chdb"), mode],
                          capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_store_from_before_contract_files_gets_their_columns_views_and_breaches(tmp_path: Path) -> None:
    """Migration 012's step: the contract columns added (old rows get contract v1's sub-asset
    key), every rollup view re-created, breach_rollup filled from the retained events."""
    out = _child(tmp_path, "contracts")
    assert out["applied"] == [12] and out["again"] == []
    old = [["behaviour", "", "reject", "missing_field:user_id", "user_id", 4],
           ["behaviour/event_type=view", "", "reject", "missing_field:user_id", "user_id", 4]]
    assert out["breaches"] == old
    assert out["warned"] == [["behaviour", "1", "missing_field:product_id", "r", 4],
                             ["behaviour/event_type=view", "1", "missing_field:product_id", "r", 4]]
    # the views run again on what comes after (the old rows came while they were away)
    assert out["assets"] == [["behaviour", 12], ["behaviour/event_type=view", 4]]


def test_raw_events_past_retention_go_and_the_inventory_keeps_them(tmp_path: Path) -> None:
    out = _child(tmp_path, "retention")
    assert out["retention"] == 7 * 86400
    assert out["raw"] == [[1, 3]]                    # partition 0's rows were 10 days old
    assert out["watermarks"] == {"0": 4, "1": 2}     # both partitions still know where they are
    assert set(out["progress"]) == {"0", "1"}
    assert out["assets"] == [["behaviour", 8]]
    assert out["users"] == [["u1", 5], ["u2", 3]]


def test_a_store_from_before_the_rollups_is_backfilled_at_start(tmp_path: Path) -> None:
    out = _child(tmp_path, "upgrade")
    assert out["applied"] == [8] and out["again"] == []
    assert out["progress"] == [8, 8]
    assert out["assets"] == [["behaviour", 8]]
    assert out["users"] == [["u1", 5], ["u2", 3]]
