"""Schema drift from field observations: new fields, type changes, vanished fields.

Judged in event time, so a replayed history drifts when it did, not when it
was replayed. The input is what the store knows per (stream, field, type):
first and last event time of valid events carrying it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class FieldType(NamedTuple):
    stream: str
    field: str
    type: str            # JSON type: string, number, boolean, object, array, null
    first_ms: int
    last_ms: int
    n: int                # valid events carrying the field with this type


class DriftEvent(NamedTuple):
    stream: str
    field: str
    kind: str            # new_field | type_change | vanished_field
    at_ms: int           # when it happened (event time)
    type: str
    details: str


def detect_drift(
    observations: Iterable[FieldType],
    stream_spans: dict[str, tuple[int, int]],
    *,
    grace_ms: int,
    vanish_after_ms: int,
    watermark_ms: int | None = None,
) -> list[DriftEvent]:
    """``stream_spans``: stream -> (first, last) event time. A field or type first seen
    within ``grace_ms`` of the stream's (field's) start is part of the baseline, not drift.
    Nulls carry no type: a field that turns null is a completeness matter. A field has
    vanished when the stream went on without it past the low watermark (``watermark_ms``, the
    event time all partitions have reached), not past the newest event: while the partitions
    are consumed at different paces, a field carried in a slow one only seems to lag."""
    by_field: dict[tuple[str, str], list[FieldType]] = {}
    for ob in observations:
        if ob.type != "null" and ob.n > 0:
            by_field.setdefault((ob.stream, ob.field), []).append(ob)
    events: list[DriftEvent] = []
    for (stream, field), types in sorted(by_field.items()):
        if stream not in stream_spans:
            continue
        stream_first, stream_last = stream_spans[stream]
        if watermark_ms is not None:
            stream_last = min(stream_last, watermark_ms)
        types.sort(key=lambda t: (t.first_ms, t.type))
        field_first = types[0].first_ms
        field_last = max(t.last_ms for t in types)
        if field_first > stream_first + grace_ms:
            events.append(DriftEvent(stream, field, "new_field", field_first, types[0].type,
                                     f"{field} first seen {(field_first - stream_first) / 1000:.0f}s "
                                     f"after the stream began, as {types[0].type}"))
        for earlier_index, t in enumerate(types[1:], start=1):
            if t.first_ms > field_first + grace_ms:
                before = sorted({x.type for x in types[:earlier_index]})
                events.append(DriftEvent(stream, field, "type_change", t.first_ms, t.type,
                                         f"{field} was {'/'.join(before)}, now also {t.type} "
                                         f"({t.n} events)"))
        if field_last < stream_last - vanish_after_ms:
            events.append(DriftEvent(stream, field, "vanished_field", field_last, types[-1].type,
                                     f"{field} not seen for {(stream_last - field_last) / 1000:.0f}s "
                                     f"while the stream went on"))
    events.sort(key=lambda e: (e.at_ms, e.stream, e.field, e.kind))
    return events
