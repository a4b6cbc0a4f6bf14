"""Per-asset data-quality metrics as mergeable values, and an explainable 0-100 score.

whylogs style (STYLE.md point 2): AssetMetrics has an empty value, an update over a batch of
judged events, an associative and commutative merge, and a JSON summary, so per-partition or
per-minute values roll up into any window exactly. Pure: no Kafka, no ClickHouse.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    """Ingest-lag histogram (ms) over fixed log-spaced buckets; mergeable, storable.

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

    def merge(self, other: LagHistogram) -> LagHistogram:
        return LagHistogram([a + b for a, b in zip(self.counts, other.counts, strict=True)])

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

    def to_dict(self) -> dict[str, Any]:
        # Sparse and self-describing: from_dict refuses a layout it was not written with.
        return {"growth": GROWTH, "buckets": len(self.counts),
                "counts": {str(i): c for i, c in enumerate(self.counts) if c}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LagHistogram:
        if d.get("growth") != GROWTH or d.get("buckets") != len(EDGES) + 1:
            raise ValueError("histogram was written with another bucket layout")
        h = cls()
        for i, c in d.get("counts", {}).items():
            h.counts[int(i)] = int(c)
        return h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LagHistogram) and self.counts == other.counts

    def __repr__(self) -> str:
        return f"LagHistogram({self.to_dict()['counts']})"


class Observation(NamedTuple):
    """One judged event, as update() consumes it."""

    status: str  # "valid" | "duplicate" | "invalid"
    reason: str  # "" for valid; e.g. "missing_field:user_id", "invalid_ts", "duplicate_event_id"
    ts_ms: int | None  # event time (None if unreadable)
    ingest_ms: int
    present_fields: frozenset[str] | tuple[str, ...]  # contract fields present and non-null
    consistency: bool | None = None  # None: not checked; True ok; False failed


def bad_field(reason: str) -> str | None:
    """The field a rejection blames on a *present* value. missing_field:X is not one: an absent
    field costs completeness, and counting it here would put bad > checked."""
    if reason == "invalid_ts":
        return "ts"
    kind, _, name = reason.partition(":")
    return name if name and kind in ("invalid_type", "invalid_value") else None


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


