"""The SQL behind every panel, written against the store's views and tables.

Each statement uses Grafana variables (``${prefix}``, ``${stream}``, ``${asset}``,
``${source}``, ...) and the ClickHouse plugin's macros (``$__timeFilter``,
``$__timeInterval``, ``$__interval_s``, ``$__fromTime``/``$__toTime``); grafana.macros expands
both. The topic prefix is never hard-coded: every event query reads the parameterized views
of migration 003 with the dashboard's ``prefix`` variable.

Quality is processors.quality's score, written as SQL by that module from the same
declarations (components, weights, freshness, the field a rejection blames) with the required
fields of processors.contract, so the dashboards and ``stocktake inventory`` agree; the tests
check that they do.
"""

from __future__ import annotations

from stocktake.grafana.macros import ALL
from stocktake.processors.contract import STREAM_SPECS
from stocktake.processors.quality import COMPONENTS, bad_field_sql, component_sql, freshness_sql, score_sql

PREFIX = "${prefix:singlequote}"
LOG = f"prefixed_log(prefix = {PREFIX})"
ASSETS = f"prefixed_assets(prefix = {PREFIX})"


def pick(var: str, column: str | None = None) -> str:
    """A multi-value variable as a filter: "All" (the custom all value) passes everything."""
    column = column or var
    return f"(has([${{{var}:singlequote}}], '{ALL}') OR {column} IN (${{{var}:singlequote}}))"


TIME = "$__timeFilter(ts)"
EVENTS = f"{TIME} AND {pick('stream')} AND {pick('source')}"      # one row per event
ASSET_ROWS = f"{EVENTS} AND {pick('asset')}"                      # one row per (event, asset)
PER_MIN = "($__interval_s / 60)"   # divide a count per interval by this: events per minute
LAG_MS = "dateDiff('millisecond', ts, ingest_ts)"
LATE = f"{LAG_MS} > ${{lateness_s}} * 1000"
CATALOG = f"(SELECT product_id FROM {LOG} WHERE status = 'valid' AND stream = 'product')"

# JSON objects not removed as duplicates: the population of field profiles (as
# clickhouse.queries._OBJECT_EVENTS). The field blamed by a rejection comes from its reason.
OBJECT_FILTER = "status != 'duplicate' AND isValidJSON(payload) AND JSONType(payload) = 'Object'"
BAD_FIELD = bad_field_sql()
JSON_TYPE = """multiIf(JSONType(kv.2) IN ('Int64', 'UInt64', 'Double'), 'number',
            JSONType(kv.2) = 'String', 'string', JSONType(kv.2) = 'Bool', 'boolean',
            JSONType(kv.2) = 'Null', 'null', JSONType(kv.2) = 'Array', 'array', 'object')"""
PRESENT = "JSONType(kv.2) != 'Null'"
KV = "ARRAY JOIN JSONExtractKeysAndValuesRaw(payload) AS kv"


