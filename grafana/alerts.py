"""Grafana-managed alert rules over ClickHouse, built with the foundation SDK's alerting builders.

The stocktake.alerts topic is the source of truth for data gaps: the detectors in the worker
judge silence, volume drops and completeness drops, publish to the topic, and the sink keeps
its queryable copy in the ``alerts`` table. The rules here only *follow* that table: one
Grafana alert instance per firing stocktake alert (labels alert_id, asset, severity), so a
Grafana notification and the topic always agree, and resolving on the topic resolves in
Grafana. One more rule watches the pipeline itself (nothing ingested for 10 minutes), which no
detector inside a stopped worker could report.

Notifications go to one contact point, a webhook whose URL is a placeholder to replace
(STOCKTAKE_GRAFANA_WEBHOOK_URL), through the rules' own notification settings (simplified
routing), so syncing never rewrites an existing notification policy tree.
"""

from __future__ import annotations

import copy
from typing import Any

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.models import alerting as am
from grafana_foundation_sdk.models import dashboard as dm

from stocktake.grafana.clickhouse import DATASOURCE_UID, PLUGIN, SQL

FOLDER_UID = "stocktake"
FOLDER_TITLE = "stocktake"
GROUP = "stocktake"
GROUP_INTERVAL_S = 60
CONTACT_POINT = "stocktake-oncall"
WEBHOOK_PLACEHOLDER = "http://alert-receiver.invalid/stocktake"   # replace: STOCKTAKE_GRAFANA_WEBHOOK_URL
PREFIX_TOKEN = "\x00PREFIX\x00"        # the topic prefix, filled per target (file or API)
STALL_AFTER_S = 600

# kind in the alerts table -> (rule title, severity default, what it means)
DETECTOR_RULES = {
    "silence": ("stocktake: asset silent", "An asset stopped receiving events (stocktake silence detector)"),
    "volume_drop": ("stocktake: volume drop", "Events per minute fell below the learned band"),
    "completeness_drop": ("stocktake: completeness drop", "A field's completeness fell below its band"),
}


def detector_sql(kind: str, prefix: str = PREFIX_TOKEN) -> str:
    """One row per firing stocktake alert of this kind: strings become labels, firing the value."""
    return (f"SELECT alert_id, asset, severity, toFloat64(1) AS firing FROM alerts FINAL "
            f"WHERE topic_prefix = '{prefix}' AND state = 'firing' AND kind = '{kind}'")


def stall_sql(prefix: str) -> str:
    """Seconds since the deployment last stored an event: the newest ingest time of its
    partitions (partition_rollup, a row per topic partition; never stored: since 1970)."""
    return (f"SELECT toFloat64(dateDiff('second', max(ingest_max), now())) AS seconds_since_ingest "
            f"FROM partition_rollup WHERE startsWith(topic, '{prefix}')")


def _threshold(ref: str, source: str, above: float) -> Any:
    cond = expr.ExprTypeThresholdConditions().evaluator(
        expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([above]))
    return (alerting.Query(ref).datasource_uid("__expr__")
            .model(expr.TypeThreshold().ref_id(ref).expression(source).conditions([cond])
                   .datasource(dm.DataSourceRef(type_val="__expr__", uid="__expr__"))))


def _sql_query(sql: str, window_s: int) -> Any:
    return (alerting.Query("A").datasource_uid(DATASOURCE_UID)
            .relative_time_range(am.RelativeTimeRange(from_val=window_s, to=0))
            .model(SQL(sql, "table", uid=DATASOURCE_UID)))


