"""The store's side of event-ordered gap detection: MINUTE_EVENTS_SQL and
processors/arrivals.py compute per asset and minute what processors/gapfeed.window_arrivals
computes for the harness, and the low watermark holds event time back to the slowest
partition that is still moving.

Rows of their own (uuid prefix, partitions no other test uses, dated 2004)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store
from stocktake.processors.announced import AnnouncedProducts
from stocktake.processors.arrivals import EventGroup, closed_minutes
from stocktake.processors.gapfeed import window_arrivals

BASE_MS = int(datetime(2004, 4, 4, tzinfo=UTC).timestamp() * 1000)


def _insert(store: Store, prefix: str, partition: int, times: list[int], ingest_ms: int,
            sources: list[str] | None = None, products: list[str] | None = None) -> None:
    rows = [["behaviour", prefix + "behaviour", partition, n, 0, "valid", "view",
             sources[n] if sources else "web", products[n] if products else "",
             datetime.fromtimestamp(t / 1000, UTC), datetime.fromtimestamp(ingest_ms / 1000, UTC), "{}"]
            for n, t in enumerate(times)]
    store.insert_rows("ingest_log", rows, ["stream", "topic", "partition", "offset", "idx", "status", "kind",
                                           "source", "product_id", "ts", "ingest_ts", "payload"])


def test_closed_minutes_from_the_store_are_window_arrivals(store: Store) -> None:
    """Two sources interleaved (the stream asset merges their groups), stored out of order, with
    references to products p0..p4 of which the catalog announced p0..p2."""
    prefix = f"t{uuid.uuid4().hex[:12]}."
    rng = random.Random(5)
    times, t = [], BASE_MS
    for _ in range(3000):   # bursts, ties and a 3-minute hole, over ~40 minutes
        t += rng.choice([0, 0, 7, 250, 900, 1500]) + (180_000 if len(times) == 1500 else 0)
        times.append(t)
    sources = [rng.choice(["web", "app"]) for _ in times]
    products = [rng.choice(["", "p0", "p1", "p2", "p3", "p4"]) for _ in times]
    order = list(range(len(times)))
    rng.shuffle(order)   # stored out of order: the query sorts
    _insert(store, prefix, 975, [times[i] for i in order], BASE_MS, [sources[i] for i in order],
            [products[i] for i in order])
    catalog = AnnouncedProducts()
    catalog.add(h for h, in store.rows("SELECT cityHash64(arrayJoin(['p0', 'p1', 'p2']))"))
    frm, to = BASE_MS + 60_000, BASE_MS + 30 * 60_000
    rows = store.rows(A.MINUTE_EVENTS_SQL, {"prefix": prefix, "from": datetime.fromtimestamp(frm / 1000, UTC),
                                            "to": datetime.fromtimestamp(to / 1000, UTC)})
    got = closed_minutes((EventGroup(*row) for row in rows), catalog)
    assert {a for a, _ in got} == {"behaviour", "behaviour/event_type=view", "behaviour/source=web",
                                   "behaviour/source=app"}
    inside = [i for i, x in enumerate(times) if frm <= x < to]
    for asset, picked in (("behaviour", inside), ("behaviour/event_type=view", inside),
                          ("behaviour/source=web", [i for i in inside if sources[i] == "web"])):
        want = window_arrivals(times[i] for i in picked)
        assert {m: tuple(c[3:]) for (a, m), c in got.items() if a == asset} == want, asset
        orphans: dict[int, int] = {}
        for i in picked:
            m = times[i] - times[i] % 60_000
            orphans[m] = orphans.get(m, 0) + (products[i] in ("p3", "p4"))
        assert {m: c.orphan_refs for (a, m), c in got.items() if a == asset} == orphans, asset
    assert max(s[1] - s[0] for *_, s in window_arrivals(times[i] for i in inside).values() if s) >= 180_000


def test_the_low_watermark_waits_for_the_slow_partition_until_it_idles(store: Store, make_settings) -> None:  # type: ignore[no-untyped-def]
    from stocktake.processors.gaps import GapMonitor
    from stocktake.services.alerting import AlertRunner

    settings = make_settings(watermark_idle_s=30.0)
    prefix = settings.topic_dot_prefix
    now = BASE_MS + 3_600_000
    _insert(store, prefix, 973, [BASE_MS + 50 * 60_000], now)           # fast: 50 minutes in
    _insert(store, prefix, 974, [BASE_MS + 20 * 60_000], now - 5_000)   # slow, still moving

    async def publish(_: list[dict[str, Any]]) -> None:
        pass

    runner = AlertRunner(settings, store, GapMonitor(), publish)
    assert runner._watermark(now) == BASE_MS + 20 * 60_000
    # a minute later the slow one has ingested nothing for 65 s: it no longer holds time back
    assert runner._watermark(now + 60_000) == BASE_MS + 50 * 60_000
