"""A worker taking over alerting resolves stored alerts that no longer breach; what the
detectors read on takeover and every tick comes from the rollups and bounded slices of
raw events, whatever the size of the store."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from stocktake.processors.alerts import Alert
from stocktake.processors.announced import AnnouncedProducts
from stocktake.processors.arrivals import EventGroup, closed_minutes
from stocktake.processors.gaps import GapMonitor
from stocktake.services.alerting import AlertRunner, alert_row, insert_by_name
from stocktake.services.alerts import list_alerts


def test_takeover_resolves_stale_open_alerts(store, make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings()
    prefix = settings.topic_dot_prefix
    opened = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    opened_ms = int(opened.timestamp() * 1000)
    stale = Alert("stale-1", "behaviour", "volume_spike", "", "warning", "firing", "event", opened_ms, None,
                  "400 events/min, expected about 60", 60.0, 400.0, opened_ms, opened_ms, {}, 3)
    insert_by_name(store, "alerts", [alert_row(stale, prefix, opened)])
    published: list[dict[str, Any]] = []

    async def publish(messages: list[dict[str, Any]]) -> None:
        published.extend(messages)

    runner = AlertRunner(settings, store, GapMonitor(), publish)
    emitted = asyncio.run(runner.take_over(wall_now_ms=int(opened.timestamp() * 1000) + 60_000))
    assert [(a.alert_id, a.state, a.version) for a in emitted] == [("stale-1", "resolved", 4)]
    assert published and published[0]["state"] == "resolved" and published[0]["resolved_at"].endswith("Z")
    (alert,) = list_alerts(store, settings)
    assert (alert["alert_id"], alert["state"], alert["version"]) == ("stale-1", "resolved", 4)
    assert list_alerts(store, settings, open_only=True) == []


# -- what the detectors read: rollups, and bounded slices of raw events ------------------------

GRANULE = 8192
STEP_MS = 100                            # ingest (and event) time between consecutive events
HISTORY = 8 * GRANULE                    # events per stream: about 1.8 hours of each
BASE = dt.datetime(2070, 7, 7, tzinfo=dt.UTC)   # far from every other test's times
# Partition 976: no other test's; the rows stay together in ingest_log's order (stream,
# partition, offset) when merges join other tests' parts (at partition 0 they may interleave).

_HISTORY_SQL = """
INSERT INTO ingest_log (stream, topic, partition, offset, idx, status, kind, source, product_id, ts, ingest_ts,
                        payload)
SELECT {stream:String}, {topic:String}, 976, number, 0, 'valid', {kind:String}, {source:String},
       concat('p', toString(number % {products:UInt32})),
       {base:DateTime64(3, 'UTC')} + toIntervalMillisecond(number * {step:UInt32} - 1000),
       {base:DateTime64(3, 'UTC')} + toIntervalMillisecond(number * {step:UInt32}), {payload:String}
