-- Continuous inventory: rollups kept current by ClickHouse as events are stored.
--
-- Each materialized view below runs on every insert into ingest_log (the block just
-- inserted, nothing else) and writes mergeable states into its table; merges and reads
-- combine them. ingest_log is written once per Kafka coordinate (the sink skips offsets at
-- or below the stored watermark before it inserts), so every rollup inherits the same
-- exactness: an event is aggregated once, whatever Kafka redelivers. `stocktake reconcile`
-- proves it against the raw events still retained.
--
-- Every table keeps `topic`, so prefix-scoped reads (startsWith(topic, prefix)) work as on
-- the raw log. Times: `minute` is the minute of event time (ingest time for events whose
-- time could not be read, as in ingest_log). `lag_s` is the lag histogram, keyed by the
-- lower bound of each bucket in whole seconds: key k < 3600 holds lags in
-- (1000k, 1000(k+1)] ms; then a bucket per minute up to a day, per hour up to 30 days, and
-- one beyond; key -1 holds lags <= 0 (producer clock ahead). Late events for a lateness L
-- are exactly the buckets >= L when L is a whole second under an hour, a whole minute under
-- a day or a whole hour under 30 days; at most ~5,800 buckets, whatever the history. Stores written before this migration are backfilled
-- from ingest_log at start (clickhouse/backfill.py).

-- What each stored event was judged under (#13, data contracts): the contract's version,
-- the field its stream's sub-assets are named by (the contract's `kind` role) and the
-- `warn` checks it breached. The views below name sub-assets by kind_key, so no rule of any
-- contract is written down here. Rows stored before contracts were files were judged by
-- contract v1 as it was built in: the DEFAULT gives those old parts the key it named (the
-- worker writes kind_key on every row); their version is ''. Migration 012 brings stores
-- made before these columns to this file's views.
ALTER TABLE ingest_log ADD COLUMN IF NOT EXISTS contract_version LowCardinality(String) DEFAULT '';
ALTER TABLE ingest_log ADD COLUMN IF NOT EXISTS kind_key LowCardinality(String)
    DEFAULT multiIf(stream = 'product', 'op', stream = 'transaction', 'status', stream = 'behaviour', 'event_type', '');
ALTER TABLE ingest_log ADD COLUMN IF NOT EXISTS warnings Array(LowCardinality(String)) DEFAULT [];

