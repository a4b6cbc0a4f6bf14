"""Live alerting in the worker: silence on both clocks, published to the alerts
topic, stored, listed, POSTed to a webhook on 127.0.0.1, and resolved."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

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
    settings = make_settings(partitions=1, gap_interval_s=0.5, minute_close_delay_s=1, gaps_config=str(gaps),
                             alert_webhook=f"http://127.0.0.1:{server.server_port}/hook")
    behaviour, product = settings.topic("behaviour"), settings.topic("product")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})

    def traffic(seconds: float, streams: tuple[str, ...], start: int) -> int:
        i = start
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
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
            # Behaviour comes back: both resolve.
            await asyncio.to_thread(traffic, 4.0, ("behaviour", "product"), n)
            alerts = await wait_for(lambda a: silence(a, "wall", "resolved") and silence(a, "event", "resolved"))
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
