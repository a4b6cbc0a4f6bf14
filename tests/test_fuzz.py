"""Fuzzing the decoder and the judge (issue #12): whatever bytes arrive, under a shipped
contract or none (schemaless), judge_batch never raises, judges every item exactly once,
dead-letters every invalid one with its reason, and its columns build the ingest_log Arrow
table (valid UTF-8 strings, numbers that fit).

Pure: no broker, no store. The JSON-ish documents are written here token by token, so they
can hold what a JSON library would never write: NaN/Infinity tokens, lone surrogate escapes,
invalid UTF-8, duplicate keys, integers beyond 64 bits, nesting past orjson's limits.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocktake.clickhouse.rows import ingest_log_table
from stocktake.processors import judge as judge_module
from stocktake.processors.contract import Contract, compile_contract, schemaless
from stocktake.processors.contract_spec import parse_contract, shipped
from stocktake.processors.decode import decode_message
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.judge import COLUMNS, Judged, Record, judge_batch

T0 = 1569888000000  # 2019-10-01T00:00:00Z
INGEST_MS = T0 + 3_600_000
MAX_MS = 4_133_980_800_000  # contract: event times in 1970..2100 (DateTime64(3) holds them)
CONTRACTS: dict[str, Contract] = {**shipped(), "clicks": schemaless("clicks")}  # and a stream without one
STREAMS = tuple(CONTRACTS)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])

VALID: dict[str, dict[str, Any]] = {
    "behaviour": {"event_id": "e1", "event_type": "view", "user_id": 42, "product_id": 7,
                  "session_id": "s1", "ts": "2019-10-01T00:00:00Z", "source": "web"},
    "product": {"event_id": "p1", "product_id": 7, "op": "upsert", "title": "Kettle", "category": "a",
                "brand": "b", "price": 33.2, "currency": "USD", "stock": 5, "ts": T0, "source": "catalog"},
    "transaction": {"event_id": "t1", "order_id": "o1", "user_id": 42, "product_id": 7, "quantity": 2,
                    "amount": 66.4, "currency": "USD", "status": "paid", "ts": T0, "source": "shop"},
    "clicks": {"event_id": "c1", "user_id": 42, "timestamp": "2019-10-01T00:00:00Z", "page": "/", "source": "web"},
}
FIELD_NAMES = sorted({f for c in CONTRACTS.values() for f in c.names} | {"x", "", "timestamp", "time"})

# ------------------------------------------------------------------ JSON-ish text, token by token

hostile_scalars: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from([b"null", b"true", b"false", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0",
                     b'"\\ud800"', b'"a\\udc00b"', b'"\\ud83d\\ude00"', b'"\xff\xfe"', b'"\xed\xa0\x80"',
                     b'"\xc3"', b'"\\u0000"', b'""', b'"  "', b'"2019-10-01T00:00:00Z"', b'"1e999"',
                     b'"9' + b"9" * 400 + b'"', b"1" * 500, b'"' + b"a" * 300 + b'"']),
    st.integers().map(lambda i: str(i).encode()),                       # any size
    st.integers(2**63 - 2, 2**66).map(lambda i: str(i).encode()),      # around the 64-bit edges
    st.integers(-(2**66), -(2**63) + 2).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.text(max_size=12).map(orjson.dumps),
    st.sampled_from(["view", "cart", "search", "upsert", "delete", "paid", "VIEW ", "web"]).map(orjson.dumps),
    st.binary(max_size=8),                                               # raw junk inside a document
)


def _obj(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


keys: st.SearchStrategy[bytes] = st.one_of(st.sampled_from(FIELD_NAMES).map(orjson.dumps),
                                           st.sampled_from([b'"\\ud800"', b'"\xff"', b"1", b"null"]))
json_ish: st.SearchStrategy[bytes] = st.recursive(
    hostile_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]"),
        st.lists(st.tuples(keys, inner), max_size=5).map(_obj),  # duplicate keys likely
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """Nesting around orjson's dump (254) and load (1024) limits, and far past them."""
    depth = draw(st.sampled_from([200, 254, 255, 256, 600, 1023, 1024, 1025, 5000]))
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    body = opening * depth + b"1" + closing * depth
    if draw(st.booleans()):  # a deep extra field on an otherwise valid event
        stream = draw(st.sampled_from(STREAMS))
        return orjson.dumps(VALID[stream])[:-1] + b',"deep":' + body + b"}"
    return body


