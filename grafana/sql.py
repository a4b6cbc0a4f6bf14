"""The SQL behind every panel, written against the store's rollups (migration 008).

Each statement uses Grafana variables (``${prefix}``, ``${stream}``, ``${asset}``,
``${source}``, ...) and the ClickHouse plugin's macros (``$__timeFilter``,
``$__timeInterval``, ``$__interval_s``, ``$__fromTime``/``$__toTime``); grafana.macros expands
both. The topic prefix is never hard-coded: every read is scoped with
``startsWith(topic, ${prefix})``.

No panel reads the raw events or parses their JSON: ClickHouse keeps the rollups current as
events are stored, so a panel reads rollup rows only, as many as its range holds minutes of
assets (the time filter is on ``minute``, the event-time minute: minute resolution), or per
field, product or partition. Rollups are AggregatingMergeTree tables read without FINAL:
every query merges the rows of a key itself (sum of the sums, max of the maxes, -Merge of the
states), as clickhouse/queries.py does; an output alias never reuses a column's name.

Quality is processors.quality's score, written as SQL by that module from the same
declarations (components, weights, freshness) with the required fields of
processors.contract, so the dashboards and ``stocktake inventory`` agree; the tests check that
they do.
"""

from __future__ import annotations

from stocktake.clickhouse.queries import amount_mismatch_sql, contract_fields_sql, expected_fields_sql, late_sql
from stocktake.grafana.macros import ALL
from stocktake.processors.contract_spec import shipped
from stocktake.processors.quality import COMPONENTS, component_sql, freshness_sql, score_sql

PREFIX = "${prefix:singlequote}"
OURS = f"startsWith(topic, {PREFIX})"     # the deployment's rows (every rollup keeps the topic)


def pick(var: str, column: str | None = None) -> str:
    """A multi-value variable as a filter: "All" (the custom all value) passes everything."""
    column = column or var
    return f"(has([${{{var}:singlequote}}], '{ALL}') OR {column} IN (${{{var}:singlequote}}))"


def in_range(column: str) -> str:
    """The dashboard's range on a column that is not a rollup's ``minute``."""
    return f"{column} >= $__fromTime AND {column} <= $__toTime"


TIME = "$__timeFilter(minute)"
PICKED = f"{pick('stream')} AND {pick('source')}"
# asset_minute_rollup / field_minute_rollup rows in the range. A stream's own rows count every
# event once; the sub-asset rows (kind, source) count it again.
EVENTS = f"{OURS} AND {TIME} AND asset = stream AND {PICKED}"
ASSET_ROWS = f"{OURS} AND {TIME} AND {PICKED} AND {pick('asset')}"
PER_MIN = "($__interval_s / 60)"   # divide a count per interval by this: events per minute
# The five whole minutes before the range's end minute (rate_5m: complete minutes only).
LAST_5_MINUTES = ("minute >= toStartOfMinute($__toTime) - INTERVAL 5 MINUTE "
                  "AND minute < toStartOfMinute($__toTime)")
# Valid events that arrived more than ${lateness_s} after their event time, in whole seconds
# (the lag histogram's buckets; a fraction of a second is dropped).
LATE = late_sql("sumMapIf(lag_s, status = 'valid')", "toUInt32(${lateness_s})")
# Non-duplicate JSON objects: the population of the field profiles (field_minute_rollup).
OBJECTS = "sumIf(n_objects, status != 'duplicate')"
PRESENT = "sumIf(n, type != 'null')"              # a field present with a non-null value


def _completeness_counts(asset: str) -> str:
    """Completeness's counts (processors.quality) from `present` (field -> events carrying it)
    and field_events, over every observed field and those always counted, seen or not (the
    stream's required fields, as the worker published its contract, and those a warn rule
    found missing on ``asset``)."""
    return f"""arrayDistinct(arrayConcat(mapKeys(present), {expected_fields_sql(PREFIX, 'stream', asset)})) AS fields,
           length(fields) * field_events AS field_values,
           arraySum(f -> field_events - present[f], fields) AS missing_values"""


