-- Product text embeddings, as the worker's encoder computed them (#15): one row a product
-- and text; a product re-sent with other text gets a new row (the newest wins on read).
CREATE TABLE IF NOT EXISTS product_embeddings
(
    topic_prefix    LowCardinality(String),   -- the deployment ('stocktake.')
    product_id      String,
    text_hash       UInt64,                   -- of the text encoded (models/encoder.product_text)
    text            String,
    encoder         LowCardinality(String),   -- all-MiniLM-L6-v2
    encoder_version LowCardinality(String),   -- the model package's version
    embedding       Array(Float32),           -- L2-normalised, 384 dimensions
    ts              DateTime64(3, 'UTC'),     -- event time of the product event that carried the text
    encoded_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(encoded_at)
ORDER BY (topic_prefix, product_id, text_hash, encoder);
