"""`stocktake bench --latency`: how long an event takes from produced to counted in the inventory.

A producer in a process of its own offers behaviour events (the REES46 sample, cycled, with
fresh ids) at a steady rate for a while, as single-event messages or as envelopes, each event
stamped with the time it was produced as its event time (``ts``, to the millisecond). One
worker (embedded Tansu, chDB, gap alerting on, as in production) consumes them. Once an insert
is stored, with the rollups its views fill (what the inventory reads), the sink's stored hook
takes now minus ``ts`` for every row of it. Reported per offered rate and message shape: the
latency's p50/p95/p99/max, the rate achieved, and the worker process's peak RSS during the run.
The producer and the worker share the machine's cores, as they would on one host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stocktake import sources
from stocktake.settings import Settings
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools.bench import beside

WARMUP_S = 2.0          # the first seconds of a run are left out (the first fetches, the first inserts)
DRAIN_S = 60.0          # how long a run may take past its offered seconds to store the rest


def _messages(rate: float, seconds: float, envelope: int) -> int:
    return int(rate * seconds) // envelope


def _produce(bootstrap: str, topic: str, rate: float, seconds: float, envelope: int, tag: str) -> None:
    """Offer ``rate`` events/s for ``seconds``, ``envelope`` events a message (runs in a process)."""
    import orjson
    from confluent_kafka import Producer

    base = [e.event for e in sources.load_events("rees46") if e.stream == "behaviour"]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    interval = envelope / rate
    due, i = time.monotonic(), 0
    for _ in range(_messages(rate, seconds, envelope)):
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        events = [{**base[(i + k) % len(base)], "event_id": f"{tag}-{i + k}", "ts": stamp} for k in range(envelope)]
        value = orjson.dumps(events[0] if envelope == 1 else events)
        while True:
            try:
                producer.produce(topic, value, key=str(events[0]["user_id"]).encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        i += envelope
        due += interval
    producer.flush(60)


class _Latencies:
    """The sink's stored hook: now - ts per stored row, and the row counts."""

    def __init__(self) -> None:
        self.samples: list[np.ndarray] = []
        self.rows = 0
        self.from_ms = 0.0

    def __call__(self, table: pa.Table) -> None:
        now_ms = time.time() * 1000
        self.rows += table.num_rows
        ts = pc.cast(table.column("ts"), pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        self.samples.append(now_ms - ts[ts >= self.from_ms])


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _run_once(runtime: Runtime, settings: Settings, rate: float, seconds: float, envelope: int,
                    tag: str) -> dict[str, Any]:
    runtime.settings = settings
    runtime.open_topics()
    app, sink = await runtime.start_worker()
    latencies = _Latencies()
    sink.stored_hooks.append(latencies)
    peak = [_rss_mib()]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.25):
            peak.append(_rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        await wait_until_assigned([sink], settings.partitions, timeout=120)
        latencies.from_ms = time.time() * 1000 + WARMUP_S * 1000
        producer = multiprocessing.get_context("spawn").Process(
            target=_produce, args=(runtime.bootstrap, settings.topic("behaviour"), rate, seconds, envelope, tag))
        started = time.monotonic()
        producer.start()
        offered = _messages(rate, seconds, envelope) * envelope
        deadline = started + seconds + DRAIN_S
        while latencies.rows < offered and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        await asyncio.to_thread(producer.join, 30)
    finally:
        sampling.set()
        await runtime.stop_worker(app, sink)
    values = np.concatenate(latencies.samples) if latencies.samples else np.empty(0)
    p50, p95, p99 = (float(np.percentile(values, q)) if len(values) else float("nan") for q in (50, 95, 99))
    return {"offered_per_s": rate, "envelope": envelope, "seconds": seconds, "stored": latencies.rows,
            "offered": offered, "achieved_per_s": round(latencies.rows / elapsed),
            "kept_up": latencies.rows >= offered and elapsed <= seconds + 5,
            "latency_ms": {"p50": round(p50), "p95": round(p95), "p99": round(p99),
                           "max": round(float(values.max())) if len(values) else None, "n": len(values)},
            "peak_rss_mib": round(max(peak))}


def run_latency(rates: Sequence[float], seconds: float = 20.0, envelopes: Sequence[int] = (1, 100),
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda text: None)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stocktake-latency-") as tmp:
        base = Settings.from_env(data_dir=Path(tmp), scoring=False)
        runtime = Runtime(base)
        try:
            runtime.open()
            for envelope in envelopes:
                for rate in rates:
                    name = f"lat{len(runs)}"
                    run = asyncio.run(_run_once(runtime, beside(base, name), rate, seconds, envelope, name))
                    runs.append(run)
                    lat = run["latency_ms"]
                    say(f"{rate:,.0f}/s, envelopes of {envelope}: p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
                        f"p99 {lat['p99']} ms, {run['achieved_per_s']:,}/s stored, RSS {run['peak_rss_mib']} MiB")
        finally:
            runtime.close()
    return {"partitions": base.partitions, "flush_interval_s": base.flush_interval_s,
            "flush_idle_rows": base.flush_idle_rows, "warmup_s": WARMUP_S, "runs": runs}


def print_latency_report(report: dict[str, Any]) -> None:
    print(f"produced -> counted in the inventory, {report['partitions']} partitions, "
          f"flush interval {report['flush_interval_s']} s or {report['flush_idle_rows']:,} events for an idle store, "
          f"first {report['warmup_s']:.0f} s of each run left out")
    print(f"{'offered/s':>10} {'envelope':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'stored/s':>9} "
          f"{'kept up':>7} {'peak RSS':>9}")
    for run in report["runs"]:
        lat = run["latency_ms"]
        print(f"{run['offered_per_s']:>10,.0f} {run['envelope']:>8} {lat['p50']:>4} ms {lat['p95']:>4} ms "
              f"{lat['p99']:>4} ms {lat['max'] or 0:>4} ms {run['achieved_per_s']:>9,} {run['kept_up']!s:>7} "
              f"{run['peak_rss_mib']:>5} MiB")
