-- A Kafka log that lost what we stored from it (#12): the embedded Tansu keeps topics in
-- memory, so every start of it is a new, empty log; a topic deleted and re-created is the
-- same. Its offsets start again at 0, below the stored watermark, and would be skipped as
-- "already stored". Instead the sink stores them at offset + base, where base continues the
-- stored offsets (base = stored watermark + 1 - the new log's start): coordinates stay unique
-- and contiguous per partition, watermarks and reconcile keep working. One row per reset;
-- the highest base is in force.
CREATE TABLE IF NOT EXISTS log_bases
(
    topic         LowCardinality(String),
    partition     UInt32,
    base          UInt64,                      -- stored offset = Kafka offset + base
    kafka_start   UInt64,                      -- the new log's first offset when the reset was seen
    kafka_end     UInt64,                      -- ... and its end
    stored_before Int64,                       -- the stored watermark then
    detected_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(base)
ORDER BY (topic, partition);
