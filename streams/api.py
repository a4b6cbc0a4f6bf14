"""The worker's HTTP API on 127.0.0.1: chDB allows one process per store, so
while the worker runs, `stocktake inventory/query` ask it here."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from stocktake import report
from stocktake.clickhouse.store import Store, StoreError
from stocktake.clickhouse.values import jsonable
from stocktake.services import alerts, inventory, reconcile
from stocktake.settings import Settings


def _json(view: View, payload: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(jsonable(payload)), content_type="application/json",
                      status=status)


def _bootstrap(app: faust.App) -> str:
    """The Kafka this worker consumes from (the embedded broker's address included)."""
    return ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)


def register(app: faust.App, store: Store, sink: Any, settings: Settings, alerting: Any,
             scoring: Any = None) -> None:
    @app.page("/api/inventory")
    class Inventory(View):
        async def get(self, request: Request) -> Response:
            try:
                # In a thread: the queries take a moment and the loop keeps consuming.
                return _json(self, await asyncio.to_thread(inventory.build, store, settings))
            except StoreError as exc:
                return _json(self, {"error": str(exc)}, 503)

    @app.page("/api/report-data")
    class ReportData(View):
        async def get(self, request: Request) -> Response:
            try:
                return _json(self, await asyncio.to_thread(report.report_data, store, settings))
            except StoreError as exc:
                return _json(self, {"error": str(exc)}, 503)

    @app.page("/api/query")
    class Query(View):
        async def post(self, request: Request) -> Response:
            body = await request.json()
            sql = body.get("sql", "") if isinstance(body, dict) else ""
            if not sql.strip():
                return _json(self, {"error": "body must be {\"sql\": \"...\"}"}, 400)
            try:
                columns, rows = store.query(sql)
            except StoreError as exc:
                return _json(self, {"error": str(exc)}, 400)
            return _json(self, {"columns": columns, "rows": rows})

    @app.page("/api/alerts")
    class Alerts(View):
        async def get(self, request: Request) -> Response:
            open_only = request.query.get("open", "") in ("1", "true")
            try:
                return _json(self, {"alerts": await asyncio.to_thread(
                    alerts.list_alerts, store, settings, open_only)})
            except StoreError as exc:
                return _json(self, {"error": str(exc)}, 503)

    @app.page("/api/reconcile")
    class Reconcile(View):
        async def get(self, request: Request) -> Response:
            try:
                window = reconcile.window(request.query.get("from"), request.query.get("to"))
            except ValueError as exc:
                return _json(self, {"error": str(exc)}, 400)
            try:
                # Kafka is asked in this loop, the store in threads: the worker keeps consuming.
                return _json(self, await reconcile.reconcile(store, settings, window, _bootstrap(app)))
            except StoreError as exc:
                return _json(self, {"error": str(exc)}, 503)

    @app.page("/api/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return _json(self, {
                "sink": sink.stats.as_dict(),
                "assigned": sorted(f"{t}[{p}]" for t, p in sink.assigned),
                "watermarks": {f"{t}[{p}]": o for (t, p), o in sink.watermarks.items()},
                "alerting": alerting.runner is not None,
                "scoring": None if scoring is None else {
                    **scoring.stats, "queued_events": scoring.queued_events,
                    "models": {e: {"name": sc.name, "version": sc.version, "device": sc.device}
                               for e, sc in scoring.scorers.items()}},
            })
