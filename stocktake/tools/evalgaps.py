"""`stocktake eval-gaps`: how well the gap detectors find injected gaps in the shared data.

Pure Python, no broker and no store: events go through the contract
(`processors.contract.normalize`) and are turned into what the alerting worker
reads from the store, then handed to the worker's own `GapFeed`
(processors/gapfeed.py, as services/alerting.py does), on the event clock:

- per asset (``stream``, ``stream/event_type=X`` | ``op=X`` | ``status=X``,
  ``stream/source=Y``, the inventory's names) the closed minutes of event time:
  valid events, and for stream assets the events and the per-field non-null
  counts over the keys the minute's events carry; for behaviour/transaction
  assets the product references and the orphans among them (products no valid
  product event announced before). A minute closes once the newest event time
  is ``CLOSE_DELAY_MS`` past its end; every known asset gets one observation
  per closed minute, zero when it had no events. Unlike the worker, the feed
  stops observing an asset ``IDLE_MINUTES`` after its last events (then its
  rolling baseline holds nothing but zeros, or a drop that is already firing,
  and feeding more empty minutes changes nothing but the run time - a two-year
  sparse history has a million of them) instead of bounding a look to the
  worker's backfill span;
- per asset and look, the newest event time and every gap between consecutive
  events (the worker samples up to 2000 and weights them);
- a look every ``check_ms`` (2 s) of event time, with silence judged at ``now``,
  the newest event time across all streams. The event clock only moves when
  events arrive, so a look runs when the first event past a 2-second tick
  arrives, judging the state before it (what a worker polling every 2 s would
  see). The wall clock is the worker's alone.

Data (all real, from the shipped samples):

- ``rees46``: the unmodified replay (2019-10-01 00:00-02:50). It has a real
  traffic collapse from 00:17 to 02:17 (1-5 events/min instead of 50-600);
  alerts opened in ``NATURAL_DROP`` (00:17-02:30: the collapse and the ramp
  back from it, to 4-10x the level before it, which the detectors rightly call a
  rise) are reported apart and only the rest counts as false alarms.
- ``olist``: the unmodified replay (2016-10 .. 2018-08, ~1150 events).
- ``tiled_dense``: the rees46 segment ``DENSE`` (02:28-02:50, all three
  streams) repeated back to back from 2019-10-02 00:00Z, time-shifted by whole
  segment lengths, with new event_ids, for ``--days`` days; ``tiled_low``: the
  same with the lower-volume segment ``LOW`` (00:00-00:17). These are the
  clean days the false-alarm rate per simulated day is measured on, and where
  gaps are injected. 02:17-02:27 is the ramp back from the collapse (190 -> 550
  events/min): tiled, it puts a real drop at every seam, which
  ``tiled_dense_0218`` (02:18-02:50) shows for comparison. A tiled day holds
  only 22 (17) distinct real minutes: rare events are under-sampled.

Injections, one per run, at a random minute and second of a tiled day (after
``WARMUP_MINUTES`` of history), alternating dense and low-volume days:

- ``silence``: every event of one source removed for N minutes;
- ``volume``: X% of one asset's events removed for N minutes (seeded RNG);
- ``null_field``: one field set to null on a stream for N minutes.

Each injected run is replayed twice over the same window (``WARMUP_MINUTES``
before the injection to ``TAIL_MINUTES`` after it), with and without the
injection. An injection is detected when an alert of an accepted kind opens on
an asset that lost events (for null_field: the stream) between the injection
start and its end + ``MATCH_GRACE_MS``; silence accepts silence or volume_drop,
volume accepts volume_drop (and silence at 100%), null_field accepts
completeness_drop on that field. ``recall ≥3× gap`` counts only injections at
least 3 times as long as the named asset's mean gap over the hour before (the
owner's "typical inter-arrival"). Time to detect is the alert's ``opened_at``
minus the injection start (``opened_at`` of a minute alert is the end of the
minute; the worker emits it ``CLOSE_DELAY_MS`` later, reported as
``ttd_emitted``). Precision counts the alerts opened in the injected runs,
leaving out those the clean run of the same window also opens (same asset,
kind and subject, opened within ``MATCH_GRACE_MS``); an alert is right when it
matches (above) or when the injection caused it: a silence on an asset that
lost events whose quiet span (its evidence, last event to the look) held events
of that asset in the clean run that the injection removed. A stream cut by 80%
goes without events for longer than its cadence allows, a silence as the
detectors define it; ``kind-exact`` precision counts matches only. Pages are
the alerts not inhibited by their stream's (what the webhook is sent).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import dataclasses
import itertools
import math
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import event_assets
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.contract import Event, normalize
from stocktake.processors.contract_spec import shipped
from stocktake.processors.gapfeed import Activity, Arrivals, GapFeed, MinuteCounts, window_arrivals
from stocktake.processors.gaps import GapConfig, GapMonitor
from stocktake.sources import load_events

SECOND_MS = 1000
CHECK_MS = 2 * SECOND_MS           # silence check period (the worker's gap_interval_s)
CLOSE_DELAY_MS = 30 * SECOND_MS    # a minute closes this long after its end (minute_close_delay_s)
IDLE_MINUTES = 60
MATCH_GRACE_MS = 2 * MINUTE_MS
WARMUP_MINUTES = 60
TAIL_MINUTES = 15


def _utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


DAY_MS = 24 * 60 * MINUTE_MS
REES46_DAY = _utc_ms("2019-10-01T00:00:00")
DENSE = (REES46_DAY + (2 * 60 + 28) * MINUTE_MS, REES46_DAY + (2 * 60 + 50) * MINUTE_MS)   # 02:28-02:50
DENSE_WITH_RAMP = (REES46_DAY + (2 * 60 + 18) * MINUTE_MS, DENSE[1])                       # 02:18-02:50
LOW = (REES46_DAY, REES46_DAY + 17 * MINUTE_MS)                                            # 00:00-00:17
NATURAL_DROP = (REES46_DAY + 17 * MINUTE_MS, REES46_DAY + (2 * 60 + 30) * MINUTE_MS)        # 00:17-02:30
TILED_START = _utc_ms("2019-10-02T00:00:00")

LENGTHS = (2, 5, 15, 30)            # minutes
FRACTIONS = (0.5, 0.8, 1.0)         # volume cut
SILENCE_SOURCES = ("rees46-web", "rees46-catalog", "rees46-checkout")
VOLUME_ASSETS = ("behaviour", "behaviour/event_type=view", "product")
NULL_FIELDS = (("behaviour", "brand"), ("behaviour", "category_code"), ("product", "price"))
KINDS = ("silence", "volume", "null_field")
ACCEPTED = {"silence": {"silence", "volume_drop"}, "volume": {"volume_drop"},
            "null_field": {"completeness_drop"}}


class Ev(NamedTuple):
    """A valid event, reduced to what the detectors look at."""

    ts_ms: int
    stream: str
    kind: str
    source: str
    product_id: str
    fields: dict[str, Any]
    event_id: str


def assets_of(stream: str, kind: str, source: str) -> tuple[str, ...]:
    """The inventory's asset names an event counts in."""
    return tuple(event_assets(stream, shipped()[stream].kind_field, kind, source))


