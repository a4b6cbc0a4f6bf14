"""quality_score explains itself; its SQL (the dashboards') gives the same numbers; the
log-bucket histogram's quantiles stay within their documented error."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake.clickhouse.store import Store
from stocktake.processors.quality import (
    BLAMING_KINDS,
    COMPONENTS,
    EDGES,
    REL_ERROR,
    WEIGHTS,
    LagHistogram,
    bad_field,
    bad_field_sql,
    component_sql,
    freshness_sql,
    quality_score,
    score_sql,
)

FIELDS = ("event_id", "user_id", "product_id", "ts", "price", "category_code")
REASONS = ("missing_field:user_id", "invalid_ts", "invalid_value:price", "invalid_type:product_id", "invalid_json")
T0 = 1_570_000_000_000
TARGET = 60_000

lags = st.one_of(st.integers(-5_000, 5_000), st.integers(0, 10**7), st.integers(0, 4 * 10**9))


def summary(valid: int = 0, *, duplicates: int = 0, invalid: dict[str, int] | None = None, late: int = 0,
            newest: int | None = None, field_events: int | None = None, present: dict[str, int] | None = None,
            checked: int = 0, failed: int = 0) -> dict[str, Any]:
    """An asset's counts, as the inventory hands them to quality_score."""
    invalid = invalid or {}
    n_invalid = sum(invalid.values())
    return {"events": valid + duplicates + n_invalid, "valid": valid, "duplicates": duplicates,
            "invalid": n_invalid, "invalid_by_reason": invalid, "late": late,
            "newest_ts_ms": newest if newest is not None or not valid else T0 + valid - 1,
            "field_events": valid + n_invalid if field_events is None else field_events,
            "fields": {f: {"present": n} for f, n in (present or {}).items()},
            "consistency_checked": checked, "consistency_failed": failed}


@st.composite
def summaries(draw: st.DrawFn) -> dict[str, Any]:
    valid, duplicates = draw(st.integers(0, 60)), draw(st.integers(0, 20))
    invalid = {r: n for r in REASONS if (n := draw(st.integers(0, 10)))}
    unparsed = invalid.get("invalid_json", 0)  # carries no fields
    field_events = draw(st.integers(0, valid + sum(invalid.values()) - unparsed))
    checked = draw(st.integers(0, valid))
    seen = draw(st.frozensets(st.sampled_from(FIELDS)))
    return summary(valid, duplicates=duplicates, invalid=invalid, late=draw(st.integers(0, valid)),
                   newest=T0 + draw(st.integers(0, 10**7)) if valid else None, field_events=field_events,
                   present={f: draw(st.integers(0, field_events)) for f in seen},
                   checked=checked, failed=draw(st.integers(0, checked)))


def exact_rank(values: list[int], q: float) -> int:
    ordered = sorted(max(0, v) for v in values)  # negative lags (clock skew) count as 0
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@settings(max_examples=300)
@given(st.lists(lags, min_size=1, max_size=200), st.sampled_from((0.0, 0.5, 0.9, 0.95, 0.99, 1.0)))
def test_quantiles_within_documented_bucket_error(values: list[int], q: float) -> None:
    h = LagHistogram()
    for v in values:
        h.add(v)
    est, exact = h.quantile(q), exact_rank(values, q)
    assert est is not None and h.count == len(values)
    if exact == 0:
        assert est == 0
    elif exact >= EDGES[-1]:
        assert est == EDGES[-1]  # overflow: a lower bound
    else:
        assert abs(est - exact) <= REL_ERROR * exact * (1 + 1e-9)


def test_histogram_edges_and_layout_check() -> None:
    assert LagHistogram().quantile(0.5) is None
    assert EDGES[-2] < 30 * 86_400_000 <= EDGES[-1]
    with pytest.raises(ValueError):
        LagHistogram([0] * 10)


def test_bad_field_blames_present_values_only() -> None:
    assert bad_field("invalid_ts") == "ts" and bad_field("invalid_type:user_id") == "user_id"
    assert bad_field("missing_field:user_id") is None and bad_field("invalid_json") is None


