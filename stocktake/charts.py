"""Static SVG charts drawn with matplotlib, for the HTML report and the Grafana previews.

Data in, inline SVG text out: no script, no external reference (clipping is turned off, so
not even a `url(#…)` fragment), text kept as <text> so it stays selectable, and a <title>
tooltip on the marks that carry one. Layout is in pixels (1 px = 1 pt = 1 SVG unit), so a
chart keeps the sizes it is given. matplotlib is imported inside the functions: the CLI
starts without it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHAR_W = 6.6   # px per character at font size 12, to size label columns


@dataclass(frozen=True)
class Theme:
    text: str
    axis: str
    grid: str
    empty: str       # the track behind bars, cells without events
    muted: str       # the score part of quality bars, the events strip
    font_size: float


LIGHT = Theme(text="#212529", axis="#868e96", grid="#e9ecef", empty="#f1f3f5", muted="#adb5bd", font_size=12)
DARK = Theme(text="#CCCCDC", axis="#9FA0AA", grid="#2B2D33", empty="#22252B", muted="#8E8E9E", font_size=11)
# completeness 0 -> 0.5 -> 1
SHARE_COLOURS = ("#e03131", "#fcc419", "#2f9e44")


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: Sequence[float | None]
    tip: str = ""
    dashed: bool = False


def count_label(n: float) -> str:
    """12, 1,234, 45k, 1.2M: axis and legend numbers."""
    if abs(n) >= 1_000_000:
        return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
    if abs(n) >= 10_000:
        return f"{n / 1000:.0f}k"
    return f"{n:,.0f}" if n == int(n) else f"{n:,.1f}"


def label_width(labels: Sequence[str], least: int, most: int) -> int:
    return min(most, max(least, int(max((len(s) for s in labels), default=4) * CHAR_W) + 14))


class _Tips:
    """Tooltips by artist: each marked artist gets a gid, its <g> a <title> once saved."""

    def __init__(self) -> None:
        self.by_gid: dict[str, str] = {}

    def add(self, artist: Artist, text: str) -> None:
        gid = f"tip{len(self.by_gid)}"
        artist.set_gid(gid)
        self.by_gid[gid] = text


@contextmanager
def _figure(width: float, height: float, theme: Theme) -> Iterator[Figure]:
    import matplotlib
    from matplotlib.figure import Figure

    style = {
        "svg.fonttype": "none", "svg.hashsalt": "stocktake",     # <text>; ids stable run to run
        "text.parse_math": False,                                 # "$" in a field name is text
        "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "font.size": theme.font_size,
        "text.color": theme.text, "axes.labelcolor": theme.axis, "axes.edgecolor": theme.axis,
        "xtick.color": theme.axis, "ytick.color": theme.axis, "xtick.labelcolor": theme.axis,
        "ytick.labelcolor": theme.axis, "grid.color": theme.grid, "grid.linewidth": 1,
        "axes.facecolor": "none", "figure.facecolor": "none", "savefig.facecolor": "none",
        "axes.spines.top": False, "axes.spines.right": False, "axes.spines.left": False,
        "legend.frameon": False, "date.converter": "concise",
        "axes.autolimit_mode": "round_numbers",                   # the value axis ends on a tick
    }
    with matplotlib.rc_context(cast(Any, style)):   # its stubs list the keys as literals
        yield Figure(figsize=(width / 72, height / 72), dpi=72)


def _axes(fig: Figure, left: float, right: float, top: float, bottom: float) -> Axes:
    """Axes placed by pixel margins."""
    w, h = fig.get_size_inches() * 72
    return fig.add_axes((left / w, bottom / h, (w - left - right) / w, (h - top - bottom) / h))


def _svg(fig: Figure, label: str, tips: _Tips, size: tuple[int, int] | None = None) -> str:
    """The figure as inline SVG: no prolog, no namespaces with URLs, tooltips in place; it
    scales with the page unless a pixel size is given."""
    for artist in fig.findobj():
        artist.set_clip_on(False)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    box = re.search(r'viewBox="([^"]*)"', text)
    assert box
    sized = f'width="{size[0]}" height="{size[1]}"' if size else 'width="100%"'
    text = re.sub(r"<svg [^>]*>", f'<svg viewBox="{box[1]}" {sized} role="img" aria-label="{escape(label)}">',
                  text, count=1)
    for gid, tip in tips.by_gid.items():
        text = text.replace(f'<g id="{gid}">', f"<g><title>{escape(tip, quote=False)}</title>", 1)
    # Group ids (figure_1, patch_2, …) repeat in every chart of a page and nothing refers to
    # them (markers are referred to by <path> ids); matplotlib also indents every element and
    # breaks path data into lines.
    text = re.sub(r'<g id="[^"]*">', "<g>", text)
    return re.sub(r">\s+<", "><", text).replace(" \n", " ").replace("\n", " ")


def time_series(times: Sequence[dt.datetime], series: Sequence[Series], *, label: str, width: int, height: int,
                theme: Theme = LIGHT, unit: str = "", legend_above: bool = True, legend_rows: int = 1,
                x_range: tuple[dt.datetime, dt.datetime] | None = None, y_min: float | None = None,
                y_max: float | None = None, y_format: Callable[[float], str] = count_label, whole: bool = True,
                stack: bool = False, bars: dt.timedelta | None = None, size_px: bool = False) -> str:
    """Series over a shared time axis: lines (None breaks a line), stacked areas, or bars of the
    given width; the legend above (one row) or below (at most legend_rows rows)."""
    from matplotlib.dates import date2num
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    per_row = len(series) if legend_above else max(1, width // 190)
    rows = 0 if legend_above else min(legend_rows, -(-len(series) // per_row))
    finite = [float(v) for s in series for v in s.values if v is not None]
    ends = [v for v in (y_min, y_max, max(finite, default=0.0), min(finite, default=0.0)) if v is not None]
    left = max(40, 7 * max(len(y_format(v)) for v in ends) + 14)
    top, bottom = (28 if legend_above or unit else 8), 36 + 18 * rows
    x = date2num(list(times))
    with _figure(width, height, theme) as fig:
        ax = _axes(fig, left, 16, top, bottom)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=whole, min_n_ticks=3))   # before autoscaling
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: y_format(v)))
        tips = _Tips()
        handles: list[Any] = []
        base = [0.0] * len(x)
        for s in series:
            values = [float("nan") if v is None else float(v) for v in s.values]
            if stack:
                values = [b + (0.0 if v != v else v) for b, v in zip(base, values, strict=True)]
            if bars is not None:
                bottoms = base if stack else [0.0] * len(x)
                marks: list[Artist] = list(ax.bar(x, [v - b for v, b in zip(values, bottoms, strict=True)],
                                                  bottom=bottoms, width=bars / dt.timedelta(days=1) * 0.8,
                                                  color=s.colour, alpha=0.85))
            elif stack:
                ax.fill_between(x, base, values, color=s.colour, alpha=0.35, linewidth=0)
                marks = [*ax.plot(x, values, color=s.colour, linewidth=1.4)]
            else:
                marks = [*ax.plot(x, values, color=s.colour, linewidth=1.6 if legend_above else 1.4,
                                  linestyle=(0, (6, 4)) if s.dashed else "-", solid_joinstyle="round",
                                  marker="o", markersize=4, markevery=_isolated(values))]
            for mark in marks if s.tip else []:
                tips.add(mark, s.tip)
            base = values if stack else base
            handles.append(Patch(color=s.colour, label=s.name) if legend_above
                           else Line2D([], [], color=s.colour, linewidth=3, label=_short_name(s.name)))
        shown = per_row * max(rows, 1)
        if not legend_above and len(handles) > shown:
            handles = [*handles[:shown - 1], Line2D([], [], color="none", label=f"+{len(handles) - shown + 1} more")]
        if handles and legend_above:
            ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1), ncols=per_row, handlelength=1,
                      handleheight=1, borderaxespad=0.2, columnspacing=1.5)
        elif handles:
            ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 0), bbox_transform=fig.transFigure,
                      ncols=per_row, handlelength=1.2, borderaxespad=0.1, columnspacing=1.2)
        if unit:
            ax.set_title(unit, loc="left", color=theme.axis, fontsize=theme.font_size, pad=8)
        if x_range:
            ax.set_xlim(date2num(x_range[0]), date2num(x_range[1]))
        elif len(x):
            ax.set_xlim(x[0] - 1 / 1440, x[0] + 1 / 1440) if len(x) == 1 else ax.set_xlim(x[0], x[-1])
        ax.set_ylim(y_min if y_min is not None else min(0.0, *finite), y_max)
        ax.xaxis_date()
        ax.tick_params(axis="y", length=0)
        ax.grid(True, axis="y")
        ax.set_axisbelow(True)
        return _svg(fig, label, tips, (width, height) if size_px else None)


def _isolated(values: Sequence[float]) -> list[int]:
    """Values with no neighbour to draw a line to (NaN is missing): they get a dot."""
    def missing(j: int) -> bool:
        return not 0 <= j < len(values) or values[j] != values[j]
    return [i for i in range(len(values)) if not missing(i) and missing(i - 1) and missing(i + 1)]


def _short_name(name: str) -> str:
    return name if len(name) <= 26 else name[:25] + "…"


def heatmap(fields: Sequence[str], starts: Sequence[dt.datetime], step: dt.timedelta,
            shares: Sequence[Sequence[float | None]], events: Sequence[int], *, label: str, bucket: str,
            width: int = 1080, theme: Theme = LIGHT) -> str:
    """Rows = fields, columns = time buckets of `step`; a bar strip on top shows events per bucket."""
    from matplotlib.colors import LinearSegmentedColormap, to_hex
    from matplotlib.dates import date2num
    from matplotlib.patches import Patch, Rectangle

    colour_map = LinearSegmentedColormap.from_list("share", SHARE_COLOURS)

    def colour(share: float | None) -> str:
        return theme.empty if share is None else to_hex(colour_map(min(1.0, max(0.0, share))))

    cell_h, strip_h, top, legend_h = 16, 28, 8, 64
    left = label_width(fields, 60, 200)
    height = top + strip_h + 6 + cell_h * len(fields) + legend_h
    x = date2num(list(starts))
    days = step / dt.timedelta(days=1)
    with _figure(width, height, theme) as fig:
        tips = _Tips()
        strip = _axes(fig, left, 16, top, height - top - strip_h)
        peak = max(events, default=0) or 1
        # one Rectangle per mark, each with its tooltip; add_artist skips bar()'s per-call
        # bookkeeping (units, containers, data limits: the limits are set below), ~10x faster here
        for xj, start, count in zip(x, starts, events, strict=True):
            bar = strip.add_artist(Rectangle((xj, 0), days * 0.95, count, facecolor=theme.muted, linewidth=0))
            tips.add(bar, f"{start:%Y-%m-%d %H:%M}: {count:,} events")
        strip.set_ylim(0, peak)
        strip.set_axis_off()
        strip.text(-0.01, 0.1, "events", transform=strip.transAxes, ha="right", color=theme.axis)
        grid = _axes(fig, left, 16, top + strip_h + 6, legend_h)
        for i, name in enumerate(fields):
            for xj, start, share in zip(x, starts, shares[i], strict=True):
                cell = grid.add_artist(Rectangle((xj, i - 0.47), days, 0.94, facecolor=colour(share), linewidth=0))
                tip = "no events" if share is None else f"{share * 100:.1f}% present"
                tips.add(cell, f"{name} · {start:%Y-%m-%d %H:%M}: {tip}")
        for axes in (strip, grid):
            axes.set_xlim(x[0] if len(x) else 0, (x[-1] + days) if len(x) else 1)
        grid.set_ylim(len(fields) - 0.5, -0.5)
        grid.set_yticks(range(len(fields)), fields, color=theme.text)
        grid.tick_params(axis="y", length=0)
        grid.spines["bottom"].set_visible(False)
        grid.xaxis_date()
        one = {"minute": "1 minute", "hour": "1 hour", "day": "1 day", "week": "1 week", "quarter": "1 quarter"}
        swatches = [Patch(color=colour(s), label="no events" if s is None else f"{s * 100:.0f}%")
                    for s in (0.0, 0.25, 0.5, 0.75, 1.0, None)]
        grid.legend(handles=swatches, loc="lower left", bbox_to_anchor=(0, 0), bbox_transform=fig.transFigure,
                    ncols=6, handlelength=1.2, borderaxespad=0.3, alignment="left", title_fontsize=theme.font_size,
                    title=f"each column spans {one.get(bucket, bucket)} · share of events carrying the field:")
        return _svg(fig, label, tips)


def stacked_bars(rows: Sequence[tuple[str, float | None, dict[str, float]]], colours: dict[str, str], *,
                 label: str, width: int = 1080, theme: Theme = LIGHT) -> str:
    """One 0–100 bar per row: the score, then the points each component lost (in its colour)."""
    from matplotlib.patches import Patch

    bar_h, gap, top = 18, 8, 30
    height = top + len(rows) * (bar_h + gap) + 4
    with _figure(width, height, theme) as fig:
        tips = _Tips()
        ax = _axes(fig, label_width([r[0] for r in rows], 80, 300), 56, top, 4)
        for i, (name, score, lost) in enumerate(rows):
            ax.barh(i, 100, color=theme.empty, height=0.7)
            if score is None:
                ax.text(1, i, "no data", va="center", color=theme.axis)
                continue
            tips.add(ax.barh(i, score, color=theme.muted, height=0.7).patches[0], f"{name}: score {score:.1f}")
            x = score
            for component, points in lost.items():
                if points > 0:
                    part = ax.barh(i, points, left=x, color=colours.get(component, theme.axis), height=0.7)
                    tips.add(part.patches[0], f"{name}: {component} -{points:.1f} points")
                    x += points
            ax.text(101.5, i, f"{score:.1f}", va="center", fontweight="bold")
        ax.set_xlim(0, 100)
        ax.set_ylim(len(rows) - 0.5 + 0.1, -0.5 - 0.1)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], color=theme.text)
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_visible(False)
        ax.spines["bottom"].set_visible(False)
        legend = [Patch(color=theme.muted, label="score"),
                  *(Patch(color=c, label=f"lost: {name}") for name, c in colours.items())]
        ax.legend(handles=legend, loc="lower left", bbox_to_anchor=(0, 1), ncols=len(legend), handlelength=1,
                  handleheight=1, borderaxespad=0.2, columnspacing=1.5)
        return _svg(fig, label, tips)


def hbars(rows: Sequence[tuple[str, float, str]], *, label: str, width: int = 1080, theme: Theme = LIGHT,
          value_label: Callable[[float], str] = lambda v: f"{v:,.0f}", top_value: float | None = None,
          bar_h: int = 16, coloured_values: bool = False, size_px: bool = False) -> str:
    """Horizontal bars (name, value, colour), in the order given, each with its value at its end
    (in the bar's colour when asked, as Grafana's bar gauges show it)."""
    gap = 6
    left = label_width([r[0] for r in rows], 80, min(360, width * 3 // 8))
    fit = int((left - 14) / CHAR_W)     # longer names are cut, whole in the tooltip
    height = 8 + len(rows) * (bar_h + gap)
    peak = top_value or max((v for _, v, _ in rows), default=0) or 1
    with _figure(width, height, theme) as fig:
        tips = _Tips()
        ax = _axes(fig, left, 70, 4, 4)
        for i, (name, value, colour) in enumerate(rows):
            bar = ax.barh(i, max(value, peak / 1000), color=colour, height=bar_h / (bar_h + gap))
            tips.add(bar.patches[0], f"{name}: {value_label(value)}")
            ax.bar_label(bar, [value_label(value)], padding=6, color=colour if coloured_values else theme.text)
        ax.set_xlim(0, peak)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(range(len(rows)), [r[0] if len(r[0]) <= fit else r[0][:fit - 1] + "…" for r in rows],
                      color=theme.text)
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_visible(False)
        ax.spines["bottom"].set_visible(False)
        return _svg(fig, label, tips, (width, height) if size_px else None)


def histogram(columns: Mapping[str, Sequence[float]], colours: Sequence[str], *, label: str, width: int, height: int,
              theme: Theme = DARK, value_label: Callable[[float], str] = count_label, buckets: int = 20) -> str:
    """Each column's values counted in the same buckets over their common range, overlaid."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    everything = [v for values in columns.values() for v in values]
    lo, hi = min(everything), max(everything)
    hi = hi if hi > lo else lo + buckets
    with _figure(width, height, theme) as fig:
        ax = _axes(fig, 44, 10, 8, 38)
        handles = []
        for (name, values), colour in zip(columns.items(), colours, strict=False):
            ax.hist(values, bins=buckets, range=(lo, hi), color=colour, alpha=0.55, rwidth=0.9)
            handles.append(Line2D([], [], color=colour, linewidth=3, label=name))
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 0), bbox_transform=fig.transFigure,
                  ncols=max(1, width // 160), handlelength=1.2, borderaxespad=0.1)
        ax.set_xlim(lo, hi)
        ax.set_xticks([lo + (hi - lo) * k / 4 for k in range(5)])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: value_label(v)))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: count_label(v)))
        ax.tick_params(axis="y", length=0)
        ax.grid(True, axis="y")
        ax.set_axisbelow(True)
        return _svg(fig, label, _Tips(), (width, height))


