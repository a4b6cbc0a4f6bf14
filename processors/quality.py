"""Data quality: an explainable 0-100 score per asset, and a log-bucket histogram.

The score is declared once, as data: COMPONENTS (each a share of an asset's counts), the
freshness curve and the rule for which field a rejection blames. quality_score evaluates it
for the inventory; the *_sql functions write the same declarations as ClickHouse expressions
for the dashboards (grafana/sql.py) and the field queries (clickhouse/queries.py), so a rule
changes in one place. tests/test_quality.py checks that both give the same numbers.

LagHistogram: the log-bucket histogram of the gap detectors' arrival cadence.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

GROWTH = 1.25
MAX_LAG_MS = 30 * 24 * 3600 * 1000
# Shared by every instance, so merging is adding counts. Bucket 0 holds lags < 1 ms (lags are
# integer ms, negative ones - producer clocks ahead - are clamped to 0); bucket i in 1..n-1 holds
# [EDGES[i-1], EDGES[i]); bucket n (overflow) holds >= EDGES[-1] (the first power >= 30 days).
EDGES: tuple[float, ...] = tuple(GROWTH**i for i in range(math.ceil(math.log(MAX_LAG_MS, GROWTH)) + 1))
# A log bucket reports its geometric midpoint, which is within this relative error of any value in it.
REL_ERROR = math.sqrt(GROWTH) - 1  # ~0.118


class LagHistogram:
    """A histogram of durations (ms) over fixed log-spaced buckets: the gap detectors keep the
    cadence between arrivals in it (processors/gaps.py).

    quantile(q) is nearest-rank: the bucket holding the k-th smallest lag, k = max(1, ceil(q*n)),
    reported as 0 for bucket 0, the geometric midpoint of a log bucket (within REL_ERROR ~11.8%
    of the exact percentile), or EDGES[-1] (~30 days, a lower bound) for the overflow bucket.
    """

    __slots__ = ("counts",)

    def __init__(self, counts: Sequence[int] | None = None) -> None:
        self.counts = list(counts) if counts is not None else [0] * (len(EDGES) + 1)
        if len(self.counts) != len(EDGES) + 1:
            raise ValueError("bucket count does not match this histogram layout")

    def add(self, ms: float, n: int = 1) -> None:
        self.counts[bisect_right(EDGES, ms) if ms >= 1 else 0] += n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        n = self.count
        if n == 0:
            return None
        rank, seen = max(1, math.ceil(q * n)), 0
        for b, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                if b == 0:
                    return 0.0
                return EDGES[-1] if b == len(EDGES) else math.sqrt(EDGES[b - 1] * EDGES[b])
        raise AssertionError("unreachable")

    def __repr__(self) -> str:
        return f"LagHistogram({ {i: c for i, c in enumerate(self.counts) if c} })"


# ---------------------------------------------------------------- which field a rejection blames

# A rejection blames a *present* value: invalid_ts blames ts, "<kind>:<field>" of these kinds blames
# <field>. missing_field:X blames none: an absent field costs completeness, not validity.
BLAMED_FIELD = {"invalid_ts": "ts"}
BLAMING_KINDS = ("invalid_type", "invalid_value")


def bad_field(reason: str) -> str | None:
    if reason in BLAMED_FIELD:
        return BLAMED_FIELD[reason]
    kind, _, name = reason.partition(":")
    return name if name and kind in BLAMING_KINDS else None


def bad_field_sql(reason: str = "reason") -> str:
    """bad_field over the column `reason`, as ClickHouse SQL ('' where it blames none)."""
    fixed = "".join(f"{reason} = '{code}', '{name}', " for code, name in BLAMED_FIELD.items())
    named = " OR ".join(f"startsWith({reason}, '{kind}:')" for kind in BLAMING_KINDS)
    return f"multiIf({fixed}{named}, substring({reason}, position({reason}, ':') + 1), '')"


# ---------------------------------------------------------------- the quality score

class Component(NamedTuple):
    """1 - lost / out_of, each the sum of the named counts of an asset; no data when out_of is 0.
    A fresh component is also scaled by the freshness of the asset's newest event (either factor
    alone when the other has no data)."""

    name: str
    weight: float
    lost: tuple[str, ...]
    out_of: tuple[str, ...]
    fresh: bool = False


COMPONENTS = {c.name: c for c in (
    # the mean present share over the stream's required fields and every observed field
    Component("completeness", 0.25, ("missing_values",), ("field_values",)),
    Component("validity", 0.30, ("invalid",), ("events",)),
    Component("uniqueness", 0.15, ("duplicates",), ("valid", "duplicates")),
    Component("timeliness", 0.15, ("late",), ("valid",), fresh=True),
    Component("consistency", 0.15, ("consistency_failed",), ("consistency_checked",)),
)}
WEIGHTS = {name: c.weight for name, c in COMPONENTS.items()}
_NO_DATA = {"completeness": "no event carried fields", "validity": "no events",
            "uniqueness": "no accepted events", "timeliness": "no valid event with an event time",
            "consistency": "nothing was checked"}


def freshness(age: float | None, target: float) -> float | None:
    """1 while age <= target, then 1 - log10(age/target) floored at 0 (0.70 at 2x target, 0.30 at
    5x, 0 at 10x); a future newest event counts as fresh. None: no event time."""
    if age is None:
        return None
    return 1.0 if age <= target else max(0.0, 1 - math.log10(age / target))


def _share(c: Component, counts: Mapping[str, int]) -> float | None:
    total = sum(counts[k] for k in c.out_of)
    return 1 - sum(counts[k] for k in c.lost) / total if total else None


def _value(c: Component, counts: Mapping[str, int], fresh: float | None) -> float | None:
    share = _share(c, counts)
    if not c.fresh or fresh is None:
        return share
    return fresh * (1.0 if share is None else share)


def quality_score(summary: Mapping[str, Any], *, required_fields: Sequence[str], now_ms: int,
                  freshness_target_ms: int, warnings: Mapping[str, int] | None = None) -> dict[str, Any]:
    """0-100 score = 100 * sum(w_c * c) / sum(w_c) over the COMPONENTS c with data (each 0..1);
    a component without data is None and its weight is shared by the rest; with no data at all
    the score is None.

    summary holds an asset's counts: events, valid, duplicates, invalid, invalid_by_reason, late
    (valid events that arrived late), newest_ts_ms (newest valid event time, None if none),
    field_events (events that carried fields), fields ({name: {"present": n}}),
    consistency_checked and consistency_failed. explain lists each component that costs points,
    biggest loss first, then the ones without data; losses holds the same as data.

    warnings: breaches of the contract's `warn` checks by code (missing_field:product_id@rule,
    invalid_value:price). The events stay valid, so validity does not count them; a field a
    warn rule found missing is among required_fields (the caller adds it), so completeness
    does, and explain says which rule. Other warnings get an explain line of their own.
    """
    if freshness_target_ms <= 0:
        raise ValueError("freshness_target_ms must be > 0")
    s = summary
    events, valid, dups, invalid, late = s["events"], s["valid"], s["duplicates"], s["invalid"], s["late"]
    fe = s["field_events"]
    names = {*required_fields, *s["fields"]}
    present = {f: s["fields"].get(f, {}).get("present", 0) for f in names}
    counts = {"events": events, "valid": valid, "duplicates": dups, "invalid": invalid, "late": late,
              "field_values": len(names) * fe, "missing_values": sum(fe - n for n in present.values()),
              "consistency_checked": s["consistency_checked"], "consistency_failed": s["consistency_failed"]}
    newest = s["newest_ts_ms"]
    age = None if newest is None else now_ms - newest
    fresh = freshness(age, freshness_target_ms)
    on_time = _share(COMPONENTS["timeliness"], counts)
    comp = {name: _value(c, counts, fresh) for name, c in COMPONENTS.items()}

    why: dict[str, str] = {}
    shares = {f: n / fe for f, n in present.items()} if fe else {}
    if shares:
        worst = sorted((v, f) for f, v in shares.items() if v < 1)[:3]
        why["completeness"] = ", ".join(f"{f} present on {_pct(v)} of events" for v, f in worst)
    warnings = warnings or {}
    missing = {c: n for c, n in warnings.items() if c.startswith("missing_field:")}
    if missing and events and "completeness" in why:
        why["completeness"] += "; warn rules: " + ", ".join(
            f"{c} on {_pct(n / events)} of events" for c, n in sorted(missing.items(), key=lambda kv: -kv[1])[:3])
    if events:
        top = sorted(s["invalid_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        why["validity"] = (f"{_pct(invalid / events)} of events rejected ("
                           + ", ".join(f"{r} {_pct(n / events)}" for r, n in top) + ")")
    if valid + dups:
        why["uniqueness"] = f"{_pct(dups / (valid + dups))} of accepted events were duplicates ({dups})"
    parts = []
    if fresh is not None and fresh < 1:
        parts.append(f"newest event {_dur(age or 0)} old (target {_dur(freshness_target_ms)})")
    if late:
        parts.append(f"{_pct(late / valid)} of valid events arrived late ({late} events)")
    why["timeliness"] = "; ".join(parts)
    checked, failed = s["consistency_checked"], s["consistency_failed"]
    if checked:
        why["consistency"] = f"{_pct(failed / checked)} of checked events failed consistency ({failed} of {checked})"

    active = {c: WEIGHTS[c] for c, v in comp.items() if v is not None}
    total = sum(active.values())
    eff = {c: w / total for c, w in active.items()} if total else {}
    lost = {c: 100 * w * (1 - (comp[c] or 0.0)) for c, w in eff.items()}
    score = None if not total else round(min(100.0, max(0.0, 100 - sum(lost.values()))), 1)
    losses = [{"component": c, "points": lost[c], "text": f"{c} {_num(comp[c] or 0.0)}: {why[c]}"}
              for c in sorted(lost, key=lambda c: -lost[c]) if (comp[c] or 0.0) < 1]
    explain = [f"{loss['text']}; -{loss['points']:.1f} points" for loss in losses]
    explain += [f"{c}: no data ({_NO_DATA[c]}); its weight {WEIGHTS[c]:g} is shared by the others"
                for c, v in comp.items() if v is None]
    values = {c: n for c, n in warnings.items() if c not in missing}
    if values and events:
        explain.append("warnings (the events stay valid): " + ", ".join(
            f"{c} on {_pct(n / events)} of events" for c, n in sorted(values.items(), key=lambda kv: -kv[1])[:3]))
    evidence = {"events": events, "valid": valid, "invalid": invalid, "duplicates": dups, "late": late,
                "invalid_by_reason": s["invalid_by_reason"], "field_events": fe, "field_present_share": shares,
                "newest_ts_ms": newest, "now_ms": now_ms, "age_ms": age, "freshness_target_ms": freshness_target_ms,
                "freshness": fresh, "on_time_share": on_time, "consistency_checked": checked,
                "consistency_failed": failed, "effective_weights": eff, "points_lost": lost,
                "warnings": dict(warnings)}
    return {"score": score, "components": comp, "weights": dict(WEIGHTS), "explain": explain, "losses": losses,
            "evidence": evidence}


# ---------------------------------------------------------------- the same score in ClickHouse SQL

def freshness_sql(age: str, target: str) -> str:
    return f"if({age} IS NULL, NULL, if({age} <= {target}, 1, greatest(0, 1 - log10({age} / {target}))))"


def component_sql(c: Component, counts: Mapping[str, str], fresh: str | None = None) -> str:
    """The component as SQL: counts maps each count it names to a SQL expression; fresh names a
    column holding freshness_sql (left out: the share alone, e.g. timeliness's on-time share)."""
    def total(names: tuple[str, ...]) -> str:
        return counts[names[0]] if len(names) == 1 else "(" + " + ".join(counts[k] for k in names) + ")"

    share = f"if({total(c.out_of)} = 0, NULL, 1 - {total(c.lost)} / {total(c.out_of)})"
    if not c.fresh or fresh is None:
        return share
    return f"if({fresh} IS NULL, {share}, {fresh} * ifNull({share}, 1))"


def score_sql(values: Mapping[str, str]) -> str:
    """The score as SQL over each component's value (SQL; NULL when it has no data)."""
    num = " + ".join(f"{WEIGHTS[c]} * ifNull({e}, 0)" for c, e in values.items())
    den = " + ".join(f"{WEIGHTS[c]} * ({e} IS NOT NULL)" for c, e in values.items())
    return f"round(least(100, greatest(0, 100 * ({num}) / ({den}))), 1)"


def _pct(x: float) -> str:
    v = 100 * x
    text = f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.1f}".removesuffix(".0") if v >= 1 else f"{v:.2g}"
    return text + "%"


def _num(v: float) -> str:
    # Never print a component that costs points as "1.00".
    text = f"{v:.2f}"
    return f"{math.floor(v * 10000) / 10000:.4f}" if text == "1.00" and v < 1 else text


def _dur(ms: float) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if abs(ms) >= size:
            return f"{ms / size:.1f} {unit}".replace(".0 ", " ")
    return f"{ms:.0f} ms"
