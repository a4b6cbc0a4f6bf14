"""Tests for processors.contract judging under the shipped contract v1 (processors/contracts/*.toml),
and for processors.decode (messages -> items, timestamps). The contract files themselves,
ContractBook and schemaless streams: tests/test_contract_spec.py."""

from __future__ import annotations

import copy
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake import sources
from stocktake.clickhouse.store import Store
from stocktake.processors import decode
from stocktake.processors.contract import Contract, Event, normalize
from stocktake.processors.contract_spec import ContractBook, shipped
from stocktake.processors.decode import Item, Rejected, decode_message, item_bytes, parse_ts_ms

CONTRACTS: dict[str, Contract] = shipped()
STREAMS = tuple(CONTRACTS)
BEHAVIOUR = CONTRACTS["behaviour"]
# The codes of contract v1's two `warn` rules (behaviour): the event stays valid.
NO_PRODUCT = "missing_field:product_id@product_events_name_the_product"
NO_QUERY = "missing_field:query@searches_carry_the_query"

T0 = 1569888000000  # 2019-10-01T00:00:00Z
T0_ISO = "2019-10-01T00:00:00.000Z"


def behaviour(**kw: Any) -> dict[str, Any]:
    ev = {"event_id": "e1", "event_type": "view", "user_id": 42, "product_id": 7,
          "ts": "2019-10-01T00:00:00Z", "source": "web"}
    ev.update(kw)
    return ev


def product(**kw: Any) -> dict[str, Any]:
    ev = {"event_id": "p1", "product_id": 7, "op": "upsert", "title": "Kettle",
          "category": "appliances", "brand": "aqua", "price": 33.2, "currency": "USD",
          "stock": 5, "ts": T0, "source": "catalog"}
    ev.update(kw)
    return ev


def transaction(**kw: Any) -> dict[str, Any]:
    ev = {"event_id": "t1", "order_id": "o1", "user_id": 42, "product_id": 7, "quantity": 2,
          "amount": 66.4, "currency": "USD", "status": "paid", "ts": T0, "source": "shop"}
    ev.update(kw)
    return ev


MAKERS = {"behaviour": behaviour, "product": product, "transaction": transaction}


def without(ev: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k != name}


def reason(stream: str, obj: Any) -> str:
    r = normalize(CONTRACTS[stream], obj)
    assert isinstance(r, Rejected), r
    return r.reason


def ok(stream: str, obj: Any) -> Event:
    r = normalize(CONTRACTS[stream], obj)
    assert isinstance(r, Event), r
    return r


# ------------------------------------------------------------------ valid events


def test_behaviour_normalized() -> None:
    ev = behaviour(session_id=" s-1 ", extra={"nested": [1, 2]}, price="35.79")
    before = copy.deepcopy(ev)
    e = ok("behaviour", ev)
    assert e == Event("e1", "view", "web", "42", "7", "", T0, e.fields, ())
    assert e.fields == {**before, "user_id": "42", "product_id": "7", "session_id": "s-1",
                        "ts": T0_ISO}
    assert ev == before  # the caller's dict is not mutated


def test_product_and_transaction_normalized() -> None:
    p = ok("product", product(op="UPSERT", price="12.50", stock="3", color="red"))
    assert (p.kind, p.product_id, p.user_id, p.ts_ms) == ("upsert", "7", "", T0)
    assert p.fields["price"] == 12.5 and type(p.fields["price"]) is float
    assert p.fields["stock"] == 3 and type(p.fields["stock"]) is int
    assert p.fields["color"] == "red" and p.fields["ts"] == T0_ISO
    assert ok("product", product(stock=4.0, price=0)).fields["stock"] == 4
    assert ok("product", product(price=None, stock=None, title=None)).fields["price"] is None
    # a delete is not judged on its attributes
    assert ok("product", product(op="delete", price="n/a", stock=-1, title=3)).kind == "delete"

    t = ok("transaction", transaction(status=" Paid ", quantity="2", amount=10, order_id=99))
    assert (t.kind, t.order_id, t.user_id, t.product_id) == ("paid", "99", "42", "7")
    assert t.fields["quantity"] == 2 and type(t.fields["quantity"]) is int
    assert t.fields["amount"] == 10.0 and type(t.fields["amount"]) is float
    assert ok("transaction", transaction(currency=None, amount="0")).fields["amount"] == 0.0


