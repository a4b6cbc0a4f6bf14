"""Least privilege of the full stack's ClickHouse users, checked (#12): clickhouse/users/stocktake.xml
(the workers' writer `stocktake`, Grafana's read-only `grafana`), the server settings they rely
on (clickhouse/config.d/stocktake.xml), and Grafana's data source provisioning.

No ClickHouse server runs here. chDB is ClickHouse's own engine with its access control, and
it loads a users file: each user's declaration (its settings profile and grants, parsed from the
real file) is loaded into a throwaway chDB store as chDB's session user (chDB always runs as
`default`), one child process per user (one chDB engine per process). As the writer, the real
migrations run (the rollups' backfill included), a judged batch is stored, the rollups are
rebuilt and the retention changed, and what it must not do is refused; as the Grafana user
every table, every dashboard panel and alert rule is read, and writes, DDL, SYSTEM, table
functions and settings changes are refused: by the profile's readonly level alone, by the
grants alone, and by both, as declared.

Not checked here, for want of a server (static checks stand in where noted):
- `<networks>`: chDB has no client address; statically, no user accepts any address
  (private and loopback ranges only).
- passwords: `from_env` and how the server stores them; statically, every user has one from
  the environment and the compose file passes both.
- `<changeable_in_readonly/>` (the plugin's per-query max_execution_time): chDB, like
  clickhouse-local, ignores `access_control_improvements`, without which ClickHouse rejects it,
  so it is left out of the chDB copy (that only takes a permission away); statically, the
  server config enables it (settings_constraints_replace_previous).
- `access_control_improvements` as a whole (which system tables a user may read): not applied
  by chDB; statically, set in clickhouse/config.d/stocktake.xml and mounted.
- row policies: none declared; the Grafana user reads every row of the stocktake database.
- quotas: the image's `default` quota (accounting only), not enforced here.
- the image's own `default` user (local only, made by its entrypoint) and the Grafana plugin's
  behaviour against a live server.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
USERS_XML = ROOT / "clickhouse" / "users" / "stocktake.xml"
SERVER_XML = ROOT / "clickhouse" / "config.d" / "stocktake.xml"
DATASOURCE_YAML = ROOT / "grafana" / "provisioning" / "datasources" / "stocktake.yaml"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]

WRITER, READER = "stocktake", "grafana"
DATABASE = "stocktake"
# What the worker runs (clickhouse/migrations/*.sql, clickhouse/store.py, clickhouse/rollups.py),
# and nothing more.
WRITER_GRANTS = {(p, f"{DATABASE}.*") for p in (
    "SELECT", "INSERT",                                   # events, rollups (views), alerts, scores
    "CREATE TABLE", "CREATE VIEW",                        # migrations (materialized views too)
    "DROP VIEW",                                          # CREATE OR REPLACE VIEW ingest_assets (003)
    "TRUNCATE",                                           # the rollups' backfill (008)
    "ALTER ADD INDEX", "ALTER MATERIALIZE INDEX",         # 006
    "ALTER ADD COLUMN", "ALTER MATERIALIZE COLUMN",       # 007
    "ALTER TTL",                                          # STOCKTAKE_RAW_RETENTION: MODIFY/REMOVE TTL
    "ALTER SETTINGS",                                     # 010 (MODIFY SETTING): the insert-deduplication window
)}
READER_GRANTS = {("SELECT", f"{DATABASE}.*")}

REFUSED = {"ACCESS_DENIED", "READONLY"}   # codes 497 (grants) and 164 (readonly)
# Statements neither user may run (the writer's are on top of what it may not write).
NEVER = [
    "DROP TABLE ingest_log",
    "DROP DATABASE stocktake",
    "CREATE DATABASE elsewhere",
    "ALTER TABLE ingest_log DELETE WHERE 1",
    "ALTER TABLE ingest_log UPDATE status = 'valid' WHERE 1",
    "ALTER TABLE ingest_log DROP COLUMN payload",
    "OPTIMIZE TABLE ingest_log FINAL",
    "RENAME TABLE ingest_log TO renamed",
    "DETACH TABLE ingest_log",
    "SYSTEM FLUSH LOGS",
    "SYSTEM DROP MARK CACHE",
    "SYSTEM STOP MERGES ingest_log",   # (without a table: a no-op on tables it may not touch)
    "CREATE USER intruder",
    "CREATE TABLE default.elsewhere (a Int8) ENGINE = Memory",
    "SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')",
    "SELECT * FROM file('/etc/passwd', LineAsString)",
]
READER_NEVER = [*NEVER,
    "INSERT INTO ingest_log (stream) VALUES ('x')",
    "CREATE TABLE made_here (a Int8) ENGINE = Memory",
    "CREATE VIEW made_here AS SELECT 1",
    "TRUNCATE TABLE ingest_log",
    "DROP VIEW ingest_assets",
]
# Settings the read-only profile fixes (a query that lifts its limits or readonly itself).
READER_SETTINGS = [
    "SET readonly = 0",
    "SET max_memory_usage = 0",
    "SELECT 1 SETTINGS max_result_rows = 0",
]


# ------------------------------------------------------------------------- the users file


def _users() -> dict[str, ET.Element]:
    users = ET.parse(USERS_XML).getroot().find("users")
    assert users is not None
    return {u.tag: u for u in users}


def _profile(name: str) -> ET.Element:
    profile = ET.parse(USERS_XML).getroot().find(f"profiles/{name}")
    assert profile is not None, name
    return profile


def _grants(user: ET.Element) -> set[tuple[str, str]]:
    out = set()
    for query in user.iterfind("grants/query"):
        m = re.fullmatch(r"GRANT (.+) ON (\S+)", (query.text or "").strip())
        assert m, query.text
        out |= {(p.strip(), m.group(2)) for p in m.group(1).split(",")}
    return out


def test_only_the_two_app_users_each_with_a_password_from_the_environment() -> None:
    users = _users()
    assert set(users) == {WRITER, READER}
    env = SERVICES["clickhouse"]["environment"]
    for name, user in users.items():
        password = user.find("password")
        assert password is not None and password.get("from_env") in env, name
        assert not (password.text or "").strip(), name
        # no access management, no named collections, no other way in
        for flag in ("access_management", "named_collection_control", "show_named_collections",
                     "show_named_collections_secrets", "allow_databases", "password_sha256_hex",
                     "password_double_sha1_hex", "ssh_keys", "ldap", "kerberos"):
            assert user.find(flag) is None, (name, flag)


def test_users_connect_from_private_networks_only() -> None:
    for name, user in _users().items():
        networks = user.find("networks")
        assert networks is not None and len(networks), name
        for rule in networks:
            assert rule.tag == "ip", (name, rule.tag)   # no host regexps, no any-host
            net = ipaddress.ip_network((rule.text or "").strip())
            assert net.is_private or net.is_loopback, (name, str(net))
            assert net.prefixlen >= (7 if net.version == 6 else 8), (name, str(net))


def test_writer_has_exactly_the_grants_the_worker_needs() -> None:
    writer = _users()[WRITER]
    assert _grants(writer) == WRITER_GRANTS
    profile = _profile(writer.findtext("profile", ""))
    assert profile.findtext("readonly") in (None, "0")
    assert profile.find("constraints") is None


def test_reader_is_readonly_and_may_change_only_the_query_timeout() -> None:
    reader = _users()[READER]
    assert _grants(reader) == READER_GRANTS
    profile = _profile(reader.findtext("profile", ""))
    assert profile.findtext("readonly") == "1"   # no writes, no DDL, no settings changes...
    constraints = profile.find("constraints")
    assert constraints is not None
    loose = {c.tag for c in constraints if c.find("changeable_in_readonly") is not None}
    assert loose == {"max_execution_time"}       # ...but the plugin's per-query timeout, bounded
    assert int(constraints.findtext("max_execution_time/max", "0")) <= 300
    for limit in ("max_execution_time", "max_memory_usage", "max_result_rows"):
        assert int(profile.findtext(limit, "0")) > 0, limit


def test_server_config_enables_what_the_users_file_relies_on() -> None:
    acl = ET.parse(SERVER_XML).getroot().find("access_control_improvements")
    assert acl is not None
    # changeable_in_readonly is refused (the whole users file with it) without this
    assert acl.findtext("settings_constraints_replace_previous") == "true"
    # app users do not read other users' queries (system.query_log, processes, ...)
    assert acl.findtext("select_from_system_db_requires_grant") == "true"
    assert acl.findtext("select_from_information_schema_requires_grant") == "true"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["clickhouse"]["volumes"] if v.startswith("./")}
    assert ROOT / mounts["/etc/clickhouse-server/users.d/stocktake.xml"] == USERS_XML
    assert ROOT / mounts["/etc/clickhouse-server/config.d/stocktake.xml"] == SERVER_XML


def test_compose_leaves_the_image_default_user_local() -> None:
    env = SERVICES["clickhouse"]["environment"]
    # CLICKHOUSE_USER/PASSWORD would make a network-reachable admin; the other two open the
    # default user to the network or give it access management
    for name in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD", "CLICKHOUSE_SKIP_USER_SETUP",
                 "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"):
        assert name not in env, name
    assert env["CLICKHOUSE_DB"] == DATABASE


def test_workers_write_as_the_writer_and_grafana_reads_as_the_reader() -> None:
    dsn = COMPOSE["x-stocktake-env"]["STOCKTAKE_CLICKHOUSE"]
    assert re.match(rf"http://{WRITER}:\$\{{CLICKHOUSE_WRITER_PASSWORD[:?}}].*@clickhouse:8123/{DATABASE}$", dsn), dsn
    for name in ("worker", "worker-gpu", "topics"):
        env = SERVICES[name]["environment"]
        assert env["STOCKTAKE_CLICKHOUSE"] == dsn, name
    grafana_env = SERVICES["grafana"]["environment"]
    assert grafana_env["CLICKHOUSE_GRAFANA_USER"] == READER
    assert grafana_env["CLICKHOUSE_DB"] == DATABASE
    # Grafana never gets the writer's password or DSN
    assert not [k for k, v in grafana_env.items() if "WRITER" in k or "WRITER" in str(v)]
    assert "STOCKTAKE_CLICKHOUSE" not in grafana_env
    # the password Grafana sends is the one the reader's from_env names
    reader_password = _users()[READER].find("password")
    assert reader_password is not None
    assert grafana_env["CLICKHOUSE_GRAFANA_PASSWORD"] == SERVICES["clickhouse"]["environment"][
        reader_password.get("from_env")]


def test_grafana_datasource_is_the_readonly_user() -> None:
    (source,) = yaml.safe_load(DATASOURCE_YAML.read_text(encoding="utf-8"))["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource" and source["editable"] is False
    data, secure = source["jsonData"], source["secureJsonData"]
    grafana_env = SERVICES["grafana"]["environment"]

    def resolved(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: str(grafana_env[m.group(1)]), value)

    assert resolved(data["username"]) == READER
    assert resolved(data["defaultDatabase"]) == DATABASE
    assert resolved(data["host"]) == "clickhouse"
    assert secure["password"] == "${CLICKHOUSE_GRAFANA_PASSWORD}"
    assert "WRITER" not in DATASOURCE_YAML.read_text()


def test_grafana_sync_defaults_to_the_readonly_user() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    from stocktake.grafana.clickhouse import datasource
    assert datasource({})["jsonData"]["username"] == READER


# ----------------------------------------------------------------------------- on chDB

# One user's session in a child process: chDB's `default` user is that user's declaration.
_AS_USER = r"""
import json, re, sys, time
args = json.loads(sys.argv[1])
import clickhouse_connect
_get_client = clickhouse_connect.get_client

