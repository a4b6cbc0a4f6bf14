-- Every event judged by the worker, one row each, with its Kafka coordinates.
-- (stream, partition, offset, idx) is unique: the worker skips offsets at or
-- below the stored watermark, so a plain MergeTree keeps counts exact and a
-- double insert stays visible instead of being merged away.
CREATE TABLE IF NOT EXISTS ingest_log
(
    stream     LowCardinality(String),
    topic      LowCardinality(String),
    partition  UInt32,
    offset     UInt64,
    idx        UInt32,
    status     Enum8('valid' = 1, 'duplicate' = 2, 'invalid' = 3),
    reason     LowCardinality(String),
    event_id   String,
    kind       LowCardinality(String),
    source     LowCardinality(String),
    user_id    String,
    product_id String,
    order_id   String,
    ts         DateTime64(3, 'UTC'),
    ingest_ts  DateTime64(3, 'UTC'),
    payload    String CODEC(ZSTD(1))
)
ENGINE = MergeTree
ORDER BY (stream, partition, offset, idx);
