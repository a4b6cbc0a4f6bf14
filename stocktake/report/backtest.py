"""`stocktake backtest --report FILE.html`: a backtest as one self-contained page.

The alerts the history would have raised on a timeline (one lane per asset with
alerts, a bar from opened to resolved, coloured by severity; alerts inhibited by
their stream's drawn lighter), the alerts table, and each stream's volume per hour
of event time with its sub-assets. Same style, template filters and charts
(stocktake.charts) as `stocktake report`: inline CSS and SVG, no script.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from stocktake import charts
from stocktake.processors.assets import Asset
from stocktake.report import MAX_POINTS, _n, _text, _when
from stocktake.report.style import CSS

HOUR = dt.timedelta(hours=1)
SEVERITY_COLOURS = {"critical": "#e03131", "warning": "#f08c00", "info": "#1c7ed6"}
OTHER_SEVERITY = "#868e96"
PALETTE = ("#1c7ed6", "#2f9e44", "#f08c00", "#7048e8", "#0c8599", "#e64980", "#66a80f", "#e8590c", "#495057")
MAX_LINES = len(PALETTE)     # per stream chart: the stream and its largest sub-assets
COLUMNS = ("opened", "resolved", "asset", "kind", "subject", "severity", "scale", "expected", "observed",
           "inhibited", "reason")

Volume = Mapping[str, Sequence[tuple[int, int]]]   # asset -> (hour start epoch ms, events), hours with events


def _t(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Hours:
    """Buckets of whole hours over the volume's span: one hour each, or as many as keep a
    chart within MAX_POINTS."""

    def __init__(self, volume: Volume):
        hours = [h for rows in volume.values() for h, _ in rows]
        self.first = min(hours) // 3_600_000
        last = max(hours) // 3_600_000
        self.size = max(1, math.ceil((last - self.first + 1) / MAX_POINTS))
        self.count = (last - self.first) // self.size + 1
        self.name = "hour" if self.size == 1 else f"{self.size} hours"

    def index(self, hour_ms: int) -> int:
        return (hour_ms // 3_600_000 - self.first) // self.size

    def middles(self) -> list[dt.datetime]:
        """Where each bucket's count is drawn: its middle."""
        return [_t((self.first + j * self.size) * 3_600_000 + self.size * 1_800_000) for j in range(self.count)]

    def range(self) -> tuple[dt.datetime, dt.datetime]:
        return _t(self.first * 3_600_000), _t((self.first + self.count * self.size) * 3_600_000)


def volume_charts(volume: Volume, hours: Hours) -> list[dict[str, Any]]:
    """Per stream: its events and its largest sub-assets' per bucket."""
    by_stream: dict[str, list[str]] = {}
    for asset in sorted(volume):
        by_stream.setdefault(Asset.parse(asset).stream, []).append(asset)
    out = []
    for stream, assets in by_stream.items():
        sums: dict[str, list[float | None]] = {}
        for asset in assets:
            values: list[float | None] = [0] * hours.count
            for hour, n in volume[asset]:
                j = hours.index(hour)
                values[j] = (values[j] or 0) + n
            sums[asset] = values
        total = {a: sum(v or 0 for v in values) for a, values in sums.items()}
        subs = sorted((a for a in assets if a != stream), key=lambda a: (-total[a], a))
        drawn = ([stream] if stream in sums else []) + subs
        drawn = drawn[:MAX_LINES]
        series = [charts.Series(f"{Asset.parse(a).label} {charts.count_label(total[a])}", PALETTE[k], sums[a],
                                tip=f"{a}: {charts.count_label(total[a])} events") for k, a in enumerate(drawn)]
        chart = charts.time_series(hours.middles(), series, label=f"{stream} events per {hours.name}",
                                   unit=f"events per {hours.name}", width=1080, height=240, legend_above=False,
                                   legend_rows=2, x_range=hours.range())
        out.append({"stream": stream, "chart": Markup(chart), "left_out": len(assets) - len(drawn)})
    return out