# An asset (or stream and interval) has field events only where fields were seen, as the
# inventory counts them (an object without fields, `{}`, carries none).
_FIELD_EVENTS = "if(empty(p.present), 0, c.field_events)"
# The counts the components name, as the columns of the `counts` (c), `completeness` (q),
# `orphans` (o) and `amounts` (a) tables below. Orphan references come from product_rollup
# (all history, see _ORPHAN_REFS): at most the range's product references.
_COUNTS = {**{k: f"c.{k}" for k in ("events", "valid", "duplicates", "invalid", "late")},
           "missing_values": "q.missing_values", "field_values": "q.field_values",
           "consistency_checked": "(c.product_refs + a.checked)",
           "consistency_failed": "(least(o.orphan_refs, c.product_refs) + a.failed)"}
_ASSET_COMPONENTS = ",\n           ".join(f"{component_sql(c, _COUNTS, 'freshness')} AS {name}"
                                          for name, c in COMPONENTS.items())

# -- products: the catalog and the orphans (product_rollup: per product over all history) ----

# A product reference's asset key (refs_by_asset: stream, stream/kind=..., stream/source=...)
# picked by the stream and source variables: under source "All" the stream's own key, else the
# picked sources' keys.
_REF_STREAM = "splitByChar('/', k)[1]"
REF_PICKED = (f"{pick('stream', _REF_STREAM)} AND if(has([${{source:singlequote}}], '{ALL}'), position(k, '/') = 0, "
              f"has(arrayMap(s -> concat({_REF_STREAM}, '/source=', s), [${{source:singlequote}}]), k))")
# Products with a reference in the range (a rollup row's first..last reference overlaps it).
_REFERENCED_IN_RANGE = (f"(SELECT product_id FROM product_rollup WHERE {OURS} "
                        f"AND ref_ts_max >= $__fromTime AND ref_ts_min <= $__toTime)")
# Orphans: referenced (by the picked streams and sources) in the range, never announced by the
# catalog; their references and first/last reference over all history.
ORPHAN_PRODUCTS = f"""
SELECT product_id, mapFilter((k, v) -> {REF_PICKED}, sumMap(refs_by_asset)) AS picked_refs,
       min(ref_ts_min) AS first_ref, max(ref_ts_max) AS last_ref
FROM product_rollup
WHERE {OURS} AND product_id IN {_REFERENCED_IN_RANGE}
GROUP BY product_id
HAVING sum(n_catalog) = 0 AND NOT empty(picked_refs)
"""
# References to orphans per asset (streams and sub-assets), over all history, of the orphans
# referenced in the range.
_ORPHAN_REFS = f"""
SELECT ref_asset AS asset, sum(ref_n) AS orphan_refs
FROM (SELECT sumMap(refs_by_asset) AS refs FROM product_rollup
      WHERE {OURS} AND product_id IN {_REFERENCED_IN_RANGE}
      GROUP BY product_id HAVING sum(n_catalog) = 0)
ARRAY JOIN mapKeys(refs) AS ref_asset, mapValues(refs) AS ref_n
GROUP BY ref_asset
"""
# Catalog size: products whose newest catalog event is an upsert (bit 0 of catalog_last's flags;
# the inventory's count).
CATALOG_SIZE = f"""
SELECT countIf(bitTest(latest, 0))
FROM (SELECT max(catalog_last).2 AS latest FROM product_rollup WHERE {OURS} AND n_catalog > 0 GROUP BY product_id)
"""

# -- per asset: counts, timeliness, quality (the inventory's numbers, over the time range) ----

