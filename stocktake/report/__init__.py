"""`stocktake report`: the inventory as one self-contained HTML file.

`report_data` gathers the inventory document and its time series (JSON-able, the
worker serves it at /api/report-data); `render` turns that dict into HTML from the
autoescaped template templates/report.html, with inline CSS and inline SVG charts
(stocktake.charts): no script, no network, every value escaped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from stocktake import charts
from stocktake.clickhouse import queries as Q
from stocktake.clickhouse import series as S
from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import jsonable
from stocktake.models.versions import VersionStore
from stocktake.report.style import CSS
from stocktake.services import inventory
from stocktake.services.scoring import MODELS
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
    """The inventory document plus the time series of the stream assets: per stream its
    event-time span and the events outside it (``spans``), then the series in buckets
    whose size the span sets (``minute``: a bucket's start), summed by ClickHouse."""
    data: dict[str, Any] = {"inventory": inventory.build(store, settings), "spans": {}, "asset_minute": [],
                            "stream_minute": [], "completeness_minute": []}
    scope = {"prefix": settings.topic_dot_prefix, "late_s": int(settings.lateness_s)}
    for stream, first, last in store.rows(S.SPANS_SQL, scope):
        _stream_series(store, {**scope, "stream": stream}, (_utc(first), _utc(last)), data)
    data["models"] = registered_models(settings)
    return jsonable(data)


def registered_models(settings: Settings) -> list[dict[str, Any]]:
    """The newest registered version of each scorer, with the metrics its training measured
    on held-out time (nothing when scoring never ran here: the registry is empty)."""
    store = VersionStore(settings.model_registry)
    found = []
    for name in MODELS.values():
        version = store.latest(name)
        if version is not None:
            meta = version.meta
            found.append({"name": name, "version": version.version, "source": meta.get("source"),
                          "created_at": meta.get("created_at"), "window": meta.get("training_window"),
                          "metrics": meta.get("metrics", {})})
    return found


def _stream_series(store: Store, params: dict[str, Any], span: tuple[dt.datetime, dt.datetime],
                   into: dict[str, Any]) -> None:
    """One stream's rows of each series, added to ``into``: the timeline's buckets over the
    span, the heatmap's (fewer, larger) over the same span."""
    stream, outside = params["stream"], 0
    line = Buckets(span, MAX_POINTS)
    for r in Q.rows_as_dicts(store, S.EVENTS_SQL, {**params, "size": line.size, "first": span[0], "last": span[1]}):
        bucket = r.pop("bucket")
        if bucket is None:   # the events outside the span, summed
            outside += r["events"]
        else:
            into["asset_minute"].append({"asset": stream, "minute": bucket, **r})
    into["spans"][stream] = {"first": span[0], "last": span[1], "outside": outside}
    heat = Buckets(span, MAX_COLUMNS)
    window = {**params, "size": heat.size, "from": heat.starts()[0], "to": heat.end()}
    into["stream_minute"] += [{"stream": stream, "minute": r["bucket"], "events": r["events"]}
                              for r in Q.rows_as_dicts(store, S.OBJECTS_SQL, window)]
    into["completeness_minute"] += [{"stream": stream, "minute": r["bucket"], "field": r["field"],
                                     "present": r["present"]} for r in Q.rows_as_dicts(store, S.PRESENCE_SQL, window)]


def _utc(value: dt.datetime) -> dt.datetime:
    """ClickHouse returns naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _streams(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in doc.get("assets", []) if a.get("kind") == "stream"]


def _span(data: dict[str, Any], stream: str) -> tuple[tuple[dt.datetime, dt.datetime], int] | None:
    """A stream's event-time span (minutes holding valid events; any events where none is
    valid: invalid ones may carry ingest time) and how many events fell outside it."""
    given = (data.get("spans") or {}).get(stream)
    if given is None:
        return None
    return (_t(given["first"]), _t(given["last"])), int(given.get("outside", 0))


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

    def end(self) -> dt.datetime:
        """Where the last bucket ends."""
        return EPOCH + dt.timedelta(minutes=(self.first + self.count) * self.size)


def _timeline(data: dict[str, Any], stream: str) -> dict[str, Any]:
    found = _span(data, stream)
    if found is None:
        return {"stream": stream, "chart": None, "outside": 0}
    span, outside = found
    b = Buckets(span, MAX_POINTS)
    sums = {k: [0] * b.count for k in COUNTS}
    for r in data.get("asset_minute", []):
        if r["asset"] != stream:
            continue
        j = b.index(r["minute"])
        if j is None:
            outside += r["events"]
            continue
        for k in COUNTS:
            sums[k][j] += r[k]
    series = [charts.Series(f"{k} {charts.count_label(sum(sums[k]))}", COLOURS[k], sums[k],
                            tip=f"{k}: {charts.count_label(sum(sums[k]))} events") for k in COUNTS]
    chart = charts.time_series(b.starts(), series, label=f"{stream} events over time", unit=f"events per {b.name}",
                               width=1080, height=250)
    return {"stream": stream, "chart": Markup(chart), "outside": outside}


def _heatmap(data: dict[str, Any], stream: str) -> dict[str, Any] | None:
    found = _span(data, stream)
    if found is None:
        return None
    b = Buckets(found[0], MAX_COLUMNS)
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
    chart = charts.heatmap(fields, b.starts(), dt.timedelta(minutes=b.size), shares, events, bucket=b.name,
                           label=f"{stream} field completeness over time")
    return {"stream": stream, "chart": Markup(chart)}


def _cards(doc: dict[str, Any]) -> list[dict[str, Any]]:
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
    return [{"label": label, "value": value, "cls": cls} for label, value, cls in cards]


def _summary(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for a in _streams(doc):
        q = a.get("quality") or {}
        rows.append({"name": a["asset"], "valid": a["valid"], "duplicates": a["duplicates"], "invalid": a["invalid"],
                     "events": (q.get("evidence") or {}).get("events", a["valid"] + a["duplicates"] + a["invalid"]),
                     "score": q.get("score"), "freshness": human_age(a.get("freshness_s")),
                     "why": (q.get("explain") or ["no quality losses"])[0]})
    return rows


def _quality(doc: dict[str, Any]) -> dict[str, Any]:
    bars, rows = [], []
    for a in doc.get("assets", []):
        q = a.get("quality") or {}
        comp = q.get("components") or {}
        lost = {loss["component"]: loss["points"] for loss in q.get("losses", [])}
        bars.append((a["asset"], q.get("score"), {c: lost.get(c, 0.0) for c in COMPONENTS}))
        rows.append({"asset": a["asset"], "score": q.get("score"), "components": comp})
    return {"chart": Markup(charts.stacked_bars(bars, COMPONENTS, label="quality score per asset")), "rows": rows,
            "explain": [(a["asset"], (a.get("quality") or {}).get("explain", [])) for a in _streams(doc)],
            "weights": ", ".join(f"{c} {w:g}" for c, w in (doc.get("quality_weights") or {}).items())}


def _models(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each registered scorer's row of metrics and its reliability diagram."""
    out = []
    for m in data.get("models") or []:
        metrics = m.get("metrics") or {}
        model, base, cal = metrics.get("model") or {}, metrics.get("baseline") or {}, metrics.get("calibration")
        valid = metrics.get("validation") or {}
        row = [m["name"], m["version"], f"{_text(m.get('source'))}, {_when((m.get('window') or {}).get('to'))}",
               f"{_n(valid.get('rows'))} rows, {_n(valid.get('positives'))} positive",
               f"{_num(model.get('roc_auc'))} ({_num(base.get('roc_auc'))})",
               f"{_num(model.get('pr_auc'))} ({_num(base.get('pr_auc'))})",
               f"{_num(cal.get('brier'), 4)} ({_num(cal.get('brier_base_rate'), 4)})" if cal else "—",
               _num(cal.get("ece"), 3) if cal else "—"]
        chart = None
        if cal:
            points = [(b["predicted"], b["observed"], int(b["count"])) for b in cal.get("bins", [])]
            chart = Markup(charts.reliability(points, label=f"reliability of {m['name']}"))
        out.append({"name": m["name"], "row": row, "chart": chart})
    return out


