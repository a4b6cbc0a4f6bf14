"""Feeds the gap detectors from the store and publishes alert transitions.

Runs on one worker only: the owner of partition 0 of the behaviour topic (a
rebalance moves it, and the new owner rebuilds detector state from the store
and takes over the open alerts). Every ``gap_interval_s``:

1. activity since the last look: newest event/ingest time per asset and a
   sample of inter-arrival gaps (the learned cadence);
2. minutes of event time that are now closed (newest event time minus
   ``minute_close_delay_s``): counts, field presence, orphan references;
3. silence on both clocks; schema drift every ``DRIFT_EVERY`` ticks;
4. transitions -> ``stocktake.alerts`` (the source of truth), the ``alerts``
   table, the optional webhook (not for alerts inhibited by their stream's);
   expectations -> the ``baselines`` table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.gaps import GapMonitor, MinuteObservation
from stocktake.services import inventory
from stocktake.settings import Settings

log = logging.getLogger("stocktake.alerting")

DRIFT_EVERY = 12
BACKFILL_MINUTES = 3 * 24 * 60   # history replayed into the detectors on takeover
GAP_SAMPLE = 2000                # inter-arrival gaps per asset per look

Publish = Callable[[list[dict[str, Any]]], Awaitable[None]]


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def alert_message(alert: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The documented JSON of stocktake.alerts (times ISO-8601 UTC)."""
    def iso(ms: int | None) -> str | None:
        return None if ms is None else _dt(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "alert_id": alert["alert_id"], "asset": alert["asset"], "kind": alert["kind"],
        "subject": alert.get("subject", ""), "severity": alert["severity"], "state": alert["state"],
        "clock": alert["clock"], "opened_at": iso(alert["opened_at"]), "resolved_at": iso(alert["resolved_at"]),
        "reason": alert["reason"], "expected": alert["expected"], "observed": alert["observed"],
        "evidence": {"from": iso(alert["evidence_from"]), "to": iso(alert["evidence_to"])},
        "details": alert.get("details", {}), "version": alert["version"], "topic_prefix": prefix,
    }


