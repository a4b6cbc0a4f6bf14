"""Event contract v1: decode Kafka message values and validate/normalize events.

Pure logic (no Faust/Kafka/ClickHouse); the worker's hot path. Measured on this machine
(one core, Python 3.11, orjson 3.13, ~200-byte behaviour event), decode_message + normalize:
~380k events/s at one event per message with ISO ts strings (ts cache hits),
~335k/s with epoch-ms ints, ~470k/s in 500-event array/NDJSON envelopes.
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson


@dataclass(frozen=True)
class Stream:
    """What contract v1 says about one stream's events. The validator below and every reader
    of per-stream facts (inventory, dashboards, gap evaluation) take them from STREAM_SPECS."""

    name: str
    sub_asset_key: str  # the field whose value names a sub-asset: behaviour/event_type=view
    kinds: frozenset[str]  # the values of sub_asset_key the contract names
    open_kinds: bool  # other values are accepted too (behaviour: any lowercase name)
    required: tuple[str, ...]  # present and non-empty on every valid event
    optional: tuple[str, ...]  # checked when present (some required by kind, e.g. query on search)
    ids: tuple[str, ...]  # ids: numbers or strings, stored as strings
    key_field: str  # what producers key (and so partition) messages by

    @property
    def fields(self) -> frozenset[str]:
        """The contract's fields; any other field is an extra, kept and inventoried."""
        return frozenset((*self.required, *self.optional))

    def kind_asset(self, kind: str) -> str:
        return f"{self.name}/{self.sub_asset_key}={kind}"


STREAM_SPECS: dict[str, Stream] = {s.name: s for s in (
    Stream("behaviour", "event_type",
           frozenset({"view", "click", "cart", "remove_from_cart", "fav", "purchase", "search"}), True,
           required=("event_id", "event_type", "user_id", "ts", "source"),
           optional=("product_id", "session_id", "query"),
           ids=("event_id", "user_id", "product_id", "session_id"), key_field="user_id"),
    Stream("product", "op", frozenset({"upsert", "delete"}), False,
           required=("event_id", "product_id", "op", "ts", "source"),
           optional=("title", "category", "brand", "price", "currency", "stock"),
           ids=("event_id", "product_id"), key_field="product_id"),
    Stream("transaction", "status",
           frozenset({"created", "paid", "shipped", "delivered", "canceled", "refunded"}), False,
           required=("event_id", "order_id", "user_id", "product_id", "quantity", "amount", "status", "ts",
                     "source"),
           optional=("currency",),
           ids=("event_id", "order_id", "user_id", "product_id"), key_field="order_id"),
)}
STREAMS = tuple(STREAM_SPECS)

# Bounds on what one hostile event can make us keep. Ids and `source` are stored in their own
# columns, remembered by the dedupe window and name assets: longer ones are rejected
# (invalid_value:<name>). A ts string longer than MAX_TS_CHARS is never a timestamp (the
# longest ISO form we read is ~35 characters) and is neither parsed nor cached.
MAX_ID_CHARS = 256
MAX_SOURCE_CHARS = 256
MAX_TS_CHARS = 64
# Ids sent as JSON numbers must be exact: orjson reads integers beyond 64 bits as floats, and
# a float above 2**53 is not the number that was written (2**64 + 1 reads as 2**64).
MAX_EXACT_FLOAT_ID = 2**53
# Integer fields (quantity, stock): counts, at most a signed 64-bit integer.
MAX_INT_FIELD = 2**63 - 1


class Rejected(NamedTuple):
    reason: str  # stable machine code (public contract), e.g. "missing_field:user_id"
    detail: str  # short human text


class Event(NamedTuple):
    event_id: str
    kind: str  # the value of its stream's sub_asset_key (behaviour: event_type, ...)
    source: str
    user_id: str  # "" when absent / not applicable
    product_id: str  # "" when absent
    order_id: str  # "" when absent
    ts_ms: int  # event time, epoch milliseconds UTC
    fields: dict[str, Any]  # whole event normalized; unknown extra fields kept as they came


class Item(NamedTuple):
    obj: Any | None  # parsed JSON value (None if the item failed to parse)
    raw: bytes | None  # the item's original bytes; None for a JSON-array element (see item_bytes)
    error: Rejected | None  # set when the item could not be parsed


