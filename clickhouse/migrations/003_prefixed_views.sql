-- Views parameterized by topic prefix ('stocktake.'), so one store can hold several
-- deployments (or test runs) and the inventory of one never counts another's.
-- prefix = '' means every topic.
CREATE VIEW IF NOT EXISTS prefixed_log AS
SELECT * FROM ingest_log WHERE startsWith(topic, {prefix:String});

CREATE VIEW IF NOT EXISTS prefixed_assets AS
SELECT
    *,
    arrayJoin(arrayFilter(a -> a != '', [
        stream,
        if(kind = '', '', concat(stream, '/',
            multiIf(stream = 'product', 'op', stream = 'transaction', 'status', 'event_type'),
            '=', kind)),
        if(source = '', '', concat(stream, '/source=', source))
    ])) AS asset
FROM ingest_log
WHERE startsWith(topic, {prefix:String});

-- From here on the asset expression lives in prefixed_assets only.
CREATE OR REPLACE VIEW ingest_assets AS SELECT * FROM prefixed_assets(prefix = '');
