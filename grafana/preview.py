"""A static preview of the dashboards: every panel's SQL run on the store (chDB or a server),
rendered to HTML (templates/dashboard.html) with inline SVG (stocktake.charts), and optionally
to PNG with headless Chromium.

The SQL is the dashboards' own, expanded the way Grafana and the ClickHouse plugin expand it
(grafana.macros), with every multi-value variable on "All". Charts follow the panel type:
stat values, time series (long frames turned wide as Grafana does: string columns become
series), tables, bar gauges and histograms. The layout is the dashboards' grid.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from stocktake import charts
from stocktake.clickhouse.store import Store, StoreError
from stocktake.grafana import dashboards as D
from stocktake.grafana import macros as M
from stocktake.settings import Settings

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


# -- charts (stocktake.charts, in the dashboards' dark theme) ----------------------------------


def timeseries_svg(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]], w: int, h: int,
                   tr: M.TimeRange) -> str | None:
    if not rows:
        return None
    times, wide = long_to_wide(columns, rows)
    dashed = [re.compile(p) for p in spec.dashed]
    series = [charts.Series(name, PALETTE[k % len(PALETTE)], [float(v) if _is_num(v) else None for v in values],
                            dashed=any(p.search(name) for p in dashed))
              for k, (name, values) in enumerate(wide.items())]
    return charts.time_series([t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in times], series, label=spec.title,
                              width=w, height=h, theme=charts.DARK, legend_above=False, legend_rows=3,
                              x_range=(tr.start, tr.end), y_min=spec.min, y_max=spec.max,
                              y_format=lambda v: fmt(v, spec.unit), whole=False, stack=spec.stack,
                              bars=dt.timedelta(seconds=max(tr.interval_s, 1)) if spec.bars else None, size_px=True)


def histogram_svg(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]], w: int,
                  h: int) -> str | None:
    values = {c: [float(r[i]) for r in rows if _is_num(r[i])] for i, c in enumerate(columns)}
    if not any(values.values()):
        return None
    return charts.histogram(values, PALETTE, label=spec.title, width=w, height=h, value_label=_short)


def bargauge_svg(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]], w: int) -> str | None:
    if not rows:
        return None
    bars = [(str(r[0]), float(r[-1]) if _is_num(r[-1]) else 0.0,
             _threshold_color(spec, r[-1], COLORS["blue"])) for r in rows[:MAX_TABLE_ROWS]]
    return charts.hbars(bars, label=spec.title, width=w, theme=charts.DARK, value_label=lambda v: fmt(v, spec.unit),
                        top_value=spec.max, bar_h=12, coloured_values=True,
                        size_px=True)


def stat_cells(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, str]]:
    row = rows[0] if rows else [None] * len(columns)
    fixed = dict(spec.columns_colors)
    return [{"name": c, "text": fmt(v, _unit(spec, c)),
             "color": COLORS.get(fixed[c], fixed[c]) if c in fixed else _threshold_color(spec, v, COLORS["blue"])}
            for c, v in zip(columns, row, strict=True)]


def table_cells(spec: D.PanelSpec, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[dict[str, Any]]]:
    """The first MAX_TABLE_ROWS rows as cells: text, class, style, and a gauge (width %, colour)."""
    scores = D.PanelSpec("", "", "stat", (), thresholds=D.QUALITY_THRESHOLDS)
    out = []
    for r in rows[:MAX_TABLE_ROWS]:
        cells = []
        for c, v in zip(columns, r, strict=True):
            cell: dict[str, Any] = {"text": fmt(v, _unit(spec, c)), "cls": "num" if _is_num(v) else "", "style": "",
                                    "gauge": None}
            if c in spec.gauges and _is_num(v):
                color = COLORS["red"] if v < 0.9 else COLORS["yellow"] if v < 0.99 else COLORS["green"]
                cell["gauge"] = (f"{max(0, min(1, v)) * 100:.0f}", color)
            elif c in spec.scores:
                cell.update(cls="num", style=f"color:{_threshold_color(scores, v)};font-weight:600")
            cells.append(cell)
        out.append(cells)
    return out


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
.panel-error { color:#F2495C; padding:8px; white-space:pre-wrap; font-family:monospace; font-size:11px; }
.nav a { color:#6E9FFF; margin-right:14px; text-decoration:none; }
"""


