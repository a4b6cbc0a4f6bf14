-- The scorer's state (#15): its features and input positions, snapshotted so that a new owner
-- (after a restart, a crash or a rebalance) continues from the last snapshot by reading the
-- stored events after its positions, instead of starting from nothing. Only the newest row a
-- deployment matters; a replacing engine lets merges drop the older ones.
CREATE TABLE IF NOT EXISTS scoring_state
(
    topic_prefix LowCardinality(String),
    taken_at     DateTime64(3, 'UTC'),
    watermark    DateTime64(3, 'UTC'),   -- events before it had been folded into the features
    events       UInt64,                 -- events folded in since the first start
    state        String CODEC(ZSTD(3))   -- pickle of the features and the merger's positions
)
ENGINE = ReplacingMergeTree(taken_at)
ORDER BY topic_prefix;

-- How far the scorer is behind what is stored, every few seconds: the Scores dashboard's lag.
CREATE TABLE IF NOT EXISTS scoring_lag
(
    topic_prefix LowCardinality(String),
    at           DateTime64(3, 'UTC'),
    watermark    DateTime64(3, 'UTC'),   -- the scorer's event-time watermark
    lag_events   UInt64,                 -- valid events stored and not yet folded into the features
    lag_s        Float64                 -- newest stored event time minus the watermark, seconds
)
ENGINE = MergeTree
ORDER BY (topic_prefix, at)
TTL toDateTime(at) + INTERVAL 7 DAY;