def clean(n: int = 100, *, missing: dict[str, int] | None = None) -> dict[str, Any]:
    """n valid events on time, each consistency-checked, FIELDS present but for `missing`."""
    missing = missing or {}
    return summary(n, present={f: n - missing.get(f, 0) for f in FIELDS}, checked=n)


def score(s: dict[str, Any]) -> dict[str, Any]:
    return quality_score(s, required_fields=FIELDS, now_ms=T0 + 200, freshness_target_ms=TARGET)


def test_perfect_asset_scores_100_and_explains_nothing() -> None:
    r = score(clean())
    assert r["score"] == 100.0 and r["explain"] == [] and r["weights"] == WEIGHTS
    assert all(v == 1.0 for v in r["components"].values())
    assert r["losses"] == []


def test_completeness_drop_lowers_score_and_is_named_first() -> None:
    r = score(clean(missing={"category_code": 33}))
    assert r["score"] < 100 and r["components"]["completeness"] == pytest.approx(1 - 0.33 / 6)
    assert r["explain"][0].startswith("completeness 0.94: category_code present on 67% of events")


def test_invalid_share_lowers_score_and_is_named_first() -> None:
    base = clean(91)
    # 6 rejected for a missing user_id (their other fields present), 3 for their ts
    bad = summary(91, invalid={"missing_field:user_id": 6, "invalid_ts": 3},
                  present={f: 100 - 6 * (f == "user_id") for f in FIELDS}, checked=91)
    r = score(bad)
    assert r["score"] < score(base)["score"]
    assert r["explain"][0].startswith("validity 0.91: 9% of events rejected (missing_field:user_id 6%, invalid_ts 3%)")


@settings(max_examples=200)
@given(summaries(), st.integers(1, 20), st.integers(T0, T0 + 10**8), st.integers(1, 10**7))
def test_score_bounds_and_more_invalid_never_helps(s, k, now, target) -> None:
    r = quality_score(s, required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=target)
    comps = [v for v in r["components"].values() if v is not None]
    assert all(0 <= v <= 1 for v in comps)
    assert (r["score"] is None) == (not comps)
    if r["score"] is not None:
        assert 0 <= r["score"] <= 100
        reasons = {**s["invalid_by_reason"], "invalid_json": s["invalid_by_reason"].get("invalid_json", 0) + k}
        worse = {**s, "events": s["events"] + k, "invalid": s["invalid"] + k, "invalid_by_reason": reasons}
        r2 = quality_score(worse, required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=target)
        assert r2["score"] <= r["score"]
        assert r2["components"]["validity"] < (r["components"]["validity"] or 1.0) or r2["components"]["validity"] == 0


def test_weights_redistribute_when_a_component_has_no_data() -> None:
    # 90 valid events, then 10 duplicates; nothing consistency-checked
    r = score(summary(90, duplicates=10, newest=T0 + 99, present=dict.fromkeys(FIELDS, 90)))
    assert r["components"]["consistency"] is None
    eff = r["evidence"]["effective_weights"]
    assert set(eff) == set(WEIGHTS) - {"consistency"} and sum(eff.values()) == pytest.approx(1)
    assert r["score"] == round(100 * (1 - eff["uniqueness"] * 0.1), 1)
    assert any(e.startswith("consistency: no data") for e in r["explain"])
    assert r["explain"][0].startswith("uniqueness 0.90")
    empty = score(summary())
    assert empty["score"] is None and all(v is None for v in empty["components"].values())


def test_timeliness_freshness_and_late_share() -> None:
    m = {**clean(), "late": 20}  # 20 of the 100 arrived 2 min after their event time
    r = quality_score(m, required_fields=FIELDS, now_ms=T0 + 99 + 2 * TARGET, freshness_target_ms=TARGET)
    ev = r["evidence"]
    assert ev["freshness"] == pytest.approx(1 - math.log10(2)) and ev["on_time_share"] == 0.8
    assert r["components"]["timeliness"] == pytest.approx(0.8 * (1 - math.log10(2)))
    assert "newest event 2 min old (target 1 min); 20% of valid events arrived late (20 events); -" in r["explain"][0]
    stale = quality_score(m, required_fields=FIELDS, now_ms=T0 + 20 * TARGET, freshness_target_ms=TARGET)
    assert stale["evidence"]["freshness"] == 0.0


