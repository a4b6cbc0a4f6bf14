"""Typed values: asset names parse and format both ways; an alert becomes the documented
topic JSON and a table row by column name, and reads back the same (rows from before
migration 007 too, whose subject rode inside details)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from stocktake.clickhouse.store import migrations
from stocktake.processors.alerts import Alert
from stocktake.processors.assets import Asset, is_stream
from stocktake.services.alerting import alert_message, alert_row, insert_by_name
from stocktake.services.alerts import list_alerts

T0 = 1_767_225_600_123   # 2026-01-01T00:00:00.123Z


@pytest.mark.parametrize(("name", "asset", "kind"), [
    ("behaviour", Asset("behaviour"), "stream"),
    ("behaviour/event_type=view", Asset("behaviour", "event_type", "view"), "event_type"),
    ("transaction/status=paid", Asset("transaction", "status", "paid"), "status"),
    ("behaviour/source=web", Asset("behaviour", "source", "web"), "source"),
    ("behaviour/source=a=b", Asset("behaviour", "source", "a=b"), "source"),   # "=" in a value
])
def test_asset_names_parse_and_format_back(name: str, asset: Asset, kind: str) -> None:
    assert Asset.parse(name) == asset and str(asset) == name
    assert asset.kind == kind and asset.is_stream == (kind == "stream") == is_stream(name)
    assert asset.parent == Asset(asset.stream) and str(asset.parent) == name.split("/")[0]


def test_asset_label_is_the_name_within_its_stream() -> None:
    assert Asset.parse("behaviour/event_type=view").label == "event_type=view"
    assert Asset.parse("product").label == "product"


def _alert(**changes: object) -> Alert:
    values: dict[str, object] = dict(
        alert_id="a1", asset="behaviour/source=web", kind="silence", subject="wall", severity="warning",
        state="firing", clock="wall", opened_at=T0, resolved_at=None, reason="no events for 40s",
        expected=30.0, observed=40.0, evidence_from=T0 - 40_000, evidence_to=T0,
        details={"p99_gap_ms": 1000, "inhibited_by": "s1"}, version=1)
    values.update(changes)
    return Alert(**values)  # type: ignore[arg-type]


def test_alert_message_is_the_documented_json() -> None:
    message = alert_message(_alert(), "stocktake.")
    assert list(message) == ["alert_id", "asset", "kind", "subject", "severity", "state", "clock", "opened_at",
                             "resolved_at", "reason", "expected", "observed", "evidence", "details", "version",
                             "topic_prefix"]
    assert message["opened_at"] == "2026-01-01T00:00:00.123Z" and message["resolved_at"] is None
    assert message["evidence"] == {"from": "2025-12-31T23:59:20.123Z", "to": "2026-01-01T00:00:00.123Z"}
    assert message["subject"] == "wall" and message["details"] == {"p99_gap_ms": 1000, "inhibited_by": "s1"}
    done = _alert().resolved(T0 + 60_000, "resolved: back", 1.0)
    assert (done.state, done.version, done.observed, done.alert_id) == ("resolved", 2, 1.0, "a1")
    assert alert_message(done, "stocktake.")["resolved_at"] == "2026-01-01T00:01:00.123Z"
    assert _alert().inhibited_by == "s1" and _alert(details={}).inhibited_by is None


def test_alert_row_reads_back_with_its_own_subject(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    now = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC)
    insert_by_name(store, "alerts", [alert_row(_alert(), settings.topic_dot_prefix, now)])
    (stored,) = store.rows("SELECT subject, details FROM alerts WHERE topic_prefix = {p:String}",
                           {"p": settings.topic_dot_prefix})
    assert stored[0] == "wall" and "subject" not in json.loads(stored[1])
    (listed,) = list_alerts(store, settings)
    assert listed["subject"] == "wall" and listed["details"] == {"p99_gap_ms": 1000, "inhibited_by": "s1"}
    assert listed["opened_at"] == "2026-01-01T00:00:00.123Z" and listed["updated_at"] == listed["opened_at"]


def test_rows_from_before_migration_007_keep_their_subject(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    """A table as migration 004 made it, holding an old row, then migration 007: the subject
    comes out of details into its column; listing shows it as before."""
    table = f"alerts_{uuid.uuid4().hex[:8]}"
    (create, *_), = [s for v, _, s in migrations() if v == 4]
    store.command(create.replace("CREATE TABLE IF NOT EXISTS alerts", f"CREATE TABLE {table}"))
    old = alert_row(_alert(), "p.", dt.datetime.now(dt.UTC))
    del old["subject"]
    old["details"] = json.dumps({"p99_gap_ms": 1000, "subject": "wall"})
    insert_by_name(store, table, [old])
    try:
        for statement in next(s for v, _, s in migrations() if v == 7):
            store.command(statement.replace("TABLE alerts", f"TABLE {table}"))
        assert store.rows(f"SELECT subject FROM {table}") == [("wall",)]
    finally:
        store.command(f"DROP TABLE {table}")
    # the same row in the live table (its writer predates the column): listed as before
    settings = make_settings()
    insert_by_name(store, "alerts", [{**old, "topic_prefix": settings.topic_dot_prefix}])
    (listed,) = list_alerts(store, settings)
    assert listed["subject"] == "wall" and listed["details"] == {"p99_gap_ms": 1000}
