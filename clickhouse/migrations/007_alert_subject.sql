-- An alert's subject (the clock of a silence, the field of a completeness drop,
-- field:drift of a schema drift) in its own column; it used to ride inside the
-- details JSON. Rows written before take it from there.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS subject String DEFAULT JSONExtractString(details, 'subject') AFTER kind;

ALTER TABLE alerts MATERIALIZE COLUMN subject;