@given(summaries(), st.integers(T0, T0 + 10**8))
def test_losses_are_the_explain_lines_as_data(s, now) -> None:
    r = quality_score(s, required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=TARGET)
    losses = r["losses"]
    assert [f"{x['text']}; -{x['points']:.1f} points" for x in losses] == r["explain"][:len(losses)]
    assert {x["component"]: x["points"] for x in losses} == {
        c: p for c, p in r["evidence"]["points_lost"].items() if r["components"][c] < 1}
    assert [x["points"] for x in losses] == sorted((x["points"] for x in losses), reverse=True)


# ---------------------------------------------------------------- the same rules in SQL

def _counts_sql(s: dict[str, Any], required: tuple[str, ...], now: int) -> str:
    """One row of an asset's counts as quality_score derives them (ages in ms)."""
    names = {*required, *s["fields"]}
    fe = s["field_events"]
    counts = {**{k: s[k] for k in ("events", "valid", "duplicates", "invalid", "late", "consistency_checked",
                                    "consistency_failed")},
              "field_values": len(names) * fe,
              "missing_values": sum(fe - s["fields"].get(f, {}).get("present", 0) for f in names)}
    age = "CAST(NULL AS Nullable(Float64))" if s["newest_ts_ms"] is None else f"{now - s['newest_ts_ms']}"
    return ", ".join([f"toUInt64({v}) AS {k}" for k, v in counts.items()] + [f"{age} AS age", f"{TARGET} AS target"])


@settings(max_examples=30, deadline=None)  # a chDB query per example
@given(st.lists(st.tuples(summaries(), st.sampled_from((0, 10**5, 10**6, 10**8))), max_size=20))
def test_score_sql_gives_quality_scores_numbers(store: Store, drawn: list[tuple[dict[str, Any], int]]) -> None:
    cases = [s for s, _ in drawn] + [clean(), summary(), {**clean(), "late": 20}]
    nows = [T0 + later for _, later in drawn] + [T0 + 200, T0, T0 + 2 * TARGET]
    counts = {k: k for c in COMPONENTS.values() for k in (*c.lost, *c.out_of)}
    rows = " UNION ALL ".join(f"SELECT {i} AS i, {_counts_sql(s, FIELDS[:3], now)}"
                              for i, (s, now) in enumerate(zip(cases, nows, strict=True)))
    sql = (f"SELECT i, {freshness_sql('age', 'target')} AS freshness, "
           + ", ".join(f"{component_sql(c, counts, 'freshness')} AS {name}" for name, c in COMPONENTS.items())
           + f", {component_sql(COMPONENTS['timeliness'], counts)} AS on_time"
           + f", {score_sql({name: name for name in COMPONENTS})} AS score FROM ({rows}) ORDER BY i")
    cols, got = store.query(sql)
    for row in got:
        sql_row = dict(zip(cols, row, strict=True))
        s, now = cases[sql_row["i"]], nows[sql_row["i"]]
        r = quality_score(s, required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=TARGET)
        for name, value in r["components"].items():
            assert sql_row[name] == (None if value is None else pytest.approx(value, abs=1e-12)), (name, s)
        assert sql_row["on_time"] == (None if r["evidence"]["on_time_share"] is None
                                      else pytest.approx(r["evidence"]["on_time_share"]))
        if r["score"] is not None:
            assert sql_row["score"] == pytest.approx(r["score"], abs=0.1 + 1e-9), s


def test_bad_field_sql_blames_as_bad_field(store: Store) -> None:
    reasons = [*REASONS, "invalid_ts", "invalid_json", "not_an_object", "empty_message", "duplicate_event_id", "",
               "missing_field:ts", "invalid_type:", "invalid_value:a:b", *(f"{k}:price" for k in BLAMING_KINDS)]
    got = dict(store.rows(f"SELECT reason, {bad_field_sql()} FROM (SELECT arrayJoin({reasons!r}) AS reason)"))
    assert got == {r: bad_field(r) or "" for r in reasons}