def item_bytes(item: Item) -> bytes:
    """The item's bytes. Array elements are written back out only when asked
    (dead letters): doing it for every event halved envelope throughput; such an element's
    bytes are then its compact JSON, not a byte-exact slice of the message."""
    return item.raw if item.raw is not None else dump_json(item.obj)


# ---------------------------------------------------------------- decoding

_EMPTY = Rejected("empty_message", "message value is empty")
# JSON null is no event; flag it here so every Item has exactly one of obj/error.
_NULL = Rejected("not_an_object", "event is JSON null")
_loads = orjson.loads
_JSONError = orjson.JSONDecodeError


def dump_json(x: Any) -> bytes:
    """Compact JSON of a decoded value (or a normalized event); never raises. orjson's dump
    depth limit (254) is below its load limit (1024), so what it loaded may be too deep for it
    to write: that (and anything else orjson refuses) goes through an explicit-stack writer,
    with no recursion at all. The result is exact-size: orjson's own bytes keep a buffer of
    4 KiB or more however short the JSON (orjson 3.12+), and these are kept (dead letters)."""
    try:
        return bytes(memoryview(orjson.dumps(x)))
    except TypeError:
        return _dump_deep(x)


_OPEN: dict[type, tuple[bytes, bytes]] = {dict: (b"{", b"}"), list: (b"[", b"]"), tuple: (b"[", b"]")}


def _dump_deep(x: Any) -> bytes:
    out = bytearray()
    stack: list[Any] = [x]  # values still to write; bytes on it are literal output
    while stack:
        v = stack.pop()
        t = type(v)
        if t is bytes:
            out += v
        elif t in _OPEN:
            opening, closing = _OPEN[t]
            out += opening
            stack.append(closing)
            todo: list[Any] = []
            if t is dict:
                for i, (k, val) in enumerate(v.items()):
                    todo += ((b"," if i else b"") + _scalar(k if type(k) is str else str(k)) + b":", val)
            else:
                for i, val in enumerate(v):
                    if i:
                        todo.append(b",")
                    todo.append(val)
            stack.extend(reversed(todo))
        else:
            out += _scalar(v)
    return bytes(out)


def _scalar(v: Any) -> bytes:
    try:
        return orjson.dumps(v)
    except TypeError:  # never from orjson-loaded data: ints beyond 64 bits, lone surrogates, ...
        if type(v) is int:
            try:
                return str(v).encode()
            except ValueError:  # more digits than str() writes
                return b"null"
        text = v if type(v) is str else _show(v)
        return orjson.dumps(text.encode("utf-8", "replace").decode())


def _parse_one(raw: bytes) -> Item:
    try:
        obj = _loads(raw)
    except _JSONError as e:
        return Item(None, raw, Rejected("invalid_json", f"invalid JSON: {e}"[:200]))
    return Item(obj, raw, None) if obj is not None else Item(None, raw, _NULL)


def decode_message(value: bytes | None) -> list[Item]:
    """One Kafka message value -> its items: one object, a JSON array, or NDJSON lines."""
    if not value:
        return [Item(None, b"", _EMPTY)]
    try:
        obj = _loads(value)  # fast path: the whole value is one JSON document
    except _JSONError:  # too deep (> 1024 levels) included: orjson refuses it without recursing
        if value.isspace():  # no copy of a large value
            return [Item(None, value, _EMPTY)]
        if b"\n" not in value:
            return [_parse_one(value)]  # garbage: parse again for the error text (rare)
        # NDJSON: each non-blank line is one value (CRLF tolerated); a bad line loses only itself
        return [_parse_one(ln) for ln in map(bytes.strip, value.split(b"\n")) if ln]
    if type(obj) is list:  # batch envelope
        return [Item(x, None, None) if x is not None else Item(None, b"null", _NULL)
                for x in obj]
    return [Item(obj, value, None) if obj is not None else Item(None, value, _NULL)]


# ---------------------------------------------------------------- timestamps