@st.composite
def mutated_event(draw: st.DrawFn, stream: str) -> bytes:
    """A valid event with a few fields replaced by hostile tokens, dropped or repeated."""
    pairs = [(orjson.dumps(k), orjson.dumps(v)) for k, v in VALID[stream].items()]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(pairs) - 1))
        op = draw(st.sampled_from(["replace", "drop", "repeat", "nest"]))
        if op == "replace":
            pairs[i] = (pairs[i][0], draw(hostile_scalars))
        elif op == "drop" and len(pairs) > 1:
            del pairs[i]
        elif op == "repeat":  # duplicate key: orjson keeps the last
            pairs.append((pairs[i][0], draw(hostile_scalars | st.just(pairs[i][1]))))
        else:
            pairs[i] = (pairs[i][0], draw(json_ish))
    raw = _obj(pairs)
    if draw(st.integers(0, 9)) == 0:  # bytes damage
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.binary(max_size=3)) + raw[at + 1:]
    return raw


def events(stream: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(orjson.dumps(VALID[stream])), mutated_event(stream), json_ish)


@st.composite
def message(draw: st.DrawFn, stream: str) -> bytes | None:
    shape = draw(st.sampled_from(["one", "one", "array", "ndjson", "bytes", "deep", "many", "none"]))
    if shape == "one":
        return draw(events(stream))
    if shape == "array":
        return b"[" + b",".join(draw(st.lists(events(stream), max_size=8))) + b"]"
    if shape == "ndjson":
        sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
        return sep.join(draw(st.lists(events(stream), min_size=1, max_size=8)))
    if shape == "deep":
        return draw(deep())
    if shape == "many":  # a large envelope of copies (duplicates) and a few bad ones
        n = draw(st.integers(50, 400))
        good = orjson.dumps(VALID[stream])
        items = [good] * n
        for _ in range(draw(st.integers(0, 5))):
            items[draw(st.integers(0, n - 1))] = draw(events(stream))
        return b"[" + b",".join(items) + b"]" if draw(st.booleans()) else b"\n".join(items)
    if shape == "none":
        return draw(st.sampled_from([None, b"", b"   ", b"\n\n"]))
    return draw(st.binary(max_size=200))


record_keys = st.one_of(st.none(), st.binary(max_size=12), st.integers(1020, 1030).map(lambda n: b"k" * n))


@st.composite
def batches(draw: st.DrawFn, stream: str) -> list[Record]:
    values = draw(st.lists(message(stream), min_size=1, max_size=5))
    first = draw(st.integers(0, 2**63 - 10))
    # Kafka's record timestamp: the time of an event that names none (schemaless streams)
    stamps = st.none() | st.integers(0, MAX_MS - 1)
    return [Record(first + i, draw(record_keys), v, draw(stamps)) for i, v in enumerate(values)]


# ------------------------------------------------------------------ the properties


