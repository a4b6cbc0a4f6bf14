"""Migration 006: min/max skip indexes on ingest_log's two clocks, so the alerting
worker's per-tick range queries read a few granules, not the whole table.

Uses the session ``store`` and its own uuid topic prefix. The rows are one part
ordered like the sink writes them (times growing with the offset) and dated 2003,
far from every other test's rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store

N = 8 * 8192                     # eight granules at the default index_granularity
STEP_MS = 100                    # ingest time between consecutive rows
BASE = datetime(2003, 3, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def prefix(store: Store) -> str:
    prefix = f"t{uuid.uuid4().hex[:12]}."
    # One INSERT ... SELECT: one part, sorted by offset, so ingest_ts and ts (one
    # second earlier) grow with the sort key as they do per partition in production. A
    # partition no other test uses keeps the rows together in the sort order (stream,
    # partition, offset) when merges join other tests' parts: at partition 0 they came to
    # interleave with other tests' behaviour rows (2 granules + 159 rows read).
    store.command(
        "INSERT INTO ingest_log (stream, topic, partition, offset, idx, status, kind, source, ts, ingest_ts,"
        " payload) SELECT 'behaviour', {t:String}, 978, number, 0, 'valid', 'view', 'web',"
        " {base:DateTime64(3, 'UTC')} + toIntervalMillisecond(number * {step:UInt32} - 1000),"
        " {base:DateTime64(3, 'UTC')} + toIntervalMillisecond(number * {step:UInt32}),"
        " {payload:String} FROM numbers({n:UInt64})",
        {"t": prefix + "behaviour", "base": BASE, "step": STEP_MS, "n": N, "payload": '{"a":1,"b":null}'},
    )
    return prefix


def _estimated_rows(store: Store, sql: str, params: dict[str, Any]) -> int:
    """Rows ingest_log would read for ``sql`` after primary-key and skip-index analysis."""
    return sum(int(r[3]) for r in store.rows("EXPLAIN ESTIMATE " + sql, params) if r[1] == "ingest_log")


def _forcing(sql: str, index: str) -> str:
    """The query, failing with INDEX_NOT_USED unless ``index`` prunes it."""
    return f"{sql.rstrip()} SETTINGS force_data_skipping_indices = '{index}'"


def test_migrate_adds_minmax_indexes_on_both_clocks(store: Store) -> None:
    rows = store.rows(
        "SELECT name, type, expr FROM system.data_skipping_indices"
        " WHERE database = currentDatabase() AND table = 'ingest_log'")
    assert {("ingest_ts_minmax", "minmax", "ingest_ts"), ("ts_minmax", "minmax", "ts")} <= set(rows)


def test_ingest_window_reads_a_granule_not_the_table(store: Store, prefix: str) -> None:
    """The live-edge gaps of assets still learning their cadence: a look's window of ingest time."""
    since, until = BASE + timedelta(seconds=3000), BASE + timedelta(seconds=3002)
    assets = ["behaviour", "behaviour/event_type=view", "behaviour/source=web"]
    params = {"prefix": prefix, "since": since, "until": until, "sample": 100, "assets": assets}
    total = int(store.rows("SELECT count() FROM ingest_log")[0][0])
    read = _estimated_rows(store, A.GAPS_SQL, params)
    assert read * 4 <= N and read < total, (read, N, total)

    gaps = sorted(store.rows(_forcing(A.GAPS_SQL, "ingest_ts_minmax"), params))
    assert [(a, n, sorted(s)) for a, n, s, _ in gaps] == [(a, 19, [STEP_MS] * 19) for a in assets]
    # only the assets asked for
    one = store.rows(A.GAPS_SQL, {**params, "assets": ["behaviour/event_type=view"]})
    assert [a for a, *_ in one] == ["behaviour/event_type=view"]


def test_event_minute_counts_read_no_raw_event(store: Store, prefix: str) -> None:
    """Counts and field presence per closed minute come from the rollups (migration 008)."""
    start = BASE + timedelta(minutes=50)
    params = {"prefix": prefix, "from": start, "to": start + timedelta(minutes=1)}
    assert _estimated_rows(store, A.FIELD_MINUTES_SQL, params) == 0
    assert _estimated_rows(store, A.MINUTES_SQL, params) == 0

    rows = sorted(store.rows(A.FIELD_MINUTES_SQL, params))
    m = int(start.timestamp() * 1000)
    assert rows == [("behaviour", m, "a", 600), ("behaviour", m, "b", 0)]
    minutes = sorted(store.rows(A.MINUTES_SQL, params))
    assert minutes == [(a, m, 600, 0) for a in ("behaviour", "behaviour/event_type=view", "behaviour/source=web")]


def test_a_closed_minutes_events_read_a_granule_or_two_not_the_table(store: Store, prefix: str) -> None:
    """MINUTE_EVENTS_SQL (the times and references of the minutes closing, for their cadence,
    longest gap and orphans) reads the minutes' raw slice: its cost follows the minutes'
    events, not the history."""
    start = BASE + timedelta(minutes=50)
    params = {"prefix": prefix, "from": start, "to": start + timedelta(minutes=1)}
    read = _estimated_rows(store, A.MINUTE_EVENTS_SQL, params)
    assert read > 0 and read * 4 <= N, (read, N)
    (group,) = store.rows(_forcing(A.MINUTE_EVENTS_SQL, "ts_minmax"), params)
    stream, kind_key, kind, source, times, refs = group
    m = int(start.timestamp() * 1000)
    assert (stream, kind_key, kind, source) == ("behaviour", "event_type", "view", "web")
    assert times == [m + STEP_MS * k for k in range(600)]   # 600 events 100 ms apart, in order
    assert refs == [0] * 600                                # none names a product