def get_client(**kw):  # the users file and the database, as the compose stack connects
    if args.get("config"):
        kw["chdb_options"] = {"config-file": args["config"]}
    if args.get("database"):
        kw["database"] = args["database"]
    return _get_client(**kw)

clickhouse_connect.get_client = get_client
from stocktake.clickhouse.store import Store

store = Store("chdb://" + args["path"])
out = {"results": {}, "errors": []}

def code(exc):
    m = re.search(r"\(([A-Z_]+)\)", str(exc))
    return m.group(1) if m else str(exc).splitlines()[0][:300]

def step(name, fn):
    try:
        fn()
    except Exception as exc:
        out["errors"].append(f"{name}: {str(exc)[:400]}")

for sql in args.get("before", []):
    store.command(sql)
steps = args.get("steps", [])
if "writer" in steps:
    import orjson
    from stocktake import sources
    from stocktake.clickhouse import rollups
    from stocktake.clickhouse.rows import ingest_log_table
    from stocktake.processors.dedupe import DedupeWindow
    from stocktake.processors.contract_spec import shipped
    from stocktake.processors.judge import Record, judge_batch

    def ingest():
        dedupe = DedupeWindow(3_600_000, 100_000)
        by_stream = {}
        for e in sources.load_events("rees46")[:3000] + sources.load_events("olist")[:300]:
            by_stream.setdefault(e.stream, []).append(orjson.dumps(e.event))
        by_stream["behaviour"].append(b'{"event_type": "view"}')   # one invalid
        for stream, values in by_stream.items():
            records = [Record(i, None, v) for i, v in enumerate(values)]
            judged = judge_batch(shipped()[stream], "stocktake." + stream, 0, records, dedupe, int(time.time() * 1000))
            store.insert_arrow("ingest_log", ingest_log_table(judged.columns))

    step("migrations", lambda: rollups.prepare(store, raw_retention_s=7 * 86400))   # MODIFY TTL
    step("ingest", ingest)
    step("rebuild", lambda: rollups.rebuild(store, progress=None))
    step("retention off", lambda: store.set_raw_retention(0))                        # REMOVE TTL
    step("start again", lambda: rollups.prepare(store, raw_retention_s=3600))
    step("watermarks", lambda: store.watermarks("stocktake.behaviour", [0]))