def _catalog(doc: dict[str, Any]) -> dict[str, Any]:
    """The catalog findings' counts and example rows (the worker's newest snapshot)."""
    cat = doc.get("catalog") or {}
    dup, ind, mis = (cat.get(k) or {} for k in ("likely_duplicates", "indistinct_text", "category_mismatch"))

    def ids(x: dict[str, Any]) -> str:
        return ", ".join(p["id"] for p in x.get("products", []))

    def texts(x: dict[str, Any]) -> str:
        return " · ".join(dict.fromkeys(p["text"] for p in x.get("products", [])))

    return {
        "status": cat.get("status", "not in this inventory"), "updated_at": cat.get("updated_at"),
        "products": cat.get("products", 0), "texts": cat.get("texts", 0),
        "evicted": cat.get("evicted", 0), "max_products": cat.get("max_products"),
        "dup": dup, "ind": ind, "mis": mis,
        "dup_rows": [[_num(x["similarity"]), _n(x["size"]), ids(x), texts(x)] for x in dup.get("examples", [])],
        "ind_rows": [[x.get("text", ""), _n(x["neighbours"]), _num(x["similarity"]), " · ".join(x.get("like", [])),
                      ids(x)] for x in ind.get("examples", [])],
        "mis_rows": [[ids(x), texts(x), x.get("category", ""), _num(x["similarity"])]
                     for x in mis.get("examples", [])],
    }


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not math.isnan(value) else "—"


