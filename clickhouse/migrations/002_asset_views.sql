-- Assets per event: the stream, (stream, kind) and (stream, source). The kind
-- is named after the field it comes from: behaviour/event_type=view,
-- product/op=upsert, transaction/status=paid. Empty values name no sub-asset.
CREATE VIEW IF NOT EXISTS ingest_assets AS
SELECT
    *,
    arrayJoin(arrayFilter(a -> a != '', [
        stream,
        if(kind = '', '', concat(stream, '/',
            multiIf(stream = 'product', 'op', stream = 'transaction', 'status', 'event_type'),
            '=', kind)),
        if(source = '', '', concat(stream, '/source=', source))
    ])) AS asset
FROM ingest_log;

-- Per-asset counts per minute of event time (ingest time for events whose
-- time could not be read). Exact by construction: a view over ingest_log.
CREATE VIEW IF NOT EXISTS asset_minute AS
SELECT
    toStartOfMinute(ts) AS minute,
    asset,
    count() AS events,
    countIf(status = 'valid') AS valid,
    countIf(status = 'duplicate') AS duplicates,
    countIf(status = 'invalid') AS invalid
FROM ingest_assets
GROUP BY minute, asset;

CREATE VIEW IF NOT EXISTS invalid_minute AS
SELECT toStartOfMinute(ts) AS minute, asset, reason, count() AS invalid
FROM ingest_assets
WHERE status = 'invalid'
GROUP BY minute, asset, reason;
