"""The multi-week evaluation (stocktake.tools.evalweeks): the shaped series has its daily and
weekly curve, holidays and low-volume assets at the intended rates; injections remove and add
what they say; a run resumed from the clean run's checkpoint is the injected run from scratch;
and, on 11 days of shaped REES46, the detectors find a slow multi-day drop of a ~10 events/hour
asset, a funnel drop, a new error-like event type and a cold-start source going silent, with at
most one false page per asset-month on the clean series."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

import pytest

from stocktake.processors.contract import Event, normalize
from stocktake.processors.contract_spec import shipped
from stocktake.tools import evalweeks as W
from stocktake.tools.evalgaps import Ev, assets_of, contract_events, firings, simulate

HOUR_MS = W.HOUR_MS
DAY_MS = W.DAY_MS
APP = "behaviour/source=rees46-app"
PURCHASE = "behaviour/event_type=purchase"
VIEW = "behaviour/event_type=view"


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def base() -> list[Ev]:
    return contract_events("rees46")


@pytest.fixture(scope="module")
def series(base: list[Ev]) -> W.Series:
    """Two weeks from Monday 2019-10-07, with the default holiday Monday 2019-10-14."""
    return W.build_series(base, weeks=2, seed=11)


def day_totals(s: W.Series) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in s.events:
        day = datetime.fromtimestamp(e.ts_ms / 1000, UTC).strftime("%Y-%m-%d")
        out[day] = out.get(day, 0) + 1
    return out


def weekday(day: str) -> int:
    return datetime.fromisoformat(day).weekday()


# ---------------------------------------------------------------- the series


def test_series_is_seeded_and_modest(base: list[Ev], series: W.Series) -> None:
    again = W.build_series(base, weeks=2, seed=11)
    assert [(e.ts_ms, e.event_id) for e in again.events] == [(e.ts_ms, e.event_id) for e in series.events]
    other = W.build_series(base, weeks=2, seed=12)
    assert [e.event_id for e in other.events[:50]] != [e.event_id for e in series.events[:50]]
    assert len({e.event_id for e in series.events}) == len(series.events)       # new, unique event_ids
    week = W.build_series(base, weeks=1, seed=11)                                  # a shorter one is a prefix
    assert [e.event_id for e in week.events] == [e.event_id for e in series.events if e.ts_ms < week.end_ms]
    assert series.times == sorted(series.times)
    assert series.start_ms <= series.times[0] and series.times[-1] < series.end_ms
    # ~110k events in four weeks: half of it in two
    assert 25_000 <= len(series.events) <= 75_000


def test_series_has_the_daily_curve(series: W.Series) -> None:
    by_hour = [0] * 24
    days = sum(1 for d in day_totals(series) if weekday(d) < 5 and d not in series.shape.holidays)
    for e in series.events:
        t = datetime.fromtimestamp(e.ts_ms / 1000, UTC)
        if t.weekday() < 5 and t.strftime("%Y-%m-%d") not in series.shape.holidays:
            by_hour[t.hour] += 1
    night = statistics.mean(by_hour[3:6]) / days      # factor ~0.2
    evening = statistics.mean(by_hour[19:22]) / days  # factor ~1.0
    assert 3.5 <= evening / night <= 6.5, (night, evening)
    assert by_hour.index(max(by_hour)) in range(18, 23)
    assert by_hour.index(min(by_hour)) in range(2, 7)


def test_series_has_the_weekly_shape_and_the_holiday(series: W.Series) -> None:
    totals = day_totals(series)
    assert len(totals) == 14
    weekdays = [n for d, n in totals.items() if weekday(d) < 5 and d not in series.shape.holidays]
    weekend = [n for d, n in totals.items() if weekday(d) >= 5]
    assert len(weekdays) == 9 and len(weekend) == 4
    assert 0.6 <= statistics.mean(weekend) / statistics.mean(weekdays) <= 0.8     # weekend factor 0.7
    assert "2019-10-14" in series.shape.holidays                                  # a Monday
    assert 0.3 <= totals["2019-10-14"] / statistics.mean(weekdays) <= 0.5         # holiday factor 0.4


def test_series_has_low_volume_assets_at_the_intended_rates(series: W.Series) -> None:
    rates = W.asset_rates(series)
    for asset in W.LOW_ASSETS:
        assert 5 <= rates[asset] <= 20, (asset, rates[asset])
    assert rates[VIEW] >= 60                       # the busy one
    assert 20 <= rates["transaction"] <= 50        # mid-volume
    # at the night trough a low-volume asset has a few events an hour, at the evening peak 10-30
    counts = W.hourly_counts(series.events, APP, series.start_ms, series.end_ms)
    night = [n for h, n in enumerate(counts) if h % 24 in (3, 4, 5)]
    evening = [n for h, n in enumerate(counts) if h % 24 in (19, 20, 21)]
    assert statistics.mean(night) < 4 < 9 < statistics.mean(evening) < 25


# ---------------------------------------------------------------- injections


def test_multi_day_drop_removes_its_share_of_the_target_only(series: W.Series) -> None:
    inj = W.WeekInjection("multi_day_drop", APP, at("2019-10-16T00:00:00"), at("2019-10-19T00:00:00"), 0.4)
    out = W.inject(series.events, inj, seed=3)
    inside = [e for e in series.events if inj.start_ms <= e.ts_ms < inj.end_ms]
    target = [e for e in inside if APP in assets_of(e.stream, e.kind, e.source)]
    assert 150 <= len(target) <= 1000                       # ~10 an hour for 3 days
    assert len(out.removed) == len(series.events) - len(out.events)
    assert 0.3 <= len(out.removed) / len(target) <= 0.5
    assert all(inj.start_ms <= t < inj.end_ms and APP in names for t, names in out.removed)
    assert APP in out.hit and "behaviour" in out.hit and VIEW in out.hit
    kept = {e.event_id for e in out.events}
    assert all(e.event_id in kept for e in series.events
               if not inj.start_ms <= e.ts_ms < inj.end_ms or APP not in assets_of(e.stream, e.kind, e.source))


def test_funnel_drop_leaves_the_views_alone(series: W.Series) -> None:
    inj = W.WeekInjection("funnel_drop", PURCHASE, at("2019-10-16T12:00:00"), at("2019-10-19T12:00:00"), 0.4)
    out = W.inject(series.events, inj, seed=4)

    def count(events: list[Ev], asset: str) -> int:
        return sum(1 for e in events if inj.start_ms <= e.ts_ms < inj.end_ms
                   and asset in assets_of(e.stream, e.kind, e.source))
    assert count(out.events, VIEW) == count(series.events, VIEW)
    assert count(out.events, "behaviour/event_type=cart") == count(series.events, "behaviour/event_type=cart")
    assert 0.3 <= 1 - count(out.events, PURCHASE) / count(series.events, PURCHASE) <= 0.5


def test_new_error_type_rises_and_passes_the_behaviour_contract(series: W.Series) -> None:
    inj = W.WeekInjection("new_error_type", "payment_error", at("2019-10-17T08:00:00"),
                          at("2019-10-18T08:00:00"), rate=20.0)
    assert inj.asset == "behaviour/event_type=payment_error"
    out = W.inject(series.events, inj, seed=5)
    added = [e for e in out.events if e.kind == "payment_error"]
    assert out.added == len(added) == len(out.events) - len(series.events)
    assert 180 <= len(added) <= 330                            # 2 -> 20 an hour over 24 h: ~264
    assert all(inj.start_ms <= e.ts_ms < inj.end_ms for e in added)
    first = sum(1 for e in added if e.ts_ms < inj.start_ms + 6 * HOUR_MS)
    last = sum(1 for e in added if e.ts_ms >= inj.end_ms - 6 * HOUR_MS)
    assert first < 40 and last > 80 and last > 2 * first
    assert [e.ts_ms for e in out.events] == sorted(e.ts_ms for e in out.events)
    # valid under the shipped contract (event_type is an open lower-case vocabulary)
    contract = shipped()["behaviour"]
    for e in added[:20]:
        raw = {k: v for k, v in e.fields.items() if v is not None}
        judged = normalize(contract, raw)
        assert isinstance(judged, Event), judged
        assert judged.kind == "payment_error" and judged.source == "rees46-web"
    assert "behaviour/event_type=payment_error" in out.hit


def test_cold_start_adds_a_burst_from_a_new_source(series: W.Series) -> None:
    inj = W.cold_start(at("2019-10-18T14:00:00"))
    assert inj.asset == "behaviour/source=rees46-kiosk"
    out = W.inject(series.events, inj, seed=6)
    added = [e for e in out.events if e.source == W.COLD_SOURCE]
    assert 800 <= len(added) <= 1000                            # ~10 a second for 90 s
    assert added[0].ts_ms == inj.start_ms and added[-1].ts_ms == inj.end_ms
    assert 89_000 <= inj.end_ms - inj.start_ms <= 90_000
    assert not any(e.source == W.COLD_SOURCE for e in series.events)
    assert len(out.events) == len(series.events) + len(added)


def test_plan_places_runs_after_the_warm_up_and_clear_of_holidays(series: W.Series) -> None:
    # a week of warm-up, then the holiday Monday: the 2-4 day drops and their day of tail fit after it
    runs = W.plan({"multi_day_drop": 3, "hour_drop": 8, "funnel_drop": 2, "cold_start_silence": 2}, 9, series)
    assert [r.kind for r in runs].count("hour_drop") == 8
    holidays = series.holiday_windows()
    for r in runs:
        assert r.start_ms >= series.start_ms + W.default_warmup(series)
        assert r.end_ms + r.tail_ms <= series.end_ms
        assert not any(lo < r.end_ms + r.tail_ms and r.start_ms < hi for lo, hi in holidays)
    assert runs == W.plan({"multi_day_drop": 3, "hour_drop": 8, "funnel_drop": 2, "cold_start_silence": 2}, 9,
                          series)
    with pytest.raises(ValueError, match="no room"):     # a 5-day drop does not
        W.plan({"multi_day_drop": 4}, 9, series)


def test_a_resumed_run_is_the_injected_run_from_scratch(base: list[Ev]) -> None:
    short = W.build_series(base, weeks=1.25 / 7, seed=3)                 # to 2019-10-08T06:00
    cold = W.cold_start(at("2019-10-08T03:00:00"))
    drop = W.WeekInjection("hour_drop", "transaction", at("2019-10-08T01:00:00"), at("2019-10-08T04:00:00"), 1.0,
                           tail=HOUR_MS)
    cfg = W.with_holidays(None, short.shape.holidays)
    _, outcomes = W.evaluate(short, [cold, drop], cfg, seed=1, workers=1)
    assert outcomes[0].fired and outcomes[1].removed      # something to compare
    for n, (inj, got) in enumerate(zip((cold, drop), outcomes, strict=True)):
        injected = W.inject(short.events, inj, seed=1 * 1_000_003 + n).events
        end = inj.end_ms + inj.tail_ms
        full = [a for a in simulate([e for e in injected if e.ts_ms < end], cfg).alerts[got.offset:]
                if a.state == "firing"]
        key = [(a.asset, a.kind, a.subject, a.opened_at) for a in got.fired]
        assert key == [(a.asset, a.kind, a.subject, a.opened_at) for a in full]


# ---------------------------------------------------------------- detection on 11 days


DETECT_END = at("2019-10-18T14:00:00")   # Monday 10-07 to Friday 10-18, the holiday Monday 10-14 in it
INJECTIONS = (
    # 40% of a ~10 events/hour source for 3 days, from the midnight after the holiday
    W.WeekInjection("multi_day_drop", APP, at("2019-10-15T00:00:00"), at("2019-10-18T00:00:00"), 0.4,
                    tail=2 * HOUR_MS),
    # 40% of the purchases for 3 days, views and carts as they were
    W.WeekInjection("funnel_drop", PURCHASE, at("2019-10-15T12:00:00"), at("2019-10-18T12:00:00"), 0.4,
                    tail=2 * HOUR_MS),
    # a new error-like event type rising from 2 to 20 an hour over a day
    W.WeekInjection("new_error_type", "payment_error", at("2019-10-16T08:00:00"), at("2019-10-17T08:00:00"),
                    rate=20.0),
    # a new source: ~10 events a second for 90 s, then nothing
    W.cold_start(at("2019-10-17T14:00:00")),
)


@pytest.fixture(scope="module")
def evaluated(base: list[Ev]) -> dict[str, Any]:
    """The clean 11 days (a week to learn from, the holiday, 4 days judged) and the four runs
    resumed from it. The 2-week series' first 11 days: the same seed gives the same prefix."""
    short = W.build_series(base, weeks=(DETECT_END - W.SERIES_START) / (7 * DAY_MS), seed=11)
    for inj in INJECTIONS:
        assert inj.end_ms + inj.tail_ms <= short.end_ms
    sim, outcomes = W.evaluate(short, INJECTIONS, W.with_holidays(None, short.shape.holidays), seed=7,
                               workers=2)
    clean = firings(sim)
    # False pages judged after the first week: until two weeks show the days of the week, the
    # first weekend's hours are held to the weekdays' (the 4-week evaluation counts them all).
    return {"clean": W.clean_report(sim, short, learn_days=7), "results": [W.judge(o, clean) for o in outcomes]}


