-- The webhook's outbox (services/outbox.py): one row per page per state change; the newest
-- version of an idempotency_key wins. version = state rank << 32 | attempts, so a final state
-- (dropped < dead < delivered) is never undone by a late retry row of the same page.
-- Pages are kept 30 days after they were created (pending ones have given up long before).
CREATE TABLE IF NOT EXISTS page_outbox
(
    topic_prefix    LowCardinality(String),   -- the deployment ('stocktake.')
    idempotency_key String,                   -- alert_id:version, also in the payload and a header
    alert_id        String,
    payload         String,                   -- the JSON body, the same bytes on every attempt
    state           Enum8('pending' = 1, 'delivered' = 2, 'dead' = 3, 'dropped' = 4),
    attempts        UInt32,
    next_attempt_at DateTime64(3, 'UTC'),
    last_error      String,
    created_at      DateTime64(3, 'UTC'),
    delivered_at    Nullable(DateTime64(3, 'UTC')),
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (topic_prefix, idempotency_key)
TTL toDateTime(created_at) + toIntervalDay(30);
