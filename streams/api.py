"""The worker's HTTP API on 127.0.0.1: chDB allows one process per store, so
while the worker runs, `stocktake inventory/query` ask it here.

Every route but GET /api/health wants ``Authorization: Bearer TOKEN``; the token is random per
worker and lies in DATA_DIR/worker.json (mode 0600), so only who may read the data dir gets in.
Faust's own pages (/router, /table, /graph, /stats) are switched off in create_app.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from aiohttp import web
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


HEALTH_PATH = "/api/health"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require_token(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """aiohttp middleware: 401 without the worker's bearer token (health excepted)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if request.path == HEALTH_PATH or hmac.compare_digest(given, expected):
            return await handler(request)
        return web.Response(
            status=401, content_type="application/json", headers={"WWW-Authenticate": "Bearer"},
            body=orjson.dumps({"error": "missing or wrong token: send Authorization: Bearer TOKEN "
                                        "(the key token in DATA_DIR/worker.json)"}))
    return check


def health(sink: Any, consumer: Any, settings: Settings, now: float | None = None) -> dict[str, Any]:
    """Liveness and readiness, nothing else: no data, no names beyond partition counts.
    failed: the sink stopped (the worker exits so a supervisor restarts it); stalled: events
    wait on our partitions and nothing was stored for stall_after_s; starting: nothing assigned."""
    now = time.monotonic() if now is None else now
    lag = 0
    for topic, partition in sink.assigned:
        try:
            end = consumer.highwater(consumer._new_topicpartition(topic, partition))
        except Exception:  # not fetched yet: no high watermark known
            continue
        if end is not None:
            base = sink.bases.get((topic, partition), 0)
            lag += max(0, int(end) + base - sink.stored.get((topic, partition), -1) - 1)
    idle = now - sink.progress_at
    if sink.failure is not None:
        state = "failed"
    elif not sink.assigned:
        state = "starting"
    elif lag and idle > settings.stall_after_s:
        state = "stalled"
    else:
        state = "ok"
    return {"status": state, "live": state != "failed", "ready": state == "ok",
            "assigned_partitions": len(sink.assigned), "consumer_lag": lag,
            "last_insert_age_s": None if sink.last_insert_at is None else round(now - sink.last_insert_at, 1),
            "store_waiting_s": None if sink.store_down_since is None else round(now - sink.store_down_since, 1)}


def register(app: faust.App, store: Store, sink: Any, settings: Settings, alerting: Any,
             scoring: Any = None, *, token: str) -> None:
    app.web.web_app.middlewares.append(require_token(token))  # type: ignore[attr-defined]

    @app.page(HEALTH_PATH)
    class Health(View):
        async def get(self, request: Request) -> Response:
            # ?ready=1 for readiness probes; plain for liveness (a supervisor restarts on 503).
            state = health(sink, app.consumer, settings)
            if scoring is not None and scoring.leading and scoring.lag:   # this worker scores: how far behind
                state["scoring_lag_events"] = scoring.lag["events"]
                state["scoring_lag_s"] = scoring.lag["seconds"]
            wanted = "ready" if request.query.get("ready", "") in ("1", "true") else "live"
            return _json(self, state, 200 if state[wanted] else 503)

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
                # Off the loop: the worker keeps consuming while the query runs.
                columns, rows = await asyncio.to_thread(
                    store.read_only_query, sql, timeout_s=settings.query_timeout_s,
                    max_rows=settings.query_max_rows, max_bytes=settings.query_max_bytes)
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
                    **scoring.stats, "leading": scoring.leading, "lag": scoring.lag,
                    "order": None if scoring.merger is None else scoring.merger.stats,
                    "models": {e: {"name": sc.name, "version": sc.version, "device": sc.device}
                               for e, sc in scoring.scorers.items()},
                    "embeddings": None if scoring.embedder is None else {
                        **scoring.embedder.stats, "queued_texts": scoring.embedder.queued_texts}},
            })