def check(stream: str, records: list[Record], judged: Judged, dl_max: int, payload_max: int) -> None:
    cols = judged.columns
    n = len(cols["offset"])
    assert {name: len(cols[name]) for name in COLUMNS} == dict.fromkeys(COLUMNS, n)

    # Every item of every message is exactly one row, in order, with its coordinates.
    want = [(r.offset, i) for r in records for i in range(len(decode_message(r.value)))]
    assert list(zip(cols["offset"], cols["idx"], strict=True)) == want
    assert judged.last_offset == records[-1].offset

    statuses = Counter(cols["status"])
    assert set(statuses) <= {"valid", "duplicate", "invalid"}
    assert judged.counts == {s: statuses.get(s, 0) for s in ("valid", "duplicate", "invalid")}
    assert sum(judged.counts.values()) == n
    assert len(judged.valid) == judged.counts["valid"]

    # One dead letter per invalid row, carrying that row's reason and coordinates.
    invalid = {(o, i): r for o, i, s, r in zip(cols["offset"], cols["idx"], cols["status"], cols["reason"],
                                               strict=True) if s == "invalid"}
    assert len(judged.dead_letters) == len(invalid)
    keys_by_offset = {r.offset: r.key for r in records}
    seen = set()
    truncated = 0
    for dl in judged.dead_letters:
        h = dict(dl.headers)
        assert len(h) == len(dl.headers), "a header twice"
        assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in dl.headers)
        where = (int(h["stocktake.offset"]), int(h["stocktake.index"]))
        assert where in invalid and where not in seen
        seen.add(where)
        reason = invalid[where]
        assert reason and h["stocktake.reason"] == reason.encode()
        assert h["stocktake.topic"] == f"stocktake.{stream}".encode() and h["stocktake.partition"] == b"2"
        assert 0 < len(h["stocktake.detail"]) <= 1000
        h["stocktake.detail"].decode()  # whole characters only
        assert len(dl.value) <= dl_max
        if "stocktake.truncated" in h:
            truncated += 1
            assert h["stocktake.truncated"] == b"1" and len(dl.value) == dl_max
            assert int(h["stocktake.original_bytes"]) > dl_max
            assert len(h["stocktake.sha256"]) == 64
        key = keys_by_offset[where[0]]
        if key is not None and len(key) > judge_module.KEY_MAX_BYTES:
            assert dl.key == key[:judge_module.KEY_MAX_BYTES]
            assert h["stocktake.key_sha256"] == hashlib.sha256(key).hexdigest().encode()
            assert int(h["stocktake.key_bytes"]) == len(key)
        else:
            assert dl.key == key and "stocktake.key_truncated" not in h
    assert judged.truncated == truncated

    for status, reason, payload, ts in zip(cols["status"], cols["reason"], cols["payload"], cols["ts"],
                                           strict=True):
        assert isinstance(payload, bytes)
        assert 0 <= ts < MAX_MS
        if status == "invalid":
            assert len(payload) <= payload_max
        else:
            assert reason == ("" if status == "valid" else "duplicate_event_id")
            orjson.loads(payload)  # the normalized event is JSON
    for name in ("event_id", "kind", "source", "user_id", "product_id", "order_id", "reason"):
        for text in cols[name]:
            assert isinstance(text, str) and len(text) <= 256
            text.encode()  # no lone surrogates
    contract = CONTRACTS[stream]
    assert cols["contract_version"] == [contract.version] * n and cols["kind_key"] == [contract.kind_field] * n
    for status, warnings in zip(cols["status"], cols["warnings"], strict=True):
        assert isinstance(warnings, tuple) and all(isinstance(w, str) for w in warnings)
        assert status != "invalid" or warnings == ()
    if contract.schemaless:  # any JSON object is valid: only what is no object is invalid
        assert set(invalid.values()) <= {"empty_message", "invalid_json", "not_an_object"}

    table = ingest_log_table(cols)  # the sink's Arrow insert: every value fits its column type
    assert table.num_rows == n


def judge(stream: str, records: list[Record], dl_max: int, payload_max: int) -> Judged:
    return judge_batch(CONTRACTS[stream], f"stocktake.{stream}", 2, records, DedupeWindow(3_600_000, 1000), INGEST_MS,
                       deadletter_max_bytes=dl_max, payload_max_bytes=payload_max)


limits = st.sampled_from([(judge_module.DEADLETTER_MAX_BYTES, judge_module.PAYLOAD_MAX_BYTES),
                          (64, 32), (1, 1)])


@pytest.mark.parametrize("stream", STREAMS)
@FUZZ
@given(data=st.data(), lim=limits)
def test_fuzz_judge_batch(stream: str, data: st.DataObject, lim: tuple[int, int]) -> None:
    records = data.draw(batches(stream))
    check(stream, records, judge(stream, records, *lim), *lim)


@pytest.mark.parametrize("stream", STREAMS)
@FUZZ
@given(value=st.binary(max_size=400), key=record_keys)
def test_fuzz_arbitrary_bytes(stream: str, value: bytes, key: bytes | None) -> None:
    records = [Record(0, key, value)]
    check(stream, records, judge(stream, records, 64, 32), 64, 32)


@FUZZ
@given(value=json_ish)
def test_fuzz_decode_message_json_ish(value: bytes) -> None:
    items = decode_message(value)
    assert items or value.strip() == b"[]"  # an empty envelope holds no events (and is no error)
    assert all((it.obj is None) != (it.error is None) for it in items)


@pytest.mark.parametrize("stream", STREAMS)
@FUZZ
@given(raw=st.data())
def test_fuzz_mutated_events_are_judged_like_one_message(stream: str, raw: st.DataObject) -> None:
    """A mutated event alone and inside an array envelope gets the same verdict."""
    one = raw.draw(mutated_event(stream))
    envelope = b"[" + one + b"," + orjson.dumps(VALID[stream]) + b"]"
    try:
        orjson.loads(envelope)
    except orjson.JSONDecodeError:
        return  # damaged so that the envelope itself no longer parses: another case
    alone = judge(stream, [Record(0, None, one)], 10**6, 10**6)
    enveloped = judge(stream, [Record(0, None, envelope)], 10**6, 10**6)
    assert len(alone.columns["status"]) == 1 and len(enveloped.columns["status"]) == 2
    assert enveloped.columns["reason"][0] == alone.columns["reason"][0]
    assert enveloped.columns["status"][1] == ("duplicate" if alone.columns["status"][0] == "valid"
                                              and alone.columns["event_id"][0] == VALID[stream]["event_id"]
                                              else "valid")


