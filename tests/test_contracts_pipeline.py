"""Data contracts through the real worker (Tansu + Faust + chDB): warn rules keep real
clickstream events valid and count the breach; a contract changed mid-stream judges what
comes after and rewrites nothing before; a stream without a contract is inventoried
schemaless; `contract infer` writes a contract the checker accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stocktake import sources
from stocktake.broker import create_topics
from stocktake.clickhouse.store import Store
from stocktake.processors.contract_spec import SHIPPED_DIR, parse_contract, to_toml
from stocktake.services import contracts as contract_service
from stocktake.services import inventory
from stocktake.settings import Settings
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay
from tests.pipeline_helpers import retopic, run_pipeline, wait_rows

pytestmark = pytest.mark.integration

PRODUCT_RULE = "product_events_name_the_product"
QUERY_RULE = "searches_carry_the_query"


def _clickstream(n: int) -> tuple[list[sources.ReplayEvent], dict[str, int]]:
    """Real REES46 behaviour events, edited as real clickstream exports are: every fourth view
    without its product, every tenth event a search without its query."""
    events = [e for e in sources.load_events("rees46") if e.stream == "behaviour"][:n]
    out, counts = [], {"views": 0, "views_without_product": 0, "searches": 0}
    for i, e in enumerate(events):
        ev = dict(e.event)
        if i % 10 == 1:
            ev["event_type"] = "search"
            ev.pop("product_id", None)
            counts["searches"] += 1
        elif ev["event_type"] == "view":
            counts["views"] += 1
            if i % 4 == 0:
                ev.pop("product_id")
                counts["views_without_product"] += 1
        out.append(e._replace(event=ev))
    return out, counts


def _asset(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in doc["assets"] if a["asset"] == name)


def test_optional_fields_missing_are_warnings_counted_per_asset_and_rule(
        broker: Any, store: Store, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    events, counts = _clickstream(800)
    messages = retopic(list(replay.to_messages(events, envelope=20)), settings.topic_prefix)
    run_pipeline(broker, store, settings, messages)

    doc = inventory.build(store, settings)
    behaviour = _asset(doc, "behaviour")
    assert behaviour["invalid"] == 0 and behaviour["valid"] == len(events)   # nothing dead-lettered
    view = _asset(doc, "behaviour/event_type=view")
    assert view["valid"] == counts["views"] and view["contract_version"] == "1"
    assert [(b["version"], b["severity"], b["rule"], b["rule_name"], b["field"], b["events"])
            for b in view["breaches"]] == [
        ("1", "warn", "missing_field:product_id", PRODUCT_RULE, "product_id", counts["views_without_product"])]
    search = _asset(doc, "behaviour/event_type=search")
    assert [(b["rule"], b["rule_name"], b["events"]) for b in search["breaches"]] == [
        ("missing_field:query", QUERY_RULE, counts["searches"])]
    # completeness counts the field the rule expects, and the explanation names the rule
    quality = view["quality"]
    share = 1 - counts["views_without_product"] / counts["views"]
    assert quality["evidence"]["field_present_share"]["product_id"] == pytest.approx(share)
    assert quality["components"]["validity"] == 1.0
    assert any(PRODUCT_RULE in line for line in quality["explain"])
    # a search carries no product at all: still expected there, by the warn rule
    assert search["quality"]["evidence"]["field_present_share"]["query"] == 0.0
    # the contract in force, and its flags on the fields
    [behaviour_contract] = [c for c in doc["contracts"] if c["stream"] == "behaviour"]
    assert behaviour_contract["version"] == "1" and not behaviour_contract["schemaless"]
    assert {f["field"] for f in behaviour_contract["fields"] if f["required"]} == {
        "event_id", "event_type", "user_id", "ts", "source"}
    assert {r["name"] for r in behaviour_contract["rules"]} == {PRODUCT_RULE, QUERY_RULE}
    flags = {f["field"]: f["contract"] for f in doc["fields"] if f["stream"] == "behaviour"}
    assert flags["product_id"] and flags["session_id"] and not flags["category_code"] and not flags["brand"]


def test_a_contract_changed_mid_stream_judges_what_follows_and_rewrites_nothing(
        broker: Any, store: Store, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    directory = tmp_path / "contracts"
    directory.mkdir()
    settings = make_settings(contracts=str(directory))
    events = [e for e in sources.load_events("rees46") if e.stream == "behaviour"][:200]
    first = retopic(list(replay.to_messages(events[:100], envelope=10)), settings.topic_prefix)
    second = retopic(list(replay.to_messages(events[100:], envelope=10)), settings.topic_prefix)
    # version 2: every behaviour event must name its campaign (REES46's name none)
    v1 = parse_contract((SHIPPED_DIR / "behaviour.toml").read_text(), "v1")
    text = (to_toml(v1).replace('version = "1"', 'version = "2"')
            + '\n[fields.campaign]\ntype = "string"\nrequired = true\n')
    assert parse_contract(text, "v2").required[-1] == "campaign"

    async def scenario() -> None:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            await asyncio.to_thread(replay.produce, broker.bootstrap, first)
            assert await wait_rows(store, settings.topic_prefix, 100) == 100
            (directory / "behaviour.toml").write_text(text)
            await asyncio.sleep(sink.contracts.check_every_s + 0.5)   # the worker re-reads within this
            await asyncio.to_thread(replay.produce, broker.bootstrap, second)
            assert await wait_rows(store, settings.topic_prefix, 200) == 200
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    rows = store.rows("SELECT contract_version, status, reason, count() FROM ingest_log "
                      "WHERE startsWith(topic, {p:String}) GROUP BY ALL ORDER BY ALL",
                      {"p": settings.topic_dot_prefix})
    assert rows == [("1", "valid", "", 100), ("2", "invalid", "missing_field:campaign", 100)]
    doc = inventory.build(store, settings)
    behaviour = _asset(doc, "behaviour")
    assert behaviour["contract_version"] == "2" and behaviour["valid"] == 100 and behaviour["invalid"] == 100
    assert [(b["version"], b["severity"], b["rule"], b["events"]) for b in behaviour["breaches"]] == [
        ("2", "reject", "missing_field:campaign", 100)]
    [c] = [c for c in doc["contracts"] if c["stream"] == "behaviour"]
    assert c["version"] == "2" and c["origin"].endswith("behaviour.toml")
    assert next(f for f in c["fields"] if f["field"] == "campaign")["required"]


def test_a_topic_without_a_contract_is_inventoried_schemaless_and_a_contract_can_be_inferred(
        broker: Any, store: Store, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    topic = settings.topic("impressions")
    t0 = 1_700_000_000_000
    events = [{"impression_id": f"i{i}", "user_id": 10 + i % 7, "product_id": str(100 + i % 13),
               "slot": ["top", "side", "bottom"][i % 3], "position": i % 5, "timestamp": t0 + i * 1000,
               **({"campaign": "winter"} if i % 2 else {})} for i in range(300)]
    values = [orjson.dumps(e) for e in events] + [b'"not an object"']

    async def scenario() -> None:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            create_topics(broker.bootstrap, {topic: 2})   # created while the worker runs
            await asyncio.to_thread(_produce, broker.bootstrap, topic, values)
            assert await wait_rows(store, settings.topic_prefix, len(values)) == len(values)
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    stored = store.rows("SELECT status, contract_version, min(ts), max(ts), count() FROM ingest_log "
                        "WHERE topic = {t:String} GROUP BY ALL ORDER BY ALL", {"t": topic})
    valid, invalid = stored
    assert valid[0] == "valid" and valid[1] == "schemaless" and valid[4] == 300
    assert int(valid[2].timestamp() * 1000) == t0 and int(valid[3].timestamp() * 1000) == t0 + 299_000
    assert invalid[0] == "invalid" and invalid[4] == 1
    doc = inventory.build(store, settings)
    assert _asset(doc, "impressions")["valid"] == 300
    fields = {f["field"]: f for f in doc["fields"] if f["stream"] == "impressions"}
    assert fields["campaign"]["completeness"] == 0.5 and not fields["campaign"]["contract"]
    assert fields["position"]["types"] == {"number": 300}
    [c] = [c for c in doc["contracts"] if c["stream"] == "impressions"]
    assert c["schemaless"] and c["version"] == "schemaless"

    def query(sql: str) -> Any:
        return store.read_only_query(sql, timeout_s=30, max_rows=10_000, max_bytes=10**8)
    inferred = contract_service.infer(query, settings, "impressions")
    text = to_toml(inferred)
    again = parse_contract(text, "inferred")   # the checker accepts what infer writes
    by_name = {f.name: f for f in again.fields}
    assert {f.name for f in again.fields if f.required} == {
        "impression_id", "user_id", "product_id", "slot", "position", "timestamp"}
    assert by_name["slot"].enum == frozenset({"top", "side", "bottom"}) and by_name["slot"].case == "lower"
    assert by_name["timestamp"].type == "timestamp" and by_name["timestamp"].role == "time"
    assert by_name["user_id"].type == "id" and by_name["user_id"].role == "user_id"
    assert by_name["position"].type == "integer" and not by_name["campaign"].required
    assert again.key == "user_id"


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=str(i).encode())
    while producer.flush(1) and time.monotonic() < deadline:
        pass
