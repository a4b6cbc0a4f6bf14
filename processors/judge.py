"""Judge one partition batch: decode, validate, dedupe -> stored rows + dead letters.

Pure: no Kafka, no ClickHouse. The worker hands in raw records and gets back
columns for one insert (every event, with its coordinates and verdict) and
the dead letters to publish. Rows are columnar lists so the sink can build an
Arrow table without another pass.

Hostile input is bounded here (issue #12): a dead letter's value is the failing
event's bytes up to ``deadletter_max_bytes`` (the producer refuses requests over
~1 MB, and one refused dead letter used to stop the worker); a longer one carries
the first bytes and the headers ``stocktake.truncated: 1``,
``stocktake.original_bytes`` and ``stocktake.sha256`` (of the whole event), beside
the coordinates that locate the original in its topic. Its key (the record's key)
is cut to KEY_MAX_BYTES the same way (``stocktake.key_truncated``,
``stocktake.key_bytes``, ``stocktake.key_sha256``). An invalid row's payload is cut
to ``payload_max_bytes`` (smaller: see PAYLOAD_MAX_BYTES), and the text columns an
invalid event fills as it came to TEXT_MAX_CHARS. Record headers are not read
(the transport does not pass them): junk there cannot reach a verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from stocktake.processors.contract import Contract, Event, normalize
from stocktake.processors.decode import Rejected, decode_message, dump_json, in_range_ms, item_bytes, parse_ts_ms
from stocktake.processors.dedupe import DedupeWindow

# The default of settings.deadletter_max_bytes (STOCKTAKE_DEADLETTER_MAX_BYTES): well under
# the producer's request limit (aiokafka/Faust max_request_size, 1,000,000 bytes) with room
# for the key and headers.
DEADLETTER_MAX_BYTES = 512 * 1024
# An invalid row's payload is for finding out what was wrong (drill-downs, `stocktake
# query`); its first 64 KiB show that, and the dead letter keeps the longer copy. Rows are
# buffered until a flush (up to batch_rows of them) and every insert carries them, so the
# stored copy is kept smaller than the one that leaves at once for the dead-letter topic.
PAYLOAD_MAX_BYTES = 64 * 1024
KEY_MAX_BYTES = 1024        # a dead letter's key; a key is an id, not a payload
DETAIL_MAX_BYTES = 1000     # the stocktake.detail header
TEXT_MAX_CHARS = 256        # event_id / kind / source of an invalid event, as it came

COLUMNS = (
    "stream", "topic", "partition", "offset", "idx", "status", "reason", "event_id", "kind",
    "source", "user_id", "product_id", "order_id", "ts", "ingest_ts", "payload",
    "contract_version", "kind_key", "warnings",
)


class Record(NamedTuple):
    """One Kafka record as the transport delivers it."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # the record's Kafka timestamp: the time of events that name none


class DeadLetter(NamedTuple):
    key: bytes | None     # the record's key (its first KEY_MAX_BYTES)
    value: bytes          # the original bytes of the failing event (its first deadletter_max_bytes)
    headers: list[tuple[str, bytes]]


class Judged(NamedTuple):
    columns: dict[str, list[Any]]
    dead_letters: list[DeadLetter]
    valid: list[Event]
    counts: dict[str, int]     # valid / duplicate / invalid
    last_offset: int           # highest offset in the batch (-1 if empty)
    truncated: int = 0         # dead letters whose value was cut to deadletter_max_bytes


def _text(obj: Any, name: str) -> str:
    value = obj.get(name) if isinstance(obj, dict) else None
    return value[:TEXT_MAX_CHARS] if isinstance(value, str) else ""


_VALUE_CUT = ("stocktake.truncated", "stocktake.original_bytes", "stocktake.sha256")
_KEY_CUT = ("stocktake.key_truncated", "stocktake.key_bytes", "stocktake.key_sha256")


