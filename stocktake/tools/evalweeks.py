"""`stocktake eval-gaps --weeks N`: the gap detectors over weeks of shaped real data.

The minute-level evaluation (tools/evalgaps.py) tiles 17-22 real minutes into clean
days: it says nothing about the hour and day scales, daily and weekly seasonality,
holidays, low-volume assets (a few events an hour), funnels, new assets or a source
that starts and stops. This one builds weeks of events from the same real REES46
sample and injects gaps at every scale.

The series (``build_series``): the rees46 segment ``DENSE`` (02:28-02:50, ~46k valid
events, all three streams) tiled back to back from ``SERIES_START`` (a Monday), and
thinned: each *flow* (a stream and event kind of the base, and the source its events
carry) keeps each base event with probability ``per_hour × factor / base rate``, so
it carries ``per_hour`` events an hour at factor 1. The factor of a stream's hour is

- the hour of day (``HOURLY``: a night trough of 0.2 at 04:00 UTC, the evening peak
  of 1.0 at 20:00);
- the day of week (``weekend``: 0.7 on Saturday and Sunday);
- the holidays (``holiday_factor``: 0.4 on each of ``holidays``, UTC dates; the same
  dates are handed to the detectors as ``GapConfig.holidays``);
- noise: a multiplicative jitter per stream and hour, ``exp(N(0, jitter))``.

Thinning is sampled by geometric skips (each event kept independently, in time
O(events kept)). Kept events get new event_ids (``<base id>~<tile>``, ``@<source>``
where the flow relabels the source). The flows (``FLOWS``) give the busy
``behaviour/event_type=view`` of ``rees46-web`` (~90/h on average), a mid-volume
``transaction`` (~33/h) and low-volume assets of ~9-12 events an hour on average
(2-3 at night): ``behaviour/event_type=cart``, ``behaviour/event_type=purchase``,
the source ``behaviour/source=rees46-app`` (views relabelled) and ``product``. Four
weeks hold ~110k events. A seed fixes the series.

Injections (``plan``), each its own run on a copy of the clean series, placed
uniformly after the warm-up (half the series, at most two weeks) and clear of the
holidays:

- ``multi_day_drop``: 20/40/60% of a low-volume asset's events removed for 2-5 days;
  detected by ``volume_drop`` (any scale) or ``ratio_drop`` on an asset that lost
  events;
- ``hour_drop``: 50/75/100% of a low- or mid-volume asset's events removed for 2-8
  hours; ``volume_drop`` or ``silence``;
- ``funnel_drop``: 40% of the purchases (or carts) removed for 3 days, views
  unchanged; ``ratio_drop`` or ``volume_drop``;
- ``new_error_type``: a new behaviour event type named like an error
  (``payment_error``, ``checkout_timeout``, ...) from ``rees46-web``, rising from 2
  to 20 events an hour over 12-36 hours; ``new_asset`` or ``volume_spike`` on
  ``behaviour/event_type=<name>``. The behaviour contract's event_type is an open
  vocabulary (``[a-z][a-z0-9_]{0,39}``), so such events are valid; they are crafted
  as contract output (``Ev``) from real views with the type renamed;
- ``cold_start_silence``: a new source ``rees46-kiosk`` sends ~10 views a second
  (Poisson, ms times) for 90 s and stops; ``silence`` on
  ``behaviour/source=rees46-kiosk``, time to detect counted from its last event.

One clean run per series is simulated (evalgaps' ``Simulation``: the worker's
``GapFeed`` on the event clock). On the way it is pickled just before the first
event at or after each injection's start; each injected run resumes such a
checkpoint (in a forked worker) and replays the injected events to the injection's
end plus a tail (for the drops: until the UTC day the drop ends in has closed, plus 2
hours), which is the injected run from the start, exactly, at a fraction of the cost.

A drop is *significant* when the events it removed are at least ``SIGNIFICANT_SIGMAS``
(4) Poisson sigmas of what its window held (removed / fraction): ``recall ≥4σ`` counts
those only, as the minute evaluation's ``recall ≥3× gap`` counts silences longer than the
cadence (a 2-hour 50% cut of 10 events an hour is within any day's hourly noise).

Judging generalises ``evalgaps.judge_run``: an injected run's alerts are those that
the clean run does not also open (same asset, kind and subject, within 2 minutes).
An alert *matches* when it is of an accepted kind on the right asset and opens
between the injection's start and its end plus a grace per scale (minute and event:
2 minutes; hour: 2 hours; day: until 2 hours after the UTC day it ends in has closed). An unmatched alert was still
*caused* by the injection when it is a silence on an asset that lost events whose
quiet span held events the injection removed; a ratio alert whose denominator lost
(or gained) events; or, for the injections that add events, any alert on an asset
that gained them. Precision = (matched + caused) / alerts; kind-exact = matched /
alerts. The scale of an alert is ``details["scale"]`` (``minute`` when absent);
silence and new_asset are ``event``. Pages are the alerts whose ``details`` have no
``inhibited_by``.

On the clean series: every alert opened after ``learn_days`` (2) is a false alarm,
counted per kind and scale, per asset-week, with pages per asset-month; those opened
on holidays are also counted apart, those in the first days reported as learning.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import pickle
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.contract_spec import shipped
from stocktake.processors.gaps import GapConfig
from stocktake.tools.evalgaps import (
    CHECK_MS,
    DAY_MS,
    DENSE,
    MATCH_GRACE_MS,
    SECOND_MS,
    Ev,
    Simulation,
    _quantile,
    _rate,
    _utc_ms,
    assets_of,
    contract_events,
    firings,
    simulate,
)

HOUR_MS = 60 * MINUTE_MS
WEEK_MS = 7 * DAY_MS
SERIES_START = _utc_ms("2019-10-07T00:00:00")   # a Monday
WEEKS = 4
# hour-of-day factor (UTC): night trough 0.2 at 04:00, evening peak 1.0 at 20:00; mean 0.6
HOURLY = (0.45, 0.33, 0.25, 0.21, 0.20, 0.22, 0.28, 0.38, 0.50, 0.60, 0.66, 0.70,
          0.72, 0.72, 0.71, 0.72, 0.75, 0.80, 0.88, 0.96, 1.00, 0.95, 0.80, 0.60)
WEEKEND = 0.7
HOLIDAYS = ("2019-10-14", "2019-10-31")
HOLIDAY_FACTOR = 0.4
JITTER = 0.1
LEARN_DAYS = 2


class Flow(NamedTuple):
    """Events of the base's ``stream`` and ``kind``, relabelled to ``source``, at ``per_hour``
    events an hour where the factor is 1 (a weekday's evening peak)."""

    stream: str
    kind: str
    source: str
    per_hour: float


FLOWS = (
    Flow("behaviour", "view", "rees46-web", 160),        # busy: ~90/h on average
    Flow("behaviour", "view", "rees46-app", 18),         # a low-volume source: ~10/h
    Flow("behaviour", "cart", "rees46-web", 22),         # ~12/h
    Flow("behaviour", "purchase", "rees46-web", 16),     # ~9/h
    Flow("product", "upsert", "rees46-catalog", 20),     # ~11/h
    Flow("transaction", "paid", "rees46-checkout", 60),  # mid-volume: ~33/h
)
LOW_ASSETS = ("behaviour/event_type=purchase", "behaviour/event_type=cart", "behaviour/source=rees46-app",
              "product")
HOUR_DROP_ASSETS = (*LOW_ASSETS, "transaction")
FUNNEL_ASSETS = ("behaviour/event_type=purchase", "behaviour/event_type=cart")
ERROR_TYPES = ("payment_error", "checkout_timeout", "payment_failed", "cart_exception")
COLD_SOURCE = "rees46-kiosk"

KINDS = ("multi_day_drop", "hour_drop", "funnel_drop", "new_error_type", "cold_start_silence")
ACCEPTED = {
    "multi_day_drop": {"volume_drop", "ratio_drop"},
    "hour_drop": {"volume_drop", "silence"},
    "funnel_drop": {"ratio_drop", "volume_drop"},
    "new_error_type": {"new_asset", "volume_spike"},
    "cold_start_silence": {"silence"},
}
ADDS = {"new_error_type", "cold_start_silence"}     # injections that add events rather than remove them
RUNS = {"multi_day_drop": 10, "hour_drop": 20, "funnel_drop": 8, "new_error_type": 8, "cold_start_silence": 8}
DROPS = ("multi_day_drop", "hour_drop", "funnel_drop")
# the most replayed after an injection's end (drops: until the UTC day it ends in has closed, + 2 h)
TAIL_MS = {"multi_day_drop": DAY_MS + 2 * HOUR_MS, "hour_drop": DAY_MS + 2 * HOUR_MS,
           "funnel_drop": DAY_MS + 2 * HOUR_MS, "new_error_type": 2 * HOUR_MS,
           "cold_start_silence": 10 * MINUTE_MS}
GRACE_MS = {"minute": MATCH_GRACE_MS, "event": MATCH_GRACE_MS, "hour": 2 * HOUR_MS}   # day: see match_until
SCALES = ("event", "minute", "hour", "day")


SIGNIFICANT_SIGMAS = 4.0   # a drop removing fewer events than this many Poisson sigmas is not "significant"

def scale_of(a: Alert) -> str:
    """An alert's time scale: ``details["scale"]``; silence and new assets are judged per event."""
    scale = a.details.get("scale")
    if scale:
        return str(scale)
    return "event" if a.kind in ("silence", "new_asset") else "minute"


def with_holidays(config: GapConfig | None, holidays: Iterable[str]) -> GapConfig:
    """``config`` with ``holidays`` added to its own (where GapConfig knows holidays)."""
    cfg = config or GapConfig()
    days = tuple(holidays)
    if days and "holidays" in {f.name for f in dataclasses.fields(cfg)}:
        have = tuple(getattr(cfg, "holidays", ()))
        changes: dict[str, Any] = {"holidays": tuple(sorted(set(have) | set(days)))}
        cfg = dataclasses.replace(cfg, **changes)
    return cfg


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day_start(date: str) -> int:
    return _utc_ms(f"{date}T00:00:00")


# ---------------------------------------------------------------- the shaped series


@dataclasses.dataclass(frozen=True)
class Shape:
    hourly: tuple[float, ...] = HOURLY
    weekend: float = WEEKEND
    holidays: tuple[str, ...] = HOLIDAYS
    holiday_factor: float = HOLIDAY_FACTOR
    jitter: float = JITTER


@dataclasses.dataclass
class Series:
    start_ms: int
    end_ms: int
    seed: int
    shape: Shape
    flows: tuple[Flow, ...]
    events: list[Ev]
    times: list[int]
    jitter: dict[tuple[str, int], float]     # (stream, hour index) -> multiplicative noise

    @property
    def weeks(self) -> float:
        return (self.end_ms - self.start_ms) / WEEK_MS

    def factor(self, stream: str, ts_ms: int) -> float:
        """The traffic factor of a stream's hour (hour of day × weekend × holiday × noise)."""
        hour = (ts_ms - self.start_ms) // HOUR_MS
        t = datetime.fromtimestamp(ts_ms / 1000, UTC)
        f = self.shape.hourly[t.hour]
        if t.weekday() >= 5:
            f *= self.shape.weekend
        if t.strftime("%Y-%m-%d") in self.shape.holidays:
            f *= self.shape.holiday_factor
        return f * self.jitter.get((stream, hour), 1.0)

    def holiday_windows(self) -> list[tuple[int, int]]:
        return [(d, d + DAY_MS) for d in map(_day_start, self.shape.holidays)]

    def index(self, ts_ms: int) -> int:
        """The first event at or after ``ts_ms``."""
        return bisect.bisect_left(self.times, ts_ms)


def _thin(rng: random.Random, rel: Sequence[int], seg_len: int, start: int, lo: int, hi: int,
          p: float) -> Iterator[tuple[int, int, int]]:
    """(tile, index, time) of the base events kept, each with probability ``p``, among those of
    the tiled base (event times ``rel`` within a segment of ``seg_len``, tiled from ``start``)
    in [lo, hi): geometric skips, O(kept)."""
    n = len(rel)
    if p <= 0 or n == 0:
        return
    k = (lo - start) // seg_len
    i = k * n + bisect.bisect_left(rel, lo - start - k * seg_len) - 1
    log_q = math.log1p(-p) if p < 1 else 0.0
    while True:
        i += 1 if p >= 1 else 1 + int(math.log(1.0 - rng.random()) / log_q)
        k, j = divmod(i, n)
        ts = start + k * seg_len + rel[j]
        if ts >= hi:
            return
        yield k, j, ts


def build_series(base: Sequence[Ev], weeks: float = WEEKS, seed: int = 7, start_ms: int = SERIES_START,
                 flows: Sequence[Flow] = FLOWS, shape: Shape | None = None,
                 segment: tuple[int, int] = DENSE) -> Series:
    """``weeks`` of shaped events from the real ``base`` events (contract output) of ``segment``."""
    shape = shape or Shape()
    end_ms = start_ms + round(weeks * WEEK_MS)
    hours = (end_ms - start_ms + HOUR_MS - 1) // HOUR_MS
    jrng = random.Random(f"{seed}:jitter")
    streams = sorted({f.stream for f in flows})
    jitter = {(s, h): math.exp(jrng.gauss(0.0, shape.jitter)) if shape.jitter > 0 else 1.0
              for h in range(hours) for s in streams}
    series = Series(start_ms, end_ms, seed, shape, tuple(flows), [], [], jitter)
    lo, hi = segment
    seg_len = hi - lo
    out: list[Ev] = []
    for flow in flows:
        pool = [e for e in base if lo <= e.ts_ms < hi and e.stream == flow.stream and e.kind == flow.kind]
        if not pool:
            raise ValueError(f"no {flow.stream}/{flow.kind} events in the base segment")
        rel = [e.ts_ms - lo for e in pool]
        base_per_hour = len(pool) / (seg_len / HOUR_MS)
        rng = random.Random(f"{seed}:{flow.stream}:{flow.kind}:{flow.source}")
        relabel = any(e.source != flow.source for e in pool)
        pool = [e._replace(source=flow.source, fields={**e.fields, "source": flow.source}) if relabel else e
                for e in pool]
        suffix = f"@{flow.source}" if relabel else ""
        for h in range(hours):
            t0 = start_ms + h * HOUR_MS
            t1 = min(end_ms, t0 + HOUR_MS)
            p = flow.per_hour * series.factor(flow.stream, t0) / base_per_hour
            for k, j, ts in _thin(rng, rel, seg_len, start_ms, t0, t1, min(1.0, p)):
                e = pool[j]
                out.append(e._replace(ts_ms=ts, event_id=f"{e.event_id}{suffix}~{k}"))
    out.sort(key=lambda e: e.ts_ms)   # stable: flows in order within a millisecond
    series.events = out
    series.times = [e.ts_ms for e in out]
    return series


def asset_rates(series: Series) -> dict[str, float]:
    """Mean events per hour of every asset over the series."""
    counts: dict[str, int] = {}
    for e in series.events:
        for a in assets_of(e.stream, e.kind, e.source):
            counts[a] = counts.get(a, 0) + 1
    hours = (series.end_ms - series.start_ms) / HOUR_MS
    return {a: round(n / hours, 2) for a, n in sorted(counts.items())}


def hourly_counts(events: Iterable[Ev], asset: str, start_ms: int, end_ms: int) -> list[int]:
    """Events of ``asset`` per hour from ``start_ms``."""
    out = [0] * ((end_ms - start_ms + HOUR_MS - 1) // HOUR_MS)
    for e in events:
        if start_ms <= e.ts_ms < end_ms and asset in assets_of(e.stream, e.kind, e.source):
            out[(e.ts_ms - start_ms) // HOUR_MS] += 1
    return out


# ---------------------------------------------------------------- injections


class WeekInjection(NamedTuple):
    kind: str          # one of KINDS
    target: str        # drops: an asset; new_error_type: the event type; cold_start_silence: the source
    start_ms: int
    end_ms: int        # exclusive for drops; the last added event for cold_start_silence
    fraction: float = 0.0   # drops: share of the target's events removed
    rate: float = 0.0       # new_error_type: events/hour at the end of the rise; cold start: events/s
    tail: int | None = None  # ms replayed after the end (None: the kind's TAIL_MS)

    @property
    def asset(self) -> str:
        """The asset the injection names (where the accepted alerts are expected)."""
        if self.kind == "new_error_type":
            return shipped()["behaviour"].kind_asset(self.target)
        if self.kind == "cold_start_silence":
            return str(Asset("behaviour", "source", self.target))
        return self.target

    @property
    def reference_ms(self) -> int:
        """Time to detect is counted from here: the start; for a cold start, its last event."""
        return self.end_ms if self.kind == "cold_start_silence" else self.start_ms

    @property
    def tail_ms(self) -> int:
        """How long after the end the injected run goes on: for drops, until the day bucket the
        end falls in has closed and 2 hours more (at most TAIL_MS)."""
        if self.tail is not None:
            return self.tail
        if self.kind in DROPS:
            return self.match_until("day") - self.end_ms
        return TAIL_MS[self.kind]

    def match_until(self, scale: str) -> int:
        """The latest an alert of ``scale`` may open and be this injection's finding: the end
        plus 2 minutes (minute, event) or 2 hours (hour); for day, 2 hours after the UTC day
        the end falls in has closed."""
        if scale == "day":
            return self.end_ms - self.end_ms % DAY_MS + DAY_MS + 2 * HOUR_MS
        return self.end_ms + GRACE_MS.get(scale, MATCH_GRACE_MS)

    def label(self) -> str:
        span = _span_text(self.end_ms - self.start_ms)
        if self.kind == "new_error_type":
            return f"{self.kind} {self.asset} rising to {self.rate:g}/h over {span}"
        if self.kind == "cold_start_silence":
            return f"{self.kind} {self.asset} {self.rate:g}/s for {span}"
        return f"{self.kind} {self.target} {self.fraction:.0%} {span}"


def _span_text(ms: float) -> str:
    if ms >= DAY_MS:
        return f"{ms / DAY_MS:.3g}d"
    if ms >= HOUR_MS:
        return f"{ms / HOUR_MS:.3g}h"
    return f"{ms / SECOND_MS:.3g}s"


class Injected(NamedTuple):
    events: list[Ev]
    hit: set[str]                                   # assets that lost (or gained) events
    removed: list[tuple[int, tuple[str, ...]]]      # (time, assets) of each removed event
    added: int


def _error_events(base: Sequence[Ev], inj: WeekInjection, rng: random.Random) -> list[Ev]:
    """A Poisson stream of ``inj.target`` events from rees46-web whose rate rises linearly from 2
    an hour to ``inj.rate`` over the injection (thinned from the top rate)."""
    views = [e for e in base if e.stream == "behaviour" and e.kind == "view"]
    top = max(inj.rate, 2.0)
    span = inj.end_ms - inj.start_ms
    out: list[Ev] = []
    t = float(inj.start_ms)
    while True:
        t += rng.expovariate(top / HOUR_MS)
        if t >= inj.end_ms:
            return out
        rate = 2.0 + (top - 2.0) * (t - inj.start_ms) / span
        if rng.random() < rate / top:
            src = rng.choice(views)
            n = len(out)
            out.append(Ev(int(t), "behaviour", inj.target, "rees46-web", src.product_id,
                          {**src.fields, "event_type": inj.target, "event_id": f"inj-{inj.target}-{n}"},
                          f"inj-{inj.target}-{n}"))


def _cold_start_events(base: Sequence[Ev], inj: WeekInjection, _rng: random.Random) -> list[Ev]:
    """Views from a new source at ``inj.rate`` a second (Poisson, ms times) over [start, end]. The
    times are drawn from the injection alone, so that ``end_ms`` can be the last event's."""
    rng = random.Random(f"cold:{inj.target}:{inj.start_ms}:{inj.rate}")
    views = [e for e in base if e.stream == "behaviour" and e.kind == "view"]
    out: list[Ev] = []
    t = float(inj.start_ms)
    while int(t) <= inj.end_ms:
        src = rng.choice(views)
        n = len(out)
        out.append(Ev(int(t), "behaviour", "view", inj.target, src.product_id,
                      {**src.fields, "source": inj.target, "event_id": f"inj-{inj.target}-{n}"},
                      f"inj-{inj.target}-{n}"))
        t += rng.expovariate(inj.rate / SECOND_MS)
    return out


def cold_start(start_ms: int, seconds: float = 90.0, rate: float = 10.0, source: str = COLD_SOURCE) -> WeekInjection:
    """A cold-start injection whose ``end_ms`` is exactly its last event's time."""
    inj = WeekInjection("cold_start_silence", source, start_ms, start_ms + round(seconds * SECOND_MS), 0.0, rate)
    added = _cold_start_events(_base_views(), inj, random.Random(0))
    return inj._replace(end_ms=added[-1].ts_ms)


_BASE: list[Ev] = []


def _base_views() -> list[Ev]:
    """The base segment's behaviour views, the material added events are made of."""
    if not _BASE:
        lo, hi = DENSE
        _BASE.extend(e for e in contract_events("rees46") if lo <= e.ts_ms < hi and e.stream == "behaviour")
    return _BASE


def inject(events: Sequence[Ev], inj: WeekInjection, seed: int, base: Sequence[Ev] | None = None) -> Injected:
    """The events with ``inj`` applied (a new list; ``events`` is left as it is)."""
    rng = random.Random(seed)
    if inj.kind in ADDS:
        base = base if base is not None else _base_views()
        make = _error_events if inj.kind == "new_error_type" else _cold_start_events
        added = make(base, inj, rng)
        hit: set[str] = set()
        for e in added:
            hit.update(assets_of(e.stream, e.kind, e.source))
        merged = sorted([*events, *added], key=lambda e: e.ts_ms)   # stable: the clean first at a tie
        return Injected(merged, hit, [], len(added))
    if inj.kind not in ACCEPTED:
        raise ValueError(f"unknown injection kind {inj.kind!r}")
    out: list[Ev] = []
    hit = set()
    removed: list[tuple[int, tuple[str, ...]]] = []
    for e in events:
        if inj.start_ms <= e.ts_ms < inj.end_ms:
            names = assets_of(e.stream, e.kind, e.source)
            if inj.target in names and rng.random() < inj.fraction:
                hit.update(names)
                removed.append((e.ts_ms, names))
                continue
        out.append(e)
    return Injected(out, hit, removed, 0)


def plan(runs: int | dict[str, int], seed: int, series: Series, warmup_ms: int | None = None,
         kinds: Sequence[str] = KINDS, skipped: list[str] | None = None) -> list[WeekInjection]:
    """``runs`` injections per kind, cycling through targets × lengths × cuts, at random times
    after the warm-up whose run (injection and tail) stays clear of the holidays. One that has
    no room raises ValueError, or is named in ``skipped`` where that is given."""
    rng = random.Random(seed)
    warmup = default_warmup(series) if warmup_ms is None else warmup_ms
    holidays = series.holiday_windows()
    out: list[WeekInjection] = []
    for kind in kinds:
        n = runs.get(kind, 0) if isinstance(runs, dict) else runs
        for i in range(n):
            fraction, rate = 0.0, 0.0
            if kind == "multi_day_drop":
                target, length = LOW_ASSETS[i % len(LOW_ASSETS)], (2 + i % 4) * DAY_MS
                fraction = (0.2, 0.4, 0.6)[i % 3]
            elif kind == "hour_drop":
                target, length = HOUR_DROP_ASSETS[i % len(HOUR_DROP_ASSETS)], (2 + 2 * (i % 4)) * HOUR_MS
                fraction = (0.5, 0.75, 1.0)[i % 3]
            elif kind == "funnel_drop":
                target, length, fraction = FUNNEL_ASSETS[i % len(FUNNEL_ASSETS)], 3 * DAY_MS, 0.4
            elif kind == "new_error_type":
                target, length, rate = ERROR_TYPES[i % len(ERROR_TYPES)], (12, 24, 36)[i % 3] * HOUR_MS, 20.0
            elif kind == "cold_start_silence":
                target, length, rate = COLD_SOURCE, 90 * SECOND_MS, 10.0
            else:
                raise ValueError(f"unknown injection kind {kind!r}")
            start = _place(rng, series.start_ms + warmup, series.end_ms - length - TAIL_MS[kind],
                           length + TAIL_MS[kind], holidays)
            if start is None and skipped is not None:
                skipped.append(f"{kind} {target} {_span_text(length)}")
                continue
            if start is None:
                raise ValueError(f"{kind}: no room for a {_span_text(length)} injection and its tail after the "
                                 "warm-up and clear of the holidays")
            inj = WeekInjection(kind, target, start, start + length, fraction, rate)
            if kind == "cold_start_silence":
                inj = cold_start(start, length / SECOND_MS, rate, target)
            out.append(inj)
    return out


def _place(rng: random.Random, first: int, last: int, span: int, holidays: Sequence[tuple[int, int]]) -> int | None:
    """A start, whole seconds, uniform over [first, last) where [start, start + span) misses
    every holiday; None where there is none."""
    free = [(first, last)]
    for lo, hi in holidays:   # starts in (lo - span, hi) overlap [lo, hi)
        free = [piece for a, b in free
                for piece in ((a, min(b, lo - span + 1)), (max(a, hi), b)) if piece[0] < piece[1]]
    seconds = [(-(-a // SECOND_MS), (b - 1) // SECOND_MS + 1) for a, b in free]   # a <= start < b
    seconds = [(a, b) for a, b in seconds if a < b]
    total = sum(b - a for a, b in seconds)
    if total <= 0:
        return None
    pick = rng.randrange(total)
    for a, b in seconds:
        if pick < b - a:
            return (a + pick) * SECOND_MS
        pick -= b - a
    return None


def default_warmup(series: Series) -> int:
    """Half the series, at most two weeks: the history the detectors learn before a gap."""
    return min(2 * WEEK_MS, (series.end_ms - series.start_ms) // 2)


# ---------------------------------------------------------------- the runs


class RunOutcome(NamedTuple):
    injection: WeekInjection
    fired: list[Alert]
    emitted_at: dict[str, int]          # alert_id -> event time of the look that emitted its firing
    hit: set[str]
    removed: list[tuple[int, tuple[str, ...]]]
    added: int
    offset: int                         # transitions of the clean run before the checkpoint
    cpu_s: float = 0.0                  # CPU time of the resumed run


def new_simulation(config: GapConfig | None, check_ms: int = CHECK_MS) -> Simulation:
    """An empty Simulation, as evalgaps.simulate builds one (fed nothing yet)."""
    return simulate((), config, check_ms=check_ms)


_SERIES: dict[str, Series] = {}     # the series, set before forking the workers


def _resume(job: tuple[WeekInjection, bytes, int, int]) -> RunOutcome:
    """One injected run: the clean run's checkpoint at the injection's start, fed the injected
    events from there to the injection's end plus its tail."""
    inj, checkpoint, offset, seed = job
    series = _SERIES["series"]
    i0 = series.index(inj.start_ms)
    i1 = series.index(inj.end_ms + inj.tail_ms)
    injected = inject(series.events[i0:i1], inj, seed)
    cpu = time.process_time()
    sim: Simulation = pickle.loads(zlib.decompress(checkpoint))
    sim.feed_events(injected.events)
    cpu = time.process_time() - cpu
    fired = [a for a in sim.alerts[offset:] if a.state == "firing"]
    emitted = {a.alert_id: sim.emitted_at[a.alert_id, a.version] for a in fired}
    return RunOutcome(inj, fired, emitted, injected.hit, injected.removed, injected.added, offset, cpu)


def evaluate(series: Series, injections: Sequence[WeekInjection], config: GapConfig | None = None,
             seed: int = 7, check_ms: int = CHECK_MS, workers: int | None = None,
             progress: Callable[[str], None] | None = None) -> tuple[Simulation, list[RunOutcome]]:
    """The clean run of ``series`` and one run per injection, resumed from the clean run's
    checkpoints in forked workers while the clean run goes on (a checkpoint is the pickled
    Simulation, zlib-compressed: a few hundred KB where it is ~7 MB raw)."""
    say = progress or (lambda _msg: None)
    cfg = with_holidays(config, series.shape.holidays)
    order = sorted(range(len(injections)), key=lambda n: injections[n].start_ms)
    _SERIES["series"] = series
    workers = max(1, min(workers or os.cpu_count() or 1, max(1, len(injections))))
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) \
        if workers > 1 and injections else None
    futures: dict[int, concurrent.futures.Future[RunOutcome]] = {}
    done: dict[int, RunOutcome] = {}
    sim = new_simulation(cfg, check_ms)
    pending = list(order)
    jobs: dict[int, tuple[WeekInjection, bytes, int, int]] = {}

    def stream() -> Iterator[Ev]:
        for ev in series.events:
            while pending and ev.ts_ms >= injections[pending[0]].start_ms:
                n = pending.pop(0)
                jobs[n] = (injections[n], zlib.compress(pickle.dumps(sim, pickle.HIGHEST_PROTOCOL), 1),
                           len(sim.alerts), seed * 1_000_003 + n)
                if pool is not None:
                    futures[n] = pool.submit(_resume, jobs[n])
                else:
                    done[n] = _resume(jobs.pop(n))
                say(f"injected run {len(futures) + len(done)}/{len(injections)} started: {injections[n].label()}")
            yield ev

    try:
        cpu = time.process_time()
        say(f"clean run: {len(series.events)} events over {series.weeks:g} weeks")
        sim.feed_events(stream())
        if pending:
            raise ValueError(f"{len(pending)} injections start after the series ends")
        say(f"clean run done ({time.process_time() - cpu:.1f} s CPU); "
            f"{sum(f.done() for f in futures.values()) + len(done)} of {len(injections)} injected runs done")
        # the clean run is over: this process takes on the runs no worker has started
        for n in sorted(futures, reverse=True):
            if futures[n].cancel():
                del futures[n]
                done[n] = _resume(jobs[n])
                say(f"injected runs done: {sum(f.done() for f in futures.values()) + len(done)}/{len(injections)}")
        for fut in concurrent.futures.as_completed(futures.values()):
            fut.result()
        for n, fut in futures.items():
            done[n] = fut.result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _SERIES.clear()
    return sim, [done[n] for n in range(len(injections))]


# ---------------------------------------------------------------- judging


def _same(a: Alert, b: Alert) -> bool:
    return a.key == b.key and abs(a.opened_at - b.opened_at) <= MATCH_GRACE_MS


def _denominator(a: Alert) -> str | None:
    if a.kind not in ("ratio_drop", "ratio_rise"):
        return None
    return a.subject.rsplit("@", 1)[0]


def judge(outcome: RunOutcome, clean: Sequence[Alert]) -> dict[str, Any]:
    """One injected run against the clean run: matched, caused, time to detect per scale."""
    inj = outcome.injection
    by_key: dict[tuple[str, str, str], list[Alert]] = {}
    for b in clean:
        by_key.setdefault(b.key, []).append(b)
    new = [a for a in outcome.fired if not any(_same(a, b) for b in by_key.get(a.key, ()))]
    accepted = ACCEPTED[inj.kind]
    hit = outcome.hit

    def matches(a: Alert) -> bool:
        if not inj.start_ms <= a.opened_at <= inj.match_until(scale_of(a)):
            return False
        if a.kind not in accepted:
            return False
        return a.asset == inj.asset if inj.kind in ADDS else a.asset in hit

    lost_ts = [t for t, _ in outcome.removed]

    def caused(a: Alert) -> bool:
        if _denominator(a) in hit:
            return True
        if inj.kind in ADDS:
            return a.asset in hit
        if a.kind != "silence" or a.asset not in hit:
            return False
        i = bisect.bisect_right(lost_ts, a.evidence_from)
        j = bisect.bisect_right(lost_ts, a.opened_at)
        return any(a.asset in names for _, names in outcome.removed[i:j])

    matched = [a for a in new if matches(a)]
    is_matched = {id(a) for a in matched}
    caused_alerts = [a for a in new if id(a) not in is_matched and caused(a)]
    is_caused = {id(a) for a in caused_alerts}
    first = min(matched, key=lambda a: a.opened_at) if matched else None
    by_scale: dict[str, dict[str, Any]] = {}
    for a in new:
        s = by_scale.setdefault(scale_of(a), {"alerts": 0, "matched": 0, "caused": 0, "pages": 0, "ttd_ms": None})
        s["alerts"] += 1
        s["pages"] += not a.inhibited_by
        if id(a) in is_matched:
            s["matched"] += 1
            ttd = a.opened_at - inj.reference_ms
            s["ttd_ms"] = ttd if s["ttd_ms"] is None else min(s["ttd_ms"], ttd)
        elif id(a) in is_caused:
            s["caused"] += 1
    # Significant: the events a drop removed are at least 4 Poisson sigmas of what the window
    # held (removed / fraction): a 2-hour 50% cut of 10 events an hour loses 10 of 20, within the
    # noise of any one day's hours, which no detector finds without paging every day.
    removed = len(outcome.removed)
    significant = inj.kind in ADDS or not inj.fraction \
        or removed >= SIGNIFICANT_SIGMAS * math.sqrt(removed / inj.fraction)
    return {
        "injection": inj._asdict() | {"label": inj.label(), "start": _iso(inj.start_ms), "end": _iso(inj.end_ms)},
        "asset": inj.asset,
        "significant": significant,
        "detected": first is not None,
        "ttd_ms": None if first is None else first.opened_at - inj.reference_ms,
        "ttd_emitted_ms": None if first is None else outcome.emitted_at[first.alert_id] - inj.reference_ms,
        "first_alert": None if first is None else _brief(first),
        "alerts": len(new), "matched": len(matched), "caused": len(caused_alerts),
        "pages": sum(not a.inhibited_by for a in new),
        "matched_pages": sum(not a.inhibited_by for a in matched),
        "by_scale": by_scale,
        "removed": len(outcome.removed), "added": outcome.added, "cpu_s": round(outcome.cpu_s, 2),
        "unmatched": [_brief(a) | {"caused": id(a) in is_caused} for a in new if id(a) not in is_matched][:20],
    }


def _brief(a: Alert) -> dict[str, Any]:
    return {"asset": a.asset, "kind": a.kind, "subject": a.subject, "scale": scale_of(a),
            "severity": a.severity, "opened_at": _iso(a.opened_at), "page": not a.inhibited_by,
            "reason": a.reason}


# ---------------------------------------------------------------- metrics


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per injected kind: recall, precision, time to detect, alerts and pages, overall and per scale."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        rs = [r for r in results if r["injection"]["kind"] == kind]
        if not rs:
            continue
        ttd = [r["ttd_ms"] / 1000 for r in rs if r["detected"]]
        alerts, matched, caused = (sum(r[k] for r in rs) for k in ("alerts", "matched", "caused"))
        sig = [r for r in rs if r["significant"]]
        row: dict[str, Any] = {
            "runs": len(rs), "detected": sum(r["detected"] for r in rs),
            "recall": _rate(sum(r["detected"] for r in rs), len(rs)),
            "significant_runs": len(sig), "recall_significant": _rate(sum(r["detected"] for r in sig), len(sig)),
            "alerts": alerts, "matched_alerts": matched, "caused_alerts": caused,
            "precision": _rate(matched + caused, alerts), "precision_kind_exact": _rate(matched, alerts),
            "alerts_per_run": round(alerts / len(rs), 2),
            "pages_per_run": round(sum(r["pages"] for r in rs) / len(rs), 2),
            "ttd_median_s": _quantile(ttd, 0.5), "ttd_p95_s": _quantile(ttd, 0.95),
            "scales": {},
        }
        for scale in SCALES:
            cells = [r["by_scale"].get(scale) for r in rs]
            if not any(cells):
                continue
            got = [c for c in cells if c]
            s_ttd = [c["ttd_ms"] / 1000 for c in got if c["ttd_ms"] is not None]
            s_alerts = sum(c["alerts"] for c in got)
            s_matched, s_caused = sum(c["matched"] for c in got), sum(c["caused"] for c in got)
            row["scales"][scale] = {
                "detected": len(s_ttd), "recall": _rate(len(s_ttd), len(rs)),
                "alerts": s_alerts, "matched_alerts": s_matched, "caused_alerts": s_caused,
                "precision": _rate(s_matched + s_caused, s_alerts),
                "precision_kind_exact": _rate(s_matched, s_alerts),
                "pages": sum(c["pages"] for c in got),
                "ttd_median_s": _quantile(s_ttd, 0.5), "ttd_p95_s": _quantile(s_ttd, 0.95),
            }
        row["by_target"] = {
            t: {"runs": len(v), "detected": sum(r["detected"] for r in v),
                "ttd_median_s": _quantile([r["ttd_ms"] / 1000 for r in v if r["detected"]], 0.5)}
            for t in sorted({r["asset"] for r in rs})
            if (v := [r for r in rs if r["asset"] == t])}
        out[kind] = row
    return out


def clean_report(sim: Simulation, series: Series, learn_days: float = LEARN_DAYS) -> dict[str, Any]:
    """False alarms on the clean series: every alert opened after ``learn_days``."""
    fired = firings(sim)
    learn_end = series.start_ms + round(learn_days * DAY_MS)
    learning = [a for a in fired if a.opened_at < learn_end]
    false = [a for a in fired if a.opened_at >= learn_end]
    holidays = series.holiday_windows()
    on_holiday = [a for a in false if any(lo <= a.opened_at < hi for lo, hi in holidays)]
    assets = len(sim.monitor.assets)
    weeks = (series.end_ms - learn_end) / WEEK_MS
    asset_weeks = assets * weeks
    by_kind_scale: dict[str, dict[str, Any]] = {}
    for a in false:
        row = by_kind_scale.setdefault(f"{a.kind}@{scale_of(a)}", {"alerts": 0, "pages": 0})
        row["alerts"] += 1
        row["pages"] += not a.inhibited_by
    for row in by_kind_scale.values():
        row["per_asset_week"] = _rate(row["alerts"], asset_weeks)
        row["pages_per_asset_month"] = _rate(4 * row["pages"], asset_weeks)
    pages = [a for a in false if not a.inhibited_by]
    per_asset: dict[str, int] = {}
    for a in pages:
        per_asset[a.asset] = per_asset.get(a.asset, 0) + 1
    return {
        "weeks_judged": round(weeks, 3), "assets": assets, "learn_days": learn_days,
        "alerts": len(fired), "learning_alerts": len(learning), "false_alarms": len(false),
        "false_pages": len(pages), "holiday_alerts": len(on_holiday),
        "per_asset_week": _rate(len(false), asset_weeks),
        "pages_per_asset_month": _rate(4 * len(pages), asset_weeks),
        "worst_asset_pages_per_month": _rate(4 * max(per_asset.values(), default=0), weeks),
        "by_kind_scale": dict(sorted(by_kind_scale.items())),
        "pages_by_asset": dict(sorted(per_asset.items())),
        "false_alarm_list": [_brief(a) for a in false][:50],
        "learning_list": [_brief(a) for a in learning][:20],
    }


# ---------------------------------------------------------------- the whole evaluation


def run(weeks: float = WEEKS, runs: int | dict[str, int] | None = None, seed: int = 7,
        config: GapConfig | None = None, check_ms: int = CHECK_MS, data_dir: Path | None = None,
        kinds: Sequence[str] = KINDS, holidays: Sequence[str] = HOLIDAYS, learn_days: float = LEARN_DAYS,
        progress: Callable[[str], None] | None = None, workers: int | None = None) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    say = progress or (lambda _msg: None)
    base = contract_events("rees46", data_dir)
    _BASE[:] = [e for e in base if DENSE[0] <= e.ts_ms < DENSE[1] and e.stream == "behaviour"]
    series = build_series(base, weeks, seed, shape=Shape(holidays=tuple(holidays)))
    say(f"series: {len(series.events)} events, {_iso(series.start_ms)} .. {_iso(series.end_ms)}")
    skipped: list[str] = []
    injections = plan(RUNS if runs is None else runs, seed, series, kinds=kinds, skipped=skipped)
    if skipped:
        say(f"no room after the warm-up for {len(skipped)} injections: {'; '.join(skipped)}")
    cfg = with_holidays(config, series.shape.holidays)
    sim, outcomes = evaluate(series, injections, cfg, seed, check_ms, workers, say)
    clean = firings(sim)
    results = [judge(o, clean) for o in outcomes]
    alerts, matched, caused = (sum(r[k] for r in results) for k in ("alerts", "matched", "caused"))
    return {
        "weeks": weeks, "seed": seed, "check_every_s": check_ms / 1000,
        "runs_per_kind": RUNS if runs is None else runs,
        "config": dataclasses.asdict(cfg),
        "series": {"from": _iso(series.start_ms), "to": _iso(series.end_ms), "events": len(series.events),
                   "holidays": list(series.shape.holidays), "shape": dataclasses.asdict(series.shape),
                   "flows": [f._asdict() for f in series.flows], "events_per_hour": asset_rates(series)},
        "clean": clean_report(sim, series, learn_days),
        "kinds": summarize(results),
        "overall": {"alerts": alerts, "matched": matched, "caused": caused,
                    "precision": _rate(matched + caused, alerts), "precision_kind_exact": _rate(matched, alerts)},
        "skipped": skipped,
        "runs": results,
        "run_cpu_s": round(sum(o.cpu_s for o in outcomes), 1),      # the injected runs, wherever they ran
        "main_cpu_s": round(time.process_time() - cpu, 1),           # here: series, clean run, runs it took on
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if abs(seconds) >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.width = max(console.width, 132)
    s = report["series"]
    table = Table(title=f"injected gaps over {report['weeks']:g} weeks of shaped REES46 ({s['events']} events, "
                        f"{s['from'][:10]} .. {s['to'][:10]}, holidays {', '.join(s['holidays']) or 'none'}), "
                        f"seed {report['seed']}")
    for col in ("kind", "scale", "runs", "recall", "recall ≥4σ", "precision", "kind-exact", "TTD median",
                "TTD p95", "alerts", "pages / run"):
        table.add_column(col, justify="left" if col in ("kind", "scale") else "right", no_wrap=True)
    for kind, row in report["kinds"].items():
        table.add_row(kind, "any", str(row["runs"]), _pct(row["recall"]),
                      f"{_pct(row['recall_significant'])} of {row['significant_runs']}", _pct(row["precision"]),
                      _pct(row["precision_kind_exact"]), _dur(row["ttd_median_s"]), _dur(row["ttd_p95_s"]),
                      str(row["alerts"]), f"{row['pages_per_run']:.1f}")
        for scale, c in row["scales"].items():
            table.add_row("", scale, "", _pct(c["recall"]), "", _pct(c["precision"]), _pct(c["precision_kind_exact"]),
                          _dur(c["ttd_median_s"]), _dur(c["ttd_p95_s"]), str(c["alerts"]),
                          f"{c['pages'] / row['runs']:.1f}")
    console.print(table)
    c = report["clean"]
    t2 = Table(title=f"clean series: false alarms after the first {c['learn_days']:g} days "
                     f"({c['assets']} assets, {c['weeks_judged']:g} weeks judged; {c['learning_alerts']} alerts "
                     f"while learning, {c['holiday_alerts']} on holidays)")
    for col in ("kind @ scale", "alerts", "per asset-week", "pages", "pages per asset-month"):
        t2.add_column(col, justify="left" if col == "kind @ scale" else "right", no_wrap=True)
    for key, row in c["by_kind_scale"].items():
        t2.add_row(key, str(row["alerts"]), f"{row['per_asset_week']:.3f}", str(row["pages"]),
                   f"{row['pages_per_asset_month']:.3f}")
    t2.add_row("all", str(c["false_alarms"]), _num(c["per_asset_week"]), str(c["false_pages"]),
               _num(c["pages_per_asset_month"]))
    console.print(t2)
    rates = ", ".join(f"{a} {v:g}" for a, v in s["events_per_hour"].items())
    console.print(f"events per hour: {rates}")
    if report.get("skipped"):
        console.print(f"no room after the warm-up for: {'; '.join(report['skipped'])}")
    o = report["overall"]
    console.print(f"overall precision {_pct(o['precision'])} ({o['matched'] + o['caused']}/{o['alerts']} alerts: "
                  f"{o['matched']} of the injection's kind, {o['caused']} it caused); kind-exact "
                  f"{_pct(o['precision_kind_exact'])}; worst asset {_num(c['worst_asset_pages_per_month'])} "
                  f"false pages a month; took {report['elapsed_s']:.1f} s ({report['main_cpu_s']:.0f} s CPU here, "
                  f"{report['run_cpu_s']:.0f} s in the injected runs)")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(weeks: float = WEEKS, runs: int | None = None, seed: int = 7, as_json: bool = False,
         check_s: float = CHECK_MS / 1000) -> int:
    """`stocktake eval-gaps --weeks N`: the table (or --json), progress on stderr."""
    import json
    import sys

    report = run(weeks=weeks, runs=runs, seed=seed, check_ms=round(check_s * 1000),
                 progress=None if as_json else lambda m: print(m, file=sys.stderr))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0

