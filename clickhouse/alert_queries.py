"""Queries feeding the gap detectors, and the alert/baseline tables. All scoped
to one deployment's topic prefix like clickhouse/queries.py.

Counts, field presence, spans and last-seen times come from the rollups of migration 008,
so their cost follows the minutes or assets asked for, not the history. Raw events are
read in bounded slices of ingest_log only: an ingest-time window (since, until] for the
newest times and the arrival gaps (services/alerting.py bounds its length), and the
closed minutes' event time [from, to) for orphan references; the skip indexes of
migration 006 prune both to a few granules.
"""

from __future__ import annotations

from stocktake.clickhouse.queries import OURS

_LOG = "prefixed_log(prefix = {prefix:String})"
_ASSETS = "prefixed_assets(prefix = {prefix:String})"
_WINDOW = "minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}"

# Newest event time and newest ingest time of valid events per asset, among rows
# ingested in (since, until]: the two clocks' "last seen".
ACTIVITY_SQL = f"""
SELECT asset, toUnixTimestamp64Milli(max(ts)), toUnixTimestamp64Milli(max(ingest_ts))
FROM {_ASSETS}
WHERE status = 'valid' AND ingest_ts > {{since:DateTime64(3, 'UTC')}}
  AND ingest_ts <= {{until:DateTime64(3, 'UTC')}}
GROUP BY asset
"""

# The same over all history, from the rollup: every asset's last-seen times (a takeover).
ASSET_ACTIVITY_SQL = f"""
SELECT asset, toUnixTimestamp64Milli(max(ts_max)), toUnixTimestamp64Milli(max(ingest_max))
FROM asset_rollup
WHERE {OURS} AND status = 'valid'
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

# The gaps between the minutes of event time in [from, to) that hold valid events of an
# asset, in the shape of GAPS_SQL: a coarse cadence (minute resolution) for assets too
# sparse to show enough gaps in one bounded window of raw events.
MINUTE_GAPS_SQL = f"""
SELECT asset, length(gaps) AS n, arraySlice(arrayShuffle(gaps), 1, {{sample:UInt32}}) AS sample, first
FROM (
    SELECT asset, arrayPopFront(arrayDifference(arraySort(groupArray(m)))) AS gaps, min(m) AS first
    FROM (SELECT asset, toInt64(toUnixTimestamp(minute)) * 1000 AS m FROM asset_minute_rollup
          WHERE {OURS} AND status = 'valid' AND {_WINDOW}
          GROUP BY asset, m)
    GROUP BY asset
)
"""

# The arrivals of the closed minutes [from, to) of event time, per asset and minute: first and
# newest event time, the gaps between consecutive events of the asset inside the window that
# ended in the minute, counted per LagHistogram bucket (``edges``: processors/quality.EDGES; a
# gap's bucket is how many edges are <= it), and the longest of them. processors/gapfeed's
# window_arrivals is the same in Python. Reads the window's raw events (a bounded slice: the
# ts skip index of migration 006).
ARRIVALS_SQL = f"""
SELECT asset, intDiv(t, 60000) * 60000 AS m, min(t), max(t),
       sumMapIf([toUInt16(if(gap >= 1, arrayCount(e -> e <= gap, {{edges:Array(Float64)}}), 0))],
                [toUInt64(1)], gap >= 0) AS buckets,
       maxIf(gap, gap >= 0) AS longest, argMaxIf(prev, gap, gap >= 0) AS longest_from
FROM (
    SELECT asset, t, prev, if(prev < 0, toInt64(-1), t - prev) AS gap
    FROM (
        SELECT asset, arraySort(groupArray(toUnixTimestamp64Milli(ts))) AS times
        FROM {_ASSETS}
        WHERE status = 'valid' AND ts >= {{from:DateTime64(3, 'UTC')}} AND ts < {{to:DateTime64(3, 'UTC')}}
        GROUP BY asset
    )
    ARRAY JOIN times AS t, arrayPushFront(arrayPopBack(times), toInt64(-1)) AS prev
)
GROUP BY asset, m
"""

# Per Kafka partition of the deployment: the newest valid event time it holds (its event-time
# progress) and when it last ingested anything; the low watermark is read from these.
PARTITIONS_SQL = f"""
SELECT toUnixTimestamp64Milli(max(valid_ts_max)), toUnixTimestamp64Milli(max(ingest_max))
FROM partition_rollup
WHERE {OURS}
GROUP BY topic, partition
"""

# Valid references to a product by the non-product streams, in the event time [from, to).
_REFERENCES = """status = 'valid' AND stream != 'product' AND product_id != ''
      AND ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}"""

# Of the products those references name, the ones the catalog ever announced (only those
# products' rows of the product rollup: its primary key is (topic, product_id)).
_ANNOUNCED = f"""
    SELECT product_id FROM product_rollup
    WHERE {OURS} AND product_id IN (SELECT product_id FROM {_LOG} WHERE {_REFERENCES})
    GROUP BY product_id HAVING sum(n_catalog) > 0"""

# Closed minutes of event time: valid events per asset and product references (the
# minute rollup), and orphans: references to products the catalog never announced (the
# minutes' own raw events against the product rollup).
MINUTES_SQL = f"""
SELECT asset, m, c.events, c.refs, o.orphans
FROM (
    SELECT asset, toInt64(toUnixTimestamp(minute)) * 1000 AS m, sum(n) AS events, sum(n_refs) AS refs
    FROM asset_minute_rollup
    WHERE {OURS} AND status = 'valid' AND {_WINDOW}
    GROUP BY asset, m
) AS c
LEFT JOIN (
    SELECT asset, toInt64(toUnixTimestamp(toStartOfMinute(ts))) * 1000 AS m, count() AS orphans
    FROM {_ASSETS}
    WHERE {_REFERENCES} AND product_id NOT IN ({_ANNOUNCED})
    GROUP BY asset, m
) AS o USING (asset, m)
"""

# Field presence per stream and closed minute (completeness): a field present as null
# is not present.
FIELD_MINUTES_SQL = f"""
SELECT stream, toInt64(toUnixTimestamp(minute)) * 1000 AS m, field, sumIf(n, type != 'null') AS present
FROM field_minute_rollup
WHERE {OURS} AND status = 'valid' AND asset = stream AND {_WINDOW}
GROUP BY stream, m, field
"""

# First and newest event time of valid events, and how many.
EVENT_SPAN_SQL = f"""
SELECT toUnixTimestamp64Milli(min(ts_min)), toUnixTimestamp64Milli(max(ts_max)), sum(n)
FROM asset_rollup
WHERE {OURS} AND status = 'valid' AND asset = stream
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
