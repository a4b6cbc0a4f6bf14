"""Feeding the gap detectors: from what was read to GapMonitor calls. Pure.

The alerting worker (services/alerting.py, reading the store) and the
evaluation and backtest (tools/evalgaps.py, replaying events in simulated
time) drive the detectors through this one class, so the evaluation measures
what the worker does. Each look hands it:

1. activity: per asset, the newest event time (and ingest time, for the wall
   clock) among the rows seen since the last look, and the low watermark: the
   event time every partition has reached (services/alerting.py: the minimum
   over the partitions still moving; the evaluation: the newest event time);
2. the closed minutes of event time (``span``: watermark minus
   ``close_delay_ms``, floored to the minute): per asset and minute the
   events, product references, orphans and the arrivals (first and newest
   event time, the gaps between consecutive events that ended in the minute as
   LagHistogram buckets, the longest of them); per stream and minute the field
   presence. Every known asset gets one observation per closed minute, zero
   when it had none, in event-time order; after each minute the hour and day
   buckets that ended are judged and every asset's quiet time is checked at the
   minute's end. Everything judged on the event clock is judged here, in
   event-time order, from closed minutes only: a history replayed at full
   speed raises what it raised live (backtest = live);
3. silence at the live edge: on the event clock (the watermark against each
   asset's newest event; it may open an alert, at the newest event + the
   threshold learned so far, never resolve one) and on the wall clock (assets
   whose newest event is fresh: a replay has no wall clock).

A look reads a bounded window of minutes (``max_minutes``); the rest wait for
the next look, in order. Where a first look (a takeover) has history behind it
that its window does not show, ``seed_cadence`` teaches the assets it showed
too few gaps of a coarse cadence: the gaps between the minutes in which they
had events.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.gaps import GapMonitor, MinuteExpectation, MinuteObservation
from stocktake.processors.quality import EDGES, LagHistogram


class Activity(NamedTuple):
    asset: str
    newest_event_ms: int
    newest_ingest_ms: int | None = None   # None where there is no wall clock (a replay)
    first_event_ms: int | None = None     # where known (the store's rollup): its first event time


class Arrivals(NamedTuple):
    asset: str
    first_ms: int                 # the earliest event time among them
    gaps: int                     # how many inter-arrival gaps there were
    sample: Sequence[float]       # a sample of them (all, when small)


class MinuteCounts(NamedTuple):
    events: int                   # valid events in the minute
    product_refs: int = 0
    orphan_refs: int = 0
    first_ms: int | None = None   # the earliest and newest event time among them
    last_ms: int | None = None
    cadence: tuple[tuple[int, int], ...] = ()   # LagHistogram bucket -> gaps ending in the minute
    longest: tuple[int, int] | None = None      # the longest of those gaps: (from, to) event time


NO_EVENTS = MinuteCounts(0)
Counts = Mapping[int, Mapping[str, MinuteCounts]]            # minute -> asset -> counts
Presence = Mapping[int, Mapping[str, Mapping[str, int]]]     # minute -> stream -> field -> present


class GapFeed:
    """``max_minutes``: judge at most this many minutes in one look (the rest wait for the next
    look; None: all). ``idle_minutes``: stop observing an asset this many minutes after its last
    minute with events (its rolling baseline then holds only zeros, or a drop already firing, so
    more empty minutes change nothing but the run time; its hour and day buckets still close);
    None: observe every asset ever seen, every minute."""

    def __init__(self, monitor: GapMonitor, *, close_delay_ms: int, max_minutes: int | None = None,
                 idle_minutes: int | None = None):
        self.monitor = monitor
        self.close_delay_ms = close_delay_ms
        self.max_minutes = max_minutes
        self.idle_minutes = idle_minutes
        self.last_event: dict[str, int] = {}    # asset -> newest event time (event clock)
        self.last_ingest: dict[str, int] = {}   # asset -> newest ingest time (wall clock)
        self.lag: dict[str, int] = {}           # asset -> ingest minus event time of its newest event
        self.event_now_ms = 0                   # the low watermark: event time every partition has reached
        self.first_event_ms: int | None = None
        self.closed_until_ms: int | None = None   # minutes judged so far (exclusive)
        self._active: dict[str, int] = {}       # asset -> last closed minute with events
        self.pending: dict[str, LagHistogram] = {}   # asset -> live-edge gaps, until closed minutes show a cadence

    def look(self, activity: Iterable[Activity], arrivals: Iterable[Arrivals] = (),
             watermark_ms: int | None = None) -> None:
        """What arrived since the last look; ``watermark_ms`` None: the newest event time seen
        (one partition, in order: the evaluation). ``arrivals``: where history starts, and the
        gaps at the live edge, kept apart (``pending``) for assets whose closed minutes do not
        yet show a cadence: the live-edge silence of a cold start."""
        for a in arrivals:
            if self.first_event_ms is None or a.first_ms < self.first_event_ms:
                self.first_event_ms = a.first_ms
            if self.monitor.state(a.asset).p99_gap_ms() is not None:
                self.pending.pop(a.asset, None)
                continue
            hist = self.pending.setdefault(a.asset, LagHistogram())
            previous = self.last_event.get(a.asset)
            if previous is not None and a.first_ms > previous:
                hist.add(a.first_ms - previous)
            weight = max(1, round(a.gaps / len(a.sample))) if a.sample else 0
            for gap in a.sample:
                hist.add(gap, weight)
        for act in activity:
            if act.newest_event_ms >= self.last_event.get(act.asset, 0):
                self.last_event[act.asset] = act.newest_event_ms
                if act.newest_ingest_ms is not None:
                    self.lag[act.asset] = act.newest_ingest_ms - act.newest_event_ms
            if act.newest_ingest_ms is not None:
                self.last_ingest[act.asset] = max(self.last_ingest.get(act.asset, 0), act.newest_ingest_ms)
            if act.first_event_ms is not None and (self.first_event_ms is None
                                                   or act.first_event_ms < self.first_event_ms):
                self.first_event_ms = act.first_event_ms
            if self.first_event_ms is None:
                self.first_event_ms = act.newest_event_ms
        if watermark_ms is None and self.last_event:
            watermark_ms = max(self.last_event.values())
        if watermark_ms is not None:
            self.event_now_ms = max(self.event_now_ms, watermark_ms)

    def learning(self, activity: Iterable[Activity], since_ms: int) -> list[str]:
        """Of the assets in ``activity``, those that ingested after ``since_ms`` (the start of
        the window of ingest time the next look reads) and whose closed minutes show no cadence
        yet: the ones whose live-edge gaps that look needs (a cold start, a new asset)."""
        return sorted(a.asset for a in activity
                      if (a.newest_ingest_ms or 0) > since_ms and self.monitor.state(a.asset).p99_gap_ms() is None)

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
        if self.max_minutes is not None:
            end = min(end, start + self.max_minutes * MINUTE_MS)
        return start, end

    def close(self, start: int, end: int, counts: Counts, presence: Presence,
              expectations: list[MinuteExpectation] | None = None) -> list[Alert]:
        """Judge the minutes [start, end) (from ``span``) in event-time order; ``expectations``,
        where given, collects what the detectors expected of each minute before judging it: its
        events, and where they were judged its fields' present shares and its orphan share.
        The gaps in ``counts`` are those between events inside [start, end): the gap from an
        asset's newest earlier event to its first one here is added here."""
        monitor = self.monitor
        out: list[Alert] = []
        known = set(self.last_event).union(*(c.keys() for c in counts.values()))
        known.update(a for a, st in monitor.assets.items() if st.last_arrival is not None)
        live = sorted(known)
        ahead = sorted(m for m in counts if start <= m < end)
        crossed: set[str] = set()   # assets whose gap into this window is added
        minute = start
        while minute < end:
            out += monitor.advance(minute)
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
                out += monitor.minute(MinuteObservation(
                    asset, minute, c.events, c.events if fields else 0, fields, c.product_refs, c.orphan_refs),
                    expectations)
                if c.events and c.first_ms is not None:
                    cadence, longest = c.cadence, c.longest
                    if asset not in crossed:
                        crossed.add(asset)
                        cadence, longest = self._cross(asset, c)
                    out += monitor.arrivals(asset, minute, cadence, longest, c.last_ms)
            for asset in live:
                out += monitor.quiet_at(asset, minute + MINUTE_MS)
            minute += MINUTE_MS
        out += monitor.advance(end)
        self.closed_until_ms = end
        return out

    def _cross(self, asset: str, c: MinuteCounts) -> tuple[tuple[tuple[int, int], ...], tuple[int, int] | None]:
        """The minute's gaps with the one from the asset's newest earlier event added."""
        before = self.monitor.state(asset).last_arrival
        if before is None or c.first_ms is None or c.first_ms <= before:
            return c.cadence, c.longest
        gap = c.first_ms - before
        bucket = bisect_right(EDGES, gap) if gap >= 1 else 0
        longest = c.longest if c.longest is not None and c.longest[1] - c.longest[0] >= gap else (before, c.first_ms)
        return (*c.cadence, (bucket, 1)), longest

    def silence(self, now_ms: int, clock: str) -> list[Alert]:
        """Silence at the live edge: the event clock (``now_ms``: the watermark; opens only) or the
        wall clock (``now_ms``: the ingest time looked up to; assets whose newest event is no older
        than ``wall_max_lag_s`` when ingested - a replay or a catch-up is judged on event time)."""
        if clock == "event":
            if self.span() is not None:  # closed minutes wait to be judged: they come first, in order
                return []
            return self.monitor.silence(now_ms, clock, self.last_event, open_only=True, pending=self.pending)
        fresh = {a: t for a, t in self.last_ingest.items()
                 if self.lag.get(a, 0) <= self.monitor.state(a).config.wall_max_lag_s * 1000}
        return self.monitor.silence(now_ms, clock, fresh, pending=self.pending)


