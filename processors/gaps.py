"""Data-gap detection: per-asset detectors and the alert lifecycle. Pure.

Inputs are closed minutes of event time per asset, in event-time order (counts,
field presence, orphan references, arrivals: the gaps between events), and "now"
on either clock:

- event clock: every gap between an asset's events as its minute closes, and at
  the live edge the low watermark (processors/gapfeed.py), so a replayed history
  is judged as it happened;
- wall clock: now = time.time() against each asset's last *ingest* time, so
  a live source that goes quiet is caught even when nothing arrives at all.

Hour and day buckets, ratios and funnels are judged in processors/scales.py;
new sub-assets are findings here, and an error-like asset (``quiet_is_good_for``)
is judged for rises only. Holidays and exclusion windows are neither judged nor
learned.

Volume is judged against the learned baseline three ways: a single minute far
below it (``volume_z`` sigmas and ``drop_min`` relative; ``fire_after`` such
minutes in a row); a sustained shortfall (a one-sided CUSUM of the per-minute
deficits in sigmas, ``sustain_slack`` / ``sustain_limit``) that finds a moderate
drop lasting several minutes on a noisy asset; and the last two or three minutes
together ``run_z`` sigmas and ``drop_min`` short, with more than the newest
minute behind it, which fires at once: a short cut split over minute boundaries
shows as two partly cut minutes and at most one whole one. The sigma used for
drops is capped at ``spread_cap`` × expected, so a near-total stop is news
however noisy the asset. A rise is a spike only past the baseline and past the
level an outage left (for ``recovery_minutes``): the return to normal after a
long outage (by then learned as the new normal) is a recovery, not a spike.

Alerts: one open alert per (asset, kind, subject). A sub-asset's alert that
fires while its stream has the same one open carries ``inhibited_by`` (the
stream's alert id): the same incident, recorded but not paged. Firing after
``fire_after`` breaching minutes, resolved after ``resolve_after`` good ones
(hysteresis); silence fires on the first look past its threshold (``silence_factor``
× the p99 gap between distinct arrival times, judged once ``cadence_min_gaps`` of them
are known), opened at the moment the quiet time passed it, and resolves once the
asset has kept within it for ``resolve_after`` closed minutes. Every alert says
expected vs observed and its evidence window. Minutes that breach, or that fall
in an open drop or silence, stay out of both histories (rolling and seasonal;
before the seasonal model judges, the seasonal history does learn them: they may
be the season itself), so an outage does not become the baseline; once such an
alert has been open ``adapt_minutes`` they are learned again, so a lasting change
of level becomes the new normal and the alert resolves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset
from stocktake.processors.baseline import DAY_MS, MINUTE_MS, Baseline
from stocktake.processors.drift import DriftEvent
from stocktake.processors.quality import LagHistogram
from stocktake.processors.scales import Scales


@dataclass(frozen=True)
class GapConfig:
    silence_factor: float = 1.75       # silent when quiet for > factor × p99 gap between arrivals
    silence_min_s: float = 0.0         # ...and at least this long
    silence_min_expected: float = 10.0  # ...and long enough for this many events at the hour's learned rate
    wall_silence_min_s: float = 30.0   # wall clock: batching/flush delays are not silence
    wall_max_lag_s: float = 600.0      # wall clock: only for assets whose newest event is this fresh (not a replay)
    cadence_min_gaps: int = 30         # gaps between distinct arrival times learned before judging silence
    window_minutes: int = 30           # rolling baseline length
    min_history_minutes: int = 10      # minutes learned before volume/completeness are judged
    volume_z: float = 4.0              # robust z-score beyond the baseline (one minute)
    drop_min: float = 0.3              # and at least this relative drop (either test)...
    spike_min: float = 1.0             # ...or rise (+100%)
    spread_cap: float = 0.15           # drops: sigma taken as at most this share of the expected count
    sustain_slack: float = 1.0         # sustained drop: CUSUM of (deficit in sigmas - slack)...
    sustain_limit: float = 5.0         # ...beyond this limit
    run_z: float = 4.0                 # or a run of minutes down, as a whole, this many sigmas short
    adapt_minutes: int = 30            # a breach open this long is learned as the new normal
    recovery_minutes: int = 24 * 60    # a rise back to the level before an outage is no spike this long after
    completeness_drop: float = 0.2     # absolute drop of a field's present share
    completeness_min_events: int = 20  # minutes with fewer events say little about shares
    orphan_rise: float = 0.2           # absolute rise of the orphan share of product references
    fire_after: int = 2                # breaching minutes before firing
    resolve_after: int = 2             # good minutes (silence: good checks) before resolving
    seasonal_days: int = 2
    drift_open_minutes: int = 60       # schema drift and new-asset findings resolve themselves after this
    mute: bool = False
    # -- hour and day scales (processors/scales.py) --
    scales: tuple[str, ...] = ("hour", "day")
    hour_min_events: float = 3.0       # a scale judges an asset expecting at least this many events a bucket
    day_min_events: float = 5.0
    coarse_slack: float = 0.5          # CUSUM of (deficit in sigmas - slack) per bucket...
    hour_limit: float = 6.0            # ...beyond this many sigmas (hour buckets)
    day_limit: float = 4.0             # (day buckets)
    coarse_drop_min: float = 0.2       # and the run of buckets at least this much short in all
    coarse_min_abs: float = 5.0        # and at least this many events short (or over): low-volume floors
    coarse_spike_z: float = 5.0        # one bucket this many sigmas over, and (1 + spike_min) x expected
    ratio_hour_limit: float = 6.0      # ratios: the CUSUM limit (hour / day buckets)...
    ratio_day_limit: float = 5.0
    ratio_drop_min: float = 0.2        # ...and a share / funnel ratio this much below what it was...
    ratio_rise_min: float = 0.5        # ...or this much above
    hour_adapt_buckets: int = 7 * 24   # a coarse breach open this long is learned as the new normal
    day_adapt_buckets: int = 28
    # (numerator, denominator) asset pairs watched as ratios, besides each sub-asset's share of its stream
    funnels: tuple[tuple[str, str], ...] = (
        ("behaviour/event_type=cart", "behaviour/event_type=view"),
        ("behaviour/event_type=purchase", "behaviour/event_type=cart"),
        ("transaction/status=paid", "transaction/status=created"),
    )
    # -- new and bad-news assets --
    new_asset_warmup_minutes: int = 60  # a sub-asset first seen this long after its stream is new
    bad_news_pattern: str = r"error|fail|bug|exception|timeout|timed_out|declin|reject|abort|crash|denied|fraud"
    quiet_is_good: bool | None = None  # None: by bad_news_pattern on the sub-asset's value
    # -- windows neither judged nor learned --
    holidays: tuple[str, ...] = ()     # UTC dates, YYYY-MM-DD: whole days
    exclusions: tuple[tuple[str, str], ...] = ()   # [from, to) ISO-8601 times (UTC unless zoned)

    def with_overrides(self, overrides: Mapping[str, Any]) -> GapConfig:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown gap settings: {', '.join(sorted(unknown))}")
        # TOML gives lists: the config is frozen (and hashable), so tuples all the way down
        fixed = {k: _tuples(v) for k, v in overrides.items()}
        out = dataclasses.replace(self, **fixed)
        excluded_windows(out)  # a bad date fails here, at load time
        re.compile(out.bad_news_pattern)
        return out

    def quiet_is_good_for(self, asset: str) -> bool:
        """Silence is good news for this asset (an error-like event type, source or status):
        its going quiet pages nothing, its rise does."""
        if self.quiet_is_good is not None:
            return self.quiet_is_good
        name = Asset.parse(asset)
        return not name.is_stream and _bad_news(self.bad_news_pattern).search(name.value.lower()) is not None

    def excluded(self, start_ms: int, end_ms: int) -> bool:
        """[start, end) overlaps a holiday or an exclusion window: neither judged nor learned."""
        return any(lo < end_ms and start_ms < hi for lo, hi in excluded_windows(self))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=64)
def _bad_news(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _iso_ms(text: str) -> int:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


@functools.lru_cache(maxsize=64)
def _windows(holidays: tuple[str, ...], exclusions: tuple[tuple[str, str], ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for day in holidays:
        start = _iso_ms(dt.date.fromisoformat(day).isoformat() + "T00:00:00")
        out.append((start, start + DAY_MS))
    for pair in exclusions:
        if len(pair) != 2:
            raise ValueError(f"an exclusion window is [from, to], not {list(pair)}")
        lo, hi = _iso_ms(pair[0]), _iso_ms(pair[1])
        if hi <= lo:
            raise ValueError(f"exclusion window {list(pair)} ends before it starts")
        out.append((lo, hi))
    return tuple(sorted(out))


def excluded_windows(cfg: GapConfig) -> tuple[tuple[int, int], ...]:
    """The holidays and exclusion windows as epoch-ms [from, to) pairs."""
    try:
        return _windows(cfg.holidays, cfg.exclusions)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"holidays/exclusions: {exc}") from None


class MinuteObservation(NamedTuple):
    asset: str
    minute_ms: int
    events: int                        # valid events with event time in this minute
    field_events: int = 0
    field_present: Mapping[str, int] = {}
    product_refs: int = 0
    orphan_refs: int = 0


class MinuteExpectation(NamedTuple):
    """What a detector expected of an asset's minute before judging it, and the band it held the
    minute to (the dashboards draw them from the ``baselines`` table)."""

    asset: str
    minute_ms: int
    observed: float                    # events, or a share (0..1) for the share metrics
    expected: float
    lower: float
    upper: float
    model: str
    metric: str = "events"             # events | orphans | completeness:<field>


@dataclass
class _Open:
    alert: Alert
    bad: int = 0
    good: int = 0
    good_since: int | None = None      # first of the current run of good looks


@dataclass
class AssetState:
    config: GapConfig
    volume: Baseline
    fields: dict[str, Baseline] = field(default_factory=dict)
    orphans: Baseline | None = None
    cadence: LagHistogram = field(default_factory=LagHistogram)
    shortfall: float = 0.0             # the sustained-drop CUSUM, in sigmas
    recent: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=3))
    #                                  the last judged minutes: expected, observed, sigma^2
    prior_level: float | None = None   # the level before an outage: coming back to it is no spike
    prior_until: int = 0
    last_arrival: int | None = None    # newest event time among the closed minutes
    last_events: tuple[int, int] = (0, 0)   # the newest closed minute and its events
    _p99: tuple[int, float] | None = None   # (gaps, p99) as last computed

    def arrivals(self) -> LagHistogram:
        """The cadence between distinct arrival times: events sharing a timestamp (a batch, or
        a source with second resolution) are one arrival, or p99 could be 0."""
        return LagHistogram([0, *self.cadence.counts[1:]])

    def p99_gap_ms(self, pending: LagHistogram | None = None) -> float | None:
        counts = self.cadence.counts
        n = sum(counts) - counts[0]
        if n < self.config.cadence_min_gaps and pending is not None:
            arrivals = LagHistogram([0, *pending.counts[1:]])
            return arrivals.quantile(0.99) if arrivals.count >= self.config.cadence_min_gaps else None
        if n < self.config.cadence_min_gaps:
            return None
        if self._p99 is None or self._p99[0] != n:   # checked every minute, learned less often
            self._p99 = (n, self.arrivals().quantile(0.99) or 0.0)
        return self._p99[1]

    def silence_threshold_ms(self, pending: LagHistogram | None = None) -> float | None:
        """None until ``cadence_min_gaps`` gaps between distinct arrival times are known: the
        evidence is the number of inter-arrivals, not the time (30 arrivals 100 ms apart make
        a quiet minute as telling as 30 a minute apart make a quiet hour). ``pending``: gaps seen
        at the live edge, in minutes not closed yet, for an asset whose closed minutes hold too
        few (a cold start is judged before its first minute closes)."""
        # (A small sample's p99 is its largest gap, which a bursty source's next quiet spell may
        # beat: widening the allowance while the sample is small - x2 at 30 gaps - cost 4 of 135
        # silences in `stocktake eval-gaps` (sparse sources have few gaps in an hour) to save
        # one cold-start false alarm a day on the low-volume tiles; silence_factor is the margin.)
        p99 = self.p99_gap_ms(pending)
        if p99 is None:
            return None
        return max(self.config.silence_factor * p99, self.config.silence_min_s * 1000)


class GapMonitor:
    def __init__(self, default: GapConfig | None = None, per_asset: Mapping[str, Mapping[str, Any]] | None = None):
        self.default = default or GapConfig()
        self.per_asset = dict(per_asset or {})
        self.assets: dict[str, AssetState] = {}
        self.open: dict[tuple[str, str, str], _Open] = {}
        self.streaks: dict[tuple[str, str, str], list[int]] = {}   # key -> [bad, good] while closed
        self.scales = Scales(self)
        self.seen_events: set[str] = set()   # assets that have had events

    def state(self, asset: str) -> AssetState:
        st = self.assets.get(asset)
        if st is None:
            cfg = self.default.with_overrides(self.per_asset.get(asset, {}))
            st = self.assets[asset] = AssetState(cfg, self._baseline(cfg))
        return st

    @staticmethod
    def _baseline(cfg: GapConfig, counts: bool = True) -> Baseline:
        return Baseline(window=cfg.window_minutes, seasonal_days=cfg.seasonal_days, counts=counts)

    # -- inputs ---------------------------------------------------------------------

    def gaps(self, asset: str, gaps_ms: Iterable[float], weight: int = 1) -> None:
        """Inter-arrival gaps of an asset (each standing for ``weight`` gaps, when sampled)."""
        cadence = self.state(asset).cadence
        for gap in gaps_ms:
            cadence.add(gap, weight)

    def minute(self, obs: MinuteObservation, expectations: list[MinuteExpectation] | None = None) -> list[Alert]:
        """Judge one closed minute of an asset, then learn from it (unless it breached or
        the asset is silent, for less than ``adapt_minutes``). ``expectations``, where given,
        collects what each judgement expected of the minute (events, field shares, orphans)."""
        st = self.state(obs.asset)
        cfg = st.config
        out: list[Alert] = []
        at = obs.minute_ms + MINUTE_MS
        if obs.events:
            out += self._new_asset(obs, cfg)
        st.last_events = (obs.minute_ms, obs.events)
        field_events = obs.field_events if obs.field_events >= cfg.completeness_min_events else 0
        self.scales.add(obs.asset, obs.minute_ms, obs.events, field_events, obs.field_present, cfg.scales,
                        obs.product_refs, obs.orphan_refs)
        if cfg.excluded(obs.minute_ms, at):
            return out
        quiet_good = cfg.quiet_is_good_for(obs.asset)
        exp = st.volume.expect(obs.minute_ms)
        mu, x = exp.expected, obs.events
        if expectations is not None and exp.model != "none":
            band = cfg.volume_z * exp.spread
            expectations.append(MinuteExpectation(obs.asset, obs.minute_ms, x, mu, max(0.0, mu - band), mu + band,
                                                  exp.model))
        judged = st.volume.seen >= cfg.min_history_minutes and exp.model != "none"
        # Drops: a noisy asset's spread must not hide a near-total stop (the cap), Poisson noise
        # is the floor.
        sigma = max(min(exp.spread, cfg.spread_cap * mu), math.sqrt(mu), 1.0)
        deficit = (mu - x) / sigma
        if judged:
            # capped just past the limit: the evidence of a drop ends one normal minute after it
            st.shortfall = min(cfg.sustain_limit + cfg.sustain_slack,
                               max(0.0, st.shortfall + deficit - cfg.sustain_slack))
            st.recent.append((mu, x, sigma * sigma))
        else:
            st.recent.clear()
        down = judged and deficit > cfg.sustain_slack and x <= (1 - cfg.drop_min) * mu
        single = down and x < mu - cfg.volume_z * sigma
        sustained = down and st.shortfall > cfg.sustain_limit
        # A short cut split over minute boundaries is no run of 4-sigma minutes, but the last two
        # or three minutes together are ``run_z`` sigmas short; with the earlier ones short too
        # (two minutes of evidence), that fires at once.
        window = 0
        recent = list(st.recent) if judged and deficit > cfg.sustain_slack else []
        for n in (2, 3):
            if len(recent) >= n:
                e, o, v = (sum(t[i] for t in recent[-n:]) for i in range(3))
                earlier = (e - mu) - (o - x) > cfg.sustain_slack * math.sqrt(v - sigma * sigma)
                if earlier and o <= (1 - cfg.drop_min) * e and e - o > cfg.run_z * math.sqrt(v):
                    window = n
                    break
        drop = (single or sustained or window > 0) and not quiet_good
        test = f"{window} minutes" if window else "minute" if single else "sustained"
        if st.prior_level is not None and at > st.prior_until:
            st.prior_level = None
        level = max(mu, st.prior_level or 0.0)
        spike = judged and x > mu + cfg.volume_z * exp.spread and x >= (1 + cfg.spike_min) * level
        evidence = {"from": obs.minute_ms - (window - 1) * MINUTE_MS if window else obs.minute_ms, "to": at,
                    "scale": "minute", "model": exp.model,
                    "spread": round(exp.spread, 3), "shortfall": round(st.shortfall, 2), "test": test}
        out += self._judge(obs.asset, "volume_drop", "", drop, at, mu, x, evidence,
                           "critical" if x <= 0.1 * mu else "warning",
                           f"{x} events/min, expected about {mu:.0f} ({exp.model})",
                           fire_after=1 if window else None)
        out += self._judge(obs.asset, "volume_spike", "", spike, at, mu, x, {**evidence, "scale": "minute"},
                           "critical" if quiet_good else "warning",
                           f"{x} events/min, expected about {mu:.0f} ({exp.model})")
        # Inside an open drop or silence the minute is the incident: neither history learns it
        # (until it has lasted ``adapt_minutes``), so afterwards the baseline is what it was.
        # (Before the seasonal model judges, what the rolling one found odd may be the season
        # itself - a daily edge - and is what the seasonal history must learn.)
        held = drop or self._is_silent(obs.asset) or (obs.asset, "volume_drop", "") in self.open
        if not held or exp.model in ("robust_rolling", "none") \
                or self._settled(obs.asset, ("volume_drop", "silence"), at):
            st.volume.record(obs.minute_ms, x)
        if held:
            # Remember the level the outage left (the baseline learns the low level once it has
            # lasted ``adapt_minutes``): the return to it is a recovery, not a spike.
            st.prior_level = max(st.prior_level or 0.0, mu)
            st.prior_until = at + cfg.recovery_minutes * MINUTE_MS
        if spike and not held:
            # A rise is learned clipped to the fence: a short burst barely moves the median,
            # a lasting one lifts it within about half a window (a new normal).
            st.volume.roll(mu + cfg.volume_z * exp.spread)
        elif not held or self._settled(obs.asset, ("volume_drop", "silence"), at):
            st.volume.roll(x)
        if obs.field_events >= cfg.completeness_min_events:
            for name, present in obs.field_present.items():
                out += self._completeness(st, obs, name, present / obs.field_events, at, expectations)
        if obs.product_refs >= cfg.completeness_min_events:
            out += self._orphans(st, obs, obs.orphan_refs / obs.product_refs, at, expectations)
        return out

    def _is_silent(self, asset: str) -> bool:
        return (asset, "silence", "event") in self.open or (asset, "silence", "wall") in self.open

    def _settled(self, asset: str, kinds: Iterable[str], at: int) -> bool:
        """An alert of one of these kinds has been open for ``adapt_minutes`` of event time:
        learn again (wall-clock silences have no event time to compare)."""
        limit = self.state(asset).config.adapt_minutes * MINUTE_MS
        return any(key[0] == asset and key[1] in kinds and key[2] != "wall"
                   and at - o.alert.opened_at >= limit for key, o in self.open.items())

    def _completeness(self, st: AssetState, obs: MinuteObservation, name: str, share: float,
                      at: int, expectations: list[MinuteExpectation] | None) -> list[Alert]:
        cfg = st.config
        base = st.fields.setdefault(name, self._baseline(cfg, counts=False))
        exp = base.expect(obs.minute_ms)
        if expectations is not None and exp.model != "none":
            # only a drop breaches: the band reaches up to a share's ceiling
            expectations.append(MinuteExpectation(obs.asset, obs.minute_ms, share, exp.expected,
                                                  max(0.0, exp.expected - cfg.completeness_drop), 1.0,
                                                  exp.model, f"completeness:{name}"))
        breach = base.seen >= cfg.min_history_minutes and exp.model != "none" \
            and share < exp.expected - cfg.completeness_drop
        out = self._judge(obs.asset, "completeness_drop", name, breach, at, exp.expected, share,
                          {"from": obs.minute_ms, "to": at, "scale": "minute", "model": exp.model}, "warning",
                          f"{name} present on {share:.0%} of events, usually {exp.expected:.0%}")
        if not breach or self._settled(obs.asset, ("completeness_drop",), at):
            base.learn(obs.minute_ms, share)
        return out

    def _orphans(self, st: AssetState, obs: MinuteObservation, share: float, at: int,
                 expectations: list[MinuteExpectation] | None) -> list[Alert]:
        cfg = st.config
        base = st.orphans = st.orphans or self._baseline(cfg, counts=False)
        exp = base.expect(obs.minute_ms)
        if expectations is not None and exp.model != "none":
            # only a rise breaches: the band reaches down to no orphans at all
            expectations.append(MinuteExpectation(obs.asset, obs.minute_ms, share, exp.expected, 0.0,
                                                  min(1.0, exp.expected + cfg.orphan_rise), exp.model, "orphans"))
        breach = base.seen >= cfg.min_history_minutes and exp.model != "none" \
            and share > exp.expected + cfg.orphan_rise
        out = self._judge(obs.asset, "orphan_spike", "", breach, at, exp.expected, share,
                          {"from": obs.minute_ms, "to": at, "scale": "minute", "model": exp.model}, "warning",
                          f"{share:.0%} of product references are unknown to the catalog, "
                          f"usually {exp.expected:.0%}")
        if not breach or self._settled(obs.asset, ("orphan_spike",), at):
            base.learn(obs.minute_ms, share)
        return out

    def _new_asset(self, obs: MinuteObservation, cfg: GapConfig) -> list[Alert]:
        """A sub-asset's first events, once its stream has been observed ``new_asset_warmup_minutes``:
        an info finding (a warning when error-like), with its share of the stream's minute."""
        if obs.asset in self.seen_events:
            return []
        self.seen_events.add(obs.asset)
        name = Asset.parse(obs.asset)
        stream = self.assets.get(name.stream)
        if name.is_stream or stream is None or stream.volume.seen < cfg.new_asset_warmup_minutes:
            return []
        minute, stream_events = stream.last_events
        share = obs.events / stream_events if minute == obs.minute_ms and stream_events else None
        bad = cfg.quiet_is_good_for(obs.asset)
        at = obs.minute_ms + MINUTE_MS
        return self._judge(obs.asset, "new_asset", "", True, at, None, obs.events,
                           {"from": obs.minute_ms, "to": at, "first_minute": obs.minute_ms,
                            "first_events": obs.events, "share": None if share is None else round(share, 4),
                            "error_like": bad},
                           "warning" if bad else "info",
                           f"new {name.key} {name.value!r} in {name.stream}: {obs.events} events in its first "
                           f"minute" + (f" ({share:.1%} of the stream)" if share is not None else "")
                           + (", error-like: its rise pages" if bad else ""), fire_after=1)

    def advance(self, until_ms: int) -> list[Alert]:
        """Event time has closed everything before ``until_ms``: judge the hour and day buckets
        that end by then, and let new-asset findings resolve themselves."""
        out = self.scales.advance(until_ms)
        for key, o in list(self.open.items()):
            if key[1] == "new_asset":
                limit = self.state(key[0]).config.drift_open_minutes * MINUTE_MS
                if until_ms - o.alert.opened_at >= limit:
                    out += self._judge(key[0], "new_asset", "", False, until_ms, None, None, {}, "info",
                                       "no longer new", resolve_after=1)
        return out

    def arrivals(self, asset: str, minute_ms: int, cadence: Iterable[tuple[int, int]],
                 longest: tuple[int, int] | None, last_ms: int | None) -> list[Alert]:
        """The arrivals of one closed minute of an asset, in event-time order: the longest gap
        that ended in it is judged against the cadence learned before it (a silence inside a
        replayed history is found as it happened), then its gaps are learned
        (``cadence``: LagHistogram bucket -> gaps)."""
        st = self.state(asset)
        out: list[Alert] = []
        threshold = st.silence_threshold_ms()
        cfg = st.config
        if longest is not None and threshold is not None and not cfg.quiet_is_good_for(asset) \
                and not cfg.excluded(longest[0], longest[1]):
            allowed = self._allowed(asset, longest[0], threshold)
            if longest[1] - longest[0] > allowed:
                out += self._silence(asset, "event", True, int(longest[0] + allowed), longest[0],
                                     longest[1] - longest[0], allowed, st)
        counts = st.cadence.counts
        for b, n in cadence:
            counts[b] += n
        if last_ms is not None and (st.last_arrival is None or last_ms > st.last_arrival):
            st.last_arrival = last_ms
        return out

    def quiet_at(self, asset: str, end_ms: int) -> list[Alert]:
        """Silence on the event clock at the end of a closed minute: quiet since the asset's newest
        arrival so far. Opens (at the newest arrival + threshold) or, after ``resolve_after`` quiet-free
        minutes, resolves."""
        st = self.state(asset)
        cfg = st.config
        threshold = st.silence_threshold_ms()
        if threshold is None or st.last_arrival is None or cfg.quiet_is_good_for(asset) \
                or cfg.excluded(end_ms - MINUTE_MS, end_ms):
            return []
        quiet = end_ms - st.last_arrival
        allowed = self._allowed(asset, st.last_arrival, threshold)
        breach = quiet > allowed
        return self._silence(asset, "event", breach, int(st.last_arrival + allowed) if breach else end_ms,
                             st.last_arrival, quiet, allowed, st)

    def silence(self, now_ms: int, clock: str, last_seen: Mapping[str, int], *, open_only: bool = False,
                pending: Mapping[str, LagHistogram] | None = None) -> list[Alert]:
        """Each asset's quiet time against its learned cadence. ``last_seen``: asset -> newest
        event time (event clock) or newest ingest time (wall clock). Fires on the first look
        past the threshold (opened at the newest arrival + threshold), resolves once the asset has
        kept within it for ``resolve_after`` minutes (so a thinned stream that keeps crossing it
        holds one alert, not a flurry). ``open_only``: this look may open an alert but not resolve
        one (the event clock's live edge: closed minutes resolve, in event-time order)."""
        out: list[Alert] = []
        for asset in sorted(last_seen):   # a stream before its sub-assets (inhibition)
            last = last_seen[asset]
            st = self.state(asset)
            threshold = st.silence_threshold_ms((pending or {}).get(asset))
            if threshold is None or st.config.quiet_is_good_for(asset) or st.config.excluded(last, now_ms):
                continue
            if clock == "wall":
                threshold = max(threshold, st.config.wall_silence_min_s * 1000)
            threshold = self._allowed(asset, last, threshold)
            quiet = now_ms - last
            breach = quiet > threshold
            if open_only and not breach:
                continue
            at = int(last + threshold) if breach and clock == "event" else now_ms
            out += self._silence(asset, clock, breach, at, last, quiet, threshold, st, now_ms)
        return out

    def _allowed(self, asset: str, last_ms: int, threshold: float) -> float:
        """How long the asset may stay quiet after ``last_ms``: its cadence's threshold, and (once
        a day of its hours is known) long enough to expect ``silence_min_expected`` events at the
        learned rate of the hours it spans - P(none) = e^-10 for a Poisson source; real sources
        come in bursts (sessions), which makes a quiet spell far likelier. A single cadence is a
        mixture of busy and quiet hours: by night its p99 is an ordinary gap, and a low-volume
        asset would page every night."""
        cfg = self.state(asset).config
        by_rate = self.scales.quiet_for(asset, last_ms, cfg.silence_min_expected)
        return threshold if by_rate is None else max(threshold, by_rate)

    def _silence(self, asset: str, clock: str, breach: bool, at: int, last: int, quiet: float, threshold: float,
                 st: AssetState, to: int | None = None) -> list[Alert]:
        p99 = st.p99_gap_ms() or 0.0
        cadence = st.config.silence_factor * p99
        by = f"its cadence allows {threshold / 1000:.0f}s ({st.config.silence_factor:g}x p99 gap {p99 / 1000:.1f}s)" \
            if threshold <= cadence * 1.001 or not p99 else \
            f"{st.config.silence_min_expected:g} events were due within {threshold / 1000:.0f}s at this hour's rate"
        return self._judge(asset, "silence", clock, breach, at, threshold / 1000, quiet / 1000,
                           {"from": last, "to": to if to is not None else int(last + quiet), "p99_gap_ms": round(p99),
                            "allowed_s": round(threshold / 1000, 1)},
                           "critical" if Asset.parse(asset).is_stream else "warning",
                           f"no events for {quiet / 1000:.0f}s ({clock} clock); {by}",
                           fire_after=1, resolve_after=1, hold_ms=st.config.resolve_after * MINUTE_MS)

    def drift(self, events: Iterable[DriftEvent], now_ms: int) -> list[Alert]:
        """Schema drift findings become info alerts that resolve themselves later."""
        out: list[Alert] = []
        for d in events:
            open_for = self.state(d.stream).config.drift_open_minutes * MINUTE_MS
            breach = now_ms - d.at_ms < open_for
            out += self._judge(d.stream, "schema_drift", f"{d.field}:{d.kind}", breach,
                               d.at_ms if breach else now_ms, None, None,
                               {"from": d.at_ms, "to": d.at_ms, "drift": d.kind}, "info",
                               d.details, fire_after=1, resolve_after=1)
        return out

    # -- lifecycle ------------------------------------------------------------------

    def judge(self, asset: str, kind: str, subject: str, breach: bool, at_ms: int,
              expected: float | None, observed: float | None, evidence: dict[str, Any],
              severity: str, reason: str, *, fire_after: int | None = None,
              resolve_after: int | None = None, hold_ms: int = 0) -> list[Alert]:
        """One look of one detector at one alert key (processors/scales.py judges through it)."""
        return self._judge(asset, kind, subject, breach, at_ms, expected, observed, evidence, severity, reason,
                           fire_after=fire_after, resolve_after=resolve_after, hold_ms=hold_ms)

    def _judge(self, asset: str, kind: str, subject: str, breach: bool, at_ms: int,
               expected: float | None, observed: float | None, evidence: dict[str, Any],
               severity: str, reason: str, *, fire_after: int | None = None,
               resolve_after: int | None = None, hold_ms: int = 0) -> list[Alert]:
        cfg = self.state(asset).config
        fire_after = cfg.fire_after if fire_after is None else fire_after
        resolve_after = cfg.resolve_after if resolve_after is None else resolve_after
        key = (asset, kind, subject)
        current = self.open.get(key)
        if current is None:
            streak = self.streaks.setdefault(key, [0, 0])
            streak[0] = streak[0] + 1 if breach else 0
            if not breach or streak[0] < fire_after or cfg.mute:
                return []
            start = evidence.get("from", at_ms) - (fire_after - 1) * MINUTE_MS if kind != "silence" \
                else evidence.get("from", at_ms)
            # A sub-asset (stream/key=value) breaching like its stream is part of the stream's
            # incident: recorded and published, but no page of its own (see services/alerting.py).
            name = Asset.parse(asset)
            parent = None if name.is_stream else self.open.get((name.stream, kind, subject))
            if parent is not None:
                evidence = {**evidence, "inhibited_by": parent.alert.alert_id}
            alert = Alert(
                alert_id=hashlib.sha1(f"{asset}|{kind}|{subject}|{at_ms}".encode()).hexdigest()[:16],
                asset=asset, kind=kind, subject=subject, severity=severity, state="firing",
                clock=subject if kind == "silence" else "event",
                opened_at=at_ms, resolved_at=None, reason=reason,
                expected=_round(expected), observed=_round(observed),
                evidence_from=start, evidence_to=evidence.get("to", at_ms), details=evidence,
            )
            self.open[key] = _Open(alert)
            self.streaks.pop(key, None)
            return [alert]
        if breach:
            current.good, current.good_since = 0, None
            current.alert = dataclasses.replace(current.alert, evidence_to=evidence.get("to", at_ms))
            return []
        current.good += 1
        if current.good_since is None:
            current.good_since = at_ms
        if current.good < resolve_after or at_ms - current.good_since < hold_ms:
            return []
        del self.open[key]
        return [current.alert.resolved(at_ms, f"resolved: {reason}", _round(observed))]


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