@dataclass
class AssetMetrics:
    """Mergeable: empty value, update, merge, summary. One per asset and time window;
    merging per-partition or per-minute values equals one pass over all events.

    Duplicates count in events/duplicates only (a copy would count its fields and lag twice).
    Lag, late and newest_ts_ms cover valid events with an event time; fields cover valid and
    invalid events. field_events counts those that carry at least one field (an unparseable
    event has none: it costs validity, not completeness) - the completeness denominator.
    """

    events: int = 0
    valid: int = 0
    duplicates: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    late: int = 0
    lag_hist: LagHistogram = field(default_factory=LagHistogram)
    newest_ts_ms: int | None = None
    field_events: int = 0
    field_present: dict[str, int] = field(default_factory=dict)
    field_checked: dict[str, int] = field(default_factory=dict)  # present, or blamed by a rejection
    field_bad: dict[str, int] = field(default_factory=dict)
    consistency_checked: int = 0
    consistency_failed: int = 0

    @classmethod
    def empty(cls) -> AssetMetrics:
        return cls()

    def update(self, events: Iterable[Observation], *, lateness_ms: int) -> AssetMetrics:
        hist, reasons = self.lag_hist, self.invalid_by_reason
        present, checked, bad = self.field_present, self.field_checked, self.field_bad
        for ob in events:
            status = ob.status
            if status == "duplicate":
                self.events += 1
                self.duplicates += 1
                continue
            if status == "valid":
                self.valid += 1
                ts = ob.ts_ms
                if ts is not None:
                    lag = ob.ingest_ms - ts
                    hist.add(lag)
                    self.late += lag > lateness_ms
                    if self.newest_ts_ms is None or ts > self.newest_ts_ms:
                        self.newest_ts_ms = ts
            elif status == "invalid":
                reason = ob.reason or "unknown"
                reasons[reason] = reasons.get(reason, 0) + 1
                blamed = bad_field(reason)
                if blamed is not None:
                    bad[blamed] = bad.get(blamed, 0) + 1
                    if blamed not in ob.present_fields:  # keep bad <= checked
                        checked[blamed] = checked.get(blamed, 0) + 1
            else:
                raise ValueError(f"unknown status {status!r}")
            self.events += 1
            if ob.present_fields:
                self.field_events += 1
                for f in ob.present_fields:
                    present[f] = present.get(f, 0) + 1
                    checked[f] = checked.get(f, 0) + 1
            if ob.consistency is not None:
                self.consistency_checked += 1
                self.consistency_failed += not ob.consistency
        return self

    def merge(self, other: AssetMetrics) -> AssetMetrics:
        newest = [t for t in (self.newest_ts_ms, other.newest_ts_ms) if t is not None]
        return AssetMetrics(
            events=self.events + other.events,
            valid=self.valid + other.valid,
            duplicates=self.duplicates + other.duplicates,
            invalid_by_reason=_add(self.invalid_by_reason, other.invalid_by_reason),
            late=self.late + other.late,
            lag_hist=self.lag_hist.merge(other.lag_hist),
            newest_ts_ms=max(newest) if newest else None,
            field_events=self.field_events + other.field_events,
            field_present=_add(self.field_present, other.field_present),
            field_checked=_add(self.field_checked, other.field_checked),
            field_bad=_add(self.field_bad, other.field_bad),
            consistency_checked=self.consistency_checked + other.consistency_checked,
            consistency_failed=self.consistency_failed + other.consistency_failed,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able. completeness[f] = present/field_events; validity[f] = 1 - bad/checked.
        lag_ms quantiles are nearest-rank from the histogram, within REL_ERROR (~11.8%)."""
        h, fe = self.lag_hist, self.field_events
        names = sorted(self.field_present.keys() | self.field_checked.keys())
        present, checked, bad = self.field_present, self.field_checked, self.field_bad
        return {
            "events": self.events, "valid": self.valid, "duplicates": self.duplicates,
            "invalid": sum(self.invalid_by_reason.values()),
            "invalid_by_reason": dict(sorted(self.invalid_by_reason.items())),
            "late": self.late, "newest_ts_ms": self.newest_ts_ms,
            "lag_ms": {"count": h.count, "p50": h.quantile(0.5), "p95": h.quantile(0.95),
                       "p99": h.quantile(0.99), "rel_error": REL_ERROR},
            "field_events": fe,
            "fields": {f: {"present": present.get(f, 0), "checked": checked.get(f, 0), "bad": bad.get(f, 0)}
                       for f in names},
            "completeness": {f: present.get(f, 0) / fe if fe else None for f in names},
            "validity": {f: 1 - bad.get(f, 0) / checked[f] for f in names if checked.get(f)},
            "consistency_checked": self.consistency_checked,
            "consistency_failed": self.consistency_failed,
        }


WEIGHTS = {"completeness": 0.25, "validity": 0.30, "uniqueness": 0.15, "timeliness": 0.15, "consistency": 0.15}
_NO_DATA = {"completeness": "no event carried fields", "validity": "no events",
            "uniqueness": "no accepted events", "timeliness": "no valid event with an event time",
            "consistency": "nothing was checked"}


def quality_score(metrics: AssetMetrics | Mapping[str, Any], *, required_fields: Sequence[str], now_ms: int,
                  freshness_target_ms: int, weights: Mapping[str, float] = WEIGHTS) -> dict[str, Any]:
    """0-100 score = 100 * sum(w_c * c) / sum(w_c) over components c with data (each 0..1):

    completeness: mean over required_fields + every observed field of present/field_events
                  (a required field never seen counts 0);
    validity:     1 - invalid/events;
    uniqueness:   1 - duplicates/(valid + duplicates);
    timeliness:   freshness * (1 - late/valid), either factor alone when the other has no data;
                  freshness = 1 while now - newest_ts <= target, else 1 - log10(age/target),
                  floored at 0 (0.70 at 2x target, 0.30 at 5x, 0 at 10x); future ts counts fresh;
    consistency:  1 - consistency_failed/consistency_checked.
    A component with no data (e.g. nothing consistency-checked) is None and its weight is shared
    by the rest; with no data at all the score is None. explain lists each component that costs
    points, biggest loss first, then the ones without data.
    """
    if freshness_target_ms <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("freshness_target_ms must be > 0 and weights >= 0")
    s = metrics.summary() if isinstance(metrics, AssetMetrics) else metrics
    events, valid, dups, invalid, late = s["events"], s["valid"], s["duplicates"], s["invalid"], s["late"]
    comp: dict[str, float | None] = dict.fromkeys(WEIGHTS)
    why: dict[str, str] = {}

    fe = s["field_events"]
    shares = {f: s["fields"].get(f, {}).get("present", 0) / fe for f in {*required_fields, *s["fields"]}} if fe else {}
    if shares:
        comp["completeness"] = sum(shares.values()) / len(shares)
        worst = sorted((v, f) for f, v in shares.items() if v < 1)[:3]
        why["completeness"] = ", ".join(f"{f} present on {_pct(v)} of events" for v, f in worst)
    if events:
        comp["validity"] = 1 - invalid / events
        top = sorted(s["invalid_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        why["validity"] = (f"{_pct(invalid / events)} of events rejected ("
                           + ", ".join(f"{r} {_pct(n / events)}" for r, n in top) + ")")
    if valid + dups:
        comp["uniqueness"] = 1 - dups / (valid + dups)
        why["uniqueness"] = f"{_pct(dups / (valid + dups))} of accepted events were duplicates ({dups})"
    newest = s["newest_ts_ms"]
    age = None if newest is None else now_ms - newest
    fresh = None if age is None else (1.0 if age <= freshness_target_ms
                                      else max(0.0, 1 - math.log10(age / freshness_target_ms)))
    on_time = 1 - late / valid if valid else None
    if fresh is not None or on_time is not None:
        comp["timeliness"] = (1.0 if fresh is None else fresh) * (1.0 if on_time is None else on_time)
        parts = []
        if fresh is not None and fresh < 1:
            parts.append(f"newest event {_dur(age or 0)} old (target {_dur(freshness_target_ms)})")
        if late:
            parts.append(f"{_pct(late / valid)} of valid events arrived late ({late} events)")
        why["timeliness"] = "; ".join(parts)
    checked, failed = s["consistency_checked"], s["consistency_failed"]
    if checked:
        comp["consistency"] = 1 - failed / checked
        why["consistency"] = f"{_pct(failed / checked)} of checked events failed consistency ({failed} of {checked})"

    active = {c: weights.get(c, 0.0) for c, v in comp.items() if v is not None}
    total = sum(active.values())
    eff = {c: w / total for c, w in active.items()} if total else {}
    lost = {c: 100 * w * (1 - (comp[c] or 0.0)) for c, w in eff.items()}
    score = None if not total else round(min(100.0, max(0.0, 100 - sum(lost.values()))), 1)
    explain = [f"{c} {_num(comp[c] or 0.0)}: {why[c]}; -{lost[c]:.1f} points"
               for c in sorted(lost, key=lambda c: -lost[c]) if (comp[c] or 0.0) < 1]
    explain += [f"{c}: no data ({_NO_DATA[c]}); its weight {weights.get(c, 0.0):g} is shared by the others"
                for c, v in comp.items() if v is None]
    evidence = {"events": events, "valid": valid, "invalid": invalid, "duplicates": dups, "late": late,
                "invalid_by_reason": s["invalid_by_reason"], "field_events": fe, "field_present_share": shares,
                "newest_ts_ms": newest, "now_ms": now_ms, "age_ms": age, "freshness_target_ms": freshness_target_ms,
                "freshness": fresh, "on_time_share": on_time, "consistency_checked": checked,
                "consistency_failed": failed, "effective_weights": eff, "points_lost": lost}
    return {"score": score, "components": comp, "weights": dict(weights), "explain": explain, "evidence": evidence}


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
