"""Inline SVG charts for the HTML report: pure functions, data in, SVG text out.

No JavaScript and no external references: every label is escaped, tooltips are
SVG <title> elements, sizes come from a viewBox so charts scale with the page.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"'
CHAR_W = 6.6   # px per character at font-size 12, for label layout
AXIS = "#868e96"
GRID = "#e9ecef"
EMPTY = "#f1f3f5"
SCORE = "#adb5bd"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _fmt(n: float) -> str:
    if abs(n) >= 1_000_000:
        return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
    if abs(n) >= 10_000:
        return f"{n / 1000:.0f}k"
    return f"{n:,.0f}" if n == int(n) else f"{n:,.1f}"


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above value (at least 4: counts get whole ticks)."""
    if value <= 4:
        return 4.0
    exp = 10 ** math.floor(math.log10(value))
    return next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= value)


def time_label(t: dt.datetime, span: dt.timedelta, first: bool) -> str:
    if span >= dt.timedelta(days=60):
        return t.strftime("%Y-%m-%d")
    if first:
        return t.strftime("%Y-%m-%d %H:%M")
    return t.strftime("%m-%d %H:%M") if span >= dt.timedelta(days=2) else t.strftime("%H:%M")


def ticks(n: int, most: int) -> list[int]:
    """Evenly spaced indices of n points for at most ~most labels; the last point gets one when
    it is not crowded."""
    if n <= 1:
        return [0] if n else []
    step = math.ceil((n - 1) / most)
    out = list(range(0, n, step))
    if n - 1 - out[-1] >= step * 0.6:
        out.append(n - 1)
    return out


def _svg(width: int, height: int, label: str, body: list[str], extra: str = "") -> str:
    return (f'<svg viewBox="0 0 {width} {height:.0f}" width="100%" role="img" aria-label="{_e(label)}" '
            f'{FONT} font-size="12" {extra}>' + "".join(body) + "</svg>")


def line_chart(times: Sequence[dt.datetime], series: Sequence[tuple[str, str, Sequence[float]]], *,
               label: str, unit: str = "events per minute", width: int = 1080, height: int = 250) -> str:
    """Lines over a shared time axis; series are (name, colour, values)."""
    left, right, top, bottom = 56, 16, 28, 34
    pw, ph = width - left - right, height - top - bottom
    n = len(times)
    top_value = nice_max(max((max(v, default=0) for _, _, v in series), default=0))
    body = [f'<text x="{left}" y="14" fill="{AXIS}">{_e(unit)}</text>']
    steps = 4 if (top_value / 4).is_integer() else 5      # whole tick values: 250 -> 50s, 10 -> 2s
    for i in range(steps + 1):
        y = top + ph - ph * i / steps
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{AXIS}">'
                    f"{_e(_fmt(top_value * i / steps))}</text>")

    def x(i: int) -> float:
        return left + (pw / 2 if n == 1 else pw * i / (n - 1))

    if n:
        span = times[-1] - times[0]
        for i in ticks(n, 6):
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            body.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top + ph}" y2="{top + ph + 4}" '
                        f'stroke="{AXIS}"/><text x="{x(i):.1f}" y="{top + ph + 18}" text-anchor="{anchor}" '
                        f'fill="{AXIS}">{_e(time_label(times[i], span, i == 0))}</text>')
    legend_x = float(width - right)
    for name, colour, values in reversed(series):
        text = f"{name} {_fmt(sum(values))}"
        legend_x -= len(text) * CHAR_W + 26
        body.append(f'<rect x="{legend_x:.1f}" y="5" width="12" height="12" rx="2" fill="{_e(colour)}"/>'
                    f'<text x="{legend_x + 17:.1f}" y="15">{_e(text)}</text>')
        if not values:
            continue
        points = " ".join(f"{x(i):.1f},{top + ph - ph * v / top_value:.1f}" for i, v in enumerate(values))
        shape = (f'<polyline points="{points}" fill="none" stroke="{_e(colour)}" stroke-width="1.6" '
                 f'stroke-linejoin="round"/>' if n > 1 else
                 f'<circle cx="{x(0):.1f}" cy="{top + ph - ph * values[0] / top_value:.1f}" r="3" '
                 f'fill="{_e(colour)}"/>')
        body.append(f"<g><title>{_e(name)}: {_e(_fmt(sum(values)))} events</title>{shape}</g>")
    body.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" stroke="{AXIS}"/>')
    return _svg(width, height, label, body)


def share_colour(share: float | None) -> str:
    """0 red -> 0.5 amber -> 1 green; None (no events) light grey."""
    if share is None:
        return EMPTY
    s = min(1.0, max(0.0, share))
    stops = ((0.0, (224, 49, 49)), (0.5, (252, 196, 25)), (1.0, (47, 158, 68)))
    (s0, c0), (s1, c1) = (stops[0], stops[1]) if s <= 0.5 else (stops[1], stops[2])
    f = (s - s0) / (s1 - s0)
    return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1, strict=True))


