"""Scoring tests' tools: stored valid events without a broker, a scoring service stepped until
it has folded in everything stored, and each entity's final score."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zlib
from typing import Any

import orjson

from stocktake import sources
from stocktake.clickhouse.rows import ingest_log_table
from stocktake.clickhouse.store import Store
from stocktake.processors.contract import Event, normalize
from stocktake.processors.contract_spec import shipped
from stocktake.services.scoring import ScoringService
from stocktake.settings import Settings

Stored = tuple[str, int, int, Event, dict[str, Any]]   # stream, partition, offset, judged, raw


def rees46_events(n: int, partitions: int) -> list[Stored]:
    """The first ``n`` REES46 events of contract v1, each on the partition its key hashes to
    (user for behaviour, product for the catalog, order for transactions), in order."""
    contracts = shipped()
    offsets: dict[tuple[str, int], int] = {}
    out: list[Stored] = []
    for rev in sources.load_events("rees46")[:n]:
        ev = normalize(contracts[rev.stream], rev.event)
        if not isinstance(ev, Event):
            continue
        key = ev.user_id if rev.stream == "behaviour" else ev.product_id if rev.stream == "product" else ev.order_id
        partition = zlib.crc32(key.encode()) % partitions
        offset = offsets.get((rev.stream, partition), 0)
        offsets[(rev.stream, partition)] = offset + 1
        out.append((rev.stream, partition, offset, ev, rev.event))
    return out


def store_valid(store: Store, settings: Settings, events: list[Stored]) -> None:
    """As the sink stores them: one ingest_log row each, valid."""
    now = dt.datetime.now(dt.UTC)
    cols: dict[str, list[Any]] = {k: [] for k in (
        "stream", "topic", "partition", "offset", "idx", "status", "reason", "event_id", "kind", "source",
        "user_id", "product_id", "order_id", "ts", "ingest_ts", "payload", "contract_version", "kind_key",
        "warnings")}
    for stream, partition, offset, ev, raw in events:
        for key, value in (("stream", stream), ("topic", settings.topic(stream)), ("partition", partition),
                           ("offset", offset), ("idx", 0), ("status", "valid"), ("reason", ""),
                           ("event_id", ev.event_id), ("kind", ev.kind), ("source", ev.source),
                           ("user_id", ev.user_id), ("product_id", ev.product_id), ("order_id", ev.order_id),
                           ("ts", dt.datetime.fromtimestamp(ev.ts_ms / 1000, dt.UTC)), ("ingest_ts", now),
                           ("payload", orjson.dumps(raw)), ("contract_version", "1"), ("kind_key", ""),
                           ("warnings", [])):
            cols[key].append(value)
    store.insert_arrow("ingest_log", ingest_log_table(cols))


async def fold_all(service: ScoringService, want: int, timeout: float = 60) -> None:
    """Step until ``want`` events are folded in and nothing stored waits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await service.step()
        merger = service.merger
        if service.folded + service.stats["unreadable"] >= want and merger is not None and merger.waiting == 0:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"folded {service.folded} of {want} events")


def final_scores(store: Store, prefix: str) -> dict[tuple[str, str], tuple[float, str]]:
    """(entity, id) -> (score, features_ts) of the newest score each entity got."""
    rows = store.rows(
        "SELECT entity, id, argMax(score, (features_ts, scored_at)), toString(max(features_ts)) FROM scores "
        "WHERE topic_prefix = {p:String} GROUP BY entity, id", {"p": prefix})
    return {(e, i): (float(s), ts) for e, i, s, ts in rows}


def run_scoring_workers(broker: Any, store: Store, settings: Settings, messages: list[Any], workers: int) -> Any:
    """``workers`` workers (one group, one process) consume ``messages`` until all are stored
    and the scorer, whichever worker it is, has folded in every valid event; returns it."""
    from stocktake.streams.runtime import Runtime, wait_until_assigned
    from stocktake.tools import replay
    from tests.pipeline_helpers import wait_rows

    want = sum(max(m.events, 1) for m in messages)

    async def run() -> Any:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        started = [await runtime.start_worker()]
        try:
            await wait_until_assigned([started[0][1]], settings.partitions)
            while len(started) < workers:   # one at a time, each until it has partitions of its own
                started.append(await runtime.start_worker())
                deadline = time.monotonic() + 60
                while not all(sink.assigned for _, sink in started) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                await wait_until_assigned([sink for _, sink in started], settings.partitions)
            assert all(sink.assigned for _, sink in started), "a worker never got partitions"
            await asyncio.to_thread(replay.produce, broker.bootstrap, messages)
            assert await wait_rows(store, settings.topic_prefix, want, timeout=120) >= want
            (valid,), = store.rows("SELECT count() FROM ingest_log WHERE status = 'valid' AND topic IN "
                                   "{t:Array(String)}", {"t": [settings.topic(s) for s in
                                                              ("behaviour", "product", "transaction")]})
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                leaders = [app.stocktake_scoring for app, _ in started if app.stocktake_scoring.leading]
                if len(leaders) == 1 and leaders[0].merger.waiting == 0 and \
                        leaders[0].folded + leaders[0].stats["unreadable"] >= valid:
                    await asyncio.sleep(3 * settings.score_interval_s)   # its last scores stored
                    return leaders[0]
                await asyncio.sleep(0.1)
            raise TimeoutError("the scorer did not fold in every stored event")
        finally:
            await runtime.stop_all()

    return asyncio.run(run())