@pytest.mark.parametrize(("raw", "want"), [(42, "42"), ("42", "42"), (" 42 ", "42"),
                                           (12.0, "12"), (-3, "-3"), ("abc-XYZ", "abc-XYZ"),
                                           (2**64, str(2**64))])
def test_id_variants(raw: Any, want: str) -> None:
    e = ok("behaviour", behaviour(event_id=raw, user_id=raw, product_id=raw, session_id=raw))
    assert (e.event_id, e.user_id, e.product_id, e.fields["session_id"]) == (want,) * 4


@pytest.mark.parametrize("et", ["page_scroll", "Add_To_Wishlist", "x", "a" * 40, " Share "])
def test_open_event_type_accepted(et: str) -> None:
    e = ok("behaviour", without(behaviour(event_type=et), "product_id"))
    assert e.kind == et.strip().lower() == e.fields["event_type"]
    assert e.product_id == "" and e.warnings == ()  # only the well-known product events name one


def test_search_and_known_types() -> None:
    s = ok("behaviour", without(behaviour(event_type="search", query="red shoes"), "product_id"))
    assert s.kind == "search" and s.fields["query"] == "red shoes" and s.warnings == ()
    assert ok("behaviour", behaviour(event_type="PURCHASE")).kind == "purchase"


@pytest.mark.parametrize(("value", "want"), [
    ("2019-10-01T00:00:00Z", T0),
    ("2019-10-01T00:00:00z", T0),
    ("2019-10-01T02:00:00+02:00", T0),
    ("2019-10-01T03:00:00+0300", T0),
    ("2019-09-30T22:00:00-02:00", T0),
    ("2019-10-01T00:00:00", T0),
    ("2019-10-01 00:00:00", T0),
    ("2019-10-01 00:00:00 UTC", T0),
    ("2019-10-01T00:00:00.123Z", T0 + 123),
    ("2019-10-01T00:00:00.123456789Z", T0 + 123),
    ("2019-10-01T00:00:00.5", T0 + 500),
    ("2019-10-01", T0),
    (" 2019-10-01T00:00:00Z ", T0),
    (1569888000, T0),
    (1569888000.25, T0 + 250),
    (T0, T0),
    (float(T0 + 7), T0 + 7),
    ("1569888000", T0),
    ("1569888000123", T0 + 123),
    ("1569888000.5", T0 + 500),
    (0, 0),
    ("2100-12-31T23:59:59.999Z", 4133980799999),
])
def test_parse_ts_ms(value: Any, want: int) -> None:
    assert parse_ts_ms(value) == want
    assert parse_ts_ms(value) == want  # second time from the cache


@pytest.mark.parametrize("value", [
    "2019-13-01", "2019-10-01T25:00:00", "yesterday", "", "  ", True, False, None, [T0],
    {"ts": T0}, "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+01:00", "2101-01-01T00:00:00Z",
    -5, float("nan"), float("inf"), 1e20, "1e400", "2019-W40-1", "20191001T000000",
    "2019-10-01x00:00:00", "1_569_888_000", "٣٣", "2019-10-01T00:00:00+03:00 UTC", "9" * 5000,
])
def test_parse_ts_ms_rejects(value: Any) -> None:
    assert parse_ts_ms(value) is None


def test_ts_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "_CACHE_MAX", 5)
    for i in range(50):
        assert parse_ts_ms(f"2019-10-01T00:00:{i % 60:02d}Z") == T0 + (i % 60) * 1000
    assert len(decode.TS_SEEN) <= 5


def test_ts_normalized_to_iso_millis() -> None:
    e = ok("behaviour", behaviour(ts="2019-10-01 05:30:01.5+05:30"))
    assert e.ts_ms == T0 + 1500 and e.fields["ts"] == "2019-10-01T00:00:01.500Z"
    assert ok("behaviour", behaviour(ts=T0 + 61_001)).fields["ts"] == "2019-10-01T00:01:01.001Z"


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize("obj", [[behaviour()], "x", 1, None, True])
@pytest.mark.parametrize("stream", STREAMS)
def test_not_an_object(stream: str, obj: Any) -> None:
    assert reason(stream, obj) == "not_an_object"