_ASSET_QUALITY = f"""
WITH
counts AS (
    SELECT asset, any(stream) AS asset_stream, sum(n) AS events, sumIf(n, status = 'valid') AS valid,
           sumIf(n, status = 'duplicate') AS duplicates, sumIf(n, status = 'invalid') AS invalid,
           sumIf(n, {LAST_5_MINUTES}) / 5 AS rate_5m,
           if(valid = 0, NULL, maxIf(ts_max, status = 'valid')) AS last_event,
           if(valid = 0, NULL, quantilesTDigestMergeIf(0.5, 0.95, 0.99)(lag, status = 'valid')[2]) AS lag_p95_ms,
           {LATE} AS late,
           sumIf(n_refs, status = 'valid') AS product_refs,
           {OBJECTS} AS field_events
    FROM asset_minute_rollup WHERE {ASSET_ROWS}
    GROUP BY asset
),
presence AS (
    SELECT asset, mapFromArrays(groupArray(field), groupArray(n_present)) AS present
    FROM (SELECT asset, field, {PRESENT} AS n_present FROM field_minute_rollup WHERE {ASSET_ROWS}
          GROUP BY asset, field)
    GROUP BY asset
),
completeness AS (
    SELECT asset, {_completeness_counts('asset')}
    FROM (SELECT c.asset AS asset, c.asset_stream AS stream, {_FIELD_EVENTS} AS field_events, p.present AS present
          FROM counts AS c LEFT JOIN presence AS p ON c.asset = p.asset)
),
orphans AS ({_ORPHAN_REFS}),
transactions AS (
    SELECT kind, source, product_id, ts, quantity, amount FROM transaction_lines
    WHERE {OURS} AND {in_range('toStartOfMinute(ts)')} AND {pick('stream', "'transaction'")} AND {pick('source')}
),
amounts AS (
    -- amount vs quantity × the catalog price in force at the transaction's time
    SELECT arrayJoin(['transaction', concat('{shipped()["transaction"].kind_asset("")}', t.kind),
                      concat('transaction/source=', t.source)]) AS asset,
           count() AS checked,
           countIf({amount_mismatch_sql("${amount_tolerance}")}) AS failed
    FROM transactions AS t
    ASOF JOIN (SELECT product_id, ts, price, has_price FROM price_history
               WHERE {OURS} AND product_id IN (SELECT product_id FROM transactions)) AS c
    ON t.product_id = c.product_id AND t.ts >= c.ts
    WHERE c.has_price
    GROUP BY asset
),
scored AS (
    SELECT c.asset AS asset, c.events AS events, c.valid AS valid, c.duplicates AS duplicates,
           c.invalid AS invalid, c.rate_5m AS rate_5m, c.last_event AS last_event, c.lag_p95_ms AS lag_p95_ms,
           if(c.last_event IS NULL, NULL, dateDiff('millisecond', c.last_event, now64(3)) / 1000) AS freshness_s,
           {freshness_sql("freshness_s", "${freshness_target_s}")} AS freshness,
           {_ASSET_COMPONENTS}
    FROM counts AS c
    LEFT JOIN completeness AS q ON c.asset = q.asset
    LEFT JOIN orphans AS o ON c.asset = o.asset
    LEFT JOIN amounts AS a ON c.asset = a.asset
)
"""

QUALITY_SCORE = score_sql({name: name for name in COMPONENTS})

ASSETS_TABLE = _ASSET_QUALITY + f"""
SELECT asset, rate_5m, events / (dateDiff('second', $__fromTime, $__toTime) / 60) AS avg_rate,
       events, valid, duplicates, invalid, last_event, freshness_s, lag_p95_ms,
       {QUALITY_SCORE} AS quality
FROM scored ORDER BY asset
"""

QUALITY_TABLE = _ASSET_QUALITY + f"""
SELECT asset, {QUALITY_SCORE} AS score, completeness, validity, uniqueness, timeliness, consistency
FROM scored ORDER BY score, asset
"""

# -- inventory --------------------------------------------------------------------------------

TOTALS = f"""
SELECT sum(n) AS events, sumIf(n, status = 'valid') AS valid, sumIf(n, status = 'duplicate') AS duplicates,
       sumIf(n, status = 'invalid') AS invalid
FROM asset_minute_rollup WHERE {EVENTS}
"""

# rate_5m: over the picked assets' rows
RATE_AND_FRESHNESS = f"""
SELECT sumIf(n, {LAST_5_MINUTES}) / 5 AS rate_5m,
       uniqExact(asset) AS assets,
       if(sumIf(n, status = 'valid') = 0, NULL,
          dateDiff('millisecond', maxIf(ts_max, status = 'valid'), now64(3)) / 1000) AS freshness_s
FROM asset_minute_rollup WHERE {ASSET_ROWS}
"""

EVENTS_PER_ASSET = f"""
SELECT $__timeInterval(minute) AS time, asset, sum(n) / {PER_MIN} AS events_per_min
FROM asset_minute_rollup WHERE {ASSET_ROWS}
GROUP BY time, asset ORDER BY time, asset
"""

EVENTS_BY_STATUS = f"""
SELECT $__timeInterval(minute) AS time, sumIf(n, status = 'valid') / {PER_MIN} AS valid,
       sumIf(n, status = 'duplicate') / {PER_MIN} AS duplicates, sumIf(n, status = 'invalid') / {PER_MIN} AS invalid
FROM asset_minute_rollup WHERE {EVENTS}
GROUP BY time ORDER BY time
"""