-- Per asset, minute, source, status and reason: the counts, clocks and lags.
CREATE TABLE IF NOT EXISTS asset_minute_rollup
(
    topic      LowCardinality(String),
    stream     LowCardinality(String),
    asset      LowCardinality(String),
    minute     DateTime('UTC'),
    source     LowCardinality(String),
    status     Enum8('valid' = 1, 'duplicate' = 2, 'invalid' = 3),
    reason     LowCardinality(String),
    n          SimpleAggregateFunction(sum, UInt64),
    n_objects  SimpleAggregateFunction(sum, UInt64),        -- of them, JSON objects
    n_refs     SimpleAggregateFunction(sum, UInt64),      -- of them, naming a product (not product stream)
    ts_min     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    ingest_min SimpleAggregateFunction(min, DateTime64(3, 'UTC')),   -- ingest time
    ingest_max SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    lag_s      SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    lag        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    -- distinct ids of valid events, on the stream's rows (products: from the other streams)
    users      AggregateFunction(uniqCombined, String),
    products   AggregateFunction(uniqCombined, String),
    orders     AggregateFunction(uniqCombined, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, stream, asset, minute, source, status, reason);

-- The same over all time: what the inventory reads (rows: assets x sources x reasons).
CREATE TABLE IF NOT EXISTS asset_rollup
(
    topic      LowCardinality(String),
    stream     LowCardinality(String),
    asset      LowCardinality(String),
    source     LowCardinality(String),
    status     Enum8('valid' = 1, 'duplicate' = 2, 'invalid' = 3),
    reason     LowCardinality(String),
    n          SimpleAggregateFunction(sum, UInt64),
    n_objects  SimpleAggregateFunction(sum, UInt64),
    n_refs     SimpleAggregateFunction(sum, UInt64),
    ts_min     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    ingest_min SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ingest_max SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    lag_s      SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    lag        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, stream, asset, source, status, reason);

-- Per asset, field and JSON type of the value, over non-duplicate JSON objects: presence,
-- the values a rejection blamed, the clocks. `type` 'null' is a field present as null.
CREATE TABLE IF NOT EXISTS field_minute_rollup
(
    topic      LowCardinality(String),
    stream     LowCardinality(String),
    asset      LowCardinality(String),
    minute     DateTime('UTC'),
    source     LowCardinality(String),
    status     Enum8('valid' = 1, 'duplicate' = 2, 'invalid' = 3),
    field      LowCardinality(String),
    type       LowCardinality(String),
    n          SimpleAggregateFunction(sum, UInt64),
    n_bad      SimpleAggregateFunction(sum, UInt64),
    ts_min     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max     SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, stream, asset, minute, source, status, field, type);

-- All time, with approximate distinct values and examples (stream rows only: the field
-- inventory is per stream; sub-assets need presence alone).
CREATE TABLE IF NOT EXISTS field_rollup
(
    topic      LowCardinality(String),
    stream     LowCardinality(String),
    asset      LowCardinality(String),
    status     Enum8('valid' = 1, 'duplicate' = 2, 'invalid' = 3),
    field      LowCardinality(String),
    type       LowCardinality(String),
    n          SimpleAggregateFunction(sum, UInt64),
    n_bad      SimpleAggregateFunction(sum, UInt64),
    ts_min     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    ingest_min SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ingest_max SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    distinct_values AggregateFunction(uniqCombined, String),
    example_values AggregateFunction(groupUniqArray(5), String)
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, stream, asset, status, field, type);

-- Entities keyed by id, from valid events: first/last event time and events.
CREATE TABLE IF NOT EXISTS user_rollup
(
    topic    LowCardinality(String),
    user_id  String,
    n        SimpleAggregateFunction(sum, UInt64),
    ts_min   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, user_id);

CREATE TABLE IF NOT EXISTS order_rollup
(
    topic    LowCardinality(String),
    order_id String,
    n        SimpleAggregateFunction(sum, UInt64),
    ts_min   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, order_id);

-- Products: the catalog's latest word (op and which attributes it carried) from the product
-- stream, and the references from the other streams per asset. Rows of one product come
-- from several topics (the catalog's and the behaviour/transaction ones); readers merge
-- them by product_id within the deployment's prefix.
CREATE TABLE IF NOT EXISTS product_rollup
(
    topic        LowCardinality(String),
    product_id   String,
    n            SimpleAggregateFunction(sum, UInt64),
    ts_min       SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max       SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    -- (time, what) of the newest catalog event; what: bit 0 op = upsert, bits 1-3 price,
    -- category, brand present (a plain max: newest wins, ties deterministically)
    catalog_last SimpleAggregateFunction(max, Tuple(DateTime64(3, 'UTC'), UInt8)),
    n_catalog    SimpleAggregateFunction(sum, UInt64),
    n_refs       SimpleAggregateFunction(sum, UInt64),                   -- references, all streams
    refs_by_asset SimpleAggregateFunction(sumMap, Map(String, UInt64)),   -- asset -> references
    ref_ts_min   SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    ref_ts_max   SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC')))
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, product_id);

-- Catalog prices in force from each upsert: the amount check's right side.
CREATE TABLE IF NOT EXISTS price_history
(
    topic      LowCardinality(String),
    product_id String,
    ts         DateTime64(3, 'UTC'),
    price      Float64,
    has_price  UInt8
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, product_id, ts);

-- Transaction lines, typed: the amount check's left side (no payload to parse at read).
CREATE TABLE IF NOT EXISTS transaction_lines
(
    topic      LowCardinality(String),
    event_id   String,
    kind       LowCardinality(String),
    source     LowCardinality(String),
    order_id   String,
    product_id String,
    ts         DateTime64(3, 'UTC'),
    quantity   Int64,
    amount     Float64
)
ENGINE = MergeTree
ORDER BY (topic, product_id, ts);

-- Per partition: the stored coordinates. Watermarks, event-time progress and
-- reconciliation read this, so they outlive the raw rows' retention.
CREATE TABLE IF NOT EXISTS partition_rollup
(
    topic        LowCardinality(String),
    partition    UInt32,
    n            SimpleAggregateFunction(sum, UInt64),
    n_messages   SimpleAggregateFunction(sum, UInt64),   -- rows with idx 0: one per Kafka message
    offset_min   SimpleAggregateFunction(min, UInt64),
    offset_max   SimpleAggregateFunction(max, UInt64),
    valid_ts_max SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    ingest_max   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, partition);

-- Breaches per asset, contract version, check and severity: every rejection (reject
-- severity, the reason) and every warning (warn severity). `rule` is the check's code
-- without the rule name: missing_field:product_id; `rule_name` names a conditional rule.
CREATE TABLE IF NOT EXISTS breach_rollup
(
    topic      LowCardinality(String),
    stream     LowCardinality(String),
    asset      LowCardinality(String),
    version    LowCardinality(String),
    severity   LowCardinality(String),
    rule       LowCardinality(String),
    rule_name  LowCardinality(String),
    field      LowCardinality(String),
    n          SimpleAggregateFunction(sum, UInt64),
    ts_min     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ts_max     SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (topic, stream, asset, version, severity, rule, rule_name, field)
SETTINGS non_replicated_deduplication_window = 1000;

-- ---------------------------------------------------------------- the views that fill them
--
-- ingest_log -> *_facts (Null tables: they store nothing, they hand each insert's
-- pre-aggregated block on) -> the minute and the all-time rollups. Each payload is
-- parsed once per insert, however many rollups read it. The asset list of an event is
-- the prefixed_assets view's (migration 003); tests/test_rollups.py checks they agree.

CREATE TABLE IF NOT EXISTS asset_facts AS asset_minute_rollup ENGINE = Null;

-- Aggregated per (stream, kind, source) first, then spread over the event's assets.
CREATE MATERIALIZED VIEW IF NOT EXISTS asset_facts_mv TO asset_facts AS
SELECT topic, stream, asset, minute, source, status, reason,
       sum(events) AS n, sum(objects) AS n_objects, sum(product_refs) AS n_refs,
       min(min_ts) AS ts_min, max(max_ts) AS ts_max, min(first_seen) AS ingest_min, max(last_seen) AS ingest_max,
       sumMap(lag_s) AS lag_s, quantilesTDigestMergeState(0.5, 0.95, 0.99)(lag) AS lag,
       uniqCombinedMergeStateIf(users, asset = stream) AS users,
       uniqCombinedMergeStateIf(products, asset = stream) AS products,
       uniqCombinedMergeStateIf(orders, asset = stream) AS orders
FROM (
    SELECT topic, stream, kind, kind_key, source, toStartOfMinute(ts) AS minute, status, reason,
           count() AS events, countIf(JSONType(payload) = 'Object') AS objects,
           countIf(stream != 'product' AND product_id != '') AS product_refs,
           min(ts) AS min_ts, max(ts) AS max_ts, min(ingest_ts) AS first_seen, max(ingest_ts) AS last_seen,
           sumMap(map(lag_bucket, toUInt64(1))) AS lag_s,
           quantilesTDigestState(0.5, 0.95, 0.99)(toFloat64(lag_ms)) AS lag,
           uniqCombinedStateIf(user_id, status = 'valid' AND user_id != '') AS users,
           uniqCombinedStateIf(product_id, status = 'valid' AND product_id != '' AND stream != 'product') AS products,
           uniqCombinedStateIf(order_id, status = 'valid' AND order_id != '' AND stream = 'transaction') AS orders
    FROM (SELECT *, dateDiff('millisecond', ts, ingest_ts) AS lag_ms,
                 intDiv(lag_ms - 1, 1000) AS lag_whole_s,
                 toInt32(multiIf(lag_ms <= 0, -1, lag_whole_s < 3600, lag_whole_s,
                                 lag_whole_s < 86400, lag_whole_s - lag_whole_s % 60,
                                 lag_whole_s < 2592000, lag_whole_s - lag_whole_s % 3600, 2592000)) AS lag_bucket
          FROM ingest_log)
    GROUP BY topic, stream, kind, kind_key, source, minute, status, reason
)
ARRAY JOIN arrayFilter(a -> a != '', [
               stream,
               if(kind = '' OR kind_key = '', '', concat(stream, '/', kind_key, '=', kind)),
               if(source = '', '', concat(stream, '/source=', source))
           ]) AS asset
GROUP BY topic, stream, asset, minute, source, status, reason;

CREATE MATERIALIZED VIEW IF NOT EXISTS asset_minute_mv TO asset_minute_rollup AS
SELECT * FROM asset_facts;

CREATE MATERIALIZED VIEW IF NOT EXISTS asset_mv TO asset_rollup AS
SELECT topic, stream, asset, source, status, reason, sum(n) AS n, sum(n_objects) AS n_objects,
       sum(n_refs) AS n_refs, min(ts_min) AS ts_min, max(ts_max) AS ts_max,
       min(ingest_min) AS ingest_min, max(ingest_max) AS ingest_max, sumMap(lag_s) AS lag_s,
       quantilesTDigestMergeState(0.5, 0.95, 0.99)(lag) AS lag
FROM asset_facts
GROUP BY topic, stream, asset, source, status, reason;

-- A field's value type, and the field a rejection blames (processors/quality.py
-- BLAMED_FIELD / BLAMING_KINDS; tests/test_rollups.py checks both against Python).
CREATE TABLE IF NOT EXISTS field_facts
(
    topic      LowCardinality(String),
    stream     LowCardinality(String),
    asset      LowCardinality(String),
    minute     DateTime('UTC'),
    source     LowCardinality(String),
    status     Enum8('valid' = 1, 'duplicate' = 2, 'invalid' = 3),
    field      LowCardinality(String),
    type       LowCardinality(String),
    n          UInt64,
    n_bad      UInt64,
    ts_min     DateTime64(3, 'UTC'),
    ts_max     DateTime64(3, 'UTC'),
    ingest_min DateTime64(3, 'UTC'),
    ingest_max DateTime64(3, 'UTC'),
    distinct_values AggregateFunction(uniqCombined, String),
    example_values AggregateFunction(groupUniqArray(5), String)
)
ENGINE = Null;

-- The raw value's first byte names its JSON type (the payload was parsed as JSON already).
CREATE MATERIALIZED VIEW IF NOT EXISTS field_facts_mv TO field_facts AS
SELECT topic, stream, asset, minute, source, status, field, type,
       sum(n) AS n, sum(bad) AS n_bad, min(min_ts) AS ts_min, max(max_ts) AS ts_max,
       min(first_seen) AS ingest_min, max(last_seen) AS ingest_max,
       uniqCombinedMergeStateIf(distinct_values, asset = stream) AS distinct_values,
       groupUniqArrayMergeStateIf(5)(examples, asset = stream) AS example_values
FROM (
    SELECT topic, stream, kind, kind_key, source, toStartOfMinute(ts) AS minute, status, kv.1 AS field,
           multiIf(substring(kv.2, 1, 1) = '"', 'string', substring(kv.2, 1, 1) IN ('t', 'f'), 'boolean',
                   substring(kv.2, 1, 1) = 'n', 'null', substring(kv.2, 1, 1) = '[', 'array',
                   substring(kv.2, 1, 1) = '{', 'object', 'number') AS type,
           count() AS n,
           countIf(multiIf(reason = 'invalid_ts', 'ts',
                           startsWith(reason, 'invalid_type:') OR startsWith(reason, 'invalid_value:'),
                           substring(reason, position(reason, ':') + 1), '') = kv.1) AS bad,
           min(ts) AS min_ts, max(ts) AS max_ts, min(ingest_ts) AS first_seen, max(ingest_ts) AS last_seen,
           uniqCombinedState(kv.2) AS distinct_values, groupUniqArrayState(5)(kv.2) AS examples
    FROM ingest_log
    ARRAY JOIN JSONExtractKeysAndValuesRaw(payload) AS kv
    WHERE status != 'duplicate'
    GROUP BY topic, stream, kind, kind_key, source, minute, status, field, type
)
ARRAY JOIN arrayFilter(a -> a != '', [
               stream,
               if(kind = '' OR kind_key = '', '', concat(stream, '/', kind_key, '=', kind)),
               if(source = '', '', concat(stream, '/source=', source))
           ]) AS asset
GROUP BY topic, stream, asset, minute, source, status, field, type;

CREATE MATERIALIZED VIEW IF NOT EXISTS field_minute_mv TO field_minute_rollup AS
SELECT topic, stream, asset, minute, source, status, field, type, n, n_bad, ts_min, ts_max
FROM field_facts;

CREATE MATERIALIZED VIEW IF NOT EXISTS field_mv TO field_rollup AS
SELECT topic, stream, asset, status, field, type, sum(n) AS n, sum(n_bad) AS n_bad,
       min(ts_min) AS ts_min, max(ts_max) AS ts_max, min(ingest_min) AS ingest_min, max(ingest_max) AS ingest_max,
       uniqCombinedMergeState(distinct_values) AS distinct_values,
       groupUniqArrayMergeState(5)(example_values) AS example_values
FROM field_facts
GROUP BY topic, stream, asset, status, field, type;

CREATE MATERIALIZED VIEW IF NOT EXISTS user_mv TO user_rollup AS
SELECT topic, user_id, count() AS n, min(ts) AS ts_min, max(ts) AS ts_max
FROM ingest_log WHERE status = 'valid' AND user_id != ''
GROUP BY topic, user_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS order_mv TO order_rollup AS
SELECT topic, order_id, count() AS n, min(ts) AS ts_min, max(ts) AS ts_max
FROM ingest_log WHERE status = 'valid' AND stream = 'transaction' AND order_id != ''
GROUP BY topic, order_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS product_mv TO product_rollup AS
SELECT topic, product_id, count() AS n, min(ts) AS ts_min, max(ts) AS ts_max,
       maxIf(tuple(ts, catalog_bits), stream = 'product') AS catalog_last,
       countIf(stream = 'product') AS n_catalog, countIf(stream != 'product') AS n_refs,
       sumMapIf(mapFromArrays(assets, arrayMap(a -> toUInt64(1), assets)), stream != 'product') AS refs_by_asset,
       minIfOrNull(ts, stream != 'product') AS ref_ts_min, maxIfOrNull(ts, stream != 'product') AS ref_ts_max
FROM (
    SELECT topic, product_id, stream, ts,
           if(stream = 'product',
              toUInt8(kind = 'upsert')
              + 2 * toUInt8(JSONHas(payload, 'price') AND JSONType(payload, 'price') != 'Null')
              + 4 * toUInt8(JSONHas(payload, 'category') AND JSONType(payload, 'category') != 'Null')
              + 8 * toUInt8(JSONHas(payload, 'brand') AND JSONType(payload, 'brand') != 'Null'),
              toUInt8(0)) AS catalog_bits,
           arrayFilter(a -> a != '', [
               stream,
               if(kind = '' OR kind_key = '', '', concat(stream, '/', kind_key, '=', kind)),
               if(source = '', '', concat(stream, '/source=', source))
           ]) AS assets
    FROM ingest_log WHERE status = 'valid' AND product_id != ''
)
GROUP BY topic, product_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS price_mv TO price_history AS
SELECT topic, product_id, ts, JSONExtractFloat(payload, 'price') AS price,
       toUInt8(JSONHas(payload, 'price') AND JSONType(payload, 'price') != 'Null') AS has_price
FROM ingest_log WHERE status = 'valid' AND stream = 'product' AND kind = 'upsert';

CREATE MATERIALIZED VIEW IF NOT EXISTS transaction_mv TO transaction_lines AS
SELECT topic, event_id, kind, source, order_id, product_id, ts,
       JSONExtractInt(payload, 'quantity') AS quantity, JSONExtractFloat(payload, 'amount') AS amount
FROM ingest_log WHERE status = 'valid' AND stream = 'transaction';

CREATE MATERIALIZED VIEW IF NOT EXISTS partition_mv TO partition_rollup AS
SELECT topic, partition, count() AS n, countIf(idx = 0) AS n_messages, min(offset) AS offset_min,
       max(offset) AS offset_max, maxIfOrNull(ts, status = 'valid') AS valid_ts_max, max(ingest_ts) AS ingest_max
FROM ingest_log
GROUP BY topic, partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS breach_mv TO breach_rollup AS
SELECT topic, stream, asset, version, severity, splitByChar('@', code)[1] AS rule,
       if(position(code, '@') > 0, substring(code, position(code, '@') + 1), '') AS rule_name,
       if(position(rule, ':') > 0, substring(rule, position(rule, ':') + 1), if(rule = 'invalid_ts', 'ts', '')) AS field,
       sum(events) AS n, min(min_ts) AS ts_min, max(max_ts) AS ts_max
FROM (
    SELECT topic, stream, kind, kind_key, source, contract_version AS version,
           if(status = 'invalid', 'reject', 'warn') AS severity, code,
           count() AS events, min(ts) AS min_ts, max(ts) AS max_ts
    FROM ingest_log
    ARRAY JOIN if(status = 'invalid', [toString(reason)], arrayMap(w -> toString(w), warnings)) AS code
    WHERE status = 'invalid' OR (status = 'valid' AND notEmpty(warnings))
    GROUP BY topic, stream, kind, kind_key, source, version, severity, code
)
ARRAY JOIN arrayFilter(a -> a != '', [
               stream,
               if(kind = '' OR kind_key = '', '', concat(stream, '/', kind_key, '=', kind)),
               if(source = '', '', concat(stream, '/source=', source))
           ]) AS asset
GROUP BY topic, stream, asset, version, severity, rule, rule_name, field;
