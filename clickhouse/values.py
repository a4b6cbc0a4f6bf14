"""Values ClickHouse returns, as JSON types."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any


def iso_utc(value: dt.datetime) -> str:
    """ISO-8601 UTC to the millisecond, ``...T12:00:00.123Z``: how every time leaves stocktake
    as JSON (API, alerts, scores). A naive datetime (ClickHouse returns them) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as iso_utc."""
    return iso_utc(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))


def jsonable(value: Any) -> Any:
    """Values ClickHouse returns -> JSON types. Naive datetimes from ClickHouse are UTC."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return float(value)
    return value
