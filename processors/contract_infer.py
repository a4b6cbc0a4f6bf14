"""A starting contract from what a stream has shown: `stocktake contract infer STREAM`.

Pure: it takes the observations (per field and JSON type: events, approximate distinct
values, examples; the stream's events; the values of low-cardinality strings) and writes
the contract a data engineer would start from, to review before use:

- type: the dominant non-null JSON type; strings whose examples all parse as timestamps
  (or named like one) are ``timestamp``, strings or integers named ``*_id``/``id`` are ``id``;
  integers stay ``integer``, other numbers ``number``;
- required: present (not null) on at least REQUIRED_SHARE of the events;
- enum: strings with at most ENUM_MAX distinct values, all seen (``case = "lower"`` when
  they all are lower-case);
- roles: ``event_id`` (an id as distinct as the events), ``time`` (the first timestamp in
  TIME_FIELDS order, else one named for a creation or an event, else the most present one),
  ``source``/``user_id``/``product_id``/``order_id`` by name, ``kind``
  (the first enum named like a kind: event_type, type, op, status, action, event);
- key: the user, product or order id, in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stocktake.processors.contract import TIME_FIELDS, Contract, Field
from stocktake.processors.decode import parse_ts_ms

REQUIRED_SHARE = 0.999
ENUM_MAX = 20
KIND_NAMES = ("event_type", "type", "op", "status", "action", "event", "kind")
_ID_ROLES = ("user_id", "product_id", "order_id")


@dataclass
class FieldSeen:
    name: str
    types: dict[str, int] = field(default_factory=dict)  # JSON type -> events
    distinct: int = 0  # approximate distinct values
    examples: list[object] = field(default_factory=list)
    values: list[str] | None = None  # every value, when a string field has few (else None)

    @property
    def present(self) -> int:
        return sum(n for t, n in self.types.items() if t != "null")

    @property
    def main_type(self) -> str:
        seen = {t: n for t, n in self.types.items() if t != "null"}
        return max(seen, key=lambda t: (seen[t], t)) if seen else "null"


def _id_like(name: str) -> bool:
    low = name.lower()
    return low == "id" or low.endswith("_id") or low in ("userid", "productid", "orderid")


def _type_of(f: FieldSeen) -> str:
    main = f.main_type
    if main == "string":
        # Numeric strings parse as epoch times too: a date needs its separators, or the name.
        if f.examples and all(isinstance(x, str) and parse_ts_ms(x) is not None
                              and (f.name in TIME_FIELDS or "-" in x or ":" in x) for x in f.examples):
            return "timestamp"
        return "id" if _id_like(f.name) else "string"
    if main == "number":
        if _id_like(f.name) and all(isinstance(x, int) for x in f.examples):
            return "id"
        if f.name in TIME_FIELDS and f.examples and all(parse_ts_ms(x) is not None for x in f.examples):
            return "timestamp"
        return "integer" if f.examples and all(isinstance(x, int) for x in f.examples) else "number"
    return {"boolean": "boolean", "object": "object", "array": "array"}.get(main, "any")


def infer_contract(stream: str, events: int, seen: Sequence[FieldSeen], *, version: str = "1",
                   origin: str = "inferred") -> Contract:
    """The starting contract of ``stream`` from ``events`` JSON objects and their fields."""
    fields: list[Field] = []
    roles: dict[str, str] = {}
    # The time role goes to the first timestamp in TIME_FIELDS order, else one named for a
    # creation or an event, else the most present one.
    times = sorted((f for f in seen if _type_of(f) == "timestamp"), key=lambda f: (
        TIME_FIELDS.index(f.name) if f.name in TIME_FIELDS else len(TIME_FIELDS),
        not any(w in f.name.lower() for w in ("creat", "event", "occur")), -f.present, f.name))
    if times:
        roles["time"] = times[0].name
    for f in sorted(seen, key=lambda f: (-f.present, f.name)):
        ftype = _type_of(f)
        required = events > 0 and f.present >= REQUIRED_SHARE * events
        enum = None
        case = ""
        if ftype == "string" and f.values is not None and 0 < len(f.values) <= ENUM_MAX:
            enum = frozenset(v.strip() for v in f.values)
            if all(v == v.lower() for v in enum) and any(v != v.upper() for v in enum):  # letters, all lower
                case = "lower"
        role = "time" if roles.get("time") == f.name else _role(f, ftype, enum is not None, roles)
        if role:
            roles[role] = f.name
        fields.append(Field(f.name, ftype, required, role=role, enum=enum, case=case))
    key = next((roles[r] for r in _ID_ROLES if r in roles), "")
    return Contract(stream, version, tuple(fields), key=key, origin=origin,
                    description=f"Inferred from {events:,} events: review every field before use.")


def _role(f: FieldSeen, ftype: str, is_enum: bool, taken: Mapping[str, str]) -> str:
    name = f.name.lower()
    candidates = []
    if ftype == "id" and name in ("event_id", "id", "message_id", "uuid") and f.distinct >= 0.9 * f.present:
        candidates.append("event_id")
    if ftype == "id" and name in _ID_ROLES:
        candidates.append(name)
    if ftype == "string" and name == "source":
        candidates.append("source")
    if ftype == "string" and is_enum and name in KIND_NAMES:
        candidates.append("kind")
    return next((r for r in candidates if r not in taken), "")
