"""Feeds the gap detectors from the store and publishes alert transitions.

Runs on one worker only: the owner of partition 0 of the behaviour topic (a
rebalance moves it, and the new owner rebuilds detector state from the store
and takes over the open alerts). Every ``gap_interval_s`` it reads the store and
hands what it read to ``GapFeed`` (processors/gapfeed.py; the evaluation and
the backtest in tools/evalgaps.py drive the same feed):

1. activity: every asset's newest event/ingest time (the asset rollup), and for assets
   still learning their cadence (a cold start, a new asset) the gaps between the events
   ingested since the last look (at most ``LOOK_LIMIT_S`` of ingest time: the only raw
   read of a look that closes no minute); the first look after a (re)start adds a coarse
   cadence for assets too sparse to have one yet. And the low watermark: per Kafka
   partition (the partition rollup) its event-time progress, the minimum over the
   partitions that ingested within ``watermark_idle_s`` (the maximum when all are idle),
   never the newest event seen: a partition consumed behind the others (a catch-up, a
   replay) holds event time back until it has caught up;
2. minutes of event time that are now closed (watermark minus
   ``minute_close_delay_s``), at most ``MAX_MINUTES`` a look, in order: from the
   minutes' raw events the counts, product references and arrivals (cadence,
   longest gap; the counts from the minute rollup instead for minutes that may be
   past the raw events' retention), orphans among the references against the
   products the catalog announced (held in memory: all of them on the first look,
   then the catalog's rows ingested since); field presence from its rollup. Every
   closed minute is judged, however fast a history was ingested;
3. silence at the live edge on both clocks; schema drift every ``DRIFT_EVERY``
   ticks, against the watermark;
4. transitions -> ``stocktake.alerts`` (the source of truth), the ``alerts``
   table, the optional webhook's outbox (not for alerts inhibited by their stream's;
   services/outbox.py delivers them on a timer of its own, so a slow receiver never
   holds up this step);
   then the expectations (events, field shares, orphan shares per asset and minute) -> the
   ``baselines`` table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store
from stocktake.processors.alerts import Alert
from stocktake.processors.announced import AnnouncedProducts
from stocktake.processors.arrivals import EventGroup, closed_minutes
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.gapfeed import Activity, Arrivals, GapFeed, MinuteCounts
from stocktake.processors.gaps import GapMonitor, MinuteExpectation
from stocktake.services import inventory
from stocktake.services.alerts import iso, read_alert
from stocktake.services.outbox import Outbox
from stocktake.settings import Settings

log = logging.getLogger("stocktake.alerting")

DRIFT_EVERY = 12
BACKFILL_MINUTES = 3 * 24 * 60   # history replayed into the detectors on takeover
MAX_MINUTES = 6 * 60             # closed minutes read and judged at once
CLOSE_BUDGET_S = 1.0             # a look judges more such spans while within this time
GAP_SAMPLE = 2000                # inter-arrival gaps per asset per look
RETENTION_MARGIN_MS = 3_600_000  # older minutes' counts come from the rollup (the raw rows may be gone)
EXPECTATIONS_HELD = 20_000       # rows of the baselines table a catch-up holds before writing them
# Ingest time one look reads at most: the first look after a (re)start would otherwise read
# every raw event stored (and sort all their times); later looks read one tick's worth.
LOOK_LIMIT_S = 15 * 60

Publish = Callable[[list[dict[str, Any]]], Awaitable[None]]


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def alert_message(alert: Alert, prefix: str) -> dict[str, Any]:
    """The documented JSON of stocktake.alerts (times ISO-8601 UTC)."""
    return {
        "alert_id": alert.alert_id, "asset": alert.asset, "kind": alert.kind, "subject": alert.subject,
        "severity": alert.severity, "state": alert.state, "clock": alert.clock,
        "opened_at": iso(alert.opened_at), "resolved_at": iso(alert.resolved_at),
        "reason": alert.reason, "expected": alert.expected, "observed": alert.observed,
        "evidence": {"from": iso(alert.evidence_from), "to": iso(alert.evidence_to)},
        "details": dict(alert.details), "version": alert.version, "topic_prefix": prefix,
    }


def alert_row(alert: Alert, prefix: str, updated_at: dt.datetime) -> dict[str, Any]:
    """The ``alerts`` table's row, by column name."""
    return {
        "topic_prefix": prefix, "alert_id": alert.alert_id, "asset": alert.asset, "kind": alert.kind,
        "subject": alert.subject, "severity": alert.severity, "state": alert.state, "clock": alert.clock,
        "opened_at": _dt(alert.opened_at),
        "resolved_at": None if alert.resolved_at is None else _dt(alert.resolved_at),
        "reason": alert.reason, "expected": alert.expected, "observed": alert.observed,
        "evidence_from": _dt(alert.evidence_from), "evidence_to": _dt(alert.evidence_to),
        "details": json.dumps(dict(alert.details)), "updated_at": updated_at, "version": alert.version,
    }


