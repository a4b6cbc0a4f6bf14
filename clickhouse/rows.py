"""Columnar rows -> Arrow with the ingest_log column types (insert_arrow is ~10x text formats)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

INGEST_LOG_SCHEMA = pa.schema([
    ("stream", pa.string()),
    ("topic", pa.string()),
    ("partition", pa.uint32()),
    ("offset", pa.uint64()),
    ("idx", pa.uint32()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("event_id", pa.string()),
    ("kind", pa.string()),
    ("source", pa.string()),
    ("user_id", pa.string()),
    ("product_id", pa.string()),
    ("order_id", pa.string()),
    ("ts", pa.timestamp("ms", tz="UTC")),
    ("ingest_ts", pa.timestamp("ms", tz="UTC")),
    ("payload", pa.binary()),
    ("contract_version", pa.string()),
    ("kind_key", pa.string()),
    ("warnings", pa.list_(pa.string())),
])


def ingest_log_table(columns: dict[str, list[Any]]) -> pa.Table:
    return pa.Table.from_pydict(columns, schema=INGEST_LOG_SCHEMA)