# DESIGN.md, "Event contract v1": the fields each stream lists without `?`, in its order.
REQUIRED = {
    "behaviour": ["event_id", "event_type", "user_id", "ts", "source"],
    "product": ["event_id", "product_id", "op", "ts", "source"],
    "transaction": ["event_id", "order_id", "user_id", "product_id", "quantity", "amount",
                    "status", "ts", "source"],
}


def test_contracts_name_the_required_fields() -> None:
    assert {s: list(c.required) for s, c in CONTRACTS.items()} == REQUIRED


@pytest.mark.parametrize(("stream", "name"),
                         [(s, n) for s, names in REQUIRED.items() for n in names])
def test_missing_field(stream: str, name: str) -> None:
    ev = MAKERS[stream]()
    want = f"missing_field:{name}"
    assert reason(stream, without(ev, name)) == want
    assert reason(stream, {**ev, name: None}) == want
    assert reason(stream, {**ev, name: ""}) == want
    if name not in ("quantity", "amount"):
        assert reason(stream, {**ev, name: "   "}) == want


# Contract v1 (DESIGN.md) lists product_id and query as optional (`?`): a product event without
# its product, a search without its query, stay valid and carry a warning (they used to be
# rejected as missing_field:product_id / missing_field:query).
@pytest.mark.parametrize("et", ["view", "click", "cart", "remove_from_cart", "fav", "purchase"])
def test_well_known_types_without_product_are_valid_and_warned(et: str) -> None:
    for ev in (without(behaviour(event_type=et.upper()), "product_id"), behaviour(event_type=et, product_id=" "),
               behaviour(event_type=et, product_id=None)):
        e = ok("behaviour", ev)
        assert (e.kind, e.product_id, e.warnings) == (et, "", (NO_PRODUCT,))
    assert ok("behaviour", behaviour(event_type=et)).warnings == ()


@pytest.mark.parametrize("q", [None, "", "  ", "absent"])
def test_search_without_query_is_valid_and_warned(q: Any) -> None:
    ev = without(behaviour(event_type="search", query=q), "product_id")
    if q == "absent":
        ev = without(ev, "query")
    e = ok("behaviour", ev)
    assert (e.kind, e.warnings) == ("search", (NO_QUERY,))


def test_warn_rules_apply_to_their_kinds_only() -> None:
    # A search naming a product is fine; a view carrying a query too; a search is no product event.
    assert ok("behaviour", behaviour(event_type="search", query="kettle")).warnings == ()
    assert ok("behaviour", behaviour(query="kettle")).warnings == ()
    assert ok("behaviour", without(behaviour(event_type="search"), "product_id")).warnings == (NO_QUERY,)
    # A warning never hides a rejection: a bad type of the optional field is still invalid.
    assert reason("behaviour", without(behaviour(event_type="search", query=5), "product_id")) == "invalid_type:query"
    assert reason("behaviour", behaviour(product_id=[7])) == "invalid_type:product_id"


@pytest.mark.parametrize("bad", [True, False, 1.5, float("nan"), float("inf"), [1], {"a": 1}])
@pytest.mark.parametrize(("stream", "name"), [
    ("behaviour", "event_id"), ("behaviour", "user_id"), ("behaviour", "product_id"),
    ("behaviour", "session_id"), ("product", "product_id"), ("transaction", "order_id"),
    ("transaction", "user_id"), ("transaction", "product_id"), ("transaction", "event_id"),
])
def test_invalid_id_type(stream: str, name: str, bad: Any) -> None:
    assert reason(stream, MAKERS[stream](**{name: bad})) == f"invalid_type:{name}"


@pytest.mark.parametrize(("stream", "name", "bad"), [
    ("behaviour", "source", 3), ("product", "source", ["web"]), ("transaction", "source", True),
    ("behaviour", "event_type", 1), ("product", "op", True), ("transaction", "status", 2),
    ("behaviour", "query", 5),
    ("product", "title", 5), ("product", "category", ["a"]), ("product", "brand", {"b": 1}),
    ("product", "currency", 1.0), ("transaction", "currency", False),
])
def test_invalid_type_other(stream: str, name: str, bad: Any) -> None:
    assert reason(stream, MAKERS[stream](**{name: bad})) == f"invalid_type:{name}"


