"""`stocktake bench --looks`: what one look of the alerting worker costs as the history grows.

History is written straight into a fresh embedded store by INSERT ... SELECT from numbers():
the rollups' materialized views fill as they do for the worker's inserts, about five times
faster than ingesting the same events through the broker, which is what makes 50 M events
affordable here. The events are synthetic and in time order, 2,000 a minute (so 50 M span
about 17 days): 85% behaviour (view/cart/purchase/remove_from_cart, web and app), 10%
transactions (created/paid), 5% catalog upserts cycling through 100,000 products; references
name 110,000 products, so about one in eleven is an orphan; one event in 97 is invalid.

At each size the worker's own look (services/alerting.AlertRunner) is timed on the store: a
look with no minute to close (29 of 30 looks at the default 2 s interval) and a look that
closes one minute, each the median of ``REPEAT``, and the write of that minute's expectations
(the baselines table) that follows once its alerts are out; the first look after a takeover,
which judges three hours of minutes, is reported beside them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stocktake.clickhouse.store import Store
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.gaps import GapMonitor
from stocktake.services.alerting import AlertRunner
from stocktake.settings import Settings

PER_MINUTE = 2_000
BASE_MS = 1_704_067_200_000          # 2024-01-01 UTC
CHUNK = 1_000_000                    # events per INSERT ... SELECT
REPEAT = 7
TAKEOVER_MINUTES = 180

_SYNTHESIZE = """
INSERT INTO ingest_log (stream, topic, partition, offset, idx, status, reason, event_id, kind, source, user_id,
                        product_id, order_id, ts, ingest_ts, payload, contract_version, kind_key)
SELECT stream, concat({prefix:String}, stream), toUInt32(i % 4), i, 0, if(i % 97 = 0, 'invalid', 'valid'),
       if(i % 97 = 0, 'missing_field:user_id', ''), toString(i), kind, source, user, product, '', t,
       t + toIntervalMillisecond(300),
       concat('{"event_id":"', toString(i), '","', kind_key, '":"', kind, '","user_id":"', user,
              '","product_id":"', product, '","ts":"', toString(t), '","price":', toString(i % 500), '}'),
       '1', kind_key
FROM (
    SELECT number AS i,
           multiIf(i % 20 < 17, 'behaviour', i % 20 < 19, 'transaction', 'product') AS stream,
           multiIf(stream = 'behaviour',
                   ['view', 'view', 'view', 'view', 'view', 'cart', 'purchase', 'remove_from_cart'][i % 8 + 1],
                   stream = 'transaction', ['created', 'paid'][intDiv(i, 20) % 2 + 1], 'upsert') AS kind,
           multiIf(stream = 'behaviour', 'event_type', stream = 'transaction', 'status', 'op') AS kind_key,
           if(stream = 'behaviour', ['web', 'app'][intDiv(i, 3) % 2 + 1], '') AS source,
           toString(cityHash64(i) % 200000) AS user,
           toString(if(stream = 'product', intDiv(i, 20) % 100000, cityHash64(i, 7) % 110000)) AS product,
           fromUnixTimestamp64Milli(toInt64({base:Int64} + intDiv(i * 60000, {per_minute:UInt32})
                                            + cityHash64(i, 3) % 500), 'UTC') AS t
    FROM numbers({start:UInt64}, {n:UInt64})
)
"""


def synthesize(store: Store, prefix: str, start: int, n: int) -> None:
    """Events ``start`` .. ``start + n - 1`` of the synthetic history."""
    for at in range(start, start + n, CHUNK):
        store.command(_SYNTHESIZE, {"prefix": prefix, "base": BASE_MS, "per_minute": PER_MINUTE, "start": at,
                                    "n": min(CHUNK, start + n - at)})


def _median_ms(samples: Sequence[float]) -> float:
    return round(1000 * statistics.median(samples), 1)


def time_looks(store: Store, settings: Settings, events: int) -> dict[str, Any]:
    """The look of a worker that has judged all but the last ``TAKEOVER_MINUTES`` minutes."""
    async def publish(messages: list[dict[str, Any]]) -> None:
        pass

    runner = AlertRunner(settings, store, GapMonitor(), publish)
    newest_ms = BASE_MS + events * 60_000 // PER_MINUTE
    closed = (newest_ms - int(settings.minute_close_delay_s * 1000)) // MINUTE_MS * MINUTE_MS
    runner.feed.closed_until_ms = runner.feed.first_event_ms = closed - TAKEOVER_MINUTES * MINUTE_MS
    # Wall time past the history's ingest, with every partition idle: the watermark is the newest.
    now = newest_ms + 10 * 60_000
    started = time.perf_counter()
    runner._look(now - 4000, now, None)
    first = time.perf_counter() - started
    plain: list[float] = []
    closing: list[float] = []
    writes: list[float] = []
    for _ in range(REPEAT):
        now += int(settings.gap_interval_s * 1000)
        started = time.perf_counter()
        runner._look(now - 4000, now)
        plain.append(time.perf_counter() - started)
        runner.feed.closed_until_ms = closed - MINUTE_MS     # the last minute closes again
        started = time.perf_counter()
        runner._look(now - 4000, now)
        closing.append(time.perf_counter() - started)
        if runner.feed.closed_until_ms != closed:
            raise RuntimeError("the look did not close the minute it was timed for")
        expectations = len(runner._expectations)
        started = time.perf_counter()   # after the alerts are out: the minute's expectations
        runner._write_expectations()
        writes.append(time.perf_counter() - started)
    return {"events": events, "look_ms": _median_ms(plain), "look_min_ms": round(1000 * min(plain), 1),
            "closing_look_ms": _median_ms(closing), "closing_look_min_ms": round(1000 * min(closing), 1),
            "write_expectations_ms": _median_ms(writes), "expectations_per_minute": expectations,
            f"first_look_{TAKEOVER_MINUTES}_minutes_ms": round(1000 * first)}


def run_looks(sizes: Sequence[int], data_dir: Path | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda text: None)
    with tempfile.TemporaryDirectory(prefix="stocktake-looks-", dir=data_dir) as tmp:
        settings = Settings(topic_prefix="bench", data_dir=Path(tmp), scoring=False)
        store = Store(settings.clickhouse_dsn)
        try:
            store.migrate()
            stored, runs = 0, []
            for size in sorted(sizes):
                started = time.perf_counter()
                synthesize(store, settings.topic_dot_prefix, stored, size - stored)
                say(f"{size:,} events stored ({(size - stored) / (time.perf_counter() - started):,.0f} events/s)")
                stored = size
                runs.append(time_looks(store, settings, size))
                say(f"{size:,} events: look {runs[-1]['look_ms']} ms, closing a minute "
                    f"{runs[-1]['closing_look_ms']} ms")
        finally:
            store.close()
    return {"per_minute": PER_MINUTE, "repeat": REPEAT, "runs": runs}


def print_looks_report(report: dict[str, Any]) -> None:
    print(f"alerting look, median of {report['repeat']}, history at {report['per_minute']:,} events a minute")
    print(f"{'stored events':>14} {'look':>9} {'closing a minute':>17} {'+ expectations':>15} "
          f"{'first look (3 h)':>17}")
    for run in report["runs"]:
        print(f"{run['events']:>14,} {run['look_ms']:>6} ms {run['closing_look_ms']:>14} ms "
              f"{run['write_expectations_ms']:>12} ms {run[f'first_look_{TAKEOVER_MINUTES}_minutes_ms']:>14} ms")
