"""Inventory queries. Every query takes ``{prefix:String}`` (the deployment's topic
prefix, e.g. 'stocktake.') and reads the rollups of migration 008, which ClickHouse keeps
current as events are stored: no query here parses a payload or reads ``ingest_log``, so
their cost follows the number of assets, fields and entities, not of events.

Rollups are AggregatingMergeTree tables read without FINAL: every query merges the rows
of a key itself (sum of the sums, min of the mins, -Merge of the states).
"""

from __future__ import annotations

from typing import Any

from stocktake.clickhouse.store import Store
from stocktake.processors.contract_spec import shipped

OURS = "startsWith(topic, {prefix:String})"


def _latest_contracts(prefix: str) -> str:
    """contract_fields rows of the contract each stream is judged under now: the version the
    worker published last (migration 012)."""
    return (f"prefix = {prefix} AND (stream, version) IN (SELECT stream, argMax(version, published_at) "
            f"FROM contract_fields WHERE prefix = {prefix} GROUP BY stream)")


def contract_fields_sql(prefix: str, stream: str = "stream") -> str:
    """The fields the contract in force of ``stream`` (a column in scope) names, as SQL."""
    return ("(SELECT CAST((groupArray(s), groupArray(fs)), 'Map(String, Array(String))') FROM ("
            "SELECT stream AS s, groupUniqArrayIf(field, field != '' AND rule = '') AS fs "
            f"FROM contract_fields WHERE {_latest_contracts(prefix)} GROUP BY stream))[{stream}]")


def expected_fields_sql(prefix: str, stream: str = "stream", asset: str = "asset") -> str:
    """The fields an asset's completeness counts besides the ones observed on it, as SQL: the
    required fields of its stream's contract, and the fields a `warn` rule found missing on
    the asset (product_id on behaviour/event_type=view). ``prefix`` is the SQL of the
    deployment's prefix ('stocktake.'); ``stream`` and ``asset`` name the columns in scope."""
    required = ("(SELECT CAST((groupArray(s), groupArray(fs)), 'Map(String, Array(String))') FROM ("
                "SELECT stream AS s, groupUniqArrayIf(field, required = 1 AND rule = '') AS fs "
                f"FROM contract_fields WHERE {_latest_contracts(prefix)} GROUP BY stream))")
    warned = ("(SELECT CAST((groupArray(a), groupArray(fs)), 'Map(String, Array(String))') FROM ("
              "SELECT asset AS a, groupUniqArray(toString(field)) AS fs FROM breach_rollup "
              f"WHERE startsWith(topic, {prefix}) AND severity = 'warn' AND startsWith(rule, 'missing_field:') "
              "GROUP BY asset))")
    return f"arrayConcat({required}[{stream}], {warned}[{asset}])"


# The contracts in force: one row per field (rule '') and per field a rule requires.
CONTRACTS_SQL = f"""
SELECT stream, version, field, rule, any(type) AS type, max(required) AS required,
       any(severity) AS severity, any(role) AS role, min(position) AS position, any(origin) AS origin
FROM contract_fields
WHERE {_latest_contracts("{prefix:String}")}
GROUP BY stream, version, field, rule
ORDER BY stream, rule != '', position, field
"""

# Breaches per asset and contract version: rejections (severity reject) and warnings.
BREACHES_SQL = f"""
SELECT asset, version, severity, rule, rule_name, field, sum(n) AS events,
       min(ts_min) AS first_ts, max(ts_max) AS last_ts
FROM breach_rollup
WHERE {OURS}
GROUP BY asset, version, severity, rule, rule_name, field
ORDER BY asset, version, severity, events DESC, rule, rule_name
"""


def late_sql(lag_s: str = "lag_s", late_s: str = "{late_s:UInt32}") -> str:
    """Events that arrived more than ``late_s`` whole seconds after their event time, from
    the lag histogram (migration 008: bucket k holds lags in (1000k, 1000(k+1)] ms)."""
    return f"arraySum((k, v) -> if(k >= {late_s}, v, 0), mapKeys({lag_s}), mapValues({lag_s}))"


