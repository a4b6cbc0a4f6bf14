"""`stocktake bench`: end-to-end events/s of one worker into ClickHouse.

Three numbers from one run against one embedded Tansu: the worker on
single-event messages, the worker on batch envelopes, and the ceiling — a
bare confluent-kafka consumer + orjson decoder reading the single-event topic.
The clock starts once the worker owns its partitions (group join excluded)
and stops when the last row is inserted (not just consumed).

`stocktake bench --inventory` is in bench_inventory.py.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from stocktake import sources
from stocktake.settings import Settings
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay

if TYPE_CHECKING:
    pass


def beside(settings: Settings, name: str, **update: Any) -> Settings:
    """A deployment beside ``settings`` for a benchmark phase: topics ``<prefix>-<name>.*`` and
    consumer group ``<group_id>-<name>``. Named after the configured prefix and group (a shared
    Kafka may allow only those), never under ``<prefix>.`` (the deployment's own inventory)."""
    return settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}-{name}",
                                       "group_id": f"{settings.group_id}-{name}", **update})


def _events(n: int, tag: str) -> list[sources.ReplayEvent]:
    """n behaviour events cycled from the real rees46 sample, with unique ids."""
    base = [e for e in sources.load_events("rees46") if e.stream == "behaviour"]
    out = []
    for i in range(n):
        src = base[i % len(base)]
        out.append(src._replace(event={**src.event, "event_id": f"{tag}-{i}"}))
    return out


def _produce(bootstrap: str, settings: Settings, events: list[Any], envelope: int) -> int:
    messages = list(replay.to_messages(events, topics=replay.stream_topics(settings), envelope=envelope))
    replay.produce(bootstrap, messages)
    return len(messages)


def _ceiling(bootstrap: str, topic: str, partitions: int, n_messages: int) -> float:
    """Events/s of a bare confluent-kafka consumer decoding ``topic``'s messages (an envelope's
    events count one by one): the ceiling a worker on that topic is compared with."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ceiling-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = events = 0
    loads = orjson.loads
    started = None
    deadline = time.monotonic() + 120
    while seen < n_messages and time.monotonic() < deadline:
        batch = consumer.consume(5000, timeout=1.0)
        if started is None and batch:
            started = time.perf_counter()
        for message in batch:
            if message.error() is None:
                obj = loads(message.value() or b"null")
                seen += 1
                events += len(obj) if type(obj) is list else 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return events / elapsed if elapsed > 0 else 0.0


async def _worker_rate(runtime: Runtime, settings: Settings, expected_rows: int) -> dict[str, Any]:
    runtime.settings = settings
    app, sink = await runtime.start_worker()
    scoring_stats = None
    try:
        await wait_until_assigned([sink], settings.partitions, timeout=120)
        started, loop_cpu = time.perf_counter(), time.thread_time()
        deadline = time.monotonic() + 600
        while sink.stats.rows_inserted < expected_rows and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        # The event loop's thread: fetch, judge, Arrow, timers. The store's inserts run in
        # threads of their own (in ClickHouse, on another machine, once there is a server).
        loop_cpu = time.thread_time() - loop_cpu
        stats = sink.stats.as_dict()
        scoring_service = getattr(app, "stocktake_scoring", None)
        if scoring_service is not None:
            embedder = scoring_service.embedder
            scoring_stats = {**scoring_service.stats, "lag": scoring_service.lag,
                             "embeddings": None if embedder is None else {
                **embedder.stats, "queued_texts": embedder.queued_texts}}
    finally:
        await runtime.stop_worker(app, sink)
    rows = stats["rows_inserted"]
    return {"events": rows, "seconds": round(elapsed, 3), "events_per_s": round(rows / elapsed),
            "inserts": stats["inserts"], "insert_seconds": round(stats["insert_seconds"], 3),
            "loop_cpu_us_per_event": round(loop_cpu / rows * 1e6, 2) if rows else None,
            "scoring": scoring_stats}


def run(events: int = 100_000, envelope: int = 100, scoring: str = "off") -> dict[str, Any]:
    """``scoring``: off | on | both — the worker with in-stream scoring disabled/enabled.
    Gap alerting runs in every worker, as in production."""
    modes = {"off": [False], "on": [True], "both": [False, True]}[scoring]
    report: dict[str, Any] = {"events": events}
    with tempfile.TemporaryDirectory(prefix="stocktake-bench-") as tmp:
        base = Settings.from_env(data_dir=Path(tmp))
        report["partitions"] = base.partitions
        runtime = Runtime(base)
        try:
            runtime.open()
            ceilings: dict[str, float] = {}
            for n, score in enumerate(modes):
                tag = "scoring_on" if score else "scoring_off"
                single = beside(base, f"bench{n}s", scoring=score)
                enveloped = beside(base, f"bench{n}e", scoring=score)
                for s in (single, enveloped):
                    runtime.settings = s
                    runtime.open_topics()
                paths = {
                    "single_event_messages": (single, _produce(runtime.bootstrap, single, _events(events, f"s{n}"), 1)),
                    f"envelopes_of_{envelope}": (enveloped, _produce(runtime.bootstrap, enveloped,
                                                                     _events(events, f"e{n}"), envelope)),
                }
                for path, (settings, n_messages) in paths.items():
                    # Each path against its own topic's ceiling, measured once, before the first worker
                    if path not in ceilings:
                        ceilings[path] = _ceiling(runtime.bootstrap, settings.topic("behaviour"), base.partitions,
                                                  n_messages)
                    rate = report[f"{path}_{tag}"] = asyncio.run(_worker_rate(runtime, settings, events))
                    rate["ceiling_per_s"] = round(ceilings[path])
                    rate["vs_ceiling"] = round(rate["events_per_s"] / ceilings[path], 3) if ceilings[path] else None
        finally:
            runtime.close()
    report["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"stocktake bench · {report['events']:,} events · "
                        f"{report['partitions']} partitions · max RSS {report['max_rss_mib']} MiB")
    table.add_column("worker on")
    table.add_column("events/s", justify="right")
    table.add_column("ceiling", justify="right")
    table.add_column("vs ceiling", justify="right")
    table.add_column("loop CPU", justify="right")
    table.add_column("inserting", justify="right")
    for key, value in report.items():
        if isinstance(value, dict):
            ratio, cpu = value["vs_ceiling"], value["loop_cpu_us_per_event"]
            path, _, scoring = key.rpartition("_scoring_")
            label = path.replace("single_event_messages", "single events").replace("_", " ")
            table.add_row(f"{label}, scoring {scoring}", f"{value['events_per_s']:,}",
                          f"{value['ceiling_per_s']:,}", "—" if ratio is None else f"{ratio:.2f}",
                          "—" if cpu is None else f"{cpu:.1f} µs",
                          f"{value['insert_seconds'] / value['seconds']:.0%}" if value["seconds"] else "—")
    Console().print(table)
    Console().print("ceiling: a bare confluent-kafka consume(5000) + orjson decode of the same topic, same run.\n"
                    "loop CPU: the event loop thread's CPU time an event (fetch, judge, Arrow, timers).\n"
                    "inserting: the share of the run a chDB insert (with its rollup views) was running.",
                    style="dim")
