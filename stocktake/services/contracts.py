"""Contracts seen from the store: what `stocktake contract infer` reads.

The observations come from the rollups (per field and JSON type: events, approximate
distinct values, examples), and the values of low-cardinality string fields from a bounded
slice of the retained raw events (the newest SAMPLE_ROWS of the stream's valid events). The
statements are plain read-only SQL, so the CLI runs them through a running worker's
`/api/query` or on the store directly; the stream name is checked before it is quoted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from stocktake.processors.contract import Contract
from stocktake.processors.contract_infer import ENUM_MAX, FieldSeen, infer_contract
from stocktake.processors.contract_spec import STREAM_NAME
from stocktake.settings import Settings

SAMPLE_ROWS = 100_000
Query = Callable[[str], tuple[Sequence[str], Sequence[Sequence[Any]]]]


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fields_sql(settings: Settings, stream: str) -> str:
    """Per field and JSON type of the stream's non-duplicate events, and the events themselves."""
    prefix = _literal(settings.topic_dot_prefix)
    return f"""
SELECT field, type, sum(n) AS events, uniqCombinedMerge(distinct_values) AS distinct_approx,
       groupUniqArrayMerge(5)(example_values) AS examples,
       (SELECT sumIf(n_objects, status = 'valid') FROM asset_rollup
        WHERE startsWith(topic, {prefix}) AND asset = {_literal(stream)}) AS stream_events
FROM field_rollup
WHERE startsWith(topic, {prefix}) AND asset = {_literal(stream)} AND status = 'valid'
GROUP BY field, type ORDER BY field, type"""


def values_sql(settings: Settings, stream: str, names: Sequence[str]) -> str:
    """Up to ENUM_MAX + 1 distinct values of each named string field, from the newest
    SAMPLE_ROWS valid events still retained."""
    arrays = ", ".join(f"groupUniqArray({ENUM_MAX + 1})(JSONExtractString(payload, {_literal(n)}))" for n in names)
    return f"""
SELECT [{arrays}] FROM (
    SELECT payload FROM ingest_log
    WHERE startsWith(topic, {_literal(settings.topic_dot_prefix)}) AND stream = {_literal(stream)}
      AND status = 'valid'
    ORDER BY ingest_ts DESC LIMIT {SAMPLE_ROWS})"""


def infer(query: Query, settings: Settings, stream: str, version: str = "1") -> Contract:
    """The starting contract of ``stream`` from what the store has seen of it."""
    if not STREAM_NAME.fullmatch(stream):
        raise ValueError(f"{stream!r} is not a stream name (letters, digits, '.', '_', '-')")
    columns, rows = query(fields_sql(settings, stream))
    if not rows:
        raise ValueError(f"no valid events of stream {stream!r} under the prefix {settings.topic_dot_prefix!r}")
    seen: dict[str, FieldSeen] = {}
    events = 0
    for row in rows:
        r = dict(zip(columns, row, strict=True))
        f = seen.setdefault(r["field"], FieldSeen(r["field"]))
        f.types[r["type"]] = int(r["events"])
        if r["type"] != "null":
            f.distinct += int(r["distinct_approx"])
            f.examples += [_example(x) for x in r["examples"]]
        events = int(r["stream_events"] or 0)
    few = [f.name for f in seen.values() if f.main_type == "string" and f.distinct <= ENUM_MAX]
    if few:
        _, (values,) = query(values_sql(settings, stream, few))
        for name, found in zip(few, values[0], strict=True):
            kept = [v for v in found if v != ""]
            seen[name].values = kept if len(kept) <= ENUM_MAX else None
    return infer_contract(stream, events, list(seen.values()), version=version, origin=f"inferred from {stream}")


def _example(raw: Any) -> Any:
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return raw