def heatmap(fields: Sequence[str], columns: Sequence[dt.datetime], shares: Sequence[Sequence[float | None]],
            events: Sequence[int], *, label: str, bucket: str, width: int = 1080) -> str:
    """Rows = fields, columns = time buckets; a bar strip on top shows events per bucket."""
    label_w = min(200, max(60, int(max((len(f) for f in fields), default=4) * CHAR_W) + 12))
    left, right, cell_h, strip_h, top = label_w, 16, 16, 28, 8
    n = max(1, len(columns))
    cw = (width - left - right) / n
    body = []
    peak = max(events, default=0) or 1
    for j, count in enumerate(events):
        h = strip_h * count / peak
        body.append(f'<rect x="{left + j * cw:.1f}" y="{top + strip_h - h:.1f}" width="{max(cw - 1, 0.5):.1f}" '
                    f'height="{h:.1f}" fill="#adb5bd"><title>{_e(columns[j].strftime("%Y-%m-%d %H:%M"))}: '
                    f"{count:,} events</title></rect>")
    body.append(f'<text x="{left - 8}" y="{top + strip_h - 4}" text-anchor="end" fill="{AXIS}">events</text>')
    y0 = top + strip_h + 6
    for i, name in enumerate(fields):
        y = y0 + i * cell_h
        body.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{_e(name)}</text>')
        for j, share in enumerate(shares[i]):
            tip = "no events" if share is None else f"{share * 100:.1f}% present"
            body.append(f'<rect x="{left + j * cw:.1f}" y="{y}" width="{cw + 0.3:.1f}" height="{cell_h - 1}" '
                        f'fill="{share_colour(share)}"><title>{_e(name)} · '
                        f'{_e(columns[j].strftime("%Y-%m-%d %H:%M"))}: {_e(tip)}</title></rect>')
    y_axis = y0 + cell_h * len(fields) + 16
    if columns:
        span = columns[-1] - columns[0]
        for j in ticks(len(columns), 5):
            anchor = "start" if j == 0 else "end" if j == len(columns) - 1 else "middle"
            xj = left + j * cw + (0 if j == 0 else cw if j == len(columns) - 1 else cw / 2)
            body.append(f'<text x="{xj:.1f}" y="{y_axis}" text-anchor="{anchor}" fill="{AXIS}">'
                        f"{_e(time_label(columns[j], span, j == 0))}</text>")
    legend_y = y_axis + 20
    one = {"minute": "1 minute", "hour": "1 hour", "day": "1 day", "week": "1 week", "quarter": "1 quarter"}
    legend = f"each column spans {one.get(bucket, bucket)} · share of events carrying the field:"
    body.append(f'<text x="{left}" y="{legend_y + 10}" fill="{AXIS}">{_e(legend)}</text>')
    lx = left + len(legend) * CHAR_W + 16
    for k, share in enumerate((0.0, 0.25, 0.5, 0.75, 1.0, None)):
        text = "no events" if share is None else f"{share * 100:.0f}%"
        body.append(f'<rect x="{lx + k * 78}" y="{legend_y}" width="14" height="12" fill="{share_colour(share)}"/>'
                    f'<text x="{lx + k * 78 + 19}" y="{legend_y + 10}">{text}</text>')
    return _svg(width, legend_y + 18, label, body, 'shape-rendering="crispEdges"')


def stacked_bars(rows: Sequence[tuple[str, float | None, dict[str, float]]], colours: dict[str, str], *,
                 label: str, width: int = 1080) -> str:
    """One 0–100 bar per row: the score, then the points each component lost (in its colour)."""
    label_w = min(300, max(80, int(max((len(r[0]) for r in rows), default=4) * CHAR_W) + 14))
    left, right, bar_h, gap, top = label_w, 56, 18, 8, 30
    pw = width - left - right
    body = []
    lx = left
    for name, colour in (("score", SCORE), *((f"lost: {c}", col) for c, col in colours.items())):
        body.append(f'<rect x="{lx}" y="6" width="12" height="12" rx="2" fill="{_e(colour)}"/>'
                    f'<text x="{lx + 17}" y="16">{_e(name)}</text>')
        lx += int(len(name) * CHAR_W) + 34
    for i, (name, score, lost) in enumerate(rows):
        y = top + i * (bar_h + gap)
        body.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{_e(name)}</text>'
                    f'<rect x="{left}" y="{y}" width="{pw}" height="{bar_h}" fill="{EMPTY}"/>')
        if score is None:
            body.append(f'<text x="{left + 6}" y="{y + 13}" fill="{AXIS}">no data</text>')
            continue
        body.append(f'<rect x="{left}" y="{y}" width="{pw * score / 100:.1f}" height="{bar_h}" fill="{SCORE}">'
                    f"<title>{_e(name)}: score {score:.1f}</title></rect>")
        x = left + pw * score / 100
        for component, points in lost.items():
            if points <= 0:
                continue
            w = pw * points / 100
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                        f'fill="{_e(colours.get(component, AXIS))}"><title>{_e(name)}: {_e(component)} '
                        f"-{points:.1f} points</title></rect>")
            x += w
        body.append(f'<text x="{width - right + 6}" y="{y + 13}" font-weight="600">{score:.1f}</text>')
    return _svg(width, top + len(rows) * (bar_h + gap) + 4, label, body)


def hbars(rows: Sequence[tuple[str, int]], colour: str, *, label: str, width: int = 1080) -> str:
    """Horizontal bars with their values, longest first as given."""
    label_w = min(360, max(80, int(max((len(r[0]) for r in rows), default=4) * CHAR_W) + 14))
    left, right, bar_h, gap = label_w, 70, 16, 6
    pw = width - left - right
    peak = max((v for _, v in rows), default=0) or 1
    body = []
    for i, (name, value) in enumerate(rows):
        y = 4 + i * (bar_h + gap)
        w = max(1.0, pw * value / peak)
        body.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{_e(name)}</text>'
                    f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" fill="{_e(colour)}">'
                    f"<title>{_e(name)}: {value:,}</title></rect>"
                    f'<text x="{left + w + 6:.1f}" y="{y + 12}">{value:,}</text>')
    return _svg(width, 8 + len(rows) * (bar_h + gap), label, body)
