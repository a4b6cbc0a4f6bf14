"""The ClickHouse store, through clickhouse-connect: chDB in-process or a server.

The same SQL runs on both. One Store per process: chDB allows one engine per
process and one process per data dir, so every call goes through one lock; a server's
calls run concurrently.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import clickhouse_connect
import pyarrow as pa
import tenacity

from stocktake.clickhouse.cluster import is_ddl, on_cluster
from stocktake.settings import mask_url

log = logging.getLogger("stocktake.store")

class StoreError(RuntimeError):
    """ClickHouse is unreachable, locked or refused a statement; one clear line."""


# chDB initialises one engine per process for the first path it is given and
# would silently keep using it for any other path: refuse instead.
_chdb_path: str | None = None


def _claim_chdb_path(dsn: str) -> None:
    global _chdb_path
    path = dsn.removeprefix("chdb://")
    if _chdb_path is None:
        _chdb_path = path
    elif _chdb_path != path:
        raise StoreError(
            f"this process already uses the chDB store {_chdb_path}; chDB allows one per process"
        )


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) for every clickhouse/migrations/NNN_name.sql, in order."""
    out = []
    for entry in resources.files("stocktake.clickhouse").joinpath("migrations").iterdir():
        m = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if not m:
            continue
        text = entry.read_text(encoding="utf-8")
        statements = [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if _has_sql(s)]
        out.append((int(m.group(1)), m.group(2), statements))
    return sorted(out)


# Statements a read-only query may start with. ClickHouse's readonly=1 is the enforcement, but
# not all of it: on chDB `SYSTEM …`, `KILL QUERY` and `SELECT … INTO OUTFILE` still run under it,
# and clickhouse-connect applies a command's settings with SET on chDB's one session, so a
# refused write would leave readonly=1 on the writer's session. Those never reach ClickHouse.
_READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)


