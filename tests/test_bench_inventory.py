"""The pure parts of `stocktake bench --inventory`: how the replay is multiplied to N events,
and how its messages go to each deployment's topics. No timing here."""

from __future__ import annotations

from collections import Counter

from stocktake.settings import Settings
from stocktake.sources import ReplayEvent, make_event, ts_seconds
from stocktake.tools import bench_inventory, replay

BASE = [
    make_event("product", {"event_id": "p1", "product_id": "10", "op": "upsert", "price": 5.0,
                           "ts": "2019-10-01T00:00:00Z", "source": "cat"}),
    make_event("behaviour", {"event_id": "b1", "event_type": "view", "user_id": "7", "product_id": "10",
                             "session_id": "s1", "ts": "2019-10-01T00:00:00Z", "source": "web"}),
    make_event("behaviour", {"event_id": "b2", "event_type": "purchase", "user_id": "7", "product_id": "10",
                             "session_id": None, "ts": "2019-10-01T00:59:30Z", "source": "web"}),
    make_event("transaction", {"event_id": "t1", "order_id": "o1", "user_id": "7", "product_id": "10",
                               "quantity": 1, "amount": 5.0, "status": "paid", "ts": "2019-10-01T00:59:30Z",
                               "source": "shop"}),
    make_event("behaviour", {"event_id": "b3", "event_type": "view", "user_id": "8", "product_id": "11",
                             "ts": "not a time", "source": "web"}),
]
END = 1_700_000_000.0


def _copies(n: int) -> list[ReplayEvent]:
    return list(bench_inventory.multiply(BASE, n, END))


def test_copy_period_covers_the_span_plus_a_quiet_minute() -> None:
    # the span is 59.5 min: rounded up to 60, plus one
    assert bench_inventory.copy_period_s(BASE) == 61 * 60


def test_ids_are_fresh_per_copy_and_keys_follow() -> None:
    out = _copies(3 * len(BASE))
    assert len({e.event["event_id"] for e in out}) == len(out)
    users = {e.event["user_id"] for e in out if "user_id" in e.event}
    assert users == {f"{u}~{k}" for u in ("7", "8") for k in range(3)}
    products = {e.event["product_id"] for e in out}
    assert len(products) == 2 * 3
    orders = [e for e in out if e.stream == "transaction"]
    assert [e.event["order_id"] for e in orders] == ["o1~0", "o1~1", "o1~2"]
    assert [e.key for e in orders] == ["o1~0", "o1~1", "o1~2"]      # keyed by the new id
    assert all(e.key == e.event["product_id"] for e in out if e.stream == "product")
    # each copy's catalog announces the products its behaviour names: no orphans made up
    for k in range(3):
        copy = out[k * len(BASE):(k + 1) * len(BASE)]
        catalog = {e.event["product_id"] for e in copy if e.stream == "product"}
        assert {e.event["product_id"] for e in copy if e.stream == "transaction"} <= catalog
    assert [e.event["session_id"] for e in out if e.event["event_id"].startswith("b2")] == [None] * 3


def test_times_are_shifted_per_copy_and_end_at_the_end() -> None:
    out = _copies(3 * len(BASE))
    period = bench_inventory.copy_period_s(BASE)
    first = [ts_seconds(out[k * len(BASE)].event["ts"]) for k in range(3)]
    assert first[1] - first[0] == period and first[2] - first[1] == period   # type: ignore[operator]
    times = [t for t in (ts_seconds(e.event["ts"]) for e in out) if t is not None]
    assert max(times) == END
    assert times == sorted(times)                                      # copies never overlap
    assert [e.event["ts"] for e in out if e.event["event_id"].startswith("b3")] == ["not a time"] * 3
    assert BASE[0].event["ts"] == "2019-10-01T00:00:00Z"               # the base is not touched


def test_n_events_with_the_stream_mix_kept() -> None:
    base_mix = Counter(e.stream for e in BASE)
    out = _copies(4 * len(BASE))
    assert Counter(e.stream for e in out) == Counter({s: 4 * n for s, n in base_mix.items()})
    cut = _copies(2 * len(BASE) + 2)                                   # the last copy cut short
    assert len(cut) == 2 * len(BASE) + 2
    assert [e.event["event_id"] for e in cut[-2:]] == ["p1~2", "b1~2"]
    assert _copies(0) == [] and list(bench_inventory.multiply([], 5, END)) == []


def test_messages_go_to_each_deployment_in_envelopes_of_one_stream() -> None:
    a = Settings(topic_prefix="bench")
    b = Settings(topic_prefix="benchr")
    messages = list(replay.to_messages(_copies(2 * len(BASE)), envelope=3))
    routed = list(bench_inventory._to_topics(messages, [a, b]))
    assert len(routed) == 2 * len(messages)
    assert {m.topic for m in routed} == {s.topic(stream) for s in (a, b)
                                         for stream in ("behaviour", "product", "transaction")}
    for deployment in (a, b):
        mine = [m for m in routed if m.topic.startswith(deployment.topic_dot_prefix)]
        assert sum(m.events for m in mine) == 2 * len(BASE)
        assert all(m.value == original.value for m, original in zip(mine, messages, strict=True))
