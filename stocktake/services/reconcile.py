"""`stocktake reconcile`: prove the rollups and the Kafka coordinates against what is stored.

1. Per asset and minute of event time, the rollups of migration 008 equal a recount of the
   raw events still retained in ingest_log: the very SELECT each materialized view runs
   (clickhouse/rollups.py) is run again over the retained slice, and both sides are merged
   per key and compared on every mergeable measure (counts, mins, maxes, the lag histogram).
   Approximate states (tdigest, uniq) are left out: their inputs are the counts compared.
   Without a window, the all-time rollups the inventory reads are compared with the sum of
   their minutes too.
2. Per Kafka partition, the stored coordinates (partition_rollup), a recount of the retained
   rows and Kafka's own offsets (log start/end, the consumer group's committed offset) agree:
   no offset without a row (lost), no coordinate stored twice (counted twice), nothing
   committed that was not stored.

A minute is provable only while none of its raw rows can have expired (STOCKTAKE_RAW_RETENTION,
by ingest time): minutes whose oldest row is older than that are skipped, not differences.
Every comparison is one SQL statement; with chDB the store's lock keeps a worker's inserts
(and the views they fire) out of it. A ClickHouse server gives no such guarantee: a difference
in minutes being written at that moment may be transient (run again). Kafka's committed offsets
are read before the store and its log ends after, so a worker moving on meanwhile shows as
pending, never as a difference.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stocktake.clickhouse.rollups import View, views
from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import iso_ms, iso_utc, jsonable
from stocktake.processors.contract_spec import shipped
from stocktake.settings import Settings

# A minute's rows must stay this far from expiry to be recounted: a TTL merge can delete
# them while the recount runs.
EXPIRY_MARGIN_S = 600.0
EXAMPLES_PER_ASSET = 20     # differing keys listed per asset and check (all are counted)
EXAMPLE_COORDINATES = 10    # duplicate coordinates / holes named per partition
KAFKA_TIMEOUT_S = 10.0
KAFKA_REQUEST_MS = 5000
ROLLUP, RAW = 1, 2          # the two sides of every comparison

OURS = "startsWith(topic, {prefix:String})"
DT64 = "DateTime64(3, 'UTC')"
T = TypeVar("T")


# ------------------------------------------------------------------ the window


@dataclass(frozen=True)
class Window:
    """Event time [start, end), widened to whole minutes; None: unbounded."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def bounded(self) -> bool:
        return self.start is not None or self.end is not None

    def minutes(self) -> tuple[int | None, int | None]:
        """(first minute, minute after the last) as epoch ms."""
        start = None if self.start is None else int(self.start.timestamp()) // 60 * 60_000
        end = None if self.end is None else -(-int(self.end.timestamp() * 1000) // 60_000) * 60_000
        return start, end

    def as_dict(self) -> dict[str, str | None]:
        start, end = self.minutes()
        return {"from": None if start is None else iso_ms(start), "to": None if end is None else iso_ms(end)}


def parse_iso(text: str) -> dt.datetime:
    """ISO-8601, a date or a time (``Z`` or an offset; naive means UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def window(start: str | None, end: str | None) -> Window:
    """The window between two ISO-8601 times (None: unbounded), as the API receives it."""
    found = Window(parse_iso(start) if start else None, parse_iso(end) if end else None)
    if found.start is not None and found.end is not None and found.start >= found.end:
        raise ValueError("--from must be before --to")
    return found


# ------------------------------------------------------------------ rollups vs raw events


@dataclass(frozen=True)
class Measure:
    name: str
    merge: str          # how rows of one key combine: sum | min | max | sumMap
    type: str           # what both sides are cast to

    def side(self, side: int) -> str:
        return f"{self.merge}If({self.name}, side = {side}) AS {_side_name(side)}_{self.name}"

    def differs(self) -> str:
        return f"rollup_{self.name} != raw_{self.name}"


def _side_name(side: int) -> str:
    return "rollup" if side == ROLLUP else "raw"


def _count(name: str) -> Measure:
    return Measure(name, "sum", "UInt64")


def _first(name: str) -> Measure:
    return Measure(name, "min", DT64)


def _last(name: str) -> Measure:
    return Measure(name, "max", DT64)


ASSET_MEASURES = (_count("n"), _count("n_objects"), _count("n_refs"), _first("ts_min"), _last("ts_max"),
                  _first("ingest_min"), _last("ingest_max"), Measure("lag_s", "sumMap", "Map(Int32, UInt64)"))
FIELD_MEASURES = (_count("n"), _count("n_bad"), _first("ts_min"), _last("ts_max"))


@dataclass(frozen=True)
class Check:
    """One rollup compared with what it should hold, per (topic, asset[, minute]) + key."""

    name: str
    rollup: str                  # the table checked
    against: str                 # what it is checked against (a view's recount, a finer rollup)
    key: tuple[str, ...]         # besides topic, asset and minute
    measures: tuple[Measure, ...]
    per_minute: bool = True

    def columns(self) -> str:
        parts = [f"CAST({m.name} AS {m.type}) AS {m.name}" for m in self.measures]
        return ", ".join(["topic", "asset", *(["minute"] if self.per_minute else []), *self.key, *parts])

    @property
    def group(self) -> str:
        return ", ".join(["topic", "asset", *(["minute"] if self.per_minute else []), *self.key])


ASSET_MINUTES = Check("asset minutes", "asset_minute_rollup", "asset_facts_mv",
                      ("stream", "source", "status", "reason"), ASSET_MEASURES)
FIELD_MINUTES = Check("field minutes", "field_minute_rollup", "field_facts_mv",
                      ("stream", "source", "status", "field", "type"), FIELD_MEASURES)
# The all-time rollups (what the inventory reads) against the sum of their minutes.
ASSETS_ALL_TIME = Check("assets all time", "asset_rollup", "asset_minute_rollup",
                        ("stream", "source", "status", "reason"), ASSET_MEASURES, per_minute=False)
FIELDS_ALL_TIME = Check("fields all time", "field_rollup", "field_minute_rollup",
                        ("stream", "status", "field", "type"), FIELD_MEASURES, per_minute=False)


def _view(name: str) -> View:
    return next(v for v in views() if v.name == name)


def _minute_oldest(where: str) -> str:
    """Per (topic, asset, minute): the oldest ingest time the asset rollup holds; Nullable, so
    a key without it stays NULL in a LEFT JOIN (and min() passes over it)."""
    return (f"SELECT topic, asset, minute, CAST(min(ingest_min) AS Nullable({DT64})) AS oldest "
            f"FROM asset_minute_rollup WHERE {where} GROUP BY topic, asset, minute")


def _minute_sides(check: Check, rollup_where: str, raw_where: str) -> str:
    """Both sides of a per-minute check, each row with `oldest`: the ingest time its minute's
    provability is judged by (the rollup's own, or the raw rows')."""
    rollup = (f"SELECT {ROLLUP} AS side, {check.columns()}, o.oldest AS oldest "
              f"FROM (SELECT * FROM {check.rollup} WHERE {rollup_where}) AS r "
              f"LEFT JOIN ({_minute_oldest(rollup_where)}) AS o USING (topic, asset, minute)")
    raw = (f"SELECT {RAW} AS side, {check.columns()}, CAST(ingest_min AS Nullable({DT64})) AS oldest "
           f"FROM ({_view(check.against).over(raw_where)})")
    return f"{rollup} UNION ALL {raw}"


def _all_time_sides(check: Check) -> str:
    oldest = f"CAST(NULL AS Nullable({DT64})) AS oldest"
    return (f"SELECT {ROLLUP} AS side, {check.columns()}, {oldest} FROM {check.rollup} WHERE {OURS} "
            f"UNION ALL SELECT {RAW} AS side, {check.columns()}, {oldest} FROM {check.against} WHERE {OURS}")


def check_sql(check: Check, sides: str, provable: str) -> str:
    """Per (topic, asset): minutes checked and skipped, events recounted, and the keys that
    differ (counted; the first EXAMPLES_PER_ASSET listed with both sides' values)."""
    values = ", ".join(f"rollup_{m.name}, raw_{m.name}" for m in check.measures)
    minute = "minute" if check.per_minute else "toDateTime(0, 'UTC')"
    return f"""
SELECT topic, asset,
       uniqExactIf({minute}, provable) AS minutes_checked,
       uniqExactIf({minute}, NOT provable) AS minutes_skipped,
       sumIf(raw_n, provable) AS events,
       countIf(provable AND differs) AS differences,
       groupArrayIf({EXAMPLES_PER_ASSET})(tuple({minute}, {", ".join(check.key)}, in_rollup, in_raw, {values}),
                                          provable AND differs) AS examples
FROM (
    SELECT *, {provable} AS provable,
           in_rollup != in_raw OR {" OR ".join(m.differs() for m in check.measures)} AS differs
    FROM (
        SELECT {check.group},
               countIf(side = {ROLLUP}) > 0 AS in_rollup, countIf(side = {RAW}) > 0 AS in_raw,
               min(oldest) AS oldest_key,
               {", ".join(m.side(s) for m in check.measures for s in (ROLLUP, RAW))}
        FROM ({sides})
        GROUP BY {check.group}
    )
)
GROUP BY topic, asset
ORDER BY topic, asset
"""


@dataclass
class Scope:
    """What one run reads: the deployment, the event-time window, the expiry cutoff."""

    prefix: str
    window: Window
    retention_s: float
    now_ms: int

    @property
    def cutoff_ms(self) -> int | None:
        """Minutes with a row ingested at or before this may have lost raw rows."""
        if not self.retention_s:
            return None
        margin = min(EXPIRY_MARGIN_S, self.retention_s / 2)
        return self.now_ms - int((self.retention_s - margin) * 1000)

    def params(self) -> dict[str, Any]:
        start, end = self.window.minutes()
        return {"prefix": self.prefix, "start": start or 0, "end": end or 0, "cutoff": self.cutoff_ms or 0}

    def where(self, column: str) -> str:
        """The window on a time column (minute or ts)."""
        start, end = self.window.minutes()
        parts = [OURS]
        if start is not None:
            parts.append(f"{column} >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC')")
        if end is not None:
            parts.append(f"{column} < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')")
        return " AND ".join(parts)

    def raw_where(self) -> str:
        where = self.where("ts")
        if self.cutoff_ms is not None:  # expired or about to: their minutes are skipped anyway
            where += " AND ingest_ts > fromUnixTimestamp64Milli({cutoff:Int64}, 'UTC')"
        return where

    def provable(self) -> str:
        if self.cutoff_ms is None:
            return "1"
        return ("ifNull(min(oldest_key) OVER (PARTITION BY topic, asset, minute), toDateTime64(0, 3, 'UTC'))"
                " > fromUnixTimestamp64Milli({cutoff:Int64}, 'UTC')")


def run_check(store: Store, check: Check, scope: Scope) -> dict[str, Any]:
    """One check: per-asset totals and the differences found."""
    if check.per_minute:
        sides = _minute_sides(check, scope.where("minute"), scope.raw_where())
        provable = scope.provable()
    else:
        sides, provable = _all_time_sides(check), "1"
    assets: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []
    for topic, asset, checked, skipped, recounted, n_diff, examples in store.rows(
            check_sql(check, sides, provable), scope.params()):
        assets.append({"topic": topic, "asset": asset, "differences": int(n_diff), "recounted": int(recounted),
                       **({"minutes_checked": int(checked), "minutes_skipped": int(skipped)}
                          if check.per_minute else {})})
        differences.extend(_difference(check, topic, asset, example) for example in examples)
        if n_diff > len(examples):
            differences.append({"check": check.name, "topic": topic, "asset": asset, "minute": None, "key": {},
                                "what": f"and {int(n_diff) - len(examples):,} more differing keys"})
    summary: dict[str, Any] = {"name": check.name, "rollup": check.rollup, "against": check.against,
                               "assets_checked": len(assets),
                               "differences": sum(a["differences"] for a in assets)}
    if check.per_minute:
        summary["minutes_checked"] = sum(a["minutes_checked"] for a in assets)
        summary["minutes_skipped"] = sum(a["minutes_skipped"] for a in assets)
    return {**summary, "assets": assets, "found": differences}


def _difference(check: Check, topic: str, asset: str, example: tuple[Any, ...]) -> dict[str, Any]:
    minute, *rest = example
    key = dict(zip(check.key, rest[:len(check.key)], strict=True))
    in_rollup, in_raw, *values = rest[len(check.key):]
    rollup = {m.name: values[2 * i] for i, m in enumerate(check.measures)}
    raw = {m.name: values[2 * i + 1] for i, m in enumerate(check.measures)}
    against = "raw events" if check.per_minute else check.against
    if not in_raw:
        what = f"in {check.rollup}, not in the {against} (rollup n={rollup['n']:,})"
    elif not in_rollup:
        what = f"in the {against}, not in {check.rollup} ({against} n={raw['n']:,})"
    else:
        what = "; ".join(f"{name}: rollup {_show(rollup[name])}, {against} {_show(raw[name])}"
                         for name in rollup if rollup[name] != raw[name])
    return jsonable({"check": check.name, "topic": topic, "asset": asset,
                     "minute": minute if check.per_minute else None, "key": key, "what": what,
                     "rollup": rollup if in_rollup else None, "raw": raw if in_raw else None})


def _show(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(value.items())) + "}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def store_checks(store: Store, scope: Scope) -> list[dict[str, Any]]:
    checks = [ASSET_MINUTES, FIELD_MINUTES]
    if not scope.window.bounded:
        checks += [ASSETS_ALL_TIME, FIELDS_ALL_TIME]
    return [run_check(store, check, scope) for check in checks]


# ------------------------------------------------------------------ partitions


def _partition_sql() -> str:
    """Per partition: the stored coordinates, the view's recount of the retained rows and
    their distinct coordinates, in one statement."""
    mine = "topic IN {topics:Array(String)}"
    recount = _view("partition_mv").over(mine)
    return f"""
SELECT topic, partition,
       countIf(side = 1) > 0 AS stored, countIf(side = 2) > 0 AS retained,
       sumIf(n, side = 1), sumIf(n_messages, side = 1), minIf(offset_min, side = 1), maxIf(offset_max, side = 1),
       sumIf(n, side = 2), sumIf(n_messages, side = 2), minIf(offset_min, side = 2), maxIf(offset_max, side = 2),
       sumIf(coordinates, side = 3), sumIf(messages, side = 3), min(oldest)
FROM (
    SELECT 1 AS side, topic, partition, toUInt64(n) AS n, toUInt64(n_messages) AS n_messages,
           toUInt64(offset_min) AS offset_min, toUInt64(offset_max) AS offset_max,
           toUInt64(0) AS coordinates, toUInt64(0) AS messages, CAST(NULL AS Nullable({DT64})) AS oldest
    FROM partition_rollup WHERE {mine}
    UNION ALL
    SELECT 2, topic, partition, n, n_messages, offset_min, offset_max, 0, 0, NULL FROM ({recount})
    UNION ALL
    SELECT 3, topic, partition, 0, 0, 0, 0, uniqExact(offset, idx), uniqExactIf(offset, idx = 0), min(ingest_ts)
    FROM ingest_log WHERE {mine} GROUP BY topic, partition
)
GROUP BY topic, partition
ORDER BY topic, partition
"""


DUPLICATES_SQL = f"""
SELECT offset, idx, count() AS times FROM ingest_log
WHERE topic = {{topic:String}} AND partition = {{partition:UInt32}}
GROUP BY offset, idx HAVING times > 1 ORDER BY offset, idx LIMIT {EXAMPLE_COORDINATES}
"""

# Offsets between the first and the last retained one that have no row.
HOLES_SQL = f"""
SELECT previous + 1, offset - 1 FROM (
    SELECT offset, lagInFrame(offset) OVER (ORDER BY offset ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS previous,
           row_number() OVER (ORDER BY offset) AS i
    FROM (SELECT DISTINCT offset FROM ingest_log WHERE topic = {{topic:String}} AND partition = {{partition:UInt32}})
)
WHERE i > 1 AND offset > previous + 1 ORDER BY offset LIMIT {EXAMPLE_COORDINATES}
"""


@dataclass
class Partition:
    topic: str
    partition: int
    stored: dict[str, int] | None = None      # partition_rollup
    retained: dict[str, Any] | None = None    # the retained raw rows, recounted
    kafka: dict[str, int | None] | None = None
    differences: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return "differs" if self.differences else "pending" if self.pending else "ok"

    def as_dict(self) -> dict[str, Any]:
        return jsonable({"topic": self.topic, "partition": self.partition, "state": self.state,
                         "stored": self.stored, "retained": self.retained, "kafka": self.kafka,
                         "differences": self.differences, "pending": self.pending, "notes": self.notes})


def stored_partitions(store: Store, topics: list[str], scope: Scope) -> dict[tuple[str, int], Partition]:
    found = {}
    for (topic, partition, stored, retained, n, messages, first, last, raw_n, raw_messages, raw_first, raw_last,
         coordinates, distinct_messages, oldest) in store.rows(_partition_sql(), {"topics": topics}):
        p = Partition(topic, int(partition))
        if stored:
            p.stored = {"rows": int(n), "messages": int(messages), "offset_min": int(first), "offset_max": int(last)}
        if retained:
            p.retained = {"rows": int(raw_n), "messages": int(raw_messages), "offset_min": int(raw_first),
                          "offset_max": int(raw_last), "coordinates": int(coordinates),
                          "distinct_messages": int(distinct_messages), "oldest_ingest": oldest}
        _check_coordinates(store, p, scope)
        found[(p.topic, p.partition)] = p
    return found


def _check_coordinates(store: Store, p: Partition, scope: Scope) -> None:
    """Stored vs retained rows: nothing counted twice, nothing lost, the counts equal."""
    stored, raw = p.stored, p.retained
    where = {"topic": p.topic, "partition": p.partition}
    if raw is not None and raw["rows"] > raw["coordinates"]:
        twice = ", ".join(f"offset {o} idx {i} ×{n}" for o, i, n in store.rows(DUPLICATES_SQL, where))
        p.differences.append(f"counted twice: {raw['rows'] - raw['coordinates']:,} rows repeat a stored "
                             f"coordinate ({twice})")
    if stored is None:
        p.differences.append("retained rows without a partition_rollup row")
        return
    duplicate_messages = raw["messages"] - raw["distinct_messages"] if raw else 0
    span = stored["offset_max"] - stored["offset_min"] + 1
    messages = stored["messages"] - duplicate_messages
    if messages < span:
        holes = _holes(store, p) if _provable(p, scope) else ""
        p.differences.append(f"lost: {span - messages:,} of offsets {stored['offset_min']}..{stored['offset_max']} "
                             f"have no stored message{holes}")
    elif messages > span:
        p.differences.append(f"counted twice: {messages - span:,} more stored messages than offsets "
                             f"{stored['offset_min']}..{stored['offset_max']}")
    if raw is None:
        p.notes.append("no raw rows retained: counts not recounted")
        return
    if raw["offset_min"] < stored["offset_min"] or raw["offset_max"] > stored["offset_max"]:
        p.differences.append(f"retained offsets {raw['offset_min']}..{raw['offset_max']} outside the stored "
                             f"{stored['offset_min']}..{stored['offset_max']}")
    if not _provable(p, scope):
        p.notes.append("raw rows expired or about to (retention): counts not recounted")
        return
    for name in ("rows", "messages"):
        if stored[name] != raw[name]:
            missing = _holes(store, p) if name == "messages" and raw[name] < stored[name] else ""
            p.differences.append(f"{name}: partition_rollup {stored[name]:,}, raw events {raw[name]:,}{missing}")


def _holes(store: Store, p: Partition) -> str:
    """`` (offsets 3, 7..9 have no row)`` from the retained rows."""
    holes = store.rows(HOLES_SQL, {"topic": p.topic, "partition": p.partition})
    shown = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in holes)
    return f" (no raw row at offsets {shown})" if shown else ""


def _provable(p: Partition, scope: Scope) -> bool:
    """Every raw row of the partition still retained (TTL removes a prefix of offsets: a
    partition is inserted in offset order)."""
    if p.retained is None or p.stored is None or p.retained["offset_min"] != p.stored["offset_min"]:
        return False
    oldest = p.retained["oldest_ingest"]
    return scope.cutoff_ms is None or int(oldest.replace(tzinfo=dt.UTC).timestamp() * 1000) > scope.cutoff_ms


# ------------------------------------------------------------------ Kafka


class KafkaUnavailable(RuntimeError):
    """Kafka could not be asked; the store part of the report still stands."""


async def _asking(bootstrap: str, work: Awaitable[T]) -> T:
    """``work`` within KAFKA_TIMEOUT_S; any failure is one KafkaUnavailable line."""
    try:
        return await asyncio.wait_for(work, KAFKA_TIMEOUT_S)
    except TimeoutError:
        reason = f"no answer within {KAFKA_TIMEOUT_S:.0f}s"
    except Exception as exc:
        reason = _reason(exc)
    raise KafkaUnavailable(f"cannot read offsets from Kafka at {bootstrap}: {reason}")


def _reason(exc: Exception) -> str:
    from aiokafka.errors import KafkaConnectionError
    if isinstance(exc, KafkaConnectionError):  # its text is a list of resolved addresses
        return "no connection"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def read_committed(bootstrap: str, topics: list[str], group_id: str) -> dict[tuple[str, int], int | None]:
    """The group's committed offset per partition of ``topics`` (None: never committed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def read() -> dict[tuple[str, int], int | None]:
        partitions = await _partitions(bootstrap, topics)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=KAFKA_REQUEST_MS)
        try:
            await admin.start()
            offsets = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        finally:
            await admin.close()
        found = {(tp.topic, tp.partition): o.offset for tp, o in offsets.items()}
        return {(tp.topic, tp.partition): _offset(found.get((tp.topic, tp.partition))) for tp in partitions}
    return await _asking(bootstrap, read())


def _offset(value: int | None) -> int | None:
    return None if value is None or value < 0 else int(value)


async def read_log(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(log start, log end) per partition of ``topics``. Tansu (the embedded broker) reports
    the end as the base offset of the last record batch + 1: that batch is read for its end."""
    from aiokafka import AIOKafkaConsumer

    async def read() -> dict[tuple[str, int], tuple[int, int]]:
        partitions = await _partitions(bootstrap, topics)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
                                    request_timeout_ms=KAFKA_REQUEST_MS)
        try:
            await consumer.start()
            starts = await consumer.beginning_offsets(partitions)
            ends = dict(await consumer.end_offsets(partitions))
            probe = [tp for tp in partitions if ends[tp] > starts[tp]]
            consumer.assign(probe)
            for tp in probe:
                consumer.seek(tp, ends[tp] - 1)
            for _ in range(10 if probe else 0):
                batch = await consumer.getmany(*probe, timeout_ms=200)
                if not batch:
                    break
                for tp, records in batch.items():
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
        finally:
            await consumer.stop()
        return {(tp.topic, tp.partition): (int(starts[tp]), int(ends[tp])) for tp in partitions}
    return await _asking(bootstrap, read())


