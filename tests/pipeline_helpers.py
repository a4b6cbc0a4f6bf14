"""What tests expect from a replay, computed from the messages themselves."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from stocktake.clickhouse.store import Store
from stocktake.settings import Settings
from stocktake.sources import ReplayEvent
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay

DISCOVERED = "impressions"   # a stream no contract names: found under the prefix, judged schemaless


def impressions(events: list[ReplayEvent]) -> list[ReplayEvent]:
    """A schemaless stream beside the shipped ones: one impression per behaviour event (an id,
    the user and product, a slot, the time), as a recommendations service would log it."""
    return [ReplayEvent(DISCOVERED, e.key, {
        "event_id": "imp-" + str(e.event["event_id"]), "user_id": e.event.get("user_id"),
        "product_id": e.event.get("product_id"), "slot": ("top", "side")[i % 2], "ts": e.event["ts"]})
        for i, e in enumerate(events) if e.stream == "behaviour"]


def retopic(messages: list[replay.Message], prefix: str) -> list[replay.Message]:
    """The replay produces to stocktake.*; tests use their own uuid prefix."""
    return [m._replace(topic=prefix + m.topic.removeprefix("stocktake")) for m in messages]


def expected_counts(messages: list[replay.Message]) -> dict[tuple[str, str], int]:
    """(stream, status) -> events, straight from how the replay built each message."""
    out: Counter[tuple[str, str]] = Counter()
    for m in messages:
        stream = m.topic.rsplit(".", 1)[1]
        if m.kind == "malformed":
            out[(stream, "invalid")] += 1
        elif m.kind == "duplicate":
            out[(stream, "duplicate")] += m.events
        else:
            out[(stream, "valid")] += m.events
    return dict(out)


def stored_counts(store: Store, prefix: str) -> dict[tuple[str, str], int]:
    rows = store.rows(
        "SELECT stream, toString(status), count() FROM ingest_log "
        "WHERE startsWith(topic, {p:String}) GROUP BY stream, status", {"p": prefix + "."})
    return {(s, st): int(n) for s, st, n in rows}


def coordinates_unique(store: Store, prefix: str) -> tuple[int, int]:
    """(rows, distinct coordinates): equal when nothing was stored twice."""
    (rows, distinct), = store.rows(
        "SELECT count(), uniqExact(topic, partition, offset, idx) FROM ingest_log "
        "WHERE startsWith(topic, {p:String})", {"p": prefix + "."})
    return int(rows), int(distinct)


async def wait_rows(store: Store, prefix: str, want: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = sum(stored_counts(store, prefix).values())
        if got >= want:
            return got
        await asyncio.sleep(0.2)
    return got


def read_topic(bootstrap: str, topic: str, partitions: int, want: int,
               timeout: float = 30) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        for m in consumer.consume(1000, timeout=0.5):
            if m.error() is None:
                out.append(m)
    # Anything beyond `want` would be a duplicate dead letter: look a little longer.
    for m in consumer.consume(1000, timeout=1.0):
        if m.error() is None:
            out.append(m)
    consumer.close()
    return out


def doubly_valid(store: Store, prefix: str) -> list[tuple[object, ...]]:
    """Event ids stored as valid more than once, with where and when: for failure messages."""
    return store.rows(
        "SELECT topic, event_id, groupArray((partition, offset, idx, ingest_ts)) FROM ingest_log "
        "WHERE startsWith(topic, {p:String}) AND status = 'valid' GROUP BY topic, event_id "
        "HAVING count() > 1 LIMIT 5", {"p": prefix + "."})


def run_pipeline(broker: Any, store: Store, settings: Settings, messages: list[replay.Message]) -> None:
    """One worker consumes ``messages`` (already on this test's topics) until all are stored."""
    want = sum(max(m.events, 1) for m in messages)

    async def run() -> None:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            await asyncio.to_thread(replay.produce, broker.bootstrap, messages)
            got = await wait_rows(store, settings.topic_prefix, want)
            assert got == want, f"stored {got} of {want} events"
        finally:
            await runtime.stop_all()

    asyncio.run(run())


def spawn_up(data_dir: Path, duration: int, inject: str = "duplicates=0.02,malformed=0.01") -> subprocess.Popen[str]:
    """`stocktake up` replaying rees46 as fast as it can, with faults, for ``duration`` seconds."""
    return subprocess.Popen(
        [sys.executable, "-m", "stocktake.cli", "up", "--data-dir", str(data_dir), "--speed", "max",
         "--duration", str(duration), "--inject", inject],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stocktake(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `stocktake` command as a user runs it, in a child process."""
    return subprocess.run([sys.executable, "-m", "stocktake.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"^stocktake( [a-z-]+)?: error: ", lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
