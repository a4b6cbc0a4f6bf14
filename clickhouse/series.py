"""The report's time series (stocktake/report): per stream, events by status, JSON-object
events and each field's presence over event time, from the minute rollups of migration 008.

The caller picks a bucket size in minutes from the stream's span (SPANS_SQL) first, and
ClickHouse sums the minutes into buckets of that size (aligned to the epoch, as the
report's ``Buckets``), so a long history comes back as a few hundred rows, not a row per
minute. The series take ``{prefix:String}``, ``{stream:String}`` and ``{size:UInt32}``
(minutes per bucket) and read the stream's own rows (asset = stream).
"""

from __future__ import annotations

from stocktake.clickhouse.queries import OURS, late_sql

_STREAM = f"{OURS} AND stream = {{stream:String}} AND asset = stream"
_BUCKET = "toStartOfInterval(minute, toIntervalMinute({size:UInt32}))"

# Per stream: the first and last minute of event time holding valid events (any events
# where none is valid: an invalid event's time may be its ingest time).
SPANS_SQL = f"""
SELECT stream,
       toStartOfMinute(if(valid > 0, first_valid, first_any)) AS first,
       toStartOfMinute(if(valid > 0, last_valid, last_any)) AS last
FROM (
    SELECT stream, sumIf(n, status = 'valid') AS valid,
           minIf(ts_min, status = 'valid') AS first_valid, maxIf(ts_max, status = 'valid') AS last_valid,
           min(ts_min) AS first_any, max(ts_max) AS last_any
    FROM asset_rollup
    WHERE {OURS} AND asset = stream
    GROUP BY stream
)
ORDER BY stream
"""

# Events by status per bucket of the span [{first}, {last}] (minutes); the events outside
# the span (invalid ones carrying ingest time) in one row whose bucket is NULL. ``late``:
# valid events later than {late_s} whole seconds.
EVENTS_SQL = f"""
SELECT if(minute < {{first:DateTime('UTC')}} OR minute > {{last:DateTime('UTC')}}, NULL, {_BUCKET}) AS bucket,
       sum(n) AS events, sumIf(n, status = 'valid') AS valid, sumIf(n, status = 'duplicate') AS duplicates,
       sumIf(n, status = 'invalid') AS invalid, {late_sql("sumMapIf(lag_s, status = 'valid')")} AS late
FROM asset_minute_rollup
WHERE {_STREAM}
GROUP BY bucket
ORDER BY bucket
"""

_RANGE = "minute >= {from:DateTime('UTC')} AND minute < {to:DateTime('UTC')}"

# Non-duplicate JSON-object events per bucket in [{from}, {to}): the population of the
# field presence below.
OBJECTS_SQL = f"""
SELECT {_BUCKET} AS bucket, sumIf(n_objects, status != 'duplicate') AS events
FROM asset_minute_rollup
WHERE {_STREAM} AND {_RANGE}
GROUP BY bucket
ORDER BY bucket
"""

# Per field and bucket in [{from}, {to}): the events it is present in (not as null).
PRESENCE_SQL = f"""
SELECT {_BUCKET} AS bucket, field, sumIf(n, type != 'null') AS present
FROM field_minute_rollup
WHERE {_STREAM} AND {_RANGE}
GROUP BY bucket, field
ORDER BY field, bucket
"""