def _why(result: dict[str, Any]) -> str:
    return f"{result['injection']['label']}: first {result['first_alert']}; unmatched {result['unmatched']}"


def test_a_slow_multi_day_drop_of_a_low_volume_source_is_found_the_day_it_is_significant(
        evaluated: dict[str, Any]) -> None:
    r = evaluated["results"][0]
    assert r["detected"], _why(r)
    # 2019-10-15 is cut by 40% from its first minute: ~140 events instead of ~230, which the
    # day (or a run of hours) shows once it closes
    assert r["ttd_ms"] <= DAY_MS + 2 * HOUR_MS, _why(r)
    assert r["first_alert"]["kind"] in ("volume_drop", "ratio_drop")


def test_a_funnel_drop_is_found(evaluated: dict[str, Any]) -> None:
    r = evaluated["results"][1]
    assert r["detected"], _why(r)
    assert r["first_alert"]["asset"] in (PURCHASE, "behaviour", "behaviour/source=rees46-web")


def test_a_new_error_like_event_type_raises_new_asset_or_a_spike(evaluated: dict[str, Any]) -> None:
    r = evaluated["results"][2]
    assert r["detected"], _why(r)
    assert r["first_alert"]["asset"] == "behaviour/event_type=payment_error"
    assert r["first_alert"]["kind"] in ("new_asset", "volume_spike")


