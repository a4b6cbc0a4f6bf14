"""Two `stocktake worker` processes share a topic's partitions and one store server (#16).

chDB allows one process, so the store here is tests/store_server.py: chDB in a process of its
own behind ClickHouse's HTTP interface, which the workers reach through clickhouse-connect's
HTTP client as they would a ClickHouse server. Real Tansu, real worker processes. One worker
stops mid-stream; the other takes its partitions over from the shared watermarks: every
event counted once, in the log and in the rollups.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stocktake import sources
from stocktake.tools import replay
from tests.pipeline_helpers import expected_counts, retopic
from tests.worker_helpers import produce_paced, start_worker, wait_assigned, worker_api, worker_env, worker_query

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[str]:
    """The stand-in's URL, with its user and password."""
    user, password = "stocktake", secrets.token_hex(8)
    log = open(tmp_path / "store-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "tests.store_server", "--path", str(tmp_path / "chdb"),
                             "--user", user, "--password", password],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), f"the store server did not start: {line!r}"
        yield f"http://{user}:{password}@127.0.0.1:{int(line.split()[-1])}/default"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_the_stand_in_refuses_requests_without_its_password(store_server: str) -> None:
    import urllib.error
    import urllib.request
    url = "http://127.0.0.1:" + store_server.rsplit(":", 1)[1].split("/")[0] + "/?query=SELECT%201"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401


def test_two_worker_processes_share_the_partitions_and_one_store(broker, store_server, tmp_path):  # type: ignore[no-untyped-def]
    prefix = f"o{uuid.uuid4().hex[:10]}"
    extra = {"STOCKTAKE_CLICKHOUSE": store_server, "STOCKTAKE_PARTITIONS": "4", "STOCKTAKE_BATCH_ROWS": "300"}
    envs = [worker_env(broker, tmp_path / name, prefix, **extra) for name in ("a", "b")]
    messages = retopic(list(replay.to_messages(sources.load_events("rees46")[:6000],
                                               faults={"duplicates": 0.03, "malformed": 0.01}, seed=5)), prefix)
    want = expected_counts(messages)
    total = sum(want.values())
    where = f"startsWith(topic, '{prefix}.')"

    def assigned(data_dir: Path) -> set[str]:
        return set(worker_api(data_dir, "/api/stats")["assigned"])

    a = start_worker(envs[0], tmp_path / "a.log")
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_assigned(a, tmp_path / "a")
        b = start_worker(envs[1], tmp_path / "b.log")
        wait_assigned(b, tmp_path / "b")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:   # the group has rebalanced: each owns a share
            shares = assigned(tmp_path / "a"), assigned(tmp_path / "b")
            if all(shares) and not shares[0] & shares[1]:
                break
            time.sleep(0.2)
        assert all(shares) and not shares[0] & shares[1], shares

        producer = produce_paced(broker, messages)
        deadline = time.monotonic() + 60
        while worker_query(tmp_path / "a", f"SELECT count() FROM ingest_log WHERE {where}")[0][0] < total * 0.3:
            assert time.monotonic() < deadline, "nothing stored"
            time.sleep(0.05)
        stored_by_b = worker_api(tmp_path / "b", "/api/stats")["sink"]["rows_inserted"]
        b.send_signal(signal.SIGTERM)   # mid-stream: its partitions go to a, from the shared watermarks
        assert b.wait(60) == 0
        producer.join()

        deadline = time.monotonic() + 90
        while worker_query(tmp_path / "a", f"SELECT count() FROM ingest_log WHERE {where}")[0][0] < total:
            assert time.monotonic() < deadline, "not everything was stored"
            time.sleep(0.2)
        time.sleep(1.0)   # a double insert would land now
        rows = worker_query(tmp_path / "a", f"SELECT stream, toString(status), count() FROM ingest_log "
                                            f"WHERE {where} GROUP BY stream, status")
        (n, distinct), = worker_query(tmp_path / "a", "SELECT count(), uniqExact(topic, partition, offset, idx) "
                                                      f"FROM ingest_log WHERE {where}")
        rolled = worker_query(tmp_path / "a", "SELECT stream, toString(status), sum(n) FROM asset_rollup "
                                              f"WHERE {where} AND asset = stream GROUP BY stream, status")
        proof = worker_api(tmp_path / "a", "/api/reconcile")
        stats_a = worker_api(tmp_path / "a", "/api/stats")["sink"]
        a.send_signal(signal.SIGTERM)
        assert a.wait(60) == 0
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert stored_by_b > 0 and stats_a["rows_inserted"] > 0, "both workers stored events"
    password = store_server.split(":")[2].split("@")[0]
    for name in ("a.log", "b.log"):   # the store's password is never shown
        text = (tmp_path / name).read_text()
        assert "http://stocktake:***@127.0.0.1" in text and password not in text
    assert stats_a["rows_inserted"] + stored_by_b <= total
    assert {(s, st): c for s, st, c in rows} == want
    assert {(s, st): int(c) for s, st, c in rolled} == want
    assert n == distinct == total
    assert proof["ok"] and proof["differences"] == [], proof["differences"]
