"""Queries feeding the gap detectors, and the alert/baseline tables. All scoped
to one deployment's topic prefix like clickhouse/queries.py."""

from __future__ import annotations

_LOG = "prefixed_log(prefix = {prefix:String})"
_ASSETS = "prefixed_assets(prefix = {prefix:String})"

# Newest event time and newest ingest time of valid events per asset, among rows
# ingested in (since, until]: the two clocks' "last seen".
ACTIVITY_SQL = f"""
SELECT asset, toUnixTimestamp64Milli(max(ts)), toUnixTimestamp64Milli(max(ingest_ts))
FROM {_ASSETS}
WHERE status = 'valid' AND ingest_ts > {{since:DateTime64(3, 'UTC')}}
  AND ingest_ts <= {{until:DateTime64(3, 'UTC')}}
GROUP BY asset
"""

# Inter-arrival gaps (event time) among the rows ingested in (since, until], per asset:
# a bounded random sample and how many gaps it stands for.
GAPS_SQL = f"""
SELECT asset, length(gaps) AS n, arraySlice(arrayShuffle(gaps), 1, {{sample:UInt32}}) AS sample, first
FROM (
    SELECT asset, arrayPopFront(arrayDifference(arraySort(groupArray(toUnixTimestamp64Milli(ts))))) AS gaps,
           toUnixTimestamp64Milli(min(ts)) AS first
    FROM {_ASSETS}
    WHERE status = 'valid' AND ingest_ts > {{since:DateTime64(3, 'UTC')}}
      AND ingest_ts <= {{until:DateTime64(3, 'UTC')}}
    GROUP BY asset
)
"""

# Closed minutes of event time: valid events per asset, product references and
# orphans (products the catalog never announced) per asset.
MINUTES_SQL = f"""
SELECT asset, toUnixTimestamp(toStartOfMinute(ts)) * 1000 AS m, count() AS events,
       countIf(stream != 'product' AND product_id != '') AS refs,
       countIf(stream != 'product' AND product_id != '' AND product_id NOT IN (
           SELECT product_id FROM {_LOG} WHERE status = 'valid' AND stream = 'product')) AS orphans
FROM {_ASSETS}
WHERE status = 'valid' AND ts >= {{from:DateTime64(3, 'UTC')}} AND ts < {{to:DateTime64(3, 'UTC')}}
GROUP BY asset, m
"""

# Field presence per stream and closed minute (completeness).
FIELD_MINUTES_SQL = f"""
SELECT stream, toUnixTimestamp(toStartOfMinute(ts)) * 1000 AS m, kv.1 AS field,
       countIf(JSONType(kv.2) != 'Null') AS present
FROM {_LOG}
ARRAY JOIN JSONExtractKeysAndValuesRaw(payload) AS kv
WHERE status = 'valid' AND ts >= {{from:DateTime64(3, 'UTC')}} AND ts < {{to:DateTime64(3, 'UTC')}}
GROUP BY stream, m, field
"""

EVENT_SPAN_SQL = f"""
SELECT toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts)), count()
FROM {_LOG} WHERE status = 'valid'
"""

# An alert row as services/alerts.read_alert reads it: times in epoch milliseconds.
ALERT_FIELDS = """
alert_id, asset, kind, subject, severity, toString(state) AS state, clock,
toUnixTimestamp64Milli(opened_at) AS opened_at, toUnixTimestamp64Milli(resolved_at) AS resolved_at, reason,
expected, observed, toUnixTimestamp64Milli(evidence_from) AS evidence_from,
toUnixTimestamp64Milli(evidence_to) AS evidence_to, details, version,
toUnixTimestamp64Milli(updated_at) AS updated_at
"""

OPEN_ALERTS_SQL = f"""
SELECT {ALERT_FIELDS}
FROM alerts FINAL
WHERE topic_prefix = {{prefix:String}} AND state = 'firing'
"""

ALERTS_SQL = f"""
SELECT {ALERT_FIELDS}
FROM alerts FINAL
WHERE topic_prefix = {{prefix:String}} AND (state = 'firing' OR NOT {{open_only:Bool}})
ORDER BY opened_at DESC
LIMIT {{limit:UInt32}}
"""
