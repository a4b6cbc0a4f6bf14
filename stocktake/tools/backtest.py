"""`stocktake backtest PATH`: which alerts a history would have raised.

The history is read as `stocktake replay` reads it (``sources.load_events``: a
.jsonl/.ndjson/.csv file, optionally gzipped, the stream from a ``stream`` field or
the file name; or the shipped ``rees46`` / ``olist``), or every such file in a
directory. Each event is judged by its stream's contract (the deployment's
``STOCKTAKE_CONTRACTS`` over the shipped ones; a stream without one is schemaless):
invalid events are left out and counted, as are duplicates (the worker's dedupe
window), events that name no time (the worker would use the Kafka record's) and
events outside ``--from``/``--to``. The rest go, in event-time order, through the
evaluation harness (tools/evalgaps.py ``Simulation``): the worker's own ``GapFeed``
and ``GapMonitor``, with the worker's gap settings (``STOCKTAKE_GAPS_CONFIG``, its
check interval and minute close delay), looking every check interval of event time.

No broker, no store, no wall clock: silence is judged on the event clock only, and
schema drift (found by the sink, not the detectors) is not replayed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset
from stocktake.processors.contract import Contract, Event, normalize
from stocktake.processors.contract_spec import ContractBook, shipped
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.gapfeed import GapFeed
from stocktake.settings import Settings
from stocktake.sources import ReplayEvent, contract_file_events, is_contract_file, load_events, sort_by_time
from stocktake.tools import evalgaps
from stocktake.tools.evalgaps import Ev, Simulation

DATASETS = ("rees46", "olist")
HOUR_MS = 3600 * 1000
EXPIRE_EVERY = 4096     # events of a stream between expiries of its dedupe window (the worker: per batch)


@dataclasses.dataclass
class History:
    """The valid events of a history, in event-time order, and what was left out."""

    events: list[Ev]
    assets: dict[tuple[str, str, str], tuple[str, ...]]   # (stream, kind, source) -> asset names
    counts: dict[str, int]                                # read, valid, invalid, duplicates, no_time, outside_window
    invalid_by_reason: dict[str, int]
    streams: dict[str, int]                               # stream -> valid events


# ---------------------------------------------------------------- reading and judging


def read_events(source: str) -> list[ReplayEvent]:
    """The events of ``rees46``, ``olist``, a contract file or a directory of them (its
    .jsonl/.ndjson/.csv[.gz] files, not its subdirectories), sorted by event time. Raises
    ValueError with a one-line message when the path cannot be read."""
    if source in DATASETS:
        return load_events(source)
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and is_contract_file(p))
            if not files:
                raise ValueError(f"{source}: no .jsonl, .ndjson or .csv files (optionally .gz) in this directory")
            return sort_by_time([e for f in files for e in contract_file_events(f)])
        if not path.exists():
            raise ValueError(f"{source}: no such file or directory (expected rees46, olist, a .jsonl, .ndjson "
                             "or .csv file of events, or a directory of them)")
        return load_events(str(path))
    except OSError as exc:   # unreadable, not gzip, ...
        raise ValueError(f"cannot read {source}: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise ValueError(f"{source}: not CSV ({exc})") from None


def judge(events: list[ReplayEvent], settings: Settings, start_ms: int | None = None,
          end_ms: int | None = None) -> History:
    """Each event under its stream's contract, as the worker judges it: invalid ones and
    duplicates (``dedupe_window_s``) left out; then those without a time or outside
    [start_ms, end_ms). The valid rest in event-time order."""
    book = ContractBook(settings.contracts_dir)
    contracts: dict[str, Contract] = {}
    dedupe: dict[str, DedupeWindow] = {}
    remembered: Counter[str] = Counter()
    counts = Counter({k: 0 for k in ("read", "valid", "invalid", "duplicates", "no_time", "outside_window")})
    reasons: Counter[str] = Counter()
    streams: Counter[str] = Counter()
    out: list[Ev] = []
    assets: dict[tuple[str, str, str], tuple[str, ...]] = {}
    for r in events:
        counts["read"] += 1
        contract = contracts.get(r.stream)
        if contract is None:
            contract = contracts[r.stream] = book.get(r.stream)
        verdict = normalize(contract, r.event)
        if not isinstance(verdict, Event):
            counts["invalid"] += 1
            reasons[verdict.reason] += 1
            continue
        e = verdict
        if e.ts_ms < 0:
            counts["no_time"] += 1
            continue
        if e.event_id:
            window = dedupe.get(r.stream)
            if window is None:
                window = dedupe[r.stream] = DedupeWindow(int(settings.dedupe_window_s * 1000),
                                                         settings.dedupe_max_keys)
            if window.is_duplicate(e.event_id, e.ts_ms):
                counts["duplicates"] += 1
                continue
            remembered[r.stream] += 1
            if remembered[r.stream] % EXPIRE_EVERY == 0:
                window.expire()
        if (start_ms is not None and e.ts_ms < start_ms) or (end_ms is not None and e.ts_ms >= end_ms):
            counts["outside_window"] += 1
            continue
        key = (r.stream, e.kind, e.source)
        if key not in assets:
            assets[key] = asset_names(contract, e.kind, e.source)
        counts["valid"] += 1
        streams[r.stream] += 1
        out.append(Ev(e.ts_ms, r.stream, e.kind, e.source, e.product_id, e.fields, e.event_id))
    out.sort(key=lambda ev: ev.ts_ms)   # stable: the file's order within a millisecond stays
    return History(out, assets, dict(counts), dict(reasons.most_common()), dict(sorted(streams.items())))


def asset_names(contract: Contract, kind: str, source: str) -> tuple[str, ...]:
    """The inventory's asset names an event counts in, by its own contract's kind field
    (a user's contract may name another than the shipped one, or a stream of its own)."""
    out = [contract.stream]
    if kind:
        out.append(contract.kind_asset(kind))
    if source:
        out.append(str(Asset(contract.stream, "source", source)))
    return tuple(out)


# ---------------------------------------------------------------- running the detectors


def simulate(history: History, settings: Settings, gaps_config: str | None = None) -> Simulation:
    """The history through the worker's detectors, configured as the worker is: the gap
    settings file (``gaps_config``, default ``STOCKTAKE_GAPS_CONFIG``), the check interval
    and the minute close delay."""
    from stocktake.services.gapconfig import load_monitor

    monitor = load_monitor(settings.gaps_config if gaps_config is None else gaps_config)
    feed = GapFeed(monitor, close_delay_ms=int(settings.minute_close_delay_s * 1000),
                   idle_minutes=evalgaps.IDLE_MINUTES)
    sim = Simulation(feed, check_ms=max(1, round(settings.gap_interval_s * 1000)))
    events = history.events
    # The harness names an event's assets by the shipped contracts; where the deployment's
    # contract names the kind otherwise (or the stream has no shipped contract), its names
    # are given in advance.
    cache = getattr(sim, "_assets", None)
    ships = shipped()
    if isinstance(cache, dict):
        cache.update(history.assets)
    else:
        events = [ev if not ev.kind or (ev.stream in ships and history.assets[ev.stream, ev.kind, ev.source][1]
                                        == ships[ev.stream].kind_asset(ev.kind))
                  else ev._replace(kind="") for ev in events]
    return sim.feed_events(events)


def fold(transitions: list[Alert]) -> list[dict[str, Any]]:
    """One row per alert from its transitions: what it said when it fired (the latest firing
    version), when it resolved (None: still open at the end of the history) and why."""
    by_id: dict[str, dict[str, Any]] = {}
    for t in transitions:
        row = by_id.get(t.alert_id)
        if row is None:
            row = by_id[t.alert_id] = {"firing": t, "resolved": None}
        if t.state == "firing":
            row["firing"] = t
        else:
            row["resolved"] = t
    out = []
    for row in by_id.values():
        a: Alert = row["firing"]
        r: Alert | None = row["resolved"]
        details = dict(a.details)
        out.append({
            "alert_id": a.alert_id, "asset": a.asset, "kind": a.kind, "subject": a.subject,
            "severity": a.severity, "state": "resolved" if r else "open", "clock": a.clock,
            "opened_at": iso(a.opened_at), "resolved_at": iso(r.resolved_at) if r and r.resolved_at else None,
            "scale": details.get("scale"), "expected": a.expected, "observed": a.observed, "reason": a.reason,
            "resolution": r.reason if r else None, "inhibited_by": a.inhibited_by,
            "evidence_from": iso(a.evidence_from), "evidence_to": iso((r or a).evidence_to),
            "details": details,
        })
    out.sort(key=lambda x: (x["opened_at"], x["asset"], x["kind"], x["subject"]))
    return out


def iso(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with a Z (milliseconds only where there are some)."""
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.isoformat(timespec="milliseconds" if ms % 1000 else "seconds").replace("+00:00", "Z")


def hourly(history: History) -> dict[str, dict[int, int]]:
    """Valid events per asset and hour of event time (hour start, epoch ms)."""
    out: dict[str, dict[int, int]] = {}
    for ev in history.events:
        hour = ev.ts_ms - ev.ts_ms % HOUR_MS
        for asset in history.assets[ev.stream, ev.kind, ev.source]:
            by_hour = out.setdefault(asset, {})
            by_hour[hour] = by_hour.get(hour, 0) + 1
    return out


def run(source: str, settings: Settings, *, start_ms: int | None = None, end_ms: int | None = None,
        gaps_config: str | None = None) -> tuple[dict[str, Any], History]:
    """The backtest document (JSON-able) and the history it judged."""
    history = judge(read_events(source), settings, start_ms, end_ms)
    sim = simulate(history, settings, gaps_config)
    events = history.events
    assets = sorted({a for names in history.assets.values() for a in names})
    return {
        "source": source,
        "window": {"from": None if start_ms is None else iso(start_ms), "to": None if end_ms is None else iso(end_ms)},
        "events": {**history.counts, "invalid_by_reason": history.invalid_by_reason},
        "streams": history.streams,
        "span": {"from": iso(events[0].ts_ms), "to": iso(events[-1].ts_ms)} if events else None,
        "assets": assets,
        "detectors": {"check_every_s": settings.gap_interval_s, "minute_close_delay_s": settings.minute_close_delay_s,
                      "gaps_config": settings.gaps_config if gaps_config is None else gaps_config},
        "alerts": fold(sim.alerts),
    }, history


# ---------------------------------------------------------------- output


def _when(text: str | None) -> str:
    return "" if text is None else text.replace("T", " ").removesuffix("Z")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}".removesuffix(".0")
    return str(value)


def _span_text(span: dict[str, str] | None) -> str:
    if span is None:
        return "no valid events"
    first, last = (datetime.fromisoformat(span[k].replace("Z", "+00:00")) for k in ("from", "to"))
    minutes = int((last - first).total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    length = (f"{days}d " if days else "") + f"{rest // 60}h {rest % 60:02d}m"
    return f"{_when(span['from'])} → {_when(span['to'])} UTC ({length})"


def summary_line(doc: dict[str, Any]) -> str:
    e = doc["events"]
    left_out = [f"{e[k]:,} {label}" for k, label in (("invalid", "invalid"), ("duplicates", "duplicates"),
                                                     ("no_time", "without a time"),
                                                     ("outside_window", "outside --from/--to")) if e[k]]
    alerts = doc["alerts"]
    still_open = sum(a["state"] == "open" for a in alerts)
    pages = sum(not a["inhibited_by"] for a in alerts)
    return (f"{doc['source']}: {e['read']:,} events read, {e['valid']:,} valid"
            + (f" ({', '.join(left_out)})" if left_out else "")
            + f"; {_span_text(doc['span'])}; {len(doc['assets'])} assets; "
            + f"{len(alerts)} alerts ({pages} paged, {still_open} still open at the end)")


def print_report(doc: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    from rich.console import Console
    from rich.table import Table

    echo(summary_line(doc))
    alerts = doc["alerts"]
    if not alerts:
        echo("no alerts")
        return
    by_id = {a["alert_id"]: a for a in alerts}
    table = Table(title="alerts the detectors would have raised (times UTC)")
    for col in ("opened", "resolved", "asset", "kind", "subject", "severity", "scale", "expected", "observed",
                "inhibited", "reason"):
        table.add_column(col, no_wrap=col != "reason", overflow="fold",
                         justify="right" if col in ("expected", "observed") else "left")
    for a in alerts:
        parent = by_id.get(a["inhibited_by"] or "")
        inhibited = "" if not a["inhibited_by"] else f"by {parent['asset']}" if parent else "yes"
        table.add_row(_when(a["opened_at"]), _when(a["resolved_at"]) or "open", a["asset"], a["kind"],
                      a["subject"], a["severity"], "" if a["scale"] is None else str(a["scale"]),
                      _num(a["expected"]), _num(a["observed"]), inhibited, a["reason"])
    console = Console()
    if not console.is_terminal:   # piped: rich's default of 80 columns would fold every cell
        console.width = 1000
    console.print(table)


def write_report(doc: dict[str, Any], history: History, out: Path) -> Path:
    from stocktake.report import backtest as page

    volume = {asset: sorted(by_hour.items()) for asset, by_hour in hourly(history).items()}
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page.render(doc, volume), encoding="utf-8")
    return out


def main(source: str, settings: Settings, *, as_json: bool = False, report: Path | None = None,
         start_ms: int | None = None, end_ms: int | None = None, gaps_config: str | None = None) -> int:
    """`stocktake backtest`: the summary line and the alerts table (or --json); --report
    writes the HTML page too (its path on stderr)."""
    import sys

    doc, history = run(source, settings, start_ms=start_ms, end_ms=end_ms, gaps_config=gaps_config)
    if report is not None:
        try:
            written = write_report(doc, history, report)
        except OSError as exc:
            raise ValueError(f"cannot write {report}: {exc.strerror or exc}") from None
        print(f"backtest report: {written.resolve()}", file=sys.stderr)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print_report(doc)
    return 0
