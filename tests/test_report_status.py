"""`stocktake report` (self-contained HTML) and `stocktake status` (terminal view).

Unit tests render from small hand-made documents; the integration test runs the
real commands as subprocesses (this process already holds a chDB store) and
looks at the report in headless Chromium when it is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rich.console import Console

from stocktake import report
from stocktake.console import status
from stocktake.services import summary
from tests.pipeline_helpers import spawn_up, stocktake

EVIL = "<script>alert(1)</script>"


def _quality(score: float, first: str) -> dict[str, Any]:
    """`first` is an explain line; losses holds the same as data, as quality_score writes it."""
    lines = [first, "completeness 0.90: brand present on 60% of events; -2.5 points"]
    losses = [{"component": line.split(" ", 1)[0], "points": float(line.rsplit("-", 1)[1].split()[0]),
               "text": line.rsplit("; -", 1)[0]} for line in lines]
    return {"score": score,
            "components": {"completeness": 0.9, "validity": 0.99, "uniqueness": 0.97, "timeliness": 0.5,
                           "consistency": None},
            "weights": {"completeness": 0.25, "validity": 0.3, "uniqueness": 0.15, "timeliness": 0.15,
                        "consistency": 0.15},
            "explain": lines, "losses": losses}


def _asset(name: str, valid: int, dup: int, invalid: int, score: float, first: str) -> dict[str, Any]:
    return {"asset": name, "kind": "stream" if "/" not in name else name.split("/")[1].split("=")[0],
            "stream": name.split("/")[0], "valid": valid, "duplicates": dup, "invalid": invalid,
            "invalid_by_reason": {"invalid_json": invalid} if invalid else {},
            "last_event_ts": "2019-10-01T02:50:00.000Z", "freshness_s": 12.5, "quality": _quality(score, first)}


def sample() -> dict[str, Any]:
    """A report-data dict shaped like `report_data`'s, small and hostile."""
    doc = {
        "generated_at": "2026-11-22T17:34:03.576Z", "as_of_event_ts": "2019-10-01T02:50:00.000Z",
        "quality_weights": {"completeness": 0.25, "validity": 0.3},
        "assets": [
            _asset("behaviour", 17435, 523, 170, 83.2, "timeliness 0.00: newest event 3 h old; -15.0 points"),
            _asset("behaviour/event_type=view", 17000, 500, 100, 84.0, "timeliness 0.00: late; -15.0 points"),
            _asset("product", 6493, 110, 86, 79.9, f"completeness 0.80: {EVIL} present on 5%; -5.0 points"),
        ],
        "fields": [
            {"stream": "behaviour", "field": "brand", "contract": False, "types": {"string": 10, "null": 5},
             "completeness": 0.6667, "validity": 1.0, "distinct_approx": 4, "sensitive": None,
             "examples": ["samsung", "see https://evil.example/x.js"]},
            {"stream": "product", "field": EVIL, "contract": False, "types": {"string": 3},
             "completeness": 0.05, "validity": 1.0, "distinct_approx": 1, "sensitive": "email",
             "examples": ["a***@***"]},
        ],
        "entities": [
            {"entity": "users", "distinct": 4505},
            {"entity": "products", "distinct": 6493, "catalog": 6400, "orphans": 2,
             "orphan_events": {"behaviour": 7}, "orphan_examples": [{"product_id": EVIL, "references": 5}]},
            {"entity": "orders", "distinct": 211, "amount_checked": 214, "amount_mismatch": 1,
             "amount_mismatch_examples": [{"event_id": "e1", "order_id": "o1", "product_id": "p1",
                                           "quantity": 2, "amount": 10.0, "expected": 20.0}]},
        ],
        "drift": [{"stream": "product", "field": "price", "kind": "type_change", "type": "string",
                   "at": "2019-10-01T01:00:00.000Z", "details": EVIL}],
    }
    minutes = [f"2019-10-01T00:{m:02d}:00.000Z" for m in range(10)]
    return {
        "inventory": doc,
        # the 3 invalid events of 2026 fell outside behaviour's span (report_data sums them)
        "spans": {"behaviour": {"first": minutes[0], "last": minutes[-1], "outside": 3},
                  "product": {"first": minutes[0], "last": minutes[0], "outside": 0}},
        "asset_minute": [{"asset": "behaviour", "minute": m, "events": 12, "valid": 10, "duplicates": 1,
                          "invalid": 1} for m in minutes]
        + [{"asset": "product", "minute": minutes[0], "events": 5, "valid": 5, "duplicates": 0, "invalid": 0}],
        "completeness_minute": [{"stream": "behaviour", "minute": m, "field": f, "present": 10 - i % 3}
                                for i, m in enumerate(minutes) for f in ("brand", "user_id")]
        + [{"stream": "product", "minute": minutes[0], "field": EVIL, "present": 1}],
        "stream_minute": [{"stream": "behaviour", "minute": m, "events": 10} for m in minutes]
        + [{"stream": "product", "minute": minutes[0], "events": 5}],
    }