def rules(dashboard_uid: str = "stocktake-gaps", panel_id: int | None = None) -> list[dict[str, Any]]:
    """The rules as Grafana's provisioning API takes them (PREFIX_TOKEN still in the SQL)."""
    link = {"__dashboardUid__": dashboard_uid}
    if panel_id is not None:
        link["__panelId__"] = str(panel_id)
    built = []
    for kind, (title, meaning) in DETECTOR_RULES.items():
        r = (alerting.Rule(title).uid(f"stocktake-{kind.replace('_', '-')}").rule_group(GROUP).folder_uid(FOLDER_UID)
             .condition("C").queries([_sql_query(detector_sql(kind), 600), _threshold("C", "A", 0)])
             .no_data_state("OK").exec_err_state("Error").for_val("0s")
             .labels({"service": "stocktake", "kind": kind})
             .annotations({"summary": f"{meaning}: {{{{ $labels.asset }}}} ({{{{ $labels.severity }}}})",
                           "description": "stocktake alert {{ $labels.alert_id }}; details on the Data gaps "
                                          "dashboard and in the stocktake.alerts topic", **link})
             .notification_settings(alerting.NotificationSettings().receiver(CONTACT_POINT)))
        built.append(r)
    stall = (alerting.Rule("stocktake: ingest stalled").uid("stocktake-ingest-stalled").rule_group(GROUP)
             .folder_uid(FOLDER_UID).condition("C")
             .queries([_sql_query(stall_sql(PREFIX_TOKEN), 600), _threshold("C", "A", STALL_AFTER_S)])
             .no_data_state("Alerting").exec_err_state("Error").for_val("5m")
             .labels({"service": "stocktake", "kind": "ingest_stalled"})
             .annotations({"summary": "stocktake stored no event for {{ $values.A }} s",
                           "description": "The workers (or Kafka) stopped: no event was stored "
                                          f"for over {STALL_AFTER_S // 60} minutes. The detectors run inside the "
                                          "workers, so this one is judged by Grafana.", **link})
             .notification_settings(alerting.NotificationSettings().receiver(CONTACT_POINT)))
    built.append(stall)
    out = []
    for r in built:
        rule = _plain(r.build())
        rule.pop("orgID", None)
        out.append(rule)
    return out


def _plain(obj: Any) -> Any:
    """SDK objects -> JSON-able dicts (what the SDK's encoder does)."""
    if hasattr(obj, "to_json"):
        return _plain(obj.to_json())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def contact_point(url: str = WEBHOOK_PLACEHOLDER) -> dict[str, Any]:
    return _plain(alerting.ContactPoint().uid(CONTACT_POINT).name(CONTACT_POINT).type("webhook")
                  .settings({"url": url, "httpMethod": "POST"}).disable_resolve_message(False).build())


def _fill(obj: Any, prefix: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(PREFIX_TOKEN, prefix)
    if isinstance(obj, dict):
        return {k: _fill(v, prefix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, prefix) for v in obj]
    return obj


def api_rule_group(prefix: str, panel_id: int | None = None) -> dict[str, Any]:
    """The rule group for ``PUT /api/v1/provisioning/folder/{folder}/rule-groups/{group}``."""
    return {"title": GROUP, "folderUid": FOLDER_UID, "interval": GROUP_INTERVAL_S,
            "rules": _fill(rules(panel_id=panel_id), prefix)}


def _escape_dollars(obj: Any) -> Any:
    """Grafana expands $VAR in provisioning files; a literal $ (templates: {{ $labels.x }}) is $$."""
    if isinstance(obj, str):
        return obj.replace("$", "$$")
    if isinstance(obj, dict):
        return {k: _escape_dollars(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_escape_dollars(v) for v in obj]
    return obj


def provisioning_file(panel_id: int | None = None) -> dict[str, Any]:
    """grafana/provisioning/alerting/stocktake.yaml: the contact point and the rule group. The
    topic prefix and the webhook URL are Grafana environment lookups (docker-compose sets them)."""
    file_rules = []
    for r in _escape_dollars(rules(panel_id=panel_id)):
        r = copy.deepcopy(r)
        for key in ("folderUID", "ruleGroup"):
            r.pop(key, None)
        file_rules.append(r)
    file_rules = _fill(file_rules, "${STOCKTAKE_TOPIC_PREFIX}.")
    cp = contact_point("${STOCKTAKE_GRAFANA_WEBHOOK_URL}")
    receiver = {"uid": cp["uid"], "type": cp["type"], "settings": cp["settings"],
                "disableResolveMessage": cp.get("disableResolveMessage", False)}
    return {
        "apiVersion": 1,
        "contactPoints": [{"orgId": 1, "name": CONTACT_POINT, "receivers": [receiver]}],
        "groups": [{"orgId": 1, "name": GROUP, "folder": FOLDER_TITLE, "interval": f"{GROUP_INTERVAL_S}s",
                    "rules": file_rules}],
    }


__all__ = ["CONTACT_POINT", "DETECTOR_RULES", "FOLDER_UID", "GROUP", "PLUGIN", "api_rule_group", "contact_point",
           "detector_sql", "provisioning_file", "rules", "stall_sql"]
