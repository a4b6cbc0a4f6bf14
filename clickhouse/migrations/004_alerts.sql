-- Data-gap alerts (the stocktake.alerts topic is the source of truth; this is its
-- queryable copy). One row per state change; the newest version of an alert_id wins.
CREATE TABLE IF NOT EXISTS alerts
(
    topic_prefix  LowCardinality(String),   -- the deployment ('stocktake.')
    alert_id      String,
    asset         LowCardinality(String),
    kind          LowCardinality(String),   -- silence | volume_drop | volume_spike | completeness_drop | orphan_spike | schema_drift
    severity      LowCardinality(String),   -- info | warning | critical
    state         Enum8('firing' = 1, 'resolved' = 2),
    clock         LowCardinality(String),   -- event | wall: which clock judged it
    opened_at     DateTime64(3, 'UTC'),
    resolved_at   Nullable(DateTime64(3, 'UTC')),
    reason        String,                   -- human-readable, with expected vs observed
    expected      Nullable(Float64),
    observed      Nullable(Float64),
    evidence_from DateTime64(3, 'UTC'),
    evidence_to   DateTime64(3, 'UTC'),
    details       String,                   -- JSON
    updated_at    DateTime64(3, 'UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (topic_prefix, alert_id);

-- What the detectors expected per asset and minute: dashboards draw observed vs
-- the learned band.
CREATE TABLE IF NOT EXISTS baselines
(
    topic_prefix LowCardinality(String),
    asset     LowCardinality(String),
    metric    LowCardinality(String),       -- events | completeness:<field> | orphans
    minute    DateTime64(3, 'UTC'),
    observed  Float64,
    expected  Float64,
    lower     Float64,
    upper     Float64,
    model     LowCardinality(String),       -- robust_rolling | seasonal
    updated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (topic_prefix, asset, metric, minute);
