"""The batching consumer survives a partition revoked while flow is paused.

Seen in CI: a rebalance revoked a partition between Faust pausing flow and the consumer's
seek to committed offsets; aiokafka raised IllegalStateError from getmany, the Fetcher
service crashed and the worker never consumed again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError

from stocktake.streams.transport import BatchingConsumer


class _Paused:
    """What getmany touches on a consumer whose flow is paused mid-rebalance."""

    def __init__(self, seek_error: Exception | None):
        self.app = SimpleNamespace(consumer_generation_id=3)
        self.should_stop = False
        self.flow_active = False
        self.seeks = 0
        self._seek_error = seek_error

    async def _wait_next_records(self, timeout: float) -> tuple[dict[Any, Any], None]:
        return {}, None

    async def perform_seek(self) -> None:
        self.seeks += 1
        if self._seek_error is not None:
            raise self._seek_error


def _drain(consumer: _Paused) -> list[Any]:
    async def run() -> list[Any]:
        return [m async for m in BatchingConsumer.getmany(consumer, 0.1)]  # type: ignore[arg-type]
    return asyncio.run(run())


def test_a_seek_raced_by_a_revocation_yields_nothing_and_does_not_raise() -> None:
    consumer = _Paused(IllegalStateError("No current assignment for partition t-2"))
    assert _drain(consumer) == []
    assert _drain(consumer) == [] and consumer.seeks == 2   # and the next pass seeks again


def test_other_seek_errors_still_raise() -> None:
    consumer = _Paused(RuntimeError("boom"))
    try:
        _drain(consumer)
    except RuntimeError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("a seek error that is not a revocation must not be swallowed")