MinuteArrivals = tuple[int, int, tuple[tuple[int, int], ...], tuple[int, int] | None]


def window_arrivals(times: Iterable[int]) -> dict[int, MinuteArrivals]:
    """One asset's event times within a close window -> per minute: first and newest event time,
    the gaps between consecutive events that ended in the minute (LagHistogram bucket -> count)
    and the longest of them. What processors/arrivals.py computes for the worker from the
    store's events, for the evaluation and the backtest (a test holds the two to the same
    answer)."""
    out: dict[int, MinuteArrivals] = {}
    hist: dict[int, dict[int, int]] = {}
    longest: dict[int, tuple[int, int]] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    prev: int | None = None
    for t in sorted(times):
        m = t - t % MINUTE_MS
        if m not in first:
            first[m] = t
        last[m] = t
        if prev is not None:
            gap = t - prev
            b = bisect_right(EDGES, gap) if gap >= 1 else 0
            h = hist.setdefault(m, {})
            h[b] = h.get(b, 0) + 1
            lo = longest.get(m)
            if lo is None or gap > lo[1] - lo[0]:
                longest[m] = (prev, t)
        prev = t
    for m in first:
        out[m] = (first[m], last[m], tuple(sorted(hist.get(m, {}).items())), longest.get(m))
    return out
