"""The worker's HTTP API is not an open door: a token on every route but health, ad-hoc SQL
read-only and bounded, Faust's own pages off; and /api/health says live/ready/stalled."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from stocktake.clickhouse.store import Store, StoreError, read_only_refusal
from stocktake.settings import Settings
from stocktake.streams.api import health
from stocktake.streams.discovery import auth_headers, running_worker
from stocktake.streams.runtime import Runtime, wait_until_assigned

WRITES = [
    "DROP TABLE ingest_log",
    "ALTER TABLE ingest_log DELETE WHERE 1",
    "INSERT INTO alerts (alert_id) VALUES ('x')",
    "  insert into alerts (alert_id) select 'x'",
    "CREATE TABLE evil (x UInt8) ENGINE = Memory",
    "TRUNCATE TABLE ingest_log",
    "SYSTEM STOP MERGES",
    "KILL QUERY WHERE 1",
    "SET readonly = 0",
    "OPTIMIZE TABLE ingest_log FINAL",
    "-- a comment first\nDROP TABLE ingest_log",
    "/* hidden */ DROP TABLE ingest_log",
    "SELECT 1 INTO OUTFILE '/tmp/stocktake-api-test-outfile'",
    "",
]


@pytest.mark.parametrize("sql", WRITES)
def test_anything_but_a_read_is_refused_before_clickhouse(sql: str) -> None:
    refusal = read_only_refusal(sql)
    assert refusal is not None and refusal.startswith("read-only:") and "\n" not in refusal


@pytest.mark.parametrize("sql", ["SELECT 1", " with 1 AS a SELECT a", "SHOW TABLES", "DESCRIBE ingest_log",
                                 "EXPLAIN SELECT 1", "EXISTS ingest_log", "(SELECT 1)", "-- why\nSELECT 1"])
def test_reads_pass(sql: str) -> None:
    assert read_only_refusal(sql) is None


def _bounded(store: Store, sql: str, **limits: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    options = {"timeout_s": 10.0, "max_rows": 1000, "max_bytes": 10**7, **limits}
    return store.read_only_query(sql, **options)


def test_read_only_query_on_the_store_refuses_writes_and_bounds_reads(store: Store) -> None:
    before = store.rows("SELECT count() FROM system.tables WHERE database = currentDatabase()")
    for sql in WRITES:
        with pytest.raises(StoreError, match=r"^read-only"):
            _bounded(store, sql)
    assert not os.path.exists("/tmp/stocktake-api-test-outfile")
    # ClickHouse's readonly=1 is the second wall: a read that tries to lift it is refused.
    with pytest.raises(StoreError, match="readonly"):
        _bounded(store, "SELECT 1 SETTINGS readonly = 0")
    with pytest.raises(StoreError, match=r"(?i)readonly"):
        _bounded(store, "SELECT count() FROM file('/etc/passwd', 'LineAsString')")
    with pytest.raises(StoreError, match=r"(?i)limit for result exceeded"):
        _bounded(store, "SELECT number FROM numbers(100000)", max_rows=100)
    with pytest.raises(StoreError, match=r"(?i)timeout"):
        _bounded(store, "SELECT count() FROM numbers(100000000000)", timeout_s=1.0)
    assert _bounded(store, "SELECT 1 AS one") == (["one"], [(1,)])
    assert store.rows("SELECT count() FROM system.tables WHERE database = currentDatabase()") == before
    # The writer's own session is untouched: it still writes (chDB has one session per process).
    store.command("CREATE TABLE IF NOT EXISTS api_test_probe (x UInt8) ENGINE = Memory")
    store.command("DROP TABLE api_test_probe")


class _Consumer:
    def __init__(self, ends: dict[tuple[str, int], int]):
        self.ends = ends

    def _new_topicpartition(self, topic: str, partition: int) -> tuple[str, int]:
        return topic, partition

    def highwater(self, tp: tuple[str, int]) -> int:
        return self.ends[tp]


class _Sink:
    def __init__(self, assigned: set[tuple[str, int]], stored: dict[tuple[str, int], int], progress_at: float):
        self.assigned, self.stored, self.progress_at = assigned, stored, progress_at
        self.bases: dict[tuple[str, int], int] = {}
        self.failure: BaseException | None = None
        self.last_insert_at: float | None = progress_at
        self.store_down_since: float | None = None


def test_health_says_starting_ok_stalled_and_failed() -> None:
    settings = Settings(stall_after_s=60)
    tp = ("s.behaviour", 0)
    assert health(_Sink(set(), {}, 0.0), _Consumer({}), settings, now=1.0)["status"] == "starting"
    caught_up = _Sink({tp}, {tp: 9}, 0.0)
    assert health(caught_up, _Consumer({tp: 10}), settings, now=1000.0) == {
        "status": "ok", "live": True, "ready": True, "assigned_partitions": 1, "consumer_lag": 0,
        "last_insert_age_s": 1000.0, "store_waiting_s": None}
    behind = _Sink({tp}, {tp: 9}, 0.0)
    assert health(behind, _Consumer({tp: 50}), settings, now=30.0)["status"] == "ok"  # not for long yet
    stalled = health(behind, _Consumer({tp: 50}), settings, now=61.0)
    assert (stalled["status"], stalled["consumer_lag"], stalled["live"], stalled["ready"]) == \
        ("stalled", 40, True, False)
    behind.failure = RuntimeError("boom")
    assert health(behind, _Consumer({tp: 50}), settings, now=61.0)["status"] == "failed"


ROUTES = [("GET", "/api/inventory", None), ("GET", "/api/report-data", None), ("GET", "/api/alerts", None),
          ("GET", "/api/reconcile", None), ("GET", "/api/stats", None),
          ("POST", "/api/query", {"sql": "SELECT count() FROM ingest_log"}),
          # Faust's own pages: switched off, and behind the token whatever they would say.
          ("GET", "/", None), ("GET", "/router/", None), ("GET", "/table/", None), ("GET", "/stats/", None)]


@pytest.mark.integration
def test_every_route_wants_the_token_but_health(broker: Any, store: Store,
                                                make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()

    async def scenario() -> None:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker(web=True)
        try:
            await wait_until_assigned([sink], settings.partitions)
            path = settings.data_dir / "worker.json"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            info = running_worker(settings.data_dir)
            assert info is not None and info["token"] == runtime.api_token and len(info["token"]) >= 32
            url = info["http"]
            async with aiohttp.ClientSession() as http:
                for method, route, body in ROUTES:
                    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": info["token"]}):
                        async with http.request(method, url + route, json=body, headers=headers) as r:
                            assert r.status == 401, (route, headers)
                            assert r.headers["WWW-Authenticate"] == "Bearer"
                    async with http.request(method, url + route, json=body, headers=auth_headers(info)) as r:
                        if route.startswith("/api/"):
                            assert r.status == 200, (route, await r.text())
                        elif route == "/":  # Faust's production index: a bare "OK", nothing more
                            assert len(await r.read()) < 40
                        else:
                            assert r.status == 404, route
                async with http.post(url + "/api/query", json={"sql": "DROP TABLE ingest_log"},
                                     headers=auth_headers(info)) as r:
                    assert r.status == 400
                    assert (await r.json())["error"].startswith("read-only: DROP is refused")
                assert store.rows("EXISTS TABLE ingest_log") == [(1,)]
                async with http.get(url + "/api/health") as r:
                    assert r.status == 200
                    state = await r.json()
                    assert state["status"] == "ok" and state["assigned_partitions"] == 3 * settings.partitions
                    assert set(state) == {"status", "live", "ready", "assigned_partitions", "consumer_lag",
                                          "last_insert_age_s", "store_waiting_s"}
                sink.fail(RuntimeError("test"))
                async with http.get(url + "/api/health") as r:
                    assert r.status == 503 and (await r.json())["status"] == "failed"
        finally:
            await runtime.stop_all()
            runtime.close()
        assert not (settings.data_dir / "worker.json").exists()

    asyncio.run(scenario())