@dataclass(frozen=True)
class Bar:
    """A span of time on one lane of ``lanes``."""

    lane: int
    start: dt.datetime
    end: dt.datetime
    colour: str
    tip: str = ""
    faded: bool = False


def lanes(names: Sequence[str], bars: Sequence[Bar], *, label: str, x_range: tuple[dt.datetime, dt.datetime],
          legend: Mapping[str, str] | None = None, width: int = 1080, theme: Theme = LIGHT) -> str:
    """One row per name, each bar spanning its times on its row (at least 3 px wide, so a
    short one shows); bars of one row that overlap share its height; faded bars are lighter.
    ``legend``: name -> colour, above the chart."""
    from matplotlib.dates import date2num
    from matplotlib.patches import Patch, Rectangle

    lane_h, top, bottom = 22, 30 if legend else 8, 36
    left = label_width(names, 80, 320)
    height = top + bottom + lane_h * max(1, len(names))
    lo, hi = float(date2num(x_range[0])), float(date2num(x_range[1]))
    hi = hi if hi > lo else lo + 1 / 1440
    least = (hi - lo) * 3 / max(1, width - left - 16)
    # Per lane, greedy slots: a bar takes the first slot whose last bar ended before it starts.
    spans = sorted(((b.lane, float(date2num(b.start)), max(float(date2num(b.end)), float(date2num(b.start)) + least),
                     n) for n, b in enumerate(bars)))
    slot_of: dict[int, int] = {}
    slots: dict[int, list[float]] = {}
    for lane, x0, x1, n in spans:
        ends = slots.setdefault(lane, [])
        free = next((k for k, end in enumerate(ends) if end <= x0), len(ends))
        ends[free:free + 1] = [x1]
        slot_of[n] = free
    with _figure(width, height, theme) as fig:
        tips = _Tips()
        ax = _axes(fig, left, 16, top, bottom)
        for i in range(len(names)):
            ax.add_artist(Rectangle((lo, i - 0.4), hi - lo, 0.8, facecolor=theme.empty, linewidth=0))
        for lane, x0, x1, n in spans:
            b, share = bars[n], 0.8 / len(slots[lane])
            rect = ax.add_artist(Rectangle((x0, lane - 0.4 + slot_of[n] * share), x1 - x0, share * 0.92,
                                           facecolor=b.colour, alpha=0.4 if b.faded else 0.9, linewidth=0))
            if b.tip:
                tips.add(rect, b.tip)
        ax.set_xlim(lo, hi)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_yticks(range(len(names)), list(names), color=theme.text)
        ax.tick_params(axis="y", length=0)
        ax.xaxis_date()
        ax.grid(True, axis="x")
        ax.set_axisbelow(True)
        if legend:
            ax.legend(handles=[Patch(color=c, label=n) for n, c in legend.items()], loc="lower right",
                      bbox_to_anchor=(1, 1), ncols=len(legend), handlelength=1, handleheight=1, borderaxespad=0.2,
                      columnspacing=1.5)
        return _svg(fig, label, tips)


def reliability(points: Sequence[tuple[float, float, int]], *, label: str, size: int = 260,
                theme: Theme = LIGHT, colour: str = "#1c7ed6") -> str:
    """A reliability diagram: each bin of predictions as (mean predicted, observed rate,
    count), a dot sized by its count, against the diagonal a calibrated model follows."""
    from matplotlib.ticker import FuncFormatter

    with _figure(size, size, theme) as fig:
        tips = _Tips()
        ax = _axes(fig, 44, 10, 10, 36)
        ax.plot([0, 1], [0, 1], color=theme.grid, linewidth=1, linestyle="--")
        peak = max((n for _, _, n in points), default=1)
        if points:
            xs, ys, _counts = zip(*points, strict=True)
            ax.plot(xs, ys, color=colour, linewidth=1.5)
            for x, y, n in points:
                dot = ax.scatter([x], [y], s=12 + 140 * (n / peak) ** 0.5, color=colour, zorder=3)
                tips.add(dot, f"predicted {x:.3f}, observed {y:.3f}, {n:,} examples")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed")
        ax.grid(True)
        ax.set_axisbelow(True)
        return _svg(fig, label, tips, (size, size))