FROM numbers({n:UInt64})
"""


def test_detector_queries_read_rollups_and_a_bounded_slice_of_a_big_store(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Behaviour names products p0..p6, the catalog announces p0..p3: each query answers the
    exact counts while reading at most a few granules of the 16 stored, however many there are."""
    from stocktake.clickhouse import alert_queries as A
    settings = make_settings()
    common = {"base": BASE, "step": STEP_MS, "n": HISTORY}
    store.command(_HISTORY_SQL, {**common, "stream": "behaviour", "topic": settings.topic("behaviour"),
                                 "kind": "view", "source": "web", "products": 7, "payload": '{"a":1,"b":null}'})
    store.command(_HISTORY_SQL, {**common, "stream": "product", "topic": settings.topic("product"),
                                 "kind": "upsert", "source": "", "products": 4, "payload": '{"price":1}'})
    start = BASE + dt.timedelta(minutes=50)
    m = int(start.timestamp() * 1000)
    window = {"prefix": settings.topic_dot_prefix, "from": start, "to": start + dt.timedelta(minutes=1)}
    in_minute = range(30_010, 30_610)   # the event numbers whose time (1 s before ingest) falls in it
    orphans = sum(1 for k in in_minute if k % 7 >= 4)

    def bounded(sql: str, **params: object) -> list[tuple[object, ...]]:
        return sorted(store.rows(f"{sql} SETTINGS max_rows_to_read = {5 * GRANULE}", {**window, **params}))

    behaviour = ["behaviour", "behaviour/event_type=view", "behaviour/source=web"]
    assert bounded(A.MINUTES_SQL) == [(a, m, 600, 600) for a in behaviour] + [
        (a, m, 600, 0) for a in ("product", "product/op=upsert")]
    # orphans: the minute's references (its raw slice) against the catalog, all of it (a
    # takeover) or the rows ingested in a window
    catalog = AnnouncedProducts()
    catalog.add(h for h, in bounded(A.CATALOG_SQL))
    assert len(catalog) == 4
    minutes = closed_minutes((EventGroup(*row) for row in bounded(A.MINUTE_EVENTS_SQL)), catalog)
    assert sorted((a, c.orphan_refs) for (a, _), c in minutes.items()) == [(a, orphans) for a in behaviour] + [
        ("product", 0), ("product/op=upsert", 0)]
    # the raw events count what the minute rollup counts (the worker reads either)
    assert sorted((a, mm, c.events, c.product_refs) for (a, mm), c in minutes.items()) == bounded(A.MINUTES_SQL)
    last_ingest = BASE + dt.timedelta(milliseconds=(HISTORY - 1) * STEP_MS)
    late = {"since": last_ingest - dt.timedelta(milliseconds=1), "until": last_ingest}
    assert len(bounded(A.NEW_CATALOG_SQL, **late)) == 1   # the last catalog event, ingested in it
    assert bounded(A.FIELD_MINUTES_SQL) == [("behaviour", m, "a", 600), ("behaviour", m, "b", 0),
                                            ("product", m, "price", 600)]
    first_ms, last_ms = int(BASE.timestamp() * 1000) - 1000, int(BASE.timestamp() * 1000) + (HISTORY - 1) * STEP_MS
    assert bounded(A.EVENT_SPAN_SQL) == [(first_ms, last_ms - 1000, 2 * HISTORY)]
    assets = [*behaviour, "product", "product/op=upsert"]
    assert bounded(A.ASSET_ACTIVITY_SQL) == [(a, last_ms - 1000, last_ms, first_ms) for a in assets]
    # ten minutes with events: nine gaps of a minute each, five of them sampled
    gaps = bounded(A.MINUTE_GAPS_SQL, sample=5, to=start + dt.timedelta(minutes=10))
    assert gaps == [(a, 9, [60_000] * 5, m) for a in assets]


def test_takeover_reads_a_bounded_window_and_still_judges_a_sparse_asset(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Two days of behaviour, an event every 5 minutes, then two hours of catalog events alone,
    all ingested a year before the takeover: the first look reads no window of raw events by
    ingest time (nothing was ingested within LOOK_LIMIT_S of it), yet the rollups give behaviour
    its last-seen time and a cadence (5-minute gaps), so its silence on the event clock fires as
    it would have."""
    settings = make_settings()
    t0 = dt.datetime(2069, 1, 1, tzinfo=dt.UTC)
    columns = ["stream", "topic", "partition", "offset", "status", "kind", "source", "ts", "ingest_ts", "payload"]
    rows: list[list[Any]] = []
    for stream, minutes in (("behaviour", range(0, 2 * 24 * 60, 5)), ("product", range(0, 2 * 24 * 60 + 120, 5))):
        for i, minute in enumerate(minutes):
            ts = t0 + dt.timedelta(minutes=minute, seconds=17)
            rows.append([stream, settings.topic(stream), 0, i, "valid", "view" if stream == "behaviour" else "upsert",
                         "app", ts, ts + dt.timedelta(seconds=1), '{"a":1}'])
    store.insert_rows("ingest_log", rows, columns)

    async def publish(messages: list[dict[str, Any]]) -> None:
        pass

    runner = AlertRunner(settings, store, GapMonitor(), publish)
    windows: list[tuple[dt.datetime, dt.datetime]] = []
    query = runner._q

    def recording(sql: str, **params: Any) -> list[tuple[Any, ...]]:
        if "since" in params:
            windows.append((params["since"], params["until"]))
        return query(sql, **params)

    runner._q = recording  # type: ignore[method-assign]
    wall_now = t0 + dt.timedelta(days=365)
    emitted = asyncio.run(runner.take_over(wall_now_ms=int(wall_now.timestamp() * 1000)))
    assert windows == []
    fired = {(a.asset, a.clock) for a in emitted if a.kind == "silence" and a.state == "firing"}
    assert ("behaviour", "event") in fired and ("product", "event") not in fired
    assert runner.monitor.state("behaviour").p99_gap_ms() == pytest.approx(300_000, rel=0.12)
