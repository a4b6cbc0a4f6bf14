"""`stocktake inventory`, `alerts`, `query`, `status`, `report`, `reconcile`: read what the worker stored."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

from stocktake.cli import worker_or_store
from stocktake.cli.common import (
    PATH,
    POSITIVE_FLOAT,
    CliError,
    EventTime,
    data_dir_option,
    json_option,
    pass_invocation,
    print_json,
)

if TYPE_CHECKING:
    from stocktake.cli.common import Invocation
    from stocktake.clickhouse.store import Store
    from stocktake.settings import Settings


@click.command(help="assets with counts (asks the worker if one runs)")
@data_dir_option
@json_option
@pass_invocation
def inventory(invocation: Invocation, as_json: bool) -> int:
    result = worker_or_store.load_inventory(invocation)
    if as_json:
        print_json(result)
    else:
        from stocktake.console.views import print_inventory
        print_inventory(result)
    return 0


@click.command(help="data-gap alerts, newest first (asks the worker if one runs)")
@data_dir_option
@click.option("--open", "open_only", is_flag=True, help="only alerts still firing")
@json_option
@pass_invocation
def alerts(invocation: Invocation, open_only: bool, as_json: bool) -> int:
    from stocktake.services import outbox

    def compute(store: Store, settings: Settings) -> dict[str, Any]:
        from stocktake.services.alerts import list_alerts
        return {"alerts": list_alerts(store, settings, open_only=open_only), "outbox": outbox.summary(store, settings)}
    result = worker_or_store.from_worker_or_store(invocation, "/api/alerts" + ("?open=1" if open_only else ""),
                                                  compute)
    if "outbox" not in result:  # a worker's /api/alerts lists the alerts: the summary is one more query
        rows = worker_or_store.run_sql(invocation, outbox.summary_sql(invocation.settings)).get("rows")
        result["outbox"] = None if rows is None else outbox.summary_of(rows)
    if as_json:
        print_json(result)
        return 0
    from stocktake.console.tables import print_table
    columns = ["state", "severity", "asset", "kind", "subject", "opened_at", "resolved_at", "reason"]
    # part_of: the stream alert that inhibits this one (same incident, not paged);
    # page: the webhook delivery of the alert's current state
    print_table([*columns, "part_of", "page"],
                [[a.get(c) for c in columns] + [(a.get("details") or {}).get("inhibited_by", ""),
                                                outbox.describe(a.get("page"))]
                 for a in result["alerts"]],
                title="stocktake alerts" + (" (open)" if open_only else ""))
    if result["outbox"] is not None:
        print("pages: " + ", ".join(f"{n} {state}" for state, n in result["outbox"].items()))
    return 0


@click.command(help="run read-only SQL on the store (asks the worker if one runs); bounded by "
                    "STOCKTAKE_QUERY_TIMEOUT, STOCKTAKE_QUERY_MAX_ROWS and STOCKTAKE_QUERY_MAX_BYTES")
@data_dir_option
@click.argument("sql")
@json_option
@pass_invocation
def query(invocation: Invocation, sql: str, as_json: bool) -> int:
    result = worker_or_store.run_sql(invocation, sql)
    if as_json:
        print_json(result)
    else:
        from stocktake.console.tables import print_table
        print_table(result["columns"], result["rows"])
    return 0


@click.command(help="live view: rates, counts, quality, top issues (--once: one snapshot)")
@data_dir_option
@click.option("--interval", type=POSITIVE_FLOAT, default=2.0, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one snapshot and exit")
@pass_invocation
def status(invocation: Invocation, interval: float, once: bool) -> int:
    from stocktake.console import status as view
    from stocktake.streams.discovery import running_worker
    settings = invocation.settings
    source = view.Source(load=lambda: worker_or_store.load_inventory(invocation),
                         query=lambda sql: worker_or_store.run_sql(invocation, sql),
                         live=lambda: running_worker(settings.data_dir) is not None,
                         prefix=settings.topic_dot_prefix, busy=lambda: worker_or_store.store_locked(settings),
                         health=lambda: worker_or_store.worker_health(settings.data_dir))
    if once:
        view.once(source)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        view.watch(source, interval)
    return 0


@click.command(help="write a self-contained HTML report")
@data_dir_option
@click.option("--out", type=PATH, default=Path("stocktake-report.html"),
              help="HTML file to write (default ./stocktake-report.html)")
@pass_invocation
def report(invocation: Invocation, out: Path) -> int:
    from stocktake import report as html
    data = worker_or_store.from_worker_or_store(invocation, "/api/report-data", html.report_data)
    out = out.expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html.render(data), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(out.resolve())
    return 0


# A recount reads every retained raw event: ~7 s per million on this 2-core machine.
RECONCILE_TIMEOUT_S = 1800.0


@click.command(help="prove the rollups against the raw events and Kafka's offsets against the stored ones; "
                    "exit 1 on any difference (asks the worker if one runs)")
@data_dir_option
@click.option("--from", "start", type=EventTime(), default=None,
              help="event time from (ISO-8601, or -2h, 7d ago); default: everything retained")
@click.option("--to", "end", type=EventTime(), default=None, help="event time up to (exclusive)")
@json_option
@pass_invocation
def reconcile(invocation: Invocation, start: dt.datetime | None, end: dt.datetime | None, as_json: bool) -> int:
    bounds = {name: t.isoformat().replace("+00:00", "Z") for name, t in (("from", start), ("to", end)) if t}
    if start and end and start >= end:
        raise CliError("--from must be before --to")

    def compute(store: Store, settings: Settings) -> dict[str, Any]:
        from stocktake.services import reconcile as service
        if settings.log_level.upper() != "DEBUG":  # the report's one line says why Kafka was not read
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        # Without a worker the embedded broker is down: only a configured Kafka can be asked.
        return service.reconcile_sync(store, settings, service.window(bounds.get("from"), bounds.get("to")),
                                      bootstrap=settings.kafka or None)
    path = "/api/reconcile" + (f"?{urlencode(bounds)}" if bounds else "")
    result = worker_or_store.from_worker_or_store(invocation, path, compute, timeout=RECONCILE_TIMEOUT_S)
    if as_json:
        print_json(result)
    else:
        from stocktake.console.reconcile import print_reconcile
        print_reconcile(result)
    return 0 if result["ok"] else 1
