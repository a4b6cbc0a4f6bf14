"""Tests for stocktake.settings and clickhouse.store.

Store tests use the session ``store`` (one chDB store per process) and
isolate themselves by uuid topic names and uuid sources.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stocktake.clickhouse import queries
from stocktake.clickhouse import store as store_module
from stocktake.clickhouse.rows import ingest_log_table
from stocktake.clickhouse.store import Store, StoreError, migrations
from stocktake.processors.contract_spec import shipped
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.judge import Record, judge_batch
from stocktake.settings import Settings, SettingsError

BEHAVIOUR = shipped()["behaviour"]

T0 = 1569888000000  # 2019-10-01T00:00:00Z
MIN_MS = 60_000

# ------------------------------------------------------------------ Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.kafka == "" and s.clickhouse == ""
    assert s.embedded_kafka is True
    assert s.data_dir == Path(".stocktake")
    assert s.partitions == 4
    assert s.batch_rows == 20_000
    assert s.flush_interval_s == 0.5
    assert s.flush_idle_rows == 4_000
    assert s.gap_interval_s == 2.0
    assert s.commit_offsets is True
    assert s.topic("behaviour") == "stocktake.behaviour"
    assert s.deadletter_topic == "stocktake.deadletter"


def test_env_parsing_int_float_bool_path_str() -> None:
    s = Settings.from_env({
        "STOCKTAKE_PARTITIONS": " 8 ",
        "STOCKTAKE_FLUSH_INTERVAL": "0.25",
        "STOCKTAKE_DEDUPE_WINDOW": "60",
        "STOCKTAKE_COMMIT_OFFSETS": "off",
        "STOCKTAKE_DATA_DIR": "/var/lib/stocktake",
        "STOCKTAKE_TOPIC_PREFIX": "shop",
        "STOCKTAKE_KAFKA": "broker:9092",
        "STOCKTAKE_LOG_LEVEL": "",  # empty means unset
    })
    assert s.partitions == 8 and type(s.partitions) is int
    assert s.flush_interval_s == 0.25
    assert s.dedupe_window_s == 60.0 and type(s.dedupe_window_s) is float
    assert s.commit_offsets is False
    assert s.data_dir == Path("/var/lib/stocktake") and isinstance(s.data_dir, Path)
    assert s.topic("product") == "shop.product"
    assert s.embedded_kafka is False
    assert s.log_level == "WARNING"


@pytest.mark.parametrize(("text", "value"), [
    ("1", True), ("true", True), ("YES", True), (" On ", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
])
def test_env_bool_spellings(text: str, value: bool) -> None:
    assert Settings.from_env({"STOCKTAKE_COMMIT_OFFSETS": text}).commit_offsets is value


def test_flags_override_env() -> None:
    env = {"STOCKTAKE_PARTITIONS": "8", "STOCKTAKE_GROUP_ID": "from-env",
           "STOCKTAKE_COMMIT_OFFSETS": "true"}
    s = Settings.from_env(env, partitions=2, group_id="from-flag", commit_offsets=False)
    assert (s.partitions, s.group_id, s.commit_offsets) == (2, "from-flag", False)
    # None means "flag not given": the environment stands.
    s = Settings.from_env(env, partitions=None, group_id=None)
    assert (s.partitions, s.group_id) == (8, "from-env")
    # Flag values are coerced like environment values.
    s = Settings.from_env(env, partitions="3", data_dir="/tmp/x")
    assert s.partitions == 3 and s.data_dir == Path("/tmp/x")


def test_unknown_flag_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings.from_env({}, no_such_setting=1)


@pytest.mark.parametrize(("env", "name"), [
    ({"STOCKTAKE_PARTITIONS": "four"}, "STOCKTAKE_PARTITIONS"),
    ({"STOCKTAKE_PARTITIONS": "2.5"}, "STOCKTAKE_PARTITIONS"),
    ({"STOCKTAKE_FLUSH_INTERVAL": "fast"}, "STOCKTAKE_FLUSH_INTERVAL"),
    ({"STOCKTAKE_COMMIT_OFFSETS": "maybe"}, "STOCKTAKE_COMMIT_OFFSETS"),
    ({"STOCKTAKE_HTTP_PORT": "http"}, "STOCKTAKE_HTTP_PORT"),
    # parse fine, but out of range
    ({"STOCKTAKE_PARTITIONS": "0"}, "STOCKTAKE_PARTITIONS"),
    ({"STOCKTAKE_BATCH_ROWS": "0"}, "STOCKTAKE_BATCH_ROWS"),
    ({"STOCKTAKE_FLUSH_INTERVAL": "0"}, "STOCKTAKE_FLUSH_INTERVAL"),
    ({"STOCKTAKE_DEDUPE_WINDOW": "-1"}, "STOCKTAKE_DEDUPE_WINDOW"),
    ({"STOCKTAKE_HTTP_PORT": "70000"}, "STOCKTAKE_HTTP_PORT"),
    ({"STOCKTAKE_CATALOG_DUPLICATE_SIMILARITY": "1.5"}, "STOCKTAKE_CATALOG_DUPLICATE_SIMILARITY"),
    ({"STOCKTAKE_CATALOG_MIN_CATEGORY": "1"}, "STOCKTAKE_CATALOG_MIN_CATEGORY"),
])
def test_bad_env_value_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize("name", ["STOCKTAKE_FLUSH_INTERVAL", "STOCKTAKE_DEDUPE_WINDOW",
                                  "STOCKTAKE_CONNECT_TIMEOUT"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_seconds_rejected(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(SettingsError, match="--batch-rows"):
        Settings.from_env({}, batch_rows="lots")
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize("dsn", ["mysql://host/db", "localhost:8123", "chdb:/no-slashes", "/abs/path"])
def test_invalid_clickhouse_scheme_rejected(dsn: str) -> None:
    with pytest.raises(SettingsError, match="STOCKTAKE_CLICKHOUSE"):
        Settings.from_env({"STOCKTAKE_CLICKHOUSE": dsn})


@pytest.mark.parametrize("dsn", [
    "chdb:///data/chdb", "http://ch:8123", "https://u:p@ch:8443/db", "clickhouse://ch:9000",
])
def test_valid_clickhouse_schemes_kept(dsn: str) -> None:
    s = Settings.from_env({"STOCKTAKE_CLICKHOUSE": dsn})
    assert s.clickhouse_dsn == dsn


def test_embedded_clickhouse_dsn_is_absolute_chdb_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dsn = Settings.from_env({}, data_dir="rel/dir").clickhouse_dsn
    assert dsn.startswith("chdb:///")
    path = Path(dsn.removeprefix("chdb://"))
    assert path.is_absolute()
    assert path == (tmp_path / "rel" / "dir" / "chdb").resolve()


def test_masked_hides_url_passwords() -> None:
    s = Settings.from_env({
        "STOCKTAKE_CLICKHOUSE": "https://admin:s3cr3t:x@ch.example:8443/inventory",
        "STOCKTAKE_KAFKA": "kafka://svc:hunter2@broker:9092",
    })
    masked = s.masked()
    assert masked["STOCKTAKE_CLICKHOUSE"] == "https://admin:***@ch.example:8443/inventory"
    assert masked["STOCKTAKE_KAFKA"] == "kafka://svc:***@broker:9092"
    assert not any("s3cr3t" in v or "hunter2" in v for v in masked.values())
    assert masked["STOCKTAKE_PARTITIONS"] == "4"
    # One entry per setting, keyed by its environment variable.
    assert set(masked) == {Settings.env_name(name) for name in Settings.model_fields}
    assert len(masked) == len(Settings.model_fields)
    assert all(k.startswith("STOCKTAKE_") for k in masked)
    # The settings themselves keep the secret.
    assert "s3cr3t" in s.clickhouse


def test_masked_leaves_urls_without_password_alone() -> None:
    s = Settings.from_env({"STOCKTAKE_CLICKHOUSE": "http://ch:8123/db"})
    assert s.masked()["STOCKTAKE_CLICKHOUSE"] == "http://ch:8123/db"


def test_every_documented_variable_is_read() -> None:
    """The names README.md documents; renaming a field must not rename its variable."""
    assert set(Settings().masked()) == {f"STOCKTAKE_{name}" for name in (
        "KAFKA", "CLICKHOUSE", "CLICKHOUSE_CLUSTER", "DATA_DIR", "TOPIC_PREFIX", "PARTITIONS", "GROUP_ID", "BATCH_ROWS",
        "FLUSH_INTERVAL", "FLUSH_IDLE_ROWS", "DEDUPE_WINDOW", "DEDUPE_MAX_KEYS", "LATENESS", "FRESHNESS_TARGET",
        "DRIFT_GRACE",
        "FIELD_VANISH_AFTER", "AMOUNT_TOLERANCE", "GAP_INTERVAL", "MINUTE_CLOSE_DELAY", "WATERMARK_IDLE", "GAPS_CONFIG",
        "ALERT_WEBHOOK", "SCORING", "TEXT_ENCODER", "DEVICE", "MODELS_DIR", "SCORE_INTERVAL", "HTTP_HOST", "HTTP_PORT",
        "LOG_LEVEL", "CONNECT_TIMEOUT", "COMMIT_OFFSETS", "RAW_RETENTION", "QUERY_TIMEOUT", "QUERY_MAX_ROWS",
        "QUERY_MAX_BYTES", "STALL_AFTER", "ALERT_WEBHOOK_SECRET", "ALERT_WEBHOOK_TIMEOUT",
        "ALERT_PAGE_MAX_ATTEMPTS", "ALERT_PAGE_MAX_AGE", "ALERT_OUTBOX_MAX_PENDING",
        "DEADLETTER_MAX_BYTES", "TOPICS", "DISCOVERY_INTERVAL", "CONTRACTS", "CATALOG_DUPLICATE_SIMILARITY",
        "CATALOG_INDISTINCT_SIMILARITY", "CATALOG_INDISTINCT_NEIGHBOURS", "CATALOG_MISMATCH_SIMILARITY",
        "CATALOG_MIN_CATEGORY", "CATALOG_MAX_PRODUCTS", "SCORE_IDLE", "SCORE_SNAPSHOT_INTERVAL")}
    s = Settings.from_env({"STOCKTAKE_FIELD_VANISH_AFTER": "60", "STOCKTAKE_SCORE_INTERVAL": "2",
                           "STOCKTAKE_MINUTE_CLOSE_DELAY": "5", "STOCKTAKE_CONNECT_TIMEOUT": "0"})
    assert (s.field_vanish_after_s, s.score_interval_s, s.minute_close_delay_s, s.connect_timeout_s) == (
        60.0, 2.0, 5.0, 0.0)


def test_settings_without_from_env_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dashboards are built from Settings(): the process environment must not change them."""
    monkeypatch.setenv("STOCKTAKE_LATENESS", "5")
    assert Settings().lateness_s == 300.0
    assert Settings.from_env().lateness_s == 5.0
    assert Settings(lateness_s=7).lateness_s == 7.0


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.partitions = 8  # type: ignore[misc]


