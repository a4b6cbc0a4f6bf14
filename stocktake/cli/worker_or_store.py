"""Answers from the running worker, else from the store.

chDB allows one process per store: while a worker owns it, ask the worker's HTTP API;
otherwise open the store here and compute the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from stocktake.cli.common import CliError, Invocation
from stocktake.streams.discovery import auth_headers, running_worker

if TYPE_CHECKING:
    from stocktake.clickhouse.store import Store
    from stocktake.settings import Settings

WORKER_TIMEOUT_S = 30.0


def ask_worker(data_dir: Path, path: str, body: dict[str, Any] | None = None,
               timeout: float = WORKER_TIMEOUT_S) -> Any | None:
    """The worker's JSON answer to GET path (POST with a body); None when no worker runs."""
    info = running_worker(data_dir)
    if info is None or not info.get("http"):
        return None
    # urllib3 comes with clickhouse-connect; imported here, only when a worker runs.
    import urllib3

    try:
        response = urllib3.request(
            "GET" if body is None else "POST", info["http"] + path,
            body=None if body is None else orjson.dumps(body),
            headers={"Content-Type": "application/json", **auth_headers(info)}, timeout=timeout, retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise CliError(f"worker pid {info['pid']} at {info['http']} did not answer: {_reason(exc)}") from None
    if response.status >= 400:
        payload = orjson.loads(response.data or b"{}")
        raise CliError(payload.get("error") or f"worker answered HTTP {response.status}")
    return orjson.loads(response.data)


def worker_health(data_dir: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """The running worker's GET /api/health (its 503 included: a failed worker says so); None
    when no worker runs or it does not answer."""
    info = running_worker(data_dir)
    if info is None or not info.get("http"):
        return None
    import urllib3
    try:
        response = urllib3.request("GET", info["http"] + "/api/health", timeout=timeout, retries=False)
        state = orjson.loads(response.data)
    except (urllib3.exceptions.HTTPError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def _reason(exc: Exception) -> str:
    """urllib3 wraps the socket error in the connection's repr; the errno says it all."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    return errno.group(0) if errno else text


def open_store(settings: Settings) -> Store:
    from stocktake.clickhouse import rollups
    from stocktake.clickhouse.store import Store
    if not settings.clickhouse and not (settings.data_dir / "chdb").exists():
        raise CliError(f"no store in {settings.data_dir} (run `stocktake up` first or pass --data-dir)")
    store = Store(settings.clickhouse_dsn, cluster=settings.clickhouse_cluster)
    rollups.prepare(store, raw_retention_s=settings.raw_retention_s)
    return store


def from_worker_or_store(invocation: Invocation, path: str, compute: Callable[[Store, Settings], Any],
                         body: dict[str, Any] | None = None, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    result = ask_worker(invocation.data_dir, path, body, timeout)
    if result is None:
        from stocktake.clickhouse.values import jsonable
        settings = invocation.settings
        store = open_store(settings)
        try:
            result = jsonable(compute(store, settings))
        finally:
            store.close()
    return dict(result)


def load_inventory(invocation: Invocation) -> dict[str, Any]:
    """The inventory document: from the running worker, else from the store."""
    def compute(store: Store, settings: Settings) -> Any:
        from stocktake.services import inventory
        return inventory.build(store, settings)
    return from_worker_or_store(invocation, "/api/inventory", compute)


def run_sql(invocation: Invocation, sql: str) -> dict[str, Any]:
    """{"columns", "rows"} of a read-only SQL statement: from the running worker, else from the store."""
    def compute(store: Store, settings: Settings) -> dict[str, Any]:
        columns, rows = store.read_only_query(sql, timeout_s=settings.query_timeout_s,
                                              max_rows=settings.query_max_rows, max_bytes=settings.query_max_bytes)
        return {"columns": columns, "rows": rows}
    return from_worker_or_store(invocation, "/api/query", compute, {"sql": sql})


def store_locked(settings: Settings) -> bool:
    """Whether another process holds the chDB store, probed without opening it: after a failed
    open chDB cannot open any store in this process again (a worker starting up holds it)."""
    import fcntl
    dsn = settings.clickhouse_dsn
    lock = Path(dsn.removeprefix("chdb://")) / "status"
    if not dsn.startswith("chdb://") or not lock.exists():
        return False
    with lock.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
