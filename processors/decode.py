"""Decoding Kafka message values into items, and reading timestamps.

Pure logic, the worker's hot path: what a contract judges (processors/contract.py)
arrives through decode_message, and every event time through parse_ts_ms / ts_pair.
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

# A ts string longer than MAX_TS_CHARS is never a timestamp (the longest ISO form we read is
# ~35 characters) and is neither parsed nor cached.
MAX_TS_CHARS = 64



class Rejected(NamedTuple):
    reason: str  # stable machine code (public contract), e.g. "missing_field:user_id"
    detail: str  # short human text



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
_new = tuple.__new__
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
        text = v if type(v) is str else show(v)
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
    if type(obj) is list:  # batch envelope; tuple.__new__: Item's own __new__ is Python, per element
        return [_new(Item, (x, None, None)) if x is not None else Item(None, b"null", _NULL) for x in obj]
    return [_new(Item, (obj, value, None)) if obj is not None else Item(None, value, _NULL)]


# ---------------------------------------------------------------- timestamps

_CACHE_MAX = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_MAX_MS = 4_133_980_800_000  # 2101-01-01T00:00:00Z (exclusive): years 1970..2100
INT_RE = re.compile(r"[+-]?[0-9]+")
FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
TS_BAD = (-1, "")  # cached parse failure (keeps the cache value type simple)
# raw ts string -> (ms, iso) or TS_BAD; events share strings. Cleared when full, never rebound:
# a compiled contract's fast path reads it directly.
TS_SEEN: dict[str, tuple[int, str]] = {}
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
    if FLOAT_RE.fullmatch(s):  # numeric string: epoch s/ms
        try:
            return _num_ms(int(s) if INT_RE.fullmatch(s) else float(s))
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


def ts_pair(v: Any) -> tuple[int, str] | None:
    if type(v) is str:
        r = TS_SEEN.get(v)
        if r is None:
            if len(v) > MAX_TS_CHARS:  # never a timestamp; not cached (the cache bounds entries)
                return None
            ms = _str_ms(v)
            r = TS_BAD if ms is None else (ms, _iso(ms))
            if len(TS_SEEN) >= _CACHE_MAX:
                TS_SEEN.clear()
            TS_SEEN[v] = r
        return None if r is TS_BAD else r
    ms = _num_ms(v)
    return None if ms is None else (ms, _iso(ms))


def in_range_ms(ms: int) -> bool:
    """An event time we keep: years 1970..2100 (what parse_ts_ms accepts)."""
    return 0 <= ms < _MAX_MS


def parse_ts_ms(value: Any) -> int | None:
    """ISO-8601 (no zone = UTC) or epoch s/ms (number or numeric string) -> epoch ms UTC."""
    r = ts_pair(value)
    return None if r is None else r[0]



# ---------------------------------------------------------------- showing values

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


def show(v: Any) -> str:
    """A short text of a value for a rejection's detail: bounded in size and depth, so a huge
    or deeply nested value costs nothing (repr() would recurse through all of it)."""
    try:
        return _REPR.repr(v)[:60]
    except (ValueError, RecursionError):  # an int with more digits than repr() writes
        return f"<{type(v).__name__}>"

