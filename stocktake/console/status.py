"""`stocktake status`: a live terminal view of the inventory.

Per asset: ingest rate, counts, quality with its trend and freshness; the top
issues (biggest quality losses, drift, orphans, amount mismatches); entities.
Data comes through a `Source` (the worker over HTTP, else the store), so this
module never opens a store itself.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from stocktake.clickhouse.store import StoreError
from stocktake.processors.assets import Asset
from stocktake.services.summary import consistency_issues, entity_line, human_age, top_losses

RATE_WINDOW_S = 300.0
WIDTH = 100

# Events per asset in the last 5 minutes of ingest activity (the store's view of the rate,
# used when there are no two live snapshots to compare). {prefix} is a quoted SQL literal.
# The newest and first ingest times come from the rollups; the events from those 5 minutes
# of ingest_log alone (its ingest-time skip index keeps the read to them).
RATE_SQL = """
WITH (SELECT max(ingest_max) FROM partition_rollup WHERE startsWith(topic, {prefix})) AS last_ingest,
     (SELECT min(ingest_min) FROM asset_rollup WHERE startsWith(topic, {prefix}) AND asset = stream)
         AS first_ingest
SELECT asset, count() AS events,
       dateDiff('millisecond', greatest(first_ingest, last_ingest - INTERVAL 300 SECOND),
                last_ingest) AS span_ms
