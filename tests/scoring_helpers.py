"""Scoring tests' tools: stored valid events without a broker, a scoring service stepped until
it has folded in everything stored, and each entity's final score."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from stocktake import sources
from stocktake.clickhouse.store import Store
from stocktake.services.scoring import ScoringService
from stocktake.settings import Settings
from stocktake.tools.bench_scorer import StoredEvent, keyed_events, valid_rows


def rees46_events(n: int, partitions: int) -> list[StoredEvent]:
    """The contract v1 events among the first ``n`` REES46 ones, keyed onto ``partitions``."""
    return keyed_events(sources.load_events("rees46")[:n], partitions)


def store_valid(store: Store, settings: Settings, events: list[StoredEvent]) -> None:
    """As the sink stores them: one ingest_log row each, valid."""
    store.insert_arrow("ingest_log", valid_rows(settings, events))


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