class AlertRunner:
    def __init__(self, settings: Settings, store: Store, monitor: GapMonitor, publish: Publish):
        self.settings = settings
        self.store = store
        self.monitor = monitor
        self.publish = publish
        self.prefix = settings.topic_prefix + "."
        self.ticks = 0
        self.seen_until_ms = 0          # ingest time looked at so far
        self.closed_until_ms: int | None = None   # minutes of event time judged so far (exclusive)
        self.event_now_ms = 0
        self.last_event: dict[str, int] = {}
        self.last_ingest: dict[str, int] = {}

    def _q(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.store.rows(sql, {"prefix": self.prefix, **params})

    async def take_over(self, wall_now_ms: int | None = None) -> list[dict[str, Any]]:
        """Become the alerting worker: relearn from history without alerting, then reconcile
        with the open alerts the previous owner stored. Returns the transitions emitted."""
        first, newest, count = (await asyncio.to_thread(self._q, A.EVENT_SPAN_SQL))[0]
        if count:
            self.closed_until_ms = max(int(first), int(newest) - BACKFILL_MINUTES * MINUTE_MS) \
                // MINUTE_MS * MINUTE_MS
        await self.tick(emit=False, wall_now_ms=wall_now_ms)
        columns, rows = await asyncio.to_thread(
            self.store.query, A.OPEN_ALERTS_SQL, {"prefix": self.prefix})
        stored = {}
        for row in rows:
            alert = dict(zip(columns, row, strict=True))
            alert["details"] = json.loads(alert["details"] or "{}")
            alert["subject"] = alert["details"].get("subject", "")
            stored[(alert["asset"], alert["kind"], alert["subject"])] = alert
        out: list[dict[str, Any]] = []
        for key, current in self.monitor.open.items():
            if key in stored:  # still breaching: the same alert goes on
                previous = stored[key]
                current.alert.update(alert_id=previous["alert_id"], opened_at=previous["opened_at"],
                                     version=previous["version"])
            else:  # opened in history the previous owner never published
                out.append(dict(current.alert))
        now = self.event_now_ms or int(time.time() * 1000)
        for key, previous in stored.items():
            if key not in self.monitor.open:
                out.append({**previous, "state": "resolved", "resolved_at": now,
                            "version": previous["version"] + 1,
                            "reason": f"resolved: no longer breaching ({previous['reason']})"})
        if out:
            await self._emit(out)
        return out

    async def tick(self, *, emit: bool = True, wall_now_ms: int | None = None) -> list[dict[str, Any]]:
        wall_now_ms = wall_now_ms if wall_now_ms is not None else int(time.time() * 1000)
        # Rows judged just now may still sit in a sink buffer: look a little behind.
        until = wall_now_ms - int(max(2.0, 4 * self.settings.flush_interval_s) * 1000)
        transitions = await asyncio.to_thread(self._look, until)
        self.ticks += 1
        if self.ticks % DRIFT_EVERY == 1:
            transitions += await asyncio.to_thread(self._drift)
        if emit and transitions:
            await self._emit(transitions)
        return transitions

    def _look(self, until_ms: int) -> list[dict[str, Any]]:
        since = _dt(self.seen_until_ms)
        until = _dt(until_ms)
        previous_last = dict(self.last_event)
        for asset, newest_ts, newest_ingest in self._q(A.ACTIVITY_SQL, since=since, until=until):
            self.last_event[asset] = max(self.last_event.get(asset, 0), int(newest_ts))
            self.last_ingest[asset] = max(self.last_ingest.get(asset, 0), int(newest_ingest))
        for asset, n, sample, first in self._q(A.GAPS_SQL, since=since, until=until, sample=GAP_SAMPLE):
            weight = max(1, round(n / len(sample))) if sample else 0
            # The gap across looks (sparse assets have few gaps inside one look).
            boundary = [int(first) - previous_last[asset]] \
                if asset in previous_last and int(first) > previous_last[asset] else []
            self.monitor.gaps(asset, boundary, self.last_event.get(asset))
            for gap in sample:
                self.monitor.state(asset).cadence.add(gap, weight)
        self.seen_until_ms = max(self.seen_until_ms, until_ms)
        if self.last_event:
            self.event_now_ms = max(self.event_now_ms, *self.last_event.values())
        out = self._close_minutes()
        out += self.monitor.silence(self.event_now_ms, "event", self.last_event)
        # Judged at the time we have looked up to, not at wall_now: rows ingested since
        # may still sit in a sink buffer, and would otherwise count as quiet time.
        out += self.monitor.silence(until_ms, "wall", self.last_ingest)
        return out

    def _close_minutes(self) -> list[dict[str, Any]]:
        if not self.event_now_ms:
            return []
        closable = (self.event_now_ms - int(self.settings.minute_close_delay_s * 1000)) // MINUTE_MS * MINUTE_MS
        start = self.closed_until_ms
        if start is None:  # first look: start with the first minute that has events
            start = min(self.last_event.values(), default=closable) // MINUTE_MS * MINUTE_MS
        if closable <= start:
            return []
        # A jump in event time (a sparse history replayed fast) would mean millions of empty
        # minutes: judge at most the backfill span, as a takeover would.
        start = max(start, closable - BACKFILL_MINUTES * MINUTE_MS)
        counts: dict[tuple[str, int], tuple[int, int, int]] = {}
        for asset, m, events, refs, orphans in self._q(A.MINUTES_SQL, **{"from": _dt(start), "to": _dt(closable)}):
            counts[(asset, int(m))] = (int(events), int(refs), int(orphans))
        present: dict[tuple[str, int], dict[str, int]] = {}
        for stream, m, name, n in self._q(A.FIELD_MINUTES_SQL, **{"from": _dt(start), "to": _dt(closable)}):
            present.setdefault((stream, int(m)), {})[name] = int(n)
        out: list[dict[str, Any]] = []
        baselines: list[list[Any]] = []
        assets = sorted(set(self.last_event) | {a for a, _ in counts})
        for minute in range(start, closable, MINUTE_MS):
            for asset in assets:
                events, refs, orphans = counts.get((asset, minute), (0, 0, 0))
                st = self.monitor.state(asset)
                exp = st.volume.expect(minute)
                fields = present.get((asset, minute), {}) if "/" not in asset else {}
                out += self.monitor.minute(MinuteObservation(
                    asset, minute, events, events if fields else 0, fields, refs, orphans))
                if exp.model != "none":
                    z = st.config.volume_z
                    baselines.append([self.prefix, asset, "events", _dt(minute), float(events), exp.expected,
                                      max(0.0, exp.expected - z * exp.spread), exp.expected + z * exp.spread,
                                      exp.model, _dt(int(time.time() * 1000))])
        self.closed_until_ms = closable
        if baselines:
            self.store.insert_rows("baselines", baselines, BASELINE_COLUMNS)
        return out

    def _drift(self) -> list[dict[str, Any]]:
        found = inventory.drift_events(self.store, self.settings)
        events = [{**d, "at_ms": int(d["at"].timestamp() * 1000)} for d in found]
        return self.monitor.drift(events, self.event_now_ms)

    async def _emit(self, transitions: list[dict[str, Any]]) -> None:
        now = _dt(int(time.time() * 1000))
        rows = [[self.prefix, a["alert_id"], a["asset"], a["kind"], a["severity"], a["state"], a["clock"],
                 _dt(a["opened_at"]), None if a["resolved_at"] is None else _dt(a["resolved_at"]),
                 a["reason"], a["expected"], a["observed"], _dt(a["evidence_from"]), _dt(a["evidence_to"]),
                 json.dumps({**a.get("details", {}), "subject": a.get("subject", "")}), now, a["version"]]
                for a in transitions]
        messages = [alert_message(a, self.prefix) for a in transitions]
        await self.publish(messages)
        await asyncio.to_thread(self.store.insert_rows, "alerts", rows, ALERT_COLUMNS)
        for a in transitions:
            log.warning("alert %s %s %s %s: %s", a["state"], a["severity"], a["asset"], a["kind"], a["reason"])
        pages = [m for m in messages if not m["details"].get("inhibited_by")]
        if self.settings.alert_webhook and pages:
            await asyncio.to_thread(self._post, pages)

    def _post(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            request = urllib.request.Request(self.settings.alert_webhook, data=json.dumps(message).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5):
                    pass
            except OSError as exc:  # the topic and table have it; a webhook outage must not stop alerting
                log.error("alert webhook %s failed: %s", self.settings.alert_webhook, exc)


ALERT_COLUMNS = ["topic_prefix", "alert_id", "asset", "kind", "severity", "state", "clock", "opened_at",
                 "resolved_at", "reason", "expected", "observed", "evidence_from", "evidence_to", "details",
                 "updated_at", "version"]
BASELINE_COLUMNS = ["topic_prefix", "asset", "metric", "minute", "observed", "expected", "lower", "upper",
                    "model", "updated_at"]