def _cut(data: bytes, limit: int, names: tuple[str, str, str]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``data`` up to ``limit`` bytes; when cut, headers naming the whole: its size and sha256."""
    if len(data) <= limit:
        return data, []
    flag, size, digest = names
    return data[:limit], [
        (flag, b"1"), (size, str(len(data)).encode()), (digest, hashlib.sha256(data).hexdigest().encode()),
    ]


def judge_batch(
    contract: Contract,
    topic: str,
    partition: int,
    records: Iterable[Record],
    dedupe: DedupeWindow,
    ingest_ms: int,
    *,
    deadletter_max_bytes: int = DEADLETTER_MAX_BYTES,
    payload_max_bytes: int = PAYLOAD_MAX_BYTES,
) -> Judged:
    # One tuple per row, (offset, idx, status, reason, Event-shaped tuple, payload), turned into
    # columns at the end by zip(*): a row costs one append, not one per column.
    rows: list[tuple[int, int, str, str, Event, bytes]] = []
    dead: list[DeadLetter] = []
    valid: list[Event] = []
    last_offset = -1
    truncated = 0
    dumps, new = orjson.dumps, tuple.__new__
    stream, kind_key = contract.stream, contract.kind_field  # a rejected event's kind: read as it came
    # ... and its time, id and source, from the fields the contract gives those roles
    ts_key, id_key, source_key = (contract.role("time") or "ts", contract.role("event_id") or "event_id",
                                  contract.role("source") or "source")
    judge, is_duplicate = contract.judge, dedupe.is_duplicate
    coordinates = [("stocktake.topic", topic.encode()), ("stocktake.partition", str(partition).encode())]
    for offset, key, value, kafka_ms in records:
        where: list[tuple[str, bytes]] | None = None  # made at the record's first dead letter, then shared
        key_cut: list[tuple[str, bytes]] = []
        fallback_ms = kafka_ms if kafka_ms is not None and in_range_ms(kafka_ms) else ingest_ms
        for idx, item in enumerate(decode_message(value)):
            obj = item.obj
            verdict: Event | Rejected = (
                item.error if item.error is not None else judge(obj) if type(obj) is dict else normalize(contract, obj)
            )
            if isinstance(verdict, Rejected):
                ts = parse_ts_ms(obj.get(ts_key)) if isinstance(obj, dict) else None
                raw = item_bytes(item)
                rows.append((offset, idx, "invalid", verdict.reason, new(Event, (
                    _text(obj, id_key), _text(obj, kind_key) if kind_key else "", _text(obj, source_key), "", "", "",
                    ts if ts is not None else fallback_ms, None, ())), raw[:payload_max_bytes]))
                if where is None:
                    where = [*coordinates, ("stocktake.offset", str(offset).encode())]
                    if key is not None:
                        key, key_cut = _cut(key, KEY_MAX_BYTES, _KEY_CUT)
                kept, cut = _cut(raw, deadletter_max_bytes, _VALUE_CUT)
                truncated += bool(cut)
                dead.append(DeadLetter(key, kept, [
                    ("stocktake.reason", verdict.reason.encode()),
                    ("stocktake.detail", _detail(verdict.detail)),
                    *where, ("stocktake.index", str(idx).encode()), *cut, *key_cut,
                ]))
                continue
            event = verdict
            if event.ts_ms < 0:  # the event names no time of its own
                event = event._replace(ts_ms=fallback_ms)
            try:
                # orjson's bytes keep their whole buffer (4 KiB for a 150-byte event): a copy of
                # the exact size is what waits in the sink's buffer until the flush.
                payload = bytes(memoryview(dumps(event.fields)))
            except TypeError:  # nested deeper than orjson writes (254), though it read it
                payload = dump_json(event.fields)
            if event.event_id and is_duplicate(event.event_id, event.ts_ms, partition):
                rows.append((offset, idx, "duplicate", "duplicate_event_id", event, payload))
            else:
                rows.append((offset, idx, "valid", "", event, payload))
                valid.append(event)
        last_offset = offset
    cols = _columns(rows)
    n = len(rows)
    cols["stream"] = [stream] * n
    cols["topic"] = [topic] * n
    cols["partition"] = [partition] * n
    cols["ingest_ts"] = [ingest_ms] * n
    cols["contract_version"] = [contract.version] * n
    cols["kind_key"] = [kind_key] * n
    status = cols["status"]
    counts = {"valid": status.count("valid"), "duplicate": status.count("duplicate"),
              "invalid": status.count("invalid")}
    dedupe.expire()
    return Judged(cols, dead, valid, counts, last_offset, truncated)


_ROW_COLUMNS = ("offset", "idx", "status", "reason", None, "payload")
_EVENT_COLUMNS = ("event_id", "kind", "source", "user_id", "product_id", "order_id", "ts", None, "warnings")


def _columns(rows: list[tuple[int, int, str, str, Event, bytes]]) -> dict[str, list[Any]]:
    """Rows -> the per-row columns (the constant ones are the caller's), in C: zip(*)."""
    if not rows:
        return {name: [] for name in COLUMNS}
    per_row = list(zip(*rows, strict=True))
    cols = {name: list(values) for name, values in zip(_ROW_COLUMNS, per_row, strict=True) if name}
    events = zip(*per_row[4], strict=True)
    cols.update((name, list(values)) for name, values in zip(_EVENT_COLUMNS, events, strict=True) if name)
    return cols


def _detail(text: str) -> bytes:
    """UTF-8, at most DETAIL_MAX_BYTES, cut between characters (never inside one)."""
    data = text.encode("utf-8", "replace")
    return data if len(data) <= DETAIL_MAX_BYTES else data[:DETAIL_MAX_BYTES].decode("utf-8", "ignore").encode()


def skip_stored(records: Sequence[Record], watermark: int | None) -> Sequence[Record]:
    """Drop records at or below the stored watermark (already in ClickHouse)."""
    if watermark is None or not records or records[0].offset > watermark:
        return records
    return [r for r in records if r.offset > watermark]


def judge_each(
    contract: Contract, topic: str, partition: int, records: Sequence[Record], dedupe: DedupeWindow, ingest_ms: int,
    *, deadletter_max_bytes: int = DEADLETTER_MAX_BYTES,
) -> Judged:
    """``judge_batch`` record by record, for a batch it raised on (a bug, not the data's fault):
    a record that still raises becomes one ``internal_error`` row and dead letter with its bytes,
    so that no single event can stop the worker. Its events may have touched the dedupe window
    before the error."""
    parts = []
    for record in records:
        try:
            parts.append(judge_batch(contract, topic, partition, [record], dedupe, ingest_ms,
                                     deadletter_max_bytes=deadletter_max_bytes))
        except Exception as exc:
            parts.append(_unjudgeable(contract, topic, partition, record, exc, dedupe, ingest_ms, deadletter_max_bytes))
    columns: dict[str, list[Any]] = {name: [v for part in parts for v in part.columns[name]] for name in COLUMNS}
    return Judged(columns, [d for p in parts for d in p.dead_letters], [e for p in parts for e in p.valid],
                  {k: sum(p.counts[k] for p in parts) for k in ("valid", "duplicate", "invalid")},
                  max((p.last_offset for p in parts), default=-1), sum(p.truncated for p in parts))


def _unjudgeable(contract: Contract, topic: str, partition: int, record: Record, exc: Exception, dedupe: DedupeWindow,
                 ingest_ms: int, deadletter_max_bytes: int) -> Judged:
    # The shape of a rejected record (an empty one's), with this record's reason and bytes.
    empty = judge_batch(contract, topic, partition, [Record(record.offset, None, b"", record.timestamp_ms)],
                        dedupe, ingest_ms)
    reason = "internal_error"
    value, cut = _cut(record.value or b"", deadletter_max_bytes, _VALUE_CUT)
    key, key_cut = _cut(record.key, KEY_MAX_BYTES, _KEY_CUT) if record.key is not None else (None, [])
    headers = [(name, reason.encode() if name == "stocktake.reason" else
                _detail(f"{type(exc).__name__}: {exc}") if name == "stocktake.detail" else v)
               for name, v in empty.dead_letters[0].headers] + cut + key_cut
    columns = {**empty.columns, "reason": [reason], "payload": [value[:PAYLOAD_MAX_BYTES]]}
    return Judged(columns, [DeadLetter(key, value, headers)], [], empty.counts, record.offset, 1 if cut else 0)
