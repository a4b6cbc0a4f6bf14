"""A static preview of the dashboards: every panel's SQL run on the store (chDB or a server),
rendered to HTML with inline SVG, and optionally to PNG with headless Chromium.

The SQL is the dashboards' own, expanded the way Grafana and the ClickHouse plugin expand it
(grafana.macros), with every multi-value variable on "All". Charts follow the panel type:
stat values, time series (long frames turned wide as Grafana does: string columns become
series), tables, bar gauges and histograms. The layout is the dashboards' grid.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stocktake.clickhouse.store import Store, StoreError
from stocktake.grafana import dashboards as D
from stocktake.grafana import macros as M

PAGE_W = 1600
COL_W = PAGE_W / 24
ROW_H = 30
PALETTE = ("#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#37872D",
           "#FADE2A", "#C4162A", "#1F60C4", "#8F3BB8", "#FF9830", "#96D98D", "#FFB357", "#CA95E5")
COLORS = {"green": "#73BF69", "yellow": "#FADE2A", "orange": "#FF9830", "red": "#F2495C", "blue": "#5794F2"}
MAX_TABLE_ROWS = 25


class PreviewError(RuntimeError):
    """Cannot write the preview (no Chromium for PNG, an unwritable directory)."""


# -- formatting -------------------------------------------------------------------------------


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def fmt(value: Any, unit: str | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if not _is_num(value):
        return str(value)
    v = float(value)
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "s":
        a = abs(v)
        if a < 60:
            return f"{v:.1f} s"
        if a < 3600:
            return f"{v / 60:.1f} min"
        if a < 86400:
            return f"{v / 3600:.1f} hour"
        return f"{v / 86400:.1f} day"
    if unit == "ms":
        if abs(v) >= 1000:
            return fmt(v / 1000, "s")
        return f"{v:.2g} ms" if abs(v) < 10 else f"{v:.0f} ms"
    suffix = unit[len("suffix:"):] if unit and unit.startswith("suffix:") else ""
    return _short(v) + suffix


def _short(v: float) -> str:
    a = abs(v)
    for div, name in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if a >= div:
            return f"{v / div:.3g}{name}"
    if v == int(v):
        return str(int(v))
    return f"{v:.3g}" if a < 1 else f"{v:.1f}"


def _unit(spec: D.PanelSpec, column: str) -> str | None:
    units = dict(spec.columns_units)
    if column in units:
        return units[column]
    if column in spec.gauges:
        return "percentunit"
    return spec.unit


def _threshold_color(spec: D.PanelSpec, value: Any, default: str = "#CCCCDC") -> str:
    if not spec.thresholds or not _is_num(value):
        return default
    color = spec.thresholds[0][1]
    for limit, c in spec.thresholds[1:]:
        if limit is not None and float(value) >= limit:
            color = c
    return COLORS.get(color, color)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# -- frames -----------------------------------------------------------------------------------


def long_to_wide(columns: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> tuple[list[dt.datetime], dict[str, list[Any]]]:
    """Grafana's long-to-wide for SQL time series: string columns are labels, every numeric
    column × label set is a series (named "field labels", or the labels alone when the frame
    has one value column)."""
    if not rows:
        return [], {}
    label_idx = [i for i, c in enumerate(columns[1:], 1) if any(isinstance(r[i], str) for r in rows)]
    value_idx = [i for i in range(1, len(columns)) if i not in label_idx]
    times = sorted({r[0] for r in rows})
    pos = {t: i for i, t in enumerate(times)}
    series: dict[str, list[Any]] = {}
    for r in rows:
        labels = " ".join(str(r[i]) for i in label_idx)
        for i in value_idx:
            name = (labels if len(value_idx) == 1 and labels else f"{columns[i]} {labels}".strip())
            values = series.setdefault(name, [None] * len(times))
            values[pos[r[0]]] = r[i]
    return times, series


# -- charts -----------------------------------------------------------------------------------


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * exp * 1.0000001:
            return m * exp
    return 10 * exp


def _time_ticks(t0: float, t1: float, n: int = 6) -> list[float]:
    span = max(t1 - t0, 1)
    steps = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
    step = next((s for s in steps if span / s <= n), steps[-1])
    first = math.ceil(t0 / step) * step
    return [first + i * step for i in range(int((t1 - first) // step) + 1)]


def timeseries_svg(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]], w: int, h: int,
                   tr: M.TimeRange) -> str:
    times, series = long_to_wide(columns, rows)
    legend_rows = min(3, max(1, math.ceil(len(series) / max(1, w // 190))))
    ch = h - 18 * legend_rows - 6
    t0, t1 = tr.start.timestamp(), tr.end.timestamp()
    xs = [t.replace(tzinfo=dt.UTC).timestamp() if t.tzinfo is None else t.timestamp() for t in times]
    names = list(series)
    values = {n: [float(v) if _is_num(v) else None for v in series[n]] for n in names}
    if spec.stack:
        acc = [0.0] * len(xs)
        for n in names:
            acc = [a + (v or 0.0) for a, v in zip(acc, values[n], strict=True)]
            values[n] = list(acc)
    finite = [v for n in names for v in values[n] if v is not None]
    vmax = spec.max if spec.max is not None else _nice_max(max(finite, default=1.0))
    vmin = spec.min if spec.min is not None else min(0.0, min(finite, default=0.0))
    if vmax <= vmin:
        vmax = vmin + 1
    unit = spec.unit
    y_labels = [fmt(vmin + (vmax - vmin) * i / 4, unit) for i in range(5)]
    left, right, top, bottom = max(36, 7 * max(len(t) for t in y_labels) + 10), 10, 8, 20
    pw, ph = w - left - right, ch - top - bottom

    def X(t: float) -> float:
        return left + (t - t0) / max(t1 - t0, 1) * pw

    def Y(v: float) -> float:
        return top + ph - (v - vmin) / (vmax - vmin) * ph

    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">']
    for i, label in enumerate(y_labels):
        y = Y(vmin + (vmax - vmin) * i / 4)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_e(label)}</text>')
    for t in _time_ticks(t0, t1):
        x = X(t)
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M" if t1 - t0 <= 2 * 86400 else "%m-%d %H:%M")
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{ch - 4}" class="tick" text-anchor="middle">{label}</text>')
    dashed = [re.compile(p) for p in spec.dashed]
    slot = pw / max(1, (t1 - t0) / max(tr.interval_s, 1))
    for k, n in enumerate(names):
        color = PALETTE[k % len(PALETTE)]
        vals = values[n]
        if spec.bars:
            base = values[names[k - 1]] if spec.stack and k else [0.0] * len(xs)
            bw = max(1.0, slot * 0.8)
            for x, v, b in zip(xs, vals, base, strict=True):
                if v is None:
                    continue
                y0, y1 = Y(b or 0.0), Y(v)
                out.append(f'<rect x="{X(x) - bw / 2:.1f}" y="{min(y0, y1):.1f}" width="{bw:.1f}" '
                           f'height="{abs(y0 - y1):.1f}" fill="{color}" fill-opacity="0.85"/>')
            continue
        segments: list[list[tuple[float, float]]] = [[]]
        for x, v in zip(xs, vals, strict=True):
            if v is None:
                segments.append([])
            else:
                segments[-1].append((X(x), Y(v)))
        style = ' stroke-dasharray="6 4"' if any(p.search(n) for p in dashed) else ""
        for seg in segments:
            if not seg:
                continue
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            if len(seg) == 1:
                out.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="2" fill="{color}"/>')
            if spec.stack:
                prev = values[names[k - 1]] if k else None
                lower = ([(X(x), Y(p or 0.0)) for x, p in zip(xs, prev, strict=True)] if prev
                         else [(X(x), Y(0.0)) for x in xs])
                xs_seg = {round(x, 1) for x, _ in seg}
                back = [(x, y) for x, y in reversed(lower) if round(x, 1) in xs_seg]
                poly = pts + " " + " ".join(f"{x:.1f},{y:.1f}" for x, y in back)
                out.append(f'<polygon points="{poly}" fill="{color}" fill-opacity="0.35" stroke="none"/>')
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.4"{style}/>')
    # legend
    per_row = max(1, w // 190)
    shown = names[: per_row * legend_rows]
    for k, n in enumerate(shown):
        lx = 8 + (k % per_row) * 190
        ly = ch + 14 + (k // per_row) * 18
        label = n if len(n) <= 26 else n[:25] + "…"
        if k == len(shown) - 1 and len(names) > len(shown):
            label = f"+{len(names) - len(shown) + 1} more"
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="12" height="3" fill="{PALETTE[k % len(PALETTE)]}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly - 3}" class="legend">{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram_svg(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]], w: int, h: int) -> str:
    series = {c: [float(r[i]) for r in rows if _is_num(r[i])] for i, c in enumerate(columns)}
    allv = [v for vs in series.values() for v in vs]
    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">']
    if not allv:
        return out[0] + '<text x="50%" y="50%" class="nodata" text-anchor="middle">No data</text></svg>'
    lo, hi = min(allv), max(allv)
    buckets = 20
    width = (hi - lo) / buckets or 1.0
    counts = {c: [0] * buckets for c in series}
    for c, vs in series.items():
        for v in vs:
            counts[c][min(buckets - 1, int((v - lo) / width))] += 1
    cmax = _nice_max(max(max(v) for v in counts.values()))
    left, bottom, top = 44, 38, 8
    pw, ph = w - left - 10, h - bottom - top
    bw = pw / buckets
    for i in range(5):
        y = top + ph - ph * i / 4
        out.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_short(cmax * i / 4)}</text>')
    for k, (c, cs) in enumerate(counts.items()):
        color = PALETTE[k % len(PALETTE)]
        for b, n in enumerate(cs):
            bh = ph * n / cmax
            out.append(f'<rect x="{left + b * bw + 1:.1f}" y="{top + ph - bh:.1f}" width="{bw - 2:.1f}" '
                       f'height="{bh:.1f}" fill="{color}" fill-opacity="0.55"/>')
        out.append(f'<rect x="{8 + k * 160}" y="{h - 12}" width="12" height="3" fill="{color}"/>')
        out.append(f'<text x="{24 + k * 160}" y="{h - 7}" class="legend">{_e(c)}</text>')
    for b in range(0, buckets + 1, 5):
        anchor = "end" if b == buckets else "start" if b == 0 else "middle"
        out.append(f'<text x="{left + b * bw:.1f}" y="{top + ph + 14}" class="tick" text-anchor="{anchor}">'
                   f'{_short(lo + b * width)}</text>')
    out.append("</svg>")
    return "".join(out)


def stat_html(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    row = rows[0] if rows else [None] * len(columns)
    cells = []
    fixed = dict(spec.columns_colors)
    for c, v in zip(columns, row, strict=True):
        color = COLORS.get(fixed[c], fixed[c]) if c in fixed else _threshold_color(spec, v, COLORS["blue"])
        cells.append(f'<div class="stat"><div class="stat-value" style="color:{color}">{_e(fmt(v, _unit(spec, c)))}'
                     f'</div><div class="stat-name">{_e(c)}</div></div>')
    return f'<div class="stats">{"".join(cells)}</div>'


def table_html(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return '<div class="nodata">No data</div>'
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for r in rows[:MAX_TABLE_ROWS]:
        cells = []
        for c, v in zip(columns, r, strict=True):
            text = _e(fmt(v, _unit(spec, c)))
            if c in spec.gauges and _is_num(v):
                color = COLORS["red"] if v < 0.9 else COLORS["yellow"] if v < 0.99 else COLORS["green"]
                cells.append(f'<td class="num"><div class="gauge"><div style="width:{max(0, min(1, v)) * 100:.0f}%;'
                             f'background:{color}"></div></div>{text}</td>')
            elif c in spec.scores:
                color = _threshold_color(D.PanelSpec("", "", "stat", (), thresholds=D.QUALITY_THRESHOLDS), v)
                cells.append(f'<td class="num" style="color:{color};font-weight:600">{text}</td>')
            else:
                cells.append(f'<td class="{"num" if _is_num(v) else ""}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f'<div class="more">{len(rows) - MAX_TABLE_ROWS} more rows</div>'
            if len(rows) > MAX_TABLE_ROWS else "")
    return f'<div class="table"><table><tr>{head}</tr>{"".join(body)}</table>{more}</div>'


def bargauge_html(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return '<div class="nodata">No data</div>'
    value_col = len(columns) - 1
    vmax = spec.max or _nice_max(max((float(r[value_col]) for r in rows if _is_num(r[value_col])), default=1.0))
    out = []
    for r in rows[:MAX_TABLE_ROWS]:
        v = r[value_col]
        color = _threshold_color(spec, v, COLORS["blue"])
        width = 0 if not _is_num(v) else min(1.0, max(0.0, float(v)) / vmax) * 100
        out.append(f'<div class="bar"><div class="bar-name">{_e(r[0])}</div><div class="bar-track">'
                   f'<div style="width:{width:.1f}%;background:{color}"></div></div>'
                   f'<div class="bar-value" style="color:{color}">{_e(fmt(v, spec.unit))}</div></div>')
    return '<div class="bars">' + "".join(out) + "</div>"


# -- pages ------------------------------------------------------------------------------------

CSS = """
body { background:#111217; color:#CCCCDC; font:13px/1.35 Inter, "Helvetica Neue", Arial, sans-serif; margin:0; }
header { padding:14px 18px 6px; } h1 { font-size:20px; margin:0 0 4px; font-weight:500; }
.meta { color:#8E8E9E; font-size:12px; } .meta b { color:#CCCCDC; font-weight:500; }
.grid { display:grid; grid-template-columns:repeat(24, 1fr); grid-auto-rows:30px; gap:0; padding:4px 10px 20px;
        width:1580px; }
.panel { background:#181B1F; border:1px solid #2B2D33; border-radius:3px; margin:4px; overflow:hidden;
         display:flex; flex-direction:column; }
.panel h2 { font-size:13px; font-weight:500; margin:0; padding:6px 8px 2px; white-space:nowrap; overflow:hidden;
            text-overflow:ellipsis; }
.body { flex:1; overflow:hidden; position:relative; padding:0 4px 4px; }
.row { grid-column:1 / span 24; font-size:15px; font-weight:500; padding:8px 6px 0; border-bottom:1px solid #2B2D33;
       margin:0 4px; }
svg .grid { stroke:#2B2D33; stroke-width:1; } svg .tick, svg .legend { fill:#9FA0AA; font-size:11px; }
svg .legend { fill:#CCCCDC; }
.nodata { color:#8E8E9E; height:100%; display:flex; align-items:center; justify-content:center; }
.stats { display:flex; height:100%; align-items:center; justify-content:space-around; }
.stat { text-align:center; } .stat-value { font-size:26px; font-weight:500; } .stat-name { color:#9FA0AA; }
.table { height:100%; overflow:hidden; } table { border-collapse:collapse; width:100%; font-size:12px; }
th { text-align:left; color:#6E9FFF; font-weight:500; padding:4px 6px; border-bottom:1px solid #2B2D33;
     white-space:nowrap; }
td { padding:3px 6px; border-bottom:1px solid #202226; white-space:nowrap; max-width:340px; overflow:hidden;
     text-overflow:ellipsis; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.gauge { display:inline-block; width:70px; height:8px; background:#2B2D33; margin-right:6px; vertical-align:middle; }
.gauge div { height:100%; } .more { color:#8E8E9E; padding:4px 6px; }
.bars { padding:4px 6px; } .bar { display:flex; align-items:center; margin:3px 0; }
.bar-name { width:38%; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; font-size:12px; }
.bar-track { flex:1; height:12px; background:#22252B; margin:0 8px; } .bar-track div { height:100%; }
.bar-value { width:80px; text-align:right; font-size:12px; }
.panel-error { color:#F2495C; padding:8px; white-space:pre-wrap; font-family:monospace; font-size:11px; }
.nav a { color:#6E9FFF; margin-right:14px; text-decoration:none; }
"""


def _panel_html(spec: D.PanelSpec, x: int, y: int, columns: Sequence[str] | None,
                rows: Sequence[Sequence[Any]], error: str | None, tr: M.TimeRange) -> str:
    w_px = int(spec.w * COL_W - 20)
    h_px = int(spec.h * ROW_H - 34)
    if error is not None:
        body = f'<div class="panel-error">{_e(error)}</div>'
    elif columns is None:
        body = '<div class="nodata">No data</div>'
    elif spec.viz == "stat":
        body = stat_html(spec, columns, rows)
    elif spec.viz == "timeseries":
        body = (timeseries_svg(spec, columns, rows, w_px, h_px, tr) if rows
                else '<div class="nodata">No data</div>')
    elif spec.viz == "histogram":
        body = histogram_svg(spec, columns, rows, w_px, h_px)
    elif spec.viz == "bargauge":
        body = bargauge_html(spec, columns, rows)
    else:
        body = table_html(spec, columns, rows)
    title = f' title="{_e(spec.description)}"' if spec.description else ""
    return (f'<div class="panel {spec.viz}" style="grid-column:{x + 1} / span {spec.w};'
            f'grid-row:{y + 1} / span {spec.h}"><h2{title}>{_e(spec.title)}</h2>'
            f'<div class="body">{body}</div></div>')


def _positions(d: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(kind, x, y) in the dashboard's own grid, rows and panels in order."""
    out = []
    for p in d.get("panels", []):
        out.append(("row" if p.get("type") == "row" else "panel", p["gridPos"]["x"], p["gridPos"]["y"]))
        for inner in p.get("panels", []):
            out.append(("panel", inner["gridPos"]["x"], inner["gridPos"]["y"]))
    return out


def render_dashboard(store: Store, spec: D.DashSpec, d: Mapping[str, Any], variables: Mapping[str, M.VarValue],
                     tr: M.TimeRange) -> tuple[str, int]:
    """(HTML page, its height in pixels)."""
    parts, bottom = [], 0
    positions = iter(_positions(d))
    for item in spec.items:
        kind, x, y = next(positions)
        if isinstance(item, D.Row):
            parts.append(f'<div class="row" style="grid-row:{y + 1}">{_e(item.title)}</div>')
            bottom = max(bottom, y + 1)
            continue
        assert kind == "panel"
        columns: list[str] | None = None
        rows: list[tuple[Any, ...]] = []
        error = None
        try:
            columns, rows = store.query(M.render(item.sql, variables, tr))
        except StoreError as exc:
            error = str(exc)
        parts.append(_panel_html(item, x, y, columns, rows, error, tr))
        bottom = max(bottom, y + item.h)
    shown = {k: ("All" if isinstance(v, M.Raw) else v) for k, v in variables.items()
             if k in ("prefix", "stream", "asset", "source", "entity", "model") and k in spec.variables}
    var_text = " · ".join(f"{k} <b>{_e(v if isinstance(v, str) else ', '.join(v))}</b>" for k, v in shown.items())
    nav = " ".join(f'<a href="{s.uid}.html">{_e(s.title.split("·")[-1].strip())}</a>' for s in D.DASHBOARDS)
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(spec.title)}</title>'
            f"<style>{CSS}</style></head><body><header><h1>{_e(spec.title)}</h1>"
            f'<div class="meta">{_e(spec.description)}</div>'
            f'<div class="meta">{tr.start:%Y-%m-%d %H:%M} → {tr.end:%Y-%m-%d %H:%M} UTC · interval {tr.interval_s}s · '
            f'{var_text} · refresh {spec.refresh} · preview rendered from the same SQL</div>'
            f'<div class="meta nav">{nav}</div></header>'
            f'<div class="grid">{"".join(parts)}</div></body></html>')
    return page, 110 + bottom * ROW_H + 30


def _newest(store: Store, spec: D.DashSpec, prefix: str) -> dt.datetime | None:
    if "entity" not in spec.variables:
        # valid events: one whose time could not be read is stored at its ingest time (now)
        sql = "SELECT max(ts) FROM ingest_log WHERE startsWith(topic, {p:String}) AND status = 'valid'"
        (newest,), = store.rows(sql, {"p": prefix})
    else:
        (newest,), = store.rows("SELECT if(count() = 0, NULL, max(scored_at)) FROM scores "
                                "WHERE topic_prefix = {p:String}", {"p": prefix})
    if newest is None or newest.year < 2000:
        return None
    return newest.replace(tzinfo=dt.UTC) if newest.tzinfo is None else newest


def time_range_for(store: Store, spec: D.DashSpec, d: Mapping[str, Any], prefix: str) -> M.TimeRange:
    """The dashboard's default span, ending just after the newest data (a replayed history
    previews as it happened), or now when there is none."""
    newest = _newest(store, spec, prefix)
    # a minute past the newest event: live, what was stored at ingest time just after it shows too
    end = M.ceil_minute(newest + dt.timedelta(minutes=1)) if newest else M.ceil_minute(dt.datetime.now(dt.UTC))
    start, end = M.relative_range(d, end)
    return M.TimeRange.around(start, end)


def write(store: Store, out_dir: Path, *, prefix: str = "stocktake.", time_range: M.TimeRange | None = None,
          overrides: Mapping[str, M.VarValue] | None = None, png: bool = False) -> list[Path]:
    """Write one HTML page per dashboard (and PNGs when asked) plus index.html; returns the pages."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreviewError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    built = D.build_all()
    written, sizes = [], {}
    for spec in D.DASHBOARDS:
        d = built[spec.filename]
        variables = M.dashboard_variables(d, {"prefix": prefix, **(overrides or {})})
        tr = time_range or time_range_for(store, spec, d, prefix)
        page, height = render_dashboard(store, spec, d, variables, tr)
        path = out_dir / f"{spec.uid}.html"
        path.write_text(page, encoding="utf-8")
        written.append(path)
        sizes[path] = height
    index = out_dir / "index.html"
    links = "".join(f'<li><a href="{s.uid}.html">{_e(s.title)}</a> — {_e(s.description)}</li>' for s in D.DASHBOARDS)
    index.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>stocktake dashboards</title>'
                     f'<style>{CSS} li {{ margin:8px 0; }} a {{ color:#6E9FFF; }}</style></head><body><header>'
                     f'<h1>stocktake dashboards (static preview)</h1></header><ul>{links}</ul></body></html>',
                     encoding="utf-8")
    written.append(index)
    if png:
        for path, height in sizes.items():
            screenshot(path, path.with_suffix(".png"), height)
    return written


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, height: int) -> None:
    browser = chromium()
    if browser is None:
        raise PreviewError("PNG needs headless Chromium (Debian package `chromium`); the HTML is written")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={PAGE_W},{height}", f"--screenshot={png.resolve()}", page.resolve().as_uri()]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise PreviewError(f"Chromium failed to render {page.name}: {exc}") from None
