"""Inventory queries. Every query takes ``{prefix:String}`` (the deployment's topic
prefix, e.g. 'stocktake.') and reads the prefixed views of migration 003.

Everything is derived from ``ingest_log`` (every judged
event with its payload, verdict and coordinates), so the inventory is exact
and recomputable: nothing here keeps a second copy of state that could drift.
"""

from __future__ import annotations

from typing import Any

from stocktake.clickhouse.store import Store
from stocktake.processors.quality import bad_field_sql

_LOG = "prefixed_log(prefix = {prefix:String})"
_ASSETS = "prefixed_assets(prefix = {prefix:String})"

# Events that were JSON objects and not removed as duplicates: the population
# for field profiles. The field blamed by a rejection comes from its reason code.
_OBJECT_EVENTS = f"""
    SELECT asset, stream, ts, ingest_ts, payload, status, {bad_field_sql()} AS bad_field
    FROM {_ASSETS}
    WHERE status != 'duplicate' AND isValidJSON(payload) AND JSONType(payload) = 'Object'
"""

_JSON_TYPE = """multiIf(t IN ('Int64', 'UInt64', 'Double'), 'number', t = 'String', 'string',
    t = 'Bool', 'boolean', t = 'Null', 'null', t = 'Array', 'array', 'object')"""

# Per asset (streams and sub-assets): the stream rows are the field inventory,
# the sub-asset rows feed each sub-asset's completeness.
FIELDS_SQL = f"""
SELECT asset, kv.1 AS field, {_JSON_TYPE} AS type, count() AS n,
       uniq(kv.2) AS distinct_approx, groupUniqArray(5)(kv.2) AS examples,
       countIf(bad_field = kv.1) AS bad,
       min(ingest_ts) AS first_seen, max(ingest_ts) AS last_seen,
       -- event-time span from valid events only: a rejected ts was replaced by ingest time
       minIf(ts, status = 'valid') AS first_ts, maxIf(ts, status = 'valid') AS last_ts,
       countIf(status = 'valid') AS n_valid
FROM ({_OBJECT_EVENTS})
ARRAY JOIN JSONExtractKeysAndValuesRaw(payload) AS kv
LEFT ARRAY JOIN [toString(JSONType(kv.2))] AS t
GROUP BY asset, field, type
ORDER BY asset, field, type
"""

ASSET_SPANS_SQL = f"""
SELECT asset, count() AS events, minIf(ts, status = 'valid') AS first_ts,
       maxIf(ts, status = 'valid') AS last_ts
FROM ({_OBJECT_EVENTS})
GROUP BY asset
"""

COMPLETENESS_MINUTE_SQL = f"""
SELECT stream, toStartOfMinute(ts) AS minute, kv.1 AS field,
       countIf(JSONType(kv.2) != 'Null') AS present
FROM (SELECT * FROM ({_OBJECT_EVENTS}) WHERE asset = stream)
ARRAY JOIN JSONExtractKeysAndValuesRaw(payload) AS kv
GROUP BY stream, minute, field
ORDER BY stream, field, minute
"""

STREAM_MINUTE_SQL = f"""
SELECT stream, toStartOfMinute(ts) AS minute, count() AS events
FROM ({_OBJECT_EVENTS}) WHERE asset = stream GROUP BY stream, minute ORDER BY stream, minute
"""

# Per asset: counts, timeliness. Lag is ingest time minus event time.
ASSETS_SQL = f"""
SELECT asset,
       count() AS events,
       countIf(status = 'valid') AS valid,
       countIf(status = 'duplicate') AS duplicates,
       countIf(status = 'invalid') AS invalid,
       sumMapIf(map(reason, toUInt64(1)), status = 'invalid') AS invalid_by_reason,
       if(valid = 0, NULL, maxIf(ts, status = 'valid')) AS last_event_ts,
       min(ingest_ts) AS first_seen, max(ingest_ts) AS last_seen,
       quantilesIf(0.5, 0.95, 0.99)(toFloat64(dateDiff('millisecond', ts, ingest_ts)),
                                     status = 'valid') AS lag_ms,
       countIf(status = 'valid' AND dateDiff('millisecond', ts, ingest_ts) > {{late_ms:UInt64}}) AS late,
       countIf(status = 'valid' AND stream != 'product' AND product_id != '') AS product_refs,
       countIf(status = 'valid' AND stream != 'product' AND product_id != ''
               AND product_id NOT IN (SELECT product_id FROM {_LOG}
                                      WHERE status = 'valid' AND stream = 'product')) AS orphan_refs
FROM {_ASSETS}
GROUP BY asset
ORDER BY asset
"""

ASSET_MINUTE_SQL = f"""
SELECT asset, toStartOfMinute(ts) AS minute, count() AS events, countIf(status = 'valid') AS valid,
       countIf(status = 'duplicate') AS duplicates, countIf(status = 'invalid') AS invalid,
       quantilesIf(0.5, 0.95, 0.99)(toFloat64(dateDiff('millisecond', ts, ingest_ts)),
                                     status = 'valid') AS lag_ms,
       countIf(status = 'valid' AND dateDiff('millisecond', ts, ingest_ts) > {{late_ms:UInt64}}) AS late
FROM {_ASSETS}
WHERE ts >= {{since:DateTime64(3, 'UTC')}}
GROUP BY asset, minute ORDER BY asset, minute
"""