class _Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.values.extend(v or "" for _, v in attrs)


def test_render_is_self_contained_and_escaped() -> None:
    html = report.render(sample())
    parser = _Attributes()
    parser.feed(html)
    # URLs only as text: no attribute, stylesheet or script fetches anything.
    assert not [v for v in parser.values if re.search(r"https?:|//", v)]
    assert not {"script", "link", "img", "iframe", "object"} & set(parser.tags)
    assert "@import" not in html and "url(" not in html
    assert "see https://evil.example/x.js" in html
    assert "<svg" in html
    # a line chart: the series drawn as one line through its points, its total as the tooltip
    assert re.search(r'<g><title>valid: 100 events</title>\s*<path d="M [\d.]+ [\d.]+\s+L ', html)
    assert EVIL not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4   # field, example, drift, explain
    # the summary rows: stream, events, valid, duplicates, invalid, then the first explain line
    summary = re.search(r'<table class="summary">.*?</table>', html, re.S)
    assert summary
    assert re.search(r"<b>behaviour</b></td><td[^>]*>18,128</td><td[^>]*>17,435</td><td[^>]*>523</td>"
                     r"<td[^>]*>170</td>", summary.group(0))
    assert "timeliness 0.00: newest event 3 h old" in summary.group(0)
    assert "<b>product</b>" in summary.group(0) and "event_type=view" not in summary.group(0)
    assert "3 events outside this event-time span" in html
    for headline in ("distinct users", "orphan products", "amount mismatches", "drift events"):
        assert headline in html


def test_render_with_empty_inventory() -> None:
    html = report.render({"inventory": {"assets": [], "fields": [], "entities": [], "drift": []}})
    assert "no events stored yet" in html and "No dead letters" in html
    assert "No model is registered" in html


def test_report_shows_the_registered_models_and_their_reliability(tmp_path: Path) -> None:
    from stocktake.models.registry import ModelRegistry
    from stocktake.settings import Settings

    settings = Settings.from_env(data_dir=tmp_path)
    assert report.registered_models(settings) == []
    ModelRegistry(settings.model_registry).ensure_defaults()   # the shipped versions, as scoring installs them
    models = report.registered_models(settings)
    assert [m["name"] for m in models] == ["user_propensity", "product_demand"]
    html = report.render({"inventory": {"assets": [], "fields": [], "entities": [], "drift": []}, "models": models})
    section = html[html.index("<h2>Models</h2>"):]
    bins = []
    for m in models:
        cal = m["metrics"]["calibration"]
        assert f"{cal['brier']:.4f} ({cal['brier_base_rate']:.4f})" in section
        assert f"{m['metrics']['model']['roc_auc']:.3f} ({m['metrics']['baseline']['roc_auc']:.3f})" in section
        bins += [(f"{b['predicted']:.3f}", f"{b['observed']:.3f}", f"{b['count']:,}") for b in cal["bins"]]
    # one dot a reliability bin, its numbers in the tooltip
    assert re.findall(r"<title>predicted ([\d.]+), observed ([\d.]+), ([\d,]+) examples</title>", section) == bins
    assert section.count('aria-label="reliability of') == 2


