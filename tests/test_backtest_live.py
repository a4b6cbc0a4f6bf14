"""Backtest = live: a multi-day history produced into Kafka - paced, and at full speed over four
partitions consumed at their own paces - raises in the real worker (Tansu -> sink -> chDB ->
alerting) the alerts the evaluation harness raises on the same events."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from stocktake.processors.baseline import MINUTE_MS
from stocktake.services.alerts import list_alerts
from stocktake.settings import Settings
from stocktake.sources import ReplayEvent
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import backtest, replay
from tests.pipeline_helpers import wait_rows

pytestmark = pytest.mark.integration

START_MS = 1_709_510_400_000          # 2024-03-04T00:00Z: long past, so no wall clock judges it
DAY_MS = 24 * 60 * MINUTE_MS
OUTAGE = (START_MS + DAY_MS + 10 * 60 * MINUTE_MS, START_MS + DAY_MS + (12 * 60 + 20) * MINUTE_MS)
APP_STOPS = START_MS + DAY_MS + 18 * 60 * MINUTE_MS


def history() -> list[ReplayEvent]:
    """Two days of one stream from two sources, an event every ~30 s (more by day), with a
    2 h 20 min total outage on day 2 and the app source stopping for good at 18:00."""
    rng = random.Random(11)
    out: list[ReplayEvent] = []
    t, i = START_MS, 0
    while t < START_MS + 2 * DAY_MS:
        hour = (t - START_MS) // (60 * MINUTE_MS) % 24
        t += int(rng.expovariate(1 / (20_000 if 8 <= hour < 22 else 45_000)))
        source = "app" if rng.random() < 0.4 else "web"
        if OUTAGE[0] <= t < OUTAGE[1] or (source == "app" and t >= APP_STOPS):
            continue
        i += 1
        event = {"event_id": f"e{i}", "ts": t, "source": source, "event_type": "cart" if i % 7 == 0 else "view",
                 "user_id": f"u{i % 50}", "product_id": f"p{i % 20}"}
        out.append(ReplayEvent("behaviour", event["user_id"], event))
    return out


def harness(events: list[ReplayEvent], settings: Settings) -> set[tuple[Any, ...]]:
    sim = backtest.simulate(backtest.judge(events, settings), settings)
    return {_key(a["asset"], a["kind"], a["subject"], a["opened_at"], a["state"])
            for a in backtest.fold(sim.alerts)}


def _key(asset: str, kind: str, subject: str, opened_at: Any, state: str) -> tuple[Any, ...]:
    # opened at, to the minute; the harness says "open" where the table says "firing"
    return asset, kind, subject, str(opened_at)[:16], "firing" if state == "open" else state


def pipeline(broker: Any, store: Any, settings: Settings, events: list[ReplayEvent],
             speed: float | None) -> set[tuple[Any, ...]]:
    messages = list(replay.to_messages(events, topics=replay.stream_topics(settings)))
    last_closed = (max(e.event["ts"] for e in events) - int(settings.minute_close_delay_s * 1000)) \
        // MINUTE_MS * MINUTE_MS - MINUTE_MS

    async def run() -> set[tuple[Any, ...]]:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            await asyncio.to_thread(replay.produce, broker.bootstrap, messages, speed=speed, max_sleep=0.01)
            assert await wait_rows(store, settings.topic_prefix, len(messages)) == len(messages)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:   # until the alerting has judged the last closed minute
                (judged,), = store.rows("SELECT toUnixTimestamp(max(minute)) * 1000 FROM baselines "
                                        "WHERE topic_prefix = {p:String}", {"p": settings.topic_dot_prefix})
                if judged >= last_closed:
                    break
                await asyncio.sleep(0.5)
            assert judged >= last_closed, "the alerting never caught up with the history"
            await asyncio.sleep(2 * settings.gap_interval_s)
            return {_key(a["asset"], a["kind"], a["subject"], a["opened_at"], a["state"])
                    for a in list_alerts(store, settings)}
        finally:
            await runtime.stop_all()

    return asyncio.run(run())


def test_a_history_raises_the_same_alerts_paced_at_full_speed_and_in_the_harness(broker, store, make_settings):  # type: ignore[no-untyped-def]
    events = history()
    common = {"partitions": 4, "gap_interval_s": 0.5, "watermark_idle_s": 1.0}
    expected = harness(events, make_settings(**common))
    kinds = {(k[1], k[0]) for k in expected}
    # the outage and the source that stopped are in it, as silences and drops
    assert ("silence", "behaviour") in kinds and ("silence", "behaviour/source=app") in kinds, expected
    assert ("volume_drop", "behaviour") in kinds, expected
    full = pipeline(broker, store, make_settings(**common), events, None)
    assert full == expected, (sorted(full - expected), sorted(expected - full))
    paced = pipeline(broker, store, make_settings(**common), events, 14_400.0)   # two days in ~12 s
    assert paced == expected, (sorted(paced - expected), sorted(expected - paced))
