"""A real `stocktake worker` process for tests: its environment, start, HTTP API (as the
CLI asks it: address and token from DATA_DIR/worker.json), and a producer paced so a kill or
a stop lands mid-stream."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from stocktake.broker import free_port
from stocktake.streams.discovery import auth_headers, running_worker
from stocktake.tools import replay


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "stocktake.cli", "worker"], env=env,
                            stdout=out, stderr=subprocess.STDOUT)


def worker_api(data_dir: Path, path: str, body: dict[str, Any] | None = None) -> Any:
    """The worker's API, as the CLI asks it: address and token from DATA_DIR/worker.json."""
    import urllib.request
    data = orjson.dumps(body) if body is not None else None
    info = running_worker(data_dir)
    if info is None:
        raise ConnectionRefusedError("no live worker.json yet")
    request = urllib.request.Request(info["http"] + path, data=data,
                                     headers={"Content-Type": "application/json", **auth_headers(info)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())


def wait_assigned(proc: subprocess.Popen[bytes], data_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worker exited while starting"
        try:
            stats = worker_api(data_dir, "/api/stats")
            if stats["assigned"]:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("worker API did not come up with partitions")


def worker_env(broker: Any, data_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    """A `stocktake worker` of its own: data dir, topic prefix, group, a free loopback port."""
    return {**os.environ, "STOCKTAKE_KAFKA": broker.bootstrap, "STOCKTAKE_DATA_DIR": str(data_dir),
            "STOCKTAKE_CLICKHOUSE": os.environ.get("STOCKTAKE_TEST_CLICKHOUSE", ""),
            "STOCKTAKE_TOPIC_PREFIX": prefix, "STOCKTAKE_GROUP_ID": prefix, "STOCKTAKE_PARTITIONS": "3",
            "STOCKTAKE_HTTP_PORT": str(free_port()), "STOCKTAKE_FLUSH_INTERVAL": "0.1", **extra}


def produce_paced(broker: Any, messages: list[replay.Message]) -> threading.Thread:
    """The messages in 40 chunks 0.15 s apart (~6 s of traffic), from a thread: a kill lands mid-stream."""
    def produce() -> None:
        chunk = max(1, len(messages) // 40)
        for i in range(0, len(messages), chunk):
            replay.produce(broker.bootstrap, messages[i:i + chunk])
            time.sleep(0.15)

    producer = threading.Thread(target=produce)
    producer.start()
    return producer


def worker_query(data_dir: Path, sql: str) -> list[list[Any]]:
    return list(worker_api(data_dir, "/api/query", {"sql": sql})["rows"])
