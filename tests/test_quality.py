"""AssetMetrics is a mergeable value (STYLE.md point 2) and quality_score explains itself."""

from __future__ import annotations

import json
import math
import random
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake.processors.quality import (
    EDGES,
    REL_ERROR,
    WEIGHTS,
    AssetMetrics,
    LagHistogram,
    Observation,
    bad_field,
    quality_score,
)

FIELDS = ("event_id", "user_id", "product_id", "ts", "price", "category_code")
REASONS = ("missing_field:user_id", "invalid_ts", "invalid_value:price", "invalid_type:product_id", "invalid_json")
T0 = 1_570_000_000_000
LATENESS = 60_000

lags = st.one_of(st.integers(-5_000, 5_000), st.integers(0, 10**7), st.integers(0, 4 * 10**9))


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    status = draw(st.sampled_from(("valid", "valid", "duplicate", "invalid")))
    reason = {"valid": "", "duplicate": "duplicate_event_id"}.get(status) or draw(st.sampled_from(REASONS))
    ts = draw(st.none() | st.integers(T0, T0 + 10**7)) if status == "invalid" else T0 + draw(st.integers(0, 10**7))
    present = draw(st.frozensets(st.sampled_from(FIELDS)))
    return Observation(status, reason, ts, (ts or T0) + draw(lags), present,
                       draw(st.sampled_from((None, None, True, False))))


obs_lists = st.lists(observations(), max_size=60)


def run(obs: list[Observation]) -> AssetMetrics:
    return AssetMetrics.empty().update(obs, lateness_ms=LATENESS)


def split(obs: list[Observation], cuts: list[int]) -> list[list[Observation]]:
    points = sorted({min(c, len(obs)) for c in cuts})
    return [obs[a:b] for a, b in zip([0, *points], [*points, len(obs)], strict=True)]


@settings(max_examples=300)
@given(obs_lists, st.lists(st.integers(0, 60), max_size=6), st.randoms(use_true_random=False))
def test_merge_of_parts_equals_one_pass(obs: list[Observation], cuts: list[int], rnd: random.Random) -> None:
    whole = run(obs)
    parts = [run(p) for p in split(obs, cuts)]
    rnd.shuffle(parts)  # order of partitions/minutes does not matter
    merged = reduce(AssetMetrics.merge, parts, AssetMetrics.empty())
    assert merged.summary() == whole.summary()
    assert merged.lag_hist.counts == whole.lag_hist.counts
    assert merged == whole
    json.dumps(whole.summary())  # JSON-able


@given(obs_lists, obs_lists, obs_lists)
def test_merge_commutative_associative_identity(a_obs, b_obs, c_obs) -> None:
    a, b, c = run(a_obs), run(b_obs), run(c_obs)
    before = a.summary()
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(AssetMetrics.empty()) == a == AssetMetrics.empty().merge(a)
    assert a.summary() == before  # merge returns a new value


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
    assert LagHistogram.from_dict(json.loads(json.dumps(h.to_dict()))) == h


def test_histogram_edges_and_layout_check() -> None:
    assert LagHistogram().quantile(0.5) is None
    assert EDGES[-2] < 30 * 86_400_000 <= EDGES[-1]
    with pytest.raises(ValueError):
        LagHistogram.from_dict({"growth": 2.0, "buckets": 10, "counts": {}})


def test_update_counts_and_field_rules() -> None:
    obs = [
        Observation("valid", "", T0, T0 + 1_000, ("event_id", "user_id", "ts")),
        Observation("valid", "", T0 + 5, T0 + 120_000, ("event_id", "user_id", "ts"), consistency=False),
        Observation("duplicate", "duplicate_event_id", T0, T0 + 2_000, ("event_id", "user_id", "ts")),
        Observation("invalid", "missing_field:user_id", T0, T0 + 1_000, ("event_id", "ts")),
        Observation("invalid", "invalid_value:price", T0, T0 + 1_000, ("event_id", "ts")),
        Observation("invalid", "invalid_json", None, T0, ()),
    ]
    s = run(obs).summary()
    assert (s["events"], s["valid"], s["duplicates"], s["invalid"], s["late"]) == (6, 2, 1, 3, 1)
    assert s["newest_ts_ms"] == T0 + 5 and s["lag_ms"]["count"] == 2
    assert s["field_events"] == 4  # the unparseable event carries no fields; the duplicate is not recounted
    assert s["completeness"]["user_id"] == 0.5 and s["completeness"]["price"] == 0
    assert s["validity"] == {"event_id": 1.0, "price": 0.0, "ts": 1.0, "user_id": 1.0}  # missing is not "bad"
    assert (s["consistency_checked"], s["consistency_failed"]) == (1, 1)
    assert bad_field("invalid_ts") == "ts" and bad_field("invalid_type:user_id") == "user_id"
    assert bad_field("missing_field:user_id") is None and bad_field("invalid_json") is None
    with pytest.raises(ValueError):
        run([Observation("weird", "", T0, T0, ())])


