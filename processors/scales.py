"""Gap detectors at the hour and day scales, and ratios between assets. Pure.

The minute detectors (processors/gaps.py) judge each closed minute on its own;
an asset with a few events an hour never gets a usable minute baseline, and a
drop of 40% that lasts days is lost in minute noise. So every closed minute
also adds into the asset's current hour and day bucket, and once event time
passes a bucket's end (``GapMonitor.advance``) the bucket is judged:

- volume: against the bucket's seasonal expectation (hour of day, then hour of
  week once two weeks are known; day of week for day buckets), with a sigma of
  the seasonal spread floored by Poisson noise. A one-sided CUSUM of the
  deficits in sigmas (``coarse_slack`` per bucket, past ``hour_limit`` /
  ``day_limit``) finds a moderate drop that lasts, provided the run of buckets
  behind it is in all at least ``coarse_drop_min`` and ``coarse_min_abs``
  events short; one bucket ``coarse_spike_z`` sigmas over and twice the
  expectation is a spike. Which scales judge an asset follows from its rate:
  a scale judges it once that scale's history gives a seasonal expectation
  (three values of the same hour of day, or two of the same hour or day of
  the week: from the fourth day for hours, the third week for days) of at
  least ``hour_min_events`` / ``day_min_events`` a bucket (a bucket expecting
  3 events that holds none is a 5% event on its own; fewer say nothing).
  Once open, a drop holds while its CUSUM stays above half the limit: a
  multi-day incident with a few normal-looking night hours is one alert;
- ratios: the share of each sub-asset in its stream, and the configured
  funnels (carts per view, purchases per cart, paid per created), each bucket's
  numerator over its denominator against the learned ratio (pooled over the
  same hour of the last 14 days / over the last 28 days: sums over sums keep
  the estimate's own noise small), sigma
  the binomial noise at this bucket's denominator; CUSUMs down and up past
  ``ratio_hour_limit`` / ``ratio_day_limit`` (``ratio_drop_min`` /
  ``ratio_rise_min``), judged once three of the same hour of the day / seven
  days are known, on buckets with at least ``hour_min_events`` /
  ``day_min_events`` in the denominator;
- completeness: each field's present share of a stream's events, down only;
  orphans: the share of an asset's product references the catalog never
  announced (subject ``product_refs@scale``), up only.

Learning leaves out the buckets inside an open alert of the same asset (any
scale's volume drop, its silence, the track's own breach) and inside holidays
and exclusion windows, so an incident never trains the baseline: after it the
expectation is what it was before. A breach open ``hour_adapt_buckets`` /
``day_adapt_buckets`` is learned again (a change that lasts is the new normal).
An asset whose silence is good news (``GapConfig.quiet_is_good_for``) is judged
for rises only. A coarse alert raised while a finer scale's alert of the same
kind (or a silence) is open on the asset is part of that incident: recorded
with ``inhibited_by``, not paged.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset
from stocktake.processors.baseline import DAY_MS, HOUR_MS, Baseline

if TYPE_CHECKING:
    from stocktake.processors.gaps import GapConfig, GapMonitor

SCALE_MS = {"hour": HOUR_MS, "day": DAY_MS}
DROPS = ("volume_drop", "silence")
REFS = "product_refs"   # the denominator of the orphan ratio: an asset's product references
# Until two weeks show the days of the week, an hour's seasonal expectation is by hour of day
# alone: a weekend may be 30-40% quieter. Drops must then be deeper, and silence allows more.
DAILY_MODEL_DROP_MIN = 0.35
DAILY_MODEL_RATE = 0.65


def scaled(subject: str, scale: str) -> str:
    """The alert subject at a scale: ``field@hour``; a volume alert's is the scale itself."""
    return f"{subject}@{scale}" if subject else scale


@dataclass
class Bucket:
    start: int
    whole: bool = True                 # the asset was observed from the bucket's start
    events: int = 0
    field_events: int = 0
    present: dict[str, int] = field(default_factory=dict)
    refs: int = 0                      # product references, and the orphans among them
    orphans: int = 0


