"""Backoff while a service is away: the store and broker at start-up (bounded by
STOCKTAKE_CONNECT_TIMEOUT), the sink's store calls (until ClickHouse is back)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from stocktake.broker import BrokerError, create_topics
from stocktake.clickhouse.store import Store, StoreError
from stocktake.settings import Settings
from stocktake.streams.sink import Sink


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_retried_then_one_line(caplog: pytest.LogCaptureFixture) -> None:
    dsn = f"http://writer:s3cret@127.0.0.1:{dead_port()}/db"
    with caplog.at_level(logging.WARNING, "stocktake.store"), pytest.raises(StoreError) as info:
        Store(dsn, retry_for=1.2)  # tries at 0 s and 0.5 s; the next wait (1 s) would pass the bound
    message = str(info.value)
    assert message.startswith("cannot open ClickHouse http://writer:***@127.0.0.1:")
    assert "Connection refused" in message and "\n" not in message
    warnings = [r.getMessage() for r in caplog.records if r.name == "stocktake.store"]
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0] and "retrying in 0.5s" in warnings[0] and "s3cret" not in warnings[0]


def test_unreachable_kafka_is_retried_then_one_line(caplog: pytest.LogCaptureFixture) -> None:
    bootstrap = f"127.0.0.1:{dead_port()}"
    with caplog.at_level(logging.WARNING, "stocktake.broker"), pytest.raises(BrokerError) as info:
        create_topics(bootstrap, {"t": 1}, timeout=0.5, connect_timeout=1.2)
    assert str(info.value).startswith(f"cannot reach Kafka at {bootstrap}: ")
    warnings = [r.getMessage() for r in caplog.records if r.name == "stocktake.broker"]
    assert warnings and all("unreachable" in w and "retrying in" in w for w in warnings)
    assert "retrying in 0.5s" in warnings[0]


def test_sink_waits_for_the_store_to_come_back(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise StoreError("Connection refused")
        return value * 2

    async def noop(*_args: object) -> bool:
        return True

    sink = Sink(Settings(), store=None, publish=noop, commit=noop)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, "stocktake.sink"):
        assert asyncio.run(sink._retry(flaky, 21)) == 42
    assert calls == [21, 21, 21]
    assert [r.getMessage() for r in caplog.records if r.name == "stocktake.sink"] == [
        "ClickHouse unavailable (Connection refused): 0 partitions paused; retrying in 0.5s",
        "ClickHouse unavailable (Connection refused): 0 partitions paused; retrying in 1.0s"]


def test_sink_does_not_retry_other_failures() -> None:
    async def noop(*_args: object) -> bool:
        return True

    def broken() -> None:
        raise KeyError("bug")

    sink = Sink(Settings(), store=None, publish=noop, commit=noop)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        asyncio.run(sink._retry(broken))
