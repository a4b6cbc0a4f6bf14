"""`stocktake reconcile` in the terminal: what was checked, what was skipped, and each
difference on one line that says where (asset + minute, or topic + partition)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stocktake.services.summary import human_age


def _n(value: Any) -> str:
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _window(doc: dict[str, Any]) -> str:
    window = doc.get("window") or {}
    if not window.get("from") and not window.get("to"):
        return "everything retained"
    return f"event time {window.get('from') or '…'} to {window.get('to') or '…'}"


def _retention(doc: dict[str, Any]) -> str:
    if not doc.get("raw_retention_s"):
        return "raw events kept forever"
    return (f"raw events kept {human_age(doc['raw_retention_s'])}: minutes with events ingested before "
            f"{doc['provable_after']} are skipped")


def checks_table(doc: dict[str, Any]) -> Table:
    table = Table(title="rollups", title_justify="left")
    for name, justify in (("rollup", "left"), ("against", "left"), ("assets", "right"),
                          ("minutes checked", "right"), ("skipped", "right"), ("differences", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in doc["checks"]:
        against = "raw events (" + c["against"] + ")" if c.get("minutes_checked") is not None else c["against"]
        differences = f"[red]{c['differences']:,}[/]" if c["differences"] else "0"
        table.add_row(c["rollup"], against, _n(c["assets_checked"]), _n(c.get("minutes_checked")),
                      _n(c.get("minutes_skipped")), differences)
    return table


def assets_table(doc: dict[str, Any]) -> Table:
    """Per asset: minutes and events recounted (asset minutes), differences of every check."""
    differences: dict[str, int] = {}
    for c in doc["checks"]:
        for a in c["assets"]:
            differences[a["asset"]] = differences.get(a["asset"], 0) + a["differences"]
    table = Table(title="assets", title_justify="left")
    for name, justify in (("asset", "left"), ("minutes checked", "right"), ("skipped", "right"),
                          ("events recounted", "right"), ("differences", "right")):
        table.add_column(name, justify=justify, no_wrap=name == "asset")  # type: ignore[arg-type]
    minutes: dict[str, Any] = next((c for c in doc["checks"] if c["rollup"] == "asset_minute_rollup"), {"assets": []})
    for a in minutes["assets"]:
        n = differences.get(a["asset"], 0)
        table.add_row(a["asset"], _n(a["minutes_checked"]), _n(a["minutes_skipped"]), _n(a["recounted"]),
                      f"[red]{n:,}[/]" if n else "0")
    return table


_STATE = {"ok": "[green]ok[/]", "pending": "[yellow]pending[/]", "differs": "[red]differs[/]"}


def partitions_table(doc: dict[str, Any]) -> Table:
    table = Table(title="partitions", title_justify="left")
    for name, justify in (("topic", "left"), ("partition", "right"), ("stored offsets", "right"),
                          ("messages", "right"), ("rows", "right"), ("log end", "right"), ("committed", "right"),
                          ("state", "left")):
        table.add_column(name, justify=justify, no_wrap=name == "topic")  # type: ignore[arg-type]
    for p in doc["partitions"]:
        stored, kafka = p.get("stored") or {}, p.get("kafka") or {}
        offsets = f"{stored['offset_min']}..{stored['offset_max']}" if stored else "—"
        state = " · ".join([_STATE[p["state"]], *map(escape, p["pending"] + p["notes"])])
        table.add_row(p["topic"], str(p["partition"]), offsets, _n(stored.get("messages")), _n(stored.get("rows")),
                      _n(kafka.get("log_end")), _n(kafka.get("committed")), state)
    return table


def difference_line(d: dict[str, Any]) -> str:
    """One difference, saying where: check · asset · minute · key, or check · topic[partition]."""
    if d["check"] == "partition":
        where = f"{d['topic']}[{d['partition']}]"
    else:
        key = " ".join(f"{k}={v}" for k, v in d.get("key", {}).items() if k != "stream" and v != "")
        where = " · ".join(part for part in (d["asset"], d.get("minute"), key) if part)
    return f"{d['check']} · {where}: {d['what']}"


def print_reconcile(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]stocktake reconcile[/] · {_window(doc)} · {_retention(doc)}", soft_wrap=True)
    console.print(checks_table(doc))
    console.print(assets_table(doc))
    kafka = doc.get("kafka") or {}
    if doc["partitions"]:
        console.print(partitions_table(doc))
    if kafka.get("error"):
        console.print(f"[yellow]Kafka not checked[/]: {escape(kafka['error'])}", soft_wrap=True)
    for d in doc["differences"]:
        console.print(f"[red]✗[/] {escape(difference_line(d))}", soft_wrap=True, highlight=False)
    n = sum(c["differences"] for c in doc["checks"]) + sum(len(p["differences"]) for p in doc["partitions"])
    took = f" (took {doc['seconds']:.1f} s)" if doc.get("seconds") is not None else ""
    if n:
        console.print(f"[red bold]{n:,} difference{'s' * (n != 1)}[/]{took}", soft_wrap=True)
    else:
        minutes = sum(c.get("minutes_checked") or 0 for c in doc["checks"])
        console.print(f"[green bold]no differences[/]: {minutes:,} asset and field minutes recounted, "
                      f"{len(doc['partitions']):,} partitions checked{took}", soft_wrap=True)