def baseline_row(e: MinuteExpectation, prefix: str, updated_at: dt.datetime) -> dict[str, Any]:
    """The ``baselines`` table's row, by column name: one per asset, metric and minute."""
    return {
        "topic_prefix": prefix, "asset": e.asset, "metric": e.metric, "minute": _dt(e.minute_ms),
        "observed": float(e.observed), "expected": e.expected, "lower": e.lower, "upper": e.upper,
        "model": e.model, "updated_at": updated_at,
    }


def insert_by_name(store: Store, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows given as column -> value, all with the same columns."""
    if rows:
        store.insert_rows(table, [list(r.values()) for r in rows], list(rows[0]))


class AlertRunner:
    def __init__(self, settings: Settings, store: Store, monitor: GapMonitor, publish: Publish,
                 outbox: Outbox | None = None):
        self.settings = settings
        self.store = store
        self.publish = publish
        self.prefix = settings.topic_dot_prefix
        self.feed = GapFeed(monitor, close_delay_ms=int(settings.minute_close_delay_s * 1000),
                            max_minutes=MAX_MINUTES)
        self.ticks = 0
        self.seen_until_ms = 0          # ingest time looked at so far
        self.catalog = AnnouncedProducts()
        self.catalog_until_ms = 0       # ingest time of the catalog's rows read so far
        self.catalog_ingested_ms = 0    # when the catalog topic last ingested (the look's partition read)
        self._watermarks: deque[tuple[int, int]] = deque()   # (read at, low watermark) of recent looks
        self._expectations: list[MinuteExpectation] = []      # of the minutes judged, not yet stored
        # The webhook's pages: stored here, POSTed by whoever calls outbox.deliver_due.
        self.outbox = outbox or Outbox(settings, store)

    @property
    def monitor(self) -> GapMonitor:
        return self.feed.monitor

    def _q(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.store.rows(sql, {"prefix": self.prefix, **params})

    async def take_over(self, wall_now_ms: int | None = None) -> list[Alert]:
        """Become the alerting worker: relearn from history without alerting, then reconcile
        with the open alerts the previous owner stored. Returns the transitions emitted."""
        first, newest, count = (await asyncio.to_thread(self._q, A.EVENT_SPAN_SQL))[0]
        if count:
            self.feed.closed_until_ms = max(int(first), int(newest) - BACKFILL_MINUTES * MINUTE_MS) \
                // MINUTE_MS * MINUTE_MS
        await self.tick(emit=False, wall_now_ms=wall_now_ms, budget_s=None)
        columns, rows = await asyncio.to_thread(self.store.query, A.OPEN_ALERTS_SQL, {"prefix": self.prefix})
        stored = {alert.key: alert for alert in (read_alert(dict(zip(columns, row, strict=True))) for row in rows)}
        out: list[Alert] = []
        for key, current in self.monitor.open.items():
            if key in stored:  # still breaching: the same alert goes on
                previous = stored[key]
                current.alert = dataclasses.replace(current.alert, alert_id=previous.alert_id,
                                                    opened_at=previous.opened_at, version=previous.version)
            else:  # opened in history the previous owner never published
                out.append(current.alert)
        now = self.feed.event_now_ms or int(time.time() * 1000)
        for key, previous in stored.items():
            if key not in self.monitor.open:
                out.append(previous.resolved(now, f"resolved: no longer breaching ({previous.reason})",
                                             previous.observed))
        if out:
            await self._emit(out)
        return out

    async def tick(self, *, emit: bool = True, wall_now_ms: int | None = None,
                   budget_s: float | None = CLOSE_BUDGET_S) -> list[Alert]:
        """One look; ``budget_s``: judge closed minutes for about this long (None: all of them, as
        a takeover does before it reconciles)."""
        wall_now_ms = wall_now_ms if wall_now_ms is not None else int(time.time() * 1000)
        # Rows judged just now may still sit in a sink buffer: look a little behind.
        until = wall_now_ms - int(max(2.0, 4 * self.settings.flush_interval_s) * 1000)
        transitions = await asyncio.to_thread(self._look, until, wall_now_ms, budget_s)
        self.ticks += 1
        if self.ticks % DRIFT_EVERY == 1:
            transitions += await asyncio.to_thread(self._drift)
        if emit and transitions:
            await self._emit(transitions)
        # After the alerts: what the detectors expected of the minutes judged (Grafana's bands).
        if self._expectations:
            await asyncio.to_thread(self._write_expectations)
        return transitions

    def _look(self, until_ms: int, now_ms: int, budget_s: float | None = CLOSE_BUDGET_S) -> list[Alert]:
        first_look = self.seen_until_ms == 0
        since_ms = max(self.seen_until_ms, until_ms - LOOK_LIMIT_S * 1000)
        # Read before the activity: every row the watermark stands for is then counted in it.
        watermark = self._watermark(until_ms)
        activity = [Activity(asset, int(newest_ts), int(newest_ingest), int(first_ts))
                    for asset, newest_ts, newest_ingest, first_ts in self._q(A.ASSET_ACTIVITY_SQL)]
        learning = self.feed.learning(activity, since_ms)
        arrivals = self._arrivals(A.GAPS_SQL, since=_dt(since_ms), until=_dt(until_ms),
                                  assets=learning) if learning else []
        self.feed.look(activity, arrivals, watermark_ms=watermark)
        if first_look:
            self._seed()
        self.seen_until_ms = max(self.seen_until_ms, until_ms)
        out: list[Alert] = []
        deadline = None if budget_s is None else time.monotonic() + budget_s
        while (closed := self._close_minutes(until_ms)) is not None:
            out += closed
            if len(self._expectations) >= EXPECTATIONS_HELD:   # a catch-up: bounded memory
                self._write_expectations()
            if deadline is not None and time.monotonic() > deadline:   # the rest in the next looks, in order
                break
        # The live edge holds each asset's newest event against a watermark read no later than
        # ``until``: the inserts that watermark counted have then finished writing every rollup
        # (a server writes an insert's rollups one after another), so no asset looks quiet
        # for an event whose asset rollup row was not written yet.
        if watermark is not None:
            self._watermarks.append((now_ms, watermark))
        safe = [w for read_at, w in self._watermarks if read_at <= until_ms]
        while len(self._watermarks) > 1 and self._watermarks[1][0] <= until_ms:
            self._watermarks.popleft()
        if safe:
            out += self.feed.silence(max(safe), "event")
        # Judged at the time we have looked up to, not at wall_now: rows ingested since
        # may still sit in a sink buffer, and would otherwise count as quiet time.
        out += self.feed.silence(until_ms, "wall")
        return out

    def _watermark(self, until_ms: int) -> int | None:
        """The low watermark over the deployment's partitions (see the module's docstring)."""
        rows = self._q(A.PARTITIONS_SQL)
        catalog = self.settings.topic("product")
        self.catalog_ingested_ms = max((int(i) for topic, _, i in rows if topic == catalog), default=0)
        parts = [(int(p), int(i)) for _, p, i in rows if p is not None]
        if not parts:
            return None
        idle_before = until_ms - int(self.settings.watermark_idle_s * 1000)
        moving = [p for p, ingested in parts if ingested >= idle_before]
        return min(moving) if moving else max(p for p, _ in parts)

    def _arrivals(self, sql: str, **params: Any) -> list[Arrivals]:
        return [Arrivals(asset, int(first), int(n), sample)
                for asset, n, sample, first in self._q(sql, sample=GAP_SAMPLE, **params)]

    def _seed(self) -> None:
        """After the first look: the gaps between the minutes with events over the backfill
        window (the rollup), for the assets the look's bounded window showed too few gaps of."""
        if not self.feed.event_now_ms:
            return
        end = self.feed.event_now_ms // MINUTE_MS * MINUTE_MS + MINUTE_MS
        self.feed.seed_cadence(self._arrivals(A.MINUTE_GAPS_SQL, **{
            "from": _dt(end - BACKFILL_MINUTES * MINUTE_MS), "to": _dt(end)}))

    def _read_catalog(self, until_ms: int) -> None:
        """The products announced up to ``until_ms`` of ingest time: all of them the first
        time (the product rollup holds every one stored), then those ingested since, unless
        the catalog's topic has ingested nothing since (most looks of a quiet catalog)."""
        if not self.catalog_until_ms:
            self.catalog.add(h for h, in self._q(A.CATALOG_SQL))
        elif until_ms > self.catalog_until_ms and self.catalog_ingested_ms > self.catalog_until_ms:
            self.catalog.add(h for h, in self._q(A.NEW_CATALOG_SQL, since=_dt(self.catalog_until_ms),
                                                   until=_dt(until_ms)))
        self.catalog_until_ms = max(self.catalog_until_ms, until_ms)

    def _close_minutes(self, until_ms: int) -> list[Alert] | None:
        span = self.feed.span()
        if span is None:
            return None
        start, end = span
        window = {"from": _dt(start), "to": _dt(end)}
        self._read_catalog(until_ms)
        minutes = closed_minutes((EventGroup(*row) for row in self._q(A.MINUTE_EVENTS_SQL, **window)),
                                 self.catalog)
        if not self._raw_kept_since(start, until_ms):
            # past the raw events' retention: the counts from the rollup, arrivals where kept
            minutes = {(asset, int(m)): minutes.get((asset, int(m)), MinuteCounts(0))._replace(
                           events=int(events), product_refs=int(refs))
                       for asset, m, events, refs in self._q(A.MINUTES_SQL, **window)}
        counts: dict[int, dict[str, MinuteCounts]] = {}
        for (asset, m), c in minutes.items():
            counts.setdefault(m, {})[asset] = c
        presence: dict[int, dict[str, dict[str, int]]] = {}
        for stream, m, name, n in self._q(A.FIELD_MINUTES_SQL, **window):
            presence.setdefault(int(m), {}).setdefault(stream, {})[name] = int(n)
        return self.feed.close(start, end, counts, presence, self._expectations)

    def _raw_kept_since(self, start_ms: int, now_ms: int) -> bool:
        """Whether the raw events of event time ``start_ms`` on are all still stored: they were
        ingested at or after it (give or take a producer's clock), within the retention."""
        retention = self.settings.raw_retention_s
        return not retention or start_ms > now_ms - int(retention * 1000) + RETENTION_MARGIN_MS

    def _write_expectations(self) -> None:
        rows, self._expectations = self._expectations, []
        updated_at = _dt(int(time.time() * 1000))
        insert_by_name(self.store, "baselines", [baseline_row(e, self.prefix, updated_at) for e in rows])

    def _drift(self) -> list[Alert]:
        now = self.feed.event_now_ms
        return self.monitor.drift(inventory.schema_drift(self.store, self.settings, watermark_ms=now or None), now)

    async def _emit(self, transitions: list[Alert]) -> None:
        updated_at = _dt(int(time.time() * 1000))
        rows = [alert_row(a, self.prefix, updated_at) for a in transitions]
        messages = [alert_message(a, self.prefix) for a in transitions]
        await self.publish(messages)
        pages = [m for a, m in zip(transitions, messages, strict=True) if not a.inhibited_by]
        if self.settings.alert_webhook and pages:
            # Stored, not sent: delivery runs apart. Before the alerts row, so a transition
            # `stocktake alerts` shows has its page in the outbox.
            await asyncio.to_thread(self.outbox.enqueue, pages)
        await asyncio.to_thread(insert_by_name, self.store, "alerts", rows)
        for a in transitions:
            log.warning("alert %s %s %s %s: %s", a.state, a.severity, a.asset, a.kind, a.reason)
