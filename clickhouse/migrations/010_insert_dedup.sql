-- Retried inserts are stored once (#12). The sink names each insert by its batch's
-- coordinates (insert_deduplication_token: topic, partition and offset range of every
-- partition in it): if a ClickHouse server stored a batch but its answer was lost, the retry
-- carries the same token and is dropped, here and, with
-- deduplicate_blocks_in_dependent_materialized_views, in every rollup the views fill.
-- The window is the number of recent insert tokens a table remembers; a retry comes within
-- seconds, a few inserts later. Inserts without a token (INSERT … SELECT: backfill, rebuild)
-- are never deduplicated by these settings.
ALTER TABLE ingest_log MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE asset_minute_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE asset_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE field_minute_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE field_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE user_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE order_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE product_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE price_history MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE transaction_lines MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE partition_rollup MODIFY SETTING non_replicated_deduplication_window = 1000;