def _dead_letters(doc: dict[str, Any]) -> Markup | None:
    rows = sorted(((f"{a['asset']} · {reason}", n, COLOURS["invalid"]) for a in _streams(doc)
                   for reason, n in (a.get("invalid_by_reason") or {}).items()), key=lambda r: (-r[1], r[0]))
    return Markup(charts.hbars(rows, label="dead letters by reason")) if rows else None


# -- template filters: how values read --------------------------------------------------------


def _text(value: Any) -> str:
    return "—" if value is None else str(value)


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) else _text(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _level(value: float | None, good: float, fair: float) -> str:
    return "" if value is None else "ok" if value >= good else "warn" if value >= fair else "bad"


def _when(text: Any) -> str:
    """An ISO timestamp as '2019-10-01 02:50:00 UTC' (anything else as it is)."""
    try:
        return _t(str(text)).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return _text(text)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _example(value: Any) -> str:
    text = value if isinstance(value, str) else str(jsonable(value))
    return text if len(text) <= 40 else text[:39] + "…"


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("stocktake.report"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(text=_text, n=_n, pct=_pct, level=_level, when=_when, example=_example)
    return env.get_template("report.html")


def render(data: dict[str, Any]) -> str:
    """The whole report as one HTML string (pure: data in, text out)."""
    doc = data.get("inventory", data)
    streams = [a["asset"] for a in _streams(doc)]
    products, orders = entity(doc, "products"), entity(doc, "orders")
    mismatch_keys = ["event_id", "order_id", "product_id", "quantity", "amount", "expected"]
    return _template().render(
        css=Markup(CSS), doc=doc, cards=_cards(doc), summary=_summary(doc), issues=consistency_issues(doc),
        timelines=[_timeline(data, s) for s in streams],
        heatmaps=[h for s in streams if (h := _heatmap(data, s))],
        quality=_quality(doc), components=list(COMPONENTS), products=products, orders=orders,
        orphan_events=", ".join(f"{s} {n:,}" for s, n in (products.get("orphan_events") or {}).items()) or "none",
        orphan_examples=[[x["product_id"], _n(x["references"])] for x in products.get("orphan_examples") or []],
        mismatch_keys=mismatch_keys,
        mismatches=[[_n(x.get(k)) for k in mismatch_keys] for x in orders.get("amount_mismatch_examples") or []],
        drift=[[_when(d.get("at")), *(_text(d.get(k)) for k in ("stream", "field", "kind", "type", "details"))]
               for d in doc.get("drift", [])],
        dead_letters=_dead_letters(doc), fields=doc.get("fields", []), models=_models(data), catalog=_catalog(doc))
