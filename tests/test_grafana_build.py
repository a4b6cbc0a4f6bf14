"""The generated Grafana files: up to date with the code, valid against Grafana's dashboard
JSON schema (generated from @grafana/schema, see grafana/schema/README.md), and ClickHouse
queries the plugin can run. No chDB, no broker: fast."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from stocktake.grafana import alerts as A
from stocktake.grafana import build
from stocktake.grafana import dashboards as D
from stocktake.grafana import macros as M
from stocktake.grafana.clickhouse import DATASOURCE_UID, PLUGIN

GRAFANA = Path(build.__file__).resolve().parent
SCHEMA = json.loads((GRAFANA / "schema" / "dashboard.schema.json").read_text(encoding="utf-8"))
COMMITTED = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in (GRAFANA / "dashboards").glob("*.json")}


def test_generated_files_are_up_to_date() -> None:
    assert build.stale() == [], "run `stocktake grafana build` and commit the result"
    assert set(COMMITTED) == {s.filename for s in D.DASHBOARDS}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_dashboard_validates_against_grafanas_schema(name: str) -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(COMMITTED[name])]
    assert errors == []


def test_schema_rejects_what_grafana_would_reject() -> None:
    """The schema is strict enough to catch mistakes (not an empty `{}`)."""
    d = json.loads(json.dumps(COMMITTED["stocktake-inventory.json"]))
    d["panels"][0]["gridPos"]["w"] = "wide"
    d["refreshh"] = "30s"
    assert len(list(jsonschema.Draft7Validator(SCHEMA).iter_errors(d))) == 2


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_panel_targets_are_clickhouse_sql_queries(name: str) -> None:
    """Targets are open objects in the schema: check the plugin's query fields here."""
    d = COMMITTED[name]
    assert d["schemaVersion"] == 41 and d["uid"] == name.removesuffix(".json")
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in D.all_panels(d):
        assert p["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}
        (t,) = p["targets"]
        assert t["datasource"] == p["datasource"] and t["refId"] == "A" and t["editorType"] == "sql"
        assert (t["queryType"], t["format"]) == (("timeseries", 0) if p["type"] == "timeseries" else ("table", 1))
        assert t["rawSql"].strip() and ";" not in t["rawSql"]
        assert "stocktake." not in t["rawSql"], "the topic prefix comes from the `prefix` variable"
        macros = set(re.findall(r"\$__(\w+)", t["rawSql"]))
        assert macros <= {"timeFilter", "timeInterval", "interval_s", "fromTime", "toTime"}, macros
        variables = set(re.findall(r"\$\{(\w+)", t["rawSql"]))
        assert variables <= {v["name"] for v in d["templating"]["list"]}, variables


# The raw events and their JSON: read over all history they cost seconds (#11); panels,
# variables and alert rules read the rollups of migration 008 instead.
RAW_READS = re.compile(r"ingest_log|prefixed_log|prefixed_assets|JSONExtract|JSONType|payload")


def test_dashboards_and_alert_rules_read_only_rollups() -> None:
    sqls = [t["rawSql"] for d in COMMITTED.values() for p in D.all_panels(d) for t in p["targets"]]
    sqls += [v["query"] for d in COMMITTED.values() for v in d["templating"]["list"] if v["type"] == "query"]
    sqls += [q["model"]["rawSql"] for r in A.rules() for q in r["data"] if "rawSql" in q["model"]]
    assert len(sqls) > 40
    assert [s for s in sqls if RAW_READS.search(s)] == []
    assert all("FINAL" not in s or "alerts FINAL" in s or "baselines FINAL" in s for s in sqls), \
        "rollups are read without FINAL (each query merges a key's rows itself)"


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_variables_units_and_refresh(name: str) -> None:
    d = COMMITTED[name]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == DATASOURCE_UID
    assert variables["prefix"]["type"] == "textbox" and variables["prefix"]["query"] == "stocktake."
    if "stream" in variables:
        for name_ in ("stream", "asset", "source"):
            v = variables[name_]
            assert v["multi"] and v["includeAll"] and v["allValue"] == M.ALL_VALUE
            assert v["refresh"] == 2 and v["datasource"]["uid"] == "${datasource}"
    assert M.seconds(d["refresh"]) >= 10
    for p in D.all_panels(d):
        if p["type"] in ("timeseries", "stat", "bargauge"):
            overrides = [prop for o in p["fieldConfig"]["overrides"] for prop in o["properties"]]
            units = [p["fieldConfig"]["defaults"].get("unit")] + [o["value"] for o in overrides if o["id"] == "unit"]
            assert any(units), p["title"]


def test_macro_expansion_matches_the_plugin() -> None:
    import datetime as dt
    tr = M.TimeRange(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC), 120)
    sql = ("SELECT $__timeInterval(ts) AS t FROM x WHERE $__timeFilter(ts) AND a IN (${a:singlequote}) "
           "AND b = ${b:singlequote} AND c IN (${c:singlequote}) AND n = $__interval_s AND $__fromTime < $__toTime")
    out = M.render(sql, {"a": ["x", "o'k"], "b": "stocktake.", "c": M.Raw("'__all__'")}, tr)
    assert out == ("SELECT toStartOfInterval(toDateTime(ts), INTERVAL 120 second) AS t FROM x WHERE "
                   "ts >= toDateTime(1704067200) AND ts <= toDateTime(1704070800) AND a IN ('x','o\\'k') "
                   "AND b = 'stocktake.' AND c IN ('__all__') AND n = 120 "
                   "AND toDateTime(1704067200) < toDateTime(1704070800)")
    with pytest.raises(ValueError, match="unknown ClickHouse macro"):
        M.expand_macros("SELECT $__timeFilterr(ts)", tr)


