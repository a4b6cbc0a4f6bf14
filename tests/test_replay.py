"""Replay tool: source mappings, messages and faults, produce() argument handling.

Fast and broker-free: produce() runs against a fake Producer here; the real broker
round trip is tested elsewhere.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake import sources
from stocktake.settings import Settings
from stocktake.sources import DATA_DIR, OLIST_FINAL_STATUS, ReplayEvent, load_events, olist_local_to_utc
from stocktake.tools import replay
from stocktake.tools.replay import (
    MALFORMED_VARIANTS,
    TOPICS,
    Message,
    Pacer,
    parse_faults,
    produce,
    to_messages,
)

STREAM_OF_TOPIC = {topic: stream for stream, topic in TOPICS.items()}

# Contract v1, as far as these tests need it: required fields and enums per stream.
REQUIRED = {
    "behaviour": ("event_id", "event_type", "user_id", "ts", "source"),
    "product": ("event_id", "product_id", "op", "ts", "source"),
    "transaction": ("event_id", "order_id", "user_id", "product_id", "quantity", "amount",
                    "status", "ts", "source"),
}
ENUMS = {
    "behaviour": ("event_type", {"view", "click", "cart", "remove_from_cart", "fav",
                                 "purchase", "search"}),
    "product": ("op", {"upsert", "delete"}),
    "transaction": ("status", {"created", "paid", "shipped", "delivered", "canceled",
                               "refunded"}),
}


def valid_event(stream: str, event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    if any(event.get(f) in (None, "") for f in REQUIRED[stream]):
        return False
    field, allowed = ENUMS[stream]
    if event[field] not in allowed:
        return False
    ts = event["ts"]
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return True
    try:
        datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return False
    return True


def judge(msg: Message) -> list[bool]:
    """One verdict per item in a message value, as contract v1 judges them."""
    stream = STREAM_OF_TOPIC[msg.topic]
    try:
        obj = orjson.loads(msg.value.decode("utf-8"))
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return [False]
    items = obj if isinstance(obj, list) else [obj]
    return [valid_event(stream, item) for item in items]


def read_csv(name: str) -> list[dict[str, str]]:
    with gzip.open(DATA_DIR / f"{name}.gz", "rt", encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def rees46() -> list[ReplayEvent]:
    return load_events("rees46")


@pytest.fixture(scope="module")
def olist() -> list[ReplayEvent]:
    return load_events("olist")


# -------------------------------------------------------------------- rees46


def test_rees46_counts_match_the_csv(rees46: list[ReplayEvent]) -> None:
    rows = read_csv("rees46/2019-Oct-sample.csv")
    last: dict[str, float] = {}
    changes = 0
    for r in rows:
        if last.get(r["product_id"]) != float(r["price"]):
            last[r["product_id"]] = float(r["price"])
            changes += 1
    counts = Counter(e.stream for e in rees46)
    assert counts["behaviour"] == len(rows) == 17_435
    assert counts["transaction"] == sum(r["event_type"] == "purchase" for r in rows) == 214
    assert counts["product"] == changes
    # Blank category_code/brand stay visible as null values, not missing keys.
    behaviour = [e.event for e in rees46 if e.stream == "behaviour"]
    assert sum(e["category_code"] is None for e in behaviour) == sum(
        not r["category_code"] for r in rows)
    assert sum(e["brand"] is None for e in behaviour) == sum(not r["brand"] for r in rows)


def test_rees46_ids_are_deterministic_and_unique(rees46: list[ReplayEvent]) -> None:
    again = load_events("rees46")
    assert again == rees46
    ids = [e.event["event_id"] for e in rees46]
    assert len(set(ids)) == len(ids)


def test_rees46_events_are_sorted_and_in_contract(rees46: list[ReplayEvent]) -> None:
    ts = [e.event["ts"] for e in rees46]
    assert ts == sorted(ts)
    assert all(t.endswith("Z") for t in ts)
    for e in rees46:
        assert valid_event(e.stream, e.event), e
        assert e.key == e.event[{"behaviour": "user_id", "product": "product_id",
                                 "transaction": "order_id"}[e.stream]]
    # Titles are built from brand + category leaf + id.
    titles = {e.event["product_id"]: e.event["title"] for e in rees46 if e.stream == "product"}
    assert all(t.endswith(pid) for pid, t in titles.items())


def test_rees46_catalog_announces_products_before_use(rees46: list[ReplayEvent]) -> None:
    announced: set[str] = set()
    for e in rees46:
        if e.stream == "product":
            announced.add(e.event["product_id"])
        else:
            assert e.event["product_id"] in announced


# --------------------------------------------------------------------- olist


def test_olist_counts_and_skips(olist: list[ReplayEvent]) -> None:
    orders = {r["order_id"]: r for r in read_csv("olist/olist_orders_dataset.csv")}
    items = read_csv("olist/olist_order_items_dataset.csv")
    products = read_csv("olist/olist_products_dataset.csv")
    # Skipped: items whose order is not in the orders file (no customer, time or
    # status); the second event of orders whose final status is "created" or unknown.
    known = [i for i in items if i["order_id"] in orders]
    no_final = [i for i in known if OLIST_FINAL_STATUS.get(orders[i["order_id"]]["order_status"])
                is None]
    counts = Counter(e.stream for e in olist)
    assert counts["transaction"] == 2 * len(known) - len(no_final)
    assert counts["product"] == len(products)
    assert counts["behaviour"] == 0
    for e in olist:
        assert valid_event(e.stream, e.event), e
        ts = datetime.fromisoformat(e.event["ts"])
        assert e.event["ts"].endswith("Z") and ts.utcoffset() == timedelta(0)
    ts_list = [e.event["ts"] for e in olist]
    assert ts_list == sorted(ts_list)
    assert load_events("olist") == olist


def test_olist_times_are_converted_from_sao_paulo(olist: list[ReplayEvent]) -> None:
    # Brazil kept DST until 2019: UTC-2 in January 2017, UTC-3 in July.
    assert olist_local_to_utc("2017-01-05 16:05:07") == datetime(2017, 1, 5, 18, 5, 7, tzinfo=UTC)
    assert olist_local_to_utc("2017-07-05 16:05:07") == datetime(2017, 7, 5, 19, 5, 7, tzinfo=UTC)
    by_id = {e.event["event_id"]: e.event for e in olist}
    created = by_id["oli-t-09f58c00f941827ab206de7796785e44-1-created"]
    delivered = by_id["oli-t-09f58c00f941827ab206de7796785e44-1-delivered"]
    assert created["ts"] == "2017-01-05T18:05:07Z"  # purchase 16:05:07 local
    assert delivered["ts"] == "2017-01-16T17:43:31Z"  # delivered to customer 15:43:31 local
    assert created["currency"] == "BRL" and isinstance(created["amount"], float)


def test_olist_products(olist: list[ReplayEvent]) -> None:
    products = [e.event for e in olist if e.stream == "product"]
    assert all("title" not in p and p["op"] == "upsert" for p in products)
    assert all(p["weight_g"] is None or isinstance(p["weight_g"], int) for p in products)
    categories = {p["category"] for p in products}
    assert "perfumery" in categories and None in categories  # blank category -> null
    # A product sold in the slice is announced no later than its first sale.
    first_sale: dict[str, str] = {}
    for e in olist:
        if e.stream == "transaction":
            first_sale.setdefault(e.event["product_id"], e.event["ts"])
    for p in products:
        if p["product_id"] in first_sale:
            assert p["ts"] <= first_sale[p["product_id"]]
            assert isinstance(p["price"], float)


# ------------------------------------------------------------- contract files


def test_contract_jsonl_and_csv_files(tmp_path: Path) -> None:
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(b"\n".join([
        orjson.dumps({"stream": "product", "event_id": "p1", "product_id": 7, "op": "upsert",
                      "ts": "2024-01-01T00:00:05", "source": "t"}),
        b"",
        orjson.dumps({"stream": "behaviour", "event_id": "b1", "event_type": "view",
                      "user_id": "u1", "ts": 1704067201000, "source": "t"}),  # epoch millis
    ]))
    events = load_events(str(jsonl))
    assert [e.event["event_id"] for e in events] == ["b1", "p1"]  # sorted by time
    assert [e.key for e in events] == ["u1", "7"] and "stream" not in events[0].event

    named = tmp_path / "behaviour-day1.ndjson"
    named.write_text('{"event_id": "b2", "event_type": "cart", "user_id": 5, "ts": 1, '
                     '"source": "t"}\n')
    assert [(e.stream, e.key) for e in load_events(str(named))] == [("behaviour", "5")]

    table = tmp_path / "events.csv"
    table.write_text("stream,event_id,order_id,user_id,product_id,quantity,amount,status,ts,"
                     "source,event_type\n"
                     "transaction,t1,o1,u1,p1,2,9.5,paid,2024-01-01T00:00:00Z,t,\n"
                     "behaviour,b1,,u1,p1,,,,2024-01-01T00:00:00Z,t,view\n")
    rows = load_events(str(table))
    assert rows[0].event == {"event_id": "t1", "order_id": "o1", "user_id": "u1",
                             "product_id": "p1", "quantity": 2, "amount": 9.5,
                             "status": "paid", "ts": "2024-01-01T00:00:00Z", "source": "t"}
    assert rows[1].stream == "behaviour" and "order_id" not in rows[1].event

    # a file of another stream: its name up to the first dot names it (any stream, #13)
    other = tmp_path / "impressions.jsonl"
    other.write_text('{"event_id": "x", "ts": 1}\n{"stream": "search.queries", "q": "kettle"}\n')
    assert [(e.stream, e.key) for e in load_events(str(other))] == [("impressions", None), ("search.queries", None)]
    anonymous = tmp_path / "my events!.jsonl"
    anonymous.write_text('{"event_id": "x", "ts": 1}\n')
    with pytest.raises(ValueError, match="no 'stream'"):
        load_events(str(anonymous))
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"stream": "a/b"}\n')
    with pytest.raises(ValueError, match="not a stream name"):
        load_events(str(bad))


@pytest.mark.parametrize("source", ["kaggle", "events.parquet", "/nonexistent/x.jsonl"])
def test_unknown_source(source: str) -> None:
    with pytest.raises(ValueError, match="source"):
        load_events(source)


# ------------------------------------------------------------------- messages

FAULTS = {"duplicates": 0.03, "malformed": 0.01}


def test_faults_are_near_expectation_and_reproducible(rees46: list[ReplayEvent]) -> None:
    events = rees46[:5000]
    msgs = list(to_messages(events, faults=FAULTS, seed=7))
    kinds = Counter(m.kind for m in msgs)
    assert 100 <= kinds["duplicate"] <= 200  # expected 150
    assert 25 <= kinds["malformed"] <= 80  # expected 50
    assert kinds["event"] == 5000
    assert sum(m.events for m in msgs if m.kind == "event") == len(events)
    assert msgs == list(to_messages(events, faults=FAULTS, seed=7))
    assert msgs != list(to_messages(events, faults=FAULTS, seed=8))
    # Without faults: exactly the events, one per message, in order.
    plain = list(to_messages(events))
    assert [orjson.loads(m.value) for m in plain] == [e.event for e in events]
    assert all(m.key == e.key.encode() for m, e in zip(plain, events, strict=True) if e.key)


def test_duplicates_copy_the_message_before_them(rees46: list[ReplayEvent]) -> None:
    msgs = list(to_messages(rees46[:3000], faults={"duplicates": 0.2}, seed=1))
    for prev, msg in itertools.pairwise(msgs):
        if msg.kind == "duplicate":
            assert (prev.topic, prev.key, prev.value, prev.events) == (
                msg.topic, msg.key, msg.value, msg.events)


def test_malformed_messages_each_fail_as_one_item(rees46: list[ReplayEvent]) -> None:
    msgs = list(to_messages(rees46[:5000], faults={"malformed": 0.05}, seed=3))
    bad = [m for m in msgs if m.kind == "malformed"]
    assert len(bad) >= len(MALFORMED_VARIANTS)
    assert all(judge(m) == [False] and m.events == 0 for m in bad)
    assert all(judge(m) == [True] for m in msgs if m.kind == "event")
    assert {m.value for m in bad[:5]} >= {b'"just a string"', b"\xff\xfe"}
    ids = []
    for m in bad:
        try:
            ids.append(orjson.loads(m.value)["event_id"])
        except (orjson.JSONDecodeError, TypeError):
            pass
    assert len(ids) >= 2 and len(set(ids)) == len(ids)


def test_envelopes(rees46: list[ReplayEvent]) -> None:
    msgs = list(to_messages(rees46, envelope=100))
    per_stream = Counter(e.stream for e in rees46)
    assert Counter(STREAM_OF_TOPIC[m.topic] for m in msgs) == {
        s: math.ceil(n / 100) for s, n in per_stream.items()}
    unpacked: dict[str, list[dict[str, Any]]] = {s: [] for s in TOPICS}
    for m in msgs:
        batch = orjson.loads(m.value)
        stream = STREAM_OF_TOPIC[m.topic]
        assert m.kind == "envelope" and isinstance(batch, list)
        assert 1 <= len(batch) <= 100 and m.events == len(batch)
        assert all(valid_event(stream, ev) for ev in batch)
        assert m.key is not None
        unpacked[stream].extend(batch)
    for s in TOPICS:  # every event once, in order, in its own stream's envelopes
        assert unpacked[s] == [e.event for e in rees46 if e.stream == s]


def test_envelope_duplicates_repeat_the_whole_envelope(rees46: list[ReplayEvent]) -> None:
    msgs = list(to_messages(rees46, envelope=50, faults={"duplicates": 0.5}, seed=2))
    dups = [m for m in msgs if m.kind == "duplicate"]
    assert dups and all(m.events > 1 for m in dups)
    assert sum(m.events for m in msgs if m.kind == "envelope") == len(rees46)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(list(TOPICS)), max_size=60), st.integers(1, 7))
def test_envelopes_keep_every_event(streams: list[str], size: int) -> None:
    events = [ReplayEvent(s, None if i % 5 == 0 else f"k{i}", {"event_id": str(i)})
              for i, s in enumerate(streams)]
    msgs = list(to_messages(events, envelope=size))
    seen = []
    for m in msgs:
        body = orjson.loads(m.value)
        seen.extend(body if isinstance(body, list) else [body])
        assert m.events == (len(body) if isinstance(body, list) else 1) <= size
    assert sorted(int(e["event_id"]) for e in seen) == list(range(len(events)))


@pytest.mark.parametrize("kwargs", [{"envelope": 0}, {"faults": {"dupes": 0.1}},
                                    {"faults": {"malformed": 1.5}}])
def test_to_messages_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        list(to_messages([], **kwargs))


# ----------------------------------------------------------------- parse_faults


def test_parse_faults() -> None:
    assert parse_faults("duplicates=0.03,malformed=0.01") == {"duplicates": 0.03,
                                                              "malformed": 0.01}
    assert parse_faults(" malformed = 1 ") == {"malformed": 1.0}
    assert parse_faults("") == {}


@pytest.mark.parametrize(("spec", "names"), [
    ("reorder=0.1", "reorder"),
    ("duplicates", "duplicates"),
    ("duplicates=abc", "abc"),
    ("duplicates=1.5", "duplicates"),
    ("malformed=-0.1", "malformed"),
    ("malformed=nan", "malformed"),
    ("duplicates=0.1,,malformed=0.1", "''"),
    ("duplicates=0.1,duplicates=0.2", "twice"),
])
def test_parse_faults_errors(spec: str, names: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_faults(spec)
    message = str(info.value)
    assert names in message and "\n" not in message


# ---------------------------------------------------------------------- produce


class FakeProducer:
    """Stands in for confluent_kafka.Producer: records produce() calls."""

    def __init__(self, config: dict[str, Any], fail_on: int | None = None) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.pending: list[Any] = []
        self.fail_on = fail_on

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        self.sent.append((topic, value, key))
        self.pending.append((len(self.sent), topic, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        for n, topic, callback in self.pending:
            msg = type("Msg", (), {"topic": lambda self, t=topic: t})()
            callback("broker said no" if n == self.fail_on else None, msg)
        served, self.pending = len(self.pending), []
        return served

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeProducer]]:
    import confluent_kafka

    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[-1]

    monkeypatch.setattr(confluent_kafka, "Producer", factory)
    yield made


def test_produce_counts_and_progress(rees46: list[ReplayEvent],
                                     fake_producer: list[FakeProducer]) -> None:
    msgs = list(to_messages(rees46[:2500], faults=FAULTS, seed=0))
    seen: list[int] = []
    counts = produce("127.0.0.1:1", msgs, progress=seen.append)
    kinds = Counter(m.kind for m in msgs)
    assert counts == {"messages": len(msgs), "events": sum(m.events for m in msgs),
                      "duplicates": kinds["duplicate"], "malformed": kinds["malformed"]}
    assert seen[:2] == [1000, 2000] and seen[-1] == len(msgs)
    producer = fake_producer[0]
    assert producer.config["enable.idempotence"] is True
    assert producer.config["bootstrap.servers"] == "127.0.0.1:1"
    assert [(t, v, k) for t, v, k in producer.sent] == [(m.topic, m.value, m.key) for m in msgs]


def test_produce_raises_on_delivery_error(rees46: list[ReplayEvent],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", lambda c: FakeProducer(c, fail_on=3))
    with pytest.raises(RuntimeError, match="broker said no"):
        produce("127.0.0.1:1", to_messages(rees46[:10]))


@pytest.mark.parametrize("kwargs", [{"bootstrap": ""}, {"speed": 0}, {"speed": -2.0},
                                    {"speed": float("inf")}, {"speed": "fast"}])
def test_produce_rejects_bad_arguments(kwargs: dict[str, Any],
                                       fake_producer: list[FakeProducer]) -> None:
    args: dict[str, Any] = {"bootstrap": "127.0.0.1:1", **kwargs}
    with pytest.raises(ValueError):
        produce(args.pop("bootstrap"), [], **args)
    assert fake_producer == []  # rejected before any producer is made


def test_pacer_follows_event_time_with_capped_sleeps() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    assert pacer.wait_for(1000.0) == 0.0  # the first message anchors the schedule
    assert pacer.wait_for(1001.0) == pytest.approx(0.1)
    assert pacer.wait_for(None) == 0.0  # malformed: no time, no wait
    assert pacer.wait_for(2001.0) == pytest.approx(replay.MAX_SLEEP_S)  # 100 s gap, capped
    assert pacer.wait_for(2002.0) == pytest.approx(0.1)  # schedule shifted by the cap
    now[0] += 3.0  # producing fell behind: no sleep until caught up
    assert pacer.wait_for(2003.0) == 0.0
    assert slept == pytest.approx([0.1, 5.0, 0.1])


def test_rebase_time_replays_as_live() -> None:
    events = sources.load_events("rees46")[:500]
    first = sources.ts_seconds(events[0].event["ts"])
    last = sources.ts_seconds(events[-1].event["ts"])
    assert first is not None and last is not None
    now = 1_800_000_000.0
    paced = replay.rebase_time(events, now, 60.0)
    times = [sources.ts_seconds(e.event["ts"]) for e in paced]
    assert times[0] == now and times == sorted(times)
    assert abs(times[-1] - (now + (last - first) / 60.0)) < 0.002  # gaps shrink 60-fold (ms precision)
    backfill = replay.rebase_time(events, now, None)
    assert sources.ts_seconds(backfill[-1].event["ts"]) == now
    assert [e.event["event_id"] for e in backfill] == [e.event["event_id"] for e in events]
    assert events[0].event["ts"].startswith("2019-")  # the input is not modified


def test_live_pacer_keeps_every_gap_even_when_sleep_returns_early() -> None:
    """A live (rebased) replay must not run ahead of its event times: no cap on quiet
    gaps, and producer.poll-style sleeps that return early are waited out."""
    now = [0.0]
    slept: list[float] = []

    def early_sleep(s: float) -> None:  # serves a callback and returns after half the time
        slept.append(s)
        now[0] += s / 2

    pacer = Pacer(1.0, clock=lambda: now[0], sleep=early_sleep, max_sleep=None)
    pacer.wait_for(1000.0)
    assert pacer.wait_for(1100.0) == pytest.approx(100.0)  # the whole 100 s quiet gap
    assert now[0] >= 100.0  # and not a moment early
    assert len(slept) > 1  # it kept sleeping after the early return


def _events_at(times: list[float]) -> list[ReplayEvent]:
    def ts(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

    return [sources.make_event("behaviour", {"event_id": f"e{i}", "event_type": "view", "user_id": "u",
                                             "ts": ts(t), "source": "test"}) for i, t in enumerate(times)]


def test_live_start_skips_a_quiet_lead_in() -> None:
    quiet = [i * 60.0 for i in range(100)]                 # one event a minute for 100 minutes
    busy = [6000.0 + i * 0.5 for i in range(2000)]         # then two a second
    assert 6000.0 - 10 * 60.0 < replay.live_start(quiet + busy, 60.0) < 6000.0  # under 10 s of quiet left
    assert replay.live_start(busy, 60.0) == 6000.0          # busy from the first event: no backfill
    assert replay.live_start([5.0], 60.0) == 5.0


def test_rebase_live_backfills_the_lead_in_and_starts_live_where_the_data_is_busy() -> None:
    events = sources.load_events("rees46")
    now = 1_800_000_000.0
    live = replay.rebase_live(events, now, 60.0)
    times = [sources.ts_seconds(e.event["ts"]) for e in live]
    assert all(t is not None for t in times)
    backfill = [t for t in times if t is not None and t < now]
    ahead = [t - now for t in times if t is not None and t >= now]
    assert 1000 < len(backfill) < 4000                    # REES46's quiet first two hours and more
    assert now - min(backfill) < 300                      # the backfill is recent: not judged late
    assert sum(d <= 10 for d in ahead) > 3000             # busy from the first seconds
    assert max(ahead) < 60                                # the whole sample within a minute
    original = [sources.ts_seconds(e.event["ts"]) for e in events]
    gaps = [b - a for a, b in itertools.pairwise(original) if a is not None and b is not None]
    new_gaps = [b - a for a, b in itertools.pairwise(times) if a is not None and b is not None]
    assert new_gaps == pytest.approx([g / 60.0 for g in gaps], abs=0.002)  # gaps shrink 60-fold
    assert replay.rebase_live(events[:500], now, 60.0) == replay.rebase_time(events[:500], now, 60.0)
    assert replay.rebase_live(events, now, None) == replay.rebase_time(events, now, None)


def test_pacer_start_sends_a_backfill_at_once_then_keeps_time() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    pacer = Pacer(1.0, clock=lambda: now[0], sleep=sleep, max_sleep=None, start=1000.0)
    assert pacer.wait_for(900.0) == 0.0 and pacer.wait_for(999.0) == 0.0  # before start: at once
    assert pacer.wait_for(1002.0) == pytest.approx(2.0)
    assert now[0] == pytest.approx(2.0)


def test_play_paces_a_live_replay_on_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[Message], dict[str, Any]]] = []

    def fake_produce(bootstrap: str, messages: Any, **kwargs: Any) -> dict[str, int]:
        calls.append((list(messages), kwargs))
        return {"messages": len(calls[-1][0])}

    monkeypatch.setattr(replay, "produce", fake_produce)
    events = _events_at([i * 60.0 for i in range(100)] + [6000.0 + i * 0.5 for i in range(2000)])
    before = datetime.now(UTC).timestamp()
    replay.play("127.0.0.1:1", events, speed=60.0)
    messages, kwargs = calls[-1]
    assert kwargs["speed"] == 1.0 and kwargs["max_sleep"] is None  # live: every gap kept
    start = kwargs["start_s"]
    assert before <= start <= datetime.now(UTC).timestamp()
    times = [replay.message_time(m) for m in messages]
    assert sum(t is not None and t < start for t in times) > 80  # the lead-in: sent at once
    replay.play("127.0.0.1:1", events, speed=60.0, live=False)
    messages, kwargs = calls[-1]
    assert kwargs["speed"] == 60.0 and "start_s" not in kwargs  # own times, capped gaps
    assert [m.value for m in messages] == [m.value for m in to_messages(events)]


def test_other_streams_are_keyed_by_their_contract(tmp_path: Path) -> None:
    directory = tmp_path / "contracts"
    directory.mkdir()
    (directory / "impressions.toml").write_text(
        'stream = "impressions"\nversion = "1"\nkey = "user_id"\n[fields.user_id]\ntype = "id"\n')
    events = [ReplayEvent("impressions", None, {"user_id": 7}), ReplayEvent("clicks", None, {"user_id": 8}),
              ReplayEvent("behaviour", "u1", {"user_id": "u1"})]
    conf = Settings.from_env({"STOCKTAKE_CONTRACTS": str(directory)})
    assert [e.key for e in replay.key_by_contract(events, conf)] == ["7", None, "u1"]   # clicks: no contract
