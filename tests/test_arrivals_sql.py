"""The store's side of event-ordered gap detection: ARRIVALS_SQL computes per asset and
minute what processors/gapfeed.window_arrivals computes for the harness, and the low
watermark holds event time back to the slowest partition that is still moving.

Rows of their own (uuid prefix, partitions no other test uses, dated 2004)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store
from stocktake.processors.gapfeed import window_arrivals
from stocktake.processors.quality import EDGES

BASE_MS = int(datetime(2004, 4, 4, tzinfo=UTC).timestamp() * 1000)


def _insert(store: Store, prefix: str, partition: int, times: list[int], ingest_ms: int,
            source: str = "web") -> None:
    rows = [["behaviour", prefix + "behaviour", partition, n, 0, "valid", "view", source,
             datetime.fromtimestamp(t / 1000, UTC), datetime.fromtimestamp(ingest_ms / 1000, UTC), "{}"]
            for n, t in enumerate(times)]
    store.insert_rows("ingest_log", rows, ["stream", "topic", "partition", "offset", "idx", "status", "kind",
                                           "source", "ts", "ingest_ts", "payload"])


def test_arrivals_sql_is_window_arrivals(store: Store) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}."
    rng = random.Random(5)
    times, t = [], BASE_MS
    for _ in range(3000):   # bursts, ties and a 3-minute hole, over ~40 minutes
        t += rng.choice([0, 0, 7, 250, 900, 1500]) + (180_000 if len(times) == 1500 else 0)
        times.append(t)
    shuffled = times[:]
    rng.shuffle(shuffled)   # stored out of order: the query sorts
    _insert(store, prefix, 975, shuffled, BASE_MS)
    frm, to = BASE_MS + 60_000, BASE_MS + 30 * 60_000
    got: dict[str, dict[int, Any]] = {}
    for asset, m, first, last, (keys, values), longest, longest_from in store.rows(A.ARRIVALS_SQL, {
            "prefix": prefix, "edges": list(EDGES), "from": datetime.fromtimestamp(frm / 1000, UTC),
            "to": datetime.fromtimestamp(to / 1000, UTC)}):
        span = (int(longest_from), int(longest_from) + int(longest)) if keys else None
        got.setdefault(asset, {})[int(m)] = (int(first), int(last),
                                             tuple(zip(map(int, keys), map(int, values), strict=True)), span)
    want = window_arrivals(x for x in times if frm <= x < to)
    assert set(got) == {"behaviour", "behaviour/event_type=view", "behaviour/source=web"}
    assert got["behaviour"] == want and got["behaviour/source=web"] == want
    assert max(s[1] - s[0] for *_, s in want.values() if s) >= 180_000   # the hole is in it


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
