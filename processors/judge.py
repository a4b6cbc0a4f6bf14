"""Judge one partition batch: decode, validate, dedupe -> stored rows + dead letters.

Pure: no Kafka, no ClickHouse. The worker hands in raw records and gets back
columns for one insert (every event, with its coordinates and verdict) and
the dead letters to publish. Rows are columnar lists so the sink can build an
Arrow table without another pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from stocktake.processors.contract import (
    STREAM_SPECS,
    Event,
    Rejected,
    decode_message,
    item_bytes,
    normalize,
    parse_ts_ms,
)
from stocktake.processors.dedupe import DedupeWindow

COLUMNS = (
    "stream", "topic", "partition", "offset", "idx", "status", "reason", "event_id", "kind",
    "source", "user_id", "product_id", "order_id", "ts", "ingest_ts", "payload",
)


class Record(NamedTuple):
    """One Kafka record as the transport delivers it."""

    offset: int
    key: bytes | None
    value: bytes | None


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes          # the original bytes of the failing event
    headers: list[tuple[str, bytes]]


class Judged(NamedTuple):
    columns: dict[str, list[Any]]
    dead_letters: list[DeadLetter]
    valid: list[Event]
    counts: dict[str, int]     # valid / duplicate / invalid
    last_offset: int           # highest offset in the batch (-1 if empty)


def _text(obj: Any, name: str) -> str:
    value = obj.get(name) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


def judge_batch(
    stream: str,
    topic: str,
    partition: int,
    records: Iterable[Record],
    dedupe: DedupeWindow,
    ingest_ms: int,
) -> Judged:
    cols: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    (c_offset, c_idx, c_status, c_reason, c_event_id, c_kind, c_source, c_user,
     c_product, c_order, c_ts, c_payload) = (
        cols["offset"], cols["idx"], cols["status"], cols["reason"], cols["event_id"],
        cols["kind"], cols["source"], cols["user_id"], cols["product_id"], cols["order_id"],
        cols["ts"], cols["payload"],
    )
    dead: list[DeadLetter] = []
    valid: list[Event] = []
    counts = {"valid": 0, "duplicate": 0, "invalid": 0}
    last_offset = -1
    dumps = orjson.dumps
    kind_key = STREAM_SPECS[stream].sub_asset_key  # a rejected event's kind, read as it came
    for record in records:
        last_offset = record.offset
        for idx, item in enumerate(decode_message(record.value)):
            verdict: Event | Rejected = (
                item.error if item.error is not None else normalize(stream, item.obj)
            )
            c_offset.append(record.offset)
            c_idx.append(idx)
            if isinstance(verdict, Rejected):
                obj = item.obj
                ts = parse_ts_ms(obj.get("ts")) if isinstance(obj, dict) else None
                c_status.append("invalid")
                c_reason.append(verdict.reason)
                c_event_id.append(_text(obj, "event_id"))
                c_kind.append(_text(obj, kind_key))
                c_source.append(_text(obj, "source"))
                c_user.append("")
                c_product.append("")
                c_order.append("")
                c_ts.append(ts if ts is not None else ingest_ms)
                raw = item_bytes(item)
                c_payload.append(raw)
                counts["invalid"] += 1
                dead.append(DeadLetter(record.key, raw, _dl_headers(
                    verdict, topic, partition, record.offset, idx)))
                continue
            event = verdict
            if dedupe.is_duplicate(event.event_id, event.ts_ms, partition):
                c_status.append("duplicate")
                c_reason.append("duplicate_event_id")
                counts["duplicate"] += 1
            else:
                c_status.append("valid")
                c_reason.append("")
                counts["valid"] += 1
                valid.append(event)
            c_event_id.append(event.event_id)
            c_kind.append(event.kind)
            c_source.append(event.source)
            c_user.append(event.user_id)
            c_product.append(event.product_id)
            c_order.append(event.order_id)
            c_ts.append(event.ts_ms)
            c_payload.append(dumps(event.fields))
    n = len(c_offset)
    cols["stream"] = [stream] * n
    cols["topic"] = [topic] * n
    cols["partition"] = [partition] * n
    cols["ingest_ts"] = [ingest_ms] * n
    dedupe.expire()
    return Judged(cols, dead, valid, counts, last_offset)


def _dl_headers(
    rejected: Rejected, topic: str, partition: int, offset: int, idx: int
) -> list[tuple[str, bytes]]:
    return [
        ("stocktake.reason", rejected.reason.encode()),
        ("stocktake.detail", rejected.detail.encode("utf-8", "replace")[:1000]),
        ("stocktake.topic", topic.encode()),
        ("stocktake.partition", str(partition).encode()),
        ("stocktake.offset", str(offset).encode()),
        ("stocktake.index", str(idx).encode()),
    ]


def skip_stored(records: Sequence[Record], watermark: int | None) -> Sequence[Record]:
    """Drop records at or below the stored watermark (already in ClickHouse)."""
    if watermark is None or not records or records[0].offset > watermark:
        return records
    return [r for r in records if r.offset > watermark]
