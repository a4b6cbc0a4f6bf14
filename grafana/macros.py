"""Grafana template variables and grafana-clickhouse-datasource macros, expanded to plain SQL.

Grafana interpolates dashboard variables in the browser (``${name:format}``), then the
ClickHouse plugin's backend expands its macros (``$__timeFilter(ts)`` ...), see the plugin's
pkg/macros/macros.go. This module does both the same way, so every panel's SQL can run on
chDB in the tests and in the static preview.

Multi-value variables use a custom "All" value (``'__all__'``, quotes included). Grafana
inserts a custom all value raw, without applying the format, and the panel SQL tests for it
with ``has([${var:singlequote}], '__all__')``: "All" means every value, even values the
variable's query did not list (an empty source, an entity asset).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ALL = "__all__"
ALL_VALUE = f"'{ALL}'"  # the variables' allValue: inserted raw by Grafana


class Raw(str):
    """A value Grafana inserts as is, whatever the format (a custom all value)."""


VarValue = str | list[str] | Raw


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    interval_s: int = 60

    @classmethod
    def around(cls, start: dt.datetime, end: dt.datetime, *, min_interval_s: int = 60,
               max_points: int = 600) -> TimeRange:
        """The range with Grafana's interval: range / max data points, rounded to a nice step,
        never below the panel's min interval."""
        return cls(start, end, interval_for((end - start).total_seconds(), min_interval_s, max_points))


# Grafana's kbn.roundInterval steps, in seconds.
_NICE = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600,
         43200, 86400, 604800)


def interval_for(range_s: float, min_interval_s: int = 60, max_points: int = 600) -> int:
    raw = max(range_s / max(max_points, 1), 1)
    nice = next((s for s in _NICE if s >= raw), _NICE[-1])
    return max(nice, min_interval_s)


def _quote(value: str, quote: str) -> str:
    # As Grafana's singlequote/doublequote formats: the quote is escaped, nothing else.
    return quote + value.replace(quote, "\\" + quote) + quote


def _format(value: VarValue, fmt: str | None) -> str:
    if isinstance(value, Raw):
        return str(value)
    values = value if isinstance(value, list) else [value]
    if fmt == "singlequote":
        return ",".join(_quote(v, "'") for v in values)
    if fmt == "doublequote":
        return ",".join(_quote(v, '"') for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt in (None, "raw", "csv", "text"):
        return ",".join(values) if fmt != "text" else " + ".join(values)
    raise ValueError(f"variable format {fmt!r} is not supported here")


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def interpolate(sql: str, variables: Mapping[str, VarValue]) -> str:
    """Grafana's template-variable replacement; unknown names (and ``$__`` macros) stay."""
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        if name not in variables:
            return m.group(0)
        return _format(variables[name], fmt)
    return _VARIABLE.sub(replace, sql)


def _epoch(t: dt.datetime) -> int:
    return int(t.timestamp())


def _epoch_ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _macro(name: str, args: list[str], tr: TimeRange) -> str:
    frm, to = f"toDateTime({_epoch(tr.start)})", f"toDateTime({_epoch(tr.end)})"
    frm_ms, to_ms = (f"fromUnixTimestamp64Milli({_epoch_ms(tr.start)})",
                     f"fromUnixTimestamp64Milli({_epoch_ms(tr.end)})")

    def one() -> str:
        if len(args) != 1:
            raise ValueError(f"$__{name} expects 1 argument, got {len(args)}")
        return args[0]

    if name == "fromTime":
        return frm
    if name == "toTime":
        return to
    if name == "fromTime_ms":
        return frm_ms
    if name == "toTime_ms":
        return to_ms
    if name == "timeFilter":
        c = one()
        return f"{c} >= {frm} AND {c} <= {to}"
    if name == "timeFilter_ms":
        c = one()
        return f"{c} >= {frm_ms} AND {c} <= {to_ms}"
    if name == "dateFilter":
        c = one()
        return (f"{c} >= toDate('{tr.start.astimezone(dt.UTC):%Y-%m-%d}') AND "
                f"{c} <= toDate('{tr.end.astimezone(dt.UTC):%Y-%m-%d}')")
    if name == "timeInterval":
        return f"toStartOfInterval(toDateTime({one()}), INTERVAL {max(tr.interval_s, 1)} second)"
    if name == "timeInterval_ms":
        return (f"toStartOfInterval(toDateTime64({one()}, 3), "
                f"INTERVAL {max(tr.interval_s * 1000, 1)} millisecond)")
    if name == "interval_s":
        return str(max(tr.interval_s, 1))
    raise ValueError(f"unknown ClickHouse macro $__{name}")


def _split_args(text: str) -> list[str]:
    args, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        args.append(cur.strip())
    return args


_MACRO = re.compile(r"\$__(\w+)")


def expand_macros(sql: str, tr: TimeRange) -> str:
    """The plugin's macros: $__timeFilter(col), $__fromTime, $__timeInterval(col), ..."""
    out, pos = [], 0
    for m in _MACRO.finditer(sql):
        if m.start() < pos:
            continue
        out.append(sql[pos:m.start()])
        end = m.end()
        args: list[str] = []
        if end < len(sql) and sql[end] == "(":
            depth, i = 0, end
            while i < len(sql):
                depth += sql[i] == "("
                depth -= sql[i] == ")"
                if depth == 0:
                    break
                i += 1
            if depth:
                raise ValueError(f"unbalanced parentheses after $__{m.group(1)}")
            args = _split_args(sql[end + 1:i])
            end = i + 1
        out.append(_macro(m.group(1), args, tr))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def render(sql: str, variables: Mapping[str, VarValue], tr: TimeRange) -> str:
    """Variables first (Grafana's frontend), then the plugin's macros (its backend)."""
    return expand_macros(interpolate(sql, variables), tr)


def dashboard_variables(dashboard: Mapping[str, Any],
                        overrides: Mapping[str, VarValue] | None = None) -> dict[str, VarValue]:
    """Each variable's default as Grafana would use it on first load: constants and text boxes
    their value, multi-value variables "All" (their custom all value, raw)."""
    out: dict[str, VarValue] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name, kind = var["name"], var["type"]
        if kind in ("constant", "textbox"):
            out[name] = str(var.get("query", ""))
        elif kind == "datasource":
            out[name] = str((var.get("current") or {}).get("value", ""))
        elif var.get("includeAll"):
            out[name] = Raw(var["allValue"]) if var.get("allValue") else []
        else:
            current = (var.get("current") or {}).get("value")
            out[name] = current if isinstance(current, list | str) else ""
    out.update(overrides or {})
    return out


def seconds(text: str) -> int:
    """Grafana duration ("30s", "5m", "6h", "7d") in seconds."""
    m = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def relative_range(dashboard: Mapping[str, Any], end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The dashboard's default range (now-6h .. now), with ``end`` as now."""
    frm = dashboard.get("time", {}).get("from", "now-6h")
    m = re.fullmatch(r"now-(\w+)", frm)
    span = seconds(m.group(1)) if m else 6 * 3600
    return end - dt.timedelta(seconds=span), end


def ceil_minute(t: dt.datetime) -> dt.datetime:
    epoch = t.timestamp()
    return dt.datetime.fromtimestamp(math.ceil(epoch / 60) * 60, dt.UTC)