@pytest.mark.parametrize("value", ["2019-13-01", "yesterday", True, -1, "1969-12-31", [T0]])
@pytest.mark.parametrize("stream", STREAMS)
def test_invalid_ts(stream: str, value: Any) -> None:
    r = normalize(CONTRACTS[stream], MAKERS[stream](ts=value))
    assert isinstance(r, Rejected) and r.reason == "invalid_ts"
    assert "'ts'" in r.detail


@pytest.mark.parametrize(("stream", "name", "bad"), [
    ("behaviour", "event_type", "View Page"), ("behaviour", "event_type", "1st"),
    ("behaviour", "event_type", "a" * 41), ("behaviour", "event_type", "vïew"),
    ("behaviour", "event_type", "add-to-cart"),
    ("product", "op", "update"), ("product", "op", "ups ert"),
    ("product", "price", -0.01), ("product", "price", "abc"), ("product", "price", True),
    ("product", "price", float("nan")), ("product", "price", float("inf")),
    ("product", "price", "inf"), ("product", "price", [1]), ("product", "price", "1_0"),
    ("product", "stock", -1), ("product", "stock", 1.5), ("product", "stock", "2.5"),
    ("product", "stock", True), ("product", "stock", "many"),
    ("transaction", "quantity", 0), ("transaction", "quantity", -2),
    ("transaction", "quantity", 1.5), ("transaction", "quantity", "x"),
    ("transaction", "quantity", True), ("transaction", "quantity", "9" * 5000),
    ("transaction", "amount", -1), ("transaction", "amount", "x"),
    ("transaction", "amount", False), ("transaction", "amount", "1" * 400),
    ("transaction", "status", "lost"), ("transaction", "status", "paid!"),
])
def test_invalid_value(stream: str, name: str, bad: Any) -> None:
    r = normalize(CONTRACTS[stream], MAKERS[stream](**{name: bad}))
    assert isinstance(r, Rejected) and r.reason == f"invalid_value:{name}", r
    assert name in r.detail


def test_unknown_extra_fields_never_reject() -> None:
    weird = {"": None, "nested": {"deep": [{"x": float("nan")}]}, "ts2": "garbage", "n": True}
    for stream in STREAMS:
        e = ok(stream, MAKERS[stream](**weird))
        assert all(e.fields[k] is v for k, v in weird.items())


def test_a_stream_without_a_contract_is_judged_schemaless() -> None:
    # It used to be a programming error (ValueError); a stream without a contract now has
    # the schemaless one: any object is valid.
    c = ContractBook(None).get("clicks")
    assert c.schemaless and c.stream == "clicks" and "clicks" not in CONTRACTS
    e = normalize(c, {"whatever": [1], "user_id": 42})
    assert isinstance(e, Event) and e.user_id == "42" and e.fields == {"whatever": [1], "user_id": 42}
    assert ok("behaviour", behaviour()).kind == "view"  # the shipped ones are unaffected


# ------------------------------------------------------------------ decoding


def test_decode_single_object() -> None:
    raw = orjson.dumps(behaviour())
    assert decode_message(raw) == [Item(behaviour(), raw, None)]


@pytest.mark.parametrize("value", [None, b"", b"   ", b"\n\r\n  \n"])
def test_decode_empty(value: bytes | None) -> None:
    [item] = decode_message(value)
    assert item.obj is None and item.error is not None
    assert item.error.reason == "empty_message"


@pytest.mark.parametrize("value", [b"{", b"\xff\xfe{}", b'{"a": "\xff"}', b"nope",
                                   b'{"a": 1} x', b"\xef\xbb\xbf{}"])
def test_decode_invalid_json(value: bytes) -> None:
    [item] = decode_message(value)
    assert item.obj is None and item.raw == value
    assert item.error is not None and item.error.reason == "invalid_json"


def test_decode_null_is_not_an_object() -> None:
    [item] = decode_message(b"null")
    assert item.obj is None and item.error == decode._NULL
    assert [i.error for i in decode_message(b'[null, {"a": 1}]')] == [decode._NULL, None]


