"""`stocktake bench --inventory`: what reading the inventory costs as history grows —
inventory, report, every Grafana panel's and gap detector's SQL, store size, and ingest
with and without a client reading the inventory every second. The "before" numbers of
continuous inventory (#11).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import resource
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from stocktake import sources
from stocktake.clickhouse import rollups
from stocktake.settings import Settings
from stocktake.streams.discovery import auth_headers
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay
from stocktake.tools.bench import beside

if TYPE_CHECKING:
    from stocktake.clickhouse.store import Store

# -- `stocktake bench --inventory`: the read side, and ingest with and without rollups (#11) ------
#
# One run against one embedded Tansu and one chDB store, both fresh:
#   A. produce the REES46 replay multiplied to N events (fresh ids, shifted times per copy) to
#      the three streams in envelopes, start one worker (gap alerting on, HTTP API on), time the
#      ingest with no reader; then, with that worker still running and holding the store: the
#      store size, `inventory --json` and the report over the worker's HTTP API (as the CLI asks
#      it), and every Grafana panel's and gap detector's SQL on the worker's store in-process;
#   B. stop it, empty the store, ingest the same events under another topic prefix while a
#      client thread GETs /api/inventory once a second;
#   N. empty the store, detach the rollups' views (the store as it was before continuous
#      inventory), ingest the same events under a third prefix: the cost of the rollups.

ID_FIELDS = ("event_id", "user_id", "product_id", "session_id", "order_id")
READ_EVERY_S = 1.0
HTTP_TIMEOUT_S = 600.0
TRACE_EVERY_S = 10.0


def copy_period_s(base: list[sources.ReplayEvent]) -> float:
    """Event time between the starts of two copies: the base's span rounded up to whole
    minutes, plus one quiet minute, so copies never overlap."""
    times = [t for t in (sources.ts_seconds(e.event.get("ts")) for e in base) if t is not None]
    span = max(times) - min(times) if times else 0.0
    return (math.floor(span / 60) + 2) * 60.0


def multiply(base: list[sources.ReplayEvent], n: int, end_s: float) -> Iterator[sources.ReplayEvent]:
    """``n`` events from copies of ``base`` (in its order, all streams interleaved). Copy k
    suffixes every id with ``~k`` (events, users, products, sessions, orders: distinct counts grow
    with N as with real data, and each copy's catalog announces its own products) and moves its
    times ``copy_period_s`` after copy k-1's; the last copy ends at ``end_s``. The last copy may
    be cut short. Missing ids and unreadable times are kept as they are."""
    if n <= 0 or not base:
        return
    times = [sources.ts_seconds(e.event.get("ts")) for e in base]
    known = [t for t in times if t is not None]
    last = max(known) if known else 0.0
    copies = -(-n // len(base))
    period = copy_period_s(base)
    produced = 0
    for k in range(copies):
        shift = end_s - last - (copies - 1 - k) * period
        for event, t in zip(base, times, strict=True):
            if produced == n:
                return
            body = dict(event.event)
            for name in ID_FIELDS:
                value = body.get(name)
                if value is not None:
                    body[name] = f"{value}~{k}"
            if t is not None:
                stamp = dt.datetime.fromtimestamp(t + shift, dt.UTC).isoformat(timespec="milliseconds")
                body["ts"] = stamp.replace("+00:00", "Z")
            yield sources.make_event(event.stream, body)
            produced += 1


def deployments(settings: Settings) -> tuple[Settings, Settings, Settings]:
    """The three phases' deployments (A, B, N), each with its own topics and consumer group
    named after the configured ones (bench.beside)."""
    plain, read, bare = (beside(settings, name) for name in ("bench", "benchr", "benchn"))
    return plain, read, bare


def _to_topics(messages: Iterable[replay.Message], settings: list[Settings]) -> Iterator[replay.Message]:
    """Each message (on the default ``replay.TOPICS``) once per deployment, on that deployment's
    topic of the message's stream."""
    streams = {topic: stream for stream, topic in replay.TOPICS.items()}
    topics = [replay.stream_topics(s) for s in settings]
    for message in messages:
        for mine in topics:
            yield message._replace(topic=mine[streams[message.topic]])


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _get(http: Any, url: str) -> Any:
    response = http.request("GET", url)
    if response.status >= 400:
        raise RuntimeError(f"GET {url}: HTTP {response.status} {response.data[:200]!r}")
    return orjson.loads(response.data)


class _Reader(threading.Thread):
    """A client reading the inventory once a second (the next read starts at once when one
    takes longer): the reads' latencies."""

    def __init__(self, url: str, token: str, every_s: float = READ_EVERY_S):
        super().__init__(name="bench-inventory-reader", daemon=True)
        import urllib3
        self.http = urllib3.PoolManager(timeout=HTTP_TIMEOUT_S, retries=False,
                                        headers=auth_headers({"token": token}))
        self.url, self.every_s = url, every_s
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        due = time.monotonic()
        while not self.stopping.is_set():
            try:
                seconds, _ = _timed(lambda: _get(self.http, self.url))
                self.latencies.append(seconds)
            except Exception as exc:  # reported, never fatal to the bench
                self.errors.append(str(exc))
            due = max(due + self.every_s, time.monotonic())
            self.stopping.wait(due - time.monotonic())


async def _ingest(sink: Any, settings: Settings, expected_rows: int, reader_url: str | None,
                  token: str = "", stall_s: float = 60.0) -> dict[str, Any]:
    """Wait for the group to own its partitions, then time the ingest of ``expected_rows``
    (until they are inserted, or nothing was inserted for ``stall_s``)."""
    await wait_until_assigned([sink], settings.partitions, timeout=120)
    reader = _Reader(reader_url + "/api/inventory", token) if reader_url else None
    started = last_change = time.perf_counter()
    if reader is not None:
        reader.start()
    rows = 0
    trace: list[tuple[float, int]] = []      # (seconds, rows inserted) every TRACE_EVERY_S
    try:
        while sink.stats.rows_inserted < expected_rows:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            if now - started >= len(trace) * TRACE_EVERY_S:
                trace.append((round(now - started, 1), sink.stats.rows_inserted))
            if sink.stats.rows_inserted != rows:
                rows, last_change = sink.stats.rows_inserted, now
            elif now - last_change > stall_s:
                break
        done = sink.stats.rows_inserted >= expected_rows
        elapsed = (time.perf_counter() if done else last_change) - started
    finally:
        if reader is not None:
            reader.stopping.set()
            await asyncio.to_thread(reader.join)
    rows = sink.stats.rows_inserted
    out: dict[str, Any] = {"events": rows, "complete": rows >= expected_rows, "seconds": round(elapsed, 3),
                           "events_per_s": round(rows / elapsed) if elapsed > 0 else 0,
                           "insert_seconds": round(sink.stats.insert_seconds, 3),
                           "rows_every_10s": trace}
    if reader is not None:
        lat = reader.latencies
        out["reader"] = {"reads": len(lat), "errors": len(reader.errors),
                         "first_error": next(iter(reader.errors), None),
                         "median_s": round(statistics.median(lat), 3) if lat else None,
                         "max_s": round(max(lat), 3) if lat else None}
    return out


def _store_size(store: Store, data_dir: Path, events: int) -> dict[str, Any]:
    """Bytes on disk: everything, and the rollups alone (what stays once the raw events are
    past their retention)."""
    on_disk = _dir_bytes(data_dir / "chdb")
    (active, log_bytes, parts, rollup_bytes), = store.rows(
        "SELECT sum(bytes_on_disk), sumIf(bytes_on_disk, table = 'ingest_log'), countIf(table = 'ingest_log'), "
        "sumIf(bytes_on_disk, table IN {rollups:Array(String)}) "
        "FROM system.parts WHERE active AND database = currentDatabase()", {"rollups": list(rollups.targets())})
    per_million = 1e6 / events if events else 0.0
    return {"dir_bytes": on_disk, "active_parts_bytes": int(active), "ingest_log_bytes": int(log_bytes),
            "ingest_log_parts": int(parts), "rollup_bytes": int(rollup_bytes),
            "dir_bytes_per_million_events": round(on_disk * per_million),
            "active_parts_bytes_per_million_events": round(int(active) * per_million),
            "rollup_bytes_per_million_events": round(int(rollup_bytes) * per_million)}


def _empty(store: Store) -> None:
    """Each phase starts from an empty store, as the first did."""
    for table in ("ingest_log", *rollups.targets()):
        store.command(f"TRUNCATE TABLE {table}")


@contextlib.contextmanager
def _without_rollups(store: Store) -> Iterator[None]:
    """The store as it was before continuous inventory: no view runs on insert."""
    names = [v.name for v in rollups.log_views()]
    for name in names:
        store.command(f"DETACH TABLE {name}")
    try:
        yield
    finally:
        for name in names:
            store.command(f"ATTACH TABLE {name}")


def panel_queries(store: Store, prefix: str) -> Iterator[tuple[str, str]]:
    """(name, SQL) of every dashboard's variable queries and panels, expanded as Grafana would
    on first load: default variables, the dashboard's default span ending at the newest data."""
    from stocktake.grafana import dashboards as D
    from stocktake.grafana import macros as M
    from stocktake.grafana import preview as P
    built = D.build_all()
    for spec in D.DASHBOARDS:
        d = built[spec.filename]
        variables = M.dashboard_variables(d, {"prefix": prefix})
        tr = P.time_range_for(store, spec, d, prefix)
        for var in d.get("templating", {}).get("list", []):
            if var.get("type") == "query" and isinstance(var.get("query"), str):
                yield f"{spec.uid} · ${var['name']}", M.render(var["query"], variables, tr)
        for panel in spec.panels:
            yield f"{spec.uid} · {panel.title}", M.render(panel.sql, variables, tr)


def detector_queries(store: Store, settings: Settings) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(name, SQL, params) of each gap-detector query (stocktake/services/alerting.py), with the
    windows a running worker uses — a tick's look (the last gap interval of ingest time), a
    closed minute — and at takeover (the first look, the 3-day backfill of minutes)."""
    from stocktake.clickhouse import alert_queries as A
    from stocktake.services.alerting import BACKFILL_MINUTES, GAP_SAMPLE, LOOK_LIMIT_S
    prefix = settings.topic_dot_prefix
    (newest_ingest, newest_ts), = store.rows(
        "SELECT max(ingest_max), max(valid_ts_max) FROM partition_rollup WHERE startsWith(topic, {prefix:String})",
        {"prefix": prefix})
    utc = dt.UTC

    def aware(t: dt.datetime) -> dt.datetime:
        return t if t.tzinfo else t.replace(tzinfo=utc)

    newest_ingest, newest_ts = aware(newest_ingest), aware(newest_ts)
    tick = {"since": newest_ingest - dt.timedelta(seconds=settings.gap_interval_s), "until": newest_ingest}
    first_look = {"since": newest_ingest - dt.timedelta(seconds=LOOK_LIMIT_S), "until": newest_ingest}
    minute_end = newest_ts.replace(second=0, microsecond=0)
    minute = {"from": minute_end - dt.timedelta(minutes=1), "to": minute_end}
    backfill = {"from": minute_end - dt.timedelta(minutes=BACKFILL_MINUTES), "to": minute_end}
    yield "PARTITIONS_SQL · tick (watermark)", A.PARTITIONS_SQL, {"prefix": prefix}
    yield "ASSET_ACTIVITY_SQL · tick", A.ASSET_ACTIVITY_SQL, {"prefix": prefix}
    every_asset = [asset for asset, *_ in store.rows(A.ASSET_ACTIVITY_SQL, {"prefix": prefix})]
    for name, window in (("cold start", tick), ("takeover (first look)", first_look)):
        yield f"GAPS_SQL · {name}, every asset", A.GAPS_SQL, {
            "prefix": prefix, **window, "sample": GAP_SAMPLE, "assets": every_asset}
    yield "NEW_CATALOG_SQL · closed minute", A.NEW_CATALOG_SQL, {"prefix": prefix, **tick}
    yield "MINUTE_EVENTS_SQL · closed minute", A.MINUTE_EVENTS_SQL, {"prefix": prefix, **minute}
    for name, sql in (("MINUTES_SQL", A.MINUTES_SQL), ("FIELD_MINUTES_SQL", A.FIELD_MINUTES_SQL)):
        yield f"{name} · closed minute", sql, {"prefix": prefix, **minute}
        yield f"{name} · takeover backfill", sql, {"prefix": prefix, **backfill}
    yield "CATALOG_SQL · takeover", A.CATALOG_SQL, {"prefix": prefix}
    yield "MINUTE_GAPS_SQL · takeover", A.MINUTE_GAPS_SQL, {"prefix": prefix, **backfill, "sample": GAP_SAMPLE}
    yield "EVENT_SPAN_SQL · takeover", A.EVENT_SPAN_SQL, {"prefix": prefix}
    yield "OPEN_ALERTS_SQL · takeover", A.OPEN_ALERTS_SQL, {"prefix": prefix}


def _measure_reads(runtime: Runtime, settings: Settings, repeat: int = 3) -> dict[str, Any]:
    """Blocking (run in a thread while the worker's loop goes on)."""
    import urllib3

    from stocktake import report as html
    from stocktake.services import inventory
    assert runtime.store is not None and runtime.http_url is not None
    store, url = runtime.store, runtime.http_url
    http = urllib3.PoolManager(timeout=HTTP_TIMEOUT_S, retries=False,
                               headers=auth_headers({"token": runtime.api_token}))
    out: dict[str, Any] = {"inventory_via": "worker HTTP API (GET /api/inventory, /api/report-data)",
                           "sql_via": "in-process on the worker's store (the store's lock shared with it)"}
    inv = [_timed(lambda: _get(http, url + "/api/inventory"))[0] for _ in range(repeat)]
    out["inventory_s"] = {"runs": [round(s, 3) for s in inv], "median": round(statistics.median(inv), 3)}
    data_s, data = _timed(lambda: _get(http, url + "/api/report-data"))
    render_s, page = _timed(lambda: html.render(data))
    out["report_s"] = {"data": round(data_s, 3), "render": round(render_s, 3), "total": round(data_s + render_s, 3),
                       "html_bytes": len(page.encode())}
    panels: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for name, sql in panel_queries(store, settings.topic_dot_prefix):
        started = time.perf_counter()
        try:
            _, rows = store.query(sql)
        except Exception as exc:
            errors.append({"panel": name, "error": str(exc)[:300]})
            continue
        panels.append({"panel": name, "s": round(time.perf_counter() - started, 4), "rows": len(rows)})
    out["panels"] = {"count": len(panels) + len(errors), "errors": errors,
                     "total_s": round(sum(p["s"] for p in panels), 3),
                     "slowest": sorted(panels, key=lambda p: -float(p["s"]))[:5], "all": panels}
    detectors = []
    for name, sql, params in detector_queries(store, settings):
        started = time.perf_counter()
        n_rows = len(store.rows(sql, params))
        detectors.append({"query": name, "s": round(time.perf_counter() - started, 4), "rows": n_rows})
    seconds, drift = _timed(lambda: inventory.schema_drift(store, settings))
    detectors.append({"query": "schema_drift (ASSETS_SQL + FIELDS_SQL) · every 12 ticks",
                      "s": round(seconds, 4), "rows": len(drift)})
    out["detectors"] = detectors
    return out


async def _phase(runtime: Runtime, settings: Settings, events: int, *, reader: bool,
                 measure: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    runtime.settings = settings
    app, sink = await runtime.start_worker(web=True)
    try:
        out = await _ingest(sink, settings, events, runtime.http_url if reader else None, runtime.api_token)
        if measure is not None:
            out["measured"] = await asyncio.to_thread(measure)
    finally:
        await runtime.stop_worker(app, sink)
    return out


def run_inventory(events: int = 1_000_000, envelope: int = 100, scoring: bool | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The inventory read benchmark (see above). ``scoring`` None: the settings' default."""
    say = progress or (lambda _text: None)
    load_start = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "inventory", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load_start]},
        "events": events, "envelope": envelope,
    }
    base = sources.load_events("rees46")
    # The detectors' transitions on a replayed history are thousands of lines: not shown here.
    alert_log = logging.getLogger("stocktake.alerting")
    alert_level = alert_log.level
    alert_log.setLevel(logging.ERROR)
    try:
        return _run_inventory(report, base, events, envelope, scoring, say)
    finally:
        alert_log.setLevel(alert_level)


def _run_inventory(report: dict[str, Any], base: list[sources.ReplayEvent], events: int, envelope: int,
                   scoring: bool | None, say: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stocktake-bench-inventory-") as tmp:
        data_dir = Path(tmp)
        settings = Settings.from_env(data_dir=data_dir)
        if scoring is not None:
            settings = settings.model_copy(update={"scoring": scoring})
        plain, read, bare = deployments(settings)
        report.update(partitions=settings.partitions, scoring=settings.scoring, gap_alerting=True,
                      copy_period_s=copy_period_s(base), base_events=len(base))
        runtime = Runtime(plain)
        try:
            runtime.open()
            for other in (read, bare):
                runtime.settings = other
                runtime.open_topics()
            say(f"producing {events:,} events ×3 deployments")
            mix: Counter[str] = Counter()

            def counted(stream: Iterable[sources.ReplayEvent]) -> Iterator[sources.ReplayEvent]:
                for e in stream:
                    mix[e.stream] += 1
                    yield e

            messages = replay.to_messages(counted(multiply(base, events, time.time())), envelope=envelope)
            produced = replay.produce(runtime.bootstrap, _to_topics(messages, [plain, read, bare]))
            report["stream_mix"] = dict(mix)
            report["messages_per_deployment"] = produced["messages"] // 3
            say("A: ingest with no reader, then reads on the worker's store")
            sizes: dict[str, Any] = {}

            def measure() -> dict[str, Any]:
                assert runtime.store is not None
                sizes.update(_store_size(runtime.store, data_dir, events))
                say("A: reads")
                return _measure_reads(runtime, plain)

            a = asyncio.run(_phase(runtime, plain, events, reader=False, measure=measure))
            say(f"A: {a['events_per_s']:,} events/s; inventory {a['measured']['inventory_s']['median']} s")
            report["store"] = sizes
            report.update(a.pop("measured"))
            assert runtime.store is not None
            _empty(runtime.store)
            say("B: ingest while a client reads the inventory every second")
            b = asyncio.run(_phase(runtime, read, events, reader=True))
            say(f"B: {b['events_per_s']:,} events/s")
            _empty(runtime.store)
            say("N: ingest with no rollups (the store before continuous inventory), no reader")
            with _without_rollups(runtime.store):
                n = asyncio.run(_phase(runtime, bare, events, reader=False))
            say(f"N: {n['events_per_s']:,} events/s")
        finally:
            runtime.close()

    def ratio(x: dict[str, Any], y: dict[str, Any]) -> float | None:
        return round(x["events_per_s"] / y["events_per_s"], 3) if y["events_per_s"] else None

    report["ingest"] = {"no_reader": a, "reader_every_1s": b, "no_rollups": n, "ratio": ratio(b, a),
                        "rollups_ratio": ratio(a, n)}
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return report


def print_inventory_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    n = report["events"]
    ingest = report["ingest"]
    store = report["store"]
    table = Table(title=f"stocktake bench --inventory · {n:,} events · envelopes of {report['envelope']} · "
                        f"{report['partitions']} partitions · scoring {'on' if report['scoring'] else 'off'} · "
                        f"{report['date']} · load {report['machine']['loadavg_at_start'][0]} → "
                        f"{report['machine']['loadavg_at_end'][0]} · max RSS {report['max_rss_mib']} MiB")
    table.add_column("measure")
    table.add_column("value", justify="right")
    inv = report["inventory_s"]
    table.add_row("inventory --json (worker API), median of 3",
                  f"{inv['median']:.2f} s  ({', '.join(f'{s:.2f}' for s in inv['runs'])})")
    rep = report["report_s"]
    table.add_row("report: data (worker API) + render",
                  f"{rep['data']:.2f} + {rep['render']:.2f} = {rep['total']:.2f} s")
    panels = report["panels"]
    table.add_row(f"Grafana SQL: {panels['count']} queries, total", f"{panels['total_s']:.2f} s"
                  + (f"  ({len(panels['errors'])} failed)" if panels["errors"] else ""))
    for p in panels["slowest"]:
        table.add_row(f"  {p['panel']}", f"{p['s']:.3f} s")
    for e in panels["errors"]:
        table.add_row(f"  {e['panel']}", "failed")
    for d in report["detectors"]:
        table.add_row(f"detector {d['query']}", f"{d['s']:.3f} s")
    table.add_row("store on disk (DATA_DIR/chdb) per 1M events",
                  f"{store['dir_bytes_per_million_events'] / 2**20:,.1f} MiB "
                  f"(active parts {store['active_parts_bytes_per_million_events'] / 2**20:,.1f} MiB)")
    table.add_row("rollups alone per 1M events (the store once raw events are past retention)",
                  f"{store['rollup_bytes_per_million_events'] / 2**20:,.1f} MiB")
    a, b = ingest["no_reader"], ingest["reader_every_1s"]
    table.add_row("ingest, no reader", f"{a['events_per_s']:,} ev/s")
    reader = b.get("reader") or {}
    table.add_row(f"ingest, inventory read every 1 s ({reader.get('reads', 0)} reads, median "
                  f"{reader.get('median_s')} s, max {reader.get('max_s')} s)", f"{b['events_per_s']:,} ev/s")
    table.add_row("ratio (with reader / without)", f"{ingest['ratio']}")
    table.add_row("ingest, no rollups (views detached, no reader)", f"{ingest['no_rollups']['events_per_s']:,} ev/s")
    table.add_row("ratio (rollups / no rollups)", f"{ingest['rollups_ratio']}")
    console.print(table)