@pytest.mark.parametrize("stream", STREAMS)
@FUZZ
@given(data=st.data(), value=st.one_of(hostile_scalars, json_ish, deep()))
def test_fuzz_one_field_of_a_valid_event(stream: str, data: st.DataObject, value: bytes) -> None:
    """Each contract field (and an extra one) of an otherwise valid event, set to anything."""
    name = data.draw(st.sampled_from(sorted(CONTRACTS[stream].names | {"extra", "timestamp"})))
    raw = orjson.dumps({k: v for k, v in VALID[stream].items() if k != name})[:-1]
    raw += b',"' + name.encode() + b'":' + value + b"}"
    records = [Record(7, b"k", raw)]
    judged = judge(stream, records, 64, 32)
    check(stream, records, judged, 64, 32)
    if judged.columns["status"] == ["valid"]:
        assert orjson.loads(judged.columns["payload"][0])["event_id"] == judged.columns["event_id"][0]


# ------------------------------------------------------------------ the generated fast paths

# Every kind of field the fast paths inline (contract.py _fast_lines), each with a `warn` twin.
EDGES = parse_contract('''
stream = "edges"
version = "1"
[fields.id]
type = "id"
required = true
role = "event_id"
[fields.code]
type = "id"
pattern = "[A-Z]{2}[0-9]+"
[fields.kind]
type = "string"
required = true
role = "kind"
case = "lower"
pattern = "[a-z_]+"
[fields.state]
type = "string"
enum = ["on", "off"]
severity = "warn"
[fields.src]
type = "string"
required = true
role = "source"
[fields.label]
type = "string"
max_length = 5
severity = "warn"
[fields.note]
type = "string"
[fields.at]
type = "timestamp"
required = true
role = "time"
[fields.seen]
type = "timestamp"
severity = "warn"
[fields.n]
type = "integer"
min = 0
''', "test")
EDGE_VALID = {"id": "e1", "code": "AB12", "kind": "Tap", "state": "on", "src": "app", "label": "abc",
              "note": "x", "at": "2019-10-01T00:00:00Z", "seen": T0, "n": 3}
edge_values = st.one_of(
    st.sampled_from([None, "", " ", "  e1 ", "AB12", " AB12", "ab12", "Tap", "TAP ", "tap", "t-p", "on", "ON",
                     "off ", "abcdef", "abcde", "2019-10-01T00:00:00Z", " 2019-10-01T00:00:00Z", "2019-13-01",
                     T0, -1, 0, 10**17, 10**18, -(10**18), 10**19, 12.0, 12.5, 2.0**60, True, [], {}, ["a"]]),
    st.text(max_size=8), st.integers(), st.floats(allow_nan=True), st.text(min_size=250, max_size=300),
)


@st.composite
def edge_events(draw: st.DrawFn) -> dict[str, Any]:
    ev = dict(EDGE_VALID)
    for name in draw(st.lists(st.sampled_from(sorted(EDGE_VALID)), max_size=4)):
        if draw(st.booleans()):
            ev[name] = draw(edge_values)
        else:
            ev.pop(name, None)
    return ev


@st.composite
def any_contract_event(draw: st.DrawFn) -> tuple[Contract, dict[str, Any]]:
    stream = draw(st.sampled_from([*shipped(), "edges"]))
    if stream == "edges":
        return EDGES, draw(edge_events())
    try:
        obj = orjson.loads(draw(st.one_of(st.just(orjson.dumps(VALID[stream])), mutated_event(stream))))
    except orjson.JSONDecodeError:
        obj = {}
    return shipped()[stream], obj if type(obj) is dict else {}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=any_contract_event(), twice=st.booleans())
def test_fast_paths_judge_as_the_steps_do(case: tuple[Contract, dict[str, Any]], twice: bool) -> None:
    """The generated judge's inline fast paths give every event the verdict the field steps
    alone give it: the same Event (normalized fields and warnings included) or Rejected.
    ``twice``: judged again, once the value caches (kind vocabulary, time strings) hold it."""
    contract, obj = case
    fast, steps = compile_contract(contract), compile_contract(contract, fast=False)
    for _ in range(1 + twice):
        assert fast(dict(obj)) == steps(dict(obj))
