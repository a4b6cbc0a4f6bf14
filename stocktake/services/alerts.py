"""Reading alerts back from the ``alerts`` table (`stocktake alerts`, the worker API,
status and inventory; the alerting worker's takeover)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stocktake.clickhouse import alert_queries as A
from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import iso_ms
from stocktake.processors.alerts import Alert
from stocktake.services import outbox
from stocktake.settings import Settings


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as the alerts' JSON writes times: ISO-8601 UTC, ``...123Z``."""
    return None if ms is None else iso_ms(ms)


def read_alert(row: Mapping[str, Any]) -> Alert:
    """A row selected as ``alert_queries.ALERT_FIELDS`` (times in epoch ms) as the detectors' value."""
    details = json.loads(row["details"] or "{}")
    details.pop("subject", None)   # rows written before migration 007 carried it here
    return Alert(
        alert_id=row["alert_id"], asset=row["asset"], kind=row["kind"], subject=row["subject"],
        severity=row["severity"], state=row["state"], clock=row["clock"], opened_at=row["opened_at"],
        resolved_at=row["resolved_at"], reason=row["reason"], expected=row["expected"],
        observed=row["observed"], evidence_from=row["evidence_from"], evidence_to=row["evidence_to"],
        details=details, version=row["version"],
    )


def list_alerts(store: Store, settings: Settings, open_only: bool = False, limit: int = 500) -> list[dict[str, Any]]:
    """Newest first; each alert's latest state (ReplacingMergeTree by version, read FINAL) and
    ``page``: the webhook delivery of that state (None: not paged, e.g. inhibited or no webhook)."""
    columns, rows = store.query(A.ALERTS_SQL, {"prefix": settings.topic_dot_prefix,
                                               "open_only": open_only, "limit": limit})
    read = [(named, read_alert(named)) for named in (dict(zip(columns, row, strict=True)) for row in rows)]
    pages = outbox.alert_pages(store, settings, [(a.alert_id, a.version) for _, a in read])
    out = []
    for named, a in read:
        out.append({
            "alert_id": a.alert_id, "asset": a.asset, "kind": a.kind, "severity": a.severity, "state": a.state,
            "clock": a.clock, "opened_at": iso(a.opened_at), "resolved_at": iso(a.resolved_at),
            "reason": a.reason, "expected": a.expected, "observed": a.observed,
            "evidence_from": iso(a.evidence_from), "evidence_to": iso(a.evidence_to),
            "updated_at": iso(named["updated_at"]), "version": a.version, "subject": a.subject,
            "details": dict(a.details), "page": pages.get(a.alert_id),
        })
    return out