# Distinct ids of valid events (uniqCombined states of the streams' rows: approximate).
_DISTINCT_IDS = f"""
SELECT uniqCombinedMerge(users) AS n_users, uniqCombinedMerge(products) AS n_products,
       uniqCombinedMerge(orders) AS n_orders
FROM asset_minute_rollup WHERE {EVENTS} AND status = 'valid'
"""

ENTITIES = f"""
SELECT ids.n_users AS users, ({CATALOG_SIZE}) AS catalog, ids.n_products AS active_products,
       ids.n_orders AS orders, (SELECT count() FROM ({ORPHAN_PRODUCTS})) AS orphans
FROM ({_DISTINCT_IDS}) AS ids
"""

ACTIVE_ENTITIES = f"""
SELECT time, n_users AS users, n_products AS products, n_orders AS orders FROM (
    SELECT $__timeInterval(minute) AS time, uniqCombinedMerge(users) AS n_users,
           uniqCombinedMerge(products) AS n_products, uniqCombinedMerge(orders) AS n_orders
    FROM asset_minute_rollup WHERE {EVENTS} AND status = 'valid'
    GROUP BY time
)
ORDER BY time
"""

ORPHANS = f"""
SELECT product_id, arraySum(mapValues(picked_refs)) AS refs,
       arrayStringConcat(arraySort(arrayDistinct(arrayMap(k -> {_REF_STREAM}, mapKeys(picked_refs)))), ', ') AS streams,
       first_ref, last_ref
FROM ({ORPHAN_PRODUCTS})
ORDER BY refs DESC, product_id LIMIT 50
"""

# alerts, baselines and scores carry the deployment's prefix ('stocktake.') in topic_prefix
OF_PREFIX = f"topic_prefix = {PREFIX}"

# The gap detectors' orphan observation per stream and minute (baselines, metric 'orphans': the
# share of the minute's product references naming a product the catalog never announced) times
# that minute's product references.
ORPHAN_REFS_PER_MIN = f"""
SELECT $__timeInterval(b.at_minute) AS time, b.asset AS stream,
       sum(b.observed * r.refs) / {PER_MIN} AS orphan_refs_per_min
FROM (SELECT asset, toDateTime(minute) AS at_minute, observed FROM baselines FINAL
      WHERE {OF_PREFIX} AND metric = 'orphans' AND $__timeFilter(minute) AND position(asset, '/') = 0
            AND {pick('stream', 'asset')}) AS b
LEFT JOIN (SELECT stream AS ref_stream, minute AS ref_minute, sumIf(n_refs, status = 'valid') AS refs
           FROM asset_minute_rollup WHERE {OURS} AND {TIME} AND asset = stream AND {pick('stream')}
           GROUP BY ref_stream, ref_minute) AS r
ON b.asset = r.ref_stream AND b.at_minute = r.ref_minute
GROUP BY time, stream ORDER BY time, stream
"""

# -- data quality -----------------------------------------------------------------------------

# field_minute_rollup's stream rows in the range (non-duplicate JSON objects)
FIELD_ROWS = EVENTS

FIELDS_TABLE = f"""
WITH
totals AS (SELECT stream, {OBJECTS} AS objects FROM asset_minute_rollup WHERE {EVENTS} GROUP BY stream),
per_field AS (
    SELECT stream, field, arrayStringConcat(arraySort(groupUniqArrayIf(type, type != 'null')), ', ') AS types,
           {PRESENT} AS present, sumIf(n_bad, type != 'null') AS bad, min(ts_min) AS first_ts, max(ts_max) AS last_ts
    FROM field_minute_rollup WHERE {FIELD_ROWS} GROUP BY stream, field
),
distincts AS (
    -- all history (field_rollup): approximate distinct values per type, summed over the types
    SELECT stream, field, sum(per_type) AS distinct_approx FROM (
        SELECT stream, field, type, uniqCombinedMerge(distinct_values) AS per_type FROM field_rollup
        WHERE {OURS} AND asset = stream AND type != 'null' AND {pick('stream')}
        GROUP BY stream, field, type)
    GROUP BY stream, field
)
SELECT f.stream AS stream, f.field AS field, has({contract_fields_sql(PREFIX, 'f.stream')}, f.field) AS in_contract,
       f.types AS types, f.present / t.objects AS completeness,
       if(f.present = 0, NULL, 1 - f.bad / f.present) AS validity, d.distinct_approx AS distinct_approx,
       f.first_ts AS first_ts, f.last_ts AS last_ts
FROM per_field AS f
INNER JOIN totals AS t ON f.stream = t.stream
LEFT JOIN distincts AS d ON f.stream = d.stream AND f.field = d.field
ORDER BY completeness, validity, stream, field
"""