_CACHE_MAX = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_MAX_MS = 4_133_980_800_000  # 2101-01-01T00:00:00Z (exclusive): years 1970..2100
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BAD_TS = (-1, "")  # cached parse failure (keeps the cache value type simple)
_TS_CACHE: dict[str, tuple[int, str]] = {}  # raw ts string -> (ms, iso); events share strings
_SEC_CACHE: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS"


def _num_ms(v: Any) -> int | None:
    t = type(v)
    if t is int:
        ms = v if abs(v) >= 100_000_000_000 else v * 1000  # heuristic: >= 1e11 means millis
    elif t is float:
        if not math.isfinite(v):
            return None
        ms = round(v if abs(v) >= 1e11 else v * 1000)
    else:  # bool, containers, ... are not timestamps
        return None
    return ms if 0 <= ms < _MAX_MS else None


def _str_ms(s: str) -> int | None:
    s = s.strip()
    if _FLOAT_RE.fullmatch(s):  # numeric string: epoch s/ms
        try:
            return _num_ms(int(s) if _INT_RE.fullmatch(s) else float(s))
        except ValueError:  # more digits than int() accepts
            return None
    if s[-3:].upper() == "UTC":  # "2019-10-01 00:00:00 UTC" (REES46 style)
        s = s[:-3].rstrip() + "+00:00"
    elif s[-1:] == "z":
        s = s[:-1] + "Z"
    # Extended calendar dates only; fromisoformat would also take week dates and any separator.
    if len(s) < 10 or s[4] != "-" or s[7] != "-" or (len(s) > 10 and s[10] not in "Tt "):
        return None
    try:
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:  # no zone means UTC
            dt = dt.replace(tzinfo=UTC)
        ms = (dt - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError):
        return None
    return ms if 0 <= ms < _MAX_MS else None


def _iso(ms: int) -> str:
    sec, milli = divmod(ms, 1000)
    p = _SEC_CACHE.get(sec)
    if p is None:  # neighbouring events share the second: format it once
        if len(_SEC_CACHE) >= _CACHE_MAX:
            _SEC_CACHE.clear()
        p = _SEC_CACHE[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{p}.{milli:03d}Z"


def _ts(v: Any) -> tuple[int, str] | None:
    if type(v) is str:
        r = _TS_CACHE.get(v)
        if r is None:
            if len(v) > MAX_TS_CHARS:  # never a timestamp; not cached (the cache bounds entries)
                return None
            ms = _str_ms(v)
            r = _BAD_TS if ms is None else (ms, _iso(ms))
            if len(_TS_CACHE) >= _CACHE_MAX:
                _TS_CACHE.clear()
            _TS_CACHE[v] = r
        return None if r is _BAD_TS else r
    ms = _num_ms(v)
    return None if ms is None else (ms, _iso(ms))


def parse_ts_ms(value: Any) -> int | None:
    """ISO-8601 (no zone = UTC) or epoch s/ms (number or numeric string) -> epoch ms UTC."""
    r = _ts(value)
    return None if r is None else r[0]


# ---------------------------------------------------------------- field checks

class _Bad(Exception):
    # Internal control flow: the happy path pays nothing for try/except in 3.11.
    def __init__(self, reason: str, detail: str) -> None:
        self.rejected = Rejected(reason, detail)


class _ShortRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 50, 50, 50
        self.maxlist = self.maxtuple = self.maxdict = 4

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        # reprlib sorts the keys first: O(n log n) on a hostile dict; insertion order is free.
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        shown = [f"{self.repr1(k, level - 1)}: {self.repr1(x[k], level - 1)}"
                 for k in itertools.islice(x, self.maxdict)]
        return "{" + ", ".join(shown) + (", ..." if len(x) > self.maxdict else "") + "}"


_REPR = _ShortRepr()


def _show(v: Any) -> str:
    """A short text of a value for a rejection's detail: bounded in size and depth, so a huge
    or deeply nested value costs nothing (repr() would recurse through all of it)."""
    try:
        return _REPR.repr(v)[:60]
    except (ValueError, RecursionError):  # an int with more digits than repr() writes
        return f"<{type(v).__name__}>"


def _missing(name: str) -> _Bad:
    return _Bad(f"missing_field:{name}", f"field {name!r} is missing or empty")


_MAX_ID_INT = 10**MAX_ID_CHARS - 1  # larger ints have more digits than an id may


def _as_id(v: Any, name: str) -> str:
    t = type(v)
    if t is str:
        s = v.strip()
    elif t is int:
        if not -_MAX_ID_INT <= v <= _MAX_ID_INT:  # str() would be too long (or refuse)
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: longer than {MAX_ID_CHARS} characters")
        s = str(v)
    elif t is float and v.is_integer():  # 12.0 -> "12"; bool is excluded by `type is`
        if not -MAX_EXACT_FLOAT_ID <= v <= MAX_EXACT_FLOAT_ID:
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: {_show(v)} is too large to be an exact "
                                                "id as a JSON number (send it as a string)")
        return str(int(v))
    else:
        raise _Bad(f"invalid_type:{name}", f"field {name!r}: {_show(v)} is not an id")
    if len(s) > MAX_ID_CHARS:
        raise _Bad(f"invalid_value:{name}", f"field {name!r}: longer than {MAX_ID_CHARS} characters")
    return s