def contract_events(source: str, data_dir: Path | None = None) -> list[Ev]:
    """The replay's events through contract v1; the invalid ones are left out (the
    detectors only count valid events)."""
    out: list[Ev] = []
    contracts = shipped()
    for r in load_events(source, data_dir):
        e = normalize(contracts[r.stream], r.event)
        if isinstance(e, Event):
            out.append(Ev(e.ts_ms, r.stream, e.kind, e.source, e.product_id, e.fields, e.event_id))
    out.sort(key=lambda e: e.ts_ms)  # stable: the replay's order within a second stays
    return out


# ---------------------------------------------------------------- feeding the monitor


@dataclasses.dataclass
class Simulation:
    """Drives the detectors through the alerting worker's GapFeed from events in event-time
    order: what a worker polling every ``check_ms`` would read from the store."""

    feed: GapFeed
    check_ms: int = CHECK_MS
    alerts: list[Alert] = dataclasses.field(default_factory=list)   # every transition, in order
    emitted_at: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)  # (id, version) ->
    now_ms: int | None = None
    _next_check: int = 0
    _newest: dict[str, int] = dataclasses.field(default_factory=dict)      # since the last look, per asset
    # since the last look, per asset: its first event time and the gaps after it
    _first: dict[str, tuple[int, list[int]]] = dataclasses.field(default_factory=dict)
    _times: dict[int, dict[str, list[int]]] = dataclasses.field(default_factory=dict)  # minute -> asset -> times
    _counts: dict[int, dict[str, list[int]]] = dataclasses.field(default_factory=dict)
    _present: dict[int, dict[str, dict[str, int]]] = dataclasses.field(default_factory=dict)
    _catalog: set[str] = dataclasses.field(default_factory=set)
    _assets: dict[tuple[str, str, str], tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def monitor(self) -> GapMonitor:
        return self.feed.monitor

    def feed_events(self, events: Iterable[Ev]) -> Simulation:
        for ev in events:
            self._event(ev)
        if self.now_ms is not None:
            self._tick()
        return self

    def _event(self, ev: Ev) -> None:
        ts = ev.ts_ms
        if self.now_ms is None:
            self._next_check = (ts // self.check_ms + 1) * self.check_ms
        elif ts >= self._next_check and ts > self.now_ms:
            self._tick()
            self._next_check = (ts // self.check_ms + 1) * self.check_ms
        if self.now_ms is None or ts > self.now_ms:
            self.now_ms = ts
        key = (ev.stream, ev.kind, ev.source)
        assets = self._assets.get(key)
        if assets is None:
            assets = self._assets[key] = assets_of(*key)
        minute = ts - ts % MINUTE_MS
        counts = self._counts.get(minute)
        if counts is None:
            counts = self._counts[minute] = {}
        ref = ev.stream != "product" and bool(ev.product_id)
        orphan = ref and ev.product_id not in self._catalog
        newest = self._newest
        times = self._times.get(minute)
        if times is None:
            times = self._times[minute] = {}
        for asset in assets:
            prev = newest.get(asset)
            if prev is None:
                self._first.setdefault(asset, (ts, []))
            else:
                self._first.setdefault(asset, (ts, []))[1].append(ts - prev)
            if prev is None or ts > prev:
                newest[asset] = ts
            c = counts.get(asset)
            if c is None:
                c = counts[asset] = [0, 0, 0]
                times[asset] = []
            c[0] += 1
            times[asset].append(ts)
            if ref:
                c[1] += 1
                c[2] += orphan
        if ev.stream == "product":
            self._catalog.add(ev.product_id)
        by_stream = self._present.get(minute)
        if by_stream is None:
            by_stream = self._present[minute] = {}
        present = by_stream.get(ev.stream)
        if present is None:
            present = by_stream[ev.stream] = {}
        for name, value in ev.fields.items():
            if value is None:
                present.setdefault(name, 0)
            else:
                present[name] = present.get(name, 0) + 1

    def _emit(self, transitions: list[Alert]) -> None:
        assert self.now_ms is not None
        for t in transitions:
            self.emitted_at[t.alert_id, t.version] = self.now_ms
        self.alerts += transitions

    def _tick(self) -> None:
        """One look of the worker: what arrived since the last, closed minutes, silence."""
        feed = self.feed
        feed.look([Activity(asset, ts) for asset, ts in self._newest.items()],
                  [Arrivals(asset, first, len(gaps), gaps) for asset, (first, gaps) in self._first.items()])
        self._newest.clear()
        self._first.clear()
        span = feed.span()
        while span is not None:
            start, end = span
            closing = sorted(m for m in self._counts if m < end)
            by_asset: dict[str, list[int]] = {}
            for m in closing:
                for asset, ts in self._times[m].items():
                    by_asset.setdefault(asset, []).extend(ts)
            arrivals = {asset: window_arrivals(ts) for asset, ts in by_asset.items()}
            counts = {m: {a: MinuteCounts(c[0], c[1], c[2], *arrivals[a][m]) for a, c in self._counts[m].items()}
                      for m in closing}
            self._emit(feed.close(start, end, counts, self._present))
            for m in closing:
                del self._counts[m]
                del self._times[m]
                self._present.pop(m, None)
            span = feed.span()
        self._emit(feed.silence(feed.event_now_ms, "event"))


def simulate(events: Iterable[Ev], config: GapConfig | None = None, check_ms: int = CHECK_MS) -> Simulation:
    feed = GapFeed(GapMonitor(config), close_delay_ms=CLOSE_DELAY_MS, idle_minutes=IDLE_MINUTES)
    return Simulation(feed, check_ms).feed_events(events)


def firings(sim: Simulation) -> list[Alert]:
    return [a for a in sim.alerts if a.state == "firing"]


# ---------------------------------------------------------------- tiled clean days


def seamless(events: Sequence[Ev], lo: int, hi: int) -> list[Ev]:
    """The events of the segment [lo, hi) retimed per stream so that, repeated with period
    ``hi - lo``, no stream goes quiet at a seam for longer than its median gap: each stream's
    events are stretched (by a few percent) from its first to its last to span the period less
    that gap. Cut out of a real day, a segment's streams start and end at different moments,
    and tiled as they are each seam holds a gap (25 s of no product events in ``LOW``) that the
    silence detectors rightly see in the event time of the tiled day."""
    period = hi - lo
    by_stream: dict[str, list[Ev]] = {}
    for e in events:
        if lo <= e.ts_ms < hi:
            by_stream.setdefault(e.stream, []).append(e)
    out: list[Ev] = []
    for evs in by_stream.values():
        times = [e.ts_ms for e in evs]
        gaps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
        gap = gaps[len(gaps) // 2] if gaps else 0
        first, span = times[0], times[-1] - times[0]
        scale = (period - gap) / span if span > 0 else 1.0
        out += [e._replace(ts_ms=lo + gap // 2 + round((e.ts_ms - first) * scale)) for e in evs]
    out.sort(key=lambda e: e.ts_ms)
    return out


class Tiles:
    """A real segment repeated back to back from ``start``: tile k is the segment (``seamless``)
    shifted by ``start - seg_start + k * seg_len``, event_ids suffixed with ``~k``."""

    def __init__(self, events: Sequence[Ev], segment: tuple[int, int], start: int = TILED_START):
        lo, hi = segment
        self.segment = seamless(events, lo, hi)
        self.times = [e.ts_ms for e in self.segment]
        self.seg_start, self.seg_len, self.start = lo, hi - lo, start

    def window(self, from_ms: int, to_ms: int) -> Iterator[Ev]:
        """Events with from_ms <= ts < to_ms, in order."""
        k = max(0, (from_ms - self.start) // self.seg_len)
        while True:
            shift = self.start - self.seg_start + k * self.seg_len
            if self.seg_start + shift >= to_ms:
                return
            i = bisect.bisect_left(self.times, from_ms - shift)
            j = bisect.bisect_left(self.times, to_ms - shift)
            for e in self.segment[i:j]:
                yield e._replace(ts_ms=e.ts_ms + shift, event_id=f"{e.event_id}~{k}")
            k += 1


# ---------------------------------------------------------------- injections


class Injection(NamedTuple):
    kind: str          # silence | volume | null_field
    target: str        # silence: a source; volume: an asset; null_field: "stream.field"
    start_ms: int
    minutes: int
    fraction: float = 1.0
    segment: str = ""  # tiled_dense | tiled_low

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.minutes * MINUTE_MS

    def label(self) -> str:
        size = f" {self.fraction:.0%}" if self.kind == "volume" else ""
        return f"{self.kind} {self.target}{size} {self.minutes}m"


def inject(events: Iterable[Ev], inj: Injection, seed: int) -> tuple[list[Ev], set[str]]:
    """The events with the injection applied, and the assets that lost events (or, for
    null_field, the stream whose field was nulled)."""
    rng = random.Random(seed)
    out: list[Ev] = []
    hit: set[str] = set()
    stream, _, fname = inj.target.partition(".")
    for e in events:
        if not inj.start_ms <= e.ts_ms < inj.end_ms:
            out.append(e)
            continue
        if inj.kind == "silence":
            if e.source == inj.target:
                hit.update(assets_of(e.stream, e.kind, e.source))
                continue
        elif inj.kind == "volume":
            names = assets_of(e.stream, e.kind, e.source)
            if inj.target in names and rng.random() < inj.fraction:
                hit.update(names)
                continue
        elif inj.kind == "null_field":
            if e.stream == stream and e.fields.get(fname) is not None:
                hit.add(stream)
                e = e._replace(fields={**e.fields, fname: None})
        else:
            raise ValueError(f"unknown injection kind {inj.kind!r}")
        out.append(e)
    return out, hit


def plan(runs: int, seed: int, days: dict[str, tuple[int, int]],
         kinds: Sequence[str] = KINDS) -> list[Injection]:
    """``runs`` injections per kind, cycling through targets × lengths (× cuts), at
    random minutes and seconds of the tiled days, alternating dense and low-volume."""
    rng = random.Random(seed)
    out: list[Injection] = []
    names = sorted(days)
    for kind in kinds:
        for i in range(runs):
            # Coprime strides: any 12 consecutive runs cover every (target or cut) × length pair,
            # and each pair lands in both segments.
            if kind == "volume":
                target = VOLUME_ASSETS[(i // 12) % len(VOLUME_ASSETS)]
                fraction = FRACTIONS[i % len(FRACTIONS)]
            else:
                target = SILENCE_SOURCES[i % 3] if kind == "silence" else "{}.{}".format(*NULL_FIELDS[i % 3])
                fraction = 1.0
            minutes = LENGTHS[i % len(LENGTHS)]
            segment = names[(i // 12 + i) % len(names)]
            lo, hi = days[segment]
            first = lo + WARMUP_MINUTES * MINUTE_MS
            last = hi - (minutes + TAIL_MINUTES) * MINUTE_MS
            start = rng.randrange(first // MINUTE_MS, last // MINUTE_MS) * MINUTE_MS + rng.randrange(60) * SECOND_MS
            out.append(Injection(kind, target, start, minutes, fraction, segment))
    return out


def _same(a: Alert, b: Alert) -> bool:
    return (a.asset, a.kind, a.subject) == (b.asset, b.kind, b.subject) \
        and abs(a.opened_at - b.opened_at) <= MATCH_GRACE_MS


def _p99_gap(times: Sequence[int]) -> float | None:
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    if not gaps:
        return None
    return float(gaps[max(0, math.ceil(0.99 * len(gaps)) - 1)])


def judge_run(inj: Injection, clean: list[Ev], config: GapConfig | None, seed: int,
              check_ms: int = CHECK_MS) -> dict[str, Any]:
    """One injected run against the clean run of the same window."""
    injected, hit = inject(clean, inj, seed)
    base = firings(simulate(clean, config, check_ms=check_ms))
    sim = simulate(injected, config, check_ms=check_ms)
    fired = firings(sim)
    new = [a for a in fired if not any(_same(a, b) for b in base)]
    stream, _, fname = inj.target.partition(".")
    accepted = set(ACCEPTED[inj.kind]) | ({"silence"} if inj.kind == "volume" and inj.fraction >= 1 else set())

    def matches(a: Alert) -> bool:
        if not inj.start_ms <= a.opened_at <= inj.end_ms + MATCH_GRACE_MS or a.kind not in accepted:
            return False
        if inj.kind == "null_field":
            return a.asset == stream and a.subject == fname
        return a.asset in hit
    matched = [a for a in new if matches(a)]
    # Not the injection's kind, but its doing: a silence whose quiet span held events of that
    # asset in the clean run, removed by the injection (a stream cut by 80% goes without
    # events for longer than its cadence allows - a silence as the detectors define it).
    removed = {e.event_id for e in clean} - {e.event_id for e in injected}
    lost = sorted((e.ts_ms, assets_of(e.stream, e.kind, e.source)) for e in clean if e.event_id in removed)
    lost_ts = [t for t, _ in lost]

    def caused(a: Alert) -> bool:
        if a.kind != "silence" or a.asset not in hit:
            return False
        i = bisect.bisect_right(lost_ts, a.evidence_from)
        j = bisect.bisect_right(lost_ts, a.opened_at)
        return any(a.asset in names for _, names in lost[i:j])
    caused_alerts = [a for a in new if a not in matched and caused(a)]
    first = min(matched, key=lambda a: a.opened_at) if matched else None
    # "typical inter-arrival" and p99 gap of the asset the injection names, over the hour before it
    asset = {"silence": f"{_stream_of(clean, inj.target)}/source={inj.target}",
             "volume": inj.target, "null_field": stream}[inj.kind]
    lo = inj.start_ms - WARMUP_MINUTES * MINUTE_MS
    times = [e.ts_ms for e in clean if lo <= e.ts_ms < inj.start_ms and asset in assets_of(e.stream, e.kind, e.source)]
    typical = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return {
        "injection": inj._asdict() | {"label": inj.label()}, "asset": asset,
        "typical_gap_ms": typical, "p99_gap_ms": _p99_gap(times),
        "eligible": typical is not None and inj.minutes * MINUTE_MS >= 3 * typical,
        "detected": first is not None,
        "ttd_ms": None if first is None else first.opened_at - inj.start_ms,
        "ttd_emitted_ms": None if first is None else sim.emitted_at[first.alert_id, first.version] - inj.start_ms,
        "first_alert": None if first is None else {"asset": first.asset, "kind": first.kind, "subject": first.subject},
        "alerts": len(new), "matched": len(matched), "caused": len(caused_alerts),
        "pages": sum(not a.inhibited_by for a in new),
        "unmatched": [{"asset": a.asset, "kind": a.kind, "subject": a.subject, "opened_at": a.opened_at,
                       "caused": a in caused_alerts}
                      for a in new if a not in matched],
        "resolved": first is not None and any(
            t.alert_id == first.alert_id and t.state == "resolved" for t in sim.alerts),
    }


def _stream_of(events: Sequence[Ev], source: str) -> str:
    return next((e.stream for e in events if e.source == source), "?")


# ---------------------------------------------------------------- metrics


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[max(0, math.ceil(q * len(s)) - 1)])


def _rate(n: float, d: float) -> float | None:
    return round(n / d, 4) if d else None


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        rs = [r for r in results if r["injection"]["kind"] == kind]
        if not rs:
            continue
        elig = [r for r in rs if r["eligible"]]
        ttd = [r["ttd_ms"] / 1000 for r in rs if r["detected"]]
        ttd_e = [r["ttd_emitted_ms"] / 1000 for r in rs if r["detected"]]
        alerts, matched = sum(r["alerts"] for r in rs), sum(r["matched"] for r in rs)
        caused = sum(r["caused"] for r in rs)
        row: dict[str, Any] = {
            "runs": len(rs), "detected": sum(r["detected"] for r in rs),
            "recall": _rate(sum(r["detected"] for r in rs), len(rs)),
            "eligible_runs": len(elig), "recall_eligible": _rate(sum(r["detected"] for r in elig), len(elig)),
            "alerts": alerts, "matched_alerts": matched, "caused_alerts": caused,
            "precision": _rate(matched + caused, alerts), "precision_kind_exact": _rate(matched, alerts),
            "alerts_per_run": round(alerts / len(rs), 2),
            "pages_per_run": round(sum(r["pages"] for r in rs) / len(rs), 2),
            "ttd_median_s": _quantile(ttd, 0.5), "ttd_p95_s": _quantile(ttd, 0.95),
            "ttd_emitted_median_s": _quantile(ttd_e, 0.5), "ttd_emitted_p95_s": _quantile(ttd_e, 0.95),
        }
        if kind == "silence":
            ratios = [r["ttd_ms"] / r["p99_gap_ms"] for r in rs if r["detected"] and r["p99_gap_ms"]]
            row["ttd_over_p99_median"] = None if not ratios else round(statistics.median(ratios), 2)
            row["ttd_over_p99_by_source"] = {
                src: round(statistics.median(v), 2) for src in SILENCE_SOURCES
                if (v := [r["ttd_ms"] / r["p99_gap_ms"] for r in rs
                          if r["injection"]["target"] == src and r["detected"] and r["p99_gap_ms"]])}
        row["by_case"] = _breakdown(rs)
        out[kind] = row
    return out


def _breakdown(rs: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        i = r["injection"]
        size = f" {i['fraction']:.0%}" if i["kind"] == "volume" else ""
        groups.setdefault(f"{i['target']}{size} {i['minutes']}m", []).append(r)
        groups.setdefault(f"length {i['minutes']}m", []).append(r)
        groups.setdefault(f"segment {i['segment']}", []).append(r)
        if size:
            groups.setdefault(f"cut{size}", []).append(r)
    return {k: {"runs": len(v), "detected": sum(r["detected"] for r in v),
                "median_ttd_s": _quantile([r["ttd_ms"] / 1000 for r in v if r["detected"]], 0.5)}
            for k, v in sorted(groups.items())}


def clean_report(name: str, events: Iterable[Ev], config: GapConfig | None, span_ms: tuple[int, int],
                 natural: tuple[int, int] | None = None, check_ms: int = CHECK_MS) -> dict[str, Any]:
    sim = simulate(events, config, check_ms=check_ms)
    fired = firings(sim)
    days = (span_ms[1] - span_ms[0]) / DAY_MS
    assets = len(sim.monitor.assets)
    on_drop = [a for a in fired if natural and natural[0] <= a.opened_at < natural[1]]
    elsewhere = [a for a in fired if a not in on_drop]
    by_kind: dict[str, int] = {}
    for a in elsewhere:
        by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
    per_asset: dict[str, int] = {}
    for a in elsewhere:
        per_asset[a.asset] = per_asset.get(a.asset, 0) + 1
    return {
        "data": name, "days": round(days, 4), "assets": assets,
        "alerts": len(fired), "natural_drop_alerts": len(on_drop) if natural else None,
        "false_alarms": len(elsewhere), "by_kind": by_kind,
        "worst_asset_per_day": round(max(per_asset.values(), default=0) / days, 3) if days else None,
        "per_asset_per_day": round(len(elsewhere) / assets / days, 3) if assets and days else None,
        "natural_drop": [_brief(a) for a in on_drop], "false_alarm_list": [_brief(a) for a in elsewhere][:50],
    }


def _brief(a: Alert) -> dict[str, Any]:
    at = datetime.fromtimestamp(a.opened_at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return {"asset": a.asset, "kind": a.kind, "subject": a.subject, "opened_at": at,
            "reason": a.reason}


# ---------------------------------------------------------------- the whole evaluation


def run(runs: int = 144, seed: int = 7, days: int = 1, config: GapConfig | None = None,
        check_ms: int = CHECK_MS, data_dir: Path | None = None, clean: bool = True,
        kinds: Sequence[str] = KINDS, progress: Callable[[str], None] | None = None,
        workers: int | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    rees = contract_events("rees46", data_dir)
    tiles = {"tiled_dense": Tiles(rees, DENSE), "tiled_low": Tiles(rees, LOW)}
    span = (TILED_START, TILED_START + days * DAY_MS)
    report: dict[str, Any] = {
        "seed": seed, "runs_per_kind": runs, "check_every_s": check_ms / 1000,
        "config": dataclasses.asdict(config or GapConfig()),
        "tiles": {k: {"from": _iso(t.seg_start), "to": _iso(t.seg_start + t.seg_len),
                      "events_per_tile": len(t.segment), "days": days} for k, t in tiles.items()},
        "natural_drop_window": [_iso(NATURAL_DROP[0]), _iso(NATURAL_DROP[1])],
    }
    if clean:
        report["clean"] = {}
        for name, t in (*tiles.items(), ("tiled_dense_0218", Tiles(rees, DENSE_WITH_RAMP))):
            say(f"clean {name} ({days} d)")
            report["clean"][name] = clean_report(name, t.window(*span), config, span, check_ms=check_ms)
        say("clean rees46 replay")
        report["clean"]["rees46"] = clean_report("rees46", rees, config, (rees[0].ts_ms, rees[-1].ts_ms),
                                                 NATURAL_DROP, check_ms=check_ms)
        olist = contract_events("olist", data_dir)
        say("clean olist replay")
        report["clean"]["olist"] = clean_report("olist", olist, config, (olist[0].ts_ms, olist[-1].ts_ms),
                                                check_ms=check_ms)
    injections = plan(runs, seed, {name: span for name in tiles}, kinds)
    jobs = [(inj, config, seed * 1_000_003 + n, check_ms) for n, inj in enumerate(injections)]
    _TILES.update(tiles)
    results = []
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    # Runs are independent: forked workers inherit the tiles and each replays its own windows.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) \
            if workers > 1 else contextlib.nullcontext() as pool:
        done = pool.map(_injected_run, jobs, chunksize=4) if pool else map(_injected_run, jobs)
        for n, result in enumerate(done):
            if n % 10 == 0:
                say(f"injected run {n + 1}/{len(jobs)}")
            results.append(result)
    report["kinds"] = summarize(results)
    alerts = sum(r["alerts"] for r in results)
    matched = sum(r["matched"] for r in results)
    caused = sum(r["caused"] for r in results)
    report["overall"] = {"alerts": alerts, "matched": matched, "caused": caused,
                         "precision": _rate(matched + caused, alerts),
                         "precision_kind_exact": _rate(matched, alerts)}
    report["runs"] = results
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    return report


_TILES: dict[str, Tiles] = {}   # the tiled days, set before forking the workers


def _injected_run(job: tuple[Injection, GapConfig | None, int, int]) -> dict[str, Any]:
    inj, config, seed, check_ms = job
    window = list(_TILES[inj.segment].window(inj.start_ms - WARMUP_MINUTES * MINUTE_MS,
                                             inj.end_ms + TAIL_MINUTES * MINUTE_MS))
    return judge_run(inj, window, config, seed, check_ms)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else (f"{x:.1f}" if isinstance(x, float) else str(x))


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.width = max(console.width, 132)
    table = Table(title=f"injected gaps: {report['runs_per_kind']} runs per kind, seed {report['seed']}, "
                        f"silence checked every {report['check_every_s']:g} s of event time")
    for col in ("kind", "runs", "recall", "recall ≥3× gap", "precision", "kind-exact", "TTD median s",
                "TTD p95 s", "emitted median s", "TTD / p99 gap", "alerts / pages per run"):
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for kind, row in report["kinds"].items():
        table.add_row(kind, str(row["runs"]), _fmt(row["recall"], True),
                      f"{_fmt(row['recall_eligible'], True)} of {row['eligible_runs']}",
                      _fmt(row["precision"], True), _fmt(row["precision_kind_exact"], True),
                      _fmt(row["ttd_median_s"]), _fmt(row["ttd_p95_s"]), _fmt(row["ttd_emitted_median_s"]),
                      _fmt(row.get("ttd_over_p99_median")), f"{row['alerts_per_run']:.1f} / {row['pages_per_run']:.1f}")
    console.print(table)
    if "clean" in report:
        t2 = Table(title="clean data (rees46: alerts opened in the known natural drop "
                         f"{report['natural_drop_window'][0][11:16]}-{report['natural_drop_window'][1][11:16]} "
                         "are not false alarms)")
        for col in ("data", "days", "assets", "alerts", "natural drop", "false alarms", "per asset-day",
                    "worst asset-day", "false alarms by kind"):
            t2.add_column(col, no_wrap=True)
        for name, c in report["clean"].items():
            t2.add_row(name, f"{c['days']:.3g}", str(c["assets"]), str(c["alerts"]),
                       _fmt(c["natural_drop_alerts"]), str(c["false_alarms"]), _fmt(c["per_asset_per_day"]),
                       _fmt(c["worst_asset_per_day"]), ", ".join(f"{k} {v}" for k, v in c["by_kind"].items()))
        console.print(t2)
    o = report["overall"]
    console.print(f"overall precision {_fmt(o['precision'], True)} ({o['matched'] + o['caused']}/{o['alerts']} "
                  f"alerts: {o['matched']} of the injection's kind, {o['caused']} silences it caused); "
                  f"kind-exact {_fmt(o['precision_kind_exact'], True)}; took {report['elapsed_s']:.1f} s")


def main(runs: int = 144, seed: int = 7, as_json: bool = False, days: int = 1, check_s: float = CHECK_MS / 1000) -> int:
    """`stocktake eval-gaps`: the table (or --json), progress on stderr."""
    import json
    import sys

    report = run(runs=runs, seed=seed, days=days, check_ms=round(check_s * 1000),
                 progress=None if as_json else lambda m: print(m, file=sys.stderr))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