_STREAM_OBJECTS = f"""
per_stream AS (
    SELECT $__timeInterval(minute) AS time, stream, {OBJECTS} AS objects, sum(n) AS events,
           sumIf(n, status = 'valid') AS valid, sumIf(n, status = 'duplicate') AS duplicates,
           sumIf(n, status = 'invalid') AS invalid, {LATE} AS late
    FROM asset_minute_rollup WHERE {EVENTS} GROUP BY time, stream
)"""

_FIELDS_PER_INTERVAL = f"""
per_field AS (
    SELECT $__timeInterval(minute) AS time, stream, field AS name, {PRESENT} AS n_present,
           sumIf(n_bad, type != 'null') AS n_bad_present, sum(n_bad) AS n_blamed
    FROM field_minute_rollup WHERE {FIELD_ROWS} GROUP BY time, stream, name
)"""

# Only the fields that were incomplete somewhere in the range: the rest sit at 100%.
FIELD_COMPLETENESS = f"""
WITH {_FIELDS_PER_INTERVAL}, {_STREAM_OBJECTS},
gaps AS (
    SELECT p.stream AS stream, p.name AS name
    FROM (SELECT stream, name, sum(n_present) AS field_present FROM per_field GROUP BY stream, name) AS p
    INNER JOIN (SELECT stream, sum(objects) AS stream_objects FROM per_stream GROUP BY stream) AS s
    ON p.stream = s.stream
    WHERE p.field_present < s.stream_objects
)
SELECT f.time AS time, concat(f.stream, '.', f.name) AS field, f.n_present / s.objects AS completeness
FROM per_field AS f
INNER JOIN per_stream AS s ON f.time = s.time AND f.stream = s.stream
WHERE (f.stream, f.name) IN (SELECT stream, name FROM gaps)
ORDER BY time, field
"""

# Only the fields a rejection blamed in the range (invalid_type / invalid_value / invalid_ts).
FIELD_VALIDITY = f"""
WITH {_FIELDS_PER_INTERVAL},
blamed AS (SELECT stream, name FROM per_field GROUP BY stream, name HAVING sum(n_blamed) > 0)
SELECT time, concat(stream, '.', name) AS field, 1 - n_bad_present / n_present AS validity
FROM per_field
WHERE n_present > 0 AND (stream, name) IN (SELECT stream, name FROM blamed)
ORDER BY time, field
"""

# Per stream and interval: the components that are meaningful per interval (freshness is not:
# it is "now minus the newest event", shown per asset instead).
QUALITY_OVER_TIME = f"""
WITH {_FIELDS_PER_INTERVAL}, {_STREAM_OBJECTS},
presence AS (
    SELECT time, stream, mapFromArrays(groupArray(name), groupArray(n_present)) AS present
    FROM per_field GROUP BY time, stream
),
completeness AS (
    SELECT time, stream, {_completeness_counts('stream')}
    FROM (SELECT c.time AS time, c.stream AS stream, {_FIELD_EVENTS} AS field_events, p.present AS present
          FROM (SELECT time, stream, objects AS field_events FROM per_stream) AS c
          LEFT JOIN presence AS p ON c.time = p.time AND c.stream = p.stream)
)
SELECT c.time AS time, c.stream AS stream,
       {component_sql(COMPONENTS["completeness"], _COUNTS)} AS completeness,
       {component_sql(COMPONENTS["validity"], _COUNTS)} AS validity,
       {component_sql(COMPONENTS["uniqueness"], _COUNTS)} AS uniqueness,
       {component_sql(COMPONENTS["timeliness"], _COUNTS)} AS on_time
FROM per_stream AS c LEFT JOIN completeness AS q ON c.time = q.time AND c.stream = q.stream
ORDER BY time, stream
"""