if "reader" in steps:
    from stocktake.clickhouse import rollups
    tables = [r[0] for r in store.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine NOT IN ('View', 'MaterializedView', 'Null')")]
    out["tables"] = tables
    for table in tables:
        step(table, lambda table=table: store.rows(f"SELECT count() FROM {table}"))
    out["rows"] = {t: int(store.rows(f"SELECT count() FROM {t}")[0][0])
                   for t in ("ingest_log", *rollups.targets()) if t in tables}
if "grafana" in steps:
    try:
        from stocktake.grafana import alerts as A
        from stocktake.tools.bench_inventory import panel_queries
    except ImportError as exc:   # the grafana extra
        out["grafana"] = f"skipped: {exc}"
    else:
        queries = list(panel_queries(store, "stocktake."))
        queries += [(f"alert rule {k}", A.detector_sql(k, "stocktake.")) for k in A.DETECTOR_RULES]
        queries.append(("alert rule ingest stalled", A.stall_sql("stocktake.")))
        out["grafana"] = len(queries)
        for name, sql in queries:
            step(name, lambda sql=sql: store.query(sql))
for sql in args.get("sql", []):
    try:
        store.client.command(sql)
        out["results"][sql] = "ok"
    except Exception as exc:
        out["results"][sql] = code(exc)
out["readonly"] = store.rows("SELECT getSetting('readonly')")[0][0]
out["grants"] = sorted(r[0] for r in store.rows("SHOW GRANTS"))
print(json.dumps(out))
"""


def chdb_users_config(role: str, out: Path, keep: tuple[str, ...] = ("profile", "grants")) -> Path:
    """A chDB config whose `default` user is ``role`` of the users file: its profile and grants
    (``keep``: only those of the two), every profile the file declares, no password or network
    (chDB has no client). ``<changeable_in_readonly/>`` is left out: see the module docstring."""
    source = ET.parse(USERS_XML).getroot()
    users_conf = ET.Element("clickhouse")
    profiles = copy.deepcopy(source.find("profiles"))
    assert profiles is not None
    for parent in list(profiles.iter()):
        for child in list(parent):
            if child.tag == "changeable_in_readonly":
                parent.remove(child)
    ET.SubElement(profiles, "default")
    users_conf.append(profiles)
    user = copy.deepcopy(source.find(f"users/{role}"))
    assert user is not None
    user.tag = "default"
    for name in ("password", "networks", *({"profile", "grants"} - set(keep))):
        for element in user.findall(name):
            user.remove(element)
    ET.SubElement(user, "password")
    ET.SubElement(ET.SubElement(user, "networks"), "ip").text = "::/0"
    ET.SubElement(users_conf, "users").append(user)
    ET.SubElement(ET.SubElement(users_conf, "quotas"), "default")
    out.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(users_conf).write(out / "users.xml")
    main = ET.Element("clickhouse")
    users_xml = ET.SubElement(ET.SubElement(main, "user_directories"), "users_xml")
    ET.SubElement(users_xml, "path").text = str(out / "users.xml")
    ET.ElementTree(main).write(out / "config.xml")
    return out / "config.xml"


def as_user(path: Path, config: Path | None, **args: Any) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKTAKE_")}
    result = subprocess.run(
        [sys.executable, "-c", _AS_USER, json.dumps({"path": str(path), "config": str(config) if config else None,
                                                     "database": DATABASE, **args})],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One store, as the compose stack makes it: the image's default user creates the database,
    the writer migrates and writes; then the reader reads it three ways."""
    tmp = tmp_path_factory.mktemp("privileges")
    path = tmp / "chdb"
    admin = subprocess.run(
        [sys.executable, "-c", "import chdb.session as s, sys; s.Session(sys.argv[1]).query("
         "'CREATE DATABASE IF NOT EXISTS stocktake')", str(path)], capture_output=True, text=True, timeout=120)
    assert admin.returncode == 0, admin.stderr[-2000:]
    out = {"writer": as_user(path, chdb_users_config(WRITER, tmp / "writer"), steps=["writer"], sql=NEVER)}
    for mode, keep in (("reader", ("profile", "grants")), ("readonly only", ("profile",)),
                       ("grants only", ("grants",))):
        sql = READER_NEVER + (READER_SETTINGS if "profile" in keep else [])
        steps = ["reader", "grafana"] if mode == "reader" else ["reader"]
        out[mode] = as_user(path, chdb_users_config(READER, tmp / mode.replace(" ", "_"), keep),
                            steps=steps, sql=sql)
    return out


def _codes(run: dict[str, Any], statements: list[str]) -> dict[str, str]:
    return {sql: run["results"][sql] for sql in statements}


def test_writer_runs_every_migration_and_the_worker_store_calls(declared: dict[str, Any]) -> None:
    writer = declared["writer"]
    assert writer["errors"] == []
    assert writer["readonly"] in (0, "0")
    # the grants chDB resolved from the file: exactly the declared ones
    assert writer["grants"] == [
        "GRANT SELECT, INSERT, ALTER ADD COLUMN, ALTER MATERIALIZE COLUMN, ALTER ADD INDEX, ALTER MATERIALIZE INDEX, "
        "ALTER TTL, ALTER SETTINGS, CREATE TABLE, CREATE VIEW, DROP VIEW, TRUNCATE ON stocktake.* TO default"]
    reader = declared["reader"]
    assert reader["rows"]["ingest_log"] > 3000
    assert all(n > 0 for t, n in reader["rows"].items() if t != "ingest_log"), reader["rows"]


def test_writer_is_refused_everything_else(declared: dict[str, Any]) -> None:
    codes = _codes(declared["writer"], NEVER)
    assert {sql: c for sql, c in codes.items() if c not in REFUSED} == {}


def test_reader_reads_every_table_panel_and_alert_rule(declared: dict[str, Any]) -> None:
    reader = declared["reader"]
    assert reader["errors"] == []
    assert {"ingest_log", "alerts", "baselines", "scores", "schema_migrations"} <= set(reader["tables"])
    assert str(reader["readonly"]) == _profile(_users()[READER].findtext("profile", "")).findtext("readonly")
    assert reader["grants"] == ["GRANT SELECT ON stocktake.* TO default"]
    if isinstance(reader["grafana"], str):
        pytest.skip(reader["grafana"])
    assert reader["grafana"] > 20   # every dashboard's variables and panels, and the alert rules


@pytest.mark.parametrize("mode", ["reader", "readonly only", "grants only"])
def test_reader_is_refused_writes_ddl_system_and_table_functions(declared: dict[str, Any], mode: str) -> None:
    run = declared[mode]
    assert run["errors"] == []   # and still reads every table
    codes = _codes(run, READER_NEVER)
    assert {sql: c for sql, c in codes.items() if c not in REFUSED} == {}
    if mode == "readonly only":   # the profile alone holds, even were the grants wider
        assert str(run["readonly"]) == "1"
        assert {sql: c for sql, c in codes.items() if c != "READONLY"} == {"CREATE USER intruder": "ACCESS_DENIED"}
    if mode == "grants only":     # and the grants alone hold, were readonly lost
        assert set(codes.values()) == {"ACCESS_DENIED"}


@pytest.mark.parametrize("mode", ["reader", "readonly only"])
def test_reader_cannot_lift_its_limits(declared: dict[str, Any], mode: str) -> None:
    codes = _codes(declared[mode], READER_SETTINGS)
    assert set(codes.values()) == {"READONLY"}, codes