@dataclass
class Cusum:
    """A one-sided CUSUM of standardised deviations, with the totals of its current run."""

    s: float = 0.0
    expected: float = 0.0
    observed: float = 0.0
    buckets: int = 0

    def step(self, z: float, slack: float, cap: float, expected: float, observed: float) -> None:
        if self.s == 0.0:
            self.expected = self.observed = 0.0
            self.buckets = 0
        self.s = min(cap, max(0.0, self.s + z - slack))
        if self.s > 0:
            self.expected += expected
            self.observed += observed
            self.buckets += 1


class PooledRatio:
    """A ratio's history: numerator and denominator per bucket over the last ``days`` days (a
    bounded ring). A bucket's expected ratio is the pooled ratio (sums over sums) of the same bucket
    of the day over those days once three of them are known (``daily``), else of the last
    ``window`` buckets: pooling keeps the estimate's own noise at that of all the events behind it,
    where a median of per-bucket ratios would carry the noise of one bucket."""

    def __init__(self, unit_ms: int, days: int, window: int, daily: bool):
        self.unit_ms, self.window, self.daily = unit_ms, window, daily
        self.day_units = max(1, DAY_MS // unit_ms)
        self.days = days
        self._len = max(days * self.day_units, window) + 1
        self._num = array("d", bytes(8 * self._len))
        self._den = array("d", bytes(8 * self._len))
        self._stamp = array("q", [-1]) * self._len
        self.seen = 0

    def learn(self, bucket_ms: int, num: float, den: float) -> None:
        b = bucket_ms // self.unit_ms
        i = b % self._len
        self._num[i], self._den[i], self._stamp[i] = num, den, b
        self.seen += 1

    def _pool(self, buckets: Iterable[int]) -> tuple[float, float, int]:
        num = den = 0.0
        n = 0
        for t in buckets:
            i = t % self._len
            if self._stamp[i] == t:
                num += self._num[i]
                den += self._den[i]
                n += 1
        return num, den, n

    def expect(self, bucket_ms: int) -> tuple[float, str] | None:
        b = bucket_ms // self.unit_ms
        if self.daily:
            num, den, n = self._pool(b - k * self.day_units for k in range(1, self.days + 1))
            if n >= 3 and den > 0:
                return num / den, "pooled_daily"
        num, den, n = self._pool(range(b - self.window, b))
        return (num / den, "pooled_rolling") if den > 0 else None


@dataclass
class RatioTrack:
    base: PooledRatio
    down: Cusum = field(default_factory=Cusum)
    up: Cusum = field(default_factory=Cusum)


@dataclass
class Track:
    """One metric of one asset at one scale: its baseline and CUSUMs."""

    base: Baseline
    down: Cusum = field(default_factory=Cusum)
    up: Cusum = field(default_factory=Cusum)


@dataclass
class ScaleState:
    bucket: Bucket
    volume: Track
    fields: dict[str, Track] = field(default_factory=dict)
    ratios: dict[str, RatioTrack] = field(default_factory=dict)   # denominator asset -> track


class Scales:
    """The hour and day buckets of every asset a GapMonitor observes."""

    def __init__(self, monitor: GapMonitor):
        self.monitor = monitor
        self.states: dict[tuple[str, str], ScaleState] = {}   # (asset, scale) -> state
        self.open_start: dict[str, int] = {}                   # scale -> start of the open bucket
        self._rates: dict[tuple[str, int], tuple[int, float]] = {}   # (asset, hour) -> (seen, events/ms)

    def _state(self, asset: str, scale: str, start: int, whole: bool) -> ScaleState:
        st = self.states.get((asset, scale))
        if st is None:
            st = self.states[asset, scale] = ScaleState(Bucket(start, whole), Track(self._baseline(scale, True)))
        return st

    @staticmethod
    def _baseline(scale: str, counts: bool) -> Baseline:
        if scale == "hour":
            return Baseline(unit_ms=HOUR_MS, window=48, seasonal_days=2, weekly_weeks=2, max_days=14,
                            seasonal_slack=0, counts=counts)
        return Baseline(unit_ms=DAY_MS, window=14, seasonal_days=2, weekly_weeks=2, max_days=28,
                        seasonal_slack=0, counts=counts, daily=False)

    def add(self, asset: str, minute_ms: int, events: int, field_events: int, present: dict[str, int] | Any,
            scales: tuple[str, ...], refs: int = 0, orphans: int = 0) -> None:
        """One closed minute of an asset into its open buckets."""
        for scale in scales:
            size = SCALE_MS[scale]
            start = minute_ms - minute_ms % size
            self.open_start.setdefault(scale, start)
            st = self._state(asset, scale, start, whole=minute_ms == start)
            b = st.bucket
            b.events += events
            b.refs += refs
            b.orphans += orphans
            if field_events:
                b.field_events += field_events
                for name, n in present.items():
                    b.present[name] = b.present.get(name, 0) + n

    def quiet_for(self, asset: str, last_ms: int, events: float, limit_ms: int = 7 * DAY_MS) -> float | None:
        """How long after ``last_ms`` the asset's hour baseline expects ``events`` events, hour by
        hour at each hour's seasonal rate (by hour of day only: ``DAILY_MODEL_RATE`` of it; before
        any season, the next-to-quietest of the last 24 hours), at most ``limit_ms``; None before
        a day of hours is known."""
        st = self.states.get((asset, "hour"))
        if st is None:
            return None
        base = st.volume.base
        due, t = 0.0, last_ms
        while t - last_ms < limit_ms:
            hour = t - t % HOUR_MS
            key = (asset, hour)
            cached = self._rates.get(key)
            if cached is None or cached[0] != base.seen:
                exp = base.expect(hour)
                if exp.model == "seasonal_weekly":
                    per_hour = exp.expected
                elif exp.model == "seasonal_daily":   # the day of the week is not known yet: a
                    per_hour = exp.expected * DAILY_MODEL_RATE   # weekend may be that much quieter
                elif len(base.recent) >= 24:   # no season yet: the next-to-quietest hour of the last day
                    per_hour = sorted(list(base.recent)[-24:])[1]
                else:
                    return None
                if len(self._rates) > 10_000:
                    self._rates.clear()
                cached = self._rates[key] = (base.seen, per_hour / HOUR_MS)
            rate = cached[1]
            end = hour + HOUR_MS
            if rate > 0 and due + (end - t) * rate >= events:
                return t + (events - due) / rate - last_ms
            due += (end - t) * rate
            t = end
        return float(limit_ms)

    def advance(self, until_ms: int) -> list[Alert]:
        """Judge every bucket that ends at or before ``until_ms``, oldest first."""
        out: list[Alert] = []
        for scale, size in SCALE_MS.items():
            start = self.open_start.get(scale)
            while start is not None and start + size <= until_ms:
                out += self._close(scale, start, size)
                start += size
                self.open_start[scale] = start
        return out

    def _close(self, scale: str, start: int, size: int) -> list[Alert]:
        out: list[Alert] = []
        at = start + size
        closing = sorted((asset, st) for (asset, sc), st in self.states.items() if sc == scale)
        buckets = {asset: st.bucket for asset, st in closing}
        for asset, st in closing:
            cfg = self.monitor.state(asset).config
            b = st.bucket
            if b.start == start and b.whole and not cfg.excluded(start, at):
                out += self._volume(asset, scale, st, b, at, cfg)
                if b.field_events:
                    out += self._fields(asset, scale, st, b, at, cfg)
                for den in self._denominators(asset, buckets, cfg):
                    d = buckets[den]
                    if d.start == start and d.whole and d.events:
                        out += self._ratio(asset, den, scale, st, b.events, d.events, at, cfg)
                if b.refs:   # orphans per product reference: only a rise is news
                    out += self._ratio(asset, REFS, scale, st, b.orphans, b.refs, at, cfg)
            st.bucket = Bucket(at)
        return out

    @staticmethod
    def _denominators(asset: str, buckets: dict[str, Bucket], cfg: GapConfig) -> list[str]:
        name = Asset.parse(asset)
        out = [] if name.is_stream else [name.stream]
        out += [den for num, den in cfg.funnels if num == asset and den in buckets and den not in out]
        return out

    # -- the judgements ----------------------------------------------------------------

    def _limits(self, scale: str, cfg: GapConfig) -> tuple[float, float, int]:
        if scale == "hour":
            return cfg.hour_min_events, cfg.hour_limit, cfg.hour_adapt_buckets
        return cfg.day_min_events, cfg.day_limit, cfg.day_adapt_buckets

    def _held(self, asset: str, kinds: tuple[str, ...], at: int, adapt_ms: int) -> bool:
        """An alert of these kinds is open on the asset (or, for a sub-asset, on its stream) and has
        not yet been open ``adapt_ms``: what is observed now is the incident, not the normal."""
        stream = Asset.parse(asset).stream
        return any(key[0] in (asset, stream) and key[1] in kinds and at - o.alert.opened_at < adapt_ms
                   for key, o in self.monitor.open.items())

    def _finer(self, asset: str, kinds: tuple[str, ...], scale: str) -> Alert | None:
        """An open alert of these kinds at a finer scale than ``scale`` on the asset."""
        finer = ("", "hour") if scale == "day" else ("",)
        for key, o in self.monitor.open.items():
            if key[0] == asset and key[1] in kinds and (key[1] == "silence" or key[2] in finer):
                return o.alert
        return None

    def _volume(self, asset: str, scale: str, st: ScaleState, b: Bucket, at: int, cfg: GapConfig) -> list[Alert]:
        min_events, limit, adapt = self._limits(scale, cfg)
        track = st.volume
        exp = track.base.expect(b.start)
        x = b.events
        seasonal = exp.model in ("seasonal_daily", "seasonal_weekly") if scale == "hour" \
            else exp.model == "seasonal_weekly"
        judged = seasonal and exp.expected >= min_events
        out: list[Alert] = []
        drop = spike = False
        mu = exp.expected
        if judged:
            sigma = max(exp.spread, math.sqrt(mu), 1.0)
            track.down.step((mu - x) / sigma, cfg.coarse_slack, limit + 2 * cfg.coarse_slack, mu, x)
            d = track.down
            if (asset, "volume_drop", scale) in self.monitor.open:
                drop = d.s > limit / 2
            else:
                deep = cfg.coarse_drop_min if exp.model == "seasonal_weekly" \
                    else max(cfg.coarse_drop_min, DAILY_MODEL_DROP_MIN)
                drop = d.s > limit and d.observed <= (1 - deep) * d.expected \
                    and d.expected - d.observed >= cfg.coarse_min_abs
            # A rise: one bucket far over, or (like a drop) a run of buckets twice the expectation;
            # once open it holds while that run's CUSUM stays above half the limit, so an
            # incident that lifts an asset for weeks is one alert, and none of it is learned.
            track.up.step((x - mu) / sigma, cfg.coarse_slack, limit + 2 * cfg.coarse_slack, mu, x)
            u = track.up
            if (asset, "volume_spike", scale) in self.monitor.open:
                spike = u.s > limit / 2 or x > mu + cfg.coarse_spike_z * sigma
            else:
                spike = (x > mu + cfg.coarse_spike_z * sigma and x >= (1 + cfg.spike_min) * mu
                         and x - mu >= cfg.coarse_min_abs) \
                    or (u.s > limit and u.observed >= (1 + cfg.spike_min) * u.expected
                        and u.observed - u.expected >= cfg.coarse_min_abs)
        else:
            track.down, track.up = Cusum(), Cusum()
        quiet_good = cfg.quiet_is_good_for(asset)
        if quiet_good:
            drop = False
        d = track.down
        evidence = {"scale": scale, "model": exp.model, "spread": round(exp.spread, 3),
                    "shortfall": round(d.s, 2), "run_expected": round(d.expected, 1),
                    "run_observed": round(d.observed, 1), "to": at,
                    "from": at - max(1, d.buckets) * SCALE_MS[scale] if drop else b.start}
        per = f"events/{scale}"
        dropped = self._judge(asset, "volume_drop", scale, drop, at, mu, x, evidence,
                              "critical" if x <= 0.1 * mu else "warning",
                              f"{x} {per}, expected about {mu:.0f} ({exp.model}); "
                              f"{d.observed:.0f} of {d.expected:.0f} expected over the run", DROPS)
        self._reset_on_resolve(dropped, track.down)
        out += dropped
        rose = self._judge(asset, "volume_spike", scale, spike, at, mu, x, evidence,
                           "critical" if quiet_good else "warning",
                           f"{x} {per}, expected about {mu:.0f} ({exp.model})"
                           + (" - an error-like asset rising" if quiet_good else ""), ("volume_spike",))
        self._reset_on_resolve(rose, track.up)
        out += rose
        held = drop or spike or self._held(asset, (*DROPS, "volume_spike"), at, adapt * SCALE_MS[scale])
        if not held:
            track.base.learn(b.start, x)
        return out

    def _fields(self, asset: str, scale: str, st: ScaleState, b: Bucket, at: int, cfg: GapConfig) -> list[Alert]:
        out: list[Alert] = []
        adapt = self._limits(scale, cfg)[2]
        for name, present in sorted(b.present.items()):
            track = st.fields.get(name)
            if track is None:
                track = st.fields[name] = Track(self._baseline(scale, False))
            n = b.field_events
            share = present / n
            exp = track.base.expect(b.start)
            judged = exp.model != "none" and track.base.seen >= (24 if scale == "hour" else 7) \
                and n >= cfg.completeness_min_events
            breach = judged and share < exp.expected - cfg.completeness_drop
            subject = scaled(name, scale)
            out += self._judge(asset, "completeness_drop", subject, breach, at, exp.expected, share,
                               {"scale": scale, "model": exp.model, "from": b.start, "to": at}, "warning",
                               f"{name} present on {share:.0%} of events this {scale}, usually {exp.expected:.0%}",
                               ("completeness_drop",))
            if not breach and not self._held(asset, ("completeness_drop",), at, adapt * SCALE_MS[scale]):
                track.base.learn(b.start, share)
        return out

    def _ratio(self, asset: str, den: str, scale: str, st: ScaleState, num_n: int, den_n: int, at: int,
               cfg: GapConfig) -> list[Alert]:
        min_events, _, adapt = self._limits(scale, cfg)
        limit = cfg.ratio_hour_limit if scale == "hour" else cfg.ratio_day_limit
        if den_n < min_events:  # a share of a handful of events says nothing, either way
            return []
        track = st.ratios.get(den)
        if track is None:
            track = st.ratios[den] = RatioTrack(
                PooledRatio(HOUR_MS, 14, 7 * 24, True) if scale == "hour" else PooledRatio(DAY_MS, 28, 28, False))
        p = num_n / den_n
        start = at - SCALE_MS[scale]
        expected = track.base.expect(start)
        p0, model = expected if expected is not None else (0.0, "none")
        # hours by the same hour of the day only (ratios too follow the day: the evening's share
        # of purchases is not the night's)
        judged = expected is not None and (model == "pooled_daily" if scale == "hour" else track.base.seen >= 7) \
            and p0 * den_n >= 1.0
        drop = rise = False
        if judged:
            q = max(p0, 1.0 / den_n)
            # The noise at this bucket's denominator: binomial for a share (its events are some of
            # the stream's), that of a ratio of two Poisson counts for a funnel (purchases are not
            # a subset of carts): var = q (1 + q) / den.
            share = den in (Asset.parse(asset).stream, REFS)
            sigma = math.sqrt(q * max(1 - q, 1.0 / den_n) / den_n) if share else math.sqrt(q * (1 + q) / den_n)
            cap = limit + 2 * cfg.coarse_slack
            track.down.step((p0 - p) / sigma, cfg.coarse_slack, cap, p0 * den_n, num_n)
            track.up.step((p - p0) / sigma, cfg.coarse_slack, cap, p0 * den_n, num_n)
            d, u = track.down, track.up
            subject = f"{den}@{scale}"
            drop = d.s > limit / 2 if (asset, "ratio_drop", subject) in self.monitor.open else \
                d.s > limit and d.observed <= (1 - cfg.ratio_drop_min) * d.expected \
                and d.expected - d.observed >= cfg.coarse_min_abs
            rise = u.s > limit / 2 if (asset, "ratio_rise", subject) in self.monitor.open else \
                u.s > limit and u.observed >= (1 + cfg.ratio_rise_min) * u.expected \
                and u.observed - u.expected >= cfg.coarse_min_abs
        else:
            track.down, track.up = Cusum(), Cusum()
        quiet_good = cfg.quiet_is_good_for(asset)
        if quiet_good or den == REFS:
            drop = False
        what = "share of" if den == Asset.parse(asset).stream else "per"
        if den == REFS:
            asset_label, den_label = "orphans", f"product reference of {asset}"
        else:
            asset_label, den_label = asset, den
        subject = f"{den}@{scale}"
        evidence: dict[str, Any] = {"scale": scale, "model": model, "ratio": f"{asset_label} {what} {den_label}",
                                    "numerator": num_n, "denominator": den_n, "from": at - SCALE_MS[scale], "to": at}
        reason = f"{asset_label} {what} {den_label}: {p:.3g} this {scale}, usually {p0:.3g} ({model})"
        out = self._judge(asset, "ratio_drop", subject, drop, at, p0, p,
                          {**evidence, "run_expected": round(track.down.expected, 1),
                           "run_observed": round(track.down.observed, 1)}, "warning", reason,
                          ("volume_drop", "silence", "ratio_drop"))
        self._reset_on_resolve(out, track.down)
        rose = self._judge(asset, "ratio_rise", subject, rise, at, p0, p,
                           {**evidence, "run_expected": round(track.up.expected, 1),
                            "run_observed": round(track.up.observed, 1)},
                           "critical" if quiet_good else "warning", reason, ("volume_spike", "ratio_rise"))
        self._reset_on_resolve(rose, track.up)
        out += rose
        held = drop or rise or self._held(asset, (*DROPS, "ratio_drop", "ratio_rise"), at, adapt * SCALE_MS[scale])
        if not held:
            track.base.learn(start, num_n, den_n)
        return out

    def _judge(self, asset: str, kind: str, subject: str, breach: bool, at: int, expected: float | None,
               observed: float | None, evidence: dict[str, Any], severity: str, reason: str,
               inhibitors: tuple[str, ...]) -> list[Alert]:
        scale = evidence["scale"]
        if breach and (asset, kind, subject) not in self.monitor.open:
            parent = self._finer(asset, inhibitors, scale) if kind.startswith("volume") \
                else self._any_open(asset, inhibitors)
            if parent is not None:
                evidence = {**evidence, "inhibited_by": parent.alert_id}
        return self.monitor.judge(asset, kind, subject, breach, at, expected, observed, evidence, severity, reason,
                                  fire_after=1, resolve_after=1 if scale == "day" else 2)

    @staticmethod
    def _reset_on_resolve(alerts: list[Alert], cusum: Cusum) -> None:
        """A resolved incident's run must not count towards the next one."""
        if any(a.state == "resolved" for a in alerts):
            cusum.s, cusum.expected, cusum.observed, cusum.buckets = 0.0, 0.0, 0.0, 0

    def _any_open(self, asset: str, kinds: tuple[str, ...]) -> Alert | None:
        for key, o in self.monitor.open.items():
            if key[0] == asset and key[1] in kinds:
                return o.alert
        return None
