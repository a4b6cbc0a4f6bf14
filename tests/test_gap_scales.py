"""Gap detection at the hour and day scales, ratios and funnels, new and bad-news assets,
exclusion windows, and baselines that do not learn incidents (processors/scales.py)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from stocktake.processors.alerts import Alert
from stocktake.processors.baseline import DAY_MS, HOUR_MS, MINUTE_MS
from stocktake.processors.gaps import GapConfig, GapMonitor, MinuteObservation

T0 = 1_704_067_200_000   # 2024-01-01T00:00Z, a Monday
DAY_MINUTES = 1440


def daily(minute: int) -> float:
    """A day-night curve: 0.3 at night to 1.7 in the evening, mean 1."""
    hour = (minute % DAY_MINUTES) / 60
    return 1.0 + 0.7 * math.sin((hour - 10) / 24 * 2 * math.pi)


def poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: the rates here are small
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


Rates = Callable[[int], dict[str, float]]   # minute index -> asset -> expected events that minute


def run(mon: GapMonitor, minutes: int, rates: Rates, seed: int = 1) -> list[Alert]:
    """Every minute of every asset, in event-time order, as GapFeed.close drives them."""
    rng = random.Random(seed)
    out: list[Alert] = []
    for m in range(minutes):
        at = T0 + m * MINUTE_MS
        out += mon.advance(at)
        for asset, lam in sorted(rates(m).items()):
            out += mon.minute(MinuteObservation(asset, at, poisson(rng, lam)))
    out += mon.advance(T0 + minutes * MINUTE_MS)
    return out


def fired(alerts: list[Alert], kind: str | None = None) -> list[Alert]:
    return [a for a in alerts if a.state == "firing" and (kind is None or a.kind == kind)]


def hourly(rate_per_hour: float, drop: float = 0.0, drop_from: int | None = None,
           drop_to: int | None = None) -> Callable[[int], float]:
    def lam(m: int) -> float:
        cut = drop if drop_from is not None and drop_from <= m < (drop_to or 10**9) else 0.0
        return rate_per_hour / 60 * daily(m) * (1 - cut)
    return lam


def test_a_multi_day_40_percent_drop_of_10_events_an_hour_fires_within_the_day() -> None:
    start = 5 * DAY_MINUTES + 9 * 60           # day 6, 09:00
    lam = hourly(10, 0.4, start, start + 3 * DAY_MINUTES)
    alerts = run(GapMonitor(), 9 * DAY_MINUTES, lambda m: {"behaviour": lam(m) * 20,
                                                            "behaviour/event_type=purchase": lam(m)})
    drops = [a for a in fired(alerts, "volume_drop") if a.asset == "behaviour/event_type=purchase"]
    assert drops, fired(alerts)
    first = min(drops, key=lambda a: a.opened_at)
    assert first.details["scale"] in ("hour", "day") and first.subject in ("hour", "day")
    began = T0 + start * MINUTE_MS
    assert began < first.opened_at <= began + DAY_MS
    # nothing before the incident, on any asset
    assert not [a for a in fired(alerts) if a.opened_at < began], fired(alerts)
    # and it resolves after the incident
    resolved = [a for a in alerts if a.state == "resolved" and a.alert_id == first.alert_id]
    assert resolved and resolved[0].resolved_at is not None
    assert resolved[0].resolved_at >= began + 3 * DAY_MS


def test_the_baseline_after_an_incident_is_what_it_was_before() -> None:
    start = 4 * DAY_MINUTES
    lam = hourly(30, 0.6, start, start + 2 * DAY_MINUTES)
    mon = GapMonitor()
    run(mon, start, lambda m: {"a": lam(m)})
    before = mon.scales.states["a", "hour"].volume.base.expect(T0 + (start + 2 * DAY_MINUTES + 600) * MINUTE_MS)
    mon2 = GapMonitor()
    alerts = run(mon2, start + 2 * DAY_MINUTES, lambda m: {"a": lam(m)})
    assert fired(alerts, "volume_drop")
    after = mon2.scales.states["a", "hour"].volume.base.expect(T0 + (start + 2 * DAY_MINUTES + 600) * MINUTE_MS)
    # the two incident days trained nothing: the same hour of day expects what it did before
    assert after.expected >= 0.85 * before.expected


def test_funnel_ratio_drop_fires_while_total_traffic_is_normal() -> None:
    start = 4 * DAY_MINUTES
    end = start + 3 * DAY_MINUTES

    def rates(m: int) -> dict[str, float]:
        base = daily(m)
        carts = 60 / 60 * base
        purchases = 30 / 60 * base * (0.6 if start <= m < end else 1.0)
        views = 600 / 60 * base
        return {"behaviour": views + carts + purchases, "behaviour/event_type=view": views,
                "behaviour/event_type=cart": carts, "behaviour/event_type=purchase": purchases}
    alerts = run(GapMonitor(), 8 * DAY_MINUTES, rates)
    ratio = [a for a in fired(alerts, "ratio_drop") if a.asset == "behaviour/event_type=purchase"]
    assert ratio, fired(alerts)
    subjects = {a.subject for a in ratio}
    assert subjects & {"behaviour/event_type=cart@hour", "behaviour/event_type=cart@day",
                       "behaviour@hour", "behaviour@day"}
    began = T0 + start * MINUTE_MS
    # no hour, day or ratio alert before it (the minute detectors' false-alarm rate is what
    # `stocktake eval-gaps` measures)
    coarse = [a for a in fired(alerts) if a.details.get("scale") in ("hour", "day")]
    assert all(a.opened_at > began for a in coarse), coarse
    assert min(a.opened_at for a in ratio) <= began + DAY_MS
    # the stream as a whole did not drop (purchases are ~4% of it)
    assert not [a for a in fired(alerts, "volume_drop") if a.asset == "behaviour" and a.subject in ("hour", "day")]


def test_new_assets_are_findings_and_error_like_ones_page_when_they_rise_not_when_quiet() -> None:
    appear = 2 * DAY_MINUTES

    def rates(m: int) -> dict[str, float]:
        out = {"behaviour": 20.0 + (5.0 if m >= appear else 0.0), "behaviour/event_type=view": 20.0}
        if m >= appear:
            out["behaviour/event_type=payment_error"] = 3.0 if m < appear + DAY_MINUTES else 0.0
            out["behaviour/event_type=wishlist"] = 2.0
        return out
    mon = GapMonitor()
    alerts = run(mon, appear + 2 * DAY_MINUTES, rates)
    new = {a.asset: a for a in fired(alerts, "new_asset")}
    assert set(new) == {"behaviour/event_type=payment_error", "behaviour/event_type=wishlist"}
    assert new["behaviour/event_type=payment_error"].severity == "warning"
    assert new["behaviour/event_type=payment_error"].details["error_like"] is True
    assert new["behaviour/event_type=wishlist"].severity == "info"
    assert 0 < new["behaviour/event_type=wishlist"].details["share"] < 0.2
    # the error type stopping after a day is good news: no silence, no drop, no page
    quiet = [a for a in fired(alerts) if a.asset == "behaviour/event_type=payment_error" and a.kind != "new_asset"]
    assert quiet == []
    # findings resolve themselves
    assert {a.asset for a in alerts if a.kind == "new_asset" and a.state == "resolved"} == set(new)
    # ...but its rise pages: an error type at a steady trickle that jumps
    mon2 = GapMonitor()
    surge = 3 * DAY_MINUTES + 600
    alerts2 = run(mon2, 4 * DAY_MINUTES, lambda m: {
        "behaviour": 20.0, "behaviour/event_type=checkout_failed": 0.1 * daily(m) * (6 if m >= surge else 1)})
    rises = [a for a in fired(alerts2) if a.asset == "behaviour/event_type=checkout_failed"
             and a.kind in ("volume_spike", "ratio_rise")]
    assert rises and all(a.opened_at >= T0 + surge * MINUTE_MS for a in rises)
    assert {a.severity for a in rises} == {"critical"}


def test_holidays_and_exclusion_windows_are_neither_judged_nor_learned() -> None:
    holiday = 5                                      # day index with a third of the traffic
    lam = hourly(120, 0.7, holiday * DAY_MINUTES, (holiday + 1) * DAY_MINUTES)
    date = "2024-01-06"
    assert T0 + holiday * DAY_MS == 1_704_499_200_000   # 2024-01-06T00:00Z
    plain = run(GapMonitor(), 7 * DAY_MINUTES, lambda m: {"a": lam(m)})
    assert [a for a in fired(plain, "volume_drop") if a.opened_at >= T0 + holiday * DAY_MS]
    mon = GapMonitor(GapConfig(holidays=(date,)))
    calm = run(mon, 7 * DAY_MINUTES, lambda m: {"a": lam(m)})
    assert [a for a in fired(calm) if a.kind != "new_asset"] == []
    windows = GapMonitor(GapConfig(exclusions=(("2024-01-06T00:00:00Z", "2024-01-07T00:00:00Z"),)))
    assert [a for a in fired(run(windows, 7 * DAY_MINUTES, lambda m: {"a": lam(m)}))] == []


def test_scales_judge_an_asset_only_once_its_rate_and_history_support_them() -> None:
    mon = GapMonitor()
    # ~1 event an hour: below hour_min_events, and the minute scale cannot see a drop either
    alerts = run(mon, 6 * DAY_MINUTES, lambda m: {"sparse": 1 / 60 * (0.0 if m > 4 * DAY_MINUTES else 1.0)})
    assert [a for a in fired(alerts) if a.kind in ("volume_drop", "ratio_drop") and a.subject == "hour"] == []
    # a busy asset's hour scale starts on day 4 (three values of each hour of the day)
    mon2 = GapMonitor()
    run(mon2, 3 * DAY_MINUTES + 120, lambda m: {"busy": 2.0})
    hours = mon2.scales.states["busy", "hour"].volume.base
    assert hours.expect(T0 + (2 * DAY_MINUTES + 120) * MINUTE_MS).model == "robust_rolling"
    exp = hours.expect(T0 + (3 * DAY_MINUTES + 120) * MINUTE_MS)
    assert exp.model == "seasonal_daily" and 100 < exp.expected < 140
    assert mon2.scales.states["busy", "day"].volume.base.expect(T0 + 3 * DAY_MS).model == "robust_rolling"


def test_a_coarse_alert_during_a_finer_one_is_part_of_the_same_incident() -> None:
    start = 3 * DAY_MINUTES + 600
    lam = hourly(600, 1.0, start, start + 180)     # a 3-hour total outage of a busy asset
    alerts = run(GapMonitor(), start + 240, lambda m: {"a": lam(m)})
    minute = [a for a in fired(alerts, "volume_drop") if a.subject == ""]
    hour = [a for a in fired(alerts, "volume_drop") if a.subject == "hour"]
    assert minute and hour
    assert all(a.inhibited_by == minute[0].alert_id for a in hour)
    assert 0 < hour[0].opened_at - minute[0].opened_at <= HOUR_MS   # when the outage's first hour closed


def test_the_gaps_file_takes_holidays_exclusions_funnels_and_bad_news(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from stocktake.services.gapconfig import load_monitor
    from stocktake.settings import SettingsError

    path = tmp_path / "gaps.toml"
    path.write_text('[default]\nholidays = ["2024-01-06"]\n'
                    'exclusions = [["2024-01-01T10:00Z", "2024-01-01T12:00:00+00:00"]]\n'
                    'funnels = [["behaviour/event_type=purchase", "behaviour/event_type=view"]]\n'
                    '[assets."behaviour/event_type=refund"]\nquiet_is_good = true\n')
    mon = load_monitor(str(path))
    cfg = mon.state("behaviour").config
    assert cfg.funnels == (("behaviour/event_type=purchase", "behaviour/event_type=view"),)
    assert cfg.excluded(T0 + 5 * DAY_MS + HOUR_MS, T0 + 5 * DAY_MS + 2 * HOUR_MS)     # the holiday
    assert cfg.excluded(T0 + 11 * HOUR_MS, T0 + 11 * HOUR_MS + MINUTE_MS)               # the window
    assert not cfg.excluded(T0 + 12 * HOUR_MS, T0 + 13 * HOUR_MS)
    assert mon.state("behaviour/event_type=refund").config.quiet_is_good_for("behaviour/event_type=refund")
    assert not cfg.quiet_is_good_for("behaviour/event_type=refund")
    path.write_text('[default]\nholidays = ["2024-13-01"]\n')
    with pytest.raises(SettingsError, match="holidays"):
        load_monitor(str(path))
    path.write_text('[default]\nexclusions = [["2024-01-02T00:00Z", "2024-01-01T00:00Z"]]\n')
    with pytest.raises(SettingsError, match="ends before it starts"):
        load_monitor(str(path))


def test_a_cold_start_is_judged_silent_within_a_minute_of_its_last_event() -> None:
    """A live source sending 10 events/s for 90 s, then nothing: no minute of it has closed
    when it stops, but 900 inter-arrivals seen at the live edge are evidence enough."""
    from stocktake.processors.gapfeed import Activity, Arrivals, GapFeed

    feed = GapFeed(GapMonitor(), close_delay_ms=30_000)
    start = T0 + 20_000
    for look in range(45):   # a look every 2 s, as the worker's
        first = start + look * 2000
        gaps = [100.0] * 20
        feed.look([Activity("behaviour/source=kiosk", first + 1900, first + 1950)],
                  [Arrivals("behaviour/source=kiosk", first, len(gaps), gaps)])
    last_ingest = start + 44 * 2000 + 1950
    assert feed.silence(last_ingest + 20_000, "wall") == []
    (alert,) = feed.silence(last_ingest + 32_000, "wall")          # past wall_silence_min_s (30 s)
    assert alert.kind == "silence" and alert.clock == "wall" and alert.asset == "behaviour/source=kiosk"
    # and on the event clock, the moment the watermark moves past its threshold
    feed.look([Activity("behaviour", last_ingest + 5_000, last_ingest + 5_000)], watermark_ms=last_ingest + 5_000)
    span = feed.span()
    assert span is not None and feed.silence(feed.event_now_ms, "event") == []   # closed minutes come first
    feed.close(*span, {}, {})
    (event,) = feed.silence(feed.event_now_ms, "event")
    assert event.clock == "event" and event.opened_at - (start + 44 * 2000 + 1900) < 5_000


def test_a_rise_of_orphan_references_is_watched_at_the_hour_scale() -> None:
    mon = GapMonitor()
    start = 4 * DAY_MINUTES
    rng = random.Random(4)
    out: list[Alert] = []
    for m in range(5 * DAY_MINUTES):
        at = T0 + m * MINUTE_MS
        out += mon.advance(at)
        refs = poisson(rng, 3.0)
        share = 0.3 if m >= start else 0.05
        orphans = sum(rng.random() < share for _ in range(refs))
        out += mon.minute(MinuteObservation("behaviour", at, refs, product_refs=refs, orphan_refs=orphans))
    rises = [a for a in fired(out, "ratio_rise") if a.subject.startswith("product_refs@")]
    assert rises and all(a.opened_at > T0 + start * MINUTE_MS for a in rises), fired(out)
    assert rises[0].opened_at <= T0 + start * MINUTE_MS + 3 * HOUR_MS
    assert "orphans per product reference" in rises[0].reason and rises[0].severity == "warning"


def test_a_field_in_a_slow_partition_has_not_vanished_while_the_watermark_is_behind() -> None:
    from stocktake.processors.drift import FieldType, detect_drift

    day = 24 * 3600 * 1000
    # the stream's newest event (a fast partition) is 30 h on; the field's events (carried by
    # another partition, consumed behind) only reach the low watermark
    obs = [FieldType("behaviour", "coupon", "string", T0, T0 + day, 100),
           FieldType("behaviour", "event_id", "string", T0, T0 + day + 30 * 3600 * 1000, 900)]
    spans = {"behaviour": (T0, T0 + day + 30 * 3600 * 1000)}
    kinds = {(d.field, d.kind) for d in detect_drift(obs, spans, grace_ms=60_000, vanish_after_ms=3_600_000)}
    assert ("coupon", "vanished_field") in kinds              # judged by the newest event: wrongly
    assert not detect_drift(obs, spans, grace_ms=60_000, vanish_after_ms=3_600_000, watermark_ms=T0 + day + 60_000)
    late = detect_drift(obs, spans, grace_ms=60_000, vanish_after_ms=3_600_000, watermark_ms=T0 + day + 2 * 3_600_000)
    assert [(d.field, d.kind) for d in late] == [("coupon", "vanished_field")]   # once time has moved on
