"""Every topic name comes from the settings (#12): with STOCKTAKE_TOPIC_PREFIX=acme the replay
(`stocktake up` and `stocktake replay`), the benchmarks and in-stream scoring produce to
``acme.*`` (the benchmarks to deployments named after it: ``acme-bench*.*``), never to the
default ``stocktake.*``; end to end, `stocktake up` replays into ``acme.*``, stores it, and the
inventory counts it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stocktake import sources
from stocktake.settings import Settings
from stocktake.tools import replay

PREFIX = "acme"
ACME = Settings(topic_prefix=PREFIX)
STREAM_TOPICS = {"acme.behaviour", "acme.product", "acme.transaction"}
ALL_TOPICS = STREAM_TOPICS | {"acme.deadletter", "acme.alerts", "acme.scores.users", "acme.scores.products"}


# --------------------------------------------------------------------------- unit: replay


class _Producer:
    """Stands in for confluent_kafka.Producer: records the topics produced to."""

    made: list[_Producer] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.topics: list[str] = []
        self.pending: list[Any] = []
        _Producer.made.append(self)

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        self.topics.append(topic)
        if on_delivery is not None:
            self.pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        served, self.pending = self.pending, []
        for callback in served:
            callback(None, None)
        return len(served)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Producer]]:
    import confluent_kafka
    _Producer.made = []
    monkeypatch.setattr(confluent_kafka, "Producer", _Producer)
    yield _Producer


def test_stream_topics_are_the_settings_topics() -> None:
    assert replay.stream_topics(ACME) == {s: ACME.topic(s) for s in ("behaviour", "product", "transaction")}
    assert set(replay.stream_topics(ACME).values()) == STREAM_TOPICS
    assert replay.stream_topics(Settings()) == replay.TOPICS  # what callers passing no topics get


def test_messages_and_faults_go_to_the_given_topics() -> None:
    events = sources.load_events("rees46")[:3000]
    messages = list(replay.to_messages(events, topics=replay.stream_topics(ACME), envelope=5,
                                       faults={"duplicates": 0.1, "malformed": 0.1}))
    kinds = {m.kind for m in messages}
    assert kinds == {"envelope", "duplicate", "malformed"}
    assert {m.topic for m in messages} == STREAM_TOPICS  # the malformed ones too


def test_stocktake_replay_produces_to_the_prefixed_topics(monkeypatch: pytest.MonkeyPatch,
                                                          producer: type[_Producer],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from stocktake import cli
    monkeypatch.setenv("STOCKTAKE_TOPIC_PREFIX", PREFIX)
    assert cli.main(["replay", "rees46", "--kafka", "127.0.0.1:1", "--inject", "duplicates=0.1,malformed=0.1"]) == 0
    counts = json.loads(capsys.readouterr().out)
    (made,) = producer.made
    assert len(made.topics) == counts["messages"] > 0 and counts["malformed"] > 0
    assert set(made.topics) == STREAM_TOPICS


# --------------------------------------------------------------------------- unit: bench


def test_bench_deployments_are_named_after_the_settings(monkeypatch: pytest.MonkeyPatch,
                                                        producer: type[_Producer]) -> None:
    """`stocktake bench` end to end with its broker, store and workers faked: every topic it
    creates, produces to or reads, and every consumer group, is named after the configured ones."""
    from stocktake.tools import bench
    monkeypatch.setenv("STOCKTAKE_TOPIC_PREFIX", PREFIX)
    monkeypatch.setenv("STOCKTAKE_GROUP_ID", "acme-group")
    created: list[Settings] = []
    read: list[str] = []
    workers: list[Settings] = []

    class FakeRuntime:
        bootstrap = "127.0.0.1:1"

        def __init__(self, settings: Settings) -> None:
            self.settings = settings

        def open(self) -> FakeRuntime:
            created.append(self.settings)
            return self

        def open_topics(self) -> None:
            created.append(self.settings)

        def close(self) -> None:
            pass

    def ceiling(bootstrap: str, topic: str, partitions: int, n_messages: int) -> float:
        read.append(topic)
        return 1.0

    async def worker_rate(runtime: Any, settings: Settings, expected_rows: int) -> dict[str, Any]:
        workers.append(settings)
        return {"events_per_s": 1}

    monkeypatch.setattr(bench, "Runtime", FakeRuntime)
    monkeypatch.setattr(bench, "_ceiling", ceiling)
    monkeypatch.setattr(bench, "_worker_rate", worker_rate)
    bench.run(events=50, envelope=10, scoring="both")

    produced = {t for p in producer.made for t in p.topics}
    assert produced and read and len(workers) == 4
    deployments = created[1:]  # the first is the base the runtime opens (and creates no bench topics for)
    assert {s.topic_prefix for s in deployments} == {s.topic_prefix for s in workers} == {
        "acme-bench0s", "acme-bench0e", "acme-bench1s", "acme-bench1e"}
    assert {s.group_id for s in workers} == {"acme-group-" + s.topic_prefix.removeprefix("acme-") for s in workers}
    assert produced | set(read) <= {s.topic("behaviour") for s in workers}
    # Named after the prefix, never under it: the deployment's own inventory never counts a bench.
    assert not any(t.startswith(ACME.topic_dot_prefix) for t in produced | set(read))


def test_bench_inventory_deployments_are_named_after_the_settings() -> None:
    from stocktake.tools import bench_inventory
    deployments = bench_inventory.deployments(Settings(topic_prefix=PREFIX, group_id="acme-group"))
    assert [s.topic_prefix for s in deployments] == ["acme-bench", "acme-benchr", "acme-benchn"]
    assert [s.group_id for s in deployments] == ["acme-group-bench", "acme-group-benchr", "acme-group-benchn"]
    messages = list(replay.to_messages(sources.load_events("rees46")[:500], envelope=3))
    routed = {m.topic for m in bench_inventory._to_topics(messages, list(deployments))}
    assert routed == {s.topic(stream) for s in deployments for stream in ("behaviour", "product", "transaction")}


# --------------------------------------------------------------------------- unit: scoring


def test_scoring_publishes_and_stores_under_the_prefix(store: Any, make_settings: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from stocktake.services.scoring import ScoringService
    from tests.scoring_helpers import fold_all, rees46_events, store_valid

    settings = make_settings(topic_prefix=f"{PREFIX}{uuid.uuid4().hex[:6]}", models_dir=str(tmp_path / "models"),
                             device="cpu", scoring=True, score_idle_s=0.2)
    published: dict[str, int] = {}

    async def publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        published[topic] = published.get(topic, 0) + len(messages)

    events = rees46_events(2000, partitions=3)
    store_valid(store, settings, events)
    service = ScoringService(settings, store, publish)
    asyncio.run(fold_all(service, len(events)))

    assert set(published) == set(settings.score_topics) == {settings.topic("scores.users"),
                                                            settings.topic("scores.products")}
    stored = store.rows("SELECT topic_prefix, count() FROM scores WHERE startsWith(topic_prefix, {p:String}) "
                        "GROUP BY topic_prefix", {"p": PREFIX})
    assert [prefix for prefix, _ in stored if prefix.startswith(settings.topic_prefix)] == [settings.topic_dot_prefix]


def test_scoring_leaves_out_streams_without_features(store: Any, make_settings: Any, tmp_path: Path) -> None:
    """Valid events of a stream without a contract (judged schemaless) or of a file's own stream
    have no features: the scorer reads contract v1's topics only (FeatureState.update raises
    ValueError on any other stream, so a step that met one failed and scored nothing)."""
    pytest.importorskip("onnxruntime")
    from stocktake.processors.contract import Event, normalize, schemaless
    from stocktake.services.scoring import ScoringService
    from tests.scoring_helpers import fold_all, rees46_events, store_valid

    settings = make_settings(models_dir=str(tmp_path / "models"), device="cpu", scoring=True, score_idle_s=0.2)
    published: dict[str, int] = {}

    async def publish(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        published[topic] = published.get(topic, 0) + len(messages)

    raw = {"event_id": "c1", "user_id": 1, "product_id": 2, "ts": 1569888000}
    click = normalize(schemaless("clicks"), raw)
    assert isinstance(click, Event)
    behaviour = [e for e in rees46_events(500, partitions=3) if e[0] == "behaviour"]
    store_valid(store, settings, [("clicks", 0, 0, click, raw), *behaviour])
    service = ScoringService(settings, store, publish)
    asyncio.run(fold_all(service, len(behaviour)))
    assert service.stats["events"] == len(behaviour) and service.stats["unreadable"] == 0
    assert published.get(settings.topic("scores.users"), 0) > 0


# --------------------------------------------------------------------------- end to end


def _stocktake(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stocktake.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _inventory(data_dir: Path, env: dict[str, str]) -> dict[str, dict[str, Any]] | None:
    result = _stocktake("inventory", "--json", "--data-dir", str(data_dir), env=env)
    if result.returncode != 0:
        return None
    return {a["asset"]: a for a in json.loads(result.stdout)["assets"]}


def _query(sql: str, data_dir: Path, env: dict[str, str]) -> list[list[Any]]:
    result = _stocktake("query", sql, "--json", "--data-dir", str(data_dir), env=env)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["rows"])


def _broker_topics(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


@pytest.mark.integration
def test_up_with_a_topic_prefix_replays_stores_and_counts_under_it(tmp_path: Path) -> None:
    from stocktake.streams.discovery import running_worker
    from tests.pipeline_helpers import read_topic

    data_dir = tmp_path / "state"
    # Embedded broker and store whatever the caller's environment says; only the prefix is set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKTAKE_")} | {
        "STOCKTAKE_TOPIC_PREFIX": PREFIX}
    inject = {"duplicates": 0.02, "malformed": 0.01}
    messages = list(replay.to_messages(sources.load_events("rees46"), topics=replay.stream_topics(ACME),
                                       faults=inject))
    valid = {s: sum(m.events for m in messages if m.kind == "event" and m.topic == ACME.topic(s))
             for s in ("behaviour", "product", "transaction")}
    malformed = sum(m.kind == "malformed" for m in messages)
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stocktake.cli", "up", "--data-dir", str(data_dir), "--speed", "max",
             "--duration", "240", "--partitions", "2", "--inject", ",".join(f"{k}={v}" for k, v in inject.items())],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        # While it runs: the broker has the acme.* topics and nothing of stocktake.*; the replay
        # lands on them and the worker stores it (inventory asks the worker over HTTP).
        deadline = time.monotonic() + 180
        during: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            during = _inventory(data_dir, env) or {}
            if all(during.get(s, {}).get("valid") == n for s, n in valid.items()):
                break
            time.sleep(1.0)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert {s: during.get(s, {}).get("valid") for s in valid} == valid, log.read_text()[-3000:]
        worker = running_worker(data_dir)
        assert worker is not None
        topics = _broker_topics(worker["kafka"])
        assert topics >= ALL_TOPICS
        assert not [t for t in topics if t.startswith(Settings().topic_dot_prefix)], topics
        dead = read_topic(worker["kafka"], ACME.deadletter_topic, 2, malformed)
        assert len(dead) == malformed
        assert read_topic(worker["kafka"], ACME.score_topics[0], 2, 1, timeout=60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]

    # After it stopped: inventory opens the store itself and counts what came through acme.*.
    after = _inventory(data_dir, env)
    assert after is not None
    for stream, n in valid.items():
        assert after[stream]["valid"] == n
    assert sum(after[s]["duplicates"] for s in valid) == sum(m.events for m in messages if m.kind == "duplicate")
    assert {row[0] for row in _query("SELECT DISTINCT topic FROM ingest_log", data_dir, env)} == STREAM_TOPICS
    assert _query("SELECT count() FROM ingest_log WHERE status = 'invalid'", data_dir, env) == [[malformed]]
    assert _query("SELECT DISTINCT topic_prefix FROM scores", data_dir, env) == [[ACME.topic_dot_prefix]]
