"""`stocktake report`: the inventory as one self-contained HTML file.

`report_data` gathers the inventory document and its time series (JSON-able, the
worker serves it at /api/report-data); `render` turns that dict into HTML with
inline CSS and inline SVG charts: no script, no network, every value escaped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from html import escape
from typing import Any

from stocktake.clickhouse import queries as Q
from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import jsonable
from stocktake.report.charts import hbars, heatmap, line_chart, stacked_bars
from stocktake.report.style import CSS
from stocktake.services import inventory
from stocktake.services.summary import consistency_issues, entity, human_age
from stocktake.settings import Settings

MAX_POINTS = 720      # line chart: minutes per point grow beyond this
MAX_COLUMNS = 60      # heatmap: at most this many time columns
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
COUNTS = ("valid", "duplicates", "invalid")
COLOURS = {"valid": "#2f9e44", "duplicates": "#f08c00", "invalid": "#e03131"}
COMPONENTS = {"completeness": "#1c7ed6", "validity": "#e03131", "uniqueness": "#f08c00",
              "timeliness": "#7048e8", "consistency": "#0c8599"}


def report_data(store: Store, settings: Settings) -> dict[str, Any]:
    """The inventory document plus per-minute series of the stream assets."""
    doc = inventory.build(store, settings)
    params = {"prefix": settings.topic_prefix + ".", "since": EPOCH,
              "late_ms": int(settings.lateness_s * 1000)}
    minutes = [{k: r[k] for k in ("asset", "minute", "events", *COUNTS)}
               for r in Q.rows_as_dicts(store, Q.ASSET_MINUTE_SQL, params) if "/" not in r["asset"]]
    return jsonable({
        "inventory": doc,
        "asset_minute": minutes,
        "completeness_minute": Q.rows_as_dicts(store, Q.COMPLETENESS_MINUTE_SQL, params),
        "stream_minute": Q.rows_as_dicts(store, Q.STREAM_MINUTE_SQL, params),
    })


def _e(value: Any) -> str:
    return escape("—" if value is None else str(value), quote=True)


def _n(value: Any) -> str:
    return _e(f"{value:,}" if isinstance(value, int | float) else value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _level(value: float | None, good: float, fair: float) -> str:
    return "" if value is None else "ok" if value >= good else "warn" if value >= fair else "bad"


def _when(text: Any) -> str:
    """An ISO timestamp as '2019-10-01 02:50:00 UTC' (anything else as it is)."""
    try:
        return _t(str(text)).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return "—" if text is None else str(text)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None, cls: str = "") -> str:
    numeric = numeric or set()
    th = "".join(f'<th class="{"num" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f"<section><h2>{_e(title)}</h2>{note_html}{body}</section>"


def _streams(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in doc.get("assets", []) if a.get("kind") == "stream"]


def _span(rows: list[dict[str, Any]]) -> tuple[dt.datetime, dt.datetime] | None:
    """Event-time span of the minutes holding valid events (invalid ones may carry ingest time)."""
    minutes = [_t(r["minute"]) for r in rows if r.get("valid")] or [_t(r["minute"]) for r in rows]
    return (min(minutes), max(minutes)) if minutes else None


# Bucket sizes in minutes and how to name them: the smallest that fits is used.
STEPS = ((1, "minute"), (2, "2 min"), (5, "5 min"), (10, "10 min"), (15, "15 min"), (30, "30 min"),
         (60, "hour"), (180, "3 h"), (360, "6 h"), (720, "12 h"), (1440, "day"), (10080, "week"),
         (43200, "30 days"), (131400, "quarter"), (525600, "365 days"))


class Buckets:
    """Equal time buckets over a span, aligned to multiples of their size since the epoch."""

    def __init__(self, span: tuple[dt.datetime, dt.datetime], most: int):
        first, last = (int((t - EPOCH).total_seconds() // 60) for t in span)
        for self.size, self.name in STEPS:
            if last // self.size - first // self.size < most:
                break
        else:
            self.size = math.ceil((last - first + 1) / most / 525600) * 525600
            self.name = f"{self.size // 525600 * 365} days"
        self.first = first // self.size
        self.count = last // self.size - self.first + 1

    def index(self, minute: str) -> int | None:
        j = int((_t(minute) - EPOCH).total_seconds() // 60) // self.size - self.first
        return j if 0 <= j < self.count else None

    def starts(self) -> list[dt.datetime]:
        return [EPOCH + dt.timedelta(minutes=(self.first + j) * self.size) for j in range(self.count)]


def _timeline(data: dict[str, Any], stream: str) -> str:
    rows = [r for r in data.get("asset_minute", []) if r["asset"] == stream]
    span = _span(rows)
    if span is None:
        return f"<h3>{_e(stream)}</h3><p class='note'>no events yet</p>"
    b = Buckets(span, MAX_POINTS)
    sums = {k: [0] * b.count for k in COUNTS}
    outside = 0
    for r in rows:
        j = b.index(r["minute"]) if span[0] <= _t(r["minute"]) <= span[1] else None
        if j is None:
            outside += r["events"]
            continue
        for k in COUNTS:
            sums[k][j] += r[k]
    chart = line_chart(b.starts(), [(k, COLOURS[k], sums[k]) for k in COUNTS],
                       label=f"{stream} events over time", unit=f"events per {b.name}")
    note = (f"<p class='note'>{outside:,} events outside this event-time span (invalid events without a "
            "readable time are placed at ingest time) are counted in the totals, not drawn.</p>") if outside else ""
    return f"<h3>{_e(stream)}</h3>{chart}{note}"


def _heatmap(data: dict[str, Any], stream: str) -> str:
    span = _span([r for r in data.get("asset_minute", []) if r["asset"] == stream]) or _span(
        [r for r in data.get("stream_minute", []) if r["stream"] == stream])
    if span is None:
        return ""
    b = Buckets(span, MAX_COLUMNS)
    events = [0] * b.count
    for r in data.get("stream_minute", []):
        if r["stream"] == stream and (j := b.index(r["minute"])) is not None:
            events[j] += r["events"]
    present: dict[str, list[int]] = defaultdict(lambda: [0] * b.count)
    for r in data.get("completeness_minute", []):
        if r["stream"] == stream and (j := b.index(r["minute"])) is not None:
            present[r["field"]][j] += r["present"]
    fields = sorted(present)
    shares = [[p / e if e else None for p, e in zip(present[f], events, strict=True)] for f in fields]
    return f"<h3>{_e(stream)}</h3>" + heatmap(fields, b.starts(), shares, events, bucket=b.name,
                                             label=f"{stream} field completeness over time")


def _headline(doc: dict[str, Any]) -> str:
    streams = _streams(doc)
    products, orders = entity(doc, "products"), entity(doc, "orders")
    cards = [
        ("valid events", sum(a["valid"] for a in streams), ""),
        ("duplicates removed", sum(a["duplicates"] for a in streams), ""),
        ("dead letters", sum(a["invalid"] for a in streams), "bad"),
        ("distinct users", entity(doc, "users").get("distinct", 0), ""),
        ("distinct products", products.get("distinct", 0), ""),
        ("distinct orders", orders.get("distinct", 0), ""),
        ("orphan products", products.get("orphans", 0), "bad"),
        ("amount mismatches", orders.get("amount_mismatch", 0), "bad"),
        ("drift events", len(doc.get("drift", [])), "bad"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card {cls if value else ""}"><div class="value">{_n(value)}</div>'
        f'<div class="label">{_e(label)}</div></div>' for label, value, cls in cards) + "</div>"


def _summary(doc: dict[str, Any]) -> str:
    rows = []
    for a in _streams(doc):
        q = a.get("quality") or {}
        score = q.get("score")
        why = (q.get("explain") or ["no quality losses"])[0]
        events = (q.get("evidence") or {}).get("events", a["valid"] + a["duplicates"] + a["invalid"])
        rows.append([f"<b>{_e(a['asset'])}</b>", _n(events), _n(a["valid"]), _n(a["duplicates"]), _n(a["invalid"]),
                     f'<span class="pill {_level(score, 90, 70)}">{_e(score)}</span>',
                     _e(human_age(a.get("freshness_s"))), f'<span class="why">{_e(why)}</span>'])
    if not rows:
        rows.append(['<span class="note">no events stored yet</span>', *[""] * 7])
    return _table(["stream", "events", "valid", "duplicates", "invalid", "quality", "freshness", "why"], rows,
                  numeric={1, 2, 3, 4, 5, 6}, cls="summary")


def _quality(doc: dict[str, Any]) -> str:
    bars, rows = [], []
    for a in doc.get("assets", []):
        q = a.get("quality") or {}
        comp, weights = q.get("components") or {}, q.get("weights") or {}
        lost = (q.get("evidence") or {}).get("points_lost") or {
            c: 100 * weights.get(c, 0) * (1 - v) for c, v in comp.items() if v is not None}
        bars.append((a["asset"], q.get("score"), {c: lost.get(c, 0.0) for c in COMPONENTS}))
        rows.append([_e(a["asset"]), f'<span class="pill {_level(q.get("score"), 90, 70)}">{_e(q.get("score"))}'
                     "</span>", *(f'<span class="{_level(comp.get(c), 0.99, 0.9)}">{_pct(comp.get(c))}</span>'
                                  for c in COMPONENTS)])
    explain = "".join(f"<li><b>{_e(a['asset'])}</b><ul>" + "".join(
        f"<li>{_e(line)}</li>" for line in (a.get("quality") or {}).get("explain", [])) + "</ul></li>"
        for a in _streams(doc))
    weights = ", ".join(f"{c} {w:g}" for c, w in (doc.get("quality_weights") or {}).items())
    return (stacked_bars(bars, COMPONENTS, label="quality score per asset")
            + _table(["asset", "score", *COMPONENTS], rows, numeric=set(range(1, 7)))
            + f"<h3>Why streams lose points</h3><ul class='explain'>{explain}</ul>"
            + f"<p class='note'>weights: {_e(weights)}</p>")


def _consistency(doc: dict[str, Any]) -> str:
    products, orders = entity(doc, "products"), entity(doc, "orders")
    by_stream = ", ".join(f"{s} {n:,}" for s, n in (products.get("orphan_events") or {}).items()) or "none"
    orphans = (f"<h3>Orphans</h3><p>{_n(products.get('orphans', 0))} products referenced by behaviour or "
               f"transactions were never announced by the catalog. Events referring to them: {_e(by_stream)}.</p>")
    if products.get("orphan_examples"):
        examples = [[_e(x["product_id"]), _n(x["references"])] for x in products["orphan_examples"]]
        orphans += _table(["product_id", "references"], examples, numeric={1}, cls="compact")
    mismatch = (f"<h3>Amount mismatches</h3><p>{_n(orders.get('amount_mismatch', 0))} of "
                f"{_n(orders.get('amount_checked', 0))} transactions checked against quantity × catalog price.</p>")
    keys = ["event_id", "order_id", "product_id", "quantity", "amount", "expected"]
    if orders.get("amount_mismatch_examples"):
        mismatch += _table(keys, [[_n(x.get(k)) for k in keys] for x in orders["amount_mismatch_examples"]],
                           numeric={3, 4, 5}, cls="compact")
    drift = doc.get("drift", [])
    drift_html = "<h3>Schema drift</h3>" + (_table(
        ["at", "stream", "field", "kind", "type", "details"],
        [[_e(_when(d.get("at"))), *(_e(d.get(k)) for k in ("stream", "field", "kind", "type", "details"))]
         for d in drift])
        if drift else "<p>No drift detected.</p>")
    return orphans + mismatch + drift_html


def _dead_letters(doc: dict[str, Any]) -> str:
    rows = sorted(((f"{a['asset']} · {reason}", n) for a in _streams(doc)
                   for reason, n in (a.get("invalid_by_reason") or {}).items()), key=lambda r: (-r[1], r[0]))
    if not rows:
        return "<p>No dead letters.</p>"
    return hbars(rows, COLOURS["invalid"], label="dead letters by reason")


def _example(value: Any) -> str:
    text = value if isinstance(value, str) else str(jsonable(value))
    return text if len(text) <= 40 else text[:39] + "…"


def _fields(doc: dict[str, Any]) -> str:
    rows = []
    for f in doc.get("fields", []):
        types = "<br>".join(_e(f"{t} {n:,}") for t, n in (f.get("types") or {}).items())
        name = _e(f["field"]) + ("" if f.get("contract") else ' <span class="tag">extra</span>')
        sensitive = f'<span class="tag warn">{_e(f["sensitive"])}</span>' if f.get("sensitive") else ""
        rows.append([_e(f["stream"]), name, types,
                     f'<span class="{_level(f.get("completeness"), 0.99, 0.9)}">{_pct(f.get("completeness"))}</span>',
                     f'<span class="{_level(f.get("validity"), 0.99, 0.9)}">{_pct(f.get("validity"))}</span>',
                     _n(f.get("distinct_approx")), sensitive,
                     '<span class="ex">' + ", ".join(_e(_example(x)) for x in f.get("examples", [])) + "</span>"])
    return _table(["stream", "field", "types", "complete", "valid", "distinct≈", "sensitive", "examples (masked)"],
                  rows, numeric={3, 4, 5}, cls="fields")


def render(data: dict[str, Any]) -> str:
    """The whole report as one HTML string (pure: data in, text out)."""
    doc = data.get("inventory", data)
    streams = [a["asset"] for a in _streams(doc)]
    issues = consistency_issues(doc)
    sections = [
        _section("Streams at a glance", _headline(doc) + _summary(doc)
                 + ("<ul class='issues'>" + "".join(f"<li>{_e(i)}</li>" for i in issues) + "</ul>" if issues else "")),
        _section("Events over time", "".join(_timeline(data, s) for s in streams),
                 "Valid events, removed duplicates and dead letters over event time; each chart names its step."),
        _section("Field completeness over time", "".join(_heatmap(data, s) for s in streams),
                 "Share of each stream's events that carry a non-null value for the field (grey: no events)."),
        _section("Quality scores", _quality(doc), "0–100 per asset; the coloured part of each bar is the points "
                 "a component lost."),
        _section("Consistency", _consistency(doc)),
        _section("Dead letters by reason", _dead_letters(doc)),
        _section("Field inventory", _fields(doc), "Types seen, completeness and validity over the stream's events;"
                 " values of sensitive fields are masked."),
    ]
    meta = (f"generated {_e(_when(doc.get('generated_at')))} · events up to {_e(_when(doc.get('as_of_event_ts')))} · "
            f"{len(doc.get('assets', []))} assets, {len(doc.get('fields', []))} fields")
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>stocktake report</title><style>{CSS}</style></head><body><main>"
            f'<header><h1>stocktake report</h1><p class="meta">{meta}</p></header>'
            + "".join(sections)
            + "<footer>stocktake · a self-contained file: no script, no network.</footer></main></body></html>\n")