# processors.drift.detect_drift over the range: a field or a type first seen more than the grace
# after its stream (field) began, a field not seen for the vanish span while the stream went on.
# Field clocks are the minute rollup's first/last event times (exact within each minute).
DRIFT = f"""
WITH
ft AS (
    SELECT stream, field, type, min(ts_min) AS first_ts, max(ts_max) AS last_ts, sum(n) AS type_events
    FROM field_minute_rollup
    WHERE {FIELD_ROWS} AND status = 'valid' AND type != 'null'
    GROUP BY stream, field, type
),
spans AS (SELECT stream, min(ts_min) AS s_first, max(ts_max) AS s_last FROM asset_minute_rollup
          WHERE {EVENTS} AND status = 'valid' GROUP BY stream),
fields AS (
    SELECT stream, field, min(first_ts) AS f_first, max(last_ts) AS f_last,
           argMin(type, (first_ts, type)) AS first_type, argMax(type, (first_ts, type)) AS last_type
    FROM ft GROUP BY stream, field
)
SELECT at, stream, field, kind, type, details FROM (
    SELECT f.f_first AS at, f.stream AS stream, f.field AS field, 'new_field' AS kind, f.first_type AS type,
           concat(field, ' first seen ', toString(round(dateDiff('millisecond', s.s_first, f.f_first) / 1000)),
                  's after the stream began, as ', type) AS details
    FROM fields AS f INNER JOIN spans AS s ON f.stream = s.stream
    WHERE f.f_first > s.s_first + INTERVAL ${{drift_grace_s}} SECOND
    UNION ALL
    SELECT t.first_ts AS at, t.stream AS stream, t.field AS field, 'type_change' AS kind, t.type AS type,
           concat(field, ' was ', f.first_type, ', now also ', type, ' (', toString(t.type_events), ' events)')
               AS details
    FROM ft AS t INNER JOIN fields AS f ON t.stream = f.stream AND t.field = f.field
    WHERE t.first_ts > f.f_first + INTERVAL ${{drift_grace_s}} SECOND
    UNION ALL
    SELECT f.f_last AS at, f.stream AS stream, f.field AS field, 'vanished_field' AS kind, f.last_type AS type,
           concat(field, ' not seen for ', toString(round(dateDiff('millisecond', f.f_last, s.s_last) / 1000)),
                  's while the stream went on') AS details
    FROM fields AS f INNER JOIN spans AS s ON f.stream = s.stream
    WHERE f.f_last < s.s_last - INTERVAL ${{field_vanish_after_s}} SECOND
)
ORDER BY at DESC, stream, field, kind
"""

DEAD_LETTERS_PER_MIN = f"""
SELECT time, label AS reason, dead_letters FROM (
    SELECT $__timeInterval(minute) AS time, concat(stream, ': ', reason) AS label, sum(n) / {PER_MIN} AS dead_letters
    FROM asset_minute_rollup WHERE {EVENTS} AND status = 'invalid'
    GROUP BY time, label
)
ORDER BY time, reason
"""

# share: of the stream's events in the range
DEAD_LETTERS_BY_REASON = f"""
SELECT stream, reason, dead_letters, dead_letters / stream_events AS share, last_seen FROM (
    SELECT stream, reason, sumIf(n, status = 'invalid') AS dead_letters,
           sum(sum(n)) OVER (PARTITION BY stream) AS stream_events,
           maxIf(ingest_max, status = 'invalid') AS last_seen
    FROM asset_minute_rollup WHERE {EVENTS}
    GROUP BY stream, reason
)
WHERE dead_letters > 0
ORDER BY dead_letters DESC, stream, reason
"""

# Rejections and warnings per asset, contract version and check (breach_rollup: all history,
# per check; a check counts when its first..last breach overlaps the range).
CONTRACT_BREACHES = f"""
SELECT asset, version, severity, if(rule_name = '', rule, concat(rule, ' (', rule_name, ')')) AS breach,
       sum(n) AS events, min(ts_min) AS first_ts, max(ts_max) AS last_ts
FROM breach_rollup
WHERE {OURS} AND {pick('stream')} AND ts_max >= $__fromTime AND ts_min <= $__toTime
GROUP BY asset, version, severity, rule, rule_name
ORDER BY events DESC, asset, version, breach
"""

# -- alerts and baselines (alerts: the stocktake.alerts topic's queryable copy) ----------------

ALERT_FILTER = f"{OF_PREFIX} AND {pick('asset')}"
_SEVERITY_ORDER = "multiIf(severity = 'critical', 0, severity = 'warning', 1, 2)"
ALERT_COUNTS = f"""
SELECT countIf(state = 'firing' AND severity = 'critical') AS critical,
       countIf(state = 'firing' AND severity = 'warning') AS warning,
       countIf(state = 'firing' AND severity NOT IN ('critical', 'warning')) AS info,
       countIf(state = 'resolved' AND resolved_at >= $__fromTime AND resolved_at <= $__toTime) AS resolved_in_range
FROM alerts FINAL WHERE {ALERT_FILTER}
"""