def read_only_refusal(sql: str) -> str | None:
    """Why ``sql`` is not a read-only statement (one line), or None."""
    text = _LEADING_NOISE.sub("", sql)
    first = re.match(r"[A-Za-z]+", text)
    keyword = first.group(0).upper() if first else ""
    if keyword not in _READ_STATEMENTS:
        shown = keyword or (text[:20] or "an empty statement")
        return (f"read-only: {shown} is refused; queries here may only read "
                f"({', '.join(_READ_STATEMENTS)})")
    if re.search(r"\bINTO\s+OUTFILE\b", sql, re.I):
        return "read-only: INTO OUTFILE is refused (it writes a file on the worker's machine)"
    return None


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def _describe(exc: BaseException, dsn: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    errno = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    if errno:  # urllib3's wrapping repeats the URL three times; the errno says it all
        return errno.group(0)
    if "Cannot lock file" in str(exc) or ("status" in text and "lock" in text.lower()):
        path = dsn.removeprefix("chdb://")
        return f"the store {path} is locked by another process (a running `stocktake up`/worker?)"
    return text[:300]


def _failure(state: tenacity.RetryCallState, dsn: str) -> str:
    exc = state.outcome.exception() if state.outcome else None
    return _describe(exc, dsn) if exc else "?"


class Store:
    def __init__(self, dsn: str, *, retry_for: float = 0.0, cluster: str = ""):
        """Open chDB or connect to a server; a server that is not up yet is retried
        with backoff for ``retry_for`` seconds (one warning line per attempt). ``cluster``: run
        every DDL statement on that cluster of servers, replicated (clickhouse/cluster.py)."""
        self.dsn = dsn
        if cluster and self.embedded:
            raise StoreError(f"a ClickHouse cluster ({cluster}) needs ClickHouse servers, not the embedded chDB: "
                             "set STOCKTAKE_CLICKHOUSE to one of them")
        self.cluster = cluster
        # On a cluster an insert is acknowledged once a majority of replicas hold it, and the
        # reads that decide what to insert next (watermarks) see every acknowledged insert,
        # whichever replica answers (README: Past one ClickHouse server).
        self._quorum: dict[str, Any] = {"insert_quorum": "auto", "insert_quorum_parallel": 0} if cluster else {}
        self._consistent: dict[str, Any] | None = {"select_sequential_consistency": 1} if cluster else None
        # An event insert feeds a dozen rollup views; ClickHouse runs them one after another
        # unless asked. In parallel the insert is done sooner (README: Performance).
        self._insert_settings: dict[str, Any] = {"parallel_view_processing": 1}
        # chDB: one engine per process, one call at a time. A server takes concurrent queries:
        # no lock (reads never wait for inserts), and no session, which would serialize them.
        self._lock: Any = threading.RLock() if self.embedded else contextlib.nullcontext()
        if self.embedded:
            _claim_chdb_path(dsn)
        options: dict[str, Any] = {} if self.embedded else {"connect_timeout": 5, "autogenerate_session_id": False}
        # chDB fails for good (locked, bad path): only a server is worth waiting for.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(1) if self.embedded else tenacity.stop_before_delay(retry_for),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8.0),
            before_sleep=lambda state: log.warning(
                "ClickHouse %s unreachable (%s); retrying in %.1fs", mask_url(dsn), _failure(state, dsn),
                state.upcoming_sleep),
            reraise=True,
        )
        try:
            self.client = retrying(clickhouse_connect.get_client, dsn=dsn, **options)
        except Exception as exc:
            raise StoreError(f"cannot open ClickHouse {mask_url(dsn)}: {_describe(exc, dsn)}") from None

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb://")

    def migrate(self, after: Mapping[int, Callable[[Store], None]] | None = None) -> list[int]:
        """Apply pending migrations; idempotent (every statement is IF NOT EXISTS too).
        ``after[version]`` runs once that version's statements are in, before it is recorded
        (a data step: a crash in it repeats it at the next start)."""
        with self._lock:
            self.command(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
                "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
            )
            done = {row[0] for row in self.rows("SELECT version FROM schema_migrations")}
            applied = []
            for version, name, statements in migrations():
                if version in done:
                    continue
                for statement in statements:
                    self.command(statement)
                if after and version in after:
                    after[version](self)
                self.command(
                    "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
                    {"v": version, "n": name},
                )
                applied.append(version)
            return applied

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        if self.cluster and is_ddl(sql):
            sql = on_cluster(sql, self.cluster)
        with self._lock:
            try:
                return self.client.command(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(_describe(exc, self.dsn)) from None

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            try:
                result = self.client.query(sql, parameters=parameters, settings=settings)
            except Exception as exc:
                raise StoreError(_describe(exc, self.dsn)) from None
            return list(result.column_names), [tuple(r) for r in result.result_rows]

    def read_only_query(self, sql: str, *, timeout_s: float, max_rows: int, max_bytes: int
                        ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A user's ad-hoc SQL (`stocktake query`, POST /api/query): refused unless it is a read,
        run with ClickHouse's readonly=1, and bounded in time and result size."""
        refusal = read_only_refusal(sql)
        if refusal:
            raise StoreError(refusal)
        # readonly last: once it applies, no later setting of the same query may change.
        return self.query(sql, settings={"max_execution_time": max(1, round(timeout_s)), "max_result_rows": max_rows,
                                         "max_result_bytes": max_bytes, "result_overflow_mode": "throw",
                                         "readonly": 1})

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.query(sql, parameters)[1]

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        """A result as one Arrow table: columnar reads of many rows or of arrays (embeddings)."""
        with self._lock:
            try:
                table: pa.Table = self.client.query_arrow(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(_describe(exc, self.dsn)) from None
            return table

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        """One insert = one atomic block (rows per batch stay far below max_insert_block_size).
        ``dedup_token``: the same token again within the table's deduplication window (migration
        010) is stored once, in the table and in every rollup its views fill: a retry after a
        lost answer counts nothing twice."""
        settings = {**self._quorum, **self._insert_settings}
        if dedup_token is not None:
            settings.update(insert_deduplication_token=dedup_token,
                            deduplicate_blocks_in_dependent_materialized_views=1)
        with self._lock:
            try:
                self.client.insert_arrow(table, data, settings=settings or None)
            except Exception as exc:
                raise StoreError(f"insert into {table} failed: {_describe(exc, self.dsn)}") from None

    def insert_rows(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        """Small row-wise inserts (alerts, baselines); the event path uses insert_arrow."""
        with self._lock:
            try:
                self.client.insert(table, rows, column_names=columns, settings=self._quorum or None)
            except Exception as exc:
                raise StoreError(f"insert into {table} failed: {_describe(exc, self.dsn)}") from None

    # -- what the worker needs on partition assignment ---------------------------------

    def watermarks(self, topic: str, partitions: Sequence[int] | None = None) -> dict[int, int]:
        """Highest stored offset per partition of a topic (from partition_rollup: it outlives
        the raw rows' retention)."""
        where = "topic = {t:String}"
        params: dict[str, Any] = {"t": topic}
        if partitions is not None:
            where += " AND partition IN {p:Array(UInt32)}"
            params["p"] = list(partitions)
        return {p: o for (_t, p), o in self._watermarks(where, params).items()}

    def all_watermarks(self) -> dict[tuple[str, int], int]:
        """Highest stored offset of every (topic, partition) ever stored."""
        return self._watermarks("1", {})

    def _watermarks(self, where: str, params: dict[str, Any]) -> dict[tuple[str, int], int]:
        sql = f"SELECT topic, partition, max(offset_max) FROM partition_rollup WHERE {where} GROUP BY topic, partition"
        return {(str(t), int(p)): int(o) for t, p, o in self.query(sql, params, self._consistent)[1]}

    def log_bases(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """The base in force per partition (stored offset = Kafka offset + base; migration 011)."""
        return {int(p): int(b) for p, b in self.query(
            "SELECT partition, max(base) FROM log_bases WHERE topic = {t:String} AND partition IN {p:Array(UInt32)}"
            " GROUP BY partition", {"t": topic, "p": list(partitions)}, self._consistent)[1]}

    def record_log_base(self, topic: str, partition: int, base: int, kafka_start: int, kafka_end: int,
                        stored_before: int) -> None:
        self.insert_rows("log_bases", [[topic, partition, base, kafka_start, kafka_end, stored_before,
                                        dt.datetime.now(dt.UTC)]],
                         ["topic", "partition", "base", "kafka_start", "kafka_end", "stored_before", "detected_at"])

    def event_time_progress(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Newest stored event time (ms) of valid events per partition."""
        return {int(p): int(t) for p, t in self.rows(
            "SELECT partition, toUnixTimestamp64Milli(max(valid_ts_max)) AS newest FROM partition_rollup"
            " WHERE topic = {t:String} AND partition IN {p:Array(UInt32)} GROUP BY partition"
            " HAVING newest IS NOT NULL",
            {"t": topic, "p": list(partitions)})}

    def recent_event_ids(
        self, topic: str, window_s: float, limit: int, partitions: Sequence[int] | None = None
    ) -> list[tuple[str, int]]:
        """(event_id, ts_ms) of the topic's valid events within window_s behind the low
        watermark: the minimum over ``partitions`` (default: all) of their newest event time.
        Reads a bounded slice of ingest_log (event-time skip index)."""
        where_p = "" if partitions is None else " AND partition IN {p:Array(UInt32)}"
        return [
            (str(e), int(t))
            for e, t in self.rows(
                "WITH (SELECT min(newest) FROM (SELECT max(valid_ts_max) AS newest FROM partition_rollup"
                " WHERE topic = {t:String}" + where_p + " GROUP BY partition HAVING newest IS NOT NULL)) AS low"
                " SELECT event_id, toUnixTimestamp64Milli(ts) FROM ingest_log"
                " WHERE topic = {t:String} AND status = 'valid'"
                " AND ts >= low - toIntervalMillisecond({w:UInt64}) ORDER BY ts DESC LIMIT {n:UInt64}",
                {"t": topic, "w": int(window_s * 1000), "n": limit,
                 "p": list(partitions) if partitions is not None else []},
            )
        ]

    def raw_retention(self) -> int:
        """Seconds ingest_log keeps raw events (its TTL), 0: forever."""
        (create,), = self.rows("SELECT create_table_query FROM system.tables "
                               "WHERE database = currentDatabase() AND name = 'ingest_log'")
        m = re.search(r"\bTTL\b.*?toIntervalSecond\((\d+)\)", create)
        return int(m.group(1)) if m else 0

    def set_raw_retention(self, seconds: int) -> bool:
        """Keep raw events for ``seconds`` of ingest time (0: forever); True if it changed.
        Rows past it go at the next merge (a TTL, not a scan)."""
        if self.raw_retention() == seconds:
            return False
        if seconds:
            self.command(f"ALTER TABLE ingest_log MODIFY TTL toDateTime(ingest_ts) + toIntervalSecond({int(seconds)})")
        else:
            self.command("ALTER TABLE ingest_log REMOVE TTL")
        return True

    def close(self) -> None:
        with self._lock:
            try:
                self.client.close()
            except Exception:  # closing a broken connection must not mask the real error
                pass

