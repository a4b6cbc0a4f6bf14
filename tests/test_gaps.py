"""Gap detectors: each kind injected into synthetic series fires and resolves, with hysteresis;
one open alert per (asset, kind, subject); mute and per-asset overrides; the seasonal baseline;
and a fast run of the evaluation harness (stocktake.evalgaps) on a small slice."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from stocktake.processors.alerts import Alert
from stocktake.processors.baseline import DAY_MINUTES, MINUTE_MS, Baseline
from stocktake.processors.drift import DriftEvent
from stocktake.processors.gapfeed import GapFeed, MinuteCounts
from stocktake.processors.gaps import GapConfig, GapMonitor, MinuteExpectation, MinuteObservation
from stocktake.tools import evalgaps as E

T0 = 1_570_060_800_000  # 2019-10-03T00:00:00Z, a minute (and day) boundary


def minute_ms(m: int) -> int:
    return T0 + m * MINUTE_MS


def steady(n: int, level: int = 100, wobble: int = 5) -> list[int]:
    """A deterministic series around `level` (±wobble)."""
    return [level + ((i * 7) % (2 * wobble + 1)) - wobble for i in range(n)]


def feed(mon: GapMonitor, asset: str, values: list[int], start: int = 0, **obs: Any) -> list[Alert]:
    out: list[Alert] = []
    for i, v in enumerate(values):
        out += mon.minute(MinuteObservation(asset, minute_ms(start + i), v, **obs))
    return out


def per_minute(mon: GapMonitor, asset: str, values: list[int], start: int = 0) -> list[list[Alert]]:
    return [mon.minute(MinuteObservation(asset, minute_ms(start + i), v)) for i, v in enumerate(values)]


def firing(ts: list[Alert], kind: str | None = None) -> list[Alert]:
    return [t for t in ts if t.state == "firing" and (kind is None or t.kind == kind)]


def resolved(ts: list[Alert], kind: str | None = None) -> list[Alert]:
    return [t for t in ts if t.state == "resolved" and (kind is None or t.kind == kind)]


# ---------------------------------------------------------------- volume


def test_volume_drop_fires_after_two_bad_minutes_and_resolves_after_two_good() -> None:
    mon = GapMonitor()
    assert feed(mon, "behaviour", steady(40)) == []
    # one bad minute does not fire (fire_after=2; its CUSUM evidence fades over good minutes)
    assert feed(mon, "behaviour", [10], start=40) == []
    assert feed(mon, "behaviour", steady(6), start=41) == []
    steps = per_minute(mon, "behaviour", [10, 5, 0, 8], start=47)
    assert steps[0] == []
    (alert,) = steps[1]
    assert alert.kind == "volume_drop" and alert.state == "firing" and alert.subject == ""
    assert alert.opened_at == minute_ms(49) and alert.evidence_from == minute_ms(47)
    assert alert.expected == pytest.approx(100, abs=5) and alert.observed == 5
    assert steps[2] == [] and steps[3] == []            # still breaching: one open alert, no repeat
    assert ("behaviour", "volume_drop", "") in mon.open
    # one good minute does not resolve (resolve_after=2), the second does
    assert feed(mon, "behaviour", steady(1), start=51) == []
    (done,) = feed(mon, "behaviour", steady(1), start=52)
    assert done.state == "resolved" and done.alert_id == alert.alert_id
    assert done.resolved_at == minute_ms(53) and done.version == 2
    assert mon.open == {}


def test_an_outage_does_not_become_the_baseline_but_a_lasting_change_does() -> None:
    mon = GapMonitor()
    feed(mon, "a", steady(40))
    out = feed(mon, "a", [0] * 20, start=40)
    assert len(firing(out, "volume_drop")) == 1
    assert mon.state("a").volume.expect(minute_ms(60)).expected == pytest.approx(100, abs=5)
    # ...until it has been open adapt_minutes: then the new level is learned and the alert resolves
    out = feed(mon, "a", [20] * 60, start=60)
    assert len(resolved(out, "volume_drop")) == 1 and not firing(out)


def test_volume_spike_fires_and_resolves() -> None:
    mon = GapMonitor()
    feed(mon, "product", steady(40))
    assert feed(mon, "product", [400], start=40) == []
    out = feed(mon, "product", [400, 420, 380], start=41)
    (alert,) = firing(out)
    assert alert.kind == "volume_spike" and alert.observed == 400 and alert.opened_at == minute_ms(42)
    out = feed(mon, "product", steady(1), start=44)
    assert out == []
    (done,) = feed(mon, "product", steady(1), start=45)
    assert done.state == "resolved" and done.kind == "volume_spike"


def test_moderate_drop_on_a_noisy_asset_fires_on_several_minutes_of_evidence() -> None:
    noisy = [75, 125, 100, 90, 110, 80, 120, 95, 105, 100] * 5      # ±25%: one minute at 55 says little
    mon = GapMonitor()
    assert feed(mon, "a", noisy) == []
    steps = per_minute(mon, "a", [55] * 10, start=len(noisy))
    fired = [i for i, s in enumerate(steps) if firing(s)]
    assert fired and 1 <= fired[0] <= 7                                # not on the first minute
    (alert,) = steps[fired[0]]
    assert alert.kind == "volume_drop" and alert.details["test"] in ("2 minutes", "3 minutes", "sustained")
    assert alert.evidence_from == minute_ms(len(noisy))              # from the first minute down
    out = feed(mon, "a", noisy[:10], start=len(noisy) + 10)
    assert len(resolved(out, "volume_drop")) == 1
    # the same noisy series with no cut never alerts
    assert feed(GapMonitor(), "b", noisy * 4) == []


def test_a_short_partial_cut_across_minute_boundaries_fires_on_the_minutes_together() -> None:
    """A 2-minute 50% cut that starts mid-minute: two partly cut minutes and one full one,
    none of them alone a 4-sigma minute; the run as a whole is."""
    mon = GapMonitor()
    feed(mon, "a", steady(40, level=60, wobble=4))
    steps = per_minute(mon, "a", [45, 30, 45], start=40)
    assert steps[0] == []
    (alert,) = firing(steps[1], "volume_drop")
    assert alert.details["test"] == "2 minutes" and alert.evidence_from == minute_ms(40)
    # the same minutes one at a time, with normal minutes between them, never fire
    mon = GapMonitor()
    feed(mon, "a", steady(40, level=60, wobble=4))
    assert feed(mon, "a", [45, *steady(6, 60, 4), 30, *steady(6, 60, 4), 45], start=40) == []


def test_coming_back_to_the_level_before_an_outage_is_no_spike() -> None:
    mon = GapMonitor()
    feed(mon, "a", steady(40))
    out = feed(mon, "a", [2] * 60, start=40)       # a long outage: learned as the new normal
    assert len(firing(out, "volume_drop")) == 1 and len(resolved(out, "volume_drop")) == 1
    assert mon.state("a").volume.expect(minute_ms(100)).expected < 10
    assert feed(mon, "a", steady(10), start=100) == []           # back to ~100: a recovery
    # a rise well past the old level still is a spike
    out = feed(mon, "a", [400, 420, 410], start=110)
    assert len(firing(out, "volume_spike")) == 1


def test_a_near_total_stop_is_news_however_noisy_the_asset() -> None:
    wild = [30, 90, 60, 20, 100, 45, 75, 35, 85, 60] * 4              # MAD spread ~ half the level
    mon = GapMonitor()
    assert feed(mon, "a", wild) == []
    out = feed(mon, "a", [0, 0], start=len(wild))
    assert len(firing(out, "volume_drop")) == 1


def test_small_counts_never_drop() -> None:
    mon = GapMonitor()
    feed(mon, "behaviour/event_type=cart", [0, 1, 0, 2, 1, 0, 0, 1] * 5)
    assert feed(mon, "behaviour/event_type=cart", [0] * 30, start=40) == []


# ---------------------------------------------------------------- silence


def learned_cadence(mon: GapMonitor, asset: str, gap_ms: int = 1000, n: int = 50) -> None:
    """A cadence of `n` gaps and the min_history_minutes (10) of closed minutes silence waits for."""
    feed(mon, asset, steady(10), start=-10)
    mon.gaps(asset, [gap_ms] * n)


def test_silence_on_the_event_clock_fires_and_resolves_with_hysteresis() -> None:
    mon = GapMonitor()
    learned_cadence(mon, "behaviour", 1000)
    threshold = mon.state("behaviour").silence_threshold_ms()
    assert threshold is not None and 1500 < threshold < 2500      # 1.75 × p99 (~1 s, log-bucketed)
    assert mon.silence(T0 + 1000, "event", {"behaviour": T0}) == []
    (alert,) = mon.silence(T0 + 10_000, "event", {"behaviour": T0})
    assert alert.kind == "silence" and alert.subject == "event" and alert.clock == "event"
    assert alert.severity == "critical" and alert.observed == 10.0
    # opened when the quiet time passed the threshold, whenever the look came
    assert alert.evidence_from == T0 and alert.opened_at == T0 + int(threshold)
    assert mon.silence(T0 + 15_000, "event", {"behaviour": T0}) == []       # one open alert
    # events again: a good look does not resolve at once (a thinned stream would flap)...
    back = T0 + 20_000
    assert mon.silence(back, "event", {"behaviour": back}) == []
    assert mon.silence(back + 60_000, "event", {"behaviour": back + 59_500}) == []
    # ...a gap beyond the cadence restarts the wait...
    assert mon.silence(back + 70_000, "event", {"behaviour": back + 65_000}) == []
    good = back + 75_000
    assert mon.silence(good, "event", {"behaviour": good - 500}) == []
    assert mon.silence(good + 2 * MINUTE_MS - 5000, "event", {"behaviour": good + 2 * MINUTE_MS - 5500}) == []
    # ...and resolve_after (2) minutes within the cadence resolve it
    (done,) = mon.silence(good + 2 * MINUTE_MS, "event", {"behaviour": good + 2 * MINUTE_MS - 500})
    assert done.state == "resolved" and done.alert_id == alert.alert_id


def test_silence_needs_a_learned_cadence_and_ignores_simultaneous_events() -> None:
    mon = GapMonitor()
    learned_cadence(mon, "a", 1000, n=10)                   # fewer than cadence_min_gaps
    assert mon.silence(T0 + 3_600_000, "event", {"a": T0}) == []
    # a cold start: enough inter-arrivals are the evidence, however few minutes they span
    mon.gaps("cold", [100] * 29)
    assert mon.state("cold").silence_threshold_ms() is None
    mon.gaps("cold", [100])
    threshold = mon.state("cold").silence_threshold_ms()
    assert threshold is not None and threshold < 1000
    (alert,) = mon.silence(T0 + 3000, "event", {"cold": T0})
    assert alert.asset == "cold" and alert.opened_at == T0 + int(threshold)
    learned_cadence(mon, "b", 60_000, n=40)
    mon.gaps("b", [0] * 500)                                # a batch of same-second events is one arrival
    p99 = mon.state("b").p99_gap_ms()
    assert p99 is not None and p99 > 50_000
    assert mon.silence(T0 + 100_000, "event", {"b": T0}) == []


def test_a_sub_asset_breaching_with_its_stream_is_inhibited_by_the_streams_alert() -> None:
    mon = GapMonitor()
    assets = ("behaviour", "behaviour/source=web", "product/source=catalog")
    for a in assets:
        learned_cadence(mon, a, 1000)
    out = mon.silence(T0 + 10_000, "event", {a: T0 for a in reversed(assets)})
    by_asset = {a.asset: a for a in out}
    assert set(by_asset) == set(assets)
    assert "inhibited_by" not in by_asset["behaviour"].details
    assert by_asset["behaviour/source=web"].details["inhibited_by"] == by_asset["behaviour"].alert_id
    assert "inhibited_by" not in by_asset["product/source=catalog"].details    # its stream is fine


def test_wall_clock_silence_has_a_floor_and_sub_assets_warn() -> None:
    mon = GapMonitor()
    learned_cadence(mon, "behaviour/source=web", 1000)
    assert mon.silence(T0 + 20_000, "wall", {"behaviour/source=web": T0}) == []   # < wall_silence_min_s
    (alert,) = mon.silence(T0 + 31_000, "wall", {"behaviour/source=web": T0})
    assert alert.clock == "wall" and alert.severity == "warning"


# ---------------------------------------------------------------- completeness, orphans, drift


def test_completeness_drop_per_field_fires_and_resolves() -> None:
    mon = GapMonitor()
    good = {"brand": 86, "price": 100}
    for m in range(20):
        assert mon.minute(MinuteObservation("behaviour", minute_ms(m), 100, 100, good)) == []
    bad = {"brand": 0, "price": 100}
    assert mon.minute(MinuteObservation("behaviour", minute_ms(20), 100, 100, bad)) == []
    (alert,) = mon.minute(MinuteObservation("behaviour", minute_ms(21), 100, 100, bad))
    assert alert.kind == "completeness_drop" and alert.subject == "brand"
    assert alert.expected == pytest.approx(0.86) and alert.observed == 0
    assert mon.minute(MinuteObservation("behaviour", minute_ms(22), 100, 100, bad)) == []
    # another field dropping is another alert (one open alert per asset, kind and subject)
    both = {"brand": 0, "price": 0}
    mon.minute(MinuteObservation("behaviour", minute_ms(23), 100, 100, both))
    (other,) = mon.minute(MinuteObservation("behaviour", minute_ms(24), 100, 100, both))
    assert other.subject == "price"
    assert mon.minute(MinuteObservation("behaviour", minute_ms(25), 100, 100, good)) == []
    done = mon.minute(MinuteObservation("behaviour", minute_ms(26), 100, 100, good))
    assert {(d.subject, d.state) for d in done} == {("brand", "resolved"), ("price", "resolved")}


def test_completeness_is_not_judged_on_a_handful_of_events() -> None:
    mon = GapMonitor()
    for m in range(20):
        mon.minute(MinuteObservation("product", minute_ms(m), 100, 100, {"price": 100}))
    for m in range(20, 25):
        assert mon.minute(MinuteObservation("product", minute_ms(m), 100, 5, {"price": 0})) == []


def test_orphan_spike_fires_and_resolves() -> None:
    mon = GapMonitor()
    for m in range(20):
        assert mon.minute(MinuteObservation("behaviour", minute_ms(m), 100, product_refs=100, orphan_refs=1)) == []
    out = [mon.minute(MinuteObservation("behaviour", minute_ms(20 + i), 100, product_refs=100, orphan_refs=60))
           for i in range(3)]
    assert out[0] == [] and out[2] == []
    (alert,) = out[1]
    assert alert.kind == "orphan_spike" and alert.observed == 0.6
    out = [mon.minute(MinuteObservation("behaviour", minute_ms(23 + i), 100, product_refs=100, orphan_refs=0))
           for i in range(2)]
    assert out[0] == [] and resolved(out[1], "orphan_spike")


def _close(counts: dict[int, dict[str, MinuteCounts]], presence: dict[int, dict[str, dict[str, int]]],
           minutes: int) -> list[MinuteExpectation]:
    """Minutes 0..minutes-1 through the feed, as the alerting worker closes them."""
    expectations: list[MinuteExpectation] = []
    GapFeed(GapMonitor(), close_delay_ms=0).close(minute_ms(0), minute_ms(minutes), counts, presence, expectations)
    return expectations


def test_expectations_carry_the_orphan_and_completeness_shares_with_their_bands() -> None:
    """Ten steady minutes (10% orphans, brand on 80%, price on all), then one with 30% orphans
    and brand on half: each judgement says what it expected before and what it saw."""
    counts = {minute_ms(m): {"behaviour": MinuteCounts(100, 100, 10)} for m in range(10)}
    counts[minute_ms(10)] = {"behaviour": MinuteCounts(100, 100, 30)}
    presence = {minute_ms(m): {"behaviour": {"brand": 80, "price": 100}} for m in range(10)}
    presence[minute_ms(10)] = {"behaviour": {"brand": 50, "price": 100}}
    got = _close(counts, presence, 11)
    metrics = {e.metric for e in got}
    assert metrics == {"events", "orphans", "completeness:brand", "completeness:price"}
    # the first minute has nothing learned to expect; every later one has a row per metric
    assert sorted({e.minute_ms for e in got}) == [minute_ms(m) for m in range(1, 11)]
    assert len(got) == 10 * len(metrics)
    last = {e.metric: e for e in got if e.minute_ms == minute_ms(10)}
    assert last["events"] == MinuteExpectation("behaviour", minute_ms(10), 100, 100.0, 60.0, 140.0,
                                               "robust_rolling", "events")
    orphans = last["orphans"]
    assert (orphans.observed, orphans.expected, orphans.lower) == (pytest.approx(0.3), pytest.approx(0.1), 0.0)
    assert orphans.upper == pytest.approx(0.1 + GapConfig().orphan_rise)   # past it the share is a spike
    brand = last["completeness:brand"]
    assert (brand.observed, brand.expected, brand.upper) == (pytest.approx(0.5), pytest.approx(0.8), 1.0)
    assert brand.lower == pytest.approx(0.8 - GapConfig().completeness_drop)  # below it a drop
    assert last["completeness:price"].observed == last["completeness:price"].expected == 1.0
    assert {e.asset for e in got} == {"behaviour"} and {e.model for e in got} == {"robust_rolling"}


def test_share_expectations_only_where_the_shares_were_judged() -> None:
    """Minutes with too few product references have no orphan row, minutes with too few events
    no completeness rows; a sub-asset has no field presence, so no completeness rows at all."""
    few = GapConfig().completeness_min_events - 1
    counts = {minute_ms(m): {"behaviour": MinuteCounts(100, 100, 5),
                             "behaviour/source=web": MinuteCounts(100, 100, 5)} for m in range(4)}
    counts[minute_ms(4)] = {"behaviour": MinuteCounts(few, few, 5), "behaviour/source=web": MinuteCounts(100, few, 5)}
    presence = {minute_ms(m): {"behaviour": {"brand": counts[minute_ms(m)]["behaviour"].events}} for m in range(5)}
    got = _close(counts, presence, 5)
    rows = {(e.asset, e.metric, (e.minute_ms - T0) // MINUTE_MS) for e in got}
    assert rows == {(asset, metric, m) for asset in ("behaviour", "behaviour/source=web")
                    for metric in ("events", "orphans") for m in range(1, 4)} \
        | {("behaviour", "completeness:brand", m) for m in range(1, 4)} \
        | {("behaviour", "events", 4), ("behaviour/source=web", "events", 4)}
    assert {e.observed for e in got if e.metric == "orphans"} == {0.05}


def test_schema_drift_is_an_info_alert_that_resolves_itself() -> None:
    mon = GapMonitor()
    drift = DriftEvent("behaviour", "coupon", "new_field", T0, "string", "new field coupon (string)")
    (alert,) = mon.drift([drift], T0 + 1000)
    assert alert.kind == "schema_drift" and alert.subject == "coupon:new_field"
    assert alert.severity == "info" and alert.opened_at == T0
    assert mon.drift([drift], T0 + 30 * MINUTE_MS) == []                 # still one open alert
    (done,) = mon.drift([drift], T0 + 61 * MINUTE_MS)
    assert done.state == "resolved" and done.alert_id == alert.alert_id


# ---------------------------------------------------------------- configuration


def test_a_muted_asset_never_alerts() -> None:
    mon = GapMonitor(per_asset={"behaviour": {"mute": True}})
    learned_cadence(mon, "behaviour")
    learned_cadence(mon, "product")
    out = feed(mon, "behaviour", steady(40) + [0] * 10 + [500] * 10)
    out += mon.silence(T0 + 3_600_000, "event", {"behaviour": T0, "product": T0})
    out += mon.drift([DriftEvent("behaviour", "x", "new_field", T0, "string", "")], T0)
    assert [a.asset for a in out] == ["product"]
    assert not any(k[0] == "behaviour" for k in mon.open)


def test_per_asset_overrides_apply() -> None:
    mon = GapMonitor(GapConfig(volume_z=3.0), per_asset={"a": {"fire_after": 1}, "c": {"min_history_minutes": 100}})
    for asset in ("a", "b", "c"):
        feed(mon, asset, steady(40))
    assert mon.state("a").config.fire_after == 1 and mon.state("a").config.volume_z == 3.0
    assert len(firing(feed(mon, "a", [10], start=40))) == 1          # fires on the first bad minute
    assert feed(mon, "b", [10], start=40) == []                       # default: needs two
    assert feed(mon, "c", [10, 10, 10], start=40) == []               # not judged yet
    with pytest.raises(ValueError, match="unknown gap settings: nope"):
        GapMonitor(per_asset={"a": {"nope": 1}}).state("a")


# ---------------------------------------------------------------- seasonality


def day_night(m: int, rng: random.Random) -> int:
    """A daily sinusoid squashed into day/night: ~50/min at night, ~1000/min by day, with
    ~10-minute edges the 30-minute rolling median lags far behind; Poisson-like noise."""
    level = 525 + 475 * math.tanh(20 * math.sin(2 * math.pi * m / DAY_MINUTES))
    return max(0, round(rng.gauss(level, math.sqrt(level))))


def test_seasonal_baseline_takes_over_after_seasonal_days() -> None:
    rng = random.Random(3)
    series = [day_night(m, rng) for m in range(3 * DAY_MINUTES)]
    seasonal, rolling = GapMonitor(GapConfig(seasonal_days=2)), GapMonitor(GapConfig(seasonal_days=30))
    fired: dict[str, list[int]] = {"seasonal": [], "rolling": []}
    for m, v in enumerate(series):
        for name, mon in (("seasonal", seasonal), ("rolling", rolling)):
            if m == 2 * DAY_MINUTES + 725:    # just after the evening edge of day 3
                exp_s = seasonal.state("a").volume.expect(minute_ms(m))
                exp_r = rolling.state("a").volume.expect(minute_ms(m))
            fired[name] += [m for a in mon.minute(MinuteObservation("a", minute_ms(m), v)) if a.state == "firing"]
    # the value is normal for its hour but far from the rolling median...
    assert exp_s.model == "seasonal_daily" and exp_r.model == "robust_rolling"
    v = series[2 * DAY_MINUTES + 725]
    assert abs(v - exp_s.expected) < 3 * exp_s.spread
    assert exp_r.expected - v > 0.5 * exp_r.expected
    # ...so the rolling model alerts at the edges every day, the seasonal one not on day 3
    assert [m for m in fired["rolling"] if m >= 2 * DAY_MINUTES]
    assert fired["seasonal"] and all(m < 2 * DAY_MINUTES for m in fired["seasonal"])


def test_baseline_state_is_bounded_and_weekly_after_two_weeks() -> None:
    b = Baseline(window=30, seasonal_days=2, weekly_weeks=2)
    for m in range(15 * DAY_MINUTES):
        b.learn(minute_ms(m), 100.0 + (m % DAY_MINUTES == 0))
    assert len(b.recent) == 30
    assert b._values is not None and len(b._values) == b._ring_len == 22 * DAY_MINUTES
    assert b.expect(minute_ms(15 * DAY_MINUTES)).model == "seasonal_weekly"


# ---------------------------------------------------------------- the evaluation harness


def ev(ts: int, stream: str = "behaviour", source: str = "web", kind: str = "view", pid: str = "p1",
       **fields: Any) -> E.Ev:
    return E.Ev(ts, stream, kind, source, pid, {"event_id": f"e{ts}", "product_id": pid, **fields}, f"e{ts}")


def test_simulation_feeds_minutes_gaps_and_event_clock_silence() -> None:
    # two sources, one event per second each; web goes silent for 3 minutes
    events = []
    for s in range(40 * 60):
        t = T0 + s * 1000
        events.append(ev(t, "product", "catalog", "upsert"))
        if not 30 * 60 <= s < 33 * 60:
            events.append(ev(t, brand="b" if s % 2 else None))
    sim = E.simulate(events)
    fired = E.firings(sim)
    silences = [a for a in fired if a.kind == "silence"]
    assert {a.asset for a in silences} == {"behaviour", "behaviour/source=web", "behaviour/event_type=view"}
    assert all(0 < a.opened_at - (T0 + 30 * MINUTE_MS) <= 10_000 for a in silences)
    assert {a.asset for a in fired if a.kind == "volume_drop"} >= {"behaviour"}
    assert {a.asset for a in sim.alerts if a.state == "resolved" and a.kind == "silence"} == \
        {a.asset for a in silences}
    state = sim.monitor.state("behaviour")
    assert state.volume.seen >= 30 and set(state.fields) >= {"brand", "event_id"}
    assert state.orphans is not None                       # product p1 was announced first: no orphans


def test_injections_and_tiles() -> None:
    events = [ev(T0 + s * 1000, brand="b") for s in range(600)] + \
        [ev(T0 + s * 1000 + 1, "product", "catalog", "upsert", price=1.0) for s in range(600)]
    events.sort(key=lambda e: e.ts_ms)
    window = (T0 + 60_000, T0 + 180_000)
    silent, hit = E.inject(events, E.Injection("silence", "web", window[0], 2), seed=1)
    assert hit == {"behaviour", "behaviour/source=web", "behaviour/event_type=view"}
    assert not [e for e in silent if e.source == "web" and window[0] <= e.ts_ms < window[1]]
    assert len(silent) == len(events) - 120
    nulled, hit = E.inject(events, E.Injection("null_field", "product.price", window[0], 2), seed=1)
    assert hit == {"product"} and len(nulled) == len(events)
    assert sum(e.stream == "product" and e.fields["price"] is None for e in nulled) == 120
    cut, hit = E.inject(events, E.Injection("volume", "behaviour", window[0], 2, 0.5), seed=1)
    assert 30 < len(events) - len(cut) < 90 and "behaviour" in hit
    tiles = E.Tiles(events, (T0, T0 + 5 * MINUTE_MS), start=T0 + 10 * MINUTE_MS)
    got = list(tiles.window(T0 + 10 * MINUTE_MS, T0 + 20 * MINUTE_MS))
    assert len(got) == 2 * 600 and [e.ts_ms for e in got] == sorted(e.ts_ms for e in got)
    assert len({e.event_id for e in got}) == len(got)


def test_harness_on_a_small_slice_reports_per_kind_metrics() -> None:
    report = E.run(runs=2, seed=3, clean=False)
    assert set(report["kinds"]) == {"silence", "volume", "null_field"}
    for row in report["kinds"].values():
        assert row["runs"] == 2
        assert 0 <= row["recall"] <= 1
        assert row["precision"] is None or 0 <= row["precision"] <= 1
        assert {"ttd_median_s", "ttd_p95_s", "recall_eligible", "by_case"} <= set(row)
        assert 0 <= row["pages_per_run"] <= row["alerts_per_run"]
    assert "ttd_over_p99_median" in report["kinds"]["silence"]
    assert len(report["runs"]) == 6 and report["elapsed_s"] > 0
    assert report["kinds"]["null_field"]["recall"] == 1.0      # a whole field nulled is always caught
    # a source's silence also silences its stream and the stream's event types: one page
    silence = report["kinds"]["silence"]
    assert silence["pages_per_run"] < silence["alerts_per_run"]


def test_clean_replay_report_splits_the_natural_drop() -> None:
    rees = E.contract_events("rees46")
    report = E.clean_report("rees46", rees, None, (rees[0].ts_ms, rees[-1].ts_ms), E.NATURAL_DROP)
    assert report["natural_drop_alerts"] and report["natural_drop_alerts"] > 0
    assert report["alerts"] == report["natural_drop_alerts"] + report["false_alarms"]
    assert report["days"] == pytest.approx(2 / 24 + 50 / 1440, abs=1e-3)


def test_cli_parses_eval_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    from stocktake.cli import main
    called: dict[str, object] = {}
    monkeypatch.setattr(E, "main", lambda **kwargs: called.update(kwargs) or 0)
    monkeypatch.delenv("STOCKTAKE_GAP_INTERVAL", raising=False)
    assert main(["eval-gaps", "--runs", "3", "--seed", "5", "--json"]) == 0
    # no --check-every: the worker's STOCKTAKE_GAP_INTERVAL (default 2 s)
    assert called == {"runs": 3, "seed": 5, "as_json": True, "days": 1, "check_s": 2.0}


def test_a_silence_the_cut_caused_counts_as_right_and_a_kind_exact_miss() -> None:
    """An 80% cut of a once-a-second stream leaves quiet spans past its cadence: silences whose
    span held events the cut removed are the injection's doing (precision), not its kind."""
    rng = random.Random(5)
    # the catalog moves the event clock while behaviour is thinned
    events = sorted([ev(T0 + s * 1000 + rng.randrange(300), brand="b") for s in range(90 * 60)]
                    + [ev(T0 + s * 1000 + 500, "product", "catalog", "upsert") for s in range(90 * 60)],
                    key=lambda e: e.ts_ms)
    inj = E.Injection("volume", "behaviour", T0 + 65 * MINUTE_MS + 30_000, 15, 0.8, "x")
    result = E.judge_run(inj, events, None, seed=11)
    assert result["detected"] and result["first_alert"]["kind"] == "volume_drop"
    silences = [a for a in result["unmatched"] if a["kind"] == "silence"]
    assert silences and all(a["caused"] for a in silences)
    assert result["caused"] == len(silences) and result["matched"] + result["caused"] == result["alerts"]
    # the same silences with nothing removed in their span would not be the injection's doing
    untouched = E.judge_run(inj._replace(fraction=0.0), events, None, seed=11)
    assert untouched["alerts"] == 0 and untouched["caused"] == 0