ENTITY_USERS_SQL = f"""
WITH (SELECT max(ts) FROM {_LOG} WHERE status = 'valid') AS as_of
SELECT uniqExact(user_id), uniqExactIf(user_id, ts >= as_of - INTERVAL 1 HOUR),
       uniqExactIf(user_id, ts >= as_of - INTERVAL 1 DAY), as_of, min(ts), max(ts)
FROM {_LOG} WHERE status = 'valid' AND user_id != ''
"""

# Catalog state per product = its latest valid product event.
_CATALOG = f"""
    SELECT product_id, argMax(kind, ts) AS last_op, argMax(payload, ts) AS last_payload
    FROM {_LOG} WHERE status = 'valid' AND stream = 'product' GROUP BY product_id
"""
_REFERENCED = f"""
    SELECT product_id, count() AS refs, max(ts) AS last_ts
    FROM {_LOG} WHERE status = 'valid' AND stream IN ('behaviour', 'transaction')
                      AND product_id != '' GROUP BY product_id
"""

ENTITY_PRODUCTS_SQL = f"""
WITH (SELECT max(ts) FROM {_LOG} WHERE status = 'valid') AS as_of
SELECT
    (SELECT count() FROM ({_CATALOG}) WHERE last_op = 'upsert') AS catalog,
    (SELECT uniqExact(product_id) FROM {_LOG} WHERE status = 'valid' AND product_id != '')
        AS distinct_seen,
    (SELECT uniqExactIf(product_id, ts >= as_of - INTERVAL 1 HOUR) FROM {_LOG}
        WHERE status = 'valid' AND product_id != '' AND stream != 'product') AS active_1h,
    (SELECT uniqExactIf(product_id, ts >= as_of - INTERVAL 1 DAY) FROM {_LOG}
        WHERE status = 'valid' AND product_id != '' AND stream != 'product') AS active_1d,
    (SELECT countIf(NOT JSONHas(last_payload, 'price') OR JSONType(last_payload, 'price') = 'Null')
        FROM ({_CATALOG}) WHERE last_op = 'upsert') AS without_price,
    (SELECT countIf(NOT JSONHas(last_payload, 'category')
                    OR JSONType(last_payload, 'category') = 'Null')
        FROM ({_CATALOG}) WHERE last_op = 'upsert') AS without_category,
    (SELECT countIf(NOT JSONHas(last_payload, 'brand') OR JSONType(last_payload, 'brand') = 'Null')
        FROM ({_CATALOG}) WHERE last_op = 'upsert') AS without_brand,
    (SELECT min(ts) FROM {_LOG} WHERE status = 'valid' AND product_id != '') AS first_ts,
    (SELECT max(ts) FROM {_LOG} WHERE status = 'valid' AND product_id != '') AS last_ts
"""

# Orphans: referenced by behaviour/transactions, never announced by the catalog.
ORPHANS_SQL = f"""
SELECT r.product_id, r.refs, r.last_ts
FROM ({_REFERENCED}) AS r
LEFT ANTI JOIN (SELECT product_id FROM {_LOG} WHERE status = 'valid' AND stream = 'product'
                GROUP BY product_id) AS c USING (product_id)
ORDER BY r.refs DESC, r.product_id
"""

ORPHAN_EVENTS_BY_STREAM_SQL = f"""
SELECT stream, count() FROM {_LOG}
WHERE status = 'valid' AND stream IN ('behaviour', 'transaction') AND product_id != ''
  AND product_id NOT IN (SELECT product_id FROM {_LOG} WHERE status = 'valid' AND stream = 'product')
GROUP BY stream
"""

ENTITY_ORDERS_SQL = f"""
WITH (SELECT max(ts) FROM {_LOG} WHERE status = 'valid') AS as_of
SELECT uniqExact(order_id), uniqExactIf(order_id, ts >= as_of - INTERVAL 1 HOUR),
       uniqExactIf(order_id, ts >= as_of - INTERVAL 1 DAY), min(ts), max(ts)
FROM {_LOG} WHERE status = 'valid' AND stream = 'transaction' AND order_id != ''
"""

# Amount vs quantity × the catalog price in force at the transaction's time.
AMOUNT_CHECK_SQL = f"""
SELECT t.event_id, t.kind, t.source, t.order_id, t.product_id, t.quantity, t.amount, c.price,
       c.has_price
FROM (
    SELECT event_id, kind, source, order_id, product_id, ts,
           JSONExtractFloat(payload, 'amount') AS amount, JSONExtractInt(payload, 'quantity') AS quantity
    FROM {_LOG} WHERE status = 'valid' AND stream = 'transaction'
) AS t
ASOF LEFT JOIN (
    SELECT product_id, ts, JSONExtractFloat(payload, 'price') AS price,
           toUInt8(JSONHas(payload, 'price') AND JSONType(payload, 'price') != 'Null') AS has_price
    FROM {_LOG} WHERE status = 'valid' AND stream = 'product' AND kind = 'upsert'
) AS c ON t.product_id = c.product_id AND t.ts >= c.ts
"""


def rows_as_dicts(store: Store, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    columns, rows = store.query(sql, params)
    return [dict(zip(columns, row, strict=True)) for row in rows]