def test_decode_array_envelope() -> None:
    evs = [behaviour(event_id=i) for i in range(3)]
    items = decode_message(orjson.dumps(evs))
    assert [i.obj for i in items] == evs
    assert [orjson.loads(item_bytes(i)) for i in items] == evs
    assert all(i.error is None for i in items)
    assert decode_message(b"[]") == []
    assert decode_message(b" [ ] ") == []


def test_decode_ndjson_bad_line_loses_only_itself() -> None:
    lines = [orjson.dumps(behaviour(event_id=1)), b"{broken", b"",
             orjson.dumps(behaviour(event_id=2)) + b"\r", b"\xff\xff", b"[1, 2]", b"   "]
    items = decode_message(b"\n".join(lines) + b"\n")
    assert [i.error.reason if i.error else None for i in items] == \
        [None, "invalid_json", None, "invalid_json", None]
    assert [items[0].obj, items[2].obj] == [behaviour(event_id=1), behaviour(event_id=2)]
    assert items[1].raw == b"{broken" and items[2].raw == lines[3].strip()
    assert items[4].obj == [1, 2]  # an NDJSON line is one value, never a nested envelope


def test_decode_deep_nesting_never_raises() -> None:
    deep = b"[" + b"[" * 500 + b"]" * 500 + b"]"  # orjson loads it but cannot dump it
    [item] = decode_message(deep)
    assert item.error is None and orjson.loads(deep) == [item.obj]
    assert item_bytes(item).startswith(b"[[")


# ------------------------------------------------------------------ properties

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KNOWN = frozenset({"event_id", "event_type", "user_id", "product_id", "session_id", "query",
                    "ts", "source"})

int_ids = st.integers(min_value=-(2**63), max_value=2**64 - 1)
str_ids = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
ids = st.one_of(int_ids, str_ids)
event_types = st.one_of(
    st.sampled_from(["view", "click", "cart", "remove_from_cart", "fav", "purchase", "search"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,39}", fullmatch=True),
).flatmap(lambda et: st.sampled_from([et, et.upper(), f" {et} "]))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m)))
datetimes = st.datetimes(min_value=datetime(1971, 1, 1),  # noqa: DTZ001 (hypothesis wants naive)
                         max_value=datetime(2099, 12, 31),  # noqa: DTZ001
                         timezones=st.none() | st.just(UTC) | offsets)  # type: ignore[arg-type]


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[Any, int]:
    """(ts as sent, expected epoch ms)"""
    kind = draw(st.sampled_from(["ms", "s", "ms_str", "iso"]))
    if kind == "ms":
        ms = draw(st.integers(min_value=10**11, max_value=4133980799999))
        return ms, ms
    if kind == "s":
        s = draw(st.integers(min_value=0, max_value=4133980799))
        return s, s * 1000
    if kind == "ms_str":
        ms = draw(st.integers(min_value=10**11, max_value=4133980799999))
        return str(ms), ms
    dt = draw(datetimes)
    text = dt.isoformat(sep=draw(st.sampled_from("T ")),
                        timespec=draw(st.sampled_from(["auto", "seconds", "milliseconds"])))
    if dt.tzinfo is UTC and draw(st.booleans()):
        text = text.removesuffix("+00:00") + "Z"
    aware = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if "." not in text:
        aware = aware.replace(microsecond=0)
    return text, (aware - _EPOCH) // timedelta(milliseconds=1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)
extras = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in _KNOWN), json_values,
                         max_size=4)


@st.composite
def behaviour_events(draw: st.DrawFn, json_safe: bool = False) -> tuple[dict[str, Any], int]:
    idv = st.one_of(st.integers(-(2**63), 2**63 - 1), str_ids) if json_safe else ids
    ts, ms = draw(timestamps())
    et = draw(event_types)
    ev: dict[str, Any] = draw(extras)
    ev.update(event_id=draw(idv), event_type=et, user_id=draw(idv), ts=ts,
              source=draw(str_ids))
    if et.strip().lower() == "search":
        ev["query"] = draw(str_ids)
    if et.strip().lower() != "search" or draw(st.booleans()):
        ev["product_id"] = draw(idv)
    if draw(st.booleans()):
        ev["session_id"] = draw(idv)
    return ev, ms


def _as_str(v: Any) -> str:
    return v.strip() if isinstance(v, str) else str(v)