def _panel(spec: D.PanelSpec, x: int, y: int, columns: Sequence[str] | None, rows: Sequence[Sequence[Any]],
           error: str | None, tr: M.TimeRange) -> dict[str, Any]:
    """What the template draws for one panel: its place, title and body."""
    w_px = int(spec.w * COL_W - 20)
    h_px = int(spec.h * ROW_H - 34)
    panel: dict[str, Any] = {"row": False, "viz": spec.viz, "x": x, "y": y, "w": spec.w, "h": spec.h,
                             "title": spec.title, "description": spec.description, "kind": "nodata"}
    if error is not None:
        panel.update(kind="error", error=error)
    elif columns is None:
        pass
    elif spec.viz == "stat":
        panel.update(kind="stat", cells=stat_cells(spec, columns, rows))
    elif spec.viz in ("timeseries", "histogram", "bargauge"):
        chart = (timeseries_svg(spec, columns, rows, w_px, h_px, tr) if spec.viz == "timeseries"
                 else histogram_svg(spec, columns, rows, w_px, h_px) if spec.viz == "histogram"
                 else bargauge_svg(spec, columns, rows, w_px))
        if chart is not None:
            panel.update(kind="chart", chart=Markup(chart))
    elif rows:
        panel.update(kind="table", columns=columns, rows=table_cells(spec, columns, rows),
                     more=max(0, len(rows) - MAX_TABLE_ROWS))
    return panel


def _positions(d: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(kind, x, y) in the dashboard's own grid, rows and panels in order."""
    out = []
    for p in d.get("panels", []):
        out.append(("row" if p.get("type") == "row" else "panel", p["gridPos"]["x"], p["gridPos"]["y"]))
        for inner in p.get("panels", []):
            out.append(("panel", inner["gridPos"]["x"], inner["gridPos"]["y"]))
    return out


@cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("stocktake.grafana"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.globals["css"] = Markup(CSS)
    return env


def render_dashboard(store: Store, spec: D.DashSpec, d: Mapping[str, Any], variables: Mapping[str, M.VarValue],
                     tr: M.TimeRange) -> tuple[str, int]:
    """(HTML page, its height in pixels)."""
    items: list[dict[str, Any]] = []
    bottom = 0
    positions = iter(_positions(d))
    for item in spec.items:
        kind, x, y = next(positions)
        if isinstance(item, D.Row):
            items.append({"row": True, "y": y, "title": item.title})
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
        items.append(_panel(item, x, y, columns, rows, error, tr))
        bottom = max(bottom, y + item.h)
    shown = [(k, "All" if isinstance(v, M.Raw) else v if isinstance(v, str) else ", ".join(v))
             for k, v in variables.items()
             if k in ("prefix", "stream", "asset", "source", "entity", "model") and k in spec.variables]
    nav = [(s.uid, s.title.split("·")[-1].strip()) for s in D.DASHBOARDS]
    page = _templates().get_template("dashboard.html").render(spec=spec, tr=tr, variables=shown, nav=nav,
                                                               items=items)
    return page, 110 + bottom * ROW_H + 30


def _newest(store: Store, spec: D.DashSpec, prefix: str) -> dt.datetime | None:
    if "entity" not in spec.variables:
        # valid events (one whose time could not be read is stored at its ingest time, now):
        # the newest per partition, kept by partition_rollup
        sql = "SELECT max(valid_ts_max) FROM partition_rollup WHERE startsWith(topic, {p:String})"
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


DEFAULT_PREFIX = Settings().topic_dot_prefix   # `stocktake grafana preview` passes the deployment's


def write(store: Store, out_dir: Path, *, prefix: str = DEFAULT_PREFIX, time_range: M.TimeRange | None = None,
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
    index.write_text(_templates().get_template("index.html").render(dashboards=D.DASHBOARDS), encoding="utf-8")
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