def test_buckets_keep_charts_readable() -> None:
    import datetime as dt
    t0 = dt.datetime(2019, 10, 1, tzinfo=dt.UTC)
    short = report.Buckets((t0, t0 + dt.timedelta(minutes=170)), report.MAX_POINTS)
    assert (short.size, short.count, short.name) == (1, 171, "minute")
    heat = report.Buckets((t0, t0 + dt.timedelta(minutes=170)), report.MAX_COLUMNS)
    assert heat.count <= 60 and heat.name == "5 min"
    years = report.Buckets((t0, t0 + dt.timedelta(days=3 * 365)), report.MAX_COLUMNS)
    assert years.count <= 60 and years.index("2019-10-01T00:00:00.000Z") == 0
    assert years.index("2030-01-01T00:00:00.000Z") is None


_LOG_COLUMNS = ["stream", "topic", "partition", "offset", "status", "reason", "kind", "source", "ts", "ingest_ts",
                "payload"]


def test_report_data_sums_a_long_history_into_the_charts_buckets(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    """400 days of behaviour, three minutes a day: ClickHouse hands back a row per day (the
    timeline's bucket for that span) and per week (the heatmap's), not 1,200 minutes; the
    sums, the span and the events outside it are the stored ones, and the report draws them."""
    import datetime as dt
    settings = make_settings()
    topic = settings.topic("behaviour")
    t0 = dt.datetime(2019, 10, 1, tzinfo=dt.UTC)
    rows: list[list[Any]] = []
    for day in range(400):
        for i, minute in enumerate((0, 7, 13)):
            ts = t0 + dt.timedelta(days=day, minutes=minute)
            payload = '{"a":1,"b":null}' if i else '{"a":null}'
            rows.append(["behaviour", topic, 0, len(rows), "valid", "", "view", "web", ts, ts, payload])
    first_day = rows[0][8]
    rows[0][9] = first_day + dt.timedelta(seconds=301)   # ingested later than the 300 s lateness
    rows.append(["behaviour", topic, 0, len(rows), "duplicate", "", "view", "web", first_day, first_day, "{}"])
    late = dt.datetime(2026, 11, 22, 17, tzinfo=dt.UTC)   # an unreadable ts replaced by its ingest time
    rows += [["behaviour", topic, 0, len(rows) + k, "invalid", "invalid_ts", "", "", late, late, "{}"]
             for k in range(3)]
    store.insert_rows("ingest_log", rows, _LOG_COLUMNS)

    data = report.report_data(store, settings)
    last = (t0 + dt.timedelta(days=399, minutes=13)).strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert data["spans"] == {"behaviour": {"first": "2019-10-01T00:00:00.000Z", "last": last, "outside": 3}}
    days = data["asset_minute"]
    assert len(days) == 400 and days[0] == {"asset": "behaviour", "minute": "2019-10-01T00:00:00.000Z",
                                            "events": 4, "valid": 3, "duplicates": 1, "invalid": 0, "late": 1}
    assert {r["minute"][11:] for r in days} == {"00:00:00.000Z"} and sum(r["valid"] for r in days) == 1200
    weeks = data["stream_minute"]
    assert len(weeks) <= report.MAX_COLUMNS and sum(r["events"] for r in weeks) == 1200   # the objects, not dups
    present = {f: sum(r["present"] for r in data["completeness_minute"] if r["field"] == f) for f in "ab"}
    assert present == {"a": 800, "b": 0}   # "a" null on one event a day, "b" always null
    heat = report.Buckets((t0, t0 + dt.timedelta(days=399)), report.MAX_COLUMNS)
    starts = {s.strftime("%Y-%m-%dT%H:%M:00.000Z") for s in heat.starts()}
    assert heat.name == "week" and {r["minute"] for r in weeks} <= starts   # the renderer's own buckets

    html = report.render(data)
    assert "events per day" in html and "3 events outside this event-time span" in html


def test_human_age() -> None:
    assert [summary.human_age(s) for s in (None, -3, 12.9, 125, 3 * 3600 + 5, 225470643.6)] == [
        "—", "0 s", "12 s", "2 min", "3 h", "2609 d"]


def test_top_losses_takes_the_biggest_over_stream_assets() -> None:
    losses = summary.top_losses(sample()["inventory"])
    assert [(p, a) for p, a, _ in losses] == [(15.0, "behaviour"), (5.0, "product"), (2.5, "behaviour"),
                                              (2.5, "product")]


def test_status_rates_trends_and_width() -> None:
    doc = sample()["inventory"]
    docs = [json.loads(json.dumps(doc)) for _ in range(2)]
    docs[1]["assets"][0]["valid"] += 600                 # +600 events in 60 s
    docs[1]["assets"][0]["quality"]["score"] = 90.0      # up from 83.2
    docs[1]["assets"][2]["quality"]["score"] = 70.0      # down from 79.9
    feed = iter(docs)
    queries: list[str] = []

    def query(sql: str) -> dict[str, Any]:
        queries.append(sql)
        return {"columns": ["asset", "events", "span_ms"], "rows": [["behaviour", 1000, 30_000]]}

    source = status.Source(load=lambda: next(feed), query=query, live=lambda: True, prefix="it's.")
    tracker = status.Tracker()
    tracker.refresh(source, now=100.0)
    assert tracker.rates == {"behaviour": 1000.0}     # 30 s of ingest counts as one minute
    assert "'it\\'s.'" in queries[0]
    tracker.refresh(source, now=160.0)
    assert tracker.rates["behaviour"] == pytest.approx(600.0)
    assert tracker.trend("behaviour") == "↑" and tracker.trend("product") == "↓"
    console = Console(width=100, record=True, color_system=None)
    console.print(tracker.render(2.0))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "90.0 ↑" in text and "70.0 ↓" in text and "top issues" in text
    assert "orphans" in text and "amount mismatches" in text and "drift" in text
    assert "users 4,505" in text


def test_stored_rates_read_the_last_five_minutes_of_ingest_only(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Eight granules of behaviour, an event every 100 ms of ingest time (dated 2080, after every
    other test's rows): the rate counts the 3,001 events of the newest 5 minutes, and
    ingest_log is read at those granules only. A partition no other test uses keeps the rows
    together in the table's order (stream, partition, offset) when merges join other tests'
    parts: at partition 0 they interleaved with other behaviour rows and took 2 granules + 6 rows."""
    import datetime as dt
    settings = make_settings()
    n = 8 * 8192
    store.command(
        "INSERT INTO ingest_log (stream, topic, partition, offset, idx, status, kind, source, ts, ingest_ts, payload)"
        " SELECT 'behaviour', {t:String}, 977, number, 0, 'valid', 'view', 'web',"
        " {base:DateTime64(3, 'UTC')} + toIntervalMillisecond(number * 100 - 1000),"
        " {base:DateTime64(3, 'UTC')} + toIntervalMillisecond(number * 100), '{}' FROM numbers({n:UInt64})",
        {"t": settings.topic("behaviour"), "base": dt.datetime(2080, 1, 1, tzinfo=dt.UTC), "n": n})

    def query(sql: str) -> dict[str, Any]:
        columns, rows = store.query(sql)
        return {"columns": columns, "rows": rows}

    source = status.Source(load=dict, query=query, live=lambda: False, prefix=settings.topic_dot_prefix)
    rates = source.stored_rates()
    assert rates == {a: pytest.approx(3001 / 5) for a in ("behaviour", "behaviour/event_type=view",
                                                          "behaviour/source=web")}
    # Every read of the query, its subqueries' too, within two granules: none reads all history.
    sql = status.RATE_SQL.format(prefix=status.sql_string(settings.topic_dot_prefix))
    assert len(store.rows(f"{sql} SETTINGS max_rows_to_read = {2 * 8192}")) == 3


# -- integration: the real commands, and the report in a real browser -------------------------


def _png_is_not_blank(path: Path) -> bool:
    """Several distinct byte values in the decoded image data (a single colour gives a handful)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return len(set(image.tobytes())) > 32


@pytest.mark.integration
def test_report_and_status_after_a_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    proc = spawn_up(data_dir, 20)
    try:
        # While it runs, both commands ask the worker over HTTP (the store is locked).
        deadline = time.monotonic() + 60
        streams: set[str] = set()
        answered: float | None = None   # the worker answers before its 20 s start counting
        while time.monotonic() < deadline and proc.poll() is None and len(streams) < 3:
            result = stocktake("inventory", "--json", "--data-dir", str(data_dir))
            if result.returncode == 0:
                answered = answered or time.monotonic()
                streams = {a["asset"] for a in json.loads(result.stdout)["assets"] if a["kind"] == "stream"}
            time.sleep(0.5)
        assert streams == {"behaviour", "product", "transaction"}
        # On a very slow machine leave the live checks out rather than race the shutdown.
        if answered is not None and time.monotonic() - answered < 12:
            live = stocktake("report", "--out", str(tmp_path / "live.html"), "--data-dir", str(data_dir))
            assert live.returncode == 0, live.stderr
            assert all(f"<b>{s}</b>" in (tmp_path / "live.html").read_text() for s in streams)
            during = stocktake("status", "--once", "--data-dir", str(data_dir))
            assert during.returncode == 0, during.stderr
            assert "live" in during.stdout and "stored state" not in during.stdout
            # every stream row starts with its ingest rate (asked of the worker as SQL)
            assert all(re.search(rf"^ {s} +[\d,]+ ", during.stdout, re.M) for s in streams), during.stdout
    finally:
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr

    out = data_dir / "report.html"
    result = stocktake("report", "--out", str(out), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out.resolve())
    inventory = stocktake("inventory", "--json", "--data-dir", str(data_dir))
    assert inventory.returncode == 0, inventory.stderr
    valid = {a["asset"]: a["valid"] for a in json.loads(inventory.stdout)["assets"] if a["kind"] == "stream"}
    assert set(valid) == {"behaviour", "product", "transaction"}
    html = out.read_text()
    summary = re.search(r'<table class="summary">.*?</table>', html, re.S)
    assert summary
    for stream, n in valid.items():
        assert re.search(rf"<b>{stream}</b></td><td[^>]*>[\d,]+</td><td[^>]*>{n:,}</td>", summary.group(0)), stream

    shown = stocktake("status", "--once", "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    assert "stored state" in shown.stdout and "top issues" in shown.stdout
    for stream, n in valid.items():
        assert re.search(rf"^ {stream} .* {n:,} ", shown.stdout, re.M), (stream, shown.stdout)
    assert max(len(line) for line in shown.stdout.splitlines()) <= 100

    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("chromium is not installed (`make browser` installs it): no screenshot of the report")
    png = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    shot = subprocess.run([chromium, *flags, "--window-size=1400,2400", f"--screenshot={png}",
                           f"file://{out}"], capture_output=True, text=True, timeout=120)
    assert png.exists(), shot.stderr
    assert png.stat().st_size > 20_000 and _png_is_not_blank(png)
    dom = subprocess.run([chromium, *flags, "--dump-dom", f"file://{out}"], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr
    for stream in valid:
        assert f"<b>{stream}</b>" in dom.stdout
    assert dom.stdout.count("<svg") >= 7   # 3 timelines, 3 heatmaps, quality (+ dead letters)


def test_status_shows_a_stalled_or_failed_worker_in_red() -> None:
    doc = sample()["inventory"]
    states = iter([{"status": "ok", "consumer_lag": 0, "assigned_partitions": 12, "last_insert_age_s": 1.0,
                    "store_waiting_s": None},
                   {"status": "stalled", "consumer_lag": 4200, "assigned_partitions": 12, "last_insert_age_s": 75.0,
                    "store_waiting_s": 70.0}])
    source = status.Source(load=lambda: doc, query=lambda _sql: {"rows": []}, live=lambda: True, prefix="s.",
                           health=lambda: next(states))
    tracker = status.Tracker()
    tracker.refresh(source, now=1.0)
    console = Console(width=120, record=True, color_system="truecolor")
    console.print(tracker.render())
    assert "worker ok · 12 partitions · 0 events waiting" in console.export_text(styles=False)
    tracker.refresh(source, now=3.0)
    console = Console(width=120, record=True, color_system="truecolor")
    console.print(tracker.render())
    text = console.export_text(styles=False)
    assert "worker stalled · 12 partitions · 4,200 events waiting · last insert 75 s ago · ClickHouse away for 70 s" \
        in text
    line = status.worker_line(tracker.health)
    assert line is not None and any("red" in str(span.style) for span in line.spans)