async def _partitions(bootstrap: str, topics: list[str]) -> list[Any]:
    """The partitions of those of ``topics`` that exist (a missing one is not asked for: a
    broker that creates topics on demand would create it)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=KAFKA_REQUEST_MS)
    try:
        await consumer.start()
        existing = await consumer.topics()
        return [TopicPartition(t, p) for t in topics if t in existing
                for p in sorted(consumer.partitions_for_topic(t) or ())]
    finally:
        await consumer.stop()


def check_kafka(p: Partition, committed: int | None, log: tuple[int, int] | None, base: int = 0) -> None:
    """Kafka's offsets against the stored coordinates. ``base``: a log that lost its records
    is stored from the old watermark on (stored offset = Kafka offset + base, migration 011)."""
    start, end = log if log is not None else (None, None)
    p.kafka = {"log_start": start, "log_end": end, "committed": committed, **({"base": base} if base else {})}
    if log is not None and base:
        start, end = log[0] + base, log[1] + base
        committed = None if committed is None else committed + base
    if log is None:
        if p.stored is not None:
            p.differences.append("stored, but Kafka has no such partition")
        return
    assert start is not None and end is not None
    stored_end = p.stored["offset_max"] + 1 if p.stored else None
    if committed is not None and committed > (stored_end or start):
        first = stored_end if stored_end is not None else start
        p.differences.append(f"lost: offsets {first}..{committed - 1} committed by the group, never stored")
    if p.stored is not None and start < p.stored["offset_min"]:
        p.differences.append(f"lost: offsets {start}..{p.stored['offset_min'] - 1} are in Kafka, never stored")
    if stored_end is not None and end < stored_end:
        p.differences.append(f"stored offsets up to {stored_end - 1} lie beyond Kafka's log end {end} "
                             "(the broker's log was reset?)")
    consumed = max(stored_end or start, committed or start)
    if end > consumed:
        p.pending.append(f"{end - consumed:,} messages not consumed yet (log end {end})")
    if stored_end is not None and (committed is None or committed < stored_end):
        behind = stored_end - (committed or 0) if committed is not None else None
        p.pending.append("nothing committed yet" if behind is None else
                         f"commit {behind:,} behind the store (redelivered, then skipped as stored)")


# ------------------------------------------------------------------ the report


def log_bases(store: Store, topics: list[str]) -> dict[tuple[str, int], int]:
    return {(str(t), int(p)): int(b) for t, p, b in store.rows(
        "SELECT topic, partition, max(base) FROM log_bases WHERE topic IN {t:Array(String)} GROUP BY topic, partition",
        {"t": topics})}


def deployment_topics(store: Store, settings: Settings) -> list[str]:
    """The shipped streams' topics and every other topic of the deployment's prefix the store
    holds events of (discovered streams)."""
    stored = [str(t) for t, in store.rows(
        "SELECT DISTINCT topic FROM partition_rollup WHERE startsWith(topic, {p:String})",
        {"p": settings.topic_dot_prefix})]
    return sorted({*(settings.topic(stream) for stream in shipped()), *stored})


def retention_s(store: Store, settings: Settings) -> float:
    """The shortest retention in force: the store's TTL, or the configured one (a worker
    applies the setting at start; the shorter one may have deleted rows already)."""
    configured = [s for s in (float(store.raw_retention()), float(getattr(settings, "raw_retention_s", 0.0)))
                  if s > 0]
    return min(configured, default=0.0)


async def reconcile(store: Store, settings: Settings, window: Window | None = None,
                    bootstrap: str | None = None, now_ms: int | None = None) -> dict[str, Any]:
    """The report: the store checks, then the partitions with Kafka's offsets when
    ``bootstrap`` is given and answers. Store calls run in a thread (the worker's loop goes on)."""
    started = time.monotonic()
    topics = await asyncio.to_thread(deployment_topics, store, settings)
    kafka_error = None if bootstrap else "no Kafka to ask (the embedded broker runs only with the worker)"
    committed: dict[tuple[str, int], int | None] = {}
    if bootstrap:
        try:
            committed = await read_committed(bootstrap, topics, settings.group_id)
        except KafkaUnavailable as exc:
            kafka_error, bootstrap = str(exc), None
    scope = Scope(settings.topic_dot_prefix, window or Window(),
                  await asyncio.to_thread(retention_s, store, settings),
                  now_ms if now_ms is not None else int(time.time() * 1000))
    checks = await asyncio.to_thread(store_checks, store, scope)
    partitions = await asyncio.to_thread(stored_partitions, store, topics, scope)
    if bootstrap:
        try:
            log = await read_log(bootstrap, topics)
        except KafkaUnavailable as exc:
            kafka_error = str(exc)
        else:
            bases = await asyncio.to_thread(log_bases, store, topics)
            for tp in sorted(set(log) | set(partitions)):
                p = partitions.setdefault(tp, Partition(*tp))
                check_kafka(p, committed.get(tp), log.get(tp), bases.get(tp, 0))
    return report(scope, checks, list(partitions.values()), kafka_error, bootstrap,
                  time.monotonic() - started)


def reconcile_sync(store: Store, settings: Settings, window: Window | None = None,
                   bootstrap: str | None = None, now_ms: int | None = None) -> dict[str, Any]:
    return asyncio.run(reconcile(store, settings, window, bootstrap, now_ms))


def report(scope: Scope, checks: list[dict[str, Any]], partitions: Iterable[Partition], kafka_error: str | None,
           bootstrap: str | None, seconds: float) -> dict[str, Any]:
    parts = [p.as_dict() for p in sorted(partitions, key=lambda p: (p.topic, p.partition))]
    differences = [d for c in checks for d in c.pop("found")]
    differences += [{"check": "partition", "topic": p["topic"], "partition": p["partition"], "what": what}
                    for p in parts for what in p["differences"]]
    counted = sum(c["differences"] for c in checks) + sum(len(p["differences"]) for p in parts)
    cutoff = scope.cutoff_ms
    return jsonable({
        "generated_at": iso_ms(scope.now_ms),
        "window": scope.window.as_dict(),
        "raw_retention_s": scope.retention_s,
        "provable_after": None if cutoff is None else iso_ms(cutoff),
        "checks": checks,
        "partitions": parts,
        "kafka": {"bootstrap": bootstrap, "error": kafka_error},
        "differences": differences,
        "ok": counted == 0,
        "seconds": round(seconds, 3),
    })