def test_provisioning_files() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "stocktake.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == PLUGIN and source["uid"] == DATASOURCE_UID
    assert source["secureJsonData"]["password"] == "${CLICKHOUSE_GRAFANA_PASSWORD}"   # from the environment
    assert source["jsonData"]["username"] == "${CLICKHOUSE_GRAFANA_USER}"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "stocktake.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == build.DASHBOARDS_MOUNT

    text = (GRAFANA / "provisioning" / "alerting" / "stocktake.yaml").read_text()
    # Grafana expands $VAR in provisioning files: every literal $ must be doubled.
    assert set(re.findall(r"\$\{?(\w+)", text.replace("$$", ""))) == {"STOCKTAKE_GRAFANA_WEBHOOK_URL",
                                                                         "STOCKTAKE_TOPIC_PREFIX"}
    alerting = yaml.safe_load(text)
    (cp,) = alerting["contactPoints"]
    assert cp["receivers"][0]["type"] == "webhook"
    (group,) = alerting["groups"]
    kinds = {r["labels"]["kind"] for r in group["rules"]}
    assert kinds == {"silence", "volume_drop", "completeness_drop", "ingest_stalled"}
    for r in group["rules"]:
        assert r["notification_settings"]["receiver"] == A.CONTACT_POINT
        refs = {q["refId"]: q for q in r["data"]}
        assert refs["A"]["datasourceUid"] == DATASOURCE_UID and refs["A"]["model"]["editorType"] == "sql"
        assert refs[r["condition"]]["model"]["type"] == "threshold"
        assert r["annotations"]["__dashboardUid__"] == D.GAPS.uid


def test_cli_build_check(tmp_path: Path) -> None:
    from stocktake.cli import main
    assert main(["grafana", "build", "--out", str(tmp_path)]) == 0
    assert main(["grafana", "build", "--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "dashboards" / "stocktake-gaps.json").write_text("{}")
    assert main(["grafana", "build", "--check", "--out", str(tmp_path)]) == 1
