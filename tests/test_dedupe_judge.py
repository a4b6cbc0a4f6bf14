"""Tests for processors.dedupe, processors.judge and clickhouse.rows (pure: no broker, no store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake.clickhouse.rows import INGEST_LOG_SCHEMA, ingest_log_table
from stocktake.processors.contract_spec import shipped
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.judge import COLUMNS, Judged, Record, judge_batch, skip_stored

T0 = 1569888000000  # 2019-10-01T00:00:00Z
INGEST_MS = T0 + 3_600_000  # 2019-10-01T01:00:00Z
TOPIC = "stocktake.behaviour"
HOUR_MS = 3_600_000
BEHAVIOUR = shipped()["behaviour"]


def behaviour(**kw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"event_id": "e1", "event_type": "view", "user_id": 42, "product_id": 7,
                          "ts": "2019-10-01T00:00:00Z", "source": "web"}
    ev.update(kw)
    return ev


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# ------------------------------------------------------------------ DedupeWindow


def test_repeat_inside_window_is_duplicate() -> None:
    w = DedupeWindow(window_ms=1000, max_keys=100)
    assert w.is_duplicate("a", 0) is False
    assert w.is_duplicate("a", 500) is True
    assert w.is_duplicate("a", 0) is True  # an earlier time is still the same id
    assert w.is_duplicate("b", 500) is False
    assert len(w) == 2 and "a" in w and "b" in w and "c" not in w
    assert w.newest_ms == 500


def test_expire_forgets_ids_older_than_window_of_newest_ts() -> None:
    w = DedupeWindow(window_ms=1000, max_keys=100)
    w.is_duplicate("old", 0)
    w.is_duplicate("edge", 500)  # exactly window_ms before the newest: kept
    w.is_duplicate("new", 1500)
    assert w.expire() == 1
    assert "old" not in w and "edge" in w and "new" in w
    assert w.expire() == 0  # nothing more to drop
    # A forgotten id is new again; a remembered one is still a duplicate.
    assert w.is_duplicate("old", 1600) is False
    assert w.is_duplicate("edge", 1600) is True


def test_expire_without_new_events_keeps_everything() -> None:
    w = DedupeWindow(window_ms=1000, max_keys=100)
    for i in range(5):
        w.is_duplicate(f"e{i}", 100 * i)
    assert w.expire() == 0
    assert len(w) == 5


def test_max_keys_bounds_len_by_evicting_oldest() -> None:
    w = DedupeWindow(window_ms=10**12, max_keys=3)
    for i, eid in enumerate("abcdef"):
        assert w.is_duplicate(eid, i) is False
        assert len(w) <= 3
    assert len(w) == 3
    assert [e for e in "abcdef" if e in w] == ["d", "e", "f"]
    assert w.is_duplicate("a", 10) is False  # evicted, so new again


@pytest.mark.parametrize("pairs", [
    [("x", 300), ("y", 100), ("z", 200)],
    [("z", 200), ("x", 300), ("y", 100)],
    [("y", 100), ("z", 200), ("x", 300)],
])
def test_load_any_order_then_is_duplicate(pairs: list[tuple[str, int]]) -> None:
    w = DedupeWindow(window_ms=10_000, max_keys=100)
    w.load(pairs)
    assert len(w) == 3
    assert w.newest_ms == 300
    for eid in "xyz":
        assert w.is_duplicate(eid, 400) is True
    assert w.is_duplicate("w", 400) is False


def test_load_drops_pairs_outside_the_window() -> None:
    w = DedupeWindow(window_ms=1000, max_keys=100)
    w.load([("new", 5000), ("ancient", 0), ("edge", 4000)])
    assert "ancient" not in w
    assert "new" in w and "edge" in w
    assert len(w) == 2
    assert w.newest_ms == 5000


def test_load_merges_with_ids_already_seen() -> None:
    w = DedupeWindow(window_ms=1000, max_keys=100)
    w.is_duplicate("live", 4500)
    w.load([("new", 5000), ("live", 4600)])
    assert len(w) == 2
    assert w.is_duplicate("live", 5000) is True
    assert w.is_duplicate("new", 5000) is True


def test_load_beyond_max_keys_keeps_the_newest() -> None:
    w = DedupeWindow(window_ms=10**12, max_keys=3)
    w.load([(f"e{i}", i) for i in (4, 0, 3, 1, 2)])
    assert len(w) == 3
    assert [f"e{i}" in w for i in range(5)] == [False, False, True, True, True]


ids = st.sampled_from("abcdefg")
deltas = st.integers(min_value=0, max_value=5_000)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(ids, deltas), max_size=60), cut=st.integers(0, 60))
def test_rebuild_from_store_gives_the_same_verdicts(steps: list[tuple[str, int]], cut: int) -> None:
    """Processing a sequence in one go == first half, rebuild by load() from what was
    accepted (what ClickHouse would return), then the second half."""
    ts = T0
    events = []
    for eid, delta in steps:
        ts += delta
        events.append((eid, ts))
    big = 10**12  # nothing expires

    whole = DedupeWindow(big, 10**6)
    verdicts = [whole.is_duplicate(eid, t) for eid, t in events]
    whole.expire()
    assert verdicts.count(False) == len({eid for eid, _ in events})

    cut = min(cut, len(events))
    first = DedupeWindow(big, 10**6)
    first_verdicts = [first.is_duplicate(eid, t) for eid, t in events[:cut]]
    first.expire()
    accepted = [p for p, dup in zip(events[:cut], first_verdicts, strict=True) if not dup]
    rebuilt = DedupeWindow(big, 10**6)
    rebuilt.load(reversed(accepted))  # the store returns ts DESC
    second_verdicts = [rebuilt.is_duplicate(eid, t) for eid, t in events[cut:]]
    assert first_verdicts + second_verdicts == verdicts


# ------------------------------------------------------------------ judge_batch


E1 = behaviour(event_id="e1")
E2 = behaviour(event_id="e2", event_type="cart", ts=T0 + 1000)
E3 = behaviour(event_id="e3", event_type="search", query="kettle", product_id=None, ts=T0 + 2000)
E4 = behaviour(event_id="e4", source="app", ts=T0 + 3000)
E5_NO_USER = {k: v for k, v in behaviour(event_id="e5", ts=T0 + 4000).items() if k != "user_id"}
BAD_LINE = b'{"event_id": "e9", "event_type":'
NDJSON = dumps(E2) + b"\n" + BAD_LINE + b"\r\n" + dumps(E3) + b"\n"
ARRAY = dumps([E4, E5_NO_USER])

BATCH = [
    Record(10, b"k10", dumps(E1)),
    Record(11, b"k11", dumps(E1)),          # same event again
    Record(12, None, b"{not json"),
    Record(13, b"k13", NDJSON),              # valid, bad line, valid
    Record(14, b"k14", ARRAY),               # valid, missing user_id
]


def judge(records: list[Record], window: DedupeWindow | None = None) -> Judged:
    if window is None:  # not `or`: an empty window is falsy (it has __len__)
        window = DedupeWindow(HOUR_MS, 1000)
    return judge_batch(BEHAVIOUR, TOPIC, 3, records, window, INGEST_MS)


def test_judge_batch_columns_per_row() -> None:
    j = judge(BATCH)
    cols = j.columns
    assert set(cols) == set(COLUMNS)
    assert {name: len(cols[name]) for name in COLUMNS} == {name: 8 for name in COLUMNS}
    assert cols["offset"] == [10, 11, 12, 13, 13, 13, 14, 14]
    assert cols["idx"] == [0, 0, 0, 0, 1, 2, 0, 1]
    assert cols["status"] == ["valid", "duplicate", "invalid", "valid", "invalid", "valid",
                              "valid", "invalid"]
    assert cols["reason"] == ["", "duplicate_event_id", "invalid_json", "", "invalid_json", "",
                              "", "missing_field:user_id"]
    assert cols["event_id"] == ["e1", "e1", "", "e2", "", "e3", "e4", "e5"]
    assert cols["kind"] == ["view", "view", "", "cart", "", "search", "view", "view"]
    assert cols["source"] == ["web", "web", "", "web", "", "web", "app", "web"]
    assert cols["user_id"] == ["42", "42", "", "42", "", "42", "42", ""]
    assert cols["product_id"] == ["7", "7", "", "7", "", "", "7", ""]
    assert cols["order_id"] == [""] * 8
    # Event time as epoch ms; ingest time where no event time could be read.
    assert cols["ts"] == [T0, T0, INGEST_MS, T0 + 1000, INGEST_MS, T0 + 2000, T0 + 3000, T0 + 4000]
    assert cols["stream"] == ["behaviour"] * 8
    assert cols["topic"] == [TOPIC] * 8
    assert cols["partition"] == [3] * 8
    assert cols["ingest_ts"] == [INGEST_MS] * 8
    assert all(isinstance(p, bytes) for p in cols["payload"])
    # What each row was judged under; no event of this batch breached a `warn` rule.
    assert cols["contract_version"] == ["1"] * 8
    assert cols["kind_key"] == ["event_type"] * 8
    assert cols["warnings"] == [()] * 8


def test_judge_batch_warned_events_are_valid_with_their_codes() -> None:
    no_product = {k: v for k, v in behaviour(event_id="w1").items() if k != "product_id"}
    no_query = behaviour(event_id="w2", event_type="search", product_id=None)
    j = judge([Record(0, None, dumps([no_product, no_query, E1]))])
    assert j.columns["status"] == ["valid"] * 3 and j.dead_letters == []
    assert j.columns["warnings"] == [("missing_field:product_id@product_events_name_the_product",),
                                     ("missing_field:query@searches_carry_the_query",), ()]
    assert [e.warnings for e in j.valid] == j.columns["warnings"]
    assert ingest_log_table(j.columns).column("warnings").to_pylist() == [
        ["missing_field:product_id@product_events_name_the_product"],
        ["missing_field:query@searches_carry_the_query"], []]


def test_judge_batch_payloads() -> None:
    payload = judge(BATCH).columns["payload"]
    # Valid and duplicate rows store the normalized event; invalid rows their own bytes.
    assert orjson.loads(payload[0]) == {**E1, "user_id": "42", "product_id": "7",
                                        "ts": "2019-10-01T00:00:00.000Z"}
    assert payload[1] == payload[0]
    assert payload[2] == b"{not json"
    assert payload[4] == BAD_LINE
    assert orjson.loads(payload[5])["event_id"] == "e3"
    assert orjson.loads(payload[7]) == E5_NO_USER


def test_judge_batch_counts_valid_and_last_offset() -> None:
    j = judge(BATCH)
    assert j.counts == {"valid": 4, "duplicate": 1, "invalid": 3}
    assert [e.event_id for e in j.valid] == ["e1", "e2", "e3", "e4"]
    assert j.last_offset == 14


def test_judge_batch_dead_letters_carry_original_bytes_and_coordinates() -> None:
    j = judge(BATCH)
    assert [(dl.key, dl.value) for dl in j.dead_letters] == [
        (None, b"{not json"),
        (b"k13", BAD_LINE),
        (b"k14", dumps(E5_NO_USER)),
    ]
    headers = [dict(dl.headers) for dl in j.dead_letters]
    for h in headers:
        assert set(h) == {"stocktake.reason", "stocktake.detail", "stocktake.topic",
                          "stocktake.partition", "stocktake.offset", "stocktake.index"}
        assert all(isinstance(v, bytes) for v in h.values())
        assert h["stocktake.topic"] == TOPIC.encode()
        assert h["stocktake.partition"] == b"3"
        assert h["stocktake.detail"]
    assert [(h["stocktake.reason"], h["stocktake.offset"], h["stocktake.index"]) for h in headers] == [
        (b"invalid_json", b"12", b"0"),
        (b"invalid_json", b"13", b"1"),
        (b"missing_field:user_id", b"14", b"1"),
    ]


def test_judge_batch_dedupes_against_the_window_across_batches() -> None:
    window = DedupeWindow(HOUR_MS, 1000)
    first = judge([Record(0, None, dumps(E1))], window)
    second = judge([Record(1, None, dumps(E1)), Record(2, None, dumps(E2))], window)
    assert first.counts == {"valid": 1, "duplicate": 0, "invalid": 0}
    assert second.counts == {"valid": 1, "duplicate": 1, "invalid": 0}
    assert second.columns["status"] == ["duplicate", "valid"]


def test_judge_batch_expires_the_window() -> None:
    window = DedupeWindow(HOUR_MS, 1000)
    old = behaviour(event_id="old", ts=T0)
    new = behaviour(event_id="new", ts=T0 + 2 * HOUR_MS)
    judge([Record(0, None, dumps(old)), Record(1, None, dumps(new))], window)
    assert "old" not in window and "new" in window


def test_judge_batch_empty() -> None:
    j = judge([])
    assert j.last_offset == -1
    assert all(j.columns[name] == [] for name in COLUMNS)
    assert j.dead_letters == [] and j.valid == []
    assert j.counts == {"valid": 0, "duplicate": 0, "invalid": 0}


def test_judge_batch_tombstone_is_invalid_empty_message() -> None:
    j = judge([Record(5, b"k", None)])
    assert j.columns["status"] == ["invalid"]
    assert j.columns["reason"] == ["empty_message"]
    assert j.columns["payload"] == [b""]
    assert j.last_offset == 5


# ------------------------------------------------------------------ skip_stored


RECORDS = [Record(o, None, b"{}") for o in (5, 6, 7, 8)]


def test_skip_stored_keeps_everything_without_watermark() -> None:
    assert list(skip_stored(RECORDS, None)) == RECORDS
    assert list(skip_stored([], 3)) == []


@pytest.mark.parametrize(("watermark", "kept"), [
    (-1, [5, 6, 7, 8]),
    (4, [5, 6, 7, 8]),
    (5, [6, 7, 8]),
    (7, [8]),
    (8, []),
    (100, []),
])
def test_skip_stored_drops_offsets_at_or_below_watermark(watermark: int, kept: list[int]) -> None:
    assert [r.offset for r in skip_stored(RECORDS, watermark)] == kept


# ------------------------------------------------------------------ Arrow rows


def test_ingest_log_table_from_judged_columns() -> None:
    j = judge(BATCH)
    table = ingest_log_table(j.columns)
    assert table.schema == INGEST_LOG_SCHEMA
    assert table.num_rows == 8
    assert table.schema.field("offset").type == pa.uint64()
    assert table.schema.field("partition").type == pa.uint32()
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("payload").type == pa.binary()
    assert table.column("ts")[0].as_py() == datetime(2019, 10, 1, tzinfo=UTC)
    assert table.column("ingest_ts")[0].as_py() == datetime(2019, 10, 1, 1, tzinfo=UTC)
    assert table.column("status").to_pylist() == j.columns["status"]
    assert table.column("offset").to_pylist() == j.columns["offset"]
    assert table.column("payload").to_pylist() == j.columns["payload"]
    assert table.column("contract_version").to_pylist() == ["1"] * 8
    assert table.column("kind_key").to_pylist() == ["event_type"] * 8


def test_ingest_log_table_rejects_missing_columns() -> None:
    cols = judge(BATCH).columns
    del cols["payload"]
    with pytest.raises((KeyError, ValueError, pa.ArrowInvalid)):
        ingest_log_table(cols)


def test_fast_partition_does_not_expire_ids_a_lagging_partition_needs() -> None:
    """Regression (seen in the rebalance test): after a reassignment one partition was
    far ahead in event time; expiring against it forgot an original whose duplicate
    sat in a lagging partition."""
    hour = 3_600_000
    w = DedupeWindow(window_ms=hour, max_keys=1000)
    assert w.is_duplicate("original", 1 * hour, partition=1) is False
    w.expire()
    assert w.is_duplicate("far-ahead", 3 * hour, partition=3) is False
    w.expire()
    assert w.newest_ms == 1 * hour  # the low watermark follows the slowest partition
    assert w.is_duplicate("original", 1 * hour, partition=1) is True

    rebuilt = DedupeWindow(window_ms=hour, max_keys=1000)
    rebuilt.load([("original", 1 * hour), ("far-ahead", 3 * hour)], progress={1: 1 * hour, 3: 3 * hour})
    assert "original" in rebuilt
    assert rebuilt.is_duplicate("original", 1 * hour, partition=1) is True
