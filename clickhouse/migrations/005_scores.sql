-- In-stream model scores, as published on stocktake.scores.users / .products.
CREATE TABLE IF NOT EXISTS scores
(
    topic_prefix  LowCardinality(String),   -- the deployment ('stocktake.')
    entity        LowCardinality(String),   -- user | product
    id            String,
    score         Float32,
    model         LowCardinality(String),
    model_version LowCardinality(String),
    features_ts   DateTime64(3, 'UTC'),     -- event time the features describe
    scored_at     DateTime64(3, 'UTC'),
    latency_ms    Float32,                  -- batch scoring time, per row's batch
    device        LowCardinality(String)    -- cuda | cpu
)
ENGINE = MergeTree
ORDER BY (topic_prefix, entity, id, scored_at);