OPEN_ALERTS = f"""
SELECT alert_id, asset, kind, severity, opened_at, dateDiff('second', opened_at, now()) AS open_for_s,
       clock, reason, expected, observed
FROM alerts FINAL WHERE state = 'firing' AND {ALERT_FILTER}
ORDER BY {_SEVERITY_ORDER}, opened_at DESC
"""

RECENT_ALERTS = f"""
SELECT alert_id, asset, kind, severity, toString(state) AS state, opened_at, resolved_at,
       dateDiff('second', opened_at, ifNull(resolved_at, now64(3))) AS duration_s, reason
FROM alerts FINAL
WHERE ($__timeFilter(opened_at) OR $__timeFilter(resolved_at)) AND {ALERT_FILTER}
ORDER BY opened_at DESC LIMIT 200
"""

DRIFT_ALERTS = f"""
SELECT opened_at, asset, severity, toString(state) AS state, reason, details
FROM alerts FINAL WHERE kind = 'schema_drift' AND $__timeFilter(opened_at) AND {ALERT_FILTER}
ORDER BY opened_at DESC LIMIT 100
"""

# Under "All" the baseline panels draw the streams only (four lines per asset add up fast);
# choosing assets draws those.
STREAMS_UNLESS_PICKED = f"(NOT has([${{asset:singlequote}}], '{ALL}') OR position(asset, '/') = 0)"


def baseline(metric_filter: str, series: str) -> str:
    return f"""
SELECT minute AS time, {series} AS series, observed, expected, lower, upper
FROM baselines FINAL
WHERE {metric_filter} AND $__timeFilter(minute) AND {ALERT_FILTER} AND {STREAMS_UNLESS_PICKED}
ORDER BY time, series
"""


VOLUME_BASELINE = baseline("metric = 'events'", "asset")
COMPLETENESS_BASELINE = baseline("startsWith(metric, 'completeness:')",
                                 "concat(asset, ' ', substring(metric, 14))")
ORPHAN_BASELINE = baseline("metric = 'orphans'", "asset")

# The newest valid event of each asset as of the end of the range: the all-time newest
# (asset_rollup) when the range ends after it, else the newest in the week before the range's
# end (the minute rollup; NULL when the asset was silent all that week). Minute resolution: the
# range's last minute counts whole.
SILENCE_LOOKBACK = "INTERVAL 7 DAY"
SILENCE = f"""
SELECT asset, last_event, greatest(0, dateDiff('second', last_event, least(now(), $__toTime))) AS silent_s
FROM (
    SELECT a.asset AS asset, if(a.newest <= $__toTime, a.newest, m.newest) AS last_event
    FROM (SELECT asset, max(ts_max) AS newest, min(ts_min) AS oldest
          FROM asset_rollup WHERE {OURS} AND status = 'valid' AND {PICKED} AND {pick('asset')}
          GROUP BY asset HAVING oldest <= $__toTime) AS a
    LEFT JOIN (SELECT asset, toNullable(max(ts_max)) AS newest FROM asset_minute_rollup
               WHERE {OURS} AND status = 'valid' AND minute <= $__toTime
                     AND minute > $__toTime - {SILENCE_LOOKBACK} AND {PICKED} AND {pick('asset')}
               GROUP BY asset) AS m
    ON a.asset = m.asset
)
ORDER BY silent_s DESC, asset
"""

# -- scores (stocktake.scores.users / .products; no topic prefix in this table) ----------------

SCORES = f"scores WHERE {OF_PREFIX} AND $__timeFilter(scored_at) AND {pick('entity')} AND {pick('model')}"

SCORE_TOTALS = f"""
SELECT count() AS scored, uniqExactIf(id, entity = 'user') AS users, uniqExactIf(id, entity = 'product') AS products,
       countIf(scored_at > $__toTime - INTERVAL 5 MINUTE) / 5 AS rate_5m,
       quantile(0.95)(latency_ms) AS latency_p95_ms
FROM {SCORES}
"""

# The scorer's lag (services/scoring.py stores it every few seconds): events stored and not yet
# folded into the features, and how far its event time is behind the newest stored.
SCORING_LAG = f"""
SELECT $__timeInterval(at) AS time, max(lag_events) AS lag_events, max(lag_s) AS lag_s
FROM scoring_lag WHERE {OF_PREFIX} AND $__timeFilter(at)
GROUP BY time ORDER BY time
"""

