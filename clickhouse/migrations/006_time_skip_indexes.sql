-- Min/max per granule of ingest time and event time. ingest_log is ordered by
-- Kafka coordinates, so the alerting worker's per-tick range filters
-- (ingest_ts for activity and gaps, ts for closed minutes) would otherwise read
-- every granule; both times grow with the offset within a partition, so a
-- narrow range touches about one granule per (stream, partition).
-- The views over ingest_log (prefixed_log, prefixed_assets) keep the pruning.
ALTER TABLE ingest_log
    ADD INDEX IF NOT EXISTS ingest_ts_minmax ingest_ts TYPE minmax GRANULARITY 1,
    ADD INDEX IF NOT EXISTS ts_minmax ts TYPE minmax GRANULARITY 1;

-- New parts get the indexes on insert; this builds them for parts already
-- stored (a mutation: synchronous in chDB, in the background on a server).
ALTER TABLE ingest_log MATERIALIZE INDEX ingest_ts_minmax, MATERIALIZE INDEX ts_minmax;