def test_bad_value_error_is_one_line_and_hides_the_password() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"STOCKTAKE_CLICKHOUSE": "mysql://admin:s3cr3t@db/x"})
    assert "\n" not in str(info.value) and "s3cr3t" not in str(info.value)
    assert str(info.value).startswith("STOCKTAKE_CLICKHOUSE: ")
    with pytest.raises(SettingsError, match=r"^STOCKTAKE_DEVICE: .*'auto', 'cuda' or 'cpu'"):
        Settings.from_env({"STOCKTAKE_DEVICE": "tpu"})


def test_topic_names_share_one_prefix() -> None:
    s = Settings.from_env({"STOCKTAKE_TOPIC_PREFIX": "shop"})
    assert s.topic_dot_prefix == "shop."
    assert s.topic("behaviour") == "shop.behaviour"
    assert (s.deadletter_topic, s.alerts_topic) == ("shop.deadletter", "shop.alerts")
    assert s.score_topics == ("shop.scores.users", "shop.scores.products")


# ------------------------------------------------------------------ Store


def new_topic() -> str:
    return f"t{uuid.uuid4().hex[:12]}.behaviour"


def ev(event_id: str, ts: int, **kw: Any) -> bytes:
    obj: dict[str, Any] = {"event_id": event_id, "event_type": "view", "user_id": 1,
                           "product_id": 2, "ts": ts, "source": "web"}
    obj.update(kw)
    return orjson.dumps({k: v for k, v in obj.items() if v is not None})


