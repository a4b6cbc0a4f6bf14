"""`stocktake bench --scorer`: how fast the one scorer folds stored events into the features
and scores them, what a snapshot of its state weighs, and how long a new scorer takes to
load it (#15).

The REES46 replay's contract v1 events are multiplied to N (each copy suffixes every id with
``~k``, so the entities grow with N as a bigger shop's would), spread over 3 partitions by
their keys and stored as valid straight into a fresh embedded store, as the sink would have
stored them. One scorer (encoder off, no duty limit) then folds them all; the same events are
also fed to a bare ``FeatureState.update``: the part of the cost any design pays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import resource
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from stocktake.clickhouse.rows import ingest_log_table
from stocktake.processors.contract import Event, normalize
from stocktake.processors.contract_spec import shipped
from stocktake.settings import Settings

# (stream, partition, offset, judged event, raw event)
StoredEvent = tuple[str, int, int, Event, dict[str, Any]]
ID_FIELDS = ("event_id", "user_id", "product_id", "order_id", "session_id")


def keyed_events(raw: list[Any], partitions: int, copies: int = 1) -> list[StoredEvent]:
    """Contract v1 events on the partition their key hashes to (user for behaviour, product for
    the catalog, order for transactions), offsets in order; ``copies`` of the list, each with
    every id suffixed ``~k`` (copy 0 as it came)."""
    contracts = shipped()
    offsets: dict[tuple[str, int], int] = {}
    out: list[StoredEvent] = []
    for k in range(copies):
        for rev in raw:
            obj = dict(rev.event)
            if k:
                for name in ID_FIELDS:
                    if obj.get(name) is not None:
                        obj[name] = f"{obj[name]}~{k}"
            ev = normalize(contracts[rev.stream], obj)
            if not isinstance(ev, Event):
                continue
            key = ev.user_id if rev.stream == "behaviour" else ev.product_id if rev.stream == "product" else ev.order_id
            partition = zlib.crc32(key.encode()) % partitions
            offset = offsets.get((rev.stream, partition), 0)
            offsets[(rev.stream, partition)] = offset + 1
            out.append((rev.stream, partition, offset, ev, obj))
    return out


def valid_rows(settings: Settings, events: list[StoredEvent]) -> pa.Table:
    """The ingest_log rows the sink would store for ``events``, all valid."""
    now = dt.datetime.now(dt.UTC)
    n = len(events)
    return ingest_log_table({
        "stream": [e[0] for e in events], "topic": [settings.topic(e[0]) for e in events],
        "partition": [e[1] for e in events], "offset": [e[2] for e in events], "idx": [0] * n,
        "status": ["valid"] * n, "reason": [""] * n, "event_id": [e[3].event_id for e in events],
        "kind": [e[3].kind for e in events], "source": [e[3].source for e in events],
        "user_id": [e[3].user_id for e in events], "product_id": [e[3].product_id for e in events],
        "order_id": [e[3].order_id for e in events],
        "ts": [dt.datetime.fromtimestamp(e[3].ts_ms / 1000, dt.UTC) for e in events], "ingest_ts": [now] * n,
        "payload": [orjson.dumps(e[4]) for e in events], "contract_version": ["1"] * n, "kind_key": [""] * n,
        "warnings": [[] for _ in range(n)],
    })


def run_scorer(events: int = 200_000, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from stocktake import sources
    from stocktake.clickhouse.store import Store
    from stocktake.processors.features import FeatureState
    from stocktake.services.scoring import ScoringService

    say = progress or (lambda _text: None)
    raw = [r for r in sources.load_events("rees46") if r.stream in shipped()]
    history = keyed_events(raw, partitions=3, copies=-(-events // len(raw)))[:events]
    with tempfile.TemporaryDirectory(prefix="stocktake-bench-scorer-") as tmp:
        settings = Settings.from_env(data_dir=Path(tmp), topic_prefix="bench", scoring=True, text_encoder=False,
                                     device="cpu", score_idle_s=0.2, raw_retention_s=0,
                                     models_dir=str(Path(tmp) / "models"), clickhouse=f"chdb://{tmp}/chdb")
        store = Store(settings.clickhouse)
        try:
            store.migrate()
            say(f"storing {len(history):,} events")
            for start in range(0, len(history), 50_000):
                store.insert_arrow("ingest_log", valid_rows(settings, history[start:start + 50_000]))
            report = asyncio.run(_fold(settings, store, ScoringService, len(history), say))
        finally:
            store.close()
    state = FeatureState()
    began = time.process_time()
    for stream, _, _, ev, _ in sorted(history, key=lambda e: e[3].ts_ms):
        state.update(stream, [ev])
    report["update_only_cpu_us_per_event"] = round((time.process_time() - began) / len(history) * 1e6, 1)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return report


async def _fold(settings: Settings, store: Any, service_type: Any, want: int, say: Callable[[str], None]
                ) -> dict[str, Any]:
    async def publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        pass

    service = service_type(settings, store, publish)
    service.DUTY = 1e9    # no share limit: the fold rate itself
    say("folding")
    began, cpu = time.perf_counter(), time.process_time()
    while service.folded + service.stats["unreadable"] < want or service.merger is None or service.merger.waiting:
        await service.step()
        await asyncio.sleep(0)
    seconds = time.perf_counter() - began - settings.score_idle_s   # less the start's wait for partitions
    cpu = time.process_time() - cpu
    features = service.features
    snapshot_began = time.perf_counter()
    await service.snapshot()
    snapshot_s = time.perf_counter() - snapshot_began
    load_began = time.perf_counter()
    await service_type(settings, store, publish)._take_over()
    return {"events": want, "seconds": round(seconds, 2), "events_per_s": round(want / seconds),
            "cpu_us_per_event": round(cpu / want * 1e6, 1), "users": len(features.users),
            "products": len(features.products), "scored": service.stats["scored_users"] + service.stats[
                "scored_products"], "snapshot_mib": round(service.stats["snapshot_bytes"] / 2**20, 1),
            "snapshot_s": round(snapshot_s, 2), "load_snapshot_s": round(time.perf_counter() - load_began, 2)}


def print_scorer_report(report: dict[str, Any]) -> None:
    print(f"scorer: {report['events']:,} stored events folded in {report['seconds']} s "
          f"({report['events_per_s']:,}/s, {report['cpu_us_per_event']} µs CPU an event; "
          f"FeatureState.update alone {report['update_only_cpu_us_per_event']} µs)")
    print(f"  {report['users']:,} users, {report['products']:,} products, {report['scored']:,} scores published")
    print(f"  snapshot {report['snapshot_mib']} MiB in {report['snapshot_s']} s; a new scorer loads it in "
          f"{report['load_snapshot_s']} s; peak RSS {report['peak_rss_mib']:,} MiB")
