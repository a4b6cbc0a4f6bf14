"""The stocktake: assets, fields, entities, drift and quality from the store.

Assembles the documented `stocktake inventory --json` document from the
queries in clickhouse/queries.py and the pure judgement in processors/.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from stocktake.clickhouse import queries as Q
from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import jsonable
from stocktake.processors.assets import Asset, is_stream
from stocktake.processors.drift import DriftEvent, FieldType, detect_drift
from stocktake.processors.field_types import FieldType as SemanticType
from stocktake.processors.field_types import decide, lexical_similarity
from stocktake.processors.quality import WEIGHTS, quality_score
from stocktake.processors.sensitive import classify_field, mask
from stocktake.services.alerts import list_alerts
from stocktake.services.catalog import read_findings
from stocktake.settings import Settings


def _scope(settings: Settings) -> dict[str, Any]:
    """Query parameters limiting every query to this deployment's topics; the lateness
    bound in the whole seconds the rollups' lag histogram counts."""
    return {"prefix": settings.topic_dot_prefix, "late_s": int(settings.lateness_s)}


def asset_rows(store: Store, settings: Settings) -> list[dict[str, Any]]:
    return Q.rows_as_dicts(store, Q.ASSETS_SQL, _scope(settings))


EXAMPLES = 10   # orphan products and amount mismatches shown


def asset_id(asset: str) -> str:
    """Stable across runs and stores: derived from the name alone."""
    return hashlib.sha1(asset.encode()).hexdigest()[:12]


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


# A field typed as one of these, confidently, is masked like one the value patterns flag.
_SENSITIVE_TYPES = {"email": "email", "phone": "phone", "person_name": "name"}


def field_type(name: str, examples: list[Any]) -> SemanticType:
    """A field's semantic type from its name and sampled values: the rules and the word overlap
    of its name with each type's phrases (processors/field_types.py), cheap enough for every
    read. (The text model's version, models/field_types.py, is not on this path: it needs the
    encoder loaded.) Below the confidence that counts, the type is "unknown"."""
    return decide(name, examples, lexical_similarity(name))