def insert(store: Store, topic: str, partition: int, values: list[bytes], first_offset: int = 0,
           window: DedupeWindow | None = None, ingest_ms: int = T0) -> dict[str, int]:
    """Judge values as consecutive records and store them; returns the counts."""
    records = [Record(first_offset + i, None, v) for i, v in enumerate(values)]
    if window is None:
        window = DedupeWindow(10**12, 10**6)
    judged = judge_batch(BEHAVIOUR, topic, partition, records, window, ingest_ms)
    store.insert_arrow("ingest_log", ingest_log_table(judged.columns))
    return judged.counts


def test_migrate_is_idempotent(store: Store) -> None:
    files = sorted(p.name for p in (Path(store_module.__file__).parent / "migrations").glob("*.sql"))
    assert len(files) >= 2
    assert [f"{v:03d}_{n}.sql" for v, n, _ in migrations()] == files
    assert store.migrate() == []  # the session fixture already migrated
    assert store.migrate() == []
    rows = store.rows("SELECT version, name, count() FROM schema_migrations GROUP BY version, name "
                      "ORDER BY version")
    assert [(int(v), n, int(c)) for v, n, c in rows] == [(v, n, 1) for v, n, _ in migrations()]
    tables = {r[0] for r in store.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase()")}
    assert {"ingest_log", "ingest_assets", "asset_minute", "invalid_minute"} <= tables


def test_migrations_split_into_statements() -> None:
    by_version = {v: stmts for v, _, stmts in migrations()}
    assert len(by_version[1]) == 1 and by_version[1][0].startswith("-- Every event")
    assert len(by_version[2]) == 3
    assert all(s and not s.endswith(";") for stmts in by_version.values() for s in stmts)


def test_watermarks_is_max_offset_per_partition(store: Store) -> None:
    topic = new_topic()
    assert store.watermarks(topic) == {}
    insert(store, topic, 0, [ev(f"a{i}", T0) for i in range(5)])
    insert(store, topic, 2, [ev(f"b{i}", T0) for i in range(3)], first_offset=100)
    insert(store, topic, 0, [b"garbage"], first_offset=5)  # invalid rows count too
    insert(store, new_topic(), 0, [ev("x", T0)], first_offset=999)  # another topic
    assert store.watermarks(topic) == {0: 5, 2: 102}
    assert store.watermarks(topic, [2]) == {2: 102}
    assert store.watermarks(topic, [1]) == {}
    assert store.watermarks(topic, []) == {}


def test_recent_event_ids_is_valid_events_in_window_of_that_topic(store: Store) -> None:
    topic, other = new_topic(), new_topic()
    insert(store, topic, 0, [
        ev("old", T0),
        ev("a", T0 + 50_000),
        ev("b", T0 + 60_000),
        ev("b", T0 + 60_000),                       # duplicate row of b
        ev("bad", T0 + 59_000, user_id=None),       # invalid row inside the window
    ])
    insert(store, topic, 1, [ev("c", T0 + 40_000)])
    # Another topic, newer: must neither appear nor move this topic's window.
    insert(store, other, 0, [ev("elsewhere", T0 + 3_600_000), ev("near", T0 + 55_000)])

    assert store.recent_event_ids(topic, 30, 100) == [
        ("b", T0 + 60_000), ("a", T0 + 50_000), ("c", T0 + 40_000)]
    assert store.recent_event_ids(topic, 30, 1) == [("b", T0 + 60_000)]
    assert {e for e, _ in store.recent_event_ids(topic, 3600, 100)} == {"old", "a", "b", "c"}
    assert store.recent_event_ids(other, 30, 100) == [("elsewhere", T0 + 3_600_000)]
    assert store.recent_event_ids(new_topic(), 30, 100) == []


def test_recent_event_ids_rebuilds_the_dedupe_window(store: Store) -> None:
    topic = new_topic()
    insert(store, topic, 0, [ev(f"e{i}", T0 + i * 1000) for i in range(10)])
    window = DedupeWindow(5_000, 1000)
    window.load(store.recent_event_ids(topic, 5, 1000))
    assert {f"e{i}" for i in range(10) if f"e{i}" in window} == {f"e{i}" for i in range(4, 10)}


def test_asset_views_count_this_topics_rows(store: Store) -> None:
    topic = new_topic()
    src = f"s{uuid.uuid4().hex[:10]}"
    kind = f"k{uuid.uuid4().hex[:10]}"  # an open-vocabulary event_type: no product needed
    counts = insert(store, topic, 0, [
        ev("v1", T0 + 10_000, source=src),
        ev("v2", T0 + 20_000, source=src),
        ev("v1", T0 + 30_000, source=src),                       # duplicate
        ev("c1", T0 + MIN_MS + 5_000, source=src, event_type="cart"),
        ev("k1", T0 + MIN_MS + 6_000, source=src, event_type=kind, product_id=None),
        ev("x1", T0 + 40_000, source=src, user_id=None),         # invalid, fields readable
        b"{broken",                                              # invalid, nothing readable
    ], ingest_ms=T0 + 5 * MIN_MS)
    assert counts == {"valid": 4, "duplicate": 1, "invalid": 2}

    rows = store.rows(
        "SELECT asset, countIf(status = 'valid'), countIf(status = 'duplicate'), "
        "countIf(status = 'invalid') FROM ingest_assets WHERE topic = {t:String} "
        "GROUP BY asset", {"t": topic})
    assert {a: (int(v), int(d), int(i)) for a, v, d, i in rows} == {
        "behaviour": (4, 1, 2),
        "behaviour/event_type=view": (2, 1, 1),
        "behaviour/event_type=cart": (1, 0, 0),
        f"behaviour/event_type={kind}": (1, 0, 0),
        f"behaviour/source={src}": (4, 1, 1),
    }

    # asset_minute has no topic column: the uuid source and kind make these assets ours.
    rows = store.rows(
        "SELECT asset, minute, events, valid, duplicates, invalid FROM asset_minute "
        "WHERE asset IN {a:Array(String)} ORDER BY asset, minute",
        {"a": [f"behaviour/source={src}", f"behaviour/event_type={kind}"]})
    m0 = datetime.fromtimestamp(T0 / 1000, UTC)
    m1 = datetime.fromtimestamp((T0 + MIN_MS) / 1000, UTC)
    got = [(a, m.replace(tzinfo=UTC) if m.tzinfo is None else m, *map(int, rest))
           for a, m, *rest in rows]
    assert got == [
        (f"behaviour/event_type={kind}", m1, 1, 1, 0, 0),
        (f"behaviour/source={src}", m0, 4, 2, 1, 1),
        (f"behaviour/source={src}", m1, 2, 2, 0, 0),
    ]

    # The inventory's per-asset query (the rollups), scoped by this topic's prefix.
    cols, rows = store.query(queries.ASSETS_SQL, {"prefix": topic.rsplit(".", 1)[0] + ".", "late_s": 0})
    mine = {r[0]: dict(zip(cols, r, strict=True)) for r in rows}[f"behaviour/source={src}"]
    assert (mine["valid"], mine["duplicates"], mine["invalid"]) == (4, 1, 1)
    last = mine["last_event_ts"]
    assert (last.replace(tzinfo=UTC) if last.tzinfo is None else last) == datetime.fromtimestamp(
        (T0 + MIN_MS + 6_000) / 1000, UTC)


def test_bad_sql_raises_store_error_with_one_line(store: Store) -> None:
    for call in (lambda: store.rows("SELEC 1"),
                 lambda: store.command("SELECT * FROM no_such_table_here"),
                 lambda: store.query("SELECT {x:UInt8}", {"x": "not a number"})):
        with pytest.raises(StoreError) as info:
            call()
        message = str(info.value)
        assert message and "\n" not in message and len(message) <= 300
    # The store still works afterwards.
    assert store.rows("SELECT 1") == [(1,)]


def test_insert_of_wrong_table_raises_store_error(store: Store) -> None:
    judged = judge_batch(BEHAVIOUR, new_topic(), 0, [Record(0, None, ev("z", T0))],
                         DedupeWindow(1000, 10), T0)
    with pytest.raises(StoreError, match="insert into no_such_table failed"):
        store.insert_arrow("no_such_table", ingest_log_table(judged.columns))


def test_second_chdb_path_in_this_process_is_refused(store: Store, tmp_path: Path) -> None:
    if not store.embedded:
        pytest.skip("the session store is a ClickHouse server: no chDB path is claimed")
    other = tmp_path / "other-chdb"
    with pytest.raises(StoreError, match="one per process"):
        Store(f"chdb://{other}")
    assert not other.exists()  # refused before anything was opened
    assert store.rows("SELECT 1") == [(1,)]