def _req_id(v: Any, name: str) -> str:
    s = _as_id(v, name) if v is not None else ""
    if not s:
        raise _missing(name)
    return s


def _opt_id(o: dict[str, Any], f: dict[str, Any], name: str) -> str:
    v = o.get(name)
    if v is None:
        return ""
    s = f[name] = _as_id(v, name)
    return s


def _req_str(v: Any, name: str) -> str:
    if v is None:
        raise _missing(name)
    if type(v) is not str:
        raise _Bad(f"invalid_type:{name}", f"field {name!r}: {_show(v)} is not a string")
    s = v.strip()
    if not s:
        raise _missing(name)
    return s


def _opt_str(o: dict[str, Any], name: str) -> None:
    v = o.get(name)
    if v is not None and type(v) is not str:
        raise _Bad(f"invalid_type:{name}", f"field {name!r}: {_show(v)} is not a string")


def _enum(v: Any, name: str, allowed: frozenset[str]) -> str:
    if type(v) is str and v in allowed:  # fast path: already canonical
        return v
    s = _req_str(v, name).lower()
    if s not in allowed:
        raise _Bad(f"invalid_value:{name}", f"field {name!r}: {_show(v)} not in {sorted(allowed)}")
    return s


def _req_ts(v: Any) -> tuple[int, str]:
    if v is None or v == "":
        raise _missing("ts")
    r = _ts(v)
    if r is None:
        if type(v) is str and not v.strip():  # checked only on failure: keeps the hot path lean
            raise _missing("ts")
        raise _Bad("invalid_ts", f"field 'ts': {_show(v)} is not a timestamp")
    return r


def _number(o: dict[str, Any], name: str, integer: bool, strict: bool, required: bool) -> Any:
    """Finite number >= 0 (> 0 if strict); numeric strings accepted; int if integer.
    Absent/null/"" -> None, or missing_field if required."""
    x: Any = o.get(name)
    v = x
    if v is None or v == "":
        if required:
            raise _missing(name)
        return None
    try:
        if type(v) is str:
            s = v.strip()
            x = int(s) if _INT_RE.fullmatch(s) else float(s) if _FLOAT_RE.fullmatch(s) else None
        t = type(x)  # bool/None/containers fall through to the error below
        if t is float and math.isfinite(x) and (not integer or x.is_integer()):
            x = int(x) if integer else x
        elif t is int:
            x = x if integer else float(x)
        else:
            x = None
    except (ValueError, OverflowError):  # > 4300 digits, or an int too big for a float
        x = None
    if integer and x is not None and x > MAX_INT_FIELD:  # beyond 64 bits: no count is that large
        x = None
    if x is None or not (x > 0 if strict else x >= 0):
        raise _Bad(f"invalid_value:{name}", f"field {name!r}: {_show(v)} is not a valid {name}")
    return x


# ---------------------------------------------------------------- streams

