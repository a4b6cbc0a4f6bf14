"""Listing alerts (`stocktake alerts`, the worker API, status and inventory)."""

from __future__ import annotations

import json
from typing import Any

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import jsonable
from stocktake.settings import Settings


def list_alerts(store: Store, settings: Settings, open_only: bool = False, limit: int = 500) -> list[dict[str, Any]]:
    """Newest first; each alert's latest state (ReplacingMergeTree by version, read FINAL)."""
    columns, rows = store.query(A.ALERTS_SQL, {"prefix": settings.topic_prefix + ".",
                                               "open_only": open_only, "limit": limit})
    out = []
    for row in rows:
        alert = dict(zip(columns, row, strict=True))
        details = json.loads(alert.pop("details") or "{}")
        alert["subject"] = details.pop("subject", "")
        alert["details"] = details
        out.append(alert)
    return list(jsonable(out))