def _example(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def contract_inventory(store: Store, settings: Settings) -> dict[str, dict[str, Any]]:
    """The contract each stream is judged under (as the worker published it), by stream."""
    out: dict[str, dict[str, Any]] = {}
    for r in Q.rows_as_dicts(store, Q.CONTRACTS_SQL, _scope(settings)):
        c = out.setdefault(r["stream"], {"stream": r["stream"], "version": r["version"], "origin": r["origin"],
                                         "schemaless": not r["field"], "fields": [], "rules": {}})
        if not r["field"]:
            continue
        if r["rule"]:
            rule = c["rules"].setdefault(r["rule"], {"name": r["rule"], "severity": r["severity"], "require": []})
            rule["require"].append(r["field"])
        else:
            c["fields"].append({"field": r["field"], "type": r["type"], "required": bool(r["required"]),
                                "severity": r["severity"], "role": r["role"]})
    for c in out.values():
        c["rules"] = list(c["rules"].values())
    return out


def breaches_by_asset(store: Store, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Rejections and warnings per asset and contract version (breach_rollup)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in Q.rows_as_dicts(store, Q.BREACHES_SQL, _scope(settings)):
        out[r.pop("asset")].append(r)
    return out


def _code(breach: dict[str, Any]) -> str:
    return f"{breach['rule']}@{breach['rule_name']}" if breach["rule_name"] else breach["rule"]


def _warned_missing(breaches: list[dict[str, Any]]) -> list[str]:
    """Fields a warn rule found missing on an asset: completeness counts them, seen or not."""
    return sorted({b["field"] for b in breaches if b["severity"] == "warn" and b["rule"].startswith("missing_field:")})


def field_inventory(assets: list[dict[str, Any]], rows: list[dict[str, Any]],
                    contracts: dict[str, dict[str, Any]] | None = None,
                    breaches: dict[str, list[dict[str, Any]]] | None = None,
                    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(fields of every stream, per-asset field presence for completeness) from asset_rows
    and the FIELDS_SQL rows; ``contracts`` flags the fields their stream's contract names,
    ``breaches`` adds warned values to a field's validity."""
    contracts, breaches = contracts or {}, breaches or {}
    spans = {r["asset"]: {"events": r["object_events"]} for r in assets}
    per_asset: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(lambda: {
        "types": {}, "present": 0, "bad": 0, "distinct_approx": 0, "examples": [],
        "first_seen": None, "last_seen": None}))
    for r in rows:
        f = per_asset[r["asset"]][r["field"]]
        f["types"][r["type"]] = int(r["events"])
        if r["type"] != "null":
            f["present"] += int(r["events"])
            f["bad"] += int(r["bad"])
            f["distinct_approx"] += int(r["distinct_approx"])
            f["examples"].extend(_example(x) for x in r["examples"])
        f["first_seen"] = min(filter(None, (f["first_seen"], r["first_seen"])))
        f["last_seen"] = max(filter(None, (f["last_seen"], r["last_seen"])))
    fields = []
    for asset, by_field in per_asset.items():
        if not is_stream(asset):
            continue
        events = int(spans[asset]["events"]) if asset in spans else 0
        named = {f["field"] for f in contracts.get(asset, {}).get("fields", [])}
        warned: dict[str, int] = defaultdict(int)
        for b in breaches.get(asset, []):
            if b["severity"] == "warn" and not b["rule"].startswith("missing_field:"):
                warned[b["field"]] += int(b["events"])
        for name, f in sorted(by_field.items()):
            examples = f["examples"][:5]
            semantic = field_type(name, examples)
            sensitive = classify_field(name, examples) or _SENSITIVE_TYPES.get(semantic.semantic_type)
            bad = min(f["present"], f["bad"] + warned.get(name, 0))
            fields.append({
                "stream": asset, "field": name,
                "contract": name in named,
                "types": f["types"],
                "completeness": round(f["present"] / events, 4) if events else None,
                "validity": round(1 - bad / f["present"], 4) if f["present"] else None,
                "distinct_approx": f["distinct_approx"],
                "semantic_type": semantic.semantic_type, "confidence": semantic.confidence,
                "sensitive": sensitive,
                "examples": [mask(x, sensitive) for x in examples],
                "first_seen": f["first_seen"], "last_seen": f["last_seen"],
            })
    presence = {
        asset: {"events": int(spans[asset]["events"]) if asset in spans else 0,
                "present": {name: f["present"] for name, f in by_field.items()}}
        for asset, by_field in per_asset.items()
    }
    return fields, presence


def schema_drift(store: Store, settings: Settings, assets: list[dict[str, Any]] | None = None,
                 fields: list[dict[str, Any]] | None = None, watermark_ms: int | None = None) -> list[DriftEvent]:
    """processors.drift over the field rollup (the rows are read unless given); ``watermark_ms``:
    the event time every partition has reached (the alerting worker's), where known."""
    assets = asset_rows(store, settings) if assets is None else assets
    fields = Q.rows_as_dicts(store, Q.FIELDS_SQL, _scope(settings)) if fields is None else fields
    observations = []
    for r in fields:
        if not is_stream(r["asset"]) or r["first_ts"] is None or not r["n_valid"]:
            continue
        observations.append(FieldType(r["asset"], r["field"], r["type"], _ms(r["first_ts"]) or 0,
                                      _ms(r["last_ts"]) or 0, int(r["n_valid"])))
    spans = {r["asset"]: (_ms(r["first_ts"]) or 0, _ms(r["last_ts"]) or 0)
             for r in assets if is_stream(r["asset"]) and r["valid"]}
    return detect_drift(observations, spans, grace_ms=int(settings.drift_grace_s * 1000),
                        vanish_after_ms=int(settings.field_vanish_after_s * 1000), watermark_ms=watermark_ms)


def drift_events(drift: list[DriftEvent]) -> list[dict[str, Any]]:
    return [{"stream": e.stream, "field": e.field, "kind": e.kind, "type": e.type,
             "at": dt.datetime.fromtimestamp(e.at_ms / 1000, dt.UTC), "details": e.details}
            for e in drift]


# The entity facts read every product and user of the deployment: their cost grows with the
# entities (not the events). Reused while nothing was stored since, or while younger than this
# many times what computing them took, so that however often the inventory is read they hold
# chDB's one-call-at-a-time store (and the inserts waiting on it) at most ~1/(1 + factor).
ENTITY_REUSE_FACTOR = 10.0


@dataclass
class _EntityFacts:
    stored: int            # events stored for the deployment when computed
    at: float              # monotonic time computed
    cost: float            # seconds it took
    value: tuple[list[dict[str, Any]], dict[str, Any]]


_entity_facts: dict[tuple[str, str, float], _EntityFacts] = {}


def entity_inventory(store: Store, settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(entities, consistency findings per asset) — orphans and amount mismatches; recent
    facts are reused (ENTITY_REUSE_FACTOR)."""
    key = (store.dsn, settings.topic_dot_prefix, settings.amount_tolerance)
    (stored,), = store.rows(Q.STORED_EVENTS_SQL, _scope(settings))
    now = time.monotonic()
    known = _entity_facts.get(key)
    if known and (known.stored == stored or now - known.at < ENTITY_REUSE_FACTOR * known.cost):
        return known.value
    value = _entity_inventory(store, settings)
    _entity_facts[key] = _EntityFacts(int(stored), now, time.monotonic() - now, value)
    return value


def _entity_inventory(store: Store, settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    scope = _scope(settings)
    (users, users_1h, users_1d, as_of, u_first, u_last), = store.rows(Q.ENTITY_USERS_SQL, scope)
    (catalog, seen, p_1h, p_1d, no_price, no_category, no_brand, p_first, p_last, n_orphans), = store.rows(
        Q.ENTITY_PRODUCTS_SQL, scope)
    (orders, orders_1h, orders_1d, o_first, o_last), = store.rows(Q.ENTITY_ORDERS_SQL, scope)
    orphans, orphan_refs = [], {}
    if n_orphans:  # the per-asset references are read for the orphans alone
        orphans = store.rows(Q.ORPHANS_SQL, {**scope, "limit": EXAMPLES})
        orphan_refs = {asset: int(n) for asset, n in store.rows(Q.ORPHAN_REFS_BY_ASSET_SQL, scope)}
    orphan_events = {asset: n for asset, n in orphan_refs.items() if is_stream(asset)}
    checks = {**scope, "tolerance": settings.amount_tolerance, "limit": EXAMPLES}
    by_asset = {asset: (int(n), int(failed)) for asset, n, failed in store.rows(Q.AMOUNT_BY_ASSET_SQL, checks)}
    checked, mismatched = by_asset.get("transaction", (0, 0))
    mismatches = Q.rows_as_dicts(store, Q.AMOUNT_MISMATCHES_SQL, checks) if mismatched else []
    # Entity assets: first/last seen in event time; "active" is relative to the newest event
    # time (as_of), so a replayed history is judged as it happened.
    entities = [
        {"entity": "users", "asset_id": asset_id("entity/users"), "first_event_ts": u_first,
         "last_event_ts": u_last, "distinct": users, "active_1h": users_1h, "active_1d": users_1d},
        {"entity": "products", "asset_id": asset_id("entity/products"), "first_event_ts": p_first,
         "last_event_ts": p_last, "distinct": seen, "catalog": catalog, "active_1h": p_1h, "active_1d": p_1d,
         "orphans": n_orphans, "orphan_events": orphan_events,
         "orphan_examples": [{"product_id": p, "references": n} for p, n, _ in orphans],
         "without_price": no_price, "without_category": no_category, "without_brand": no_brand},
        {"entity": "orders", "asset_id": asset_id("entity/orders"), "first_event_ts": o_first,
         "last_event_ts": o_last, "distinct": orders, "active_1h": orders_1h, "active_1d": orders_1d,
         "amount_checked": checked, "amount_mismatch": mismatched, "amount_mismatch_examples": mismatches},
    ]
    return entities, {"as_of": as_of, "amount_by_asset": by_asset, "orphan_refs": orphan_refs}


def build(store: Store, settings: Settings, now_ms: int | None = None) -> dict[str, Any]:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    rows = asset_rows(store, settings)
    field_rows = Q.rows_as_dicts(store, Q.FIELDS_SQL, _scope(settings))
    contracts = contract_inventory(store, settings)
    breaches = breaches_by_asset(store, settings)
    fields, presence = field_inventory(rows, field_rows, contracts, breaches)
    entities, consistency = entity_inventory(store, settings)
    assets = []
    for r in rows:
        asset = r["asset"]
        stream = Asset.parse(asset).stream
        seen = presence.get(asset, {"events": 0, "present": {}})
        amount_checked, amount_failed = consistency["amount_by_asset"].get(asset, (0, 0))
        last_ms = _ms(r["last_event_ts"])
        summary = {  # the counts processors.quality.quality_score reads
            "events": r["events"], "valid": r["valid"], "duplicates": r["duplicates"],
            "invalid": r["invalid"], "invalid_by_reason": dict(r["invalid_by_reason"]), "late": r["late"],
            "newest_ts_ms": last_ms, "field_events": seen["events"],
            "fields": {name: {"present": n} for name, n in seen["present"].items()},
            "consistency_checked": r["product_refs"] + amount_checked,
            "consistency_failed": consistency["orphan_refs"].get(asset, 0) + amount_failed,
        }
        contract = contracts.get(stream, {})
        required = [f["field"] for f in contract.get("fields", []) if f["required"]]
        found = breaches.get(asset, [])
        quality = quality_score(summary, required_fields=[*required, *_warned_missing(found)], now_ms=now_ms,
                                freshness_target_ms=int(settings.freshness_target_s * 1000),
                                warnings={_code(b): int(b["events"]) for b in found if b["severity"] == "warn"})
        lag = r["lag_ms"] if r["valid"] else [None, None, None]
        assets.append({
            "asset_id": asset_id(asset), "asset": asset, "kind": Asset.parse(asset).kind, "stream": stream,
            "valid": r["valid"], "duplicates": r["duplicates"], "invalid": r["invalid"],
            "invalid_by_reason": dict(r["invalid_by_reason"]),
            "last_event_ts": r["last_event_ts"], "first_seen": r["first_seen"], "last_seen": r["last_seen"],
            "freshness_s": round((now_ms - last_ms) / 1000, 3) if last_ms is not None else None,
            "lag_ms": {"p50": lag[0], "p95": lag[1], "p99": lag[2]}, "late": r["late"],
            "contract_version": contract.get("version"),
            "warnings": sum(int(b["events"]) for b in found if b["severity"] == "warn"),
            "breaches": found,
            "quality": quality,
        })
    return jsonable({
        "generated_at": dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC),
        "as_of_event_ts": consistency["as_of"],
        "quality_weights": WEIGHTS,
        "contracts": list(contracts.values()),
        "assets": assets,
        "fields": fields,
        "entities": entities,
        "drift": drift_events(schema_drift(store, settings, rows, field_rows)),
        "alerts": list_alerts(store, settings, open_only=True),
        "catalog": read_findings(store, settings),
    })
