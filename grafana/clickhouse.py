"""The ClickHouse data source (plugin grafana-clickhouse-datasource) for the foundation SDK.

The SDK has no ClickHouse query type, so this is one: a ``Dataquery`` variant that serialises
to the plugin's SQL-editor query (editorType "sql", rawSql, queryType, format), plus the
data source definition shared by provisioning and ``stocktake grafana sync``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE_UID = "stocktake-clickhouse"
DATASOURCE_NAME = "stocktake ClickHouse"
DATASOURCE_VAR = "${datasource}"

# sqlutil.FormatQueryOption in the plugin's backend: 0 time series, 1 table.
_FORMAT = {"table": 1, "timeseries": 0}
_QUERY_TYPE = {"table": "table", "timeseries": "timeseries"}

Kind = Literal["table", "timeseries"]


def ref(uid: str = DATASOURCE_VAR) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=PLUGIN, uid=uid)


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL query of the ClickHouse plugin (v4 query model)."""

    def __init__(self, ref_id: str, sql: str, kind: Kind = "table", uid: str = DATASOURCE_VAR,
                 hide: bool = False) -> None:
        self.ref_id = ref_id
        self.sql = sql.strip()
        self.kind = kind
        self.uid = uid
        self.hide = hide

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "refId": self.ref_id,
            "datasource": {"type": PLUGIN, "uid": self.uid},
            "editorType": "sql",
            "queryType": _QUERY_TYPE[self.kind],
            "format": _FORMAT[self.kind],
            "rawSql": self.sql,
        }
        if self.hide:
            out["hide"] = True
        return out


class SQL(cogbuilder.Builder[ClickHouseQuery]):
    """Builder form, for ``panel.with_target(SQL(...))``."""

    def __init__(self, sql: str, kind: Kind = "table", ref_id: str = "A", uid: str = DATASOURCE_VAR) -> None:
        self._internal = ClickHouseQuery(ref_id, sql, kind, uid)

    def build(self) -> ClickHouseQuery:
        return self._internal


def datasource(env: Any = None) -> dict[str, Any]:
    """The data source as Grafana's HTTP API takes it (``POST /api/datasources``).

    Connection from the environment (STOCKTAKE_GRAFANA_CH_* variables): the read-only
    ClickHouse user, never the writer."""
    env = os.environ if env is None else env
    return {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": PLUGIN,
        "access": "proxy",
        "isDefault": False,
        "jsonData": {
            "host": env.get("STOCKTAKE_GRAFANA_CH_HOST", "clickhouse"),
            "port": int(env.get("STOCKTAKE_GRAFANA_CH_PORT", "9000")),
            "protocol": env.get("STOCKTAKE_GRAFANA_CH_PROTOCOL", "native"),
            "secure": env.get("STOCKTAKE_GRAFANA_CH_SECURE", "false").lower() in ("1", "true", "yes"),
            "username": env.get("STOCKTAKE_GRAFANA_CH_USER", "grafana"),
            "defaultDatabase": env.get("STOCKTAKE_GRAFANA_CH_DATABASE", "stocktake"),
        },
        "secureJsonData": {"password": env.get("STOCKTAKE_GRAFANA_CH_PASSWORD", "")},
    }


def provisioning_datasource() -> dict[str, Any]:
    """The same data source as a provisioning file entry: values are Grafana env lookups."""
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": DATASOURCE_NAME,
            "uid": DATASOURCE_UID,
            "type": PLUGIN,
            "access": "proxy",
            "editable": False,
            "jsonData": {
                "host": "${CLICKHOUSE_HOST}",
                "port": 9000,                       # the native protocol inside the compose network
                "protocol": "native",
                "secure": False,
                "username": "${CLICKHOUSE_GRAFANA_USER}",
                "defaultDatabase": "${CLICKHOUSE_DB}",
            },
            "secureJsonData": {"password": "${CLICKHOUSE_GRAFANA_PASSWORD}"},
        }],
    }
