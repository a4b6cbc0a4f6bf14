"""Live alerting in the worker: silence on both clocks, published to the alerts
topic, stored, listed, POSTed to a webhook on 127.0.0.1, and resolved."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stocktake.processors.gaps import GapMonitor
from stocktake.services.alerting import AlertRunner
from stocktake.services.alerts import list_alerts
from stocktake.streams.runtime import Runtime, wait_until_assigned
from tests.pipeline_helpers import read_topic

pytestmark = pytest.mark.integration


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _send(producer: Producer, topic: str, stream: str, i: int, now_ms: int) -> None:
    event: dict[str, Any] = {"event_id": f"{stream}-{i}", "ts": now_ms, "source": "app"}
    if stream == "behaviour":
        event.update(event_type="view", user_id=i % 5, product_id="p1")
    else:
        event.update(product_id=f"p{i % 3}", op="upsert", price=1.0)
    producer.produce(topic, orjson.dumps(event), key=str(i % 5).encode())


def test_silence_fires_on_both_clocks_and_resolves(broker, store, make_settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gaps = tmp_path / "gaps.toml"
    # Seconds, not minutes, of history and recovery: the detectors' minute-scale defaults
    # would make this test take many minutes.
    gaps.write_text("[default]\nwall_silence_min_s = 1.0\ncadence_min_gaps = 20\nsilence_min_s = 1.0\n"
                    "min_history_minutes = 0\nresolve_after = 0\n")
    # A quiet partition holds the event-time watermark back for watermark_idle_s: a second here.
    settings = make_settings(partitions=1, gap_interval_s=0.5, minute_close_delay_s=1, gaps_config=str(gaps),
                             watermark_idle_s=1.0, alert_webhook=f"http://127.0.0.1:{server.server_port}/hook")
    behaviour, product = settings.topic("behaviour"), settings.topic("product")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})

    stop_traffic = threading.Event()

    def traffic(seconds: float, streams: tuple[str, ...], start: int) -> int:
        i = start
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop_traffic.is_set():
            now_ms = int(time.time() * 1000)
            for stream in streams:
                _send(producer, behaviour if stream == "behaviour" else product, stream, i, now_ms)
            producer.poll(0)
            i += 1
            time.sleep(0.05)
        producer.flush()
        return i

    async def wait_for(predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alerts = list_alerts(store, settings)
            if predicate(alerts):
                return alerts
            await asyncio.sleep(0.3)
        return list_alerts(store, settings)

    def silence(alerts: list[dict[str, Any]], clock: str, state: str) -> list[dict[str, Any]]:
        return [a for a in alerts if a["asset"] == "behaviour" and a["kind"] == "silence"
                and a["clock"] == clock and a["state"] == state]

    async def run() -> None:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            n = await asyncio.to_thread(traffic, 6.0, ("behaviour", "product"), 0)
            # Behaviour goes quiet while products go on: the event clock sees it.
            n = await asyncio.to_thread(traffic, 4.0, ("product",), n)
            alerts = await wait_for(lambda a: silence(a, "event", "firing"))
            assert silence(alerts, "event", "firing"), alerts
            # Then nothing at all arrives: only the wall clock can tell.
            alerts = await wait_for(lambda a: silence(a, "wall", "firing"))
            assert silence(alerts, "wall", "firing"), alerts
            fired = silence(alerts, "wall", "firing")[0]
            assert fired["severity"] == "critical" and "no events for" in fired["reason"]
            assert {a["asset"] for a in list_alerts(store, settings, open_only=True)} >= {"behaviour"}
            # Behaviour comes back: both resolve - the event clock's once a minute with behaviour's
            # events in it has closed (event-time judgements wait for event time), so traffic goes
            # on until then.
            back = asyncio.create_task(asyncio.to_thread(traffic, 75.0, ("behaviour", "product"), n))
            alerts = await wait_for(lambda a: silence(a, "wall", "resolved") and silence(a, "event", "resolved"),
                                    timeout=80)
            stop_traffic.set()
            await back
            assert silence(alerts, "wall", "resolved") and silence(alerts, "event", "resolved"), alerts
        finally:
            await runtime.stop_all()
            server.shutdown()

    asyncio.run(run())

    messages = [orjson.loads(m.value()) for m in read_topic(broker.bootstrap, settings.alerts_topic, 1, 4)]
    kinds = {(m["asset"], m["kind"], m["clock"], m["state"]) for m in messages}
    assert ("behaviour", "silence", "wall", "firing") in kinds
    assert ("behaviour", "silence", "wall", "resolved") in kinds
    first = next(m for m in messages if m["clock"] == "wall")
    assert first["opened_at"].endswith("Z") and first["topic_prefix"] == settings.topic_dot_prefix
    assert {"alert_id", "severity", "reason", "expected", "observed", "evidence"} <= set(first)
    posted = {(m["kind"], m["clock"], m["state"]) for m in _Hook.received if m["asset"] == "behaviour"}
    assert ("silence", "wall", "firing") in posted and ("silence", "wall", "resolved") in posted
    # The stream's sub-assets fell silent with it: published and stored as part of its incident,
    # not paged on their own.
    subs = [m for m in messages if m["asset"].startswith("behaviour/") and m["kind"] == "silence"]
    assert {m["asset"] for m in subs} >= {"behaviour/event_type=view", "behaviour/source=app"}
    assert all(m["details"]["inhibited_by"] for m in subs)
    assert not [m for m in _Hook.received if m["asset"].startswith("behaviour/")]


def test_closed_minutes_leave_orphan_and_completeness_baselines(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Eight minutes of behaviour, an event every 2 s naming p0..p5 (the catalog announces
    p0..p2: half are orphans), with field a always present and b always null: the worker's
    first tick closes minutes 0..6 and stores, from minute 1 on, what the detectors expected
    and saw of each share beside the events."""
    settings = make_settings(minute_close_delay_s=1)
    # Before test_alert_takeover's big store and in a partition of its own: ingest_log sorts by
    # (stream, partition, offset), and rows sharing its granules would widen its bounded reads.
    t0 = dt.datetime(2068, 3, 3, tzinfo=dt.UTC)
    partition = 5
    columns = ["stream", "topic", "partition", "offset", "status", "kind", "source", "product_id", "ts", "ingest_ts",
               "payload"]
    rows: list[list[Any]] = []
    for i in range(8 * 30):
        ts = t0 + dt.timedelta(seconds=2 * i)
        rows.append(["behaviour", settings.topic("behaviour"), partition, i, "valid", "view", "app", f"p{i % 6}", ts,
                     ts + dt.timedelta(seconds=1), '{"a":1,"b":null}'])
        rows.append(["product", settings.topic("product"), partition, i, "valid", "upsert", "", f"p{i % 3}", ts,
                     ts + dt.timedelta(seconds=1), '{"price":1}'])
    store.insert_rows("ingest_log", rows, columns)

    async def publish(messages: list[dict[str, Any]]) -> None:
        pass

    runner = AlertRunner(settings, store, GapMonitor(), publish)
    asyncio.run(runner.tick(wall_now_ms=int((t0 + dt.timedelta(minutes=8, seconds=30)).timestamp() * 1000)))
    stored = store.rows("SELECT asset, metric, toUnixTimestamp64Milli(minute), observed, expected, lower, upper "
                        "FROM baselines FINAL WHERE topic_prefix = {p:String}", {"p": settings.topic_dot_prefix})
    minutes = [int((t0 + dt.timedelta(minutes=m)).timestamp() * 1000) for m in range(1, 7)]

    def of(asset: str, metric: str) -> list[tuple[Any, ...]]:
        return sorted(r[2:] for r in stored if r[0] == asset and r[1] == metric)

    assert {r[1] for r in stored if r[0] == "behaviour"} == {"events", "orphans", "completeness:a", "completeness:b"}
    assert of("behaviour", "orphans") == [(m, 0.5, 0.5, 0.0, pytest.approx(0.7)) for m in minutes]
    assert of("behaviour", "completeness:a") == [(m, 1.0, 1.0, pytest.approx(0.8), 1.0) for m in minutes]
    assert [r[:2] for r in of("behaviour", "completeness:b")] == [(m, 0.0) for m in minutes]
    # the catalog names products but references none; its fields are judged all the same
    assert of("product", "orphans") == [] and [r[:2] for r in of("product", "completeness:price")] == \
        [(m, 1.0) for m in minutes]
    # a sub-asset's orphans are judged, its fields are the stream's
    assert len(of("behaviour/source=app", "orphans")) == 6
    assert not [r for r in stored if r[0] == "behaviour/source=app" and r[1].startswith("completeness:")]