def test_a_cold_start_source_that_stops_is_silent_within_a_minute(evaluated: dict[str, Any]) -> None:
    r = evaluated["results"][3]
    assert r["detected"], _why(r)
    assert r["first_alert"]["asset"] == "behaviour/source=rees46-kiosk"
    assert 0 < r["ttd_ms"] <= 60_000, _why(r)


def test_clean_weeks_page_at_most_once_per_asset_month(evaluated: dict[str, Any]) -> None:
    c = evaluated["clean"]
    assert c["assets"] >= 12
    assert c["pages_per_asset_month"] is not None
    assert c["pages_per_asset_month"] <= 1.0, (c["by_kind_scale"], c["false_alarm_list"][:10])


def test_summary_reports_every_kind_per_scale(evaluated: dict[str, Any]) -> None:
    summary = W.summarize(evaluated["results"])
    assert set(summary) == {"multi_day_drop", "funnel_drop", "new_error_type", "cold_start_silence"}
    for row in summary.values():
        assert row["runs"] == 1
        assert set(row["scales"]) <= set(W.SCALES)
        for key in ("recall", "precision", "ttd_median_s", "ttd_p95_s", "pages_per_run"):
            assert key in row


def test_cli_runs_the_weeks_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    from stocktake.cli import main
    called: dict[str, object] = {}
    monkeypatch.setattr(W, "main", lambda **kwargs: called.update(kwargs) or 0)
    monkeypatch.delenv("STOCKTAKE_GAP_INTERVAL", raising=False)
    assert main(["eval-gaps", "--weeks", "3", "--seed", "5", "--json"]) == 0
    assert called == {"weeks": 3, "runs": None, "seed": 5, "as_json": True, "check_s": 2.0}