def timeline(alerts: Sequence[Mapping[str, Any]], x_range: tuple[dt.datetime, dt.datetime]) -> Markup | None:
    """The alerts as bars on one lane per asset, from opened to resolved (an alert still open
    at the end of the history runs to the end of the chart)."""
    if not alerts:
        return None
    names = sorted({a["asset"] for a in alerts})
    lane = {name: i for i, name in enumerate(names)}
    bars = []
    for a in alerts:
        start = _iso(a["opened_at"])
        end = _iso(a["resolved_at"]) if a.get("resolved_at") else max(x_range[1], start)
        what = " ".join(p for p in (a["kind"], a.get("subject") or "", f"({a['severity']})") if p)
        until = _when(a["resolved_at"]) if a.get("resolved_at") else "still open at the end"
        part = " · part of its stream's alert" if a.get("inhibited_by") else ""
        bars.append(charts.Bar(lane[a["asset"]], start, end, SEVERITY_COLOURS.get(a["severity"], OTHER_SEVERITY),
                               tip=f"{a['asset']} · {what}: {_when(a['opened_at'])} → {until}{part}\n{a['reason']}",
                               faded=bool(a.get("inhibited_by"))))
    seen = {a["severity"] for a in alerts}
    legend = {s: c for s, c in SEVERITY_COLOURS.items() if s in seen} | (
        {"other": OTHER_SEVERITY} if seen - set(SEVERITY_COLOURS) else {})
    low, high = x_range
    low = min(low, *(b.start for b in bars))
    high = max(high, *(b.end for b in bars))
    return Markup(charts.lanes(names, bars, label="alerts over event time", x_range=(low, high), legend=legend))


def _time(text: str) -> str:
    """ISO UTC as '2019-10-01 00:17:36' (the page says the times are UTC)."""
    return _iso(text).strftime("%Y-%m-%d %H:%M:%S")


def _until(opened: str, resolved: str | None) -> str:
    """The resolution time, without its date when that is the opening's."""
    if not resolved:
        return "open"
    text = _time(resolved)
    return text[11:] if text[:10] == _time(opened)[:10] else text


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.1f}".removesuffix(".0")
    return _n(value)


def _rows(alerts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_id = {a["alert_id"]: a for a in alerts}
    rows = []
    for a in alerts:
        parent = by_id.get(a.get("inhibited_by") or "")
        rows.append({
            "opened": _time(a["opened_at"]), "resolved": _until(a["opened_at"], a.get("resolved_at")),
            "asset": a["asset"], "kind": a["kind"], "subject": a.get("subject") or "", "severity": a["severity"],
            "scale": "" if a.get("scale") is None else _text(a["scale"]),
            "expected": _number(a.get("expected")), "observed": _number(a.get("observed")),
            "inhibited": "" if not a.get("inhibited_by") else f"by {parent['asset']}" if parent else "yes",
            "reason": a["reason"], "cls": "faded" if a.get("inhibited_by") else "",
        })
    return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """COLUMNS, less those no alert fills (subject, scale, inhibited)."""
    return [c for c in COLUMNS if c not in ("subject", "scale", "inhibited") or any(r[c] for r in rows)]


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("stocktake.report"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(text=_text, n=_n, when=_when)
    return env.get_template("backtest.html")


def render(doc: Mapping[str, Any], volume: Volume) -> str:
    """The page (pure: the backtest document and its hourly volume in, HTML out)."""
    alerts = doc.get("alerts", [])
    hours = Hours(volume) if any(volume.values()) else None
    if hours is not None:
        x_range = hours.range()
    elif doc.get("span"):
        x_range = (_iso(doc["span"]["from"]), _iso(doc["span"]["to"]) + HOUR)
    else:
        x_range = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(1970, 1, 1, 1, tzinfo=dt.UTC))
    events = doc.get("events", {})
    return _template().render(
        css=Markup(CSS), doc=doc, events=events, alerts=(rows := _rows(alerts)), columns=_columns(rows),
        pages=sum(not a.get("inhibited_by") for a in alerts), still_open=sum(a.get("state") == "open" for a in alerts),
        timeline=timeline(alerts, x_range), volumes=volume_charts(volume, hours) if hours else [],
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
