"""A worker taking over alerting resolves stored alerts that no longer breach."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from stocktake.processors.alerts import Alert
from stocktake.processors.gaps import GapMonitor
from stocktake.services.alerting import AlertRunner, alert_row, insert_by_name
from stocktake.services.alerts import list_alerts


def test_takeover_resolves_stale_open_alerts(store, make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings()
    prefix = settings.topic_dot_prefix
    opened = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    opened_ms = int(opened.timestamp() * 1000)
    stale = Alert("stale-1", "behaviour", "volume_spike", "", "warning", "firing", "event", opened_ms, None,
                  "400 events/min, expected about 60", 60.0, 400.0, opened_ms, opened_ms, {}, 3)
    insert_by_name(store, "alerts", [alert_row(stale, prefix, opened)])
    published: list[dict[str, Any]] = []

    async def publish(messages: list[dict[str, Any]]) -> None:
        published.extend(messages)

    runner = AlertRunner(settings, store, GapMonitor(), publish)
    emitted = asyncio.run(runner.take_over(wall_now_ms=int(opened.timestamp() * 1000) + 60_000))
    assert [(a.alert_id, a.state, a.version) for a in emitted] == [("stale-1", "resolved", 4)]
    assert published and published[0]["state"] == "resolved" and published[0]["resolved_at"].endswith("Z")
    (alert,) = list_alerts(store, settings)
    assert (alert["alert_id"], alert["state"], alert["version"]) == ("stale-1", "resolved", 4)
    assert list_alerts(store, settings, open_only=True) == []
