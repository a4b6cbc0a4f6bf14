-- Catalog findings from the product text model (#15, services/catalog.py). The worker keeps the
-- findings in memory as products stream in (processors/catalog.py) and writes a snapshot when
-- they changed, at most every few seconds. A snapshot is a handful of rows: per finding one row
-- of counts (rank 0) and its examples (ranks 1..10), all with the snapshot's updated_at, every
-- rank written each time (an unused rank as an empty row) so that no example of an older
-- snapshot outlives it. A reader takes the rows of the newest updated_at of its topic prefix:
-- at most 34 rows, whatever the catalog's size (no recomputation on read). ReplacingMergeTree
-- keyed by (prefix, finding, rank) lets merges drop the older snapshots.
CREATE TABLE IF NOT EXISTS catalog_findings
(
    topic_prefix LowCardinality(String),   -- the deployment ('stocktake.')
    finding      LowCardinality(String),   -- catalog | likely_duplicates | indistinct_text | category_mismatch
    rank         UInt16,                   -- 0: the counts; 1..: an example, best first
    threshold    Float32,                  -- the finding's similarity threshold (catalog: 0)
    items        UInt64,                   -- rank 0: groups / texts / products flagged (catalog: products held)
    products     UInt64,                   -- rank 0: products in the finding (catalog: distinct texts); else the example's
    similarity   Float32,                  -- an example's similarity (see README)
    product_ids  Array(String),            -- an example's products ...
    texts        Array(String),            -- ... and their texts
    related      Array(String),            -- indistinct_text: the nearest other texts
    detail       String,                   -- category_mismatch: the category; rank 0: extra counts as JSON
    updated_at   DateTime64(3, 'UTC')      -- the snapshot
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (topic_prefix, finding, rank);

-- The category of the product event that carried the text: the index rebuilt at start judges it.
ALTER TABLE product_embeddings ADD COLUMN IF NOT EXISTS category String DEFAULT '' AFTER text;