# The checks are written out per stream (the hot path); tests/test_contract.py proves they
# enforce STREAM_SPECS: every required field, optional field, id and kind.
_ET_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_NEEDS_PRODUCT = STREAM_SPECS["behaviour"].kinds - {"search"}
_ET_CACHE: dict[str, str] = {k: k for k in STREAM_SPECS["behaviour"].kinds}  # raw -> canonical
_OPS = STREAM_SPECS["product"].kinds
_STATUSES = STREAM_SPECS["transaction"].kinds


def _event_type(v: Any) -> str:
    if type(v) is str:
        et = _ET_CACHE.get(v)
        if et is not None:  # one dict lookup instead of strip/lower/regex per event
            return et
    et = _req_str(v, "event_type").lower()
    if not _ET_RE.fullmatch(et):
        raise _Bad("invalid_value:event_type", f"field 'event_type': {_show(v)} is not valid")
    if len(v) <= 64:  # a long padded value is judged, not kept
        if len(_ET_CACHE) >= 10_000:  # open vocabulary: bound it against garbage
            _ET_CACHE.clear()
        _ET_CACHE[v] = et
    return et


def _source(v: Any) -> str:
    s = _req_str(v, "source")
    if len(s) > MAX_SOURCE_CHARS:
        raise _Bad("invalid_value:source", f"field 'source': longer than {MAX_SOURCE_CHARS} characters")
    return s


def _behaviour(o: dict[str, Any]) -> Event:
    f = dict(o)  # the one copy: extra fields are kept as they came
    eid = f["event_id"] = _req_id(o.get("event_id"), "event_id")
    kind = f["event_type"] = _event_type(o.get("event_type"))
    uid = f["user_id"] = _req_id(o.get("user_id"), "user_id")
    pid = _opt_id(o, f, "product_id")
    _opt_id(o, f, "session_id")
    _opt_str(o, "query")
    ms, f["ts"] = _req_ts(o.get("ts"))
    src = f["source"] = _source(o.get("source"))
    if kind in _NEEDS_PRODUCT:
        if not pid:
            raise _missing("product_id")
    elif kind == "search" and not (o.get("query") or "").strip():
        raise _missing("query")
    return Event(eid, kind, src, uid, pid, "", ms, f)


def _product(o: dict[str, Any]) -> Event:
    f = dict(o)
    eid = f["event_id"] = _req_id(o.get("event_id"), "event_id")
    pid = f["product_id"] = _req_id(o.get("product_id"), "product_id")
    op = f["op"] = _enum(o.get("op"), "op", _OPS)
    ms, f["ts"] = _req_ts(o.get("ts"))
    src = f["source"] = _source(o.get("source"))
    if op == "upsert":  # a delete carries no attributes worth judging
        for name in ("title", "category", "brand", "currency"):
            _opt_str(o, name)
        for name, integer in (("price", False), ("stock", True)):
            x = _number(o, name, integer, False, False)
            if x is not None:
                f[name] = x
    return Event(eid, op, src, "", pid, "", ms, f)


def _transaction(o: dict[str, Any]) -> Event:
    f = dict(o)
    eid = f["event_id"] = _req_id(o.get("event_id"), "event_id")
    oid = f["order_id"] = _req_id(o.get("order_id"), "order_id")
    uid = f["user_id"] = _req_id(o.get("user_id"), "user_id")
    pid = f["product_id"] = _req_id(o.get("product_id"), "product_id")
    f["quantity"] = _number(o, "quantity", True, True, True)
    f["amount"] = _number(o, "amount", False, False, True)
    _opt_str(o, "currency")
    status = f["status"] = _enum(o.get("status"), "status", _STATUSES)
    ms, f["ts"] = _req_ts(o.get("ts"))
    src = f["source"] = _source(o.get("source"))
    return Event(eid, status, src, uid, pid, oid, ms, f)


_NORMALIZERS = {"behaviour": _behaviour, "product": _product, "transaction": _transaction}


def normalize(stream: str, obj: Any) -> Event | Rejected:
    """Validate and normalize one event of `stream` per contract v1."""
    fn = _NORMALIZERS.get(stream)
    if fn is None:  # a wiring bug, not bad data
        raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
    if not isinstance(obj, dict):
        return Rejected("not_an_object", f"event is {type(obj).__name__}, not an object")
    try:
        return fn(obj)
    except _Bad as e:
        return e.rejected