SCORE_HISTOGRAM = f"""
SELECT if(entity = 'user', score, NULL) AS user_score, if(entity = 'product', score, NULL) AS product_score
FROM {SCORES}
ORDER BY scored_at DESC LIMIT 100000
"""

SCORE_QUANTILES = f"""
SELECT $__timeInterval(scored_at) AS time, entity, quantile(0.1)(score) AS p10, quantile(0.5)(score) AS p50,
       quantile(0.9)(score) AS p90
FROM {SCORES}
GROUP BY time, entity ORDER BY time, entity
"""


def top_scores(entity: str) -> str:
    return f"""
SELECT id, argMax(score, scored_at) AS score, argMax(model_version, scored_at) AS model_version,
       max(scored_at) AS last_scored
FROM {SCORES} AND entity = '{entity}'
GROUP BY id ORDER BY score DESC, id LIMIT 20
"""


SCORING_LATENCY = f"""
SELECT $__timeInterval(scored_at) AS time, device, quantile(0.5)(latency_ms) AS p50,
       quantile(0.95)(latency_ms) AS p95, quantile(0.99)(latency_ms) AS p99
FROM {SCORES}
GROUP BY time, device ORDER BY time, device
"""

SCORES_PER_VERSION = f"""
SELECT $__timeInterval(scored_at) AS time, concat(model, ' ', model_version) AS version,
       count() / ($__interval_s / 60) AS scores_per_min
FROM {SCORES}
GROUP BY time, version ORDER BY time, version
"""

MODEL_VERSIONS = f"""
SELECT model, model_version, entity, device, count() AS scored, min(scored_at) AS first_scored,
       max(scored_at) AS last_scored, avg(score) AS mean_score, quantile(0.95)(latency_ms) AS latency_p95_ms
FROM {SCORES}
GROUP BY model, model_version, entity, device ORDER BY last_scored DESC
"""

# -- catalog findings (services/catalog.py) --------------------------------------------------------

# The newest snapshot the worker wrote (migration 014): at most 34 rows, whatever the catalog's
# size and the range (the findings are the catalog as it is now).
_CATALOG_SNAPSHOT = (f"catalog_findings WHERE {OF_PREFIX} AND updated_at = "
                     f"(SELECT max(updated_at) FROM catalog_findings WHERE {OF_PREFIX})")

CATALOG_COUNTS = f"""
SELECT maxIf(items, finding = 'catalog') AS catalog_products,
       maxIf(items, finding = 'likely_duplicates') AS duplicate_groups,
       maxIf(products, finding = 'likely_duplicates') AS duplicate_products,
       maxIf(items, finding = 'indistinct_text') AS indistinct_texts,
       maxIf(items, finding = 'category_mismatch') AS category_mismatches
FROM {_CATALOG_SNAPSHOT} AND rank = 0
"""

CATALOG_EXAMPLES = f"""
SELECT finding, rank AS example, similarity, products AS example_products,
       arrayStringConcat(product_ids, ', ') AS ids, arrayStringConcat(arrayDistinct(texts), ' · ') AS example_texts,
       if(finding = 'category_mismatch', detail, arrayStringConcat(related, ' · ')) AS category_or_nearest
FROM {_CATALOG_SNAPSHOT} AND rank > 0 AND notEmpty(product_ids)
ORDER BY finding, rank
LIMIT 1 BY finding, rank
"""

# -- variable queries -------------------------------------------------------------------------

# The streams, assets and sources with events in the range (the minute rollup's keys).
VAR_STREAM = f"SELECT DISTINCT stream FROM asset_minute_rollup WHERE {OURS} AND {TIME} ORDER BY stream"
VAR_ASSET = (f"SELECT DISTINCT asset FROM asset_minute_rollup WHERE {OURS} AND {TIME} AND {pick('stream')} "
             "ORDER BY asset")
VAR_SOURCE = (f"SELECT DISTINCT source FROM asset_minute_rollup WHERE {OURS} AND {TIME} AND {pick('stream')} "
              "AND source != '' ORDER BY source")
VAR_MODEL = f"SELECT DISTINCT model FROM scores WHERE {OF_PREFIX} AND $__timeFilter(scored_at) ORDER BY model"