FROM prefixed_assets(prefix = {prefix})
WHERE ingest_ts >= last_ingest - INTERVAL 300 SECOND
GROUP BY asset
"""


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _totals(doc: dict[str, Any]) -> dict[str, int]:
    return {a["asset"]: a["valid"] + a["duplicates"] + a["invalid"] for a in doc.get("assets", [])}


@dataclass
class Source:
    """Where status reads from: `load` the inventory document, `query` SQL -> {columns, rows},
    `live` whether a worker runs now, `busy` whether another process holds the store."""

    load: Callable[[], dict[str, Any]]
    query: Callable[[str], dict[str, Any]]
    live: Callable[[], bool]
    prefix: str
    busy: Callable[[], bool] = lambda: False   # the store is held by another process (a worker starting)
    health: Callable[[], dict[str, Any] | None] = lambda: None   # the worker's GET /api/health

    def stored_rates(self) -> dict[str, float]:
        """Events/min per asset over the last 5 minutes of ingest (at least 1 minute counted)."""
        result = self.query(RATE_SQL.format(prefix=sql_string(self.prefix)))
        rates = {}
        for asset, events, span_ms in result["rows"]:
            minutes = min(max((span_ms or 0) / 60_000, 1.0), RATE_WINDOW_S / 60)
            rates[asset] = events / minutes
        return rates


@dataclass
class Tracker:
    """Successive snapshots: rates from counts 5 minutes apart, quality trends, errors."""

    history: collections.deque[tuple[float, dict[str, int]]] = field(
        default_factory=lambda: collections.deque(maxlen=1000))
    previous: dict[str, float] = field(default_factory=dict)
    doc: dict[str, Any] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    live: bool = False
    error: str | None = None
    taken_at: float = 0.0
    health: dict[str, Any] | None = None

    def refresh(self, source: Source, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        live = source.live()
        self.health = source.health() if live else None
        if not live and self.doc is not None and not self.live:
            return  # the stored state has not changed; do not hold the store open in a loop
        if not live and source.busy():
            self.error = "the store is held by another process that serves no API (a worker starting?)"
            if self.doc is None:
                raise StoreError(self.error)
            return
        try:
            doc = source.load()
            self.error = None
        except Exception as exc:  # e.g. the worker stopping mid-request: keep the last frame
            if self.doc is None:
                raise
            self.error = str(exc)
            return
        if self.doc is not None:
            self.previous = self.scores
        self.doc, self.live, self.taken_at = doc, live, time.time()
        self.scores = {a["asset"]: a["quality"]["score"] for a in doc.get("assets", [])
                       if (a.get("quality") or {}).get("score") is not None}
        if not live:
            self.history.clear()
        self.history.append((now, _totals(doc)))
        while self.history and now - self.history[0][0] > RATE_WINDOW_S:
            self.history.popleft()
        if len(self.history) >= 2 and now > self.history[0][0]:
            (t0, old), (t1, new) = self.history[0], self.history[-1]
            self.rates = {a: max(0, n - old.get(a, 0)) / (t1 - t0) * 60 for a, n in new.items()}
        else:
            try:
                self.rates = source.stored_rates()
            except Exception as exc:
                self.rates, self.error = {}, f"rates unavailable: {exc}"

    def trend(self, asset: str) -> str:
        now, before = self.scores.get(asset), self.previous.get(asset)
        if now is None or before is None:
            return " "
        return "↑" if now > before + 0.05 else "↓" if now < before - 0.05 else "→"

    def render(self, interval: float | None = None) -> RenderableType:
        if self.doc is None:
            return Text(f"stocktake status: waiting for data ({self.error or 'none yet'})", style="red")
        doc = self.doc
        when = time.strftime("%H:%M:%S", time.localtime(self.taken_at))
        mode = (f"live, every {interval:g} s" if self.live and interval else "live" if self.live
                else "stored state, no worker running" + (" (waiting for one)" if interval else ""))
        as_of = str(doc.get("as_of_event_ts") or "—").replace("T", " ")[:19]
        header = Text.assemble(("stocktake status", "bold"), f" · {when} · {mode}\n",
                               (f"events up to {as_of} UTC (event time)", "dim"))
        parts: list[RenderableType] = [header, self._assets_table(doc), self._issues(doc),
                                       Text.assemble(("entities ", "bold"), entity_line(doc))]
        worker = worker_line(self.health)
        if worker is not None:
            parts.append(worker)
        if self.error:
            parts.append(Text(self.error, style="red"))
        return Group(*parts)

    def _assets_table(self, doc: dict[str, Any]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        table.add_column("asset", no_wrap=True, overflow="ellipsis", max_width=34)
        for name in ("events/min", "valid", "dup", "invalid", "quality", "fresh"):
            table.add_column(name, justify="right", no_wrap=True)
        for a in doc.get("assets", []):
            name = a["asset"]
            asset = Asset.parse(name)
            label = Text(name, style="bold") if asset.is_stream else Text("  " + asset.label)
            score = (a.get("quality") or {}).get("score")
            style = "dim" if score is None else "green" if score >= 90 else "yellow" if score >= 70 else "red"
            quality = Text("—" if score is None else f"{score:.1f} {self.trend(name)}", style=style)
            rate = self.rates.get(name)
            table.add_row(label, "—" if rate is None else f"{rate:,.0f}", f"{a['valid']:,}",
                          f"{a['duplicates']:,}", f"{a['invalid']:,}", quality, human_age(a.get("freshness_s")))
        return table

    def _issues(self, doc: dict[str, Any]) -> Panel:
        losses = top_losses(doc)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", no_wrap=True, style="red", min_width=5)
        grid.add_column(no_wrap=True, style="bold", min_width=max((len(a) for _, a, _ in losses), default=0))
        grid.add_column(overflow="fold")
        for lost, asset, what in losses:
            grid.add_row(f"-{lost:.1f}", asset, what)
        for line in consistency_issues(doc):
            kind, _, text = line.partition(": ")
            grid.add_row("!", kind, text)
        if not grid.rows:
            grid.add_row("", "", "no quality losses, drift, orphans or amount mismatches")
        return Panel(grid, title="top issues", title_align="left", box=box.ROUNDED)


def worker_line(health: dict[str, Any] | None) -> Text | None:
    """The worker's own state, red when it stores nothing: stalled (events wait on its
    partitions, nothing stored for a while) or failed (it exits for a supervisor to restart)."""
    if not health:
        return None
    state = health.get("status", "?")
    lag = health.get("consumer_lag") or 0
    age = health.get("last_insert_age_s")
    waiting = health.get("store_waiting_s")
    detail = [f"{health.get('assigned_partitions', 0)} partitions", f"{lag:,} events waiting"]
    if age is not None:
        detail.append(f"last insert {age:,.0f} s ago")
    if waiting is not None:
        detail.append(f"ClickHouse away for {waiting:,.0f} s")
    if health.get("scoring_lag_events") is not None:   # the worker that scores: how far behind the store
        detail.append(f"scoring {health['scoring_lag_events']:,} events / {health.get('scoring_lag_s') or 0:,.1f} s "
                      "behind")
    style = "bold red" if state in ("stalled", "failed") else "yellow" if state == "starting" else "green"
    return Text.assemble(("worker ", "bold"), (state, style), " · " + " · ".join(detail))


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=WIDTH)
    return console


def once(source: Source, console: Console | None = None) -> None:
    tracker = Tracker()
    tracker.refresh(source)
    (console or _console()).print(tracker.render())


def _refresh(tracker: Tracker, source: Source) -> None:
    """Refresh, showing a failure (no store yet, worker starting) instead of stopping the view."""
    try:
        tracker.refresh(source)
    except Exception as exc:
        tracker.error = str(exc)


def watch(source: Source, interval: float, console: Console | None = None) -> None:
    """Refresh in place until Ctrl-C (a new block every interval when not on a terminal)."""
    from rich.live import Live

    console = console or _console()
    tracker = Tracker()
    _refresh(tracker, source)
    if not console.is_terminal:
        while True:
            console.print(tracker.render(interval))
            time.sleep(interval)
            _refresh(tracker, source)
    with Live(tracker.render(interval), console=console, auto_refresh=False) as view:
        while True:
            time.sleep(interval)
            _refresh(tracker, source)
            view.update(tracker.render(interval), refresh=True)