def _array(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


# The contract's required fields per stream: their completeness always counts, seen or not.
REQUIRED_FIELDS = ("multiIf(" + ", ".join(f"stream = '{s}', {_array(spec.required)}"
                                          for s, spec in STREAM_SPECS.items())
                   + ", CAST([] AS Array(String)))")
# Completeness's counts (processors.quality) from `present` (field -> events carrying it) and
# field_events, over the required and every observed field.
COMPLETENESS_COUNTS = f"""arrayDistinct(arrayConcat(mapKeys(present), {REQUIRED_FIELDS})) AS fields,
           length(fields) * field_events AS field_values,
           arraySum(f -> field_events - present[f], fields) AS missing_values"""
# The counts the components name, as the columns of the `counts` (c), `completeness` (q) and
# `amounts` (a) tables below.
_COUNTS = {**{k: f"c.{k}" for k in ("events", "valid", "duplicates", "invalid", "late")},
           "missing_values": "q.missing_values", "field_values": "q.field_values",
           "consistency_checked": "(c.product_refs + a.checked)", "consistency_failed": "(c.orphan_refs + a.failed)"}
_ASSET_COMPONENTS = ",\n           ".join(f"{component_sql(c, _COUNTS, 'freshness')} AS {name}"
                                          for name, c in COMPONENTS.items())


# -- per asset: counts, timeliness, quality (the inventory's numbers, over the time range) ----

_ASSET_QUALITY = f"""
WITH
ev AS (
    SELECT asset, stream, status, reason, ts, ingest_ts, payload, product_id
    FROM {ASSETS} WHERE {ASSET_ROWS}
),
counts AS (
    SELECT asset, count() AS events, countIf(status = 'valid') AS valid,
           countIf(status = 'duplicate') AS duplicates, countIf(status = 'invalid') AS invalid,
           countIf(ts > $__toTime - INTERVAL 5 MINUTE) / 5 AS rate_5m,
           if(valid = 0, NULL, maxIf(ts, status = 'valid')) AS last_event,
           quantileIf(0.95)(toFloat64({LAG_MS}), status = 'valid') AS lag_p95_ms,
           countIf(status = 'valid' AND {LATE}) AS late,
           countIf(status = 'valid' AND stream != 'product' AND product_id != '') AS product_refs,
           countIf(status = 'valid' AND stream != 'product' AND product_id != ''
                   AND product_id NOT IN {CATALOG}) AS orphan_refs
    FROM ev GROUP BY asset
),
obj AS (SELECT asset, stream, payload FROM ev WHERE {OBJECT_FILTER}),
presence AS (
    SELECT n.asset AS asset, n.stream AS stream, n.field_events AS field_events,
           mapFromArrays(p.fields, p.present) AS present
    FROM (SELECT asset, any(stream) AS stream, count() AS field_events FROM obj GROUP BY asset) AS n
    LEFT JOIN (
        SELECT asset, groupArray(field) AS fields, groupArray(n_present) AS present
        FROM (SELECT asset, kv.1 AS field, countIf({PRESENT}) AS n_present FROM obj {KV}
              GROUP BY asset, field)
        GROUP BY asset
    ) AS p ON n.asset = p.asset
),
completeness AS (SELECT asset, {COMPLETENESS_COUNTS} FROM presence),
amounts AS (
    -- amount vs quantity × the catalog price in force at the transaction's time
    SELECT arrayJoin(['transaction', concat('{STREAM_SPECS["transaction"].kind_asset("")}', t.kind),
                      concat('transaction/source=', t.source)]) AS asset,
           count() AS checked,
           countIf(abs(t.amount - t.quantity * c.price)
                   > ${{amount_tolerance}} * greatest(abs(t.quantity * c.price), 1.0)) AS failed
    FROM (SELECT kind, source, product_id, ts, JSONExtractFloat(payload, 'amount') AS amount,
                 JSONExtractInt(payload, 'quantity') AS quantity
          FROM {LOG} WHERE {EVENTS} AND status = 'valid' AND stream = 'transaction') AS t
    ASOF JOIN (SELECT product_id, ts, JSONExtractFloat(payload, 'price') AS price,
                      JSONHas(payload, 'price') AND JSONType(payload, 'price') != 'Null' AS has_price
               FROM {LOG} WHERE status = 'valid' AND stream = 'product' AND kind = 'upsert') AS c
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
SELECT count() AS events, countIf(status = 'valid') AS valid, countIf(status = 'duplicate') AS duplicates,
       countIf(status = 'invalid') AS invalid
FROM {LOG} WHERE {EVENTS}
"""

RATE_AND_FRESHNESS = f"""
SELECT countIf(ts > $__toTime - INTERVAL 5 MINUTE) / 5 AS rate_5m,
       uniqExact(asset) AS assets,
       if(countIf(status = 'valid') = 0, NULL,
          dateDiff('millisecond', maxIf(ts, status = 'valid'), now64(3)) / 1000) AS freshness_s
FROM {ASSETS} WHERE {ASSET_ROWS}
"""

EVENTS_PER_ASSET = f"""
SELECT $__timeInterval(ts) AS time, asset, count() / {PER_MIN} AS events_per_min
FROM {ASSETS} WHERE {ASSET_ROWS}
GROUP BY time, asset ORDER BY time, asset
"""

EVENTS_BY_STATUS = f"""
SELECT $__timeInterval(ts) AS time, countIf(status = 'valid') / {PER_MIN} AS valid,
       countIf(status = 'duplicate') / {PER_MIN} AS duplicates, countIf(status = 'invalid') / {PER_MIN} AS invalid
FROM {LOG} WHERE {EVENTS}
GROUP BY time ORDER BY time
"""

ENTITIES = f"""
SELECT
    (SELECT uniqExact(user_id) FROM {LOG} WHERE {EVENTS} AND status = 'valid' AND user_id != '') AS users,
    (SELECT countIf(last_op = 'upsert') FROM (
        SELECT product_id, argMax(kind, ts) AS last_op FROM {LOG}
        WHERE status = 'valid' AND stream = 'product' AND ts <= $__toTime GROUP BY product_id)) AS catalog,
    (SELECT uniqExact(product_id) FROM {LOG} WHERE {EVENTS} AND status = 'valid' AND product_id != ''
        AND stream != 'product') AS active_products,
    (SELECT uniqExact(order_id) FROM {LOG} WHERE {EVENTS} AND status = 'valid' AND stream = 'transaction'
        AND order_id != '') AS orders,
    (SELECT uniqExact(product_id) FROM {LOG} WHERE {EVENTS} AND status = 'valid'
        AND stream IN ('behaviour', 'transaction') AND product_id != ''
        AND product_id NOT IN {CATALOG}) AS orphans
"""

ACTIVE_ENTITIES = f"""
SELECT $__timeInterval(ts) AS time, uniqExactIf(user_id, user_id != '') AS users,
       uniqExactIf(product_id, product_id != '' AND stream != 'product') AS products,
       uniqExactIf(order_id, order_id != '' AND stream = 'transaction') AS orders
FROM {LOG} WHERE {EVENTS} AND status = 'valid'
GROUP BY time ORDER BY time
"""

_ORPHAN_REFS = (f"status = 'valid' AND stream IN ('behaviour', 'transaction') AND product_id != '' "
                f"AND product_id NOT IN {CATALOG}")

ORPHANS = f"""
SELECT product_id, count() AS refs, arrayStringConcat(arraySort(groupUniqArray(stream)), ', ') AS streams,
       min(ts) AS first_ref, max(ts) AS last_ref
FROM {LOG} WHERE {EVENTS} AND {_ORPHAN_REFS}
GROUP BY product_id ORDER BY refs DESC, product_id LIMIT 50
"""

ORPHAN_REFS_PER_MIN = f"""
SELECT $__timeInterval(ts) AS time, stream, count() / {PER_MIN} AS orphan_refs_per_min
FROM {LOG} WHERE {EVENTS} AND {_ORPHAN_REFS}
GROUP BY time, stream ORDER BY time, stream
"""

# -- data quality -----------------------------------------------------------------------------

_OBJECTS = f"""
obj AS (
    SELECT ts, stream, payload, {BAD_FIELD} AS bad_field
    FROM {LOG} WHERE {EVENTS} AND {OBJECT_FILTER}
)"""

FIELDS_TABLE = f"""
WITH {_OBJECTS},
totals AS (SELECT stream, count() AS n FROM obj GROUP BY stream)
SELECT f.stream AS stream, f.field AS field, f.types AS types, f.present / t.n AS completeness,
       if(f.present = 0, NULL, 1 - f.bad / f.present) AS validity, f.distinct_approx AS distinct_approx,
       f.first_ts AS first_ts, f.last_ts AS last_ts
FROM (
    SELECT stream, kv.1 AS field,
           arrayStringConcat(arraySort(groupUniqArrayIf({JSON_TYPE}, {PRESENT})), ', ') AS types,
           countIf({PRESENT}) AS present, countIf({PRESENT} AND bad_field = kv.1) AS bad,
           uniqIf(kv.2, {PRESENT}) AS distinct_approx, min(ts) AS first_ts, max(ts) AS last_ts
    FROM obj {KV} GROUP BY stream, field
) AS f
INNER JOIN totals AS t ON f.stream = t.stream
ORDER BY completeness, validity, stream, field
"""

# Only the fields that were incomplete somewhere in the range: the rest sit at 100%.
FIELD_COMPLETENESS = f"""
WITH {_OBJECTS},
per_field AS (
    SELECT $__timeInterval(ts) AS time, stream, kv.1 AS field, countIf({PRESENT}) AS present
    FROM obj {KV} GROUP BY time, stream, field
),
per_stream AS (SELECT $__timeInterval(ts) AS time, stream, count() AS n FROM obj GROUP BY time, stream),
gaps AS (
    SELECT p.stream AS stream, p.field AS field
    FROM (SELECT stream, field, sum(present) AS present FROM per_field GROUP BY stream, field) AS p
    INNER JOIN (SELECT stream, sum(n) AS n FROM per_stream GROUP BY stream) AS s ON p.stream = s.stream
    WHERE p.present < s.n
)
SELECT f.time AS time, concat(f.stream, '.', f.field) AS field, f.present / s.n AS completeness
FROM per_field AS f
INNER JOIN per_stream AS s ON f.time = s.time AND f.stream = s.stream
WHERE (f.stream, f.field) IN (SELECT stream, field FROM gaps)
ORDER BY time, field
"""

# Only the fields a rejection blamed in the range (invalid_type / invalid_value / invalid_ts).
FIELD_VALIDITY = f"""
WITH {_OBJECTS}
SELECT $__timeInterval(ts) AS time, concat(stream, '.', kv.1) AS field,
       1 - countIf(bad_field = kv.1) / count() AS validity
FROM obj {KV}
WHERE {PRESENT} AND (stream, kv.1) IN (SELECT DISTINCT stream, bad_field FROM obj WHERE bad_field != '')
GROUP BY time, field ORDER BY time, field
"""

# Per stream and interval: the components that are meaningful per interval (freshness is not:
# it is "now minus the newest event", shown per asset instead).
QUALITY_OVER_TIME = f"""
WITH {_OBJECTS},
presence AS (
    SELECT n.time AS time, n.stream AS stream, n.field_events AS field_events,
           mapFromArrays(p.fields, p.present) AS present
    FROM (SELECT $__timeInterval(ts) AS time, stream, count() AS field_events FROM obj GROUP BY time, stream) AS n
    LEFT JOIN (
        SELECT time, stream, groupArray(field) AS fields, groupArray(n_present) AS present
        FROM (SELECT $__timeInterval(ts) AS time, stream, kv.1 AS field, countIf({PRESENT}) AS n_present
              FROM obj {KV} GROUP BY time, stream, field)
        GROUP BY time, stream
    ) AS p ON n.time = p.time AND n.stream = p.stream
),
completeness AS (SELECT time, stream, {COMPLETENESS_COUNTS} FROM presence),
counts AS (
    SELECT $__timeInterval(ts) AS time, stream, count() AS events, countIf(status = 'valid') AS valid,
           countIf(status = 'duplicate') AS duplicates, countIf(status = 'invalid') AS invalid,
           countIf(status = 'valid' AND {LATE}) AS late
    FROM {LOG} WHERE {EVENTS} GROUP BY time, stream
)
SELECT c.time AS time, c.stream AS stream,
       {component_sql(COMPONENTS["completeness"], _COUNTS)} AS completeness,
       {component_sql(COMPONENTS["validity"], _COUNTS)} AS validity,
       {component_sql(COMPONENTS["uniqueness"], _COUNTS)} AS uniqueness,
       {component_sql(COMPONENTS["timeliness"], _COUNTS)} AS on_time
FROM counts AS c LEFT JOIN completeness AS q ON c.time = q.time AND c.stream = q.stream
ORDER BY time, stream
"""

# processors.drift.detect_drift over the range: a field or a type first seen more than the grace
# after its stream (field) began, a field not seen for the vanish span while the stream went on.
DRIFT = f"""
WITH
ft AS (
    SELECT stream, kv.1 AS field, {JSON_TYPE} AS type, min(ts) AS first_ts, max(ts) AS last_ts, count() AS n
    FROM {LOG} {KV}
    WHERE {EVENTS} AND status = 'valid' AND {PRESENT}
    GROUP BY stream, field, type
),
spans AS (SELECT stream, min(ts) AS s_first, max(ts) AS s_last FROM {LOG}
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
           concat(field, ' was ', f.first_type, ', now also ', type, ' (', toString(t.n), ' events)') AS details
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
SELECT $__timeInterval(ts) AS time, concat(stream, ': ', reason) AS reason, count() / {PER_MIN} AS dead_letters
FROM {LOG} WHERE {EVENTS} AND status = 'invalid'
GROUP BY time, reason ORDER BY time, reason
"""

# share: of the stream's events in the range
DEAD_LETTERS_BY_REASON = f"""
SELECT stream, reason, dead_letters, dead_letters / stream_events AS share, last_seen FROM (
    SELECT stream, reason, countIf(status = 'invalid') AS dead_letters,
           sum(count()) OVER (PARTITION BY stream) AS stream_events,
           maxIf(ingest_ts, status = 'invalid') AS last_seen
    FROM {LOG} WHERE {EVENTS}
    GROUP BY stream, reason
)
WHERE dead_letters > 0
ORDER BY dead_letters DESC, stream, reason
"""

# -- alerts and baselines (alerts: the stocktake.alerts topic's queryable copy) ----------------

# alerts, baselines and scores carry the deployment's prefix ('stocktake.') in topic_prefix
OF_PREFIX = f"topic_prefix = {PREFIX}"
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

SILENCE = f"""
SELECT asset, max(ts) AS last_event, dateDiff('second', max(ts), least(now(), $__toTime)) AS silent_s
FROM {ASSETS}
WHERE ts <= $__toTime AND status = 'valid' AND {pick('stream')} AND {pick('source')} AND {pick('asset')}
GROUP BY asset ORDER BY silent_s DESC, asset
"""

# -- scores (stocktake.scores.users / .products; no topic prefix in this table) ----------------

SCORES = f"scores WHERE {OF_PREFIX} AND $__timeFilter(scored_at) AND {pick('entity')} AND {pick('model')}"

SCORE_TOTALS = f"""
SELECT count() AS scored, uniqExactIf(id, entity = 'user') AS users, uniqExactIf(id, entity = 'product') AS products,
       countIf(scored_at > $__toTime - INTERVAL 5 MINUTE) / 5 AS rate_5m,
       quantile(0.95)(latency_ms) AS latency_p95_ms
FROM {SCORES}
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

# -- variable queries -------------------------------------------------------------------------

VAR_STREAM = f"SELECT DISTINCT stream FROM {LOG} WHERE $__timeFilter(ts) ORDER BY stream"
VAR_ASSET = (f"SELECT DISTINCT asset FROM {ASSETS} WHERE $__timeFilter(ts) AND {pick('stream')} "
             "ORDER BY asset")
VAR_SOURCE = (f"SELECT DISTINCT source FROM {LOG} WHERE $__timeFilter(ts) AND {pick('stream')} "
              "AND source != '' ORDER BY source")
VAR_MODEL = f"SELECT DISTINCT model FROM scores WHERE {OF_PREFIX} AND $__timeFilter(scored_at) ORDER BY model"