def clean(n: int = 100, *, missing: dict[str, int] | None = None) -> list[Observation]:
    missing = missing or {}
    return [Observation("valid", "", T0 + i, T0 + i + 500,
                        frozenset(f for f in FIELDS if i >= missing.get(f, 0)), consistency=True)
            for i in range(n)]


def score(m: AssetMetrics, **kw) -> dict:
    return quality_score(m, required_fields=FIELDS, now_ms=T0 + 200, freshness_target_ms=60_000, **kw)


def test_perfect_asset_scores_100_and_explains_nothing() -> None:
    r = score(run(clean()))
    assert r["score"] == 100.0 and r["explain"] == [] and r["weights"] == WEIGHTS
    assert all(v == 1.0 for v in r["components"].values())


def test_completeness_drop_lowers_score_and_is_named_first() -> None:
    r = score(run(clean(missing={"category_code": 33})))
    assert r["score"] < 100 and r["components"]["completeness"] == pytest.approx(1 - 0.33 / 6)
    assert r["explain"][0].startswith("completeness 0.94: category_code present on 67% of events")


def test_invalid_share_lowers_score_and_is_named_first() -> None:
    base = run(clean(91))
    bad = [Observation("invalid", "missing_field:user_id", T0, T0 + 500, frozenset(FIELDS) - {"user_id"})] * 6
    bad += [Observation("invalid", "invalid_ts", None, T0 + 500, frozenset(FIELDS))] * 3
    r = score(run(clean(91) + bad))
    assert r["score"] < score(base)["score"]
    assert r["explain"][0].startswith("validity 0.91: 9% of events rejected (missing_field:user_id 6%, invalid_ts 3%)")


@settings(max_examples=200)
@given(obs_lists, st.integers(1, 20), st.integers(T0, T0 + 10**8), st.integers(1, 10**7))
def test_score_bounds_and_more_invalid_never_helps(obs, k, now, target) -> None:
    m = run(obs)
    r = quality_score(m, required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=target)
    comps = [v for v in r["components"].values() if v is not None]
    assert all(0 <= v <= 1 for v in comps)
    assert (r["score"] is None) == (not comps)
    if r["score"] is not None:
        assert 0 <= r["score"] <= 100
        worse = run(obs + [Observation("invalid", "invalid_json", None, now, ())] * k)
        r2 = quality_score(worse, required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=target)
        assert r2["score"] <= r["score"]
        assert r2["components"]["validity"] < (r["components"]["validity"] or 1.0) or r2["components"]["validity"] == 0
    # the summary dict gives the same answer as the metrics value
    assert quality_score(m.summary(), required_fields=FIELDS[:3], now_ms=now, freshness_target_ms=target) == r


def test_weights_redistribute_when_a_component_has_no_data() -> None:
    obs = [o._replace(consistency=None) for o in clean()]
    obs[:10] = [o._replace(status="duplicate", reason="duplicate_event_id") for o in obs[:10]]
    r = score(run(obs))
    assert r["components"]["consistency"] is None
    eff = r["evidence"]["effective_weights"]
    assert set(eff) == set(WEIGHTS) - {"consistency"} and sum(eff.values()) == pytest.approx(1)
    assert r["score"] == round(100 * (1 - eff["uniqueness"] * 0.1), 1)
    assert any(e.startswith("consistency: no data") for e in r["explain"])
    assert r["explain"][0].startswith("uniqueness 0.90")
    empty = score(AssetMetrics.empty())
    assert empty["score"] is None and all(v is None for v in empty["components"].values())


def test_timeliness_freshness_and_late_share() -> None:
    target = 60_000
    m = run([o._replace(ingest_ms=o.ts_ms + (120_000 if i < 20 else 10)) for i, o in enumerate(clean())])
    r = quality_score(m, required_fields=FIELDS, now_ms=T0 + 99 + 2 * target, freshness_target_ms=target)
    ev = r["evidence"]
    assert ev["freshness"] == pytest.approx(1 - math.log10(2)) and ev["on_time_share"] == 0.8
    assert r["components"]["timeliness"] == pytest.approx(0.8 * (1 - math.log10(2)))
    assert "newest event 2 min old (target 1 min); 20% of valid events arrived late (20 events); -" in r["explain"][0]
    stale = quality_score(m, required_fields=FIELDS, now_ms=T0 + 20 * target, freshness_target_ms=target)
    assert stale["evidence"]["freshness"] == 0.0
