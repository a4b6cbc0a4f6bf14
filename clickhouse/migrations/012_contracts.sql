-- Data contracts as configuration (#13). Migration 008 now holds the columns each event's
-- contract is recorded in (contract_version, kind_key, warnings), the views that name
-- sub-assets by kind_key and breach_rollup; for stores made before, the step after this
-- migration (clickhouse/rollups.py upgrade_views) adds them and re-creates 008's views.
CREATE OR REPLACE VIEW prefixed_assets AS
SELECT
    *,
    arrayJoin(arrayFilter(a -> a != '', [
        stream,
        if(kind = '' OR kind_key = '', '', concat(stream, '/', kind_key, '=', kind)),
        if(source = '', '', concat(stream, '/source=', source))
    ])) AS asset
FROM ingest_log
WHERE startsWith(topic, {prefix:String});

-- The contract each stream is judged under, as the worker loaded it: the inventory's
-- `contract` flags and required fields, and the dashboards' field lists, read this.
-- One row per field (rule = '') and per field a conditional rule requires (rule = its name).
CREATE TABLE IF NOT EXISTS contract_fields
(
    prefix       LowCardinality(String),
    stream       LowCardinality(String),
    version      LowCardinality(String),
    field        String,
    rule         String,
    type         LowCardinality(String),
    required     UInt8,
    severity     LowCardinality(String),
    role         LowCardinality(String),
    position     UInt16,
    origin       String,
    published_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(published_at)
ORDER BY (prefix, stream, version, field, rule);