# Per asset: counts, timeliness, product references. Lag is ingest time minus event time.
ASSETS_SQL = f"""
SELECT asset,
       sum(n) AS events,
       sumIf(n, status = 'valid') AS valid,
       sumIf(n, status = 'duplicate') AS duplicates,
       sumIf(n, status = 'invalid') AS invalid,
       sumMapIf(map(reason, n), status = 'invalid') AS invalid_by_reason,
       if(valid = 0, NULL, maxIf(ts_max, status = 'valid')) AS last_event_ts,
       min(ingest_min) AS first_seen, max(ingest_max) AS last_seen,
       quantilesTDigestMergeIf(0.5, 0.95, 0.99)(lag, status = 'valid') AS lag_ms,
       {late_sql("sumMapIf(lag_s, status = 'valid')")} AS late,
       sumIf(n_refs, status = 'valid') AS product_refs,
       -- non-duplicate JSON objects: the population of the field profiles
       sumIf(n_objects, status != 'duplicate') AS object_events,
       minIf(ts_min, status = 'valid') AS first_ts, maxIf(ts_max, status = 'valid') AS last_ts
FROM asset_rollup
WHERE {OURS}
GROUP BY asset
ORDER BY asset
"""

# Events stored for the deployment (changes with every insert; a few rows).
STORED_EVENTS_SQL = f"SELECT sum(n) FROM partition_rollup WHERE {OURS}"

# Per asset, field and value type: presence, blamed values, clocks (first_ts/last_ts and
# n_valid from valid events only: a rejected ts was replaced by ingest time).
FIELDS_SQL = f"""
SELECT asset, field, type, sum(n) AS events,
       uniqCombinedMerge(distinct_values) AS distinct_approx, groupUniqArrayMerge(5)(example_values) AS examples,
       sum(n_bad) AS bad, min(ingest_min) AS first_seen, max(ingest_max) AS last_seen,
       minIf(ts_min, status = 'valid') AS first_ts, maxIf(ts_max, status = 'valid') AS last_ts,
       sumIf(n, status = 'valid') AS n_valid
FROM field_rollup
WHERE {OURS}
GROUP BY asset, field, type
ORDER BY asset, field, type
"""

# Newest valid event time of the deployment: "active" entities are relative to it.
_AS_OF = f"(SELECT maxIf(ts_max, status = 'valid') FROM asset_rollup WHERE {OURS} AND asset = stream)"

ENTITY_USERS_SQL = f"""
WITH {_AS_OF} AS as_of
SELECT count(), countIf(last >= as_of - INTERVAL 1 HOUR), countIf(last >= as_of - INTERVAL 1 DAY),
       as_of, min(first), max(last)
FROM (SELECT user_id, min(ts_min) AS first, max(ts_max) AS last FROM user_rollup
      WHERE {OURS} GROUP BY user_id)
"""

ENTITY_ORDERS_SQL = f"""
WITH {_AS_OF} AS as_of
SELECT count(), countIf(last >= as_of - INTERVAL 1 HOUR), countIf(last >= as_of - INTERVAL 1 DAY),
       min(first), max(last)
FROM (SELECT order_id, min(ts_min) AS first, max(ts_max) AS last FROM order_rollup
      WHERE {OURS} GROUP BY order_id)
"""

# One row per product: whether the catalog ever named it, what its newest catalog event said
# (bit 0: an upsert; 1, 2, 3: price, category, brand present), references from the other
# streams. Simple columns only: this reads every product.
PRODUCTS = f"""
SELECT product_id, min(ts_min) AS first, max(ts_max) AS last, sum(n_catalog) > 0 AS announced,
       max(catalog_last).2 AS latest, sum(n_refs) AS refs, max(ref_ts_max) AS last_ref
FROM product_rollup
WHERE {OURS}
GROUP BY product_id
"""

