"""`stocktake bench`: end-to-end events/s of one worker into ClickHouse.

Three numbers from one run against one embedded Tansu: the worker on
single-event messages, the worker on batch envelopes, and the ceiling — a
bare confluent-kafka consumer + orjson decoder reading the single-event topic.
The clock starts once the worker owns its partitions (group join excluded)
and stops when the last row is inserted (not just consumed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from stocktake import replay
from stocktake.runtime import Runtime, wait_until_assigned
from stocktake.settings import Settings


def _events(n: int, tag: str) -> list[replay.ReplayEvent]:
    """n behaviour events cycled from the real rees46 sample, with unique ids."""
    base = [e for e in replay.load_events("rees46") if e.stream == "behaviour"]
    out = []
    for i in range(n):
        src = base[i % len(base)]
        out.append(src._replace(event={**src.event, "event_id": f"{tag}-{i}"}))
    return out


def _produce(bootstrap: str, topic_prefix: str, events: list[Any], envelope: int) -> int:
    topic = f"{topic_prefix}.behaviour"
    messages = [m._replace(topic=topic) for m in replay.to_messages(events, envelope=envelope)]
    replay.produce(bootstrap, messages)
    return len(messages)


def _ceiling(bootstrap: str, topic: str, partitions: int, n_messages: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ceiling-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    loads = orjson.loads
    started = None
    deadline = time.monotonic() + 120
    while seen < n_messages and time.monotonic() < deadline:
        batch = consumer.consume(5000, timeout=1.0)
        if started is None and batch:
            started = time.perf_counter()
        for message in batch:
            if message.error() is None:
                loads(message.value() or b"null")
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen / elapsed if elapsed > 0 else 0.0


async def _worker_rate(runtime: Runtime, settings: Settings, expected_rows: int) -> dict[str, Any]:
    runtime.settings = settings
    app, sink = await runtime.start_worker()
    try:
        await wait_until_assigned([sink], settings.partitions, timeout=120)
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while sink.stats.rows_inserted < expected_rows and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stats = sink.stats.as_dict()
    finally:
        await runtime.stop_worker(app, sink)
    return {"events": stats["rows_inserted"], "seconds": round(elapsed, 3),
            "events_per_s": round(stats["rows_inserted"] / elapsed),
            "inserts": stats["inserts"], "insert_seconds": round(stats["insert_seconds"], 3)}


def run(events: int = 100_000, envelope: int = 100) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stocktake-bench-") as tmp:
        base = Settings.from_env(data_dir=Path(tmp))
        single = dataclasses.replace(base, topic_prefix="bench1", group_id="bench1")
        enveloped = dataclasses.replace(base, topic_prefix="bench2", group_id="bench2")
        runtime = Runtime(single)
        try:
            runtime.open()
            runtime.settings = enveloped
            runtime.open_topics()
            n_single = _produce(runtime.bootstrap, "bench1", _events(events, "s"), 1)
            _produce(runtime.bootstrap, "bench2", _events(events, "e"), envelope)
            ceiling = _ceiling(runtime.bootstrap, "bench1.behaviour", base.partitions, n_single)
            single_r = asyncio.run(_worker_rate(runtime, single, events))
            env_r = asyncio.run(_worker_rate(runtime, enveloped, events))
        finally:
            runtime.close()
    return {
        "events": events,
        "partitions": base.partitions,
        "single_event_messages": single_r,
        f"envelopes_of_{envelope}": env_r,
        "ceiling_bare_consumer_decode_per_s": round(ceiling),
        "ratio_single_to_ceiling": round(single_r["events_per_s"] / ceiling, 3) if ceiling else None,
        "ratio_envelope_to_ceiling": round(env_r["events_per_s"] / ceiling, 3) if ceiling else None,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"stocktake bench · {report['events']:,} events · "
                        f"{report['partitions']} partitions · max RSS {report['max_rss_mib']} MiB")
    table.add_column("path")
    table.add_column("events/s", justify="right")
    table.add_column("vs ceiling", justify="right")
    for key, value in report.items():
        if isinstance(value, dict):
            ratio = value["events_per_s"] / report["ceiling_bare_consumer_decode_per_s"]
            table.add_row(f"worker, {key.replace('_', ' ')}", f"{value['events_per_s']:,}",
                          f"{ratio:.2f}")
    table.add_row("bare confluent-kafka consume + orjson (ceiling)",
                  f"{report['ceiling_bare_consumer_decode_per_s']:,}", "1.00")
    Console().print(table)
