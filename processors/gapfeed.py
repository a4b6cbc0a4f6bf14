"""Feeding the gap detectors: from what was read to GapMonitor calls. Pure.

The alerting worker (services/alerting.py, reading the store) and the
evaluation (tools/evalgaps.py, replaying events in simulated time) both drive
the detectors through this one class, so the evaluation measures what the
worker does. Each look hands it:

1. activity: per asset, the newest event time (and ingest time, for the wall
   clock) among the rows seen since the last look;
2. arrivals: per asset, the earliest event time among those rows and a sample of
   the inter-arrival gaps between them (the gap across looks is added here);
3. the closed minutes of event time (``span``: newest event time minus
   ``close_delay_ms``, floored to the minute): per asset and minute the
   events, product references and orphans; per stream and minute the field
   presence. Every known asset gets one observation per closed minute, zero
   when it had none;
4. silence on either clock against the newest times seen.

A look reads a bounded window of arrivals. Where a first look (a takeover) has
history behind it that the window does not show, ``seed_cadence`` teaches the
assets it showed too few gaps of a coarse cadence: the gaps between the minutes
in which they had events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.gaps import GapMonitor, MinuteExpectation, MinuteObservation


class Activity(NamedTuple):
    asset: str
    newest_event_ms: int
    newest_ingest_ms: int | None = None   # None where there is no wall clock (a replay)


class Arrivals(NamedTuple):
    asset: str
    first_ms: int                 # the earliest event time among them
    gaps: int                     # how many inter-arrival gaps there were
    sample: Sequence[float]       # a sample of them (all, when small)


class MinuteCounts(NamedTuple):
    events: int                   # valid events in the minute
    product_refs: int = 0
    orphan_refs: int = 0


NO_EVENTS = MinuteCounts(0)
Counts = Mapping[int, Mapping[str, MinuteCounts]]            # minute -> asset -> counts
Presence = Mapping[int, Mapping[str, Mapping[str, int]]]     # minute -> stream -> field -> present


class GapFeed:
    """``backfill_minutes``: judge at most this many minutes in one look (a jump in event
    time, say a sparse history replayed fast, would otherwise mean millions of empty
    minutes). ``idle_minutes``: stop observing an asset this many minutes after its last
    minute with events (its rolling baseline then holds only zeros, or a drop already
    firing, so more empty minutes change nothing but the run time); None: observe every
    asset ever seen, every minute."""

    def __init__(self, monitor: GapMonitor, *, close_delay_ms: int, backfill_minutes: int | None = None,
                 idle_minutes: int | None = None):
        self.monitor = monitor
        self.close_delay_ms = close_delay_ms
        self.backfill_minutes = backfill_minutes
        self.idle_minutes = idle_minutes
        self.last_event: dict[str, int] = {}    # asset -> newest event time (event clock)
        self.last_ingest: dict[str, int] = {}   # asset -> newest ingest time (wall clock)
        self.event_now_ms = 0                   # newest event time across all assets
        self.first_event_ms: int | None = None
        self.closed_until_ms: int | None = None   # minutes judged so far (exclusive)
        self._active: dict[str, int] = {}       # asset -> last closed minute with events

    def look(self, activity: Iterable[Activity], arrivals: Iterable[Arrivals]) -> None:
        for a in arrivals:
            # The gap across looks (sparse assets have few gaps inside one look).
            previous = self.last_event.get(a.asset)
            if previous is not None and a.first_ms > previous:
                self.monitor.gaps(a.asset, [a.first_ms - previous])
            if a.sample:
                self.monitor.gaps(a.asset, a.sample, max(1, round(a.gaps / len(a.sample))))
            if self.first_event_ms is None or a.first_ms < self.first_event_ms:
                self.first_event_ms = a.first_ms
        for act in activity:
            self.last_event[act.asset] = max(self.last_event.get(act.asset, 0), act.newest_event_ms)
            if act.newest_ingest_ms is not None:
                self.last_ingest[act.asset] = max(self.last_ingest.get(act.asset, 0), act.newest_ingest_ms)
        if self.last_event:
            self.event_now_ms = max(self.event_now_ms, *self.last_event.values())

    def seed_cadence(self, coarse: Iterable[Arrivals]) -> None:
        """``coarse``: per asset, the gaps between the minutes of event time holding its events.
        Learned only by assets whose looks so far showed too few gaps to judge their silence
        (minute resolution suits them: their gaps are long), so an asset whose restart left it
        with no cadence does not go unjudged until it has shown enough gaps again. Assets that
        have a cadence keep the finer one."""
        for a in coarse:
            if self.first_event_ms is None or a.first_ms < self.first_event_ms:
                self.first_event_ms = a.first_ms
            if a.sample and self.monitor.state(a.asset).p99_gap_ms() is None:
                self.monitor.gaps(a.asset, a.sample, max(1, round(a.gaps / len(a.sample))))

    def span(self) -> tuple[int, int] | None:
        """The minutes of event time that are closed and not judged yet: [start, end)."""
        if self.first_event_ms is None:
            return None
        end = (self.event_now_ms - self.close_delay_ms) // MINUTE_MS * MINUTE_MS
        start = self.closed_until_ms
        if start is None:  # first look: start with the first minute that has events
            start = self.first_event_ms // MINUTE_MS * MINUTE_MS
        if end <= start:
            return None
        if self.backfill_minutes is not None:
            start = max(start, end - self.backfill_minutes * MINUTE_MS)
        return start, end

    def close(self, start: int, end: int, counts: Counts, presence: Presence,
              expectations: list[MinuteExpectation] | None = None) -> list[Alert]:
        """Judge the minutes [start, end) (from ``span``); ``expectations``, where given,
        collects what the detectors expected of each minute before judging it: its events,
        and where they were judged its fields' present shares and its orphan share."""
        out: list[Alert] = []
        live = sorted(set(self.last_event).union(*(c.keys() for c in counts.values())))
        ahead = sorted(m for m in counts if start <= m < end)
        minute = start
        while minute < end:
            if self.idle_minutes is not None:
                for asset in counts.get(minute, {}):
                    self._active[asset] = minute
                idle = self.idle_minutes * MINUTE_MS
                live = sorted(a for a, m in self._active.items() if minute - m <= idle)
                if not live:  # nothing to say until the next minute with events
                    minute = next((m for m in ahead if m > minute), end)
                    continue
            in_minute = counts.get(minute, {})
            fields_by_stream = presence.get(minute, {})
            for asset in live:
                c = in_minute.get(asset, NO_EVENTS)
                fields = fields_by_stream.get(asset, {}) if Asset.parse(asset).is_stream else {}
                out += self.monitor.minute(MinuteObservation(
                    asset, minute, c.events, c.events if fields else 0, fields, c.product_refs, c.orphan_refs),
                    expectations)
            minute += MINUTE_MS
        self.closed_until_ms = end
        return out

    def silence(self, now_ms: int, clock: str) -> list[Alert]:
        """Silence on the event clock (``now_ms``: newest event time) or the wall clock
        (``now_ms``: the ingest time looked up to)."""
        return self.monitor.silence(now_ms, clock, self.last_event if clock == "event" else self.last_ingest)