ENTITY_PRODUCTS_SQL = f"""
WITH {_AS_OF} AS as_of
SELECT countIf(announced AND bitTest(latest, 0)) AS catalog,
       count() AS distinct_seen,
       countIf(last_ref >= as_of - INTERVAL 1 HOUR) AS active_1h,
       countIf(last_ref >= as_of - INTERVAL 1 DAY) AS active_1d,
       countIf(announced AND bitTest(latest, 0) AND NOT bitTest(latest, 1)) AS without_price,
       countIf(announced AND bitTest(latest, 0) AND NOT bitTest(latest, 2)) AS without_category,
       countIf(announced AND bitTest(latest, 0) AND NOT bitTest(latest, 3)) AS without_brand,
       min(first) AS first_ts, max(last) AS last_ts,
       countIf(NOT announced AND refs > 0) AS orphans
FROM ({PRODUCTS})
"""

# Orphans: referenced by the other streams, never announced by the catalog; the most referenced.
ORPHANS_SQL = f"""
SELECT product_id, refs, last_ref
FROM ({PRODUCTS})
WHERE NOT announced AND refs > 0
ORDER BY refs DESC, product_id
LIMIT {{limit:UInt32}}
"""

# References to orphans per asset (streams and sub-assets); the per-asset maps are read for the
# orphans alone.
ORPHAN_REFS_BY_ASSET_SQL = f"""
SELECT asset, sum(n) FROM (
    SELECT sumMap(refs_by_asset) AS by_asset FROM product_rollup
    WHERE {OURS} AND product_id IN (SELECT product_id FROM product_rollup WHERE {OURS}
                                    GROUP BY product_id HAVING sum(n_catalog) = 0)
    GROUP BY product_id
)
ARRAY JOIN mapKeys(by_asset) AS asset, mapValues(by_asset) AS n
GROUP BY asset
"""

def amount_mismatch_sql(tolerance: str = "{tolerance:Float64}") -> str:
    """A checked transaction line (t) whose amount differs from quantity x the catalog price (c)
    in force at its time by more than ``tolerance`` (relative, at least 1.0 absolute)."""
    return f"abs(t.amount - t.quantity * c.price) > {tolerance} * greatest(abs(t.quantity * c.price), 1.0)"


# Transaction lines against the catalog price in force at their time (checked: a price was).
# Prices are read for the products the lines name.
_CHECKED_LINES = f"""
    SELECT t.event_id AS event_id, t.kind AS kind, t.source AS source, t.order_id AS order_id,
           t.product_id AS product_id, t.quantity AS quantity, t.amount AS amount,
           round(t.quantity * c.price, 2) AS expected, {amount_mismatch_sql()} AS mismatch
    FROM (SELECT event_id, kind, source, order_id, product_id, ts, quantity, amount
          FROM transaction_lines WHERE {OURS}) AS t
    ASOF JOIN (SELECT product_id, ts, price, has_price FROM price_history
               WHERE {OURS} AND product_id IN (SELECT product_id FROM transaction_lines WHERE {OURS})) AS c
    ON t.product_id = c.product_id AND t.ts >= c.ts
    WHERE c.has_price
"""

# Checked and failed per asset: the stream, its status sub-asset, its source sub-asset.
_STATUS_ASSET = shipped()["transaction"].kind_asset("")
AMOUNT_BY_ASSET_SQL = f"""
SELECT arrayJoin(arrayFilter(a -> a != '', ['transaction', if(kind = '', '', concat('{_STATUS_ASSET}', kind)),
                                            if(source = '', '', concat('transaction/source=', source))])) AS asset,
       count() AS checked, countIf(mismatch) AS failed
FROM ({_CHECKED_LINES})
GROUP BY asset
"""

AMOUNT_MISMATCHES_SQL = f"""
SELECT event_id, order_id, product_id, quantity, amount, expected
FROM ({_CHECKED_LINES}) WHERE mismatch
ORDER BY event_id LIMIT {{limit:UInt32}}
"""


def rows_as_dicts(store: Store, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    columns, rows = store.query(sql, params)
    return [dict(zip(columns, row, strict=True)) for row in rows]
