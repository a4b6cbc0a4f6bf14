"""Shared fixtures. Integration tests start a real Tansu broker and a real
chDB store themselves (or use the ClickHouse server named by
STOCKTAKE_TEST_CLICKHOUSE) and stop what they start.

chDB allows one store path per process, so this pytest process opens one
store for the session and every test isolates itself with its own topic
prefix and consumer group (uuid names).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stocktake.broker import EmbeddedBroker
from stocktake.clickhouse.store import Store
from stocktake.settings import Settings

# The commands tests run as child processes (pipeline_helpers.stocktake) would export the text
# encoder into each test's fresh data dir: ~10 s of CPU each. Tests about it turn it on.
os.environ.setdefault("STOCKTAKE_TEXT_ENCODER", "off")

# Our own lifecycle logs at INFO are shown when a test fails; Faust's are noise.
for _name in ("faust", "mode", "aiokafka", "stocktake.streams.app", "clickhouse_connect"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def store_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get("STOCKTAKE_TEST_CLICKHOUSE") or (
        f"chdb://{tmp_path_factory.mktemp('store').resolve() / 'chdb'}"
    )


@pytest.fixture(scope="session")
def store(store_dsn: str) -> Iterator[Store]:
    s = Store(store_dsn)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def make_settings(tmp_path: Path, store_dsn: str):  # type: ignore[no-untyped-def]
    def make(**overrides: object) -> Settings:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        values: dict[str, object] = {
            "data_dir": tmp_path, "topic_prefix": prefix, "group_id": prefix, "partitions": 3,
            "flush_interval_s": 0.2, "clickhouse": store_dsn,
            "scoring": False,  # on only where a test is about scoring: keeps the others lean
            "text_encoder": False,  # likewise: exporting the encoder takes ~10 s of CPU
            # A TTL would reach the other tests' rows, many dated years back: retention is
            # tested in stores of its own (tests/test_rollups.py).
            "raw_retention_s": 0,
        }
        values.update(overrides)
        return Settings.from_env({}, **values)
    return make
