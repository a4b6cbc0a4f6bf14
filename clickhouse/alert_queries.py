"""Queries feeding the gap detectors, and the alert/baseline tables. All scoped
to one deployment's topic prefix like clickhouse/queries.py.

Counts, field presence, spans, last-seen times and the catalog come from the rollups of
migration 008, so their cost follows the minutes or assets asked for, not the history. Raw
events are read in bounded slices of ingest_log only: the closed minutes' event time
[from, to) for their arrivals and product references, an ingest-time window (since, until]
for the catalog's new products and for the live-edge gaps of assets still without a
cadence (services/alerting.py bounds both); the skip indexes of migration 006 prune each to
a few granules.
"""

from __future__ import annotations

from stocktake.clickhouse.queries import OURS

_ASSETS = "prefixed_assets(prefix = {prefix:String})"
_WINDOW = "minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}"

# Newest event time and newest ingest time of valid events per asset, over everything stored
# (the rollup): the two clocks' "last seen", read every look; and the first event time.
ASSET_ACTIVITY_SQL = f"""
SELECT asset, toUnixTimestamp64Milli(max(ts_max)), toUnixTimestamp64Milli(max(ingest_max)),
       toUnixTimestamp64Milli(min(ts_min))
FROM asset_rollup
WHERE {OURS} AND status = 'valid'
GROUP BY asset
"""

# Inter-arrival gaps (event time) among the rows ingested in (since, until], per asset of
# ``assets`` (those still learning their cadence: a cold start): a bounded random sample and
# how many gaps it stands for.
GAPS_SQL = f"""
SELECT asset, length(gaps) AS n, arraySlice(arrayShuffle(gaps), 1, {{sample:UInt32}}) AS sample, first
FROM (
    SELECT asset, arrayPopFront(arrayDifference(arraySort(groupArray(toUnixTimestamp64Milli(ts))))) AS gaps,
           toUnixTimestamp64Milli(min(ts)) AS first
    FROM {_ASSETS}
    WHERE status = 'valid' AND ingest_ts > {{since:DateTime64(3, 'UTC')}}
      AND ingest_ts <= {{until:DateTime64(3, 'UTC')}} AND asset IN {{assets:Array(String)}}
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

# The valid events of the closed minutes [from, to) of event time, per stream, kind and source,
# in event-time order: their times and the products their references name (cityHash64 of the
# id, 0 for none). processors/arrivals.py turns them into each asset's arrivals and orphans.
# Reads the window's raw events (a bounded slice: the ts skip index of migration 006); from
# ingest_log itself, as prefixed_log does, without the view's cost per query.
MINUTE_EVENTS_SQL = f"""
SELECT stream, kind_key, kind, source, arrayMap(e -> e.1, events), arrayMap(e -> e.2, events)
FROM (
    SELECT stream, kind_key, kind, source,
           arraySort(groupArray((toUnixTimestamp64Milli(ts),
                                 if(stream != 'product' AND product_id != '', cityHash64(product_id), 0)))) AS events
    FROM ingest_log
    WHERE {OURS} AND status = 'valid'
      AND ts >= {{from:DateTime64(3, 'UTC')}} AND ts < {{to:DateTime64(3, 'UTC')}}
    GROUP BY stream, kind_key, kind, source
)
"""

# The products the catalog (the product stream's valid events) announced, as cityHash64 of
# the id: all of them from the product rollup (a takeover), or those among the rows ingested
# in (since, until] (a look that closes minutes, when the catalog's topic has ingested since).
CATALOG_SQL = f"""
SELECT DISTINCT cityHash64(product_id) FROM product_rollup WHERE {OURS} AND n_catalog > 0
"""
NEW_CATALOG_SQL = f"""
SELECT DISTINCT cityHash64(product_id) FROM ingest_log
WHERE {OURS} AND stream = 'product' AND status = 'valid' AND product_id != ''
  AND ingest_ts > {{since:DateTime64(3, 'UTC')}} AND ingest_ts <= {{until:DateTime64(3, 'UTC')}}
"""

# Per Kafka partition of the deployment: its topic, the newest valid event time it holds (its
# event-time progress) and when it last ingested anything; the low watermark is read from these.
PARTITIONS_SQL = f"""
SELECT topic, toUnixTimestamp64Milli(max(valid_ts_max)), toUnixTimestamp64Milli(max(ingest_max))
FROM partition_rollup
WHERE {OURS}
GROUP BY topic, partition
"""

# Closed minutes of event time: valid events and product references per asset (the minute
# rollup).
MINUTES_SQL = f"""
SELECT asset, toInt64(toUnixTimestamp(minute)) * 1000 AS m, sum(n) AS events, sum(n_refs) AS refs
FROM asset_minute_rollup
WHERE {OURS} AND status = 'valid' AND {_WINDOW}
GROUP BY asset, m
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
