"""STOCKTAKE_CLICKHOUSE_CLUSTER: the store's DDL for a replicated cluster is its single-server
DDL with ON CLUSTER and Replicated engines, nothing else (clickhouse/cluster.py). No cluster
runs here: ClickHouse's own parser (formatQuery, in chDB) checks every statement."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stocktake.clickhouse.cluster import on_cluster
from stocktake.clickhouse.store import Store, StoreError, migrations
from stocktake.settings import Settings

CLUSTER = "stocktake_cluster"


def _statements() -> list[str]:
    return [statement for _, _, statements in migrations() for statement in statements]


def _formatted(store: Store, sql: str) -> str:
    (text,), = store.rows("SELECT formatQuery({sql:String})", {"sql": sql})
    return str(text)


def _single_server(formatted: str) -> str:
    """A formatted cluster statement with the cluster's clauses taken out."""
    text = formatted.replace(f" ON CLUSTER {CLUSTER}", "")
    text = re.sub(r"ENGINE = Replicated(\w*MergeTree)", r"ENGINE = \1", text)
    return text.replace("replicated_deduplication_window", "non_replicated_deduplication_window")


def test_every_migration_on_a_cluster_is_the_single_server_statement_replicated(store: Store) -> None:
    statements = _statements()
    assert len(statements) > 40
    engines = 0
    for sql in statements:
        clustered = _formatted(store, on_cluster(sql, CLUSTER))   # ClickHouse parses it
        assert f"ON CLUSTER {CLUSTER}" in clustered, sql
        assert _single_server(clustered) == _formatted(store, sql), sql
        assert not re.search(r"ENGINE = (\w*)MergeTree", clustered.replace("ENGINE = Replicated", "")), sql
        assert "non_replicated_deduplication_window" not in clustered, sql
        engines += clustered.count("ENGINE = Replicated")
    assert engines >= 15   # ingest_log, every rollup, alerts, baselines, scores, outbox, bases, contracts


class _Recorder:
    """clickhouse-connect's client as Store calls it, recording what it is asked."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.settings: list[tuple[str, Any]] = []

    def command(self, sql: str, parameters: Any = None) -> Any:
        self.commands.append(sql)

    def query(self, sql: str, parameters: Any = None, settings: Any = None) -> Any:
        self.settings.append((sql, settings))

        kept_forever = [("CREATE TABLE ingest_log ...",)] if "create_table_query" in sql else []

        class Result:   # no migration applied yet; ingest_log kept forever
            column_names: list[str] = []
            result_rows: list[tuple[Any, ...]] = kept_forever
        return Result()

    def insert_arrow(self, table: str, data: Any, settings: Any = None) -> None:
        self.settings.append((table, settings))

    def insert(self, table: str, rows: Any, column_names: Any = None, settings: Any = None) -> None:
        self.settings.append((table, settings))


def test_a_store_on_a_cluster_runs_its_ddl_there_and_writes_by_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    from stocktake.clickhouse import store as store_module
    client = _Recorder()
    monkeypatch.setattr(store_module.clickhouse_connect, "get_client", lambda **_: client)
    store = Store("http://localhost:8123", cluster=CLUSTER)   # a server's store; the client records
    store.migrate()
    ddl = [sql for sql in client.commands if not sql.lstrip().upper().startswith("INSERT")]
    assert len(ddl) == len(_statements()) + 1   # and the migrations' own table
    assert all(f"ON CLUSTER '{CLUSTER}'" in sql for sql in ddl)
    assert "ENGINE = ReplicatedMergeTree ORDER BY version" in ddl[0]
    store.set_raw_retention(3600)
    assert client.commands[-1].startswith(f"ALTER TABLE ingest_log ON CLUSTER '{CLUSTER}' MODIFY TTL")

    store.insert_arrow("ingest_log", pa.table({"offset": [1]}), dedup_token="t-0-1")
    assert client.settings[-1] == ("ingest_log", {"insert_quorum": "auto", "insert_quorum_parallel": 0,
                                                  "parallel_view_processing": 1, "insert_deduplication_token": "t-0-1",
                                                  "deduplicate_blocks_in_dependent_materialized_views": 1})
    store.watermarks("t.behaviour")
    assert client.settings[-1][1] == {"select_sequential_consistency": 1}


def test_a_cluster_needs_servers_and_a_name() -> None:
    with pytest.raises(StoreError, match="needs ClickHouse servers"):
        Store("chdb:///tmp/never-opened", cluster=CLUSTER)
    with pytest.raises(ValueError, match="cluster name"):
        Settings(clickhouse_cluster="a cluster; DROP")