@settings(max_examples=300)
@given(behaviour_events())
def test_prop_valid_behaviour_round_trips(case: tuple[dict[str, Any], int]) -> None:
    ev, ms = case
    e = normalize(BEHAVIOUR, ev)
    assert isinstance(e, Event), (e, ev)
    assert e.warnings == ()  # product events name their product, searches their query
    assert e.event_id == _as_str(ev["event_id"]) and e.user_id == _as_str(ev["user_id"])
    assert e.product_id == (_as_str(ev["product_id"]) if "product_id" in ev else "")
    assert e.kind == ev["event_type"].strip().lower() and e.source == ev["source"].strip()
    assert e.ts_ms == ms
    assert e.fields["ts"] == datetime.fromtimestamp(ms / 1000, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    for k, v in ev.items():
        if k not in _KNOWN:
            assert e.fields[k] is v  # extras kept untouched
    assert set(e.fields) == set(ev)


def _check_items(items: list[Item]) -> None:
    assert isinstance(items, list)
    for it in items:
        assert isinstance(it, Item) and isinstance(item_bytes(it), bytes)
        assert (it.obj is None) != (it.error is None)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_prop_decode_never_raises_on_bytes(value: bytes) -> None:
    _check_items(decode_message(value))


@given(st.lists(st.one_of(st.binary(max_size=30), json_values.map(orjson.dumps)), max_size=6))
def test_prop_decode_never_raises_on_line_soup(parts: list[bytes]) -> None:
    _check_items(decode_message(b"\n".join(parts)))


@given(st.lists(behaviour_events(json_safe=True), max_size=20), st.booleans())
def test_prop_envelope_keeps_count_and_order(cases: list[tuple[dict[str, Any], int]],
                                             ndjson: bool) -> None:
    evs = [ev for ev, _ in cases]
    if ndjson:
        value = b"\n".join(orjson.dumps(ev) for ev in evs) + b"\n"
        if not evs:
            return  # an empty NDJSON value is an empty message, covered above
    else:
        value = orjson.dumps(evs)
    items = decode_message(value)
    assert len(items) == len(evs)
    for it, ev in zip(items, evs, strict=True):
        assert it.error is None and it.obj == ev and orjson.loads(item_bytes(it)) == ev
        e = normalize(BEHAVIOUR, it.obj)
        assert isinstance(e, Event) and e.event_id == _as_str(ev["event_id"])


def test_floats_are_finite_in_fields() -> None:
    e = ok("product", product(price="1e3", stock="7.0"))
    assert e.fields["price"] == 1000.0 and e.fields["stock"] == 7
    assert math.isfinite(e.fields["price"])


# ------------------------------------------------------------------ the shipped files are DESIGN.md's contract v1

# DESIGN.md, "Event contract v1", written out: per stream its required fields (no `?`), its
# optional ones (`?`), the field whose values name sub-assets with the values DESIGN.md lists
# (closed: no other value is valid; open: any lower-case name matching the pattern is), the
# id fields (numbers or strings, stored as strings) and the key producers partition by.
DESIGN_V1: dict[str, dict[str, Any]] = {
    "behaviour": {
        "required": ["event_id", "event_type", "user_id", "ts", "source"],
        "optional": {"product_id", "session_id", "query"},
        "kind": "event_type",
        "kinds": {"view", "click", "cart", "remove_from_cart", "fav", "purchase", "search"},
        "closed": False,
        "ids": {"event_id", "user_id", "product_id", "session_id"},
        "key": "user_id",
    },
    "product": {
        "required": ["event_id", "product_id", "op", "ts", "source"],
        "optional": {"title", "category", "brand", "price", "currency", "stock"},
        "kind": "op",
        "kinds": {"upsert", "delete"},
        "closed": True,
        "ids": {"event_id", "product_id"},
        "key": "product_id",
    },
    "transaction": {
        "required": ["event_id", "order_id", "user_id", "product_id", "quantity", "amount", "status", "ts",
                     "source"],
        "optional": {"currency"},
        "kind": "status",
        "kinds": {"created", "paid", "shipped", "delivered", "canceled", "refunded"},
        "closed": True,
        "ids": {"event_id", "order_id", "user_id", "product_id"},
        "key": "order_id",
    },
}
EVENT_TYPE_PATTERN = "[a-z][a-z0-9_]{0,39}"  # README: event_type is open, ^[a-z][a-z0-9_]{0,39}$


def test_shipped_contracts_are_the_three_streams_of_v1() -> None:
    assert set(CONTRACTS) == set(DESIGN_V1)
    for c in CONTRACTS.values():
        assert c.version == "1" and not c.schemaless and c.origin.endswith(f"{c.stream}.toml")


@pytest.mark.parametrize("stream", DESIGN_V1)
def test_shipped_contract_says_what_design_says(stream: str) -> None:
    c, want = CONTRACTS[stream], DESIGN_V1[stream]
    assert list(c.required) == want["required"]
    assert c.names - set(c.required) == want["optional"]
    assert c.names == {*want["required"], *want["optional"]}
    assert c.kind_field == want["kind"] and c.key == want["key"]
    assert {f.name for f in c.fields if f.type == "id"} == want["ids"]
    assert c.by_name["ts"].type == "timestamp" and c.role("time") == "ts"
    assert c.role("event_id") == "event_id" and c.role("source") == "source"
    assert all(f.severity == "reject" for f in c.fields)  # a field's mistakes reject; only rules warn
    kind = c.by_name[want["kind"]]
    assert (kind.type, kind.required, kind.case) == ("string", True, "lower")
    if want["closed"]:
        assert kind.enum == want["kinds"] and not kind.pattern
    else:
        assert kind.enum is None and kind.pattern == EVENT_TYPE_PATTERN


def test_shipped_value_rules_are_designs() -> None:
    """README's table: on upsert price >= 0, stock an integer >= 0, title/category/brand/currency
    strings; quantity an integer > 0, amount >= 0; behaviour's product events should name the
    product and searches their query (warned, not rejected: both are optional in DESIGN.md)."""
    def bounds(stream: str, name: str) -> tuple[str, float | None, bool, float | None]:
        f = CONTRACTS[stream].by_name[name]
        return f.type, f.min, f.exclusive_min, f.max

    assert bounds("product", "price") == ("number", 0, False, None)
    assert bounds("product", "stock") == ("integer", 0, False, None)
    assert bounds("transaction", "quantity") == ("integer", 0, True, None)
    assert bounds("transaction", "amount") == ("number", 0, False, None)
    upsert = (("op", frozenset({"upsert"})),)
    product = CONTRACTS["product"]
    assert {f.name: (f.type, f.when) for f in product.fields if f.when} == {
        "title": ("string", upsert), "category": ("string", upsert), "brand": ("string", upsert),
        "currency": ("string", upsert), "price": ("number", upsert), "stock": ("integer", upsert)}
    assert product.rules == () and CONTRACTS["transaction"].rules == ()
    assert {(r.name, r.when, r.require, r.severity) for r in BEHAVIOUR.rules} == {
        ("product_events_name_the_product",
         (("event_type", frozenset({"view", "click", "cart", "remove_from_cart", "fav", "purchase"})),),
         ("product_id",), "warn"),
        ("searches_carry_the_query", (("event_type", frozenset({"search"})),), ("query",), "warn"),
    }


@pytest.mark.parametrize("stream", STREAMS)
def test_every_contract_field_is_checked_and_no_other(stream: str) -> None:
    c = CONTRACTS[stream]
    ev = MAKERS[stream]()
    assert set(ev) <= c.names and set(c.required) <= set(ev)
    garbage = {"not": ["a", "value"]}
    checked = {name for name in (*c.names, "extra")
               if isinstance(normalize(c, {**ev, name: garbage}), Rejected)}
    assert checked == c.names


@pytest.mark.parametrize("stream", STREAMS)
def test_optional_fields_may_be_absent(stream: str) -> None:
    c = CONTRACTS[stream]
    for name in c.names - set(c.required):
        e = ok(stream, without(MAKERS[stream](), name))
        # behaviour's view without product_id is warned (product_events_name_the_product)
        assert e.warnings == ((NO_PRODUCT,) if (stream, name) == ("behaviour", "product_id") else ()), name


@pytest.mark.parametrize("stream", STREAMS)
def test_ids_are_stored_as_strings(stream: str) -> None:
    c = CONTRACTS[stream]
    ids = DESIGN_V1[stream]["ids"]
    assert c.key in ids
    for name in ids:
        assert ok(stream, MAKERS[stream](**{name: 12})).fields[name] == "12"
        assert ok(stream, MAKERS[stream](**{name: " a7 "})).fields[name] == "a7"


@pytest.mark.parametrize("stream", STREAMS)
def test_kinds_are_the_values_of_the_sub_asset_key(stream: str) -> None:
    c, want = CONTRACTS[stream], DESIGN_V1[stream]
    key = c.kind_field
    extra = {"query": "kettle"} if stream == "behaviour" else {}   # a search carries one
    for kind in want["kinds"]:
        e = ok(stream, MAKERS[stream](**{key: kind.upper(), **extra}))
        assert e.kind == e.fields[key] == kind and e.warnings == ()
    other = normalize(c, MAKERS[stream](**{key: "restocked"}))
    if want["closed"]:
        assert isinstance(other, Rejected) and other.reason == f"invalid_value:{key}"
    else:
        assert isinstance(other, Event) and other.kind == "restocked" and other.warnings == ()


def test_replay_keys_messages_as_the_contract_says() -> None:
    assert sources.STREAMS == STREAMS
    assert {name: c.key for name, c in CONTRACTS.items()} == sources.KEY_FIELD


def test_store_names_sub_assets_by_the_contracts_key(store: Store) -> None:
    """The prefixed_assets view (migration 012) names sub-assets by each row's kind_key: the
    worker writes its contract's kind field; rows stored before contracts were files get
    the key contract v1 named from the column's DEFAULT (migration 008). Both must name them as
    the shipped contracts do; a schemaless stream has no sub-assets by kind."""
    now = datetime.now(UTC)  # times of now, like the other tests sharing this store (see test_migrations_index)
    rows = [[name, kind, "src", now, now] for name, want in DESIGN_V1.items() for kind in want["kinds"]]
    want = {*CONTRACTS, *(f"{s}/source=src" for s in CONTRACTS),
            *(CONTRACTS[s].kind_asset(kind) for s, w in DESIGN_V1.items() for kind in w["kinds"])}
    columns = ["stream", "topic", "kind", "source", "ts", "ingest_ts"]
    for written in (False, True):
        prefix = f"c{uuid.uuid4().hex[:10]}."
        if written:
            keyed = [[s, prefix + s, kind, src, ts, its, CONTRACTS[s].kind_field] for s, kind, src, ts, its in rows]
            keyed.append(["clicks", prefix + "clicks", "", "src", now, now, ""])
            store.insert_rows("ingest_log", keyed, [*columns, "kind_key"])
        else:
            store.insert_rows("ingest_log", [[s, prefix + s, *rest] for s, *rest in rows], columns)
        got = {a for a, in store.rows("SELECT DISTINCT asset FROM prefixed_assets(prefix = {p:String})",
                                      {"p": prefix})}
        assert got == (want | {"clicks", "clicks/source=src"} if written else want)


@pytest.mark.parametrize(("source", "streams"), [
    ("rees46", {"behaviour": 17435, "product": 6493, "transaction": 214}),
    ("olist", {"product": 751, "transaction": 400}),
])
def test_the_real_data_is_valid_under_the_shipped_contracts(source: str, streams: dict[str, int]) -> None:
    """The shipped REES46 and olist exports, as the replay turns them into contract v1 events:
    none rejected, none warned (every product event names its product)."""
    events = sources.load_events(source)
    verdicts = [normalize(CONTRACTS[e.stream], e.event) for e in events]
    assert {s: sum(e.stream == s for e in events) for s in streams} == streams
    assert [v for v in verdicts if isinstance(v, Rejected)] == []
    assert [v.warnings for v in verdicts if isinstance(v, Event) and v.warnings] == []
    # ... and the same clickstream without products or query texts is warned, never rejected
    views = [e.event for e in events if e.stream == "behaviour"][:1000]
    bare = [normalize(CONTRACTS["behaviour"], {k: v for k, v in ev.items() if k != "product_id"}) for ev in views]
    assert all(isinstance(v, Event) for v in bare)
    # (REES46 logs views, carts, removals and purchases: each should name its product)
    assert {v.warnings for v in bare if isinstance(v, Event)} == (
        {("missing_field:product_id@product_events_name_the_product",)} if views else set())
