"""A broker that restarts empty (the embedded Tansu keeps topics in memory): the new log's
offsets start again at 0, below what is stored. They are stored after it, not skipped as
"already stored" (before: a second `stocktake up` on the same data dir stored nothing).
And the embedded broker dies with the process that started it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stocktake import sources
from stocktake.broker import EmbeddedBroker, port_in_use
from stocktake.clickhouse.store import Store
from stocktake.services import reconcile
from stocktake.settings import Settings
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay
from tests.pipeline_helpers import coordinates_unique, expected_counts, retopic, stored_counts, wait_rows

pytestmark = pytest.mark.integration


def test_a_broker_that_restarts_empty_is_stored_after_what_was_stored(
        store: Store, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    events = sources.load_events("rees46")[:3000]
    messages = retopic(list(replay.to_messages(events, faults={"duplicates": 0.02, "malformed": 0.01}, seed=9)),
                       settings.topic_prefix)
    half = len(messages) // 2
    total = sum(max(m.events, 1) for m in messages)

    async def run(bootstrap: str, batch: list[replay.Message], want: int) -> dict[str, Any]:
        runtime = Runtime(settings, store=store, bootstrap=bootstrap).open()
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            await asyncio.to_thread(replay.produce, bootstrap, batch)
            got = await wait_rows(store, settings.topic_prefix, want)
            assert got == want, (got, want, sink.stats.as_dict())
            await sink.flush_all()
            proof = await reconcile.reconcile(store, settings, None, bootstrap)
            return {"stats": sink.stats.as_dict(), "bases": dict(sink.bases), "proof": proof}
        finally:
            await runtime.stop_all()

    with EmbeddedBroker(log_path=tmp_path / "tansu1.log") as first:
        port = first.port
        before = asyncio.run(run(first.bootstrap, messages[:half], sum(max(m.events, 1) for m in messages[:half])))
    assert before["stats"]["log_resets"] == 0 and before["proof"]["ok"], before["proof"]["differences"]
    stored_before = store.watermarks(settings.topic("behaviour"))

    with EmbeddedBroker(port, log_path=tmp_path / "tansu2.log") as second:  # same address, empty log
        after = asyncio.run(run(second.bootstrap, messages[half:], total))

    # Every partition that had stored offsets was seen to restart from 0, and continues after them.
    assert after["stats"]["log_resets"] == sum(1 for t in ("behaviour", "product", "transaction")
                                               for _ in store.watermarks(settings.topic(t)))
    for p, mark in stored_before.items():
        assert after["bases"][(settings.topic("behaviour"), p)] == mark + 1
    assert after["stats"]["skipped_stored"] == 0
    assert stored_counts(store, settings.topic_prefix) == expected_counts(messages)
    rows, distinct = coordinates_unique(store, settings.topic_prefix)
    assert rows == distinct == total
    # Offsets stay contiguous per partition, and Kafka's offsets (+ the base) match them.
    assert after["proof"]["ok"], after["proof"]["differences"]
    assert any(p["kafka"].get("base") for p in after["proof"]["partitions"])


_START_AND_HANG = """
import sys, time
from stocktake.broker import EmbeddedBroker
broker = EmbeddedBroker().start()
print(broker.port, broker._proc.pid, flush=True)
time.sleep(600)
"""


def test_the_embedded_broker_dies_with_its_parent() -> None:
    """SIGKILL (or the OOM killer) gives the worker no chance to stop Tansu: the kernel does."""
    parent = subprocess.Popen([sys.executable, "-c", _START_AND_HANG], stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    try:
        assert parent.stdout is not None
        port, child = (int(x) for x in parent.stdout.readline().split())
        assert port_in_use(port)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        # Tansu is multi-threaded: its main thread shows as a zombie while the others are still
        # exiting, and the listening socket closes with the last of them (seen once in CI: the
        # port still answered right after the process looked dead).
        while time.monotonic() < deadline and (_alive(child) or port_in_use(port)):
            time.sleep(0.1)
        assert not _alive(child), "Tansu outlived the process that started it"
        assert not port_in_use(port)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_whose_embedded_broker_died_restarts_it_and_goes_on(
        store: Store, make_settings: Callable[..., Settings]) -> None:
    """Tansu killed under a running worker: heal_broker starts it again on the same address and
    the worker stores what is produced to the new, empty log after what it stored."""
    settings = make_settings()
    events = sources.load_events("rees46")[:2000]
    messages = retopic(list(replay.to_messages(events, seed=4)), settings.topic_prefix)
    half = len(messages) // 2
    first = sum(max(m.events, 1) for m in messages[:half])
    total = sum(max(m.events, 1) for m in messages)

    async def scenario() -> dict[str, Any]:
        runtime = Runtime(settings, store=store).open()   # embedded: the runtime starts Tansu
        assert runtime.broker is not None
        _app, sink = await runtime.start_worker()
        try:
            await wait_until_assigned([sink], settings.partitions)
            await asyncio.to_thread(replay.produce, runtime.bootstrap, messages[:half])
            assert await wait_rows(store, settings.topic_prefix, first) == first
            runtime.broker._proc.kill()  # type: ignore[union-attr]
            runtime.broker._proc.wait(5)  # type: ignore[union-attr]
            assert runtime.heal_broker() and runtime.broker.alive()
            await asyncio.sleep(3)  # the group finds the new coordinator and is assigned again
            await asyncio.to_thread(replay.produce, runtime.bootstrap, messages[half:])
            got = await wait_rows(store, settings.topic_prefix, total)
            assert got == total, (got, total, sink.stats.as_dict())
            return sink.stats.as_dict()
        finally:
            await runtime.stop_all()
            runtime.close()

    stats = asyncio.run(scenario())
    assert stats["log_resets"] > 0
    assert stored_counts(store, settings.topic_prefix) == expected_counts(messages)
    rows, distinct = coordinates_unique(store, settings.topic_prefix)
    assert rows == distinct == total
